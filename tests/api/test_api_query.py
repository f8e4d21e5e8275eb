"""Query parameters: anything a client can write gets an answer, a bad one a 400
naming the parameter, never a 500."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import anyio
import pytest
from api_fakes import FakeController, request, serving
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.api.server import ControlRoutes

ROUTES = (("GET", "/v1/transitions", "limit"), ("POST", "/v1/replication/bandwidth", "rate"))

# Characters str.isdigit() accepts that are not ASCII digits: int() refuses
# some ('²') and quietly reads others ('١٢' is 12).
UNICODE_DIGITS = ["²", "١٢", "٣", "߇", "\U0001d7d7", "①", "12²", "\u0660"]  # bold 9, Arabic-Indic 0


@pytest.mark.anyio
@pytest.mark.parametrize("value", UNICODE_DIGITS)
@pytest.mark.parametrize(("method", "path", "name"), ROUTES)
async def test_unicode_digits_are_a_400_naming_the_parameter(
    controller: FakeController, sock_dir: Path, method: str, path: str, name: str, value: str
) -> None:
    async with serving(controller, unix_path=str(sock_dir / "c.sock")) as ends:
        answer = await request(ends, method, f"{path}?{name}={quote(value)}")
    assert answer.status == 400
    assert name in answer.json()["error"]
    assert controller.bandwidths == []


def _answer(method: str, target: str) -> tuple[int, dict[str, object]]:
    routes = ControlRoutes(FakeController())
    reply = anyio.run(routes.reply, method, target)
    return reply.status, json.loads(reply.body)


query_text = (
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
    | st.text(st.characters(categories=("Nd", "No")), min_size=1, max_size=6)
    | st.from_regex(r"[0-9]{0,20}", fullmatch=True)
)


@settings(max_examples=300, deadline=None)
@given(
    route=st.sampled_from(ROUTES),
    value=query_text,
    extra=st.sampled_from(["", "&", "&x=1", "&limit=1", "&rate=1", "&=", "&&"]),
)
def test_any_query_value_gets_200_or_a_400(
    route: tuple[str, str, str], value: str, extra: str
) -> None:
    method, path, name = route
    status, body = _answer(method, f"{path}?{name}={quote(value)}{extra}")
    assert status in (200, 400), (status, body)
    if status == 200:
        assert value.isascii() and value.isdigit() and not extra
    else:
        assert isinstance(body["error"], str) and body["error"]


@settings(max_examples=200, deadline=None)
@given(query=st.text(max_size=30))
def test_any_raw_query_string_gets_200_or_a_400(query: str) -> None:
    status, _ = _answer("GET", f"/v1/transitions?{quote(query, safe='=&;%+')}")
    assert status in (200, 400)
