#!/usr/bin/env bash
# Security report of a deployed test host (a podman container running systemd):
#   1. `systemd-analyze security` exposure of every unit the bundle installs or hardens
#      (the engines llamacpp/vllm, open-webui, nginx), with the checks that still cost points;
#   2. a TLS scan of its HTTPS endpoint: accepted protocol versions and cipher suites.
#
#   tests/bench/security-report.sh [CONTAINER] [HOST:PORT]
#     CONTAINER  default llm-demo
#     HOST:PORT  HTTPS endpoint as seen from this machine; default the port podman publishes for 443
#
# The TLS scan uses sslscan (make host-packages installs Debian's) or testssl.sh; without either it
# probes with `openssl s_client`, one handshake per protocol version and per cipher suite the local
# OpenSSL knows (`openssl ciphers ALL:COMPLEMENTOFALL:@SECLEVEL=0`). The client runs at security level 0,
# so a refused legacy protocol or cipher is the server's refusal, not the client's. Suites the local
# OpenSSL does not implement (e.g. SSLv2/SSLv3, export ciphers) cannot be probed this way.
set -uo pipefail
container=${1:-llm-demo}
endpoint=${2:-}
units=(llamacpp.service vllm.service open-webui.service nginx.service)

podman container exists "$container" || { echo "no container $container" >&2; exit 2; }

echo "== systemd-analyze security on $container ($(podman exec "$container" systemctl --version | head -1))"
printf '%-22s %-8s %s\n' UNIT EXPOSURE RATING
for unit in "${units[@]}"; do
  [ "$(podman exec "$container" systemctl show -p LoadState --value "$unit")" = loaded ] || continue
  out=$(podman exec "$container" systemd-analyze security --no-pager "$unit" 2>&1)
  line=$(grep -m1 'Overall exposure level' <<<"$out")
  level=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) \([A-Z]*\).*/\1 \2/p' <<<"$line")
  printf '%-22s %-8s %s\n' "$unit" "${level% *}" "${level#* }"
done
echo
echo "== checks that still cost exposure (weight > 0), per unit"
for unit in "${units[@]}"; do
  [ "$(podman exec "$container" systemctl show -p LoadState --value "$unit")" = loaded ] || continue
  echo "-- $unit"
  # Lines marked ✗ (failed check) carry the exposure that remains.
  podman exec "$container" systemd-analyze security --no-pager "$unit" 2>&1 | grep '✗' | sed 's/^ *✗ /  /' | cut -c1-110
done

if [ -z "$endpoint" ]; then
  mapped=$(podman port "$container" 443/tcp 2>/dev/null | head -1)
  [ -n "$mapped" ] || { echo "container $container publishes no port for 443; pass HOST:PORT" >&2; exit 2; }
  endpoint=$mapped
fi
host=${endpoint%:*}
[ "$host" = 0.0.0.0 ] && endpoint="127.0.0.1:${endpoint##*:}"

echo
echo "== TLS scan of $endpoint"
if command -v sslscan >/dev/null; then
  sslscan --no-colour "$endpoint"
  exit 0
elif command -v testssl.sh >/dev/null || command -v testssl >/dev/null; then
  "$(command -v testssl.sh || command -v testssl)" --quiet --color 0 -p -E "$endpoint"
  exit 0
fi
echo "(neither sslscan nor testssl.sh is installed: probing with $(openssl version | cut -d' ' -f1-2) s_client)"

probe() {  # probe ARGS... -> 0 when the handshake completes
  timeout 10 openssl s_client -connect "$endpoint" -servername localhost "$@" </dev/null >/dev/null 2>&1
}

echo "protocols:"
for proto in tls1 tls1_1 tls1_2 tls1_3; do
  if [ "$proto" = tls1_3 ]; then probe -"$proto" && r=accepted || r=refused
  else probe -"$proto" -cipher 'ALL:COMPLEMENTOFALL:@SECLEVEL=0' && r=accepted || r=refused; fi
  printf '  %-8s %s\n' "$proto" "$r"
done

echo "cipher suites accepted (TLS 1.2 and older probed with -tls1_2, TLS 1.3 with -ciphersuites):"
for c in $(openssl ciphers -s -tls1_2 'ALL:COMPLEMENTOFALL:@SECLEVEL=0' | tr ':' ' '); do
  case $c in TLS_*) continue ;; esac
  probe -tls1_2 -cipher "$c:@SECLEVEL=0" && echo "  TLSv1.2  $c"
done
for c in TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256 TLS_AES_128_CCM_SHA256 \
         TLS_AES_128_CCM_8_SHA256; do
  probe -tls1_3 -ciphersuites "$c" && echo "  TLSv1.3  $c"
done
for proto in tls1 tls1_1; do
  for c in $(openssl ciphers -s "-$proto" 'ALL:COMPLEMENTOFALL:@SECLEVEL=0' 2>/dev/null | tr ':' ' '); do
    case $c in TLS_*) continue ;; esac
    probe "-$proto" -cipher "$c:@SECLEVEL=0" && echo "  $proto  $c"
  done
done
echo "groups (key exchange) accepted with TLS 1.3:"
for g in X25519 P-256 P-384 P-521 X448 ffdhe2048 ffdhe3072; do
  probe -tls1_3 -groups "$g" && echo "  $g"
done
