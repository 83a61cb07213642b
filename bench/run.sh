#!/usr/bin/env bash
# Runs the bench command (bench/cmd/bench) with nginx: installs nginx from
# apt if it is missing (Debian or Ubuntu, as root or through sudo), builds
# sluice and the bench command, runs the benchmark against direct, the
# relays, nginx and sluice, and prints the results. Arguments go to the
# bench command:
#
#   bash bench/run.sh             the full run (a few minutes)
#   bash bench/run.sh --quick     a smoke run
#   bash bench/run.sh --json      one JSON object with every number
#   bash bench/run.sh scale       10,000 SSE streams per protocol
#   bash bench/run.sh hol         head-of-line blocking beside a stalled download
#   bash bench/run.sh grpc        gRPC unary calls/s and streaming rate, direct and through sluice
#   bash bench/run.sh tcp         TCP tunnels: direct, sluice tcp v1 and v2, frp and chisel if given
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
find_nginx() {
  command -v nginx 2>/dev/null && return
  for p in /usr/sbin/nginx /usr/local/sbin/nginx; do
    if [ -x "$p" ]; then echo "$p"; return; fi
  done
}

# A first argument that is not a flag names another run (scale, hol, grpc, tcp), which
# needs no nginx.
verb=
case "${1:-}" in
  "" | -*) ;;
  *) verb=$1; shift ;;
esac

if [ -z "$verb" ] && [ -z "$(find_nginx)" ]; then
  echo "== installing nginx (apt-get)" >&2
  # The package would start a system nginx on port 80 (invoke-rc.d), which
  # the benchmark does not need: a policy-rc.d answering 101 ("forbidden")
  # keeps it from starting, and is removed after the install.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    trap 'as_root rm -f "$policy"' EXIT
  fi
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y nginx
  if [ -e "$policy" ] && [ "$(cat "$policy")" = "$(printf '#!/bin/sh\nexit 101')" ]; then
    as_root rm -f "$policy"
  fi
  trap - EXIT
fi
nginx_bin=$(find_nginx)
if [ -z "$verb" ] && [ -z "$nginx_bin" ]; then
  echo "run.sh: nginx is still missing after the install" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "== building sluice and the bench command" >&2
go build -o "$tmp/sluice" ./cmd/sluice
go build -o "$tmp/bench" ./bench/cmd/bench
if [ -n "$verb" ]; then
  echo "== bench $verb" >&2
  "$tmp/bench" "$verb" --sluice "$tmp/sluice" "$@"
else
  echo "== bench ($("$nginx_bin" -v 2>&1))" >&2
  "$tmp/bench" --sluice "$tmp/sluice" --nginx "$nginx_bin" "$@"
fi
