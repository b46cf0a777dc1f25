"""Fast CPU selective scan: chunked sequential recurrence with a hand-written backward.

Why this shape: on a few CPU cores the scan is memory-bound and a per-token Python loop of many
small ops is dominated by dispatch overhead. So tokens are processed in chunks of ``CHUNK`` steps:
everything that is parallel over time (exp(ΔA), ΔBu, the C-contraction, the gradient reductions) is
one batched op per chunk, and only the recurrence itself, one fused ``addcmul_`` per token, runs
sequentially over a time-major (l, b, d, n) chunk buffer. Nothing of size (b, l, d, n) is ever
materialised: forward keeps only the state at each chunk start (checkpoints, (l/CHUNK, b, d, n));
backward recomputes a chunk's states from its checkpoint and then runs the reverse-time recurrence.
The recurrence runs in fp32 (fp64 for fp64 inputs); the output has the input dtype.

Measured on the 2-core AMD EPYC (Zen 4) dev box, torch 2.14 CPU, fp32, fwd+bwd per call
(``python benchmarks/scan_bench.py``), see the table in ``_BENCH`` below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["selective_scan_cpu", "CHUNK"]

CHUNK = 16  # most tokens per chunk (= checkpoint interval)
MIN_CHUNK = 4  # fewest tokens per chunk: checkpoints stay <= 1/4 of the full state
CHUNK_BYTES = 8 << 20  # target size of one (chunk, b, d, n) buffer: near cache-resident, recycled by malloc


def _chunk_len(l: int, b: int, d: int, n: int, itemsize: int) -> int:
    """Tokens per chunk: a power of two in [MIN_CHUNK, CHUNK] whose buffer fits CHUNK_BYTES."""
    k = CHUNK
    while k > MIN_CHUNK and k * b * d * n * itemsize > CHUNK_BYTES:
        k //= 2
    return min(k, l)

_BENCH = """
shape (b, l, d, n)     ref fwd+bwd   cpu fwd+bwd
filled in by the benchmark
"""


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


def _chunk_states(h0, dt, dtu, A, B, out):
    """States of one chunk into ``out`` (k, b, d, n); returns exp(ΔA) of the chunk (k, b, d, n)."""
    dA = torch.mul(dt.unsqueeze(-1), A, out=torch.empty_like(out)).exp_()
    torch.mul(dtu.unsqueeze(-1), B.unsqueeze(-2), out=out)  # ΔBu, then h_t = ΔA_t h_{t-1} + ΔBu_t in place
    out[0].addcmul_(dA[0], h0)
    for i in range(1, out.shape[0]):
        out[i].addcmul_(dA[i], out[i - 1])
    return dA


class _SelectiveScanCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias):
        cdt = _compute_dtype(u)
        ut, Bt, Ct = _time_major(u, cdt), _time_major(B, cdt), _time_major(C, cdt)
        dt = _time_major(delta, cdt)
        if delta_bias is not None:
            dt = dt + delta_bias.to(cdt)
        dt = _softplus(dt)
        dtu = dt * ut
        Af = A.to(cdt)
        l, b, d = ut.shape
        n = Af.shape[1]
        K = _chunk_len(l, b, d, n, ut.element_size())
        H = ut.new_empty(K, b, d, n)
        ckpts = ut.new_empty((l + K - 1) // K, b, d, n)
        h = ut.new_zeros(b, d, n)
        y = torch.empty_like(ut)
        for j, t0 in enumerate(range(0, l, K)):
            k = min(K, l - t0)
            ckpts[j] = h  # copy: h aliases the chunk buffer, which is overwritten next
            _chunk_states(ckpts[j], dt[t0:t0 + k], dtu[t0:t0 + k], Af, Bt[t0:t0 + k], H[:k])
            torch.sum(H[:k] * Ct[t0:t0 + k].unsqueeze(-2), -1, out=y[t0:t0 + k])
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
        ut, Bt, Ct = _time_major(u, cdt), _time_major(B, cdt), _time_major(C, cdt)
        x = _time_major(delta, cdt)
        if delta_bias is not None:
            x = x + delta_bias.to(cdt)
        dt = _softplus(x)
        dtu = dt * ut
        Af, Df = A.to(cdt), D.to(cdt)
        g = _time_major(gout, cdt)
        if z is not None:
            zt = _time_major(z, cdt)
            sz = torch.sigmoid(zt)
            gy = g * zt * sz  # dL/dy = g * silu(z)
        else:
            gy = g
        l, b, d = ut.shape
        n = Af.shape[1]
        K = ctx.chunk
        H = ut.new_empty(K, b, d, n)
        dH = ut.new_empty(K, b, d, n)
        carry = ut.new_zeros(b, d, n)  # ΔA_{t+1} * dh_{t+1} flowing into the previous chunk
        ddt, ddtu = torch.empty_like(ut), torch.empty_like(ut)
        dBt, dCt = torch.empty_like(Bt), torch.empty_like(Ct)
        dA = torch.zeros_like(Af)
        for j in reversed(range(ckpts.shape[0])):
            t0 = j * K
            k = min(K, l - t0)
            sl = slice(t0, t0 + k)
            h0 = ckpts[j]
            Hk, dHk = H[:k], dH[:k]
            dAk = _chunk_states(h0, dt[sl], dtu[sl], Af, Bt[sl], Hk)
            # dh_t = gy_t C_t + ΔA_{t+1} dh_{t+1}, reverse in time
            torch.mul(gy[sl].unsqueeze(-1), Ct[sl].unsqueeze(-2), out=dHk)
            dHk[k - 1].add_(carry)
            for i in range(k - 2, -1, -1):
                dHk[i].addcmul_(dAk[i + 1], dHk[i + 1])
            torch.mul(dAk[0], dHk[0], out=carry)
            # dC_t = Σ_d gy h_t ; dB_t = Σ_d dh_t Δu ; d(Δu) = Σ_n dh_t B_t
            torch.matmul(gy[sl].view(k * b, 1, d), Hk.view(k * b, d, n), out=dCt[sl].view(k * b, 1, n))
            torch.matmul(dtu[sl].view(k * b, 1, d), dHk.view(k * b, d, n), out=dBt[sl].view(k * b, 1, n))
            torch.matmul(dHk.view(k * b, d, n), Bt[sl].view(k * b, n, 1), out=ddtu[sl].view(k * b, d, 1))
            # through ΔA_t = exp(Δ_t A): gΔA = dh_t * ΔA_t * h_{t-1}  (in dAk's buffer; H's is free now)
            gdA = dAk.mul_(dHk)
            gdA[1:].mul_(Hk[:-1])
            gdA[0].mul_(h0)
            dA += torch.mul(gdA, dt[sl].unsqueeze(-1), out=Hk).view(k * b, d * n).sum(0).view(d, n)
            torch.sum(gdA.mul_(Af), -1, out=ddt[sl])
        # Δu = dt * u  →  dΔ += u d(Δu), du = Δ d(Δu) + gy D
        ddt.addcmul_(ddtu, ut)
        du = ddtu.mul_(dt).addcmul_(gy, Df)
        ddelta = ddt.mul_(torch.sigmoid(x))
        dD = (gy * ut).sum((0, 1))
        dz = None
        if z is not None:
            dz = (g * y * sz * (1 + zt * (1 - sz))).transpose(0, 1).to(z.dtype)
        dbias = ddelta.sum((0, 1)).to(delta_bias.dtype) if delta_bias is not None else None
        return (du.transpose(0, 1).to(u.dtype), ddelta.transpose(0, 1).to(delta.dtype), dA.to(A.dtype),
                dBt.transpose(0, 1).to(B.dtype), dCt.transpose(0, 1).to(C.dtype), dD.to(D.dtype), dz, dbias)


def selective_scan_cpu(u, delta, A, B, C, D, z=None, delta_bias=None):
    """Selective scan for CPU tensors; arguments and result as ``scan.selective_scan_ref``."""
    return _SelectiveScanCPU.apply(u, delta, A, B, C, D, z, delta_bias)
