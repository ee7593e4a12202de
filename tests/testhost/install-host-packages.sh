#!/usr/bin/env bash
# Installs what the controller needs to run test hosts (Debian/Ubuntu, as root); skipped when present.
set -euo pipefail
need=()
for cmd_pkg in podman:podman debootstrap:debootstrap runc:runc iptables:iptables ssh:openssh-client shellcheck:shellcheck chromium:chromium nft:nftables sslscan:sslscan; do
  command -v "${cmd_pkg%%:*}" >/dev/null 2>&1 || need+=("${cmd_pkg#*:}")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "host packages: present (skipped)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing packages: ${need[*]}; run as root or install them with apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" uidmap slirp4netns fuse-overlayfs >/dev/null
echo "host packages: installed ${need[*]}"
