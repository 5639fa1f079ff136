#!/usr/bin/env bash
# One metadata member against a group of three, side by side (see
# bench/pair.sh): bench/members.sh [ROUNDS] [fsbench args...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}; shift || true
exec bench/pair.sh "$ROUNDS" "MEMBERS=1" "MEMBERS=3" "$@"
