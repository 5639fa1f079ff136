#!/usr/bin/env bash
# Single metadata member against a group of three, side by side: the same
# release build, 3 storage nodes, replication 3, the same fsbench workload on
# the mount, in alternating rounds (1, 3, 1, 3, ...). Prints each round's
# figures and, per figure, the ratio of the means (three / one).
#
#   bench/members.sh [ROUNDS] [fsbench args...]     (default 2 rounds each)
# Needs root (mounts, dropping the page cache) and `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}; shift || true
ARGS=("$@"); [ ${#ARGS[@]} -gt 0 ] || ARGS=(--size-mib 64 --files 1000)
OUT=bench/results; mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
H=/tmp/bigfs-members-bench
for r in $(seq 1 "$ROUNDS"); do
  for m in 1 3; do
    MEMBERS=$m bench/bigfs-up.sh start "$H" >/dev/null
    python3 bench/fsbench.py "$H/mnt" --json "${ARGS[@]}" >"$OUT/members$m-$stamp-$r.json"
    bench/bigfs-up.sh stop "$H" >/dev/null
    sleep 1
    echo "round $r, $m member(s): $(cat "$OUT/members$m-$stamp-$r.json")"
  done
done
rm -rf "$H"
python3 - "$OUT" "$stamp" "$ROUNDS" <<'PY'
import json, sys
out, stamp, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(m):
    return [json.load(open(f"{out}/members{m}-{stamp}-{r}.json")) for r in range(1, rounds + 1)]
one, three = load(1), load(3)
print(f"{'figure':24} {'1 member':>22} {'3 members':>22} {'3/1':>6}")
for k in one[0]:
    if k == "content_ok":
        continue
    a = [x[k] for x in one]; b = [x[k] for x in three]
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    fa = ", ".join(f"{v:.0f}" for v in a); fb = ", ".join(f"{v:.0f}" for v in b)
    print(f"{k:24} {fa:>22} {fb:>22} {mb / ma if ma else float('nan'):>6.2f}")
PY
