#!/bin/sh
# A two-node failover lab in network namespaces, as root (docs/demo.md,
# "A lab of your own"). Everything lives in /tmp/failover-lab and in the
# namespaces lab-br (two bridges), lab-alpha, lab-beta and lab-client:
# nothing is added to the host's network, nothing is mounted in the host's
# mount namespace.
#
#   lab.sh up                  namespaces, key, token, files; then check-config
#   lab.sh start NODE          the daemon of NODE (alpha or beta), in the background
#   lab.sh cli NODE ARGS...    a failover command against NODE's API: status, swap, verify...
#   lab.sh client              what the client gets from port 8080 of both virtual addresses
#   lab.sh audit               both journals, the ack log and both disks: failover audit
#   lab.sh down                stop the daemons and writers, delete the namespaces and the lab
#
# FAILOVER (default: failover) is the command to run, e.g.
# FAILOVER="/path/to/.venv/bin/python -m failover".
set -eu
here=$(cd "$(dirname "$0")" && pwd)
lab=/tmp/failover-lab
fo=${FAILOVER:-failover}

attach() { # NAMESPACE NETWORK ADDRESS [IPV6]: a veth from the bridge NETWORK into NAMESPACE
    ip -n lab-br link add "$1-$2" type veth peer name "$2" netns "lab-$1"
    ip -n lab-br link set "$1-$2" master "$2"
    ip -n lab-br link set "$1-$2" up
    ip -n "lab-$1" addr add "$3/24" dev "$2"
    [ -z "${4:-}" ] || ip -n "lab-$1" addr add "$4/64" dev "$2" nodad
    ip -n "lab-$1" link set "$2" up
}

case ${1:-} in
up)
    for ns in br alpha beta client; do
        ip netns add "lab-$ns"
        ip -n "lab-$ns" link set lo up
    done
    for net in lan cross; do
        ip -n lab-br link add "$net" type bridge
        ip -n lab-br link set "$net" up
    done
    attach alpha lan 10.88.1.1 fd88:1::1; attach alpha cross 10.88.2.1
    attach beta lan 10.88.1.2 fd88:1::2; attach beta cross 10.88.2.2
    attach client lan 10.88.1.100 fd88:1::100; attach client cross 10.88.2.100
    mkdir -p "$lab/data" "$lab/local" "$lab/run"
    for node in alpha beta; do mkdir -p "$lab/disk-$node" "$lab/local-$node"; done
    cp "$here/cluster.yaml" "$here/app-start" "$here/app-stop" "$here/hook" "$here/check-disk" \
        "$here/writer.py" "$here/found.py" "$lab/"
    (umask 077; head -c 32 /dev/urandom >"$lab/cluster.key"; openssl rand -hex 32 >"$lab/token")
    $fo check-config "$lab/cluster.yaml" --node alpha
    ;;
start)
    # Its own network namespace (nsenter --net, not `ip netns exec`, which
    # also makes a mount namespace of its own) and its own mount namespace,
    # where its disk is bind-mounted on the replicated path and local-NODE on
    # local/: two disks behind one path, as on two machines. The daemon
    # mounts its mirror over data/.
    node=$2
    nsenter --net="/run/netns/lab-$node" unshare --mount --propagation private -- \
        sh -c 'mount --bind "$1/disk-$2" "$1/data" && mount --bind "$1/local-$2" "$1/local" &&
               shift 2 && exec "$@"' sh "$lab" "$node" \
        $fo run -c "$lab/cluster.yaml" --node "$node" --log-file "$lab/$node.log" \
        >>"$lab/$node.out" 2>&1 &
    echo $! >"$lab/run/$node.daemon"
    echo "$node: daemon pid $!"
    ;;
cli)
    node=$2; shift 2
    exec nsenter --net="/run/netns/lab-$node" $fo "$@" -c "$lab/cluster.yaml" --node "$node"
    ;;
client)
    for vip in 10.88.1.200 fd88:1::200; do
        printf '%s: ' "$vip"
        nsenter --net=/run/netns/lab-client python3 -c 'import socket, sys
try:
    print(socket.create_connection((sys.argv[1], 8080), timeout=1).recv(100).decode().strip())
except OSError as exc:
    print(exc)' "$vip"
    done
    ;;
audit)
    python3 "$lab/found.py" "$lab/disk-alpha" "$lab/state/alpha/quarantine" "$lab/found-alpha.jsonl"
    python3 "$lab/found.py" "$lab/disk-beta" "$lab/state/beta/quarantine" "$lab/found-beta.jsonl"
    $fo audit "$lab/state/alpha" "$lab/state/beta" --acked "$lab/acked.jsonl" \
        --found "alpha=$lab/found-alpha.jsonl" --found "beta=$lab/found-beta.jsonl"
    ;;
down)
    for f in "$lab"/run/*.daemon; do
        [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null || true
    done
    sleep 3 # each daemon stops its writer (the stop script) and unmounts its mirror
    for f in "$lab"/local-*/app.pid "$lab"/run/*.daemon; do
        [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
    done
    for ns in alpha beta client br; do ip netns del "lab-$ns" 2>/dev/null || true; done
    rm -rf "$lab"
    ;;
*)
    sed -n '2,17p' "$0"
    exit 2
    ;;
esac
