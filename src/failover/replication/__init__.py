"""Synchronous replication of directories (issue 4).

``ops``: the operation records streamed to the peer and their binary codec.
``apply``: the receiver side that writes them into the peer's backing directory,
never outside it.
"""
