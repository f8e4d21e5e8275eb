"""The control API: HTTP/1.1 + JSON on a Unix socket (optionally TCP with a token)."""
