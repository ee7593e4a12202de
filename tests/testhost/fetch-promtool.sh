#!/usr/bin/env bash
# promtool (Prometheus's config and rule checker, and rule unit tester) from Debian 12's prometheus package, the
# version the monitoring role installs, unpacked into $LLM_BUNDLE_CACHE/tools/bin. The package is not installed:
# that would start a Prometheus on this machine. Skipped when present.
set -euo pipefail
dest="${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}/tools/bin"
if [ -x "$dest/promtool" ]; then
  echo "promtool: present (skipped)"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }
dpkg-deb -x prometheus_*.deb unpacked
install -D -m 0755 unpacked/usr/bin/promtool "$dest/promtool"
"$dest/promtool" --version | head -1
