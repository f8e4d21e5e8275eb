"""The console page in a real headless Chromium against a fake controller on loopback:
the parts the pair test cannot show cheaply (replication with a resync under way, a
link down, a peer that cannot be reached, a wrong token, verify), a live update, and
a read-only token's command refused (403) with a clear line."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import pytest
from console_support import TOKEN, Changes, Controller, browser_unavailable, settings

from failover.api.console import ConsoleNode
from failover.api.protocol import CommandResult
from failover.api.server import serve_control

pytestmark = pytest.mark.skipif(
    browser_unavailable() is not None, reason=str(browser_unavailable())
)


class Replicating(Controller):
    """A primary resynchronising its peer, one link down, fullsync refused."""

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["links"].append({"name": "serial", "transport": "serial", "up": False,
                                "last_seen_ago": 42.0})  # fmt: skip
        status["links"][0]["transport"] = "udp"
        status.update(
            cluster="dispatch", generation="4:alpha", consistent=True, degraded=None,
            in_sync=False, in_sync_reason="resync of beta under way",
            peer={"node": "beta", "state": "resync", "substatus": "transient",
                  "alive": True, "last_seen_ago": 0.1},
            replication={
                "mode": "read-write", "replicating": True, "ack": "written",
                "channel_problem": None, "writes_held": 0, "resync_wanted": False,
                "sender": {"in_flight_bytes": 65536, "last_ack_latency": 0.0021},
                "resync": {"state": "running", "full": True, "items_done": 40,
                           "items_total": 100, "bytes_done": 250_000_000,
                           "bytes_total": 1_000_000_000, "rate": 50_000_000.0, "eta": 15.0,
                           "bandwidth_limit": 0, "error": None},
                "verified": None,
            },
        )  # fmt: skip
        return status

    async def command(self, name: str) -> CommandResult:
        return CommandResult(False, f"{name}: a resync of beta is already running", self.state)

    async def verify(self) -> dict[str, Any]:
        return {"in_sync": True, "text": "data: 12 files, copies match"}


READ_TOKEN = "console-test-read-token-0123456789"


@pytest.fixture
def served() -> Iterator[tuple[str, Replicating, Changes, anyio.from_thread.BlockingPortal]]:
    controller = Replicating()
    with anyio.from_thread.start_blocking_portal() as portal:
        changes = portal.call(Changes)
        # beta's URL: a port nothing listens on (its card must say so)
        console = replace(
            settings(changes=changes),
            nodes=(
                ConsoleNode("alpha", "http://127.0.0.1:9"),
                ConsoleNode("beta", "http://127.0.0.1:1"),
            ),
        )
        serve = partial(
            serve_control,
            controller,
            tcp=("127.0.0.1", 0),
            token=TOKEN,
            read_token=READ_TOKEN,
            console=console,
        )
        future, ends = portal.start_task(serve)
        assert ends.tcp is not None
        try:
            yield f"http://127.0.0.1:{ends.tcp[1]}", controller, changes, portal
        finally:
            future.cancel()


def test_the_page_shows_replication_links_refusals_and_live_changes(
    served: tuple[str, Replicating, Changes, anyio.from_thread.BlockingPortal],
) -> None:
    pytest.importorskip("selenium")
    from console_browser import Page, chromium, until  # noqa: PLC0415 (needs selenium)
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    url, controller, changes, portal = served
    driver = chromium()
    try:
        page = Page(driver)
        driver.get(url + "/console/")
        driver.find_element(By.ID, "token").send_keys("not-the-token-at-all")
        driver.find_element(By.ID, "login-button").click()
        error = driver.find_element(By.ID, "login-error")
        until("the wrong token is said", lambda: error.text == "wrong token")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "login-button").click()
        until("alpha shown", lambda: page.state("alpha") == "primary")
        alpha = page.card("alpha")
        text = alpha.text
        assert "resync running (full): 250.0 MB of 1.0 GB, 50.0 MB/s, ETA 15 s" in text, text
        assert "lag: 65.5 kB awaiting acknowledgement, last ack 2.1 ms" in text, text
        assert "no: resync of beta under way" in text and "peer beta in sync" in text
        progress = alpha.find_element(By.TAG_NAME, "progress")
        assert progress.get_attribute("value") == "250000000"
        down = alpha.find_element(By.CSS_SELECTOR, '[data-link="serial"] td.down')
        assert down.text == "down"
        until("beta unreachable", lambda: page.state("beta") == "unreachable")
        assert page.card("beta").find_element(By.CSS_SELECTOR, ".conn").text == "unreachable"

        page.click("alpha", "fullsync")
        until("the refusal", lambda: "refused" in page.result("alpha"))
        assert (
            page.result("alpha")
            == "fullsync refused: fullsync: a resync of beta is already running"
        )
        page.click("alpha", "verify")
        until("the verdict", lambda: not page.result("alpha").endswith("sent…"))
        assert page.result("alpha") == "verify: data: 12 files, copies match"

        def lose_the_peer() -> None:
            controller.state, controller.reason = "alone", "peer beta lost"
            changes.notify()

        portal.call(lose_the_peer)
        until("the change pushed", lambda: page.state("alpha") == "alone")
        assert "peer beta lost" in page.card("alpha").text
        assert driver.find_element(By.ID, "serving").text == "serving: alpha (alone)"
        # the token lives in this tab's sessionStorage, nowhere else
        assert driver.execute_script("return sessionStorage.getItem('failover.token')") == TOKEN
        assert driver.execute_script("return localStorage.length") == 0
        assert driver.get_cookies() == []

        # alpha's own token, a read-only one: a button's command gets 403 and says why
        alpha = page.card("alpha")
        alpha.find_element(By.CSS_SELECTOR, ".own-token summary").click()
        alpha.find_element(By.CSS_SELECTOR, ".node-token").send_keys(READ_TOKEN)
        alpha.find_element(By.CSS_SELECTOR, ".node-token-use").click()
        page.click("alpha", "stop")
        until("the 403 said", lambda: not page.result("alpha").endswith("sent…"))
        assert page.result("alpha") == (
            "stop not sent: this token may only read (commands need the admin token)"
        )
    finally:
        driver.quit()
