#!/usr/bin/env bash
# Debian packages the project needs beyond Python: iproute2 (network namespaces,
# virtual IP tests and the demo), socat (serial-line tests over pty pairs), fuse3
# (libfuse3 and fusermount3 for the replication mirror), iputils-ping (the ping
# checker runs its ping), postgresql (the real application of
# tests/e2e/test_e2e_postgres.py and bench/pg_failover.py: Debian 12's is
# PostgreSQL 15; the tests start their own servers, in namespaces),
# etcd-server (the etcd binary of the arbitrator tests,
# tests/runtime/test_etcd_lease.py, which start their own on loopback),
# systemd (systemd-analyze verify checks the shipped unit file,
# tests/systemd/test_unit_file.py; nothing is started), chromium and
# chromium-driver (the console's browser test,
# tests/console/test_console_browser.py, drives a headless Chromium through
# Selenium with Debian's chromedriver: nothing is downloaded),
# prometheus (for its promtool: tests/metrics checks docs/alerts/*.yml; the
# package also brings the server, about 100 MB, which Debian starts as a
# service where systemd runs: the tests never use it), and
# python3-venv where the system python lacks venv. Installs only what is
# missing, only as root on a Debian-like system; otherwise says what to install.
set -euo pipefail
need=()
for pkg in iproute2 socat fuse3 iputils-ping postgresql etcd-server systemd chromium chromium-driver prometheus; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
((${#need[@]})) || exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
else
  echo "note: install these Debian packages for the full test suite: ${need[*]}" >&2
fi
