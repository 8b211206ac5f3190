#!/bin/bash
# Installs what is needed, builds vstord and runs it in the foreground with
# a QMP monitor on a unix socket.  Extra arguments go to vstord.
#   QMP_SOCKET=/path/qmp.sock scripts/run.sh --log-level info
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release
dir=${XDG_RUNTIME_DIR:-/tmp}/vstord-$(id -u)
mkdir -p "$dir"
sock=${QMP_SOCKET:-$dir/qmp.sock}
echo "vstord: QMP monitor on $sock (connect with: socat - UNIX-CONNECT:$sock)" >&2
exec build/release/vstord \
  --chardev "socket,id=qmp0,path=${sock//,/,,},server=on,wait=off" \
  --monitor chardev=qmp0 "$@"
