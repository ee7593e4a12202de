#!/usr/bin/env bash
# Build a systemd Debian test-host image from Debian's archive (debootstrap) and import it
# into podman. Skipped when the image already exists (set LLM_TESTHOST_REBUILD=1 to force).
# Usage: build-image.sh [bookworm|trixie]
set -euo pipefail
suite=${1:-bookworm}
image="localhost/llm-testhost:${suite}"
cache=${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$here/containers.conf}

if [ "${LLM_TESTHOST_REBUILD:-0}" != 1 ] && podman image exists "$image"; then
  echo "test-host image $image: present (skipped)"
  exit 0
fi

tarball="$cache/images/llm-testhost-${suite}.tar"
if [ "${LLM_TESTHOST_REBUILD:-0}" = 1 ] || [ ! -s "$tarball" ]; then
  start=$(date +%s)
  rootfs=$(mktemp -d "${TMPDIR:-/var/tmp}/llm-testhost-${suite}.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$cache/images"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,python3-apt,sudo,iproute2,ca-certificates,procps,openssh-server,kmod \
    "$suite" "$rootfs" "$mirror" >"$cache/images/debootstrap-${suite}.log" 2>&1 \
    || { tail -30 "$cache/images/debootstrap-${suite}.log"; exit 1; }

  # Full deb822 sources: main suite, updates and security (components are the base role's job).
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: ${mirror}
Suites: ${suite} ${suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: ${suite}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  : >"$rootfs/etc/machine-id"
  rm -f "$rootfs/var/lib/dbus/machine-id"
  for unit in getty@tty1.service serial-getty@ttyS0.service console-getty.service \
              apt-daily.timer apt-daily-upgrade.timer systemd-logind.service; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
  done
  # sshd host keys are generated at first boot, not baked into the image.
  rm -f "$rootfs"/etc/ssh/ssh_host_*
  mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
  cat >"$rootfs/etc/systemd/system/ssh.service.d/hostkeys.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
  # Empty apt lists dated 1970 so the first apt run with cache_valid_time really updates.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  mkdir -p "$rootfs/var/lib/apt/lists/partial"
  touch -d @0 "$rootfs/var/lib/apt/lists"
  tar -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  echo "debootstrap $suite: $(( $(date +%s) - start ))s"
fi

podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
  "$tarball" "$image" >/dev/null
echo "test-host image $image: imported ($(du -h "$tarball" | cut -f1))"
