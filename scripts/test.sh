#!/bin/bash
# Installs what is needed, builds vstord with AddressSanitizer and
# UndefinedBehaviorSanitizer (warnings are errors) and runs every test.
#   PRESET=debug scripts/test.sh     a plain debug build instead
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PRESET=${PRESET:-ci}
cmake --preset "$PRESET" >/dev/null
cmake --build --preset "$PRESET"
ctest --preset "$PRESET" -j2 --timeout 300
