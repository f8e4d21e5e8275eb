"""``type: etcd``: the arbitrator's record kept in an etcd cluster, granted by one transaction.

The invariant is the core's grant rule (``failover.core.arbitration``): the
lease is held by one node at a time; it is granted only to a node whose base
is the newest generation known (or that continues the grant it was given,
or is forced by an operator); a new generation granted is raised above the
newest one granted. Here it holds *at etcd*, whatever the two nodes do at
once, because every grant is one etcd transaction that commits only if
nothing the decision read has changed since.

Two keys per cluster, under ``<key_prefix>/<cluster>/``:

- ``holder``: the node holding the lease and the generation it serves,
  attached to an etcd lease of ``lease_ttl`` seconds. etcd deletes it when
  that lease runs out, so "the key exists" *is* "the lease is held";
- ``record``: persistent (no lease): the newest generation granted, to whom,
  and from which base (``LeaseRecord``'s last three fields).

A request reads both keys (their values and ``mod_revision``), lets
``decide_request`` rule on them, and when it grants, commits in one txn:

    compare  mod_revision(holder) == the one read   (0: it was absent)
             mod_revision(record) == the one read   (0: it was absent)
    success  put holder = {node, generation} with a fresh etcd lease
             put record = {generation, granted_to, granted_from}

How each clause of ``decide_request`` is pinned by a compare:

- *nobody else holds it* (``_free_for``): it ruled on the holder key being
  absent or naming us. The holder compare fails if anyone put it since; and
  as every grant also writes the record, a grant to the peer that has since
  run out (the holder absent again, with its ``mod_revision`` 0 again) still
  fails the record compare. A key present is a lease not yet run out: the
  request passes no clock to the rule (``expires_at`` is None), etcd's
  expiry is the only one that frees the lease;
- *the base is the newest known, unless retried or forced*, and *a new
  generation is raised above the newest*: both ruled on the record read,
  which the record compare proves unchanged at commit.

A txn whose compares fail changed nothing; the request reads and rules
again (a few times), else it is denied. A renewal is a keepalive of our
etcd lease, then a read of the holder key: granted only while the key is
still ours (our node, our etcd lease), lost otherwise, so renewing never
writes and never creates. A release revokes our etcd lease (etcd deletes
the holder key with it); the record stays. It names the etcd lease held
when it was called: a release abandoned at the executor's deadline whose
worker thread reaches an endpoint only after this node was granted again
revokes the old lease, never the new one (the holder key stays on it).

Timing (docs/arbitration.md, "etcd"): etcd runs a lease out ``lease_ttl``
after the last grant or keepalive it *received*, on its own clock, and
only later (it checks every 500 ms; a new etcd leader extends every lease).
The core counts from when it *asked* (``hold_grant``: ``requested_at +
lease_ttl - lease_margin``), which is before etcd received anything. A
lease etcd grants shorter than asked (it never does: it rounds up to its
minimum) is refused here.

Faults: an endpoint that fails (connection, timeout, an HTTP error, a
malformed answer) is passed over for the next; when all fail the reply is
``Unreachable`` with each endpoint's reason. A key whose value is not ours to
parse is never read as free: the request is ``Denied`` naming the key, a
renewal ``Lost``.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import requests
import structlog
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import ConnectionFailedError, ConnectionTimeoutError, Etcd3Exception

from failover.core.arbitration import LeaseRecord, decide_request
from failover.core.state import Generation
from failover.runtime.arbitrator import Denied, Granted, Lost, Released, Reply, Unreachable

log = structlog.get_logger("failover.arbitrator.etcd")

FORMAT = 1  # the "format" of the values this version writes and reads
ATTEMPTS = 3  # reads and txns per request when the keys change under it


class EtcdValueError(ValueError):
    """A key holds a value this version cannot take as its own."""


class EtcdUnavailable(Exception):
    """One endpoint failed (connection, timeout, HTTP error, malformed answer)."""


@dataclass(frozen=True)
class EtcdTls:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True)
class Holder:
    node: str
    generation: Generation
    lease: int


@dataclass(frozen=True)
class Snapshot:
    """Both keys as read, with the ``mod_revision`` the txn compares (0: absent)."""

    holder: Holder | None
    holder_revision: int
    record: LeaseRecord
    record_revision: int


def _generation_json(generation: Generation) -> dict[str, Any]:
    return {"counter": generation.counter, "origin": generation.origin}


def _parse_generation(value: object, what: str) -> Generation:
    if not isinstance(value, dict) or set(value) != {"counter", "origin"}:
        raise EtcdValueError(f"{what}: not a generation")
    counter, origin = value["counter"], value["origin"]
    if type(counter) is not int or counter < 0 or not isinstance(origin, str):
        raise EtcdValueError(f"{what}: not a generation")
    return Generation(counter, origin)


def _parse_object(data: bytes, keys: set[str]) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise EtcdValueError(f"not JSON ({type(exc).__name__})") from None
    if (
        not isinstance(value, dict)
        or type(value.get("format")) is not int
        or value["format"] != FORMAT
    ):
        raise EtcdValueError(f"not a failover value of format {FORMAT}")
    if set(value) != keys | {"format"}:
        raise EtcdValueError(f"keys {sorted(value)}, expected {sorted(keys | {'format'})}")
    return value


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise EtcdValueError(f"{what}: not a node name")
    return value


def encode_holder(node: str, generation: Generation) -> bytes:
    return json.dumps(
        {"format": FORMAT, "node": node, "generation": _generation_json(generation)}
    ).encode()


def decode_holder(data: bytes) -> tuple[str, Generation]:
    value = _parse_object(data, {"node", "generation"})
    return _name(value["node"], "node"), _parse_generation(value["generation"], "generation")


def encode_record(record: LeaseRecord) -> bytes:
    return json.dumps(
        {
            "format": FORMAT,
            "generation": _generation_json(record.generation),
            "granted_to": record.granted_to,
            "granted_from": _generation_json(record.granted_from),
        }
    ).encode()


def decode_record(data: bytes) -> LeaseRecord:
    value = _parse_object(data, {"generation", "granted_to", "granted_from"})
    granted_to = value["granted_to"]
    return LeaseRecord(
        generation=_parse_generation(value["generation"], "generation"),
        granted_to=None if granted_to is None else _name(granted_to, "granted_to"),
        granted_from=_parse_generation(value["granted_from"], "granted_from"),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise EtcdUnavailable("malformed answer (a value is not base64 text)")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise EtcdUnavailable("malformed answer (a value is not base64)") from None


def _int(value: object) -> int:
    # the gateway writes 64-bit integers as strings and leaves zeros out
    if value is None:
        return 0
    if isinstance(value, int | str):
        try:
            return int(value)
        except ValueError:
            pass
    raise EtcdUnavailable(f"malformed answer (a number is {value!r})")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionFailedError):
        return _cannot_connect(exc.detail_text or "")
    if isinstance(exc, ConnectionTimeoutError):
        return "no answer in time"
    if isinstance(exc, Etcd3Exception):
        detail = exc.detail_text or " ".join(str(arg) for arg in exc.args)
        text = f"{type(exc).__name__}: {detail}".strip()
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def _cannot_connect(detail: str) -> str:
    # requests' text nests the cause: keep its innermost telling part
    if "SSL" not in detail and "certificate" not in detail:
        return "cannot connect"
    for mark in ("[SSL", "Caused by "):
        if mark in detail:
            detail = detail[detail.rfind(mark) :].removeprefix("Caused by ")
            break
    return "cannot connect: TLS: " + " ".join(detail.split())[:160].rstrip("')\" ")


def _lease_missing(exc: Etcd3Exception) -> bool:
    return "lease not found" in (exc.detail_text or "")


def _session(tls: EtcdTls) -> requests.Session:
    """An HTTP session that takes nothing from the environment: no proxy (the
    daemon talks to etcd directly) and no ``REQUESTS_CA_BUNDLE``, which requests
    would otherwise prefer to the configured ``ca_file``."""
    session = requests.Session()
    session.trust_env = False
    session.verify = tls.ca_file or True
    if tls.cert_file is not None and tls.key_file is not None:
        session.cert = (tls.cert_file, tls.key_file)
    return session


class EtcdArbitrator:
    """``Arbitrator`` backed by a lease in etcd (the module docstring says how).

    Every call runs its HTTP requests (etcd's JSON gateway, through
    ``etcd3gw``) in a worker thread, one endpoint after the other until one
    answers; ``timeout`` bounds each HTTP request.
    """

    def __init__(
        self,
        *,
        cluster: str,
        node: str,
        endpoints: Sequence[str],
        key_prefix: str = "/failover",
        ttl: float,
        tls: EtcdTls | None = None,
        timeout: float = 1.0,
    ) -> None:
        self.node = node
        self.ttl = math.ceil(ttl)  # etcd counts whole seconds; longer is the safe side
        self.endpoints = list(endpoints)
        base = f"{key_prefix.rstrip('/')}/{cluster}/"
        self.holder_key, self.record_key = (base + "holder").encode(), (base + "record").encode()
        self.clients = [
            Etcd3Client(
                host=url.hostname or "",
                port=url.port or 2379,
                protocol=url.scheme,
                timeout=timeout,
                api_path="/v3/",
                session=_session(tls or EtcdTls()),
            )
            for url in map(urlsplit, self.endpoints)
        ]
        self.lease: int | None = None  # the etcd lease our holder key is attached to
        self._lock = anyio.Lock()

    async def request(self, generation: Generation, base: Generation, forced: bool) -> Reply:
        return await self._call(lambda c: self._request(c, generation, base, forced))

    async def renew(self, generation: Generation) -> Reply:
        return await self._call(self._renew)

    async def release(self) -> Reply:
        async with self._lock:
            lease = self.lease  # the grant this release ends, named now
            return await self._run(lambda c: self._release(c, lease))

    async def _call(self, operation: Callable[[Etcd3Client], Reply]) -> Reply:
        async with self._lock:
            return await self._run(operation)

    async def _run(self, operation: Callable[[Etcd3Client], Reply]) -> Reply:
        return await anyio.to_thread.run_sync(self._on_any, operation, abandon_on_cancel=True)

    def _on_any(self, operation: Callable[[Etcd3Client], Reply]) -> Reply:
        problems = []
        for endpoint, client in zip(self.endpoints, self.clients, strict=True):
            try:
                return operation(client)
            except EtcdUnavailable as exc:
                problems.append(f"{endpoint}: {exc}")
            except (Etcd3Exception, requests.RequestException, ValueError) as exc:
                problems.append(f"{endpoint}: {_describe(exc)}")
            except (LookupError, TypeError, AttributeError) as exc:  # an answer of another shape
                problems.append(f"{endpoint}: malformed answer ({type(exc).__name__}: {exc})")
        return Unreachable("etcd unreachable: " + "; ".join(problems))

    # -- the operations, in a worker thread --------------------------------

    def _post(self, client: Etcd3Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = client.post(client.get_url(path), json=body)
        if not isinstance(answer, dict):
            raise EtcdUnavailable("malformed answer (not a JSON object)")
        return answer

    def _read(self, client: Etcd3Client) -> Snapshot:
        """Both keys in one txn (one revision); values are parsed by the caller's rules."""
        answer = self._post(
            client,
            "/kv/txn",
            {
                "success": [
                    {"request_range": {"key": _b64(self.holder_key)}},
                    {"request_range": {"key": _b64(self.record_key)}},
                ]
            },
        )
        found: list[dict[str, Any] | None] = []
        for response in answer.get("responses") or [{}, {}]:
            kvs = (response.get("response_range") or {}).get("kvs") or [None]
            found.append(kvs[0])
        if len(found) != 2:
            raise EtcdUnavailable("malformed answer (range)")
        holder_kv, record_kv = found
        holder = record = None
        if holder_kv is not None:
            data = _unb64(holder_kv.get("value", ""))
            try:
                node, generation = decode_holder(data)
            except EtcdValueError as exc:
                raise EtcdValueError(f"etcd key {self.holder_key.decode()}: {exc}") from None
            holder = Holder(node, generation, _int(holder_kv.get("lease")))
        if record_kv is not None:
            try:
                record = decode_record(_unb64(record_kv.get("value", "")))
            except EtcdValueError as exc:
                raise EtcdValueError(f"etcd key {self.record_key.decode()}: {exc}") from None
        return Snapshot(
            holder=holder,
            holder_revision=_int(holder_kv.get("mod_revision")) if holder_kv else 0,
            record=record or LeaseRecord(),
            record_revision=_int(record_kv.get("mod_revision")) if record_kv else 0,
        )

    def _request(
        self, client: Etcd3Client, generation: Generation, base: Generation, forced: bool
    ) -> Reply:
        for _ in range(ATTEMPTS):
            try:
                snap = self._read(client)
            except EtcdValueError as exc:
                return Denied(f"{exc}: not read as free")
            record = LeaseRecord(
                holder=snap.holder.node if snap.holder else None,
                expires_at=None,  # a holder key present is a lease etcd has not run out
                generation=snap.record.generation,
                granted_to=snap.record.granted_to,
                granted_from=snap.record.granted_from,
            )
            verdict = decide_request(
                record,
                requester=self.node,
                wanted=generation,
                base=base,
                forced=forced,
                now=0.0,
                ttl=self.ttl,
            )
            if not verdict.granted:
                return Denied(f"etcd: {verdict.reason}")
            granted = verdict.record
            lease = self._grant_lease(client)
            if lease is None:
                return Denied(f"etcd granted a lease shorter than the {self.ttl} s asked")
            try:
                committed = self._commit(client, snap, granted, lease)
            except BaseException:
                self._revoke_quietly(client, lease)
                raise
            if committed:
                if self.lease is not None and self.lease != lease:
                    self._revoke_quietly(client, self.lease)
                self.lease = lease
                return Granted(granted.generation)
            self._revoke_quietly(client, lease)  # the keys changed since read: rule again
        return Denied(f"etcd: the lease keys kept changing ({ATTEMPTS} attempts)")

    def _grant_lease(self, client: Etcd3Client) -> int | None:
        answer = self._post(client, "/lease/grant", {"TTL": self.ttl, "ID": 0})
        lease, ttl = _int(answer.get("ID")), _int(answer.get("TTL"))
        if lease == 0:
            raise EtcdUnavailable(f"no lease granted ({answer.get('error') or 'no ID'})")
        if ttl < self.ttl:
            self._revoke_quietly(client, lease)
            return None
        return lease

    def _commit(
        self, client: Etcd3Client, snap: Snapshot, granted: LeaseRecord, lease: int
    ) -> bool:
        holder = encode_holder(self.node, granted.generation)
        answer = self._post(
            client,
            "/kv/txn",
            {
                "compare": [
                    {
                        "key": _b64(key),
                        "target": "MOD",
                        "result": "EQUAL",
                        "mod_revision": str(revision),
                    }
                    for key, revision in (
                        (self.holder_key, snap.holder_revision),
                        (self.record_key, snap.record_revision),
                    )
                ],
                "success": [
                    {
                        "request_put": {
                            "key": _b64(self.holder_key),
                            "value": _b64(holder),
                            "lease": str(lease),
                        }
                    },
                    {
                        "request_put": {
                            "key": _b64(self.record_key),
                            "value": _b64(encode_record(granted)),
                        }
                    },
                ],
            },
        )
        return answer.get("succeeded") is True

    def _revoke_quietly(self, client: Etcd3Client, lease: int) -> None:
        try:
            self._post(client, "/lease/revoke", {"ID": str(lease)})
        except (Etcd3Exception, requests.RequestException, ValueError, EtcdUnavailable) as exc:
            log.info("etcd lease not revoked: it runs out", lease=lease, problem=_describe(exc))

    def _renew(self, client: Etcd3Client) -> Reply:
        if self.lease is None:
            return Lost("etcd: this node holds no lease there")
        answer = self._post(client, "/lease/keepalive", {"ID": str(self.lease)})
        result = answer.get("result")
        if not isinstance(result, dict):
            raise EtcdUnavailable("malformed answer (keepalive)")
        if _int(result.get("TTL")) <= 0:
            self.lease = None
            return Lost("etcd: our lease ran out there")
        try:
            snap = self._read(client)
        except EtcdValueError as exc:
            return Lost(f"{exc}: not ours")
        holder = snap.holder
        if holder is None or holder.node != self.node or holder.lease != self.lease:
            whose = "nobody" if holder is None else f"{holder.node}, lease {holder.lease:x}"
            return Lost(f"etcd: the lease is no longer ours (held by {whose})")
        return Granted(holder.generation)

    def _release(self, client: Etcd3Client, lease: int | None) -> Reply:
        if lease is not None:
            try:
                self._post(client, "/lease/revoke", {"ID": str(lease)})
            except Etcd3Exception as exc:
                if not _lease_missing(exc):
                    raise
            if self.lease == lease:  # not a lease granted since
                self.lease = None
        return Released()
