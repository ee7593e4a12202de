#!/usr/bin/env bash
# The podman network of molecule/default's air-gapped host (README "Air-gapped hosts"), as root on the controller:
#   create   an INTERNAL network (no masquerade, no default route in the container: no route out), idempotent
#   up       after the container started (molecule/default/prepare.yml): the controller's address on its bridge
#            (only the controller reaches the host: SSH, and podman's loopback-published ports through
#            route_localnet), and the chain LLM-OFFLINE counting every connection the host STARTS towards the
#            controller (the host's DNS server is the controller's address on the bridge, where nothing answers:
#            a name lookup is such a connection) and rejecting it; its counters start at zero
#   attempts print how many connections the host started since `up` (tests/test_offline.py reads it)
set -euo pipefail
NET=llm-offline
SUBNET=10.89.77.0/24
GATEWAY=10.89.77.1
bridge() { podman network inspect "$NET" --format '{{.NetworkInterface}}'; }
case "${1:-}" in
  create)
    podman network exists "$NET" || podman network create --internal --subnet "$SUBNET" "$NET" >/dev/null
    echo "offline network: $NET ($SUBNET, internal)"
    ;;
  up)
    dev=$(bridge)
    ip -4 addr show dev "$dev" | grep -q " $GATEWAY/" || ip addr add "$GATEWAY/24" dev "$dev"
    sysctl -qw "net.ipv4.conf.$dev.route_localnet=1"
    iptables -N LLM-OFFLINE 2>/dev/null || true
    iptables -F LLM-OFFLINE
    iptables -A LLM-OFFLINE -m conntrack --ctstate NEW -j LOG --log-prefix "llm-offline attempt: "
    iptables -A LLM-OFFLINE -m conntrack --ctstate NEW -j REJECT
    for chain in INPUT FORWARD; do
      iptables -C "$chain" -i "$dev" -j LLM-OFFLINE 2>/dev/null || iptables -I "$chain" -i "$dev" -j LLM-OFFLINE
    done
    echo "offline network: $dev has $GATEWAY; new connections from the host are counted and rejected"
    ;;
  attempts)
    iptables -L LLM-OFFLINE -v -n -x | awk '$3 == "LOG" {print $1}'
    ;;
  *)
    echo "usage: $0 create|up|attempts" >&2
    exit 2
    ;;
esac
