#!/usr/bin/env bash
# pack-carry.sh [--level N] [--out DIR]: writes DIR (default <repo>/.device)/{node.xz,nm.tar.xz}
# (pack_carry.py: node and the pruned node_modules the GPU machine lacks), then checks that what a
# device call sends fits its 64 MiB: the tracked and untracked-not-ignored files plus the carry.
# Name `.device` in the call's carry. Exit status 1 when it does not fit. device-check.sh --dry-run
# packs into a scratch DIR, so that a dry run leaves a packed .device as it was.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
LEVEL=6 DEST=$ROOT/.device
while [ $# -gt 0 ]; do
  case $1 in
    --level) LEVEL=$2; shift 2 ;; --out) DEST=$2; shift 2 ;;
    *) echo "pack-carry.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
python3 "$HERE/pack_carry.py" "$ROOT" --out "$DEST" --level "$LEVEL"
cd "$ROOT"
TREE=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}')
CARRY=$(find "$DEST" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
LIMIT=$((64 * 1024 * 1024))
TOTAL=$((TREE + CARRY))
echo "tree $TREE + carry $CARRY = $TOTAL bytes of $LIMIT ($((TOTAL * 100 / LIMIT))%), xz level $LEVEL"
[ "$TOTAL" -le "$LIMIT" ] || { echo "pack-carry: over the device call's 64 MiB" >&2; exit 1; }
