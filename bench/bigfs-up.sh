#!/usr/bin/env bash
# Starts a release-build BigFS cluster (metadata + 3 storage nodes) under
# $2 (default /tmp/bigfs-bench) and mounts it at $2/mnt; `stop` undoes it.
# MEMBERS=3 runs the metadata service as a group of three members;
# META_TOML adds metadata config keys (see below).
# For benchmarks: no build, no package installs (see scripts/local-cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
H=${2:-/tmp/bigfs-bench}; B=$(pwd)/target/release
if [ "${1:-start}" = stop ]; then
  fusermount3 -u "$H/mnt" 2>/dev/null || true
  pkill -f "bigfs-storage --data-dir $H/" || true
  pkill -f "bigfs-metadata --config $H/" || true
  exit 0
fi
rm -rf "$H"; mkdir -p "$H/logs" "$H/mnt"
# Mutual TLS unless INSECURE=1 (to measure what TLS costs, side by side).
tls() { echo --insecure; }
if [ "${INSECURE:-0}" != 1 ]; then
  "$B/bigfs" admin ca init "$H/tls/ca" >/dev/null
  for p in meta:meta:meta node:n1:n1 node:n2:n2 node:n3:n3 client:mount:mount admin:cli:cli; do
    IFS=: read -r role name dir <<<"$p"
    "$B/bigfs" admin cert issue --ca "$H/tls/ca" --role "$role" "$name" --out "$H/tls/$dir" >/dev/null
  done
  tls() { echo --tls-dir "$H/tls/$1"; }
fi
MEMBERS=${MEMBERS:-1}
META=127.0.0.1:9400
# META_TOML="key = value; key = value" adds metadata config keys (for
# example META_TOML="inline_max_bytes = 0" to measure without inline files).
printf '%s\n' "${META_TOML:-}" | tr ';' '\n' >"$H/meta.toml"
if [ "$MEMBERS" -eq 1 ]; then
  # shellcheck disable=SC2046 # tls prints two words on purpose
  "$B/bigfs-metadata" --config "$H/meta.toml" --data-dir "$H/meta" --listen 127.0.0.1:9400 $(tls meta) >"$H/logs/meta.log" 2>&1 &
else
  PEERS=1=127.0.0.1:9400,2=127.0.0.1:9410,3=127.0.0.1:9420
  META=127.0.0.1:9400,127.0.0.1:9410,127.0.0.1:9420
  for i in 1 2 3; do
    # shellcheck disable=SC2046
    "$B/bigfs-metadata" --config "$H/meta.toml" --data-dir "$H/meta$i" --listen "127.0.0.1:94$((i - 1))0" --node-id "$i" \
      --peers "$PEERS" --admin-listen "127.0.0.1:948$i" $(tls meta) >"$H/logs/meta$i.log" 2>&1 &
  done
fi
for i in 1 2 3; do
  # shellcheck disable=SC2046
  "$B/bigfs-storage" --data-dir "$H/n$i" --listen "127.0.0.1:950$i" --metadata "$META" \
    --node-id "n$i" --admin-listen "127.0.0.1:958$i" $(tls "n$i") >"$H/logs/n$i.log" 2>&1 &
done
for _ in $(seq 1 100); do
  # shellcheck disable=SC2046
  [ "$("$B/bigfs" --metadata "$META" $(tls cli) status --json 2>/dev/null | grep -o '"state":"up"' | wc -l)" -ge 3 ] && break
  sleep 0.1
done
# MOUNT_OPTS=a,b passes `-o a,b` to the mount.
# shellcheck disable=SC2046
"$B/bigfs-mount" "$H/mnt" --metadata "$META" $(tls mount) --log-file "$H/logs/mount.log" ${MOUNT_OPTS:+-o "$MOUNT_OPTS"}
