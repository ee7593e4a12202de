#!/usr/bin/env bash
# `make demo`: start a local systemd test host and deploy the whole stack onto it with site.yml.
#   tests/demo.sh up     create (or reuse) the host, run site.yml, print how to reach it
#   tests/demo.sh down   remove the host
set -euo pipefail
cd "$(dirname "$0")/.."
name=llm-demo
ssh_port=2230
https_port=${LLM_DEMO_HTTPS_PORT:-8443}
bind=${LLM_DEMO_BIND:-127.0.0.1}
cache=${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}
export LLM_DEMO_HTTPS_PORT=$https_port

case "${1:-up}" in
  down)
    podman rm -f "$name" >/dev/null 2>&1 && echo "demo host removed" || echo "no demo host"
    exit 0 ;;
  up) ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

if ! podman container exists "$name"; then
  # NET_ADMIN: the firewall role loads nftables rules in the container's network namespace.
  podman run -d --name "$name" --hostname "$name" --systemd=always --cap-add=NET_ADMIN \
    -p "127.0.0.1:${ssh_port}:22" -p "${bind}:${https_port}:443" \
    -v "$cache/ssh/id_ed25519.pub:/root/.ssh/authorized_keys:ro" \
    -v "$cache/uv-cache:/var/cache/llm/uv" --shm-size=1g \
    localhost/llm-testhost:bookworm /sbin/init >/dev/null
  echo "demo host $name started"
elif [ "$(podman inspect -f '{{.State.Running}}' "$name")" != true ]; then
  podman start "$name" >/dev/null
fi

for _ in $(seq 60); do
  ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ConnectTimeout=2 -i "$cache/ssh/id_ed25519" -p "$ssh_port" root@127.0.0.1 true && break
  sleep 2
done

ansible-playbook -i inventories/demo site.yml

cat <<MSG

Demo ready.
  Chat UI:   https://localhost:${https_port}/   (self-signed certificate)
  Sign in:   admin@localhost, password in .secrets/llm-demo/open-webui-admin
  API:       curl -k https://localhost:${https_port}/v1/models -H "Authorization: Bearer \$(podman exec ${name} cat /etc/llm/api-key)"
  Remove:    make demo-destroy
MSG
