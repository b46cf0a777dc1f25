"""Selective-scan speed: fwd+bwd time per call, ref vs cpu on CPU and ref vs triton on CUDA, with ratios; on
CUDA also the causal conv1d + SiLU, nn.Conv1d (the model's CPU path) vs the fused Triton kernel, and the residual
add + LayerNorm, plain ops vs the fused Triton kernel.

    PYTHONPATH=src python benchmarks/scan_bench.py            # both sections (CUDA only when available)
    PYTHONPATH=src python benchmarks/scan_bench.py --sweep    # also try Triton block/warp configurations

GPU shapes are mamba_small's (batch 1024, L=64, d_inner=384, n=16); CPU shapes are smaller.
"""

from __future__ import annotations

import argparse
import time

import torch

from mambaprune.models.scan import selective_scan_ref
from mambaprune.models.scan_cpu import selective_scan_cpu

CPU_SHAPES = [(64, 64, 192, 16), (64, 64, 384, 16), (128, 16, 64, 8)]
GPU_SHAPES = [(1024, 64, 384, 16)]


def make_args(b, l, d, n, device, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    act = [r(b, l, d), r(b, l, d) - 1.0, r(b, l, n), r(b, l, n), r(b, l, d)]  # u, Δ_raw, B, C, z
    u, delta, B, C, z = (t.to(dtype).requires_grad_() for t in act)
    A = (-torch.exp(r(d, n) * 0.5)).requires_grad_()
    D, bias = r(d).requires_grad_(), (r(d) * 0.5).requires_grad_()
    return (u, delta, A, B, C, D, z, bias)


def time_call(fn, args, reps, cuda):
    """Best-of-``reps`` seconds for forward + backward (CUDA events when on GPU)."""
    gout = torch.randn_like(args[0])

    def step():
        for a in args:
            a.grad = None
        fn(*args).backward(gout)

    return time_step(step, reps, cuda)


def time_step(step, reps, cuda):
    """Best-of-``reps`` seconds of ``step()`` after one warm-up call."""
    step()
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return min(times)


def bench_cpu(reps):
    print(f"== CPU ({torch.get_num_threads()} threads), fp32, fwd+bwd per call")
    print(f"{'shape (b, l, d, n)':<24}{'ref ms':>10}{'cpu ms':>10}{'ref/cpu':>9}")
    for shape in CPU_SHAPES:
        args = make_args(*shape, "cpu", torch.float32)
        t_ref = time_call(selective_scan_ref, args, max(1, reps // 2), False)
        t_cpu = time_call(selective_scan_cpu, args, reps, False)
        print(f"{str(shape):<24}{t_ref * 1e3:>10.1f}{t_cpu * 1e3:>10.1f}{t_ref / t_cpu:>8.1f}x")


def bench_gpu(reps, sweep):
    from mambaprune.models import scan_triton

    print(f"== CUDA ({torch.cuda.get_device_name()}), fwd+bwd per call")
    print(f"{'shape (b, l, d, n)':<24}{'dtype':<10}{'ref ms':>10}{'triton ms':>11}{'fwd ms':>9}{'ref/triton':>12}")
    for shape in GPU_SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            args = make_args(*shape, "cuda", dtype)
            t_ref = time_call(selective_scan_ref, args, 2, True)
            t_tri = time_call(scan_triton.selective_scan_triton, args, reps, True)
            with torch.no_grad():
                t_fwd = time_call(lambda *a: scan_triton.selective_scan_triton(*a).requires_grad_(), args, reps, True)
            print(f"{str(shape):<24}{str(dtype)[6:]:<10}{t_ref * 1e3:>10.2f}{t_tri * 1e3:>11.3f}"
                  f"{t_fwd * 1e3:>9.3f}{t_ref / t_tri:>11.1f}x")
        print(f"  -> 24 scan calls (mamba_small, one direction per block): {24 * t_tri * 1e3:.1f} ms fwd+bwd per step")
    bench_conv(reps, sweep)
    bench_add_norm(reps, sweep)
    if sweep:
        sweep_triton(scan_triton, reps)


def bench_conv(reps, sweep):
    """Causal conv1d + SiLU on mamba_small's (b, l, d_inner) x half of in_proj, bf16 as under autocast."""
    from mambaprune.models import conv_triton
    from mambaprune.models.mamba import SelectiveSSM

    b, l, d, _ = GPU_SHAPES[0]
    ssm = SelectiveSSM(d, 16).cuda()
    x = torch.randn(b, l, 2 * d, device="cuda", dtype=torch.bfloat16)[..., :d].detach().requires_grad_()
    w, bias = ssm.conv1d.weight.squeeze(1), ssm.conv1d.bias

    def torch_path(x, *_):
        with torch.autocast("cuda", torch.bfloat16):
            return ssm.conv_silu(x)

    args = (x, ssm.conv1d.weight, bias)
    t_ref = time_call(torch_path, args, reps, True)
    t_tri = time_call(lambda x, *_: conv_triton.causal_conv1d_silu_triton(x, w, bias), args, reps, True)
    print(f"conv1d+SiLU {(b, l, d)} bf16 fwd+bwd: nn.Conv1d {t_ref * 1e3:.3f} ms, triton {t_tri * 1e3:.3f} ms, "
          f"{t_ref / t_tri:.1f}x")
    if sweep:
        default = (conv_triton.BLOCK_L, conv_triton.BLOCK_D, conv_triton.WARPS)
        for cfg in [(8, 128, 4), (16, 64, 2), (16, 64, 4), (16, 128, 4), (32, 32, 4), (32, 64, 4), (64, 64, 4)]:
            conv_triton.BLOCK_L, conv_triton.BLOCK_D, conv_triton.WARPS = cfg
            t = time_call(lambda x, *_: conv_triton.causal_conv1d_silu_triton(x, w, bias), args, reps, True)
            print(f"sweep conv BLOCK_L={cfg[0]:<3} BLOCK_D={cfg[1]:<4} warps={cfg[2]}  fwd+bwd {t * 1e3:.3f} ms")
        conv_triton.BLOCK_L, conv_triton.BLOCK_D, conv_triton.WARPS = default


def bench_add_norm(reps, sweep):
    """Residual add + LayerNorm at mamba_small's (b, l, dim), as run under bf16 autocast: fp32 residual stream,
    bf16 branch; the plain ops (add, fp32 LayerNorm, cast for the next matmul) vs the fused Triton kernel."""
    from mambaprune.models import norm_triton

    b, l = GPU_SHAPES[0][:2]
    dim = 192
    resid = torch.randn(b, l, dim, device="cuda").requires_grad_()
    branch = torch.randn(b, l, dim, device="cuda", dtype=torch.bfloat16).requires_grad_()
    norm = torch.nn.LayerNorm(dim).cuda()
    gy = torch.randn(b, l, dim, device="cuda", dtype=torch.bfloat16)
    gres = torch.randn(b, l, dim, device="cuda")

    def plain():
        new = resid + branch
        return torch.nn.functional.layer_norm(new, (dim,), norm.weight, norm.bias).to(torch.bfloat16), new

    def fused():
        return norm_triton.add_layer_norm_triton(resid, branch, norm.weight, norm.bias, norm.eps, torch.bfloat16)

    def step(fn):
        resid.grad = branch.grad = norm.weight.grad = norm.bias.grad = None
        torch.autograd.backward(fn(), (gy, gres))

    t_plain, t_fused = time_step(lambda: step(plain), reps, True), time_step(lambda: step(fused), reps, True)
    print(f"add+LayerNorm {(b, l, dim)} fp32 stream + bf16 branch, fwd+bwd: plain ops {t_plain * 1e3:.3f} ms, "
          f"triton {t_fused * 1e3:.3f} ms, {t_plain / t_fused:.1f}x  (48 per mamba_small step)")
    if sweep:
        default = (norm_triton.BLOCK_M, norm_triton.WARPS)
        for cfg in [(1, 2), (2, 2), (4, 2), (4, 4), (8, 4), (8, 8), (16, 8)]:
            norm_triton.BLOCK_M, norm_triton.WARPS = cfg
            t = time_step(lambda: step(fused), reps, True)
            print(f"sweep add+norm BLOCK_M={cfg[0]:<3} warps={cfg[1]}  fwd+bwd {t * 1e3:.3f} ms")
        norm_triton.BLOCK_M, norm_triton.WARPS = default


def sweep_triton(st, reps):
    """Forward configs timed alone, then backward configs (fwd+bwd, forward at its default)."""
    args = make_args(*GPU_SHAPES[0], "cuda", torch.bfloat16)
    names = ("FWD_BLOCK_D", "FWD_WARPS", "BWD_BLOCK_D", "BWD_WARPS", "CHUNK")
    default = {k: getattr(st, k) for k in names}
    for block, warps in [(16, 1), (32, 1), (32, 2), (64, 1), (64, 2), (128, 2), (128, 4)]:
        st.FWD_BLOCK_D, st.FWD_WARPS = block, warps
        with torch.no_grad():
            t = time_call(lambda *a: st.selective_scan_triton(*a).requires_grad_(), args, reps, True)
        print(f"sweep bf16 fwd BLOCK_D={block:<4} warps={warps}  fwd {t * 1e3:.3f} ms")
    st.FWD_BLOCK_D, st.FWD_WARPS = default["FWD_BLOCK_D"], default["FWD_WARPS"]
    for (block, warps), chunk in [(c, k) for c in [(16, 1), (32, 1), (32, 2), (64, 2)] for k in (4, 8, 16)]:
        st.BWD_BLOCK_D, st.BWD_WARPS, st.CHUNK = block, warps, chunk
        t = time_call(st.selective_scan_triton, args, reps, True)
        print(f"sweep bf16 bwd BLOCK_D={block:<4} warps={warps} CHUNK={chunk:<3} fwd+bwd {t * 1e3:.3f} ms")
    for k, v in default.items():
        setattr(st, k, v)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--sweep", action="store_true", help="try Triton BLOCK_D / num_warps / CHUNK settings")
    p.add_argument("--no-cpu", action="store_true")
    a = p.parse_args()
    if not a.no_cpu:
        bench_cpu(a.reps)
    if torch.cuda.is_available():
        bench_gpu(max(a.reps, 10), a.sweep)
    else:
        print("== CUDA not available: triton section skipped")


if __name__ == "__main__":
    main()
