"""TLS for the control API's TCP listener: the server's context and the client's.

The daemon presents ``control.tcp.tls.cert_file`` (with its key); a client
trusts only the CA file it is given (``--ca-file``, or ``tls.ca_file`` of the
cluster file), never the system's store. As on the replication stream
(``failover.tls``), the identity is "signed by that CA": nodes are often
addressed by IP or by a wildcard address, so there is no host name check, and
that CA should be one kept for failover. Without a CA file, a client reading
the cluster file on the node itself pins the node's own certificate.

Each helper raises ``UsageError`` naming the file that cannot be used.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from failover.errors import UsageError


def _read(path: str | Path, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(1 << 20)
    except OSError as exc:
        raise UsageError(f"cannot read the control TLS {what} {path}: {exc.strerror}") from None


def _check_certificates(path: str | Path, what: str) -> None:
    try:
        x509.load_pem_x509_certificates(_read(path, what))
    except ValueError:
        raise UsageError(
            f"the control TLS {what} {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ) from None


def server_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """The daemon's context: it presents ``cert_file`` (the chain, leaf first) and
    ``key_file``; TLS 1.2 at least; no client certificate asked (tokens identify)."""
    _check_certificates(cert_file, "certificate")
    _read(key_file, "key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise UsageError(
                f"the control TLS key {key_file} is not the key of the certificate {cert_file}"
            ) from None
        raise UsageError(
            f"the control TLS key {key_file} is not a usable PEM private key ({exc.reason})"
        ) from None
    return context


def client_context(ca_file: str | Path, *, pinned: bool = False) -> ssl.SSLContext:
    """A client's context: the server's certificate must be signed by a certificate
    of ``ca_file`` (no host name check, see the module docstring). ``pinned``:
    ``ca_file`` is the server's own certificate, trusted as it is."""
    _check_certificates(ca_file, "certificate" if pinned else "CA file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if pinned:
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        context.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as exc:
        raise UsageError(f"the control TLS CA file {ca_file}: {exc.reason}") from None
    return context
