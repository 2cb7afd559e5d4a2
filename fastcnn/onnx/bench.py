"""``fastcnn bench model.onnx``: inference latency of an ONNX model in fastcnn
and in ONNX Runtime (when installed), side by side.

For each thread count and batch size, both sides get the same random input
and the same number of threads (fastcnn.set_num_threads; ORT's intra-op
threads, one inter-op thread); their outputs are compared first, then the
calls alternate (fastcnn, ORT, fastcnn, ...) after a warm-up, and the medians
are reported: latency per call, throughput in images per second, the ratio
(ORT's latency / fastcnn's: above 1 means fastcnn is faster), and the largest
absolute difference of the outputs. Idle threads sleep on both sides (ORT's
session.intra_op.allow_spinning=0, as fastcnn's OMP_WAIT_POLICY=PASSIVE)
unless OMP_WAIT_POLICY=ACTIVE is set: a side's spinning threads would take a
core from the other's next call.
"""
import datetime
import os
import platform
import statistics
import time

import numpy as np

__all__ = ["bench", "run_bench"]

# Outputs agree when max |fastcnn - ORT| <= TOLERANCE * max |ORT| (float32
# sums in a different order; deep models accumulate more).
TOLERANCE = 1e-3


def _ort_session(path, threads):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "ACTIVE":
        # fastcnn's idle threads sleep (OMP_WAIT_POLICY=PASSIVE unless set):
        # so do onnxruntime's, or its spinning takes a core from the next call
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _time(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_bench(path, batches=(1, 8), threads=(1, 2), repeat=20, seconds=5.0, seed=0):
    """Measure; returns a list of dicts, one per (threads, batch)."""
    import fastcnn
    from . import load
    model = load(path)
    rng = np.random.default_rng(seed)
    rows, saved_threads = [], fastcnn.get_num_threads()
    try:
        for t in threads:
            fastcnn.set_num_threads(t)
            sess = _ort_session(path, t)
            for n in batches:
                rows.append(_measure(model, sess, rng, n, t, repeat, seconds))
    finally:
        fastcnn.set_num_threads(saved_threads)
    return rows


def _measure(model, sess, rng, n, t, repeat, seconds):
    x = rng.standard_normal((n,) + model._input_shape).astype(np.float32)
    runs = [("fastcnn", lambda: model(x))]
    row = {"threads": t, "batch": n, "diff": None, "agree": None}
    if sess is not None:
        name = sess.get_inputs()[0].name
        runs.append(("ort", lambda: sess.run(None, {name: x})[0]))
        y, ref = model(x), runs[1][1]()
        row["diff"] = float(np.abs(y - ref).max())
        row["agree"] = row["diff"] <= TOLERANCE * max(float(np.abs(ref).max()), 1e-6)
    for _, fn in runs:                          # warm-up: compile, caches
        fn()
    times = {side: [] for side, _ in runs}
    deadline = time.perf_counter() + seconds
    for k in range(repeat):
        for side, fn in runs:
            times[side].append(_time(fn))
        if k >= 2 and time.perf_counter() > deadline:
            break
    for side in times:
        row[side] = statistics.median(times[side])
    row["runs"] = len(times["fastcnn"])
    return row


def _ms(seconds):
    """Milliseconds, three significant digits at least (a small net's call
    can take a few microseconds)."""
    ms = 1e3 * seconds
    return f"{ms:.2f}" if ms >= 1 else f"{ms:.3g}"


def _format(rows, has_ort):
    head = f"{'threads':>7} {'batch':>5} {'fastcnn ms':>10} {'img/s':>8}"
    if has_ort:
        head += f" {'ORT ms':>9} {'img/s':>8} {'ORT/fastcnn':>11} {'max |diff|':>10}"
    lines = [head]
    for r in rows:
        line = (f"{r['threads']:>7} {r['batch']:>5} {_ms(r['fastcnn']):>10} "
                f"{r['batch'] / r['fastcnn']:>8.1f}")
        if has_ort:
            line += (f" {_ms(r['ort']):>9} {r['batch'] / r['ort']:>8.1f} "
                     f"{r['ort'] / r['fastcnn']:>10.2f}x {r['diff']:>10.2e}"
                     + ("" if r["agree"] else "  MISMATCH"))
        lines.append(line)
    return lines


def bench(path, batches=(1, 8), threads=(1, 2), repeat=20, seconds=5.0, out=print):
    """Run the benchmark and print the table; returns 0, or 1 if the outputs
    of fastcnn and ONNX Runtime disagree."""
    import fastcnn
    from .. import _native
    rows = run_bench(path, batches, threads, repeat, seconds)
    has_ort = rows and "ort" in rows[0]
    out(f"{path}: fastcnn {fastcnn.__version__} ({_native.isa()})"
        + (f" vs onnxruntime {_ort_version()}" if has_ort else
           " (onnxruntime is not installed: fastcnn alone)"))
    out(f"{_cpu_name()}, {datetime.date.today()}; medians of interleaved runs")
    for line in _format(rows, has_ort):
        out(line)
    if has_ort and not all(r["agree"] for r in rows):
        out(f"MISMATCH: the outputs differ by more than {TOLERANCE:g} of their scale")
        return 1
    return 0


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ort_version():
    import onnxruntime
    return onnxruntime.__version__
