#!/usr/bin/env bash
# Builds BigFS and runs a local cluster: one metadata service (or, with
# BIGFS_META_MEMBERS=3, a group of three members) and three storage nodes
# under $BIGFS_HOME (default ./local-cluster), on loopback.
#
#   scripts/local-cluster.sh start    build, start, show status
#   scripts/local-cluster.sh stop     stop everything
#   scripts/local-cluster.sh status   cluster status
#
# BIGFS_BIN=DIR runs the binaries in DIR (e.g. target/debug) as they are,
# without installing or building anything.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
HOME_DIR=${BIGFS_HOME:-$ROOT/local-cluster}
META_PORT=${BIGFS_META_PORT:-9400}
MEMBERS=${BIGFS_META_MEMBERS:-1}
# Member i listens on META_PORT + 10*(i-1); clients get the whole list.
META=$(for i in $(seq 1 "$MEMBERS"); do printf '127.0.0.1:%s,' $((META_PORT + 10 * (i - 1))); done)
META=${META%,}
PEERS=$(for i in $(seq 1 "$MEMBERS"); do printf '%s=127.0.0.1:%s,' "$i" $((META_PORT + 10 * (i - 1))); done)
PEERS=${PEERS%,}
BIN=${BIGFS_BIN:-$ROOT/target/release}
MNT=${BIGFS_MOUNT:-$HOME_DIR/mnt}
TLS=$HOME_DIR/tls

# A cluster CA and one certificate per process under $TLS, made once (the
# CA key stays there: this is a local test cluster, not a real one).
certificates() {
  [ -e "$TLS/ca/ca.key" ] || "$BIN/bigfs" admin ca init "$TLS/ca" --cluster local >/dev/null
  issue() { # ROLE NAME DIR
    [ -e "$TLS/$3/cert.pem" ] || "$BIN/bigfs" admin cert issue --ca "$TLS/ca" --role "$1" "$2" --out "$TLS/$3" >/dev/null
  }
  issue meta meta metadata
  for i in 1 2 3; do issue node "node-$i" "node-$i"; done
  issue client mount mount
  issue admin cli cli
  # The admin HTTP pages' bearer token (an admin certificate works too).
  [ -e "$TLS/admin-token" ] || (umask 077; head -c 24 /dev/urandom | base64 >"$TLS/admin-token")
}

start() {
  if [ -z "${BIGFS_BIN:-}" ]; then
    scripts/install-deps.sh
    cargo build --release --workspace --bins
  fi
  mkdir -p "$HOME_DIR/logs"
  stop quiet
  certificates
  if [ "$MEMBERS" -eq 1 ]; then
    "$BIN/bigfs-metadata" --data-dir "$HOME_DIR/meta" --listen "$META" --tls-dir "$TLS/metadata" \
      --admin-token-file "$TLS/admin-token" >>"$HOME_DIR/logs/metadata.log" 2>&1 &
    echo $! >"$HOME_DIR/metadata.pid"
  else
    for i in $(seq 1 "$MEMBERS"); do
      "$BIN/bigfs-metadata" --data-dir "$HOME_DIR/meta-$i" --tls-dir "$TLS/metadata" \
        --admin-token-file "$TLS/admin-token" \
        --listen "127.0.0.1:$((META_PORT + 10 * (i - 1)))" --node-id "$i" --peers "$PEERS" \
        --admin-listen "127.0.0.1:$((META_PORT + 79 + i))" >>"$HOME_DIR/logs/metadata-$i.log" 2>&1 &
      echo $! >"$HOME_DIR/metadata-$i.pid"
    done
  fi
  for i in 1 2 3; do
    "$BIN/bigfs-storage" --data-dir "$HOME_DIR/node-$i" --listen "127.0.0.1:$((META_PORT + 100 + i))" \
      --metadata "$META" --node-id "node-$i" --tls-dir "$TLS/node-$i" --admin-token-file "$TLS/admin-token" \
      --admin-listen "127.0.0.1:$((META_PORT + 180 + i))" >>"$HOME_DIR/logs/node-$i.log" 2>&1 &
    echo $! >"$HOME_DIR/node-$i.pid"
  done
  for _ in $(seq 1 100); do
    up=$("$BIN/bigfs" --metadata "$META" --tls-dir "$TLS/cli" status --json 2>/dev/null | grep -o '"state":"up"' | wc -l || true)
    [ "$up" -ge 3 ] && break
    sleep 0.2
  done
  if [ -x "$BIN/bigfs-mount" ]; then
    mkdir -p "$MNT"
    "$BIN/bigfs-mount" "$MNT" --metadata "$META" --tls-dir "$TLS/mount" --background
    echo "mounted at $MNT"
  fi
  "$BIN/bigfs" --metadata "$META" --tls-dir "$TLS/cli" status
  echo
  echo "metadata at $META; logs in $HOME_DIR/logs; certificates in $TLS"
  echo "try: export BIGFS_TLS_DIR=$TLS/cli BIGFS_METADATA=$META"
  echo "     $BIN/bigfs put README.md /README.md && $BIN/bigfs ls -l /"
  [ "$MEMBERS" -eq 1 ] && admin=127.0.0.1:9480 || admin=127.0.0.1:$((META_PORT + 80))
  echo "status page (HTTPS, the local CA: accept the browser's warning):"
  echo "     https://$admin/#token=$(cat "$TLS/admin-token")"
  echo "     curl --cacert $TLS/ca/ca.pem --cert $TLS/cli/cert.pem --key $TLS/cli/key.pem https://$admin/nodes"
}

stop() {
  if mountpoint -q "$MNT" 2>/dev/null; then
    fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT" 2>/dev/null || true
  fi
  for f in "$HOME_DIR"/*.pid; do
    [ -e "$f" ] || continue
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
  [ "${1:-}" = quiet ] || echo "stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) "$BIN/bigfs" --metadata "$META" --tls-dir "$TLS/cli" status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
