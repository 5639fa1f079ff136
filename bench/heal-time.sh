#!/usr/bin/env bash
# Measures how long the cluster takes to heal after losing a node.
#
#   bench/heal-time.sh [MiB]      (default 1024; needs a release build)
#
# Starts a metadata service and 4 storage nodes (release build, 4 MiB
# chunks, replication 3) under /tmp/bigfs-heal, writes MiB of random data in
# 64 MiB files with the CLI, waits for full replication, kills node n1 with
# SIGKILL and times (a) until the metadata service marks it down and (b) until
# no chunk is under-replicated or lost and the repair queue is empty.
# Liveness and repair delays are shortened (down after 3 s, repair at once)
# so the figure is the copying itself; production defaults add ~50 s.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-1024}
H=/tmp/bigfs-heal; B=$(pwd)/target/release; META=127.0.0.1:9600
pkill -f "data-dir $H/" 2>/dev/null || true
rm -rf "$H"; mkdir -p "$H/logs"
cat >"$H/metadata.toml" <<CFG
heartbeat_interval_ms = 300
suspect_after_ms = 1500
down_after_ms = 3000
[heal]
interval_ms = 200
repair_delay_ms = 0
CFG
"$B/bigfs-metadata" --data-dir "$H/meta" --listen "$META" --config "$H/metadata.toml" \
  --admin-listen "" --insecure >"$H/logs/meta.log" 2>&1 &
for i in 1 2 3 4; do
  "$B/bigfs-storage" --data-dir "$H/n$i" --listen "127.0.0.1:961$i" --metadata "$META" \
    --node-id "n$i" --admin-listen "" --insecure >"$H/logs/n$i.log" 2>&1 &
done
# Repair time, not TLS, is measured here: plaintext on loopback.
export BIGFS_INSECURE=true
status() { "$B/bigfs" --metadata "$META" --json status; }
field() { python3 -c "import json,sys; s=json.load(sys.stdin); print($1)"; }
until [ "$(status 2>/dev/null | field "sum(n['state']=='up' for n in s['nodes'])" 2>/dev/null || echo 0)" = 4 ]; do sleep 0.2; done
healed='int(s["under_replicated"]==0 and s["lost"]==0 and s["repair_pending"]==0 and s["replicas_pending"]==0)'
for i in $(seq 1 $(( (MIB + 63) / 64 ))); do
  head -c $((64 << 20)) /dev/urandom >"$H/src"
  "$B/bigfs" --metadata "$META" put "$H/src" "/f$i"
done
until [ "$(status | field "$healed")" = 1 ]; do sleep 0.2; done
held=$(du -sm "$H/n1/chunks" | cut -f1)
pkill -9 -f "data-dir $H/n1 " || true
t0=$(date +%s.%N)
until [ "$(status | field "[n['state'] for n in s['nodes'] if n['node_id']=='n1'][0]")" = down ]; do sleep 0.1; done
t1=$(date +%s.%N)
until [ "$(status | field "$healed")" = 1 ]; do sleep 0.2; done
t2=$(date +%s.%N)
python3 -c "
held=$held; d=$t1-$t0; h=$t2-$t1
print(f'node n1 held {held} MiB; marked down after {d:.1f} s; healed {h:.1f} s later ({held/h:.0f} MiB/s); total {d+h:.1f} s')"
pkill -f "data-dir $H/" || true
