"""The browser half of test_console_browser.py, run inside the lab's client namespace
(where both nodes' control listeners are reachable): drives a headless Chromium
through the console and prints one JSON line of what it saw.

Argument: a JSON object {"nodes": {name: {"url", "pid"}}, "token", "screenshot"}.
Every wait is bounded (``BOUND``); a wait that runs out raises with what it waited
for, and the test shows it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

BOUND = 20.0  # seconds: an upper bound on every wait, never an expected duration
SERVING = ("primary", "alone")
T = TypeVar("T")


def until(what: str, probe: Callable[[], T | None], bound: float = BOUND) -> T:
    deadline = time.monotonic() + bound
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {bound} s: {what}")
        time.sleep(0.02)


class Api:
    def __init__(self, nodes: dict[str, Any], token: str) -> None:
        self.nodes = nodes
        self.token = token

    def call(self, node: str, method: str, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(
            self.nodes[node]["url"] + path,
            method=method,
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=3) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as refused:
            return refused.code, json.load(refused)

    def status(self, node: str) -> dict[str, Any] | None:
        try:
            return self.call(node, "GET", "/v1/status")[1]
        except OSError:
            return None

    def ready(self, node: str) -> str | None:
        status = self.status(node)
        return status["state"] if status and status["substatus"] == "ready" else None

    def roles(self) -> dict[str, str] | None:
        """{"primary": name, "secondary": name} once the pair is there, else None."""
        states = {self.ready(node): node for node in self.nodes}
        if set(states) == {"primary", "secondary"}:
            return {"primary": states["primary"], "secondary": states["secondary"]}
        return None


def chromium() -> webdriver.Chrome:
    """Debian's headless Chromium through Debian's chromedriver (nothing is downloaded)."""
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1300,1100", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


class Page:
    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    def card(self, node: str) -> Any:
        return self.driver.find_element(By.ID, f"node-{node}")

    def state(self, node: str) -> str:
        """What ``node``'s card shows ("" while there is no card yet)."""
        cards = self.driver.find_elements(By.ID, f"node-{node}")
        return str(cards[0].get_attribute("data-state")) if cards else ""

    def serving(self) -> str:
        return str(self.driver.find_element(By.ID, "serving").get_attribute("data-node"))

    def shows(self, roles: dict[str, str]) -> bool:
        try:
            return (
                self.serving() == roles["primary"]
                and self.state(roles["primary"]) == "primary"
                and self.state(roles["secondary"]) == "secondary"
            )
        except Exception:  # the cards are not there yet
            return False

    def click(self, node: str, command: str, *, confirm: bool = True) -> None:
        self.card(node).find_element(By.CSS_SELECTOR, f'[data-command="{command}"]').click()
        until(
            "the confirmation dialog",
            lambda: self.driver.find_element(By.ID, "confirm").is_displayed(),
        )
        self.driver.find_element(By.ID, "confirm-yes" if confirm else "confirm-no").click()

    def result(self, node: str) -> str:
        return str(self.card(node).find_element(By.CSS_SELECTOR, ".result").text)


def main() -> None:
    args = json.loads(sys.argv[1])
    nodes, token = args["nodes"], args["token"]
    api = Api(nodes, token)
    seen: dict[str, Any] = {}
    roles = until("primary + secondary", api.roles)
    seen["roles_before"] = roles
    driver = chromium()
    try:
        page = Page(driver)
        # The page comes from the secondary: the node that will serve after the swap,
        # and that is killed then; the page must go on without it.
        driver.get(nodes[roles["secondary"]]["url"] + "/console/")
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "login-button").click()
        until("the page shows the pair", lambda: page.shows(roles))

        # A refused command: swap on the secondary; the page shows the core's reason.
        page.click(roles["secondary"], "swap")
        shown = until(
            "the refusal",
            lambda: (
                page.result(roles["secondary"])
                if "refused" in page.result(roles["secondary"])
                else None
            ),
        )
        code, answer = api.call(roles["secondary"], "POST", "/v1/commands/swap")
        seen["refusal"] = {"shown": shown, "api_status": code, "api_message": answer["message"]}

        # A cancelled dialog sends nothing; a confirmed swap on the primary exchanges the roles.
        page.click(roles["primary"], "stop", confirm=False)
        seen["stop_result_after_cancel"] = page.result(roles["primary"])
        page.click(roles["primary"], "swap")
        after = {"primary": roles["secondary"], "secondary": roles["primary"]}
        until("the page shows the swapped pair", lambda: page.shows(after))
        seen["swap_result"] = page.result(roles["primary"])
        seen["roles_after"] = api.roles()
        until(
            "both nodes in sync, shown",
            lambda: (
                "yes"
                in driver.find_element(By.CSS_SELECTOR, f"#node-{after['primary']} .in-sync").text
            ),
        )
        listed = f"#node-{after['primary']} .transitions"
        seen["transitions_shown"] = until(
            "the swap among the recent transitions",
            lambda: (
                (text := driver.find_element(By.CSS_SELECTOR, listed).text)
                and "swap" in text
                and text
            ),
        )
        driver.save_screenshot(args["screenshot"])

        # kill -9 the primary (the node that served the page): the other must show serving.
        victim, survivor = after["primary"], after["secondary"]
        killed_at = time.time()
        os.kill(nodes[victim]["pid"], signal.SIGKILL)
        until(f"{survivor} serving, shown", lambda: page.serving() == survivor)
        rendered = driver.execute_script("return window.failoverConsole.rendered")
        shown_at = min(
            r["at"]
            for r in rendered
            if r["node"] == survivor
            and r["state"].split(":")[0] in SERVING
            and r["at"] >= killed_at * 1000
        )
        records = api.call(survivor, "GET", "/v1/transitions?limit=50")[1]["transitions"]
        into = [r for r in records if r["to"] in SERVING and r["from"] not in SERVING]
        decided = datetime.fromisoformat(into[-1]["time"]).timestamp()
        seen["takeover"] = {
            "victim": victim,
            "survivor": survivor,
            "killed_at": killed_at,
            "decided_at": decided,
            "shown_at": shown_at / 1000,
            "transition": into[-1],
            "victim_shown_as": page.state(victim),
        }
    except Exception:
        # what the page showed and said, for the failure message
        driver.save_screenshot(args["screenshot"] + ".failed.png")
        print(driver.find_element(By.TAG_NAME, "body").text, file=sys.stderr)
        for entry in driver.get_log("browser"):
            print("browser:", entry.get("message"), file=sys.stderr)
        raise
    finally:
        driver.quit()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
