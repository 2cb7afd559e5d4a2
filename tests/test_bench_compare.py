"""The benchmark report (bench/compare.py) and its cases: each row's own
target, the header's list of misses, heavy rows' rounds, the --peer-defaults
environment, and the train-step check of bench/bench_models.py. Each test
runs in a child process (the report imports the benchmark modules by bare
names, from bench/) and reads back one JSON line; nothing is timed."""
import json
import os

import pytest

from subproc import run_python

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def run_in_bench(code, **env):
    if not os.path.exists(os.path.join(BENCH, "compare.py")):
        pytest.skip("not a source checkout: bench/compare.py not found")
    result = run_python(code, cwd=BENCH, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cnn_rows_and_their_targets():
    rows = run_in_bench("""if True:
        import json, compare
        print(json.dumps([[c.group, c.name, c.peer, c.target, c.heavy] for c in compare.CASES]))
    """)
    keys = [f"{name} vs {peer}" for _, name, peer, _, _ in rows]
    assert len(keys) == len(set(keys))
    by_name = {name: (group, peer, target, heavy) for group, name, peer, target, heavy in rows}
    for model in ("ResNet-18", "MobileNetV2"):
        for n in (1, 8):
            for way in ("fastcnn.models", "fastcnn.onnx.load"):
                assert by_name[f"{model} b{n} ({way})"] == (
                    "inference 3x224x224", "onnxruntime", 1.0, True)
    assert by_name["MobileNetV2 train step 3x64x64 b32 SGD-momentum"] == (
        "train step", "torch", 1.3, True)
    assert by_name["ResNet-18 train step 3x32x32 b64 SGD-momentum"] == (
        "train step", "torch", 1.3, True)
    for opt in ("SGD-momentum", "Adam"):
        assert by_name[f"LeNet-5 train step b64 {opt}"][2] == 3.0
        assert by_name[f"CIFAR-net train step b64 {opt}"][2] == 1.5


def test_misses_list_each_row_against_its_own_target():
    out = run_in_bench("""if True:
        import json, compare, harness
        Case = harness.Case
        cases = {
            "train step": [Case("train step", "LeNet-5 step", "torch", None, target=3.0),
                           Case("train step", "CIFAR-net step", "torch", None, target=1.5),
                           Case("train step", "MobileNetV2 step", "torch", None, target=1.3)],
            "inference 3x224x224": [Case("inference 3x224x224", "ResNet-18 b8", "onnxruntime",
                                         None, items=8, target=1.0, heavy=True),
                                    Case("inference 3x224x224", "ResNet-18 b1", "onnxruntime",
                                         None, items=1, target=1.0, heavy=True)],
            "conv fwd": [Case("conv fwd", "conv big", "torch", None, flops=1e9, target=1.0,
                              large=True)],
        }
        def ok(peer, ours):
            return {"status": "ok", "peer": peer, "fastcnn": ours, "rounds": 3}
        results = {
            ("LeNet-5 step vs torch", 1): ok(2.5, 1.0),           # 2.5 < 3: miss
            ("CIFAR-net step vs torch", 1): ok(1.6, 1.0),         # 1.6 >= 1.5
            ("MobileNetV2 step vs torch", 1): ok(1.4, 1.0),       # 1.4 >= 1.3
            ("MobileNetV2 step vs torch", 2): ok(1.2, 1.0),       # 1.2 < 1.3: miss
            ("ResNet-18 b8 vs onnxruntime", 1): ok(0.5, 1.0),     # miss
            ("ResNet-18 b8 vs onnxruntime", 2): {"status": "failed", "reason": "x"},
            ("ResNet-18 b1 vs onnxruntime", 1): ok(1.2, 1.0),
            ("ResNet-18 b1 vs onnxruntime", 2): ok(1.5, 1.25),    # batch 1 slower at 2T: miss
            ("conv big vs torch", 1): ok(0.024, 0.02),            # 50 GFLOP/s of 100: 50%
            ("conv big vs torch", 2): ok(0.018, 0.015),           # 33%, 1.33x from 1 thread
        }
        peaks = {1: 100.0, 2: 200.0}
        cells = [compare.ratio_cell(c, results[c.key, 1]) for c in cases["train step"]]
        print(json.dumps({"misses": compare.misses(cases, results, [1, 2], peaks),
                          "line": compare.misses_line(cases, results, [1, 2], peaks),
                          "none": compare.misses_line(cases, {}, [1, 2], peaks),
                          "cells": cells}))
    """)
    assert out["misses"] == [
        "LeNet-5 step 1T: 2.50 < 3.0",
        "MobileNetV2 step 2T: 1.20 < 1.3",
        "ResNet-18 b8 vs onnxruntime 1T: 0.50 < 1.0",
        "ResNet-18 b1 vs onnxruntime 2T/1T: 0.80 < 1.00",
        "conv big 1T: 50% of peak < 85%",
        "conv fwd geomean 1T: 1.20 < 1.3",
        "conv big 2T: 33% of peak < 85%",
        "conv fwd geomean 2T: 1.20 < 1.3",
        "conv big 2T/1T: 1.33 < 1.85",
    ]
    assert out["line"] == "**Below target (9):** " + "; ".join(out["misses"]) + "."
    assert out["none"] == "**Below target:** nothing measured is below its target."
    assert out["cells"] == ["2.50 (miss)", "1.60", "1.40"]


def test_batch_one_speedup_comes_from_fastcnn_alone_interleaved():
    out = run_in_bench("""if True:
        import json, compare, harness
        Case = harness.Case
        b1 = Case("inference", "LeNet-5 inference b1", "onnxruntime", None, items=1, target=1.0)
        heavy_b1 = Case("inference 3x224x224", "ResNet-18 b1", "onnxruntime", None, items=1,
                        target=1.0, heavy=True)
        b32 = Case("inference", "LeNet-5 inference b32", "onnxruntime", None, items=32,
                   target=1.0)
        def ok(peer, ours):
            return {"status": "ok", "peer": peer, "fastcnn": ours, "rounds": 3}
        rows = {(b1.key, 1): ok(2.0, 1.0), (b1.key, 2): ok(2.0, 1.25)}
        paired = dict(rows)
        paired[b1.key, "1-2"] = ok(0.99, 1.0)     # 1 thread 1.0, 2 threads 0.99
        failed = dict(rows)
        failed[b1.key, "1-2"] = {"status": "failed", "reason": "x"}
        pair_only = {(b1.key, 1): {"status": "failed", "reason": "x"}, (b1.key, "1-2"): ok(1.0, 1.1)}
        cases = [b1, heavy_b1, b32]
        print(json.dumps({
            "cells": [compare.speedup_cell(b1, r, [1, 2]) for r in (rows, paired, pair_only)],
            "rows": compare.speedup(b1, rows, [1, 2]),
            "paired": compare.speedup(b1, paired, [1, 2]),
            "failed": compare.speedup(b1, failed, [1, 2]),
            "misses": compare.misses({"inference": [b1]}, paired, [1, 2], {1: 1.0, 2: 2.0}),
            "full": compare.thread_pair_rows(cases, compare.parse_args([])),
            "quick": compare.thread_pair_rows(cases, compare.parse_args(["--quick"])),
            "one": compare.thread_pair_rows(cases, compare.parse_args(["--threads", "2"]))}))
    """)
    assert out["cells"] == ["0.80 (miss)", "1.01", "1.10"]
    assert out["rows"] == 0.8
    assert out["paired"] == pytest.approx(1 / 0.99)
    assert out["failed"] == 0.8
    assert out["misses"] == []
    assert out["full"] == [["LeNet-5 inference b1 vs onnxruntime", "1-2"],
                           ["ResNet-18 b1 vs onnxruntime", "1-2"]]
    assert out["quick"] == [["LeNet-5 inference b1 vs onnxruntime", "1-2"]]
    assert out["one"] == []


def test_heavy_rows_get_fewer_rounds_and_quick_mode_one_thread_count():
    out = run_in_bench("""if True:
        import json, compare, harness
        heavy = harness.Case("g", "h", "torch", None, heavy=True)
        light = harness.Case("g", "l", "torch", None)
        quick, full = (compare.parse_args(a) for a in (["--quick"], []))
        print(json.dumps({
            "settings": {m: [compare.settings_for(c, m) for c in (light, heavy)]
                         for m in ("quick", "full")},
            "threads": [compare.row_threads(c, a) for a in (quick, full) for c in (light, heavy)],
            "SETTINGS": compare.SETTINGS}))
    """)
    for mode in ("quick", "full"):
        light, heavy = out["settings"][mode]
        assert light == out["SETTINGS"][mode]
        assert heavy["max_rounds"] <= light["max_rounds"]
        assert heavy["warmup"] <= light["warmup"]
    assert out["settings"]["full"][1]["floor_rounds"] < out["SETTINGS"]["full"]["floor_rounds"]
    assert out["threads"] == [[1, 2], [2], [1, 2], [1, 2]]


def test_peer_defaults_mode_sets_no_idle_thread_variables():
    out = run_in_bench("""if True:
        import json, os, compare
        sleep, defaults = (compare.parse_args(a) for a in ([], ["--peer-defaults"]))
        print(json.dumps({
            "sleep": {k: v for k, v in compare.child_env(sleep, ()).items()
                      if k in compare.IDLE_THREAD_VARIABLES},
            "defaults": [k for k in compare.child_env(defaults, ("OPENBLAS_CORETYPE",))
                         if k in compare.IDLE_THREAD_VARIABLES + ("OPENBLAS_CORETYPE",)],
            "outs": [os.path.basename(a.out) for a in (sleep, defaults)],
            "text": compare.settings_text(defaults, {"openmp": "libgomp.so.1"})}))
    """, OMP_WAIT_POLICY=None, GOMP_SPINCOUNT="1000", OPENBLAS_THREAD_TIMEOUT=None,
        OPENBLAS_CORETYPE="Haswell")
    assert out["sleep"] == {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4",
                            "GOMP_SPINCOUNT": "1000"}
    assert out["defaults"] == []
    assert out["outs"] == ["RESULTS.md", "RESULTS-peer-defaults.md"]
    assert out["text"].startswith("peers' defaults (--peer-defaults)")
    assert "GOMP_SPINCOUNT removed" in out["text"]
    assert "libgomp.so.1" in out["text"]


def test_peer_defaults_loads_the_peers_openmp_runtime_first():
    """torch and fastcnn share one libgomp per process: with --peer-defaults
    it is the copy torch ships (loaded at torch's defaults), otherwise
    fastcnn's (loaded with PASSIVE)."""
    torch = pytest.importorskip("torch")
    shipped = [f for f in os.listdir(os.path.join(os.path.dirname(torch.__file__), "lib"))
               if f.startswith("libgomp")]
    if not shipped:
        pytest.skip("this torch build ships no libgomp of its own")
    code = """if True:
        import json, sys
        sys.argv[1:] = {argv!r}
        import compare, torch
        print(json.dumps(compare.openmp_runtimes()))
    """
    defaults = run_in_bench(code.format(argv=["--peer-defaults"]))
    sleep = run_in_bench(code.format(argv=[]))
    assert defaults.startswith("torch/lib/libgomp"), defaults
    assert "torch/" not in sleep and "libgomp" in sleep, sleep
    assert "," not in defaults and "," not in sleep       # one runtime each


def test_update_check_catches_one_wrong_tensor_but_not_rounding_noise():
    out = run_in_bench("""if True:
        import json
        import numpy as np
        from bench_models import update_check
        r = np.random.default_rng(0)
        before = {"conv.weight": r.standard_normal(1000).astype(np.float32),
                  "bn.bias": np.zeros(8, np.float32), "bn.running_mean": np.zeros(8, np.float32),
                  "bn.num_batches_tracked": np.zeros((), np.int64)}
        change = {"conv.weight": r.normal(0, 1e-2, 1000), "bn.bias": r.normal(0, 3e-5, 8),
                  "bn.running_mean": r.normal(0, 1e-1, 8), "bn.num_batches_tracked": 1}
        theirs = {k: before[k] + change[k] for k in before}
        def outcome(ours):
            try:
                update_check(before, ours, theirs)
                return "ok"
            except AssertionError as e:
                return str(e).split(":")[0]
        noisy = {k: v + 1e-6 * r.standard_normal(np.shape(v)) for k, v in theirs.items()}
        # small enough to pass the check of all tensors as one vector, not its own
        wrong_bias = dict(theirs, **{"bn.bias": before["bn.bias"] - change["bn.bias"]})
        lost_step = dict(theirs, **{"conv.weight": before["conv.weight"]})
        tiny = dict(change, **{"bn.bias": r.normal(0, 1e-9, 8)})   # rounding noise of a sum
        theirs_tiny = {k: before[k] + tiny[k] for k in before}
        ours_tiny = dict(theirs_tiny, **{"bn.bias": before["bn.bias"] + 1e-6})
        print(json.dumps([outcome(theirs), outcome(noisy), outcome(wrong_bias),
                          outcome(lost_step)]
                         + [update_check(before, ours_tiny, theirs_tiny) or "ok"]))
    """)
    assert out == ["ok", "ok", "bn.bias", "all tensors' change in one step", "ok"]
