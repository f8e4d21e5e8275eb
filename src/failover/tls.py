"""Mutual TLS for the replication stream: the contexts both ends use.

The cluster has its own CA; each node holds a certificate and key it signed
(the same file paths on both nodes, ``replication.tls`` in the config). Each
end presents its certificate and accepts only a peer whose certificate that
CA signed. Peers are addressed by IP, so there is no host name check: the
identity is "signed by the cluster's CA", and the replication channel's own
HMAC authentication with the cluster key runs inside the TLS session as well.
"""

from __future__ import annotations

import ssl

from failover.errors import UsageError


def tls_context(*, server: bool, ca_file: str, cert_file: str, key_file: str) -> ssl.SSLContext:
    """A mutual-TLS context for one end of a replication stream: it presents this
    node's certificate and accepts only a peer whose certificate the cluster's
    CA signed (peers are addressed by IP: no host name check). Raises
    ``UsageError`` naming the file that cannot be used."""
    purpose = ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH
    try:
        context = ssl.create_default_context(purpose, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"TLS CA file {ca_file}: {exc}") from exc
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"TLS certificate {cert_file} / key {key_file}: {exc}") from exc
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
