#!/usr/bin/env bash
# Where a metadata change's time goes: starts a release cluster
# (bench/bigfs-up.sh, MEMBERS=3 by default), runs a loop of renames on the
# mount while `perf record` samples every BigFS process (cpu-clock, call
# graphs), then prints the CPU each process used per rename and its
# hottest symbols.
#
#   sudo bench/profile-meta.sh [RENAMES]      (default 3000)
#   MEMBERS=1 sudo bench/profile-meta.sh      # the same with one member
#
# Needs root, perf (Debian's linux-perf) and `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3000}
H=/tmp/bigfs-profile
export MEMBERS=${MEMBERS:-3}
command -v perf >/dev/null || apt-get install -y linux-perf >/dev/null
bench/bigfs-up.sh start "$H" >/dev/null
trap 'bench/bigfs-up.sh stop "$H" >/dev/null; rm -rf "$H"' EXIT
mkdir -p "$H/mnt/p"
for i in $(seq 1 "$N"); do : >"$H/mnt/p/f$i"; done
pids=$(pgrep -d, -f "bigfs-(metadata|storage|mount).*$H" || true)
P=/tmp/bigfs-profile.perf.data
ticks() { # CPU ticks (user + system) of each BigFS process, by pid.
  for p in ${pids//,/ }; do echo "$p $(awk '{print $14 + $15}' "/proc/$p/stat")"; done
}
before=$(ticks)
perf record -q -e cpu-clock -F 999 -g -p "$pids" -o "$P" 2>/dev/null &
perf_pid=$!
sleep 1
start=$(date +%s.%N)
python3 - "$H/mnt/p" "$N" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(1, n + 1):
    os.rename(f"{d}/f{i}", f"{d}/g{i}")
PY
end=$(date +%s.%N)
kill -INT "$perf_pid"; wait "$perf_pid" || true
after=$(ticks)
hz=$(getconf CLK_TCK)
echo "members: $MEMBERS; $N renames in $(echo "$end - $start" | bc) s ($(echo "$N / ($end - $start)" | bc) /s)"
echo "CPU per rename, by process (µs):"
join <(sort <<<"$before") <(sort <<<"$after") | while read -r p b a; do
  name=$(tr '\0' ' ' <"/proc/$p/cmdline" | awk '{print $1}' | xargs basename)
  id=$(tr '\0' ' ' <"/proc/$p/cmdline" | grep -o -- '--data-dir [^ ]*' | head -1)
  echo "  $name $id: $(echo "($a - $b) * 1000000 / $hz / $N" | bc)"
done
echo "hottest symbols over all processes (self time):"
perf report -i "$P" --no-children --sort comm,dso,sym --stdio 2>/dev/null |
  grep -v '^#' | grep '%' | head -40
