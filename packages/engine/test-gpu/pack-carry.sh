#!/usr/bin/env bash
# pack-carry.sh [--level N]: writes <repo>/.device/{node.xz,nm.tar.xz} (pack_carry.py: node and the
# pruned node_modules the GPU machine lacks), then checks that what a device call sends fits its
# 64 MiB: the tracked and untracked-not-ignored files plus .device. Name `.device` in the call's
# carry. Exit status 1 when it does not fit.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
LEVEL=6
[ "${1:-}" = "--level" ] && LEVEL=$2
python3 "$HERE/pack_carry.py" "$ROOT" --level "$LEVEL"
cd "$ROOT"
TREE=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
CARRY=$(find .device -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
LIMIT=$((64 * 1024 * 1024))
TOTAL=$((TREE + CARRY))
echo "tree $TREE + carry $CARRY = $TOTAL bytes of $LIMIT ($((TOTAL * 100 / LIMIT))%), xz level $LEVEL"
[ "$TOTAL" -le "$LIMIT" ] || { echo "pack-carry: over the device call's 64 MiB" >&2; exit 1; }
