"""Candidate selective-scan kernels (models/scan_triton_next.py) timed side by side with today's (scan_triton.py).

    python3 benchmarks/scan_variants.py              # every candidate; about 40 s on one H200
    python3 benchmarks/scan_variants.py --jobs 0     # compile in this process only (slower, simpler)
    TRITON_INTERPRET=1 python3 benchmarks/scan_variants.py --shape 2 9 40 16 --rounds 1 --reps 1  # CPU smoke test

At mamba_small's shape, (b 1024, L 64, d 384, n 16), bf16 activations laid out as the model passes them (Δ, B, C
column slices of x_proj's output, z a slice of in_proj's), fp32 A, D and Δ bias. Prints, for each forward and
each backward candidate, the median time per call over interleaved rounds (CUDA events, several calls per
measurement), the speedup against today's kernel, the bandwidth its essential traffic would need at that speed
(inputs read once, outputs and checkpoints written once) against the card's 4.3 TB/s, and its largest
difference from today's results on the same inputs (relative L2 over every output and gradient, and max abs).
A candidate that fails to compile or run, or differs by more than ``--tol``, is reported and left out of the
summary. Every backward candidate reads the checkpoints of today's forward (all forwards write that layout).
The summary times the best forward followed by the best backward against today's pair, and checks that pair
against the float64 reference at a small shape (the same check as tests/test_scan.py's CUDA test).

Compilation: Triton compiles each kernel on its first launch (1-5 s each). With ``--jobs N`` (default 8) worker
processes launch each candidate once first (one process per candidate), so they compile in parallel into
Triton's on-disk cache and the timing process only loads them. A candidate that raises there (compile error,
CUDA error) is reported and skipped; one without a result within 60 s is compiled by the timing process.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

# run as `python3 benchmarks/scan_variants.py` from a checkout: this checkout's src/ first
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

SHAPE = (1024, 64, 384, 16)  # mamba_small: batch, tokens, d_inner, d_state
PEAK_TBS = 4.3  # H200 HBM3e, TB/s


def make_inputs(b, l, d, n, device="cuda", dtype=torch.bfloat16, seed=0):
    """The scan's arguments as SelectiveSSM passes them under bf16 autocast, with its initial parameters."""
    g = torch.Generator(device=device).manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, device=device)  # noqa: E731
    u = r(b, l, d).to(dtype)  # the conv output: contiguous
    xp = r(b, l, d + 2 * n).to(dtype)  # x_proj's output: [Δ | B | C]
    delta, B, C = xp.split([d, n, n], dim=-1)
    z = r(b, l, 2 * d).to(dtype)[..., d:]  # in_proj's second half
    A = -torch.arange(1, n + 1, dtype=torch.float32, device=device).repeat(d, 1)  # -exp(log(1..n))
    D = torch.ones(d, device=device)
    dt = torch.exp(torch.rand(d, generator=g, device=device) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    bias = dt + torch.log(-torch.expm1(-dt))  # inverse softplus, as the model's dt_bias
    gout = r(b, l, d).to(dtype)
    return (u, delta, A, B, C, D, z, bias), gout


def essential_bytes(b, l, d, n, n_chunks):
    """Bytes each direction must move at least: bf16 activations once, fp32 checkpoints once."""
    act, bc, ck = b * l * d * 2, b * l * n * 2, b * n_chunks * d * n * 4
    fwd = 3 * act + 2 * bc + act + ck  # u, Δ, z, B, C in; y, checkpoints out
    bwd = 4 * act + 2 * bc + ck + 3 * act + 2 * bc  # u, Δ, z, dy, B, C, checkpoints in; du, dΔ, dz, dB, dC out
    return fwd, bwd


def variants():
    """name -> (direction, callable(args, gout, ck) -> tuple of result tensors)."""
    from mambaprune.models import scan_triton as st
    from mambaprune.models import scan_triton_next as nx

    out = {"fwd:today": ("fwd", lambda a, g, ck: st._launch_fwd(*a)),
           "bwd:today": ("bwd", lambda a, g, ck: st._launch_bwd(g, *a, ck))}
    for name, cfg in nx.FWD_CANDIDATES.items():
        out[f"fwd:{name}"] = ("fwd", lambda a, g, ck, cfg=cfg: nx.launch_fwd(*a, cfg))
    for name, cfg in nx.BWD_CANDIDATES.items():
        out[f"bwd:{name}"] = ("bwd", lambda a, g, ck, cfg=cfg: nx.launch_bwd(g, *a, ck, cfg))
    return out


# ---- parallel first launch (compilation) in worker processes
_W = {}


def _device():
    """cuda; cpu only under TRITON_INTERPRET=1 (a smoke test of this script: its timings mean nothing)."""
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    sys.exit("scan_variants.py needs a CUDA GPU (or TRITON_INTERPRET=1 for a CPU smoke test)")


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def _worker_init(shape):
    """Inputs and today's checkpoints for one worker; an error is kept and answered to its task (an initializer
    that raises would make the pool respawn workers forever)."""
    try:
        from mambaprune.models import scan_triton as st

        args, gout = make_inputs(*shape, device=_device())
        _W.update(args=args, gout=gout, ck=st._launch_fwd(*args)[1], variants=variants())
    except (Exception, SystemExit) as e:
        _W["init_error"] = _error(e)


def _worker_run(name):
    """(name, error of the candidate or None, error of the worker's setup or None)."""
    if "init_error" in _W:
        return name, None, _W["init_error"]
    try:
        _, fn = _W["variants"][name]
        fn(_W["args"], _W["gout"], _W["ck"])
        _sync()
        return name, None, None
    except Exception as e:  # reported, the candidate is skipped
        return name, _error(e), None


def precompile(names, jobs, shape, deadline_s=60):
    """Launch each candidate once in worker processes: {name: error} for the candidates that raised there. A
    worker that cannot set up (no second CUDA context, say) or a run past the deadline only costs time: those
    candidates are then compiled by the timing process itself."""
    failed = {}
    ctx = multiprocessing.get_context("spawn")
    # one candidate per process: a kernel that corrupts its CUDA context cannot fail the ones after it
    pool = ctx.Pool(min(jobs, len(names)), initializer=_worker_init, initargs=(shape,), maxtasksperchild=1)
    try:
        slow_first = sorted(names, key=lambda name: not name.startswith("bwd"))  # backwards compile longer
        pending = {name: pool.apply_async(_worker_run, (name,)) for name in slow_first}
        t_end = time.time() + deadline_s
        for name, res in pending.items():
            try:
                _, error, setup_error = res.get(timeout=max(1.0, t_end - time.time()))
            except Exception as e:
                print(f"  {name}: no result from the workers ({type(e).__name__}), compiled here instead")
                continue
            if setup_error:
                print(f"  {name}: worker setup failed ({setup_error}), compiled here instead")
            elif error:
                failed[name] = error
    finally:
        pool.terminate()
    return failed


# ---- timing and comparison
def time_calls(fn, reps):
    """Seconds per call: ``reps`` back-to-back calls between two CUDA events."""
    if not torch.cuda.is_available():  # smoke test
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def difference(res, ref):
    """(largest relative L2 difference, largest max-abs difference) over the result tensors present in both."""
    rel, mx = 0.0, 0.0
    for a, b in zip(res, ref):
        if a is None or b is None or a.numel() == 0:
            continue
        a, b = a.double(), b.double()
        rel = max(rel, ((a - b).norm() / b.norm().clamp_min(1e-30)).item())
        mx = max(mx, (a - b).abs().max().item())
    return rel, mx


def check_against_float64(fwd_name, bwd_name):
    """The pair against the float64 reference at a small shape, fp32 (tol 1e-5) and bf16 (2e-2)."""
    import functools

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import test_scan as T

    from mambaprune.models import scan_triton_next as nx

    bwd_cfg = nx.BwdConfig("today") if bwd_name == "today" else nx.BWD_CANDIDATES[bwd_name]
    fn = functools.partial(nx.selective_scan_next, fwd_cfg=nx.FWD_CANDIDATES.get(fwd_name), bwd_cfg=bwd_cfg)
    for dtype, tol in [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)]:
        inputs = {k: v.to(_device()) if v is not None else None for k, v in T.make_inputs(4, 65, 100, 16).items()}
        T.assert_close_to_ref(fn, inputs, tol, dtype)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median)")
    ap.add_argument("--reps", type=int, default=10, help="calls per measurement")
    ap.add_argument("--jobs", type=int, default=8, help="worker processes for the first launches (0: none)")
    ap.add_argument("--tol", type=float, default=1e-2, help="largest relative L2 difference from today's results")
    ap.add_argument("--shape", type=int, nargs=4, default=SHAPE, metavar=("B", "L", "D", "N"))
    a = ap.parse_args()
    t_start = time.time()
    import triton

    import mambaprune
    from mambaprune.models import scan_triton_next as nx

    device = _device()
    print(f"torch {torch.__version__}, Triton {triton.__version__}, mambaprune from {Path(mambaprune.__file__).parent}")
    b, l, d, n = a.shape
    n_chunks = triton.cdiv(l, nx.CHUNK)
    bytes_fwd, bytes_bwd = essential_bytes(b, l, d, n, n_chunks)
    print(f"shape (b, l, d, n) = {tuple(a.shape)}, bf16; essential traffic fwd {bytes_fwd / 1e6:.0f} MB, "
          f"bwd {bytes_bwd / 1e6:.0f} MB (at {PEAK_TBS} TB/s: {bytes_fwd / PEAK_TBS / 1e9:.3f} + "
          f"{bytes_bwd / PEAK_TBS / 1e9:.3f} ms)")

    table = variants()
    failed = {}
    if a.jobs > 0:
        failed.update(precompile(list(table), a.jobs, a.shape))
        print(f"first launches in {min(a.jobs, len(table))} workers: {time.time() - t_start:.1f} s since start")

    print(torch.cuda.get_device_name() if device == "cuda" else "CPU, Triton interpreter")
    args, gout = make_inputs(*a.shape, device=device)
    from mambaprune.models import scan_triton as st

    ref_out = st._launch_fwd(*args)
    ck = ref_out[1]
    ref = {"fwd": ref_out, "bwd": st._launch_bwd(gout, *args, ck)}
    diffs, calls = {}, {}
    for name, (direction, fn) in table.items():
        if name in failed:
            continue
        try:
            res = fn(args, gout, ck)
            _sync()
            diffs[name] = difference(res, ref[direction])
            if diffs[name][0] > a.tol or diffs[name][0] != diffs[name][0]:
                failed[name] = f"differs from today's results: relative L2 {diffs[name][0]:.2e}"
                continue
            calls[name] = lambda fn=fn: fn(args, gout, ck)
        except Exception as e:
            failed[name] = _error(e)
    print(f"compiled and checked: {time.time() - t_start:.1f} s since start")

    times = {name: [] for name in calls}
    for r in range(a.rounds):
        order = list(calls) if r % 2 == 0 else list(calls)[::-1]
        for name in order:
            times[name].append(time_calls(calls[name], a.reps))
    med = {name: statistics.median(ts) for name, ts in times.items()}

    print(f"\n{'candidate':<26}{'ms/layer':>10}{'vs today':>10}{'GB/s':>8}{'of peak':>9}{'rel diff':>11}"
          f"{'max abs':>10}  (median of {a.rounds} rounds x {a.reps} calls; spread = max/min over rounds)")
    for direction, nbytes in (("fwd", bytes_fwd), ("bwd", bytes_bwd)):
        base = med.get(f"{direction}:today")
        for name in table:
            if not name.startswith(direction + ":"):
                continue
            if name in failed:
                print(f"{name:<26}  SKIPPED: {failed[name]}")
                continue
            t = med[name]
            speed = f"{base / t:.2f}x" if base else "-"
            spread = max(times[name]) / min(times[name])
            print(f"{name:<26}{t * 1e3:>10.3f}{speed:>10}{nbytes / t / 1e9:>8.0f}{nbytes / t / 1e12 / PEAK_TBS:>8.0%}"
                  f"{diffs[name][0]:>11.1e}{diffs[name][1]:>10.1e}  spread {spread:.2f}")
        print()

    best = {direction: min((k for k in med if k.startswith(direction + ":")), key=med.get, default=None)
            for direction in ("fwd", "bwd")}
    if best["fwd"] and best["bwd"] and "fwd:today" in calls and "bwd:today" in calls:
        pair_today = lambda: (calls["fwd:today"](), calls["bwd:today"]())  # noqa: E731
        pair_best = lambda: (calls[best["fwd"]](), calls[best["bwd"]]())  # noqa: E731
        t_today, t_best = [], []
        for _ in range(a.rounds):
            t_today.append(time_calls(pair_today, a.reps))
            t_best.append(time_calls(pair_best, a.reps))
        tt, tb = statistics.median(t_today), statistics.median(t_best)
        print(f"fwd+bwd, one layer, timed together: today {tt * 1e3:.3f} ms; {best['fwd']} + {best['bwd']} "
              f"{tb * 1e3:.3f} ms: {tt / tb:.2f}x ({(bytes_fwd + bytes_bwd) / tb / 1e12 / PEAK_TBS:.0%} of "
              f"{PEAK_TBS} TB/s)")
        fwd_name, bwd_name = best["fwd"].split(":")[1], best["bwd"].split(":")[1]
        if (fwd_name, bwd_name) != ("today", "today"):
            try:
                check_against_float64(fwd_name, bwd_name)
                print(f"{fwd_name} + {bwd_name} against float64 at (4, 65, 100, 16), fp32 and bf16: ok")
            except ImportError as e:  # tests/test_scan.py needs pytest
                print(f"{fwd_name} + {bwd_name} against float64: not checked ({e})")
            except Exception:
                print(f"{fwd_name} + {bwd_name} against float64: FAILED\n{traceback.format_exc(limit=2)}")
    print(f"total {time.time() - t_start:.1f} s")


if __name__ == "__main__":
    main()
