#!/usr/bin/env bash
# Two BigFS setups side by side: the same release build, 3 storage nodes,
# replication 3, the same fsbench workload on the mount, in alternating
# rounds (A, B, A, B, ...). Prints each round's figures and, per figure,
# the ratio of the means (B / A). A setup is the environment given to
# bench/bigfs-up.sh, or `moosefs` for the peer (GOAL=3
# ../shared/peers/moosefs-cluster.sh), for example:
#
#   bench/pair.sh 3 "MEMBERS=1" "MEMBERS=3"               # one member vs three
#   bench/pair.sh 3 "MEMBERS=3 INSECURE=1" "MEMBERS=3"    # the cost of TLS
#   bench/pair.sh 3 moosefs "MEMBERS=3"                   # against MooseFS
#   bench/pair.sh ROUNDS A B [fsbench args...]  (default --size-mib 64 --files 1000)
#
# The workload is ../shared/peers/fsbench.py when it is there (the one the
# MooseFS comparisons use), else bench/fsbench.py; FSBENCH overrides.
# Needs root (mounts, dropping the page cache) and `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:?rounds}; A=${2:?setup A}; B=${3:?setup B}; shift 3
ARGS=("$@"); [ ${#ARGS[@]} -gt 0 ] || ARGS=(--size-mib 64 --files 1000)
FSBENCH=${FSBENCH:-../shared/peers/fsbench.py}
[ -f "$FSBENCH" ] || FSBENCH=bench/fsbench.py
OUT=bench/results; mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
H=/tmp/bigfs-pair-bench
PEERS=${PEERS:-../shared/peers}
# Starts a setup; prints its mount point.
up() {
  if [ "$1" = moosefs ]; then
    GOAL=3 "$PEERS/moosefs-cluster.sh" start "$H-mfs" >/dev/null
    echo "$H-mfs/mnt"
  else
    env $1 bench/bigfs-up.sh start "$H" >/dev/null
    echo "$H/mnt"
  fi
}
down() {
  if [ "$1" = moosefs ]; then
    "$PEERS/moosefs-cluster.sh" stop "$H-mfs" >/dev/null
    rm -rf "$H-mfs"
  else
    bench/bigfs-up.sh stop "$H" >/dev/null
  fi
}
echo "workload: $FSBENCH ${ARGS[*]}; A: $A; B: $B"
for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    setup=$A; [ "$side" = B ] && setup=$B
    mnt=$(up "$setup")
    python3 "$FSBENCH" "$mnt" --json "${ARGS[@]}" >"$OUT/pair$side-$stamp-$r.json"
    down "$setup"
    sleep 1
    echo "round $r, $side ($setup): $(cat "$OUT/pair$side-$stamp-$r.json")"
  done
done
rm -rf "$H"
python3 - "$OUT" "$stamp" "$ROUNDS" <<'PY'
import json, sys
out, stamp, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(side):
    return [json.load(open(f"{out}/pair{side}-{stamp}-{r}.json")) for r in range(1, rounds + 1)]
a, b = load("A"), load("B")
print(f"{'figure':26} {'A':>24} {'B':>24} {'B/A':>6}")
for k in a[0]:
    if not isinstance(a[0][k], (int, float)) or isinstance(a[0][k], bool):
        continue
    xa = [x[k] for x in a]; xb = [x[k] for x in b]
    ma, mb = sum(xa) / len(xa), sum(xb) / len(xb)
    fa = ", ".join(f"{v:.0f}" for v in xa); fb = ", ".join(f"{v:.0f}" for v in xb)
    print(f"{k:26} {fa:>24} {fb:>24} {mb / ma if ma else float('nan'):>6.2f}")
PY
