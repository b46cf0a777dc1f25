"""Side-by-side inference timing, the one-call inference path (it computes what the eager model computes),
the speedup's spread, the dense timing checked against its history, and queue workers sharing the CPU cores."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

import mambaprune
from mambaprune import create_model
from mambaprune.inference import StaticBatchRunner
from mambaprune.speed import compare_modes, speed_report, speedup_with_spread
from mambaprune.step import capture_cuda_graph
from mambaprune.timing_history import baseline_flag, read_timings, record_timing, timing_key

CPU = torch.device("cpu")


def tiny(seed, **kw):
    torch.manual_seed(seed)
    return create_model("mamba_tiny", **{"embed_dim": 16, "depth": 1, "img_size": 8, **kw})


def test_compare_modes_on_cpu_times_every_model_and_mode():
    out = compare_modes({"dense": tiny(0), "pruned": tiny(1, ssm_widths=[16])}, batch=2, iters=2, device=CPU,
                        rounds=3)
    assert list(out) == ["eager"] and set(out["eager"]) == {"dense", "pruned"}  # CPU default: eager alone
    for r in out["eager"].values():
        assert len(r["rates"]) == 3 and r["img_per_s"] == sorted(r["rates"])[1] > 0
        assert r["spread"] == pytest.approx((max(r["rates"]) - min(r["rates"])) / r["img_per_s"])
        assert r["runs_as"] == "eager" and r["reason"] is None
    with pytest.raises(ValueError, match="'eager', 'compiled', 'one_call'"):
        compare_modes({"a": tiny(0)}, batch=2, iters=1, device=CPU, modes=("graph",))


def test_on_cpu_the_one_call_path_is_reported_as_fallen_back_to_eager_and_timed_once(monkeypatch):
    """On CPU optimize_for_inference runs the eager model: the record says so (runs_as, reason), and beside the
    eager mode it is not timed a second time (its figures are eager's); alone it is timed as what it is."""
    from mambaprune import speed

    calls = []
    real = speed._runner

    def counting_runner(model, mode, *args):
        run = real(model, mode, *args)

        def counted(x):
            calls.append(mode)
            return run(x)

        for attr in ("mode", "reason"):
            if hasattr(run, attr):
                setattr(counted, attr, getattr(run, attr))
        return counted

    monkeypatch.setattr(speed, "_runner", counting_runner)
    both = compare_modes({"a": tiny(0)}, batch=2, iters=3, device=CPU, modes=("eager", "one_call"), rounds=2)
    one_call, eager = both["one_call"]["a"], both["eager"]["a"]
    assert one_call["runs_as"] == "eager" and "CUDA" in one_call["reason"] and eager["reason"] is None
    assert one_call["rates"] == eager["rates"] and calls.count("one_call") == 0  # not timed twice
    assert calls.count("eager") == 1 + 2 * 3  # warm-up, then 2 rounds of 3 batches
    calls.clear()
    alone = compare_modes({"a": tiny(0)}, batch=2, iters=3, device=CPU, modes=("one_call",), rounds=2)
    assert alone["one_call"]["a"]["runs_as"] == "eager" and calls.count("one_call") == 1 + 2 * 3


def test_one_call_path_on_cpu_is_the_eager_model_and_says_why(capsys):
    model = tiny(0).train()
    predict = mambaprune.optimize_for_inference(model, batch_size=4)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "running the model eagerly" in lines[0] and "CUDA" in lines[0]
    assert predict.mode == "eager" and predict.reason and not model.training
    x = torch.rand(6, 3, 8, 8)
    with torch.no_grad():
        expected = model(x)
    assert torch.equal(predict(x), expected)
    with pytest.raises(ValueError, match="batch_size"):
        mambaprune.optimize_for_inference(model, batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        mambaprune.optimize_for_inference(model, batch_size=2, dtype=torch.int8)


def test_static_batch_runner_pads_splits_and_hands_out_fresh_tensors():
    """The one-call path's batching, with a plain forward into a static output standing in for the graph replay
    (what a replay does): every batch size gives the model's own logits, and a result survives the next call."""
    model = tiny(0).double().eval()
    model.set_scan_impl("ref")
    static_x = torch.zeros(4, 3, 8, 8, dtype=torch.float64)
    static_out = torch.empty(4, 10, dtype=torch.float64)

    def run_static():
        with torch.no_grad():
            static_out.copy_(model(static_x))
        return static_out

    predict = StaticBatchRunner(run_static, static_x)
    x = torch.rand(11, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = torch.cat([model(x[i:i + 1]) for i in range(11)])
    first = predict(x[:3])  # padded: row 3 of the static input is stale and dropped
    kept = first.clone()
    for n in (1, 4, 11):  # smaller, equal, and split into 4 + 4 + 3
        y = predict(x[:n])
        assert y.shape == (n, 10) and (y - expected[:n]).abs().max().item() <= 1e-12
    assert torch.equal(first, kept) and (first - expected[:3]).abs().max().item() <= 1e-12
    with pytest.raises(ValueError, match=r"shaped \(n, 3, 8, 8\)"):
        predict(torch.rand(2, 3, 16, 16, dtype=torch.float64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_matches_eager():
    model = tiny(0).cuda().eval()
    x = torch.rand(3, 3, 8, 8, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, cache_enabled=False):
        replay = capture_cuda_graph(lambda: model(x), torch.device("cuda"))
        x.copy_(torch.rand_like(x))  # the graph reads x's memory: new values, same tensor
        torch.testing.assert_close(replay(), model(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile", [False, True])
def test_one_call_path_on_cuda_equals_eager(compile):
    """Captured at batch 8: batch 8 gives eager's logits (same kernels); batches 3 and 19 (padded, split) agree
    with eager at those sizes to bf16 rounding (cuBLAS may pick other kernels for other batch sizes)."""
    model, _ = mambaprune.prune_model(tiny(0, depth=2, d_state=8), 0.5, 0.5, state_ratio=0.5, embed_ratio=0.25,
                                      min_keep=4, round_to=4)
    model = model.cuda().eval()
    predict = mambaprune.optimize_for_inference(model, batch_size=8, compile=compile)
    assert predict.mode == "cuda_graph"

    def eager(x):
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            return model(x)

    x = torch.rand(19, 3, 8, 8, device="cuda")
    if not compile:
        assert torch.equal(predict(x[:8]), eager(x[:8]))
    for n in (8, 3, 19):
        torch.testing.assert_close(predict(x[:n]).float(), eager(x[:n]).float(), rtol=2e-2, atol=2e-2)


def test_speedup_is_the_median_of_per_round_ratios_with_their_spread():
    rates = {"dense": [100.0, 50.0, 100.0], "pruned": [150.0, 100.0, 160.0]}  # round 2: both slowed down
    speedup, spread = speedup_with_spread(rates, "pruned", "dense")
    assert speedup == 1.6  # ratios 1.5, 2.0, 1.6; a ratio of medians would say 150 / 100 = 1.5
    assert spread == pytest.approx((2.0 - 1.5) / 1.6)


def _fake_modes(per_mode: dict, runs_as: dict | None = None):
    """A stand-in for compare_modes: per mode, the dense and pruned per-round rates given."""
    def fake(models, batch, iters, device, modes, rounds):
        assert tuple(modes) == tuple(per_mode)
        return {mode: {name: {"rates": r, "img_per_s": sorted(r)[len(r) // 2], "spread": 0.0,
                              "runs_as": (runs_as or {}).get(mode, mode), "reason": None}
                       for name, r in rates.items()}
                for mode, rates in per_mode.items()}
    return fake


def test_speed_report_publishes_the_speedup_unless_the_dense_timing_is_off_its_history(monkeypatch, tmp_path):
    """What the evaluate stage publishes: the headline mode's (one_call) rates (medians), the median per-round
    speedup and its spread, and its dense rate checked against (then added to) its history; a disturbed dense
    timing withholds the speedup of every mode."""
    from mambaprune import speed

    rates = {"eager": {"dense": [10.0, 10.0, 10.0], "pruned": [12.0, 11.0, 13.0]},
             "one_call": {"dense": [100.0, 50.0, 100.0], "pruned": [150.0, 100.0, 160.0]}}
    monkeypatch.setattr(speed, "compare_modes", _fake_modes(rates))
    dense, pruned, history = tiny(0), tiny(1), tmp_path / "timings.jsonl"
    report = speed_report(dense, pruned, 2, 1, CPU, history, rounds=3)
    assert {k: v for k, v in report.items() if k != "speed_by_mode"} == {
        "img_per_s": 150.0, "dense_img_per_s": 100.0, "speedup": 1.6,
        "speedup_spread": pytest.approx((2.0 - 1.5) / 1.6), "speed_flag": None, "threads": torch.get_num_threads()}
    assert report["speed_by_mode"]["eager"]["speedup"] == 1.2  # ratios 1.2, 1.1, 1.3
    key = timing_key(dense, 2, CPU, cuda_graph=False)
    assert read_timings(history, key) == [100.0]  # the headline mode's dense rate, recorded for the next run
    for _ in range(4):
        record_timing(history, key, 1000.0)  # the usual rate: this run's 100 img/s is 10x off
    report = speed_report(dense, pruned, 2, 1, CPU, history, rounds=3)
    assert report["speedup"] is None and "speedup is withheld" in report["speed_flag"]
    assert [m["speedup"] for m in report["speed_by_mode"].values()] == [None, None]
    assert report["img_per_s"] == 150.0 and read_timings(history, key)[-1] == 100.0
    with pytest.raises(ValueError, match="must include 'one_call'"):
        speed_report(dense, pruned, 2, 1, CPU, history, modes=("eager",))


def test_three_mode_record_has_every_modes_figures(monkeypatch, tmp_path):
    """Every mode gets the headline's names with its own figures (exact), plus what it ran as; the headline is
    the one-call path's, its history key a CUDA graph's when it ran as one."""
    from mambaprune import speed

    rates = {"eager": {"dense": [10.0, 20.0, 10.0], "pruned": [15.0, 20.0, 11.0]},
             "compiled": {"dense": [40.0, 40.0, 40.0], "pruned": [60.0, 50.0, 80.0]},
             "one_call": {"dense": [90.0, 100.0, 110.0], "pruned": [270.0, 300.0, 330.0]}}
    monkeypatch.setattr(speed, "compare_modes", _fake_modes(rates, runs_as={"one_call": "cuda_graph"}))
    report = speed_report(tiny(0), tiny(1), 2, 1, CPU, tmp_path / "t.jsonl", modes=tuple(rates), rounds=3)
    assert report["speed_by_mode"] == {
        "eager": {"dense_img_per_s": 10.0, "img_per_s": 15.0, "speedup": 1.1,  # ratios 1.5, 1.0, 1.1
                  "speedup_spread": pytest.approx(0.5 / 1.1), "runs_as": "eager", "reason": None},
        "compiled": {"dense_img_per_s": 40.0, "img_per_s": 60.0, "speedup": 1.5,
                     "speedup_spread": pytest.approx(0.75 / 1.5), "runs_as": "compiled", "reason": None},
        "one_call": {"dense_img_per_s": 100.0, "img_per_s": 300.0, "speedup": pytest.approx(3.0),
                     "speedup_spread": pytest.approx(0.0, abs=1e-12), "runs_as": "cuda_graph", "reason": None},
    }
    assert (report["speedup"], report["img_per_s"], report["dense_img_per_s"]) == (pytest.approx(3.0), 300.0, 100.0)
    assert read_timings(tmp_path / "t.jsonl", timing_key(tiny(0), 2, CPU, cuda_graph=True)) == [100.0]


def test_speed_report_on_cpu_times_eager_and_reports_one_call_as_its_fallback(tmp_path):
    report = speed_report(tiny(0), tiny(1, ssm_widths=[8]), 2, 1, CPU, tmp_path / "t.jsonl", rounds=1)
    eager, one_call = report["speed_by_mode"]["eager"], report["speed_by_mode"]["one_call"]
    assert one_call["runs_as"] == "eager" and "no CUDA device" in one_call["reason"]
    assert {k: v for k, v in one_call.items() if k not in ("runs_as", "reason")} == {
        k: v for k, v in eager.items() if k not in ("runs_as", "reason")}
    assert report["speedup"] == one_call["speedup"] > 0 and report["img_per_s"] == one_call["img_per_s"]


def test_a_dense_timing_far_off_its_history_is_flagged():
    history = [2900.0, 2950.0, 2911.0]
    assert baseline_flag(2800.0, history) is None
    assert baseline_flag(1500.0, history) is None  # 0.52x: within the 2x tolerance
    flag = baseline_flag(385.0, history)  # the two-workers case
    assert flag and "385 img/s" in flag and "0.13x" in flag and "2,911 img/s" in flag
    assert baseline_flag(6000.0, history)  # too fast is as suspicious (the history was the disturbed one)
    assert baseline_flag(385.0, []) is None  # nothing to compare with
    assert baseline_flag(385.0, [10.0] * 5 + history) is not None  # only the last 5 count: median 2900


def test_timings_round_trip_per_key_and_survive_a_cut_line(tmp_path):
    path = tmp_path / ".cache" / "timings.jsonl"
    assert read_timings(path, "k") == []
    record_timing(path, "k", 100.0)
    record_timing(path, "other", 5.0)
    with open(path, "a") as f:
        f.write('{"key": "k", "img_per')  # a crash mid-line
    record_timing(path, "k", 120.0)
    assert read_timings(path, "k") == [100.0, 120.0]
    params = sum(p.numel() for p in tiny(0).parameters())
    key = timing_key(tiny(0), 64, torch.device("cpu"), cuda_graph=True)
    assert key == f"cpu x{torch.get_num_threads()}|batch 64|graph False|params {params}"


def test_queue_workers_share_the_cores(monkeypatch, tmp_path):
    from mambaprune import train

    threads = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    try:
        monkeypatch.setattr(train, "_queue_workers", lambda: 2)
        assert train.share_cpu_cores() == threads  # a `dvc repro` beside a queue keeps its threads (and results)
        queued = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc"
        queued.mkdir(parents=True)
        monkeypatch.chdir(queued)  # where the queue runs an experiment
        monkeypatch.setattr(train, "_queue_workers", lambda: 2)
        assert train.share_cpu_cores() == max(1, cores // 2)
        monkeypatch.setattr(train, "_queue_workers", lambda: 4 * cores)
        assert train.share_cpu_cores() == 1
        torch.set_num_threads(threads)
        monkeypatch.setattr(train, "_queue_workers", lambda: 1)  # one worker or none: left as it is
        assert train.share_cpu_cores() == threads
        monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
        monkeypatch.setattr(train, "_queue_workers", lambda: 2)  # the user's explicit choice wins
        assert train.share_cpu_cores() == threads
    finally:
        torch.set_num_threads(threads)


def test_queue_workers_are_counted_from_their_command_line(tmp_path):
    from mambaprune import train

    before = train._queue_workers()
    fake = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "exp", "queue-worker", "x@localhost"])
    try:
        for _ in range(50):  # the new process's cmdline appears once exec is done
            if train._queue_workers() == before + 1:
                break
            time.sleep(0.05)
        assert train._queue_workers() == before + 1
    finally:
        fake.kill()
        fake.wait()
