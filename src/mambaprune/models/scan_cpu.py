"""Fast CPU selective scan: chunked sequential recurrence with a hand-written backward.

Why this shape: on a few CPU cores a per-token loop of many small torch ops is dominated by dispatch
and by passes over memory. So tokens go in chunks of K steps: everything parallel over time (exp(ΔA),
ΔBu, the C-contraction, all gradient reductions) is one batched op per chunk, and only the recurrence,
one fused ``addcmul_`` per token, runs sequentially over a time-major (K, b, n, d) chunk buffer. K is
the largest power of two in [MIN_CHUNK, CHUNK] whose buffer fits CHUNK_BYTES (cache-sized, and small
enough for malloc to recycle). Nothing of size (b, l, d, n) is stored: forward keeps the state at each
chunk start (checkpoints, (l/K, b, n, d)) and the pre-gate y; backward recomputes a chunk's states
from its checkpoint, then runs the reverse-time recurrence for dh. The recurrence runs in fp32 (fp64
for fp64 inputs); results have the input dtype.

States are laid out state-major, (b, n, d), with the channels d contiguous: the broadcasts (ΔA, ΔBu, C·dh)
then run along rows of d (hundreds of floats) instead of rows of n (8 or 16), and every contraction over n
or d is a batched matrix product. Against the earlier (b, d, n) layout, side by side in one process on the
2-core dev box (fp32, 2 threads, interleaved rounds, median ratio): fwd+bwd 1.3-1.5x at n=16 (d 192/384),
2.0-2.8x at n=8, 1.1x at (16, 64, 115, 16) (a pruned width); a training step of mamba_tiny 1.8x, of
mamba_small 1.24x. One trap on the way: (n, d) @ (d, 1) as ``bmm`` ran ~10x slower than the same
product written (1, d) @ (d, n), so dB and dC are computed in the latter form.

Earlier measurements, in the (b, d, n) layout (fwd+bwd per call, fp32,
``OMP_NUM_THREADS=1 python benchmarks/scan_bench.py``; 1 thread because the 2-core dev box was shared and
2-thread timings swung 2-5x):

    shape (b, l, d, n)    ref (autograd loop)   this
    (64, 64, 192, 16)     124 ms                60 ms   (2.1x)
    (64, 64, 384, 16)     269 ms                128 ms  (2.1x)
    (128, 16, 64, 8)      15.6 ms               9.9 ms  (1.6x)

What the variants bought at (64, 64, 192, 16): first chunked version 100 ms; ``exp2`` instead of
``exp`` (2.5x faster kernel here) -25%; preallocated chunk buffers and state-dim sums as GEMV -10%;
saving y instead of recomputing it -8%. Chunk size: K=1 (a plain per-token loop) 71 ms, K=4 60 ms,
K=16 (16 MB buffers) 85 ms; at (128, 64, 384, 16) K=1 is ~15% faster than K=4 but would checkpoint
every state, so MIN_CHUNK=4 (re-checked in the (b, n, d) layout: CHUNK_BYTES 0.5-16 MB with MIN_CHUNK 1 or 4,
the defaults are within noise of the best). Splitting the batch into groups to keep the chunk buffers in L2
was slower (more, smaller ops). ``torch.compile`` was not tried (compile time, C++ toolchain at run time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_cpu", "CHUNK"]

LOG2E = 1.4426950408889634
CHUNK = 16  # most tokens per chunk (= checkpoint interval)
MIN_CHUNK = 4  # fewest tokens per chunk: checkpoints stay <= 1/4 of the full state
CHUNK_BYTES = 4 << 20  # target size of one (chunk, b, n, d) buffer: about cache-sized, recycled by malloc


def _chunk_len(l: int, b: int, d: int, n: int, itemsize: int) -> int:
    """Tokens per chunk: a power of two in [MIN_CHUNK, CHUNK] whose buffer fits CHUNK_BYTES."""
    k = CHUNK
    while k > MIN_CHUNK and k * b * d * n * itemsize > CHUNK_BYTES:
        k //= 2
    return min(k, l)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """softplus(x) = max(x, 0) + log1p(exp(-|x|)).

    fp32 ``log1p`` (used by ``F.softplus``) is not vectorised on CPU in this torch build (~25x slower
    than ``log``), so log1p is rebuilt from ``log`` with Goldberg's correction log1p(e) = log(w) e/(w-1),
    w = 1 + e, which keeps full relative precision for tiny e.
    """
    if x.dtype == torch.float64:
        return F.softplus(x)
    e = torch.exp(-x.abs())
    w = 1 + e
    lp = torch.where(w == 1, e, torch.log(w) * e / (w - 1))
    return lp.add_(x.clamp_min(0))


def _time_major(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(b, l, k) → contiguous (l, b, k) in ``dtype``."""
    return x.transpose(0, 1).to(dtype).contiguous()


def _time_major_inputs(u, delta, A, B, C, delta_bias, cdt):
    """What forward and backward both start from, time-major in ``cdt``: u, B, C, x = Δ_raw + bias,
    Δ = softplus(x), Δu and A2ᵀ = (A·log2(e))ᵀ, (n, d) like the states."""
    ut, Bt, Ct = _time_major(u, cdt), _time_major(B, cdt), _time_major(C, cdt)
    x = _time_major(delta, cdt)
    if delta_bias is not None:
        x = x + delta_bias.to(cdt)
    dt = _softplus(x)
    return ut, Bt, Ct, x, dt, dt * ut, (A.to(cdt) * LOG2E).t().contiguous()


def _chunk_states(h0, dt, dtu, A2t, B, out, dA):
    """States of one chunk into ``out`` and exp(ΔA) = 2^(Δ A log2 e) into ``dA`` (both (k, b, n, d)).

    (``exp2`` is ~2.5x faster than ``exp`` on CPU here, hence ``A2 = A * log2(e)``.)
    """
    torch.mul(dt.unsqueeze(-2), A2t, out=dA).exp2_()
    torch.mul(dtu.unsqueeze(-2), B.unsqueeze(-1), out=out)  # ΔBu, then h_t = ΔA_t h_{t-1} + ΔBu_t in place
    out[0].addcmul_(dA[0], h0)
    for i in range(1, out.shape[0]):
        out[i].addcmul_(dA[i], out[i - 1])


class _SelectiveScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias):
        cdt = _compute_dtype(u)
        ut, Bt, Ct, _, dt, dtu, A2t = _time_major_inputs(u, delta, A, B, C, delta_bias, cdt)
        l, b, d = ut.shape
        n = A2t.shape[0]
        K = _chunk_len(l, b, d, n, ut.element_size())
        H, dA = (ut.new_empty(K, b, n, d) for _ in range(2))  # chunk buffers, reused
        ckpts = ut.new_empty((l + K - 1) // K, b, n, d)
        h = ut.new_zeros(b, n, d)
        y = torch.empty_like(ut)
        for j, t0 in enumerate(range(0, l, K)):
            k = min(K, l - t0)
            ckpts[j] = h  # copy: h aliases the chunk buffer, which is overwritten next
            _chunk_states(ckpts[j], dt[t0:t0 + k], dtu[t0:t0 + k], A2t, Bt[t0:t0 + k], H[:k], dA[:k])
            # y_t = Σ_n C_t h_t: one (1, n) @ (n, d) product per (token, batch element)
            torch.bmm(Ct[t0:t0 + k].view(k * b, 1, n), H[:k].view(k * b, n, d), out=y[t0:t0 + k].view(k * b, 1, d))
            h = H[k - 1]
        y.addcmul_(ut, D.to(cdt))
        ctx.chunk = K
        if z is None:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpts, None)
            return y.transpose(0, 1).to(u.dtype)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpts, y)  # time-major y before the gate
        return (y.transpose(0, 1) * F.silu(z.to(cdt))).to(u.dtype)

    @staticmethod
    def backward(ctx, gout):
        u, delta, A, B, C, D, z, delta_bias, ckpts, y = ctx.saved_tensors
        cdt = ckpts.dtype
        ut, Bt, Ct, x, dt, dtu, A2t = _time_major_inputs(u, delta, A, B, C, delta_bias, cdt)
        Aft, Df = A.to(cdt).t().contiguous(), D.to(cdt)
        g = _time_major(gout, cdt)
        if z is not None:
            zt = _time_major(z, cdt)
            sz = torch.sigmoid(zt)
            gy = g * zt * sz  # dL/dy = g * silu(z)
        else:
            gy = g
        l, b, d = ut.shape
        n = Aft.shape[0]
        K = ctx.chunk
        H, dH, dAbuf = (ut.new_empty(K, b, n, d) for _ in range(3))  # chunk buffers, reused
        carry = ut.new_zeros(b, n, d)  # ΔA_{t+1} * dh_{t+1} flowing into the previous chunk
        ddt, ddtu = torch.empty_like(ut), torch.empty_like(ut)
        dBt, dCt = torch.empty_like(Bt), torch.empty_like(Ct)
        dA = torch.zeros_like(Aft)
        for j in reversed(range(ckpts.shape[0])):
            t0 = j * K
            k = min(K, l - t0)
            sl = slice(t0, t0 + k)
            h0 = ckpts[j]
            Hk, dHk = H[:k], dH[:k]
            dAk = dAbuf[:k]
            _chunk_states(h0, dt[sl], dtu[sl], A2t, Bt[sl], Hk, dAk)
            # dh_t = gy_t C_t + ΔA_{t+1} dh_{t+1}, reverse in time
            torch.mul(gy[sl].unsqueeze(-2), Ct[sl].unsqueeze(-1), out=dHk)
            dHk[k - 1].add_(carry)
            for i in range(k - 2, -1, -1):
                dHk[i].addcmul_(dAk[i + 1], dHk[i + 1])
            torch.mul(dAk[0], dHk[0], out=carry)
            # dC_t = Σ_d gy h_t ; dB_t = Σ_d dh_t Δu
            # (as (1, d) @ (d, n) products: bmm of (n, d) @ (d, 1) is ~10x slower in this torch build)
            m = k * b
            torch.matmul(gy[sl].view(m, 1, d), Hk.view(m, n, d).transpose(1, 2), out=dCt[sl].view(m, 1, n))
            torch.matmul(dtu[sl].view(m, 1, d), dHk.view(m, n, d).transpose(1, 2), out=dBt[sl].view(m, 1, n))
            # through ΔA_t = exp(Δ_t A): gΔA = dh_t * ΔA_t * h_{t-1}, in dAk's buffer
            gdA = dAk.mul_(dHk)
            gdA[1:].mul_(Hk[:-1])
            gdA[0].mul_(h0)
            # H's buffer is free now: scratch for d(Δu) = Σ_n dh_t B_t and dA = Σ_{t,b} gΔA Δ
            torch.bmm(Bt[sl].view(m, 1, n), dHk.view(m, n, d), out=ddtu[sl].view(m, 1, d))
            dA += torch.mul(gdA, dt[sl].unsqueeze(-2), out=Hk).view(m, n * d).sum(0).view(n, d)
            torch.sum(gdA.mul_(Aft), dim=2, out=ddt[sl])  # dΔ = Σ_n gΔA A (+ u d(Δu) below)
        # Δu = dt * u  →  dΔ += u d(Δu), du = Δ d(Δu) + gy D
        ddt.addcmul_(ddtu, ut)
        du = ddtu.mul_(dt).addcmul_(gy, Df)
        ddelta = ddt.mul_(torch.sigmoid(x))
        dD = (gy * ut).sum((0, 1))
        dz = None
        if z is not None:
            dz = (g * y * sz * (1 + zt * (1 - sz))).transpose(0, 1).to(z.dtype)
        dbias = ddelta.sum((0, 1)).to(delta_bias.dtype) if delta_bias is not None else None
        return (du.transpose(0, 1).to(u.dtype), ddelta.transpose(0, 1).to(delta.dtype), dA.t().to(A.dtype),
                dBt.transpose(0, 1).to(B.dtype), dCt.transpose(0, 1).to(C.dtype), dD.to(D.dtype), dz, dbias)


def selective_scan_cpu(u, delta, A, B, C, D, z=None, delta_bias=None):
    """Selective scan for CPU tensors; arguments and result as ``scan.selective_scan_ref``."""
    # The recurrence must stay fp32 inside CPU autocast. None of its ops is on torch 2.14's CPU autocast lists (same
    # bits with or without this guard, tests/mutation_check.py), so the guard is for future lists.
    with torch.autocast("cpu", enabled=False):
        return _SelectiveScanCPU.apply(u, delta, A, B, C, D, z, delta_bias)
