#!/usr/bin/env python3
"""One workload on any mounted directory, as an application feels it.

usage: bench/fsbench.py DIR [--size-mib 1024] [--files 2000] [--json]

Figures (one per line: name value unit):
  seq_write_MiBps       1 MiB writes of one big file, then fsync
  seq_read_cold_MiBps   the big file read back after dropping the page cache
                        (content checked against what was written)
  seq_read_warm_MiBps   read again (page cache and client caches warm)
  small_create_per_s    4 KiB files created, written and closed
  small_read_per_s      the small files read back after dropping caches
  stat_per_s            stat of every small file
  readdir_entries_per_s listing the directory of small files
  rename_per_s          rename of every small file
  unlink_per_s          removal of every small file
  mkdir_per_s           directories made
Each run works in a fresh subdirectory and removes it afterwards.
"""
import argparse
import hashlib
import json
import os
import shutil
import time

MIB = 1 << 20


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass  # not root: warm figures only


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def block(i, base):
    # A different 1 MiB block per position (no dedup), cheap to make.
    r = (i * 7919) % len(base)
    return base[r:] + base[:r]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    work = os.path.join(a.dir, f"bigfs-bench.{os.getpid()}")
    os.makedirs(work)
    res = {}
    base = os.urandom(MIB)
    big = os.path.join(work, "big")
    written = hashlib.sha256()

    def write_big():
        with open(big, "wb", buffering=0) as f:
            for i in range(a.size_mib):
                b = block(i, base)
                written.update(b)
                f.write(b)
            os.fsync(f.fileno())

    def read_big(h):
        with open(big, "rb", buffering=0) as f:
            while True:
                b = f.read(MIB)
                if not b:
                    break
                h.update(b)

    drop_caches()
    res["seq_write_MiBps"] = a.size_mib / timed(write_big)
    drop_caches()
    got = hashlib.sha256()
    res["seq_read_cold_MiBps"] = a.size_mib / timed(lambda: read_big(got))
    res["content_ok"] = int(got.digest() == written.digest())
    res["seq_read_warm_MiBps"] = a.size_mib / timed(lambda: read_big(hashlib.sha256()))

    sd = os.path.join(work, "small")
    os.mkdir(sd)
    payload = os.urandom(4096)
    names = [os.path.join(sd, f"f{i:06d}") for i in range(a.files)]

    def create():
        for n in names:
            with open(n, "wb") as f:
                f.write(payload)

    def read_small():
        for n in names:
            with open(n, "rb") as f:
                if f.read() != payload:
                    raise SystemExit(f"{n}: content differs")

    def stat_all():
        for n in names:
            os.stat(n)

    def readdir():
        if len(os.listdir(sd)) != a.files:
            raise SystemExit("readdir: wrong entry count")

    renamed = [n + ".r" for n in names]

    def rename():
        for n, r in zip(names, renamed):
            os.rename(n, r)

    def unlink():
        for r in renamed:
            os.unlink(r)

    def mkdirs():
        for i in range(a.files // 4):
            os.mkdir(os.path.join(work, f"d{i}"))

    res["small_create_per_s"] = a.files / timed(create)
    drop_caches()
    res["small_read_per_s"] = a.files / timed(read_small)
    res["stat_per_s"] = a.files / timed(stat_all)
    res["readdir_entries_per_s"] = a.files / timed(readdir)
    res["rename_per_s"] = a.files / timed(rename)
    res["unlink_per_s"] = a.files / timed(unlink)
    res["mkdir_per_s"] = (a.files // 4) / timed(mkdirs)
    shutil.rmtree(work)
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k} {v:.1f}")


if __name__ == "__main__":
    main()
