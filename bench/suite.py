#!/usr/bin/env python3
"""The workloads of bench/suite.sh, one mounted file system at a time.

  suite.py tree TAR                 build (once) the source-tree tarball
  suite.py run MOUNT --side S ...   one round of every workload on MOUNT,
                                    written as JSON (--out)
  suite.py report DIR STAMP         the rounds of DIR/round-*.json: one
                                    JSON, a PNG chart, a table on stdout
  suite.py sample PID FILE          (internal) RSS samples of PID

Every figure is "higher is better" (files/s, MiB/s, ops/s) except the mount
daemon's peak RSS. Each row also keeps the seconds it took. Needs root (the
page cache is dropped before every cold read).
"""
import argparse
import glob
import json
import math
import multiprocessing as mp
import os
import queue
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import tomllib

MIB = 1 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# The rows, in the order of the table and the chart: key, label, unit.
# fsbench.py rows are added from its JSON keys (FSBENCH_LABELS names them).
FSBENCH_LABELS = {
    "seq_write_MiBps": ("seq write + fsync", "MiB/s"),
    "seq_read_cold_MiBps": ("cold seq read", "MiB/s"),
    "seq_read_warm_MiBps": ("warm seq read", "MiB/s"),
    "cp_inside_MiBps": ("cp big file inside (+sync)", "MiB/s"),
    "small_4k_create_per_s": ("4 KiB create", "files/s"),
    "stat_cold_per_s": ("stat cold", "ops/s"),
    "readdir_cold_entries_per_s": ("readdir cold", "ops/s"),
    "small_4k_read_cold_per_s": ("4 KiB read cold", "files/s"),
    "rename_per_s": ("rename", "ops/s"),
    "unlink_per_s": ("unlink", "ops/s"),
    "mkdir_per_s": ("mkdir", "ops/s"),
}
ROWS = [
    ("tree.extract", "tree: tar -x", "files/s"),
    ("tree.read_cold", "tree: tar -c | cat, cold", "files/s"),
    ("tree.cp", "tree: cp -r", "files/s"),
    ("tree.git_clone", "tree: git clone --no-local", "files/s"),
    ("tree.rm", "tree: rm -rf all", "files/s"),
    ("par.write", "4 procs: write + fsync", "MiB/s"),
    ("par.read_cold", "4 procs: read cold", "MiB/s"),
    ("par.small_create", "4 procs: 4 KiB create", "files/s"),
    ("append", "O_APPEND writes 4-100 B", "appends/s"),
    ("rss.peak", "mount daemon peak RSS", "MiB"),
]
LOWER_IS_BETTER = {"rss.peak"}


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def log(msg):
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- tree


def tree_crates(lock_path):
    """Registry crates of Cargo.lock, as directory names, sorted."""
    with open(lock_path, "rb") as f:
        lock = tomllib.load(f)
    return sorted(
        f"{p['name']}-{p['version']}"
        for p in lock["package"]
        if p.get("source", "").startswith("registry+")
    )


def cmd_tree(a):
    """Whole crate directories of ~/.cargo/registry/src, in sorted order,
    until there are at least --min-files files; cached in TAR (+ .json)."""
    meta_path = a.tar + ".json"
    crates = tree_crates(os.path.join(REPO, "Cargo.lock"))
    if os.path.exists(a.tar) and os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("min_files") == a.min_files and crates[: len(meta["crates"])] == meta["crates"]:
            print(json.dumps(meta))
            return
    srcs = sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/index.crates.io-*")))
    if not srcs:
        sys.exit("no ~/.cargo/registry/src: run `cargo fetch` in the repository first")
    src = srcs[0]
    taken, files, dirs, size = [], 0, 0, 0
    for c in crates:
        p = os.path.join(src, c)
        if not os.path.isdir(p):
            sys.exit(f"{p} missing: run `cargo fetch` in the repository first")
        for root, ds, fs in os.walk(p):
            dirs += len(ds)
            for n in fs:
                st = os.lstat(os.path.join(root, n))
                files += 1
                size += st.st_size
        dirs += 1
        taken.append(c)
        if files >= a.min_files:
            break
    tmp = a.tar + ".tmp"
    subprocess.run(
        ["tar", "-cf", tmp, "--sort=name", "--owner=0", "--group=0", "--numeric-owner", "-C", src] + taken,
        check=True,
    )
    os.replace(tmp, a.tar)
    meta = {
        "tarball": a.tar,
        "source": src,
        "min_files": a.min_files,
        "crates": taken,
        "crate_count": len(taken),
        "files": files,
        "dirs": dirs,
        "bytes": size,
        "tar_bytes": os.path.getsize(a.tar),
    }
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    print(json.dumps(meta))


# ---------------------------------------------------------------- helpers


class Round:
    """The figures of one round on one mount."""

    def __init__(self):
        self.rows = {}
        self.phases = []  # (key, start, end) in time.time(), for RSS per phase

    def put(self, key, count, seconds, timed_out=False, **extra):
        value = None if timed_out or seconds <= 0 else count / seconds
        self.rows[key] = {"value": value, "seconds": seconds, "count": count, "timed_out": timed_out, **extra}
        shown = "TIMED OUT" if timed_out else f"{value:.1f}"
        log(f"{key}: {shown} ({count} in {seconds:.2f} s)")


def sh(cmd, timeout, cwd=None):
    """Runs a shell command in its own process group; returns (seconds,
    timed_out, stdout). A command that fails (not by timeout) stops the
    suite: a figure of a broken step means nothing."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, shell=True, cwd=cwd, stdout=subprocess.PIPE, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return time.perf_counter() - t, True, b""
    seconds = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"`{cmd}` failed with exit code {p.returncode}")
    return seconds, False, out


def in_children(fn, args_list, timeout):
    """Runs fn(*args) in one forked process per args, all released at once.
    Returns (wall seconds from the first start to the last end, results) or
    (timeout, None) when they did not all finish in time."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    barrier = ctx.Barrier(len(args_list))

    def child(k, args):
        barrier.wait()
        t0 = time.monotonic()
        r = fn(*args)
        q.put((k, t0, time.monotonic(), r))

    procs = [ctx.Process(target=child, args=(k, args)) for k, args in enumerate(args_list)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    got = []
    while len(got) < len(procs):
        try:
            got.append(q.get(timeout=1))
            continue
        except queue.Empty:
            pass
        if any(p.exitcode not in (None, 0) for p in procs):
            for p in procs:
                p.kill()
            sys.exit(f"a worker of {fn.__name__} failed")
        if time.monotonic() > deadline:
            for p in procs:
                p.kill()
            for p in procs:
                p.join()
            return timeout, None
    for p in procs:
        p.join()
    got.sort()  # results in the order of args_list
    return max(e for _, _, e, _ in got) - min(s for _, s, _, _ in got), [r for _, _, _, r in got]


# ---------------------------------------------------------------- workloads


def run_fsbench(a, work, rnd):
    args = [sys.executable, a.fsbench, work, "--json", "--size-mib", str(a.size_mib), "--files", str(a.files)]
    log("fsbench: " + " ".join(args[1:]))
    t = time.time()
    s, timed_out, out = sh(" ".join(args), a.step_timeout)
    rnd.phases.append(("fsbench", t, time.time()))
    if timed_out:
        for k in FSBENCH_LABELS:
            rnd.rows["fsbench." + k] = {"value": None, "seconds": s, "timed_out": True}
        log("fsbench: TIMED OUT")
        return
    res = json.loads(out)
    if res.get("content_ok", 1) != 1:
        sys.exit("fsbench: the big file read back differs from what was written")
    for k, v in res.items():
        if k == "content_ok":
            continue
        rnd.rows["fsbench." + k] = {"value": v, "timed_out": False, "fsbench_seconds": s}
    log(f"fsbench: done in {s:.1f} s")


def run_tree(a, work, tree, rnd):
    files = tree["files"]
    src = os.path.join(work, "tree")
    os.makedirs(src)

    def step(key, cmd, count, cwd=None, cold=False, **extra):
        if cold:
            drop_caches()
        t = time.time()
        s, timed_out, out = sh(cmd, a.step_timeout, cwd=cwd)
        rnd.phases.append((key, t, time.time()))
        rnd.put(key, count, s, timed_out, **extra)
        return timed_out, out

    drop_caches()
    step("tree.extract", f"tar -xf {a.tree_tar} -C {src}", files, bytes=tree["bytes"])
    s, _, _ = sh("sync", a.step_timeout)
    rnd.rows["tree.extract"]["sync_seconds_after"] = s
    # GNU tar does not read file data when its archive is /dev/null: pipe it.
    timed_out, out = step("tree.read_cold", "tar -cf - . | wc -c", files, cwd=src, cold=True, bytes=tree["bytes"])
    if not timed_out and int(out) < tree["bytes"]:
        sys.exit(f"tree.read_cold: tar read {int(out)} bytes, the tree holds {tree['bytes']}")
    step("tree.cp", f"cp -r {src} {src}2", files, bytes=tree["bytes"])
    s, _, _ = sh("sync", a.step_timeout)
    rnd.rows["tree.cp"]["sync_seconds_after"] = s
    clone = os.path.join(work, "clone")
    step(
        "tree.git_clone",
        f"git clone -q --no-local {a.git_source} {clone}",
        a.git_files,
        source=a.git_source,
    )
    head = subprocess.run(["git", "-C", clone, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if not rnd.rows["tree.git_clone"]["timed_out"] and head != a.git_head:
        sys.exit(f"git clone: HEAD {head!r}, the source's is {a.git_head!r}")
    removed = sum(1 + len(fs) + len(ds) for _, ds, fs in os.walk(work))
    step("tree.rm", f"rm -rf {work}", removed)
    os.makedirs(work, exist_ok=True)


def par_write(path, proc, mib):
    buf = bytearray(os.urandom(MIB))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for i in range(mib):
        buf[0:16] = struct.pack("<QQ", proc, i)
        os.write(fd, buf)
    os.fsync(fd)
    os.close(fd)
    return bytes(buf[16:64])


def par_read(path, proc, mib, tail):
    with open(path, "rb", buffering=0) as f:
        for i in range(mib):
            b = f.read(MIB)
            if b[0:16] != struct.pack("<QQ", proc, i) or b[16:64] != tail:
                return f"block {i} differs"
        if f.read(1):
            return "longer than written"
    return "ok"


def par_small(d, proc, n):
    os.makedirs(d)
    payload = os.urandom(4096)
    for i in range(n):
        with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
            f.write(struct.pack("<QQ", proc, i) + payload[16:])
    return n


def run_parallel(a, work, rnd):
    n = a.procs
    paths = [os.path.join(work, f"par{p}") for p in range(n)]
    drop_caches()
    t = time.time()
    s, tails = in_children(par_write, [(paths[p], p, a.par_mib) for p in range(n)], a.step_timeout)
    rnd.phases.append(("par.write", t, time.time()))
    rnd.put("par.write", n * a.par_mib, s, tails is None, procs=n, mib_each=a.par_mib)
    if tails is not None:
        drop_caches()
        t = time.time()
        s, oks = in_children(par_read, [(paths[p], p, a.par_mib, tails[p]) for p in range(n)], a.step_timeout)
        rnd.phases.append(("par.read_cold", t, time.time()))
        if oks is not None and any(o != "ok" for o in oks):
            sys.exit(f"par.read_cold: {oks}")
        rnd.put("par.read_cold", n * a.par_mib, s, oks is None, procs=n, mib_each=a.par_mib)
    else:
        rnd.put("par.read_cold", 0, 0, True)
    for p in paths:
        if os.path.exists(p):
            os.unlink(p)
    dirs = [os.path.join(work, f"small{p}") for p in range(n)]
    t = time.time()
    s, done = in_children(par_small, [(dirs[p], p, a.par_files) for p in range(n)], a.step_timeout)
    rnd.phases.append(("par.small_create", t, time.time()))
    rnd.put("par.small_create", n * a.par_files, s, done is None, procs=n, files_each=a.par_files)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def append_records(n, seed):
    rng = random.Random(seed)
    lens = [rng.randint(4, 100) for _ in range(n)]
    return lens, rng.randbytes(sum(lens))


def run_append(a, work, rnd):
    """a.appends O_APPEND writes of 4..100 bytes, one write() each, in a
    child that is killed after a.append_timeout seconds."""
    lens, data = append_records(a.appends, a.seed)
    path = os.path.join(work, "appends")
    if os.path.exists(path):
        os.unlink(path)
    ctx = mp.get_context("fork")
    done = ctx.Value("q", 0)

    def child():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        view, off = memoryview(data), 0
        for i, n in enumerate(lens):
            w = os.write(fd, view[off : off + n])
            if w != n:
                sys.exit(f"short append: {w} of {n} bytes")
            off += n
            if i % 1000 == 999:
                done.value = i + 1
        done.value = len(lens)
        os.close(fd)

    p = ctx.Process(target=child)
    t0, wall = time.perf_counter(), time.time()
    p.start()
    p.join(a.append_timeout)
    timed_out = p.is_alive()
    if timed_out:
        p.kill()
        p.join()
    s = time.perf_counter() - t0
    rnd.phases.append(("append", wall, time.time()))
    if not timed_out and p.exitcode != 0:
        sys.exit(f"append: the writer failed (exit {p.exitcode})")
    extra = {"appends": a.appends, "bytes": len(data), "seed": a.seed, "timeout_s": a.append_timeout}
    if timed_out:
        extra["appends_done_before_timeout"] = done.value
        rnd.put("append", done.value, s, True, **extra)
        os.unlink(path)
        return
    drop_caches()
    with open(path, "rb") as f:
        got = f.read()
    extra["content_ok"] = got == data
    if got != data:
        first = next((i for i, (x, y) in enumerate(zip(got, data)) if x != y), min(len(got), len(data)))
        extra["content_error"] = f"{len(got)} bytes read, {len(data)} written, first difference at byte {first}"
        log("append: CONTENT DIFFERS: " + extra["content_error"])
    rnd.put("append", a.appends, s, False, **extra)
    os.unlink(path)


def daemon_pid(name, mount):
    """The process named `name` whose command line holds the mount point."""
    mount = os.path.realpath(mount)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = [x.decode(errors="replace") for x in f.read().split(b"\0") if x]
        except OSError:
            continue
        # mfsmount rewrites its command line to "mfsmount (mounted on: DIR)".
        words = " ".join(argv).replace(")", " ").split()
        if words and os.path.basename(words[0]) == name and mount in (os.path.realpath(w) for w in words[1:]):
            return int(d)
    return None


def cmd_sample(a):
    """Appends "time VmRSS_kB VmHWM_kB" lines to FILE every interval until
    the process goes away or this one is killed."""
    with open(a.file, "a", buffering=1) as out:
        while True:
            try:
                with open(f"/proc/{a.pid}/status") as f:
                    st = dict(line.split(":", 1) for line in f)
            except OSError:
                return
            rss = int(st["VmRSS"].split()[0])
            hwm = int(st["VmHWM"].split()[0])
            out.write(f"{time.time():.3f} {rss} {hwm}\n")
            time.sleep(a.interval)


def cmd_run(a):
    if os.geteuid() != 0:
        sys.exit("suite.py run needs root (it drops the page cache)")
    with open(a.tree_tar + ".json") as f:
        tree = json.load(f)
    a.git_head = subprocess.run(
        ["git", "--git-dir", a.git_source, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    a.git_files = int(
        subprocess.run(
            f"git --git-dir {a.git_source} ls-tree -r HEAD --name-only | wc -l",
            shell=True,
            check=True,
            capture_output=True,
        ).stdout
    )
    # The parallel files, three copies each, land on this machine's disk.
    need = a.procs * a.par_mib * MIB * 3 + (1 << 30)
    free = shutil.disk_usage(a.data_dir).free
    if free < need:
        sys.exit(f"{a.data_dir} has {free >> 20} MiB free, the parallel workload needs about {need >> 20} MiB")
    pid = daemon_pid(a.daemon, a.mount)
    if pid is None:
        sys.exit(f"no {a.daemon} process serving {a.mount}")
    samples = a.out + ".rss"
    sampler = subprocess.Popen([sys.executable, __file__, "sample", str(pid), samples])
    rnd = Round()
    work = os.path.join(a.mount, f"suite.{os.getpid()}")
    os.makedirs(work)
    t0 = time.perf_counter()
    try:
        only = set(a.only.split(",")) if a.only else None
        if not only or "fsbench" in only:
            run_fsbench(a, work, rnd)
        if not only or "tree" in only:
            run_tree(a, work, tree, rnd)
        if not only or "parallel" in only:
            run_parallel(a, work, rnd)
        if not only or "append" in only:
            run_append(a, work, rnd)
    finally:
        sampler.terminate()
        sampler.wait()
    shutil.rmtree(work, ignore_errors=True)
    rows = []
    with open(samples) as f:
        for line in f:
            t, rss, hwm = line.split()
            rows.append((float(t), int(rss), int(hwm)))
    os.unlink(samples)
    peak_hwm = max((h for _, _, h in rows), default=0)
    per_phase = {}
    for key, start, end in rnd.phases:
        inside = [r for t, r, _ in rows if start <= t <= end]
        per_phase[key] = round(max(inside) / 1024, 1) if inside else None
    rnd.rows["rss.peak"] = {
        "value": peak_hwm / 1024,
        "unit": "MiB",
        "process": a.daemon,
        "pid": pid,
        "samples": len(rows),
        "peak_rss_mib_per_workload": per_phase,
        "timed_out": False,
    }
    log(f"rss.peak: {peak_hwm / 1024:.0f} MiB ({a.daemon}, VmHWM); per workload: {per_phase}")
    result = {
        "side": a.side,
        "setup": a.setup,
        "round": a.round,
        "mount": a.mount,
        "seconds": time.perf_counter() - t0,
        "rows": rnd.rows,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


# ---------------------------------------------------------------- report


def row_defs(rounds):
    keys = []
    for r in rounds:
        for k in r["rows"]:
            if k.startswith("fsbench.") and k not in keys:
                keys.append(k)
    defs = []
    for k in keys:
        label, unit = FSBENCH_LABELS.get(k[len("fsbench.") :], (k[len("fsbench.") :], "ops/s"))
        defs.append((k, "fsbench: " + label, unit))
    present = {k for r in rounds for k in r["rows"]}
    return defs + [d for d in ROWS if d[0] in present]


def mean(xs):
    return sum(xs) / len(xs) if xs else None


def fmt(v):
    if v is None:
        return "-"
    if v >= 10000:
        return f"{v / 1000:.0f}k"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}"


def cmd_report(a):
    files = sorted(glob.glob(os.path.join(a.dir, "round-*.json")))
    rounds = [json.load(open(f)) for f in files]
    with open(os.path.join(a.dir, "meta.json")) as f:
        meta = json.load(f)
    sides = []
    for r in rounds:
        if r["side"] not in sides:
            sides.append(r["side"])
    if sides != ["bigfs", "moosefs"] and set(sides) == {"bigfs", "moosefs"}:
        sides = ["bigfs", "moosefs"]
    by_side = {s: sorted((r for r in rounds if r["side"] == s), key=lambda r: r["round"]) for s in sides}
    summary = []
    for key, label, unit in row_defs(rounds):
        entry = {"row": key, "label": label, "unit": unit, "better": "lower" if key in LOWER_IS_BETTER else "higher"}
        for s in sides:
            vals = [r["rows"].get(key, {}).get("value") for r in by_side[s]]
            entry[s] = vals
            ok = [v for v in vals if v is not None]
            entry[s + "_mean"] = mean(ok)
            entry[s + "_timed_out"] = sum(1 for r in by_side[s] if r["rows"].get(key, {}).get("timed_out"))
            entry[s + "_content_differs"] = sum(
                1 for r in by_side[s] if r["rows"].get(key, {}).get("content_ok") is False
            )
        if len(sides) == 2:
            ma, mb = entry[sides[0] + "_mean"], entry[sides[1] + "_mean"]
            entry["ratio"] = ma / mb if ma is not None and mb else None
        summary.append(entry)
    out = {
        "stamp": a.stamp,
        **meta,
        "host": {"nproc": os.cpu_count(), "kernel": os.uname().release, "node": os.uname().nodename},
        "summary": summary,
        "ratio": f"{sides[0]} mean / {sides[1]} mean" if len(sides) == 2 else None,
        "rounds": rounds,
    }
    json_path = os.path.join(a.results, f"suite-{a.stamp}.json")
    with open(json_path, "w") as f:
        json.dump(out, f, indent=1)
    print_tables(summary, sides, by_side, meta)
    png = os.path.join(a.results, f"suite-{a.stamp}.png")
    chart(summary, sides, meta, png)
    if a.png:
        shutil.copyfile(png, a.png)
    print(f"\nJSON: {json_path}\nchart: {png}" + (f" (and {a.png})" if a.png else ""))


def side_name(s, meta):
    return f"BigFS ({meta.get('bigfs_setup', '')})" if s == "bigfs" else ("MooseFS" if s == "moosefs" else s)


def cell(e, s):
    shown = ", ".join(fmt(v) for v in e[s])
    if e[s + "_timed_out"]:
        shown += f" ({e[s + '_timed_out']} timed out)"
    if e[s + "_content_differs"]:
        shown += f" (content differs in {e[s + '_content_differs']})"
    return shown


def print_tables(summary, sides, by_side, meta):
    ratio_head = f"{sides[0]}/{sides[1]}" if len(sides) == 2 else ""
    w = max(len(e["label"]) + len(e["unit"]) + 3 for e in summary)
    cols = [max(24, max(len(cell(e, s)) for e in summary)) for s in sides]
    print()
    print(f"{'row':{w}} " + " ".join(f"{s:>{c}}" for s, c in zip(sides, cols)) + f" {ratio_head:>8}")
    for e in summary:
        name = f"{e['label']} ({e['unit']})"
        line = f"{name:{w}} " + " ".join(f"{cell(e, s):>{c}}" for s, c in zip(sides, cols))
        if "ratio" in e:
            line += f" {e['ratio']:>8.2f}" if e["ratio"] is not None else f" {'-':>8}"
        print(line)
    for s in sides:
        secs = ", ".join(f"{r['seconds']:.0f}" for r in by_side[s])
        print(f"seconds per round, {s}: {secs}")
    n = {s: len(by_side[s]) for s in sides}
    print("\nMarkdown:\n")
    head = [f"{side_name(s, meta)} ({n[s]} round{'s' if n[s] != 1 else ''})" for s in sides]
    print("| row | unit | " + " | ".join(head) + (" | BigFS / MooseFS |" if len(sides) == 2 else " |"))
    print("| --- | --- | " + " | ".join("---" for _ in sides) + (" | --- |" if len(sides) == 2 else " |"))
    for e in summary:
        unit = e["unit"] + (", lower is better" if e["better"] == "lower" else "")
        cells = [cell(e, s) for s in sides]
        ratio = ""
        if len(sides) == 2:
            ratio = " | " + (f"{e['ratio']:.2f}" if e["ratio"] is not None else "-")
        label = e["label"].replace("|", "\\|")
        print(f"| {label} | {unit} | " + " | ".join(cells) + ratio + " |")


def chart(summary, sides, meta, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = []
    for e in summary:
        if e["unit"] not in units:
            units.append(e["unit"])
    panels = [(u, [e for e in summary if e["unit"] == u]) for u in units]
    two = len(sides) == 2
    if two:
        panels.append(("ratio", summary))
    heights = [len(rows) + 1.2 for _, rows in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 0.38 * sum(heights) + 1.2), height_ratios=heights)
    colors = {sides[0]: "#1f77b4", sides[-1]: "#ff7f0e"} if two else {}
    bar = 0.38
    for ax, (unit, rows) in zip(axes, panels):
        ys = list(range(len(rows)))
        if unit == "ratio":
            ratios = [e["ratio"] for e in rows]
            good = [(r or 0) <= 1 if e["better"] == "lower" else (r or 0) >= 1 for r, e in zip(ratios, rows)]
            # Bars grow from 1 (equal) to the ratio, left when BigFS is lower.
            ax.barh(ys, [(r or 1) - 1 for r in ratios], left=1, color=["#2ca02c" if g else "#d62728" for g in good])
            shown = [r for r in ratios if r]
            if shown:
                ax.set_xlim(min(0.5, min(shown)) / 1.5, max(2, max(shown)) * 1.5)
            ax.axvline(1, color="black", lw=0.8)
            ax.set_xscale("log")
            for y, r in zip(ys, ratios):
                if r:
                    ax.text(r, y, f" {r:.2f}", va="center", fontsize=7)
            ax.set_title("BigFS mean / MooseFS mean, log scale (green: BigFS better; RSS: lower is better)", fontsize=9, loc="left")
        else:
            for i, s in enumerate(sides):
                off = (i - (len(sides) - 1) / 2) * bar
                means = [e[s + "_mean"] for e in rows]
                ax.barh([y + off for y in ys], [m or 0 for m in means], height=bar, color=colors.get(s), label=side_name(s, meta), alpha=0.8)
                for y, e in zip(ys, rows):
                    vals = [v for v in e[s] if v is not None]
                    if not vals:
                        ax.text(1, y + off, " timed out" if e[s + "_timed_out"] else " -", va="center", fontsize=7)
                        continue
                    m = mean(vals)
                    ax.errorbar(m, y + off, xerr=[[m - min(vals)], [max(vals) - m]], fmt="none", ecolor="black", lw=0.8, capsize=2)
                    ax.plot(vals, [y + off] * len(vals), "k.", ms=3)
            vals = [v for e in rows for s in sides for v in e[s] if v]
            if vals:
                # Log scale (rows of one unit span decades): bars start at the
                # decade below the smallest figure.
                ax.set_xlim(10 ** math.floor(math.log10(min(vals) / 1.2)), max(vals) * 1.6)
            better = "lower is better" if unit == "MiB" else "higher is better"
            ax.set_title(f"{unit} ({better}, log scale); bars: mean, whiskers and dots: rounds", fontsize=9, loc="left")
            ax.set_xscale("log")
        ax.set_yticks(ys)
        ax.set_yticklabels([e["label"] for e in rows], fontsize=8)
        ax.invert_yaxis()
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].legend(fontsize=8, loc="lower right")
    n = {s: sum(1 for _ in summary[0][s]) if summary else 0 for s in sides}
    fig.suptitle(
        f"bench/suite.sh {meta.get('stamp', '')}: " + " vs ".join(f"{side_name(s, meta)} x{n[s]}" for s in sides)
        + (" (quick)" if meta.get("quick") else ""),
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tree")
    t.add_argument("tar")
    t.add_argument("--min-files", type=int, default=10000)
    r = sub.add_parser("run")
    r.add_argument("mount")
    r.add_argument("--side", required=True)
    r.add_argument("--setup", default="")
    r.add_argument("--round", type=int, default=1)
    r.add_argument("--daemon", required=True, help="name of the mount daemon process (RSS)")
    r.add_argument("--out", required=True)
    r.add_argument("--tree-tar", required=True)
    r.add_argument("--git-source", required=True)
    r.add_argument("--fsbench", required=True)
    r.add_argument("--size-mib", type=int, default=64)
    r.add_argument("--files", type=int, default=1000)
    r.add_argument("--procs", type=int, default=4)
    r.add_argument("--par-mib", type=int, default=1024, help="MiB each parallel process writes")
    r.add_argument("--par-files", type=int, default=1000, help="4 KiB files each parallel process creates")
    r.add_argument("--appends", type=int, default=100000)
    r.add_argument("--seed", type=int, default=13)
    r.add_argument("--append-timeout", type=float, default=600)
    r.add_argument("--step-timeout", type=float, default=1800)
    r.add_argument("--data-dir", default="/tmp", help="where the clusters keep chunks (free space check)")
    r.add_argument("--only", default="", help="comma list of fsbench,tree,parallel,append")
    p = sub.add_parser("report")
    p.add_argument("dir")
    p.add_argument("stamp")
    p.add_argument("--results", required=True)
    p.add_argument("--png", default="")
    s = sub.add_parser("sample")
    s.add_argument("pid", type=int)
    s.add_argument("file")
    s.add_argument("--interval", type=float, default=0.2)
    a = ap.parse_args()
    {"tree": cmd_tree, "run": cmd_run, "report": cmd_report, "sample": cmd_sample}[a.cmd](a)


if __name__ == "__main__":
    main()
