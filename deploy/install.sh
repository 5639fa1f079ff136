#!/bin/sh
# Installs BigFS: binaries, systemd units, example configurations, the
# mount.fuse.bigfs helper, and (on a real install as root) the bigfs user and
# data directories.
#
#   cargo build --release --workspace --bins && sudo deploy/install.sh
#
# Variables (all optional):
#   DESTDIR     staging root, for packages and tests (default: none)
#   PREFIX      binaries go to $PREFIX/bin (default /usr/local)
#   SYSCONFDIR  configs go to $SYSCONFDIR/bigfs (default /etc)
#   UNITDIR     systemd units (default /etc/systemd/system)
#   SBINDIR     where mount(8) finds helpers (default /sbin)
#   BINSRC      where the built binaries are (default target/release)
#   SYSTEM_SETUP  yes/no: create the bigfs user and /var/lib/bigfs,
#               /srv/bigfs (default: yes when root and DESTDIR is empty)
# Unit files and the helper are rewritten to the PREFIX and SYSCONFDIR paths.
# Existing configuration files are never overwritten.
set -eu
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SBINDIR=${SBINDIR:-/sbin}
BINSRC=${BINSRC:-${CARGO_TARGET_DIR:-target}/release}
DESTDIR=${DESTDIR:-}
BINDIR=$PREFIX/bin
CONFDIR=$SYSCONFDIR/bigfs

rewrite() { # rewrite SRC DEST MODE
  sed -e "s|/usr/local/bin|$BINDIR|g" -e "s|/etc/bigfs|$CONFDIR|g" \
    -e "s|/usr/local/share/doc/bigfs|$PREFIX/share/doc/bigfs|g" "$1" >"$2.tmp"
  chmod "$3" "$2.tmp"
  mv "$2.tmp" "$2"
}

mkdir -p "$DESTDIR$BINDIR" "$DESTDIR$CONFDIR" "$DESTDIR$UNITDIR" "$DESTDIR$SBINDIR" \
  "$DESTDIR$PREFIX/share/doc/bigfs"
for b in bigfs-metadata bigfs-storage bigfs-mount bigfs; do
  if [ -x "$BINSRC/$b" ]; then
    install -m 0755 "$BINSRC/$b" "$DESTDIR$BINDIR/$b"
  else
    echo "install.sh: $BINSRC/$b is missing (cargo build --release --workspace --bins?)" >&2
    [ "$b" = bigfs-mount ] || exit 1
  fi
done
for u in deploy/systemd/*.service; do
  rewrite "$u" "$DESTDIR$UNITDIR/$(basename "$u")" 0644
done
rewrite deploy/mount.fuse.bigfs.in "$DESTDIR$SBINDIR/mount.fuse.bigfs" 0755
for c in metadata exports storage mount; do
  dest=$DESTDIR$CONFDIR/$c.toml
  [ "$c" = storage ] && dest=$DESTDIR$CONFDIR/storage.toml.example
  if [ -e "$dest" ]; then
    echo "keeping existing $dest"
  else
    install -m 0644 "deploy/config/$c.toml" "$dest"
  fi
done
install -m 0644 README.md "$DESTDIR$PREFIX/share/doc/bigfs/README.md"

SYSTEM_SETUP=${SYSTEM_SETUP:-auto}
if [ "$SYSTEM_SETUP" = auto ]; then
  SYSTEM_SETUP=no
  [ -z "$DESTDIR" ] && [ "$(id -u)" -eq 0 ] && SYSTEM_SETUP=yes
fi
if [ "$SYSTEM_SETUP" = yes ]; then
  getent group bigfs >/dev/null || groupadd --system bigfs
  getent passwd bigfs >/dev/null ||
    useradd --system --gid bigfs --home-dir /var/lib/bigfs --shell /usr/sbin/nologin bigfs
  install -d -o bigfs -g bigfs -m 0750 /var/lib/bigfs /srv/bigfs
  command -v systemctl >/dev/null && systemctl daemon-reload || true
fi
echo "installed BigFS under ${DESTDIR:-/} (binaries $BINDIR, configs $CONFDIR, units $UNITDIR)"
