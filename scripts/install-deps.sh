#!/usr/bin/env bash
# Installs what building and testing BigFS needs on a fresh Debian machine:
# FUSE 3 (the mount and its tests), attr (setfattr/getfattr in tests), acl
# (setfacl/getfacl, tests/tests/acl.rs),
# systemd (systemd-analyze, tests/tests/deploy.rs), chromium (headless, for
# the status page in tests/tests/admin_http.rs), iptables (the metadata
# partition test drops a member's loopback traffic), flock and sqlite3 (file
# locks across mounts, tests/tests/locks.rs), pkg-config, and the
# rustfmt/clippy toolchain components. The tests fail, not skip, without them.
set -euo pipefail
need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
dpkg -s libfuse3-dev >/dev/null 2>&1 || need+=(libfuse3-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v setfattr >/dev/null 2>&1 || need+=(attr)
command -v setfacl >/dev/null 2>&1 || need+=(acl)
command -v git >/dev/null 2>&1 || need+=(git)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
fi
