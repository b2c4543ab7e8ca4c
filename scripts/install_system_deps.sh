#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks start for real, when missing:
# nginx and HAProxy (log producers and targets), tcpdump and tshark (captures and the
# cross-check), wrk (the replay benchmark's peer), ab (a real client in the capture tests and
# the pcap benchmark).
# As root it uses apt-get; otherwise it says what to install and fails.
set -euo pipefail

need=()
has() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
has nginx || need+=(nginx-light)
has haproxy || need+=(haproxy)
has tcpdump || need+=(tcpdump)
has tshark || need+=(tshark)
has wrk || need+=(wrk)
has ab || need+=(apache2-utils)

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Keep package scripts from starting system services on install.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "installed: ${need[*]}" >&2
