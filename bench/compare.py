"""Run the benchmark suite and report fastcnn against its peers, side by side.

    python bench/compare.py            # full run (under 15 minutes), writes bench/RESULTS.md
    python bench/compare.py --peer-defaults    # the same, peers at their defaults:
                                               # writes bench/RESULTS-peer-defaults.md
    python bench/compare.py --quick    # under 3 minutes
    python bench/compare.py --only conv --out /tmp/conv.md
    python bench/compare.py --only '224|MobileNetV2 train' --threads 1 --out /tmp/cnn.md

One row per benchmark (the cases of bench/bench_*.py): fastcnn's median time,
the peer's, the ratio peer / fastcnn (above 1: fastcnn is faster), GFLOP/s
and percent of the measured peak (fastcnn._native.fma_peak_gflops) for compute-bound rows, at 1
and 2 threads. Each row is checked against the peer first, then the two sides
run interleaved (A B A B ...) after a warm-up, with the same inputs and the
same thread count. Rows whose fastcnn side is not built yet are listed as
pending, rows whose peer is not installed as missing, rows that raise or
disagree with the peer as failed: nothing is hidden or faked.

The rows run in a child process, so that a crash is reported on its row
(and the run goes on) instead of ending the report; the numpy GEMM rows run
in their own child with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (they
slow OpenBLAS on this project's machines). The memory rows run each
library's 20-step training in its own process.

Heavy rows (Case.heavy: ResNet-18 and MobileNetV2, inference at 3x224x224
and the train steps; up to about 1 s a call on one core) get one warm-up
call and 3 to 11 rounds (HEAVY), about a minute per thread count in all; in
quick mode, 3 rounds at the largest thread count only.

Two settings modes; the header says which one ran:

- Default: idle threads sleep on every side (IDLE_THREADS_SLEEP): with
  interleaved runs on two cores, a library whose idle threads spin after its
  call (torch's OpenMP, OpenBLAS) holds a core while the other side's threads
  run, and the second side's time measures that, not its code (sgemm 512^3 at
  2 threads: 1.22 ms right after numpy calls, 0.71 ms with OpenBLAS's threads
  asleep). fastcnn's own default is the same (PASSIVE). onnxruntime's thread
  pool is its own and reads neither variable.
- --peer-defaults: what users get, who change nothing. The benchmark
  processes run without OMP_WAIT_POLICY, GOMP_SPINCOUNT and
  OPENBLAS_THREAD_TIMEOUT, and load torch and onnxruntime before fastcnn.
  torch and fastcnn share one OpenMP runtime per process (the first
  libgomp.so.1 loaded serves both, and reads its wait policy when it loads),
  so it starts at torch's default policy (spin, then sleep), not at the
  PASSIVE one fastcnn asks for when it loads first; the header lists the
  runtimes the benchmark process had loaded. The GEMM rows still run without
  OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (this project's machines set them;
  OpenBLAS's defaults are without them).

The header lists every figure below its BENCHMARKS.md target (row ratios
against each row's own target, e.g. LeNet-5 train step 3, CIFAR-net 1.5,
ResNet-18 and MobileNetV2 1.3, inference vs onnxruntime 1.0; large conv
shapes' percent of peak and 2-thread speedup; batch-1 inference never
slower with more threads; the conv groups' geometric means) and records the
CPU by model name, vendor, family, model and stepping (a virtual machine's
model name can be generic), its caches, and the instruction set fastcnn's
kernels use.

The report's header records the software by version, and fastcnn by version
and git commit (and whether it is this checkout's in-place build or an
installed copy), never by a local filesystem path: any path of this machine
that still reaches the text (the checkout, the Python installation, the home
or temporary directory, e.g. in --out or an error message) is replaced by a
placeholder such as <checkout> or <venv> before the file is written.

Busy machine: the header always gives the measured load average (at the start
and the end, with the CPU count) and the peak probes. The run is flagged as
busy when the 1-minute load average at the start is 1.0 or more, or the peak
probe at the largest thread count reaches less than 90% of the smallest
count's, scaled linearly. A flagged run gets a warning that says which test
fired and quotes the figures. A --note is the runner's own words: it is always
printed, but nothing checks it. On a flagged run it comes after the warning,
marked as unverified, so that a note such as "quiet machine" cannot stand as
the report's verdict against its own measurements; otherwise it is printed
with the measured load average beside it.
"""
import argparse
import datetime
import gc
import glob
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time

import _path
_path.prefer_checkout()  # this checkout's in-place build first

PEER_DEFAULTS = "--peer-defaults"


def import_peers_first():
    """Load the peers before fastcnn. torch and fastcnn share one OpenMP
    runtime per process (both link libgomp.so.1; the first copy loaded
    serves both), and it reads its wait policy when it loads: loaded first,
    torch's copy starts at its own default, not at fastcnn's PASSIVE."""
    for name in ("torch", "onnxruntime"):
        try:
            __import__(name)
        except ImportError:
            pass


if PEER_DEFAULTS in sys.argv[1:]:
    import_peers_first()
import fastcnn
import harness
import bench_activation
import bench_batchnorm2d
import bench_conv2d
import bench_gemm
import bench_linear
import bench_loss
import bench_merge
import bench_models
import bench_onnx
import bench_optim
import bench_pool2d
import bench_softmax

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = [bench_conv2d, bench_pool2d, bench_gemm, bench_models, bench_onnx, bench_activation,
           bench_linear, bench_loss, bench_optim, bench_merge, bench_softmax,
           bench_batchnorm2d]
CASES = [case for module in MODULES for case in module.CASES]

SETTINGS = {   # harness.measure arguments
    "quick": dict(warmup=0, min_rounds=3, max_rounds=7, budget=0.4, min_sample=2e-3,
                  floor_rounds=3),
    "full": dict(warmup=2, min_rounds=7, max_rounds=31, budget=4.0, min_sample=5e-3,
                 floor_rounds=5),
}
# Heavy rows (Case.heavy: ResNet-18 and MobileNetV2, up to ~1 s a call on 1 core) get
# fewer warm-up calls and rounds, so that they add about a minute per thread
# count to a full report; quick mode also runs them at the largest thread count only.
HEAVY = {
    "quick": dict(max_rounds=3),
    "full": dict(warmup=1, min_rounds=5, max_rounds=11, floor_rounds=3),
}
# Summary groups, in report order, with what BENCHMARKS.md asks of them.
GROUPS = {
    "conv fwd": "each >= 1.0, geomean >= 1.3; large shapes >= 85% of peak",
    "conv fwd+bwd": "each >= 1.0, geomean >= 1.3; large shapes >= 85% of peak",
    "pooling": "each >= 5",
    "gemm": "each >= 1.0",
    "train step": "LeNet-5 >= 3, CIFAR-net >= 1.5, ResNet-18 >= 1.3, MobileNetV2 >= 1.3",
    "inference": "vs onnxruntime >= 1.0",
    "inference 3x224x224": "vs onnxruntime >= 1.0 (fastcnn.models and fastcnn.onnx.load)",
    "memory": "fastcnn peak RSS <= torch's (ratio >= 1)",
    "activation": "-",
    "linear": "-",
    "loss": "-",
    "optimizer": "-",
    "merge": "-",
    "softmax": "-",
    "batchnorm": "each >= 2 (issue 9)",
    "depthwise": "each >= 1.5 (issue 9)",
}
GEOMEAN_TARGET = {"conv fwd": 1.3, "conv fwd+bwd": 1.3}
LARGE_PEAK = 0.85       # large conv shapes: fraction of peak
LARGE_SPEEDUP = 1.85    # large shapes: 2 threads over 1
MEMORY_STEPS = 20


# --- running ---------------------------------------------------------------------

def run_case(case, threads, settings, time_pair=None):
    """Build, check and time one case at one thread count -> result dict;
    time_pair(pair, settings) -> harness.Timing times it (default: the two
    sides interleaved, harness.measure)."""
    with harness.use_threads(threads):
        try:
            pair = case.build(threads)
            pair.check()
            t = (time_pair or measure)(pair, settings)
        except harness.Pending as e:
            return {"status": "pending", "reason": str(e)}
        except harness.MissingPeer as e:
            return {"status": "missing", "reason": str(e)}
        except Exception as e:   # reported as a failed row, never hidden
            return {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
        finally:
            pair = None
            gc.collect()
    return {"status": "ok", "fastcnn": t.fastcnn, "peer": t.peer, "rounds": t.rounds}


def measure(pair, settings):
    return harness.measure(pair, **settings)


def pair_row(thread_counts):
    """The row label of fastcnn alone at the smallest and the largest thread
    count, interleaved (run_thread_pair)."""
    return f"{thread_counts[0]}-{thread_counts[-1]}"


def thread_pair_rows(cases, args):
    """The rows that run_thread_pair times: the cases whose speedup target is
    1.0 (batch-1 inference), where they run at more than one thread count."""
    return [(c.key, pair_row(args.threads)) for c in cases
            if len(row_threads(c, args)) > 1 and speedup_target(c, args.threads) == 1.0]


def run_thread_pair(case, label, settings):
    """fastcnn's side of a case alone, at the two thread counts of ``label``,
    interleaved in one process -> result dict ("fastcnn": the time at the
    smaller count, "peer": at the larger). Batch-1 inference must never get
    slower as threads are added; its rows at each count run minutes apart,
    and on a shared machine the drift between them is as large as the
    difference sought (LeNet-5 at batch 1: 15.5 against 16.2 us from the rows,
    15.4 against 15.4 interleaved)."""
    few, many = (int(n) for n in label.split("-"))

    def alone(pair, settings):
        def on(n):
            def call():
                harness.fastcnn.set_num_threads(n)
                return pair.fastcnn()
            return call
        return measure(harness.Pair(on(few), on(many), lambda: None), settings)

    return run_case(case, many, settings, alone)


def settings_for(case, mode):
    """harness.measure arguments for this row in this mode."""
    return {**SETTINGS[mode], **(HEAVY[mode] if case.heavy else {})}


def row_threads(case, args):
    """The thread counts this row runs at: heavy rows only the largest in quick mode."""
    return args.threads[-1:] if args.quick and case.heavy else args.threads


# The same OpenMP wait policy for every library in the child, and OpenBLAS's
# workers asleep after 2**4 cycles, unless the caller chose a policy.
IDLE_THREADS_SLEEP = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
# --peer-defaults: these are removed from the children's environment instead.
IDLE_THREAD_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OPENBLAS_THREAD_TIMEOUT")


def child_env(args, drop):
    """The environment of the benchmark children (without ``drop``)."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if args.peer_defaults:
        for name in IDLE_THREAD_VARIABLES:
            env.pop(name, None)
    elif "OMP_WAIT_POLICY" not in env:
        env.update(IDLE_THREADS_SLEEP)
    return env


def run_children(cases, args, drop=()):
    """Run the rows of ``cases`` in a child process (without the environment
    variables ``drop``), which streams its results back as JSON lines. A
    crash (a fastcnn bug must not take the report down with it) is reported
    on the row that was running, and a fresh child resumes after that row.
    Returns {(key, threads): result}, the child's BLAS description and the
    OpenMP runtimes it had loaded at its end."""
    env = child_env(args, drop)
    todo = [(c.key, t) for c in cases for t in row_threads(c, args)] + thread_pair_rows(cases, args)
    results, blas, openmp = {}, None, None
    while todo:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "rows.jsonl")
            cmd = [sys.executable, os.path.abspath(__file__), "--child", out,
                   "--rows", json.dumps(todo)] + (["--quick"] if args.quick else []) + (
                       [PEER_DEFAULTS] if args.peer_defaults else [])
            child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
            tail = []
            for line in child.stderr:       # relay everything, keep the last non-progress lines
                sys.stderr.write(line)
                if not PROGRESS_LINE.search(line):
                    tail = (tail + [line.strip()])[-5:]
            child.wait()
            running = None
            if os.path.exists(out):
                with open(out) as f:
                    for line in f:
                        rec = json.loads(line)
                        row = tuple(rec.get("row", ()))
                        if rec["event"] == "blas":
                            blas = rec["blas"]
                        elif rec["event"] == "openmp":
                            openmp = rec["openmp"]
                        elif rec["event"] == "start":
                            running = row
                        else:
                            results[row] = rec["result"]
                            running = None
        todo = [row for row in todo if row not in results]
        if child.returncode == 0:
            break
        died = (f"signal {-child.returncode}" if child.returncode < 0
                else f"exit status {child.returncode}")
        reason = f"the benchmark process died ({died}): {' / '.join(tail)[-300:]}"
        if running is None:             # died outside a row: nothing to resume from
            results.update({row: {"status": "failed", "reason": reason} for row in todo})
            break
        results[running] = {"status": "failed", "reason": reason}
        todo.remove(running)
    return results, blas, openmp


def child_main(args):
    """Run the given rows, appending one JSON line per event to args.child."""
    rows = [tuple(r) for r in json.loads(args.rows)]
    by_key = {c.key: c for c in CASES}
    with open(args.child, "a") as f:
        def emit(**rec):
            f.write(json.dumps(rec) + "\n")
            f.flush()
        emit(event="blas", blas=blas_info())
        for key, t in rows:
            emit(event="start", row=[key, t])
            t0 = time.perf_counter()
            settings = settings_for(by_key[key], args.mode)
            r = (run_thread_pair(by_key[key], t, settings) if isinstance(t, str)
                 else run_case(by_key[key], t, settings))
            emit(event="result", row=[key, t], result=r)
            _progress(by_key[key], t, r, time.perf_counter() - t0)
        emit(event="openmp", openmp=openmp_runtimes())


def memory_result(threads, env):
    """Peak RSS of MEMORY_STEPS CIFAR-net training steps, each library in its own process."""
    peaks = {}
    for lib in ("fastcnn", "torch"):
        done = subprocess.run([sys.executable, os.path.join(HERE, "memory_run.py"), lib,
                               str(threads), str(MEMORY_STEPS)], capture_output=True, text=True,
                              env=env)
        try:
            peaks[lib] = side = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            side = {"error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
        if "error" in side:
            status = "failed"
            if side["error"].startswith("Pending"):
                status = "pending"
            elif lib == "torch" and side["error"].startswith("ModuleNotFoundError"):
                status = "missing"
            return {"status": status, "reason": side["error"].split(": ", 1)[-1]}
    ours, theirs = peaks["fastcnn"], peaks["torch"]
    return {"status": "ok", "fastcnn": ours["peak_mib"], "peer": theirs["peak_mib"], "rounds": 1,
            "before": [ours["before_mib"], theirs["before_mib"]]}


# --- the machine ----------------------------------------------------------------

def cpu_model():
    """The CPU's model name, with vendor, family, model and stepping where
    /proc/cpuinfo gives them (a virtual machine's name may be generic)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break           # the end of the first processor's block
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    ids = [f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if k in fields]
    return f"{name} ({', '.join(filter(None, [fields.get('vendor_id')] + ids))})" if ids else name


def cpu_caches():
    """The first CPU's caches from sysfs, e.g. "L1d 48K, L1i 32K, L2 1024K, L3 32768K"."""
    sizes = []
    for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            level, kind, size = (_read(os.path.join(index, name))
                                 for name in ("level", "type", "size"))
        except OSError:
            continue
        sizes.append(f"L{level}{dict(Data='d', Instruction='i').get(kind, '')} {size}")
    return ", ".join(sizes) or "unknown (no /sys/devices/system/cpu)"


def _read(path):
    with open(path) as f:
        return f.read().strip()


def openmp_runtimes():
    """The OpenMP runtimes mapped into this process (libgomp, libiomp5, libomp),
    named from site-packages on where they come from a package."""
    found = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if re.search(r"/lib(gomp|iomp5|omp)[.-][^/]*$", path):
                    found.add(path.split("site-packages/")[-1])
    except OSError:
        return "unknown (no /proc/self/maps)"
    return ", ".join(sorted(found)) or "none"


def settings_text(args, machine):
    """The header's account of the idle-thread settings the rows ran with."""
    runtimes = (f"; OpenMP runtime(s) in the benchmark process: {machine['openmp']}"
                if machine.get("openmp") else "")
    if args.peer_defaults:
        removed = [k for k in IDLE_THREAD_VARIABLES if k in os.environ]
        return ("peers' defaults (--peer-defaults): no idle-thread variable set"
                + (f" ({', '.join(removed)} removed)" if removed else "")
                + "; torch and onnxruntime loaded before fastcnn, so the OpenMP runtime that "
                "torch and fastcnn share starts at torch's default wait policy (fastcnn's own "
                "PASSIVE default applies only where fastcnn loads first)" + runtimes)
    if "OMP_WAIT_POLICY" in os.environ:
        return f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} (set by the caller){runtimes}"
    return ("idle threads asleep (the default mode): " + ", ".join(
        f"{k}={v}" for k, v in IDLE_THREADS_SLEEP.items()) + "; onnxruntime's own thread pool "
        "reads neither, so its sessions are made with session.intra_op.allow_spinning=0"
        + runtimes)


def blas_info():
    try:
        import threadpoolctl
        for info in threadpoolctl.threadpool_info():
            if info.get("user_api") == "blas":
                return f"{info.get('internal_api')} {info.get('version')} ({info.get('architecture')})"
    except ImportError:
        pass
    return "unknown (threadpoolctl not installed)"


def git_describe():
    try:
        rev = subprocess.run(["git", "-C", os.path.dirname(HERE), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", os.path.dirname(HERE), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True).stdout
        return rev + (" + uncommitted changes" if dirty.strip() else "") if rev else "unknown"
    except OSError:
        return "unknown"


# --- formatting ------------------------------------------------------------------

def fmt_time(s):
    if s >= 1.0:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} µs"


def fmt_count(x):
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.0f}"


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def ratio_misses(case, r):
    """The row's ratio is below the case's own target."""
    return case.target is not None and r["peer"] / r["fastcnn"] < case.target


def peak_percent(case, r, peak):
    return 100 * case.flops / r["fastcnn"] / 1e9 / peak


def peak_misses(case, r, peak):
    """A large conv shape below LARGE_PEAK of the measured peak."""
    return bool(case.flops and case.large and case.group.startswith("conv")
                and peak_percent(case, r, peak) < 100 * LARGE_PEAK)


def speedup(case, results, thread_counts):
    """fastcnn's time at the smallest thread count over the largest, or None:
    from its interleaved run (run_thread_pair) where it has one, else from the
    rows at each count."""
    if len(thread_counts) < 2 or case.group == "memory":
        return None
    paired = results.get((case.key, pair_row(thread_counts)))
    if paired and paired["status"] == "ok":
        return paired["fastcnn"] / paired["peer"]
    a, b = (results.get((case.key, t)) for t in (thread_counts[0], thread_counts[-1]))
    if not a or not b or a["status"] != "ok" or b["status"] != "ok":
        return None
    return a["fastcnn"] / b["fastcnn"]


def speedup_target(case, thread_counts):
    """What fastcnn's speedup from the smallest to the largest thread count must
    reach: LARGE_SPEEDUP for large shapes from n to 2n threads; 1.0 for batch-1
    inference (its latency must never get worse as threads are added); else None."""
    if case.large and thread_counts[-1] == 2 * thread_counts[0]:
        return LARGE_SPEEDUP
    if case.group.startswith("inference") and case.items == 1:
        return 1.0
    return None


def speedup_misses(case, s, thread_counts):
    target = speedup_target(case, thread_counts)
    return target is not None and s < target


def ratio_cell(case, r):
    return f"{r['peer'] / r['fastcnn']:.2f}" + (" (miss)" if ratio_misses(case, r) else "")


def rate_cell(case, r, peak):
    if case.group == "memory":
        return f"{r['fastcnn']:.0f} / {r['peer']:.0f} MiB"
    if case.flops:
        return (f"{case.flops / r['fastcnn'] / 1e9:.1f} GFLOP/s, "
                f"{peak_percent(case, r, peak):.0f}%"
                + (" (miss)" if peak_misses(case, r, peak) else ""))
    if case.items:
        return f"{fmt_count(case.items / r['fastcnn'])} img/s"
    return ""


def row_cells(case, r, peak):
    if r is None:
        return ["not run"] + [""] * 3
    if r["status"] != "ok":
        return [r["status"], "", "", ""]
    if case.group == "memory":
        return [f"{r['fastcnn']:.0f} MiB", f"{r['peer']:.0f} MiB",
                ratio_cell(case, r), f"before training: {r['before'][0]:.0f} / "
                f"{r['before'][1]:.0f} MiB"]
    return [fmt_time(r["fastcnn"]), fmt_time(r["peer"]), ratio_cell(case, r),
            rate_cell(case, r, peak)]


def speedup_cell(case, results, thread_counts):
    s = speedup(case, results, thread_counts)
    if s is None:
        return ""
    a, b = (results.get((case.key, t)) for t in (thread_counts[0], thread_counts[-1]))
    text = f"{s:.2f}" + (" (miss)" if speedup_misses(case, s, thread_counts) else "")
    # More threads should never be much slower: if they are, others' work got in the way.
    rows = a and b and a["status"] == b["status"] == "ok"   # (s may come from the pair alone)
    slow = [side if side == "fastcnn" else case.peer for side in ("fastcnn", "peer")
            if rows and b[side] > 2 * a[side]]
    if slow:
        text += f" ({', '.join(slow)} >2x slower with more threads: disturbed?)"
    return text


def group_table(group, cases, results, thread_counts, peaks):
    head = ["benchmark", "peer"]
    for t in thread_counts:
        head += [f"{t}T fastcnn", f"{t}T peer", f"{t}T ratio",
                 "peak RSS" if group == "memory" else f"{t}T rate"]
    if len(thread_counts) > 1:
        head.append(f"{thread_counts[-1]}T/{thread_counts[0]}T")
    head.append("rounds")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in cases:
        cells = [case.name, case.peer]
        rounds = []
        for t in thread_counts:
            r = results.get((case.key, t))
            cells += row_cells(case, r, peaks[t])
            rounds.append(str(r["rounds"]) if r and r["status"] == "ok" else "-")
        if len(thread_counts) > 1:
            cells.append(speedup_cell(case, results, thread_counts))
        cells.append("/".join(rounds))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def summary_lines(groups, results, thread_counts):
    head = ["group"] + [f"geomean ratio {t}T" for t in thread_counts] + [
        "worst row", "rows measured", "below target", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group, cases in groups.items():
        cells, worst, measured, below = [group], None, 0, 0
        attempted = sum((case.key, t) in results for case in cases for t in thread_counts)
        for t in thread_counts:
            ratios = []
            for case in cases:
                r = results.get((case.key, t))
                if r and r["status"] == "ok":
                    ratio = r["peer"] / r["fastcnn"]
                    ratios.append(ratio)
                    below += ratio_misses(case, r)
                    if worst is None or ratio < worst[0]:
                        worst = (ratio, f"{row_label(case)} {t}T")
            measured += len(ratios)
            g = geomean(ratios)
            cells.append(f"{g:.2f}" if g else "-")
        cells.append(f"{worst[1]}: {worst[0]:.2f}" if worst else "-")
        cells.append(f"{measured} / {attempted}")
        cells.append(str(below) if measured and any(c.target is not None for c in cases)
                     else "-")
        cells.append(GROUPS.get(group, "-"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def row_label(case):
    return case.name + ("" if case.peer == "torch" else f" vs {case.peer}")


def misses(groups, results, thread_counts, peaks):
    """Every measured figure below its BENCHMARKS.md target, as short phrases:
    row ratios, large conv shapes' percent of peak, fastcnn's speedup with
    more threads (speedup_target), and the conv groups' geometric means."""
    found = []
    for group, cases in groups.items():
        for t in thread_counts:
            ratios = []
            for case in cases:
                r = results.get((case.key, t))
                if not r or r["status"] != "ok":
                    continue
                ratios.append(r["peer"] / r["fastcnn"])
                if ratio_misses(case, r):
                    found.append(f"{row_label(case)} {t}T: {ratios[-1]:.2f} "
                                 f"< {case.target:.1f}")
                if peak_misses(case, r, peaks[t]):
                    found.append(f"{row_label(case)} {t}T: {peak_percent(case, r, peaks[t]):.0f}% "
                                 f"of peak < {100 * LARGE_PEAK:.0f}%")
            g = geomean(ratios)
            if group in GEOMEAN_TARGET and g is not None and g < GEOMEAN_TARGET[group]:
                found.append(f"{group} geomean {t}T: {g:.2f} < {GEOMEAN_TARGET[group]:.1f}")
        for case in cases:
            s = speedup(case, results, thread_counts)
            if s is not None and speedup_misses(case, s, thread_counts):
                found.append(f"{row_label(case)} {thread_counts[-1]}T/{thread_counts[0]}T: "
                             f"{s:.2f} < {speedup_target(case, thread_counts):.2f}")
    return found


def misses_line(groups, results, thread_counts, peaks):
    found = misses(groups, results, thread_counts, peaks)
    if not found:
        return "**Below target:** nothing measured is below its target."
    return f"**Below target ({len(found)}):** " + "; ".join(found) + "."


def not_ok_lines(results, cases):
    by_reason = {}
    for case in cases:
        for (key, t), r in results.items():
            if key == case.key and r["status"] != "ok":
                reason = (r["status"], r["reason"])
                by_reason.setdefault(reason, [])
                if key not in by_reason[reason]:
                    by_reason[reason].append(key)
    lines = []
    for (status, reason), names in by_reason.items():
        lines.append(f"- **{status}**: {reason} — {len(names)} row(s): {', '.join(names)}")
    return lines


def report_groups(args, memory_case):
    """{group: [cases]} in report order: the rows of the report's tables."""
    cases = [c for c in selected(args)] + ([memory_case] if memory_case else [])
    groups = {}
    for g in GROUPS:
        members = [c for c in cases if c.group == g]
        if members:
            groups[g] = members
    return groups


def chart_rows(groups, results, thread_counts):
    """The ratio tables' rows as plain dicts for bench/charts.py: group, name,
    peer, target and {threads: ratio, None where not measured}."""
    rows = []
    for group, cases in groups.items():
        for case in cases:
            ratios = {}
            for t in thread_counts:
                r = results.get((case.key, t))
                ok = r is not None and r["status"] == "ok"
                ratios[t] = r["peer"] / r["fastcnn"] if ok else None
            rows.append({"group": group, "name": case.name, "peer": case.peer,
                         "target": case.target, "ratios": ratios})
    return rows


def report(args, results, machine, elapsed, memory_case):
    thread_counts = args.threads
    peaks = {t: max(machine["peaks_start"][t], machine["peaks_end"][t]) for t in thread_counts}
    cases = [c for c in selected(args)] + ([memory_case] if memory_case else [])
    groups = report_groups(args, memory_case)
    now = datetime.datetime.now().astimezone()
    torch_v = harness.peer_version("torch")
    heavy_warmup = {**SETTINGS[args.mode], **HEAVY[args.mode]}["warmup"]
    out = [
        "# fastcnn benchmark results", "",
        f"Produced by `{args.command}` on {now:%Y-%m-%d %H:%M %Z} "
        f"({args.mode} mode, "
        f"{'peers at their default settings' if args.peer_defaults else 'idle threads asleep'}, "
        f"{elapsed / 60:.1f} minutes).", "",
    ]
    load = (f"load average (1, 5, 15 min): {_loads(machine['load_start'])} at the start, "
            f"{_loads(machine['load_end'])} at the end, on {os.cpu_count()} CPUs")
    low_load = machine["load_start"][0] >= 1.0
    low_peak = len(thread_counts) > 1 and peaks[thread_counts[-1]] < (
        0.9 * peaks[thread_counts[0]] * thread_counts[-1] / thread_counts[0])
    if low_load or low_peak:
        why = " and ".join(
            ([f"the 1-minute load average at the start was {machine['load_start'][0]:.1f} "
              f"(the threshold is 1.0)"]
             if low_load else []) +
            ([f"the {thread_counts[-1]}-thread peak probe reached {peaks[thread_counts[-1]]:.0f} "
              f"GFLOP/s, under 90% of {thread_counts[-1] / thread_counts[0]:g} x "
              f"{peaks[thread_counts[0]]:.0f}"] if low_peak else []))
        out += [f"> **Warning:** the load probes flag this run as busy: {why}. {load[0].upper()}"
                f"{load[1:]}. Absolute times, percent of peak and multi-thread rows are "
                "unreliable; ratios of interleaved runs less so, but rerun on an idle machine "
                "to quote them.", ""]
        if args.note:
            out += [f"> **Note from the runner** (--note, not verified; the measured figures "
                    f"above flag the run as busy): {args.note}", ""]
    elif args.note:
        out += [f"> **Note:** {args.note} ({load}).", ""]
    out += [misses_line(groups, results, thread_counts, peaks), ""]
    out += [
        "| machine and software | |", "|---|---|",
        f"| CPU | {cpu_model()}, {os.cpu_count()} logical CPUs ({platform.machine()}) |",
        f"| CPU caches (cpu0) | {cpu_caches()} |",
        f"| ISA in use | {_cpu_isa()} |",
        f"| thread counts | {', '.join(map(str, thread_counts))} (fastcnn.set_num_threads, "
        f"torch.set_num_threads, onnxruntime intra_op_num_threads, threadpoolctl for numpy) |",
        "| measured FP32 peak (fastcnn._native.fma_peak_gflops, best of the probes at the start and the end; "
        "% of peak uses it) | " + "; ".join(
            f"{t}T: {peaks[t]:.0f} GFLOP/s (start {machine['peaks_start'][t]:.0f}, end "
            f"{machine['peaks_end'][t]:.0f})" for t in thread_counts) + " |",
        f"| load average (1, 5, 15 min) | start {_loads(machine['load_start'])}; "
        f"end {_loads(machine['load_end'])} (on {os.cpu_count()} CPUs) |",
        f"| fastcnn | {fastcnn.__version__} ({fastcnn_source()}) |",
        f"| numpy | {harness.peer_version('numpy')}; BLAS in this process: {blas_info()} |",
        f"| numpy in the GEMM rows | child process with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE "
        f"unset; BLAS there: {machine['blas_child'] or 'not run'} |",
        f"| settings (idle threads) | {settings_text(args, machine)} |",
        f"| torch | {torch_v} |",
        f"| onnxruntime | {harness.peer_version('onnxruntime')} |",
        f"| onnx | {harness.peer_version('onnx')} |",
        f"| Python | {platform.python_version()} |", "",
        "Ratio = peer time / fastcnn time: above 1 means fastcnn is faster (memory: peer RSS / "
        "fastcnn RSS). \"(miss)\" marks a row below its BENCHMARKS.md target. Times are medians "
        "of interleaved rounds (A B A B ... after the correctness check, which runs each side at "
        f"least once, and {SETTINGS[args.mode]['warmup']} further warm-up call(s) per side, "
        f"heavy rows {heavy_warmup}; each sample after the "
        f"first at least {SETTINGS[args.mode]['min_sample'] * 1e3:.0f} ms of repeated calls; "
        "\"rounds\" gives their number per thread count); rate is fastcnn's "
        "GFLOP/s and its percent of the measured peak at that thread count, or images per second "
        "for model rows. 2T/1T is fastcnn's speedup from 1 to 2 threads; for batch-1 inference "
        "rows (their target: never slower with more threads) it is timed apart, fastcnn alone "
        "at both thread counts in interleaved rounds in one process, as the rows at each count "
        "run minutes apart. Heavy rows (ResNet-18 "
        "and MobileNetV2) get fewer rounds" + (", at the largest thread count only" if args.quick
                                            else "") + ".", "",
        "## Summary", "",
    ]
    out += summary_lines(groups, results, thread_counts)
    for group, members in groups.items():
        out += ["", f"## {group}", ""] + group_table(group, members, results, thread_counts, peaks)
    problems = not_ok_lines(results, cases)
    if problems:
        out += ["", "## Pending, missing and failed rows", ""] + problems
    out += ["", "## How the rows are measured", "",
            *[f"- `{os.path.basename(m.__file__)}`: {' '.join(m.__doc__.split())}"
              for m in MODULES],
            "- Memory: `bench/memory_run.py`, one process per library and thread count, "
            f"{MEMORY_STEPS} CIFAR-net train steps (batch 64, SGD with momentum); peak RSS "
            "(ru_maxrss) of the whole process, imports included; the RSS before the first step is "
            "shown beside it.",
            "- fastcnn and torch each bring their own OpenMP runtime into the one process; their "
            "idle threads spin briefly after each parallel region, which can slow the other side's "
            "next call a little. Samples of many calls keep this small; it affects both sides.", ""]
    return no_local_paths("\n".join(out))


def _loads(values):
    return ", ".join(f"{x:.1f}" for x in values)


def fastcnn_source():
    """Where the imported fastcnn comes from, in words (no path), with the git commit."""
    checkout = os.path.join(_path.ROOT, "fastcnn")
    here = os.path.dirname(os.path.abspath(fastcnn.__file__))
    if os.path.realpath(here) == os.path.realpath(checkout):
        return f"in-place build of this checkout, git {git_describe()}"
    return f"installed copy; the benchmark scripts are at git {git_describe()}"


def no_local_paths(text):
    """text with this machine's known directories replaced by placeholders."""
    places = {os.path.dirname(os.path.abspath(fastcnn.__file__)): "<fastcnn>",
              _path.ROOT: "<checkout>", os.path.expanduser("~"): "~",
              tempfile.gettempdir(): "<tmp>"}
    if sys.prefix != sys.base_prefix:       # a virtual environment (not a system prefix)
        places[sys.prefix] = "<venv>"
    for place in sorted(places, key=len, reverse=True):
        if len(place) > 1:      # never "/" itself
            text = re.sub(re.escape(place) + r"(?=[/\\\s'\"`);,|]|$)", places[place], text,
                          flags=re.M)
    return text


def _cpu_isa():
    try:
        from fastcnn import _native
        omp = "OpenMP on" if _native.openmp_enabled() else "no OpenMP (serial)"
        return f"{_native.isa()} (CPU supports {_native.cpu_isa()}; FASTCNN_ISA={os.environ.get('FASTCNN_ISA', 'unset')}), {omp}"
    except ImportError:
        return "unknown"


def selected(args):
    if not args.only:
        return CASES
    return [c for c in CASES if re.search(args.only, f"{c.group}: {c.name}")]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter rounds (under 3 minutes)")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--only", help="regular expression on 'group: name' of the rows to run")
    p.add_argument(PEER_DEFAULTS, action="store_true",
                   help="run every peer, and fastcnn, at its default settings: no idle-thread "
                        "variables (OMP_WAIT_POLICY, GOMP_SPINCOUNT, OPENBLAS_THREAD_TIMEOUT) in "
                        "the benchmark processes, torch and onnxruntime loaded before fastcnn; "
                        "the default --out is then bench/RESULTS-peer-defaults.md")
    p.add_argument("--out", help="markdown file to write (default bench/RESULTS.md)")
    p.add_argument("--note", help="a note for the report's header (e.g. machine busy)")
    p.add_argument("--plot", metavar="DIR",
                   help="also write the ratio tables as bar charts, one PNG per group, into DIR "
                        "(needs matplotlib)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--rows", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",")]
    args.mode = "quick" if args.quick else "full"
    if args.out is None:
        args.out = os.path.join(HERE, "RESULTS-peer-defaults.md" if args.peer_defaults
                                else "RESULTS.md")
    args.command = " ".join(["python bench/compare.py", shlex.join(argv)]).strip()
    return args


def measure_peaks(thread_counts):
    """{threads: GFLOP/s}: the best of 3 probes each (others' work only lowers it)."""
    from fastcnn._native import fma_peak_gflops
    return {t: max(fma_peak_gflops(t) for _ in range(3)) for t in thread_counts}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    if args.plot:
        import importlib.util
        if importlib.util.find_spec("matplotlib") is None:    # before the long measuring
            sys.exit('compare.py --plot needs matplotlib: pip install "fastcnn[viz]"')
    start = time.perf_counter()
    machine = {"load_start": os.getloadavg(), "peaks_start": measure_peaks(args.threads)}
    cases = selected(args)
    results, machine["blas_child"] = {}, None
    isolated = [c for c in cases if c.isolate]
    if isolated:
        drop = sorted({v for c in isolated for v in c.isolate})
        print(f"running {len(isolated)} row(s) in a child process without {', '.join(drop)}",
              file=sys.stderr)
        child, machine["blas_child"], _ = run_children(isolated, args, drop)
        results.update(child)
    child, _, machine["openmp"] = run_children([c for c in cases if not c.isolate], args)
    results.update(child)
    memory_case = None
    if not args.only or re.search(args.only, "memory: CIFAR-net"):
        memory_case = harness.Case("memory", f"CIFAR-net {MEMORY_STEPS} train steps, peak RSS",
                                   "torch", None, target=1.0)
        # Quick mode: the largest thread count only (memory hardly depends on it).
        for t in args.threads[-1:] if args.quick else args.threads:
            t0 = time.perf_counter()
            results[(memory_case.key, t)] = r = memory_result(t, child_env(args, ()))
            _progress(memory_case, t, r, time.perf_counter() - t0)
    machine["load_end"] = os.getloadavg()
    machine["peaks_end"] = measure_peaks(args.threads)
    text = report(args, results, machine, time.perf_counter() - start, memory_case)
    print(text)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out}", file=sys.stderr)
    if args.plot:
        import charts
        rows = chart_rows(report_groups(args, memory_case), results, args.threads)
        for path in charts.write_ratio_charts(rows, args.threads, args.plot):
            print(f"wrote {path}", file=sys.stderr)


PROGRESS_LINE = re.compile(r"\[\d+\.\d s\]$")


def _progress(case, t, r, seconds):
    short = _short(r)
    if isinstance(t, str) and r["status"] == "ok":
        short = f"speedup {r['fastcnn'] / r['peer']:.2f}  ({r['rounds']} rounds)"
    print(f"{case.group:>12} | {case.key:<48} {t}T  {short}  [{seconds:.1f} s]",
          file=sys.stderr)


def _short(r):
    if r["status"] == "ok":
        return f"ratio {r['peer'] / r['fastcnn']:.2f}  ({r['rounds']} rounds)"
    return f"{r['status']}: {r['reason'][:100]}"


if __name__ == "__main__":
    main()
