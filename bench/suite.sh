#!/usr/bin/env bash
# The whole workload suite on BigFS and on MooseFS, side by side, in
# alternating rounds (BigFS, MooseFS, BigFS, MooseFS, ...), each round on a
# freshly started cluster (3 storage nodes / chunkservers, 3 copies):
#
#   bench/suite.sh ROUNDS [--quick] [suite.py run options...]
#   bench/suite.sh 3                  # the full measurement
#   bench/suite.sh 1 --quick          # smaller sizes, to try it out
#   BIGFS_SETUP="MEMBERS=3 INSECURE=1" bench/suite.sh 2   # another BigFS setup
#
# Workloads (bench/suite.py): ../shared/peers/fsbench.py rows; a tree of
# >= 10,000 real source files (crates of Cargo.lock) extracted, read back
# cold, copied, a git clone, all removed; 4 processes writing and reading
# their own big file and creating small files; 100,000 tiny O_APPEND
# writes; the mount daemon's peak RSS. Writes bench/results/suite-STAMP.json
# and .png, copies the chart to docs/bench-suite.png, prints the rounds and
# the ratios (BigFS mean / MooseFS mean) as a table and as markdown.
# Needs root and a release build (target/release); installs
# python3-matplotlib if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench/suite.sh needs root (mounts, dropping the page cache)" >&2; exit 1; }
ROUNDS=${1:?usage: bench/suite.sh ROUNDS [--quick] [suite.py run options...]}
shift
QUICK=0; ARGS=()
for x in "$@"; do
  if [ "$x" = --quick ]; then QUICK=1; else ARGS+=("$x"); fi
done
# --quick: about a tenth of the data; the source tree stays whole (it is
# the point of that workload), the appends stay 100,000.
SIZES=(--size-mib 64 --files 1000 --par-mib 1024 --par-files 1000)
[ "$QUICK" = 1 ] && SIZES=(--size-mib 32 --files 300 --par-mib 128 --par-files 250)
BIGFS_SETUP=${BIGFS_SETUP:-MEMBERS=3}
PEERS=${PEERS:-../shared/peers}
FSBENCH=${FSBENCH:-$PEERS/fsbench.py}
[ -f "$FSBENCH" ] || FSBENCH=bench/fsbench.py
PY=${PYTHON:-/usr/bin/python3}
TREE_TAR=${TREE_TAR:-/var/tmp/bigfs-bench-tree.tar}
GIT_SOURCE=${GIT_SOURCE:-/work/.mirror/databendlabs+openraft/repo}
[ -d "$GIT_SOURCE" ] || GIT_SOURCE=$(git rev-parse --path-format=absolute --git-common-dir)
H=/tmp/bigfs-suite-bench
for b in bigfs bigfs-metadata bigfs-mount bigfs-storage; do
  [ -x "target/release/$b" ] || { echo "target/release/$b missing: cargo build --release first" >&2; exit 1; }
done
# One benchmark at a time: the clusters take fixed ports and one network
# namespace.
if ss -ltn | grep -q '127.0.0.1:9400 ' || pgrep -x mfsmaster >/dev/null; then
  echo "a BigFS cluster on 127.0.0.1:9400 or an mfsmaster is running already (another benchmark?); stop it first" >&2
  exit 1
fi
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-matplotlib >/dev/null
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/results; mkdir -p "$OUT" docs
RUN=$OUT/suite-$stamp.d; mkdir -p "$RUN"

up() {
  if [ "$1" = moosefs ]; then
    GOAL=3 "$PEERS/moosefs-cluster.sh" start "$H-mfs" >"$RUN/up.log" 2>&1 || { cat "$RUN/up.log" >&2; return 1; }
  else
    # shellcheck disable=SC2086 # the setup is several VAR=value words
    env $BIGFS_SETUP bench/bigfs-up.sh start "$H" >"$RUN/up.log" 2>&1 || { cat "$RUN/up.log" >&2; return 1; }
  fi
}
down() {
  if [ "$1" = moosefs ]; then
    "$PEERS/moosefs-cluster.sh" stop "$H-mfs" >/dev/null 2>&1 || true
    umount -l "$H-mfs/mnt" 2>/dev/null || true
    rm -rf "$H-mfs"
  else
    bench/bigfs-up.sh stop "$H" >/dev/null 2>&1 || true
    umount -l "$H/mnt" 2>/dev/null || true
    rm -rf "$H"
  fi
}
cleanup() {
  rc=$?
  trap - EXIT INT TERM
  down bigfs
  down moosefs
  [ $rc -eq 0 ] || echo "bench/suite.sh: stopped (exit $rc); clusters stopped, rounds so far in $RUN" >&2
  exit $rc
}
trap cleanup EXIT INT TERM

# The source tree: whole crate directories of Cargo.lock, cached.
[ -f "$TREE_TAR" ] || cargo fetch --locked -q
tree=$("$PY" bench/suite.py tree "$TREE_TAR")
echo "source tree: $(echo "$tree" | "$PY" -c 'import json,sys; m=json.load(sys.stdin); c=m["crates"]; print(m["files"], "files,", m["bytes"], "bytes,", m["crate_count"], "crates (" + c[0], "..", c[-1] + ") in", m["tarball"])')"
echo "git clone source: $GIT_SOURCE"
echo "BigFS: $BIGFS_SETUP; MooseFS: GOAL=3; workload: ${SIZES[*]} ${ARGS[*]}"
"$PY" - "$RUN/meta.json" <<PY
import json, sys
json.dump({
    "stamp": "$stamp", "rounds": $ROUNDS, "quick": bool($QUICK),
    "bigfs_setup": "$BIGFS_SETUP", "moosefs_setup": "GOAL=3",
    "bigfs_commit": "$(git rev-parse HEAD)",
    "workload_args": "${SIZES[*]} ${ARGS[*]}",
    "fsbench": "$FSBENCH", "git_source": "$GIT_SOURCE",
    "tree": json.load(open("$TREE_TAR.json")),
}, open(sys.argv[1], "w"), indent=1)
PY

start=$(date +%s)
for r in $(seq 1 "$ROUNDS"); do
  for side in bigfs moosefs; do
    t=$(date +%s)
    echo "round $r, $side: starting the cluster"
    up "$side"
    mnt=$H/mnt; daemon=bigfs-mount; setup=$BIGFS_SETUP
    [ "$side" = moosefs ] && { mnt=$H-mfs/mnt; daemon=mfsmount; setup=GOAL=3; }
    "$PY" bench/suite.py run "$mnt" --side "$side" --setup "$setup" --round "$r" --daemon "$daemon" \
      --out "$RUN/round-$side-$r.json" --tree-tar "$TREE_TAR" --git-source "$GIT_SOURCE" \
      --fsbench "$FSBENCH" "${SIZES[@]}" "${ARGS[@]}"
    down "$side"
    echo "round $r, $side: $(($(date +%s) - t)) s"
    sleep 1
  done
done
echo "all rounds: $(($(date +%s) - start)) s"
"$PY" bench/suite.py report "$RUN" "$stamp" --results "$OUT" --png docs/bench-suite.png
