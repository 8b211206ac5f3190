#!/bin/bash
# Installs the Debian 12 packages that building, running and testing vstord
# need.  Idempotent: when everything is installed it only checks and exits.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ninja-build ccache pkg-config python3
  libboost1.81-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev liburing-dev libnbd-dev libssl-dev
  rpcsvc-proto libtirpc-dev libsystemd-dev
  # tests: real peers and the reference implementation
  socat telnet python3-websocket qemu-system-common qemu-utils
  libnbd-bin python3-libnbd nbdkit fio bc systemd
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
