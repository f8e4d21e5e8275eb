"""The witness: a small arbitrator service a third machine runs for one or more clusters.

A node of a cluster configured with ``arbitrator: {type: witness}`` serves only
while it holds the witness's lease for the generation it serves (the core's
arbitration gate, ``core/arbitration.py``). The witness keeps, per cluster,
one ``LeaseRecord`` and answers three requests: acquire, renew, release.

Invariants (each is checked by a test in tests/witness):

1. The rule. The witness grants only by ``core.arbitration.decide_request``
   (acquire) and ``decide_renewal`` (renew); a release frees the lease of
   its holder only when it names the grant the holder holds (the seq of the
   granted acquire, from the same run of the node, and its generation:
   ``service.decide_release``), so a release that arrives after the same
   node was granted again frees nothing. No other rule decides a grant.
2. Durability. The record a verdict produces is written to disk
   (``failover.fsutil.write_atomic``: fsynced file and directory) before the
   answer that depends on it leaves, and adopted in memory only once it is
   written. A grant therefore never survives a crash of the witness as "not
   granted" (the holder is on disk before the holder hears it), and it is
   never granted twice (the next request is decided on the record that
   holds it). A record that cannot be written gets a denial and changes
   nothing.
3. Authentication. A request counts only if it is a wire frame of that
   cluster (``failover.wire.FrameCodec``) whose HMAC verifies under a key
   derived from that cluster's key, that the replay guard has not seen, and
   that echoes the witness's current incarnation (so a request recorded
   before the witness restarted is worth nothing). Anything else gets no
   grant and changes nothing: it is logged with the reason and the source
   address, and dropped (or, for a stale echo, answered "ask again" with
   the current incarnation, which changes nothing either).
4. One clock. ``expires_at`` is on the witness's monotonic clock only; no
   node's time is ever compared with it. After a restart the witness does
   not trust any clock it had before: a held lease is taken as running for
   a whole ``ttl`` from the restart (longer than it can have had left), so a
   restart never shortens a lease.

Modules: ``messages`` (the request and answer payloads and the witness key),
``store`` (the crash-safe record per cluster), ``service`` (the decision per
request, pure of I/O but for the store, and the UDP server), ``config`` (the
witness's YAML file).
"""
