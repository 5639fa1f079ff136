#!/usr/bin/env bash
# Runs the same workload on a local BigFS cluster (release build, 3 storage
# nodes, replication 3, mounted with bigfs-mount) and on a local MooseFS
# cluster with three copies (../shared/peers/moosefs-cluster.sh), one after
# the other, and prints each figure and the BigFS/MooseFS ratio.
#
#   bench/compare.sh [--size-mib N] [--files N]
# Needs root (mounts, dropping the page cache). Writes results to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ARGS=("$@")
PEERS=${PEERS:-$ROOT/../shared/peers}
OUT=$ROOT/bench/results
mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)

export BIGFS_HOME=${BIGFS_HOME:-/tmp/bigfs-bench}
export BIGFS_MOUNT=$BIGFS_HOME/mnt
rm -rf "$BIGFS_HOME"
scripts/local-cluster.sh start >/dev/null
python3 bench/fsbench.py "$BIGFS_MOUNT" --json "${ARGS[@]}" | tee "$OUT/bigfs-$stamp.json"
scripts/local-cluster.sh stop >/dev/null

if [ -x "$PEERS/moosefs-cluster.sh" ]; then
  GOAL=3 "$PEERS/moosefs-cluster.sh" start /tmp/mfs-bench >/dev/null
  python3 bench/fsbench.py /tmp/mfs-bench/mnt --json "${ARGS[@]}" | tee "$OUT/moosefs-$stamp.json"
  "$PEERS/moosefs-cluster.sh" stop /tmp/mfs-bench >/dev/null
  python3 - "$OUT/bigfs-$stamp.json" "$OUT/moosefs-$stamp.json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1])); m = json.load(open(sys.argv[2]))
print(f"{'figure':24} {'BigFS':>10} {'MooseFS':>10} {'ratio':>7}")
for k in b:
    if k == "content_ok":
        print(f"{k:24} {b[k]:>10} {m.get(k, 0):>10}")
        continue
    r = b[k] / m[k] if m.get(k) else float('nan')
    print(f"{k:24} {b[k]:>10.1f} {m[k]:>10.1f} {r:>7.2f}")
PY
fi
