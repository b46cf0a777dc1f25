"""Fused Triton selective scan for CUDA, forward and backward kernels.

Design (why): the scan is sequential in time but independent across (batch, channel), so one program
owns a (batch, BLOCK_D channels) slice and walks the tokens with its fp32 state tile (BLOCK_D × n) in
registers. softplus(Δ + bias), the D skip and the SiLU(z) gate are fused, so the only (b, l, ·) traffic
is reading the inputs and writing the output. Nothing of size (b, l, d, n) is stored: the forward saves
the state every ``CHUNK`` tokens ((b, l/CHUNK, d, n) fp32 checkpoints); the backward walks the chunks in
reverse, recomputes a chunk's states from its checkpoint into a small per-program scratch (hot in L2),
then runs the reverse-time recurrence. Reductions over channels (dB, dC) are written as per-channel-block
partial sums and reductions over batch (dA, dD, dbias) as per-batch partials; torch sums them after
(deterministic, no atomics). Inputs may be fp32 or bf16/fp16; all arithmetic is fp32.

Works on CPU tensors under ``TRITON_INTERPRET=1`` (used by the tests, Triton 3.6 and 3.8 interpreters);
imports cleanly without a GPU.

Measured on one H200 (torch 2.11, Triton 3.6), mamba_small shape b=1024, l=64, d=384, n=16, per call
(``python benchmarks/scan_bench.py --sweep``): fwd+bwd 1.9-2.2 ms (bf16 or fp32 inputs), forward alone
0.37-0.5 ms; the autograd reference loop takes 55-57 ms (~26x). In a compiled training step the backward is
the largest single kernel (34 ms of 85 ms per step, ``benchmarks/step_profile.py --compile``); ncu on
2026-11-29: 212 registers per thread, so 8 one-warp programs per SM (12.5 % occupancy), where the forward
has 31 %. 16-channel blocks (half the registers per tile) made fwd+bwd slower (2.3 ms against 1.87).
What moved it: one warp per program (the d-reductions for dB/dC stay in-warp) and BLOCK_D=32, 4.7 -> 2.7 ms;
loading each token's inputs one step ahead, 2.7 -> 1.9 ms; but loading the backward's h_{t-1} from the scratch
at its use instead of a step ahead, with scalar scratch/checkpoint bases plus one int32 offset tile (no 64-bit
pointer tiles), 1.84 -> 1.70 ms (no more spills, ``benchmarks/kernel_resources.py``). Laying the scratch and
checkpoints out channel-major (threads along channels instead of states) gave 1.73 ms, not kept. Unrolling the
token loop (2-8x) made the backward slower; CHUNK 4/8/16 are within 10% (8 is best, checkpoints are
(b, l/8, d, n) fp32). A chunk-parallel variant (a whole chunk of tokens loaded per step and
``tl.associative_scan`` over it) was 2.3x slower forward and 4x slower fwd+bwd at every chunk length (8/16/32)
and block (8-32 channels, 2-8 warps) tried on 2026-11-29, so it was not kept. Splitting the backward's 16 states
over two programs (188 registers instead of 255; du/dΔ summed by two order-independent fp32 atomic adds, the
forward saving the pre-gate y for dz) gave fwd+bwd 2.19 vs 2.32 ms side by side (0.94x) for 48 MiB more saved per
layer: not kept either.

The launches are wrapped in ``torch.library`` custom ops (forward and backward) so ``torch.compile`` sees one
opaque op with a known output shape instead of breaking the graph at every layer. Inference (no autograd) never
writes the state checkpoints, which only a backward reads (at mamba_small's b=1024 they are (1024, 8, 384, 16)
fp32 = 201 MB per layer): compiled, through a second custom op without them (``selective_scan_infer``); eager,
by launching the forward kernel directly (no custom-op dispatch either: less host work per call).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["selective_scan_triton", "CHUNK"]

CHUNK = 8  # tokens between state checkpoints
FWD_BLOCK_D, FWD_WARPS = 32, 1  # channels per program and warps, forward kernel
BWD_BLOCK_D, BWD_WARPS = 32, 1  # same for the backward kernel (see benchmarks/scan_bench.py --sweep)


@triton.jit
def _softplus(x):
    """max(x, 0) + log1p(exp(-|x|)); log1p from log with Goldberg's correction (exact for tiny e)."""
    e = tl.exp(-tl.abs(x))
    w = 1.0 + e
    den = tl.where(w == 1.0, 1.0, w - 1.0)
    return tl.maximum(x, 0.0) + tl.where(w == 1.0, e, tl.log(w) * (e / den))


LOG2E = tl.constexpr(1.4426950408889634)  # module constants a kernel may read must be tl.constexpr objects
LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _channel_params(A_ptr, D_ptr, bias_ptr, offs_d, md, offs_n, m2, NS, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    """A·log2(e) (so exp(ΔA) = exp2(ΔA2)), D and the Δ bias for a block of channels, in fp32."""
    A2 = tl.load(A_ptr + offs_d[:, None] * NS + offs_n[None, :], mask=m2, other=0.0).to(tl.float32) * LOG2E
    Dv = tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros((BLOCK,), tl.float32)
    return A2, Dv, bias


@triton.jit
def _scan_fwd_kernel(
    u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, out_ptr, ck_ptr,
    DIM, NS,
    s_ub, s_ul, s_db, s_dl, s_zb, s_zl, s_Bb, s_Bl, s_Cb, s_Cl, s_ob, s_ol,
    L: tl.constexpr, K: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
    N: tl.constexpr, SAVE_CK: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    md = offs_d < DIM
    offs_n = tl.arange(0, N)
    mn = offs_n < NS
    m2 = md[:, None] & mn[None, :]
    A2, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, offs_d, md, offs_n, m2, NS, HAS_BIAS, BLOCK)
    u_ptr += pid_b * s_ub + offs_d
    dl_ptr += pid_b * s_db + offs_d
    z_ptr += pid_b * s_zb + offs_d
    out_ptr += pid_b * s_ob + offs_d
    B_ptr += pid_b * s_Bb + offs_n
    C_ptr += pid_b * s_Cb + offs_n
    n_chunks: tl.constexpr = (L + K - 1) // K
    ck_ptr += pid_b * n_chunks * DIM * NS + offs_d[:, None] * NS + offs_n[None, :]
    h = tl.zeros((BLOCK, N), tl.float32)
    # Loop bounds are constexpr (runs under older Triton interpreters too); tokens past L in the last chunk
    # are masked no-ops (Δ = 0 leaves h unchanged). A token's inputs are loaded one step ahead (the *_n
    # values) so their latency overlaps the previous update.
    u_n = tl.load(u_ptr, mask=md, other=0.0)
    x_n = tl.load(dl_ptr, mask=md, other=0.0)
    B_n = tl.load(B_ptr, mask=mn, other=0.0)
    C_n = tl.load(C_ptr, mask=mn, other=0.0)
    if HAS_Z:
        z_n = tl.load(z_ptr, mask=md, other=0.0)
    for c in range(n_chunks):
        if SAVE_CK:  # only the backward reads them
            tl.store(ck_ptr + c * DIM * NS, h, mask=m2)
        for k in range(K):
            t = c * K + k
            u, x, Bv, Cv = u_n.to(tl.float32), x_n.to(tl.float32) + bias, B_n.to(tl.float32), C_n.to(tl.float32)
            nxt = t + 1 < L
            u_n = tl.load(u_ptr + (t + 1) * s_ul, mask=md & nxt, other=0.0)
            x_n = tl.load(dl_ptr + (t + 1) * s_dl, mask=md & nxt, other=0.0)
            B_n = tl.load(B_ptr + (t + 1) * s_Bl, mask=mn & nxt, other=0.0)
            C_n = tl.load(C_ptr + (t + 1) * s_Cl, mask=mn & nxt, other=0.0)
            dt = tl.where(t < L, _softplus(x), 0.0)
            h = tl.exp2(dt[:, None] * A2) * h + (dt * u)[:, None] * Bv[None, :]
            y = tl.sum(h * Cv[None, :], axis=1) + Dv * u
            if HAS_Z:
                zv = z_n.to(tl.float32)
                z_n = tl.load(z_ptr + (t + 1) * s_zl, mask=md & nxt, other=0.0)
                y = y * zv * tl.sigmoid(zv)
            tl.store(out_ptr + t * s_ol, y.to(out_ptr.dtype.element_ty), mask=md & (t < L))


@triton.jit
def _scan_bwd_kernel(
    u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, g_ptr, ck_ptr, sc_ptr,
    du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    batch, DIM, NS, n_dblocks,
    s_ub, s_ul, s_db, s_dl, s_zb, s_zl, s_Bb, s_Bl, s_Cb, s_Cl, s_gb, s_gl,
    L: tl.constexpr, K: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
    N: tl.constexpr,
):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK + tl.arange(0, BLOCK)
    md = offs_d < DIM
    offs_n = tl.arange(0, N)
    mn = offs_n < NS
    m2 = md[:, None] & mn[None, :]
    A2, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, offs_d, md, offs_n, m2, NS, HAS_BIAS, BLOCK)
    # per-(batch) rows of the (b, l, d) tensors; the gradients du, dΔ, dz are contiguous (b, l, d)
    u_ptr += pid_b * s_ub + offs_d
    dl_ptr += pid_b * s_db + offs_d
    z_ptr += pid_b * s_zb + offs_d
    g_ptr += pid_b * s_gb + offs_d
    row = pid_b * L * DIM + offs_d
    B_ptr += pid_b * s_Bb + offs_n
    C_ptr += pid_b * s_Cb + offs_n
    part_bn = (pid_d * batch + pid_b) * L * NS + offs_n  # dB/dC partials: (d-blocks, b, l, n)
    n_chunks: tl.constexpr = (L + K - 1) // K
    ck_ptr += pid_b * n_chunks * DIM * NS
    ck_tile = offs_d[:, None] * NS + offs_n[None, :]
    tile = tl.arange(0, BLOCK)[:, None] * N + offs_n[None, :]
    sc_ptr += (pid_b * n_dblocks + pid_d) * (K + 1) * BLOCK * N  # (K + 1) states

    carry = tl.zeros((BLOCK, N), tl.float32)  # ΔA_{t+1} * dh_{t+1}
    dA_acc = tl.zeros((BLOCK, N), tl.float32)
    dD_acc = tl.zeros((BLOCK,), tl.float32)
    dbias_acc = tl.zeros((BLOCK,), tl.float32)
    for cc in range(n_chunks):
        c = n_chunks - 1 - cc
        t0 = c * K
        # recompute the chunk's states from its checkpoint: scratch slot j holds h_{t0 + j - 1}
        h = tl.load(ck_ptr + c * DIM * NS + ck_tile, mask=m2, other=0.0)
        tl.store(sc_ptr + tile, h)
        u_n = tl.load(u_ptr + t0 * s_ul, mask=md, other=0.0)
        x_n = tl.load(dl_ptr + t0 * s_dl, mask=md, other=0.0)
        B_n = tl.load(B_ptr + t0 * s_Bl, mask=mn, other=0.0)
        for k in range(K):
            t = t0 + k
            u, x, Bv = u_n.to(tl.float32), x_n.to(tl.float32) + bias, B_n.to(tl.float32)
            nxt = t + 1 < L
            u_n = tl.load(u_ptr + (t + 1) * s_ul, mask=md & nxt, other=0.0)
            x_n = tl.load(dl_ptr + (t + 1) * s_dl, mask=md & nxt, other=0.0)
            B_n = tl.load(B_ptr + (t + 1) * s_Bl, mask=mn & nxt, other=0.0)
            dt = tl.where(t < L, _softplus(x), 0.0)
            h = tl.exp2(dt[:, None] * A2) * h + (dt * u)[:, None] * Bv[None, :]
            tl.store(sc_ptr + (k + 1) * BLOCK * N + tile, h)
        tl.debug_barrier()
        # reverse in time; h holds h_t. Tokens past L: g = 0 and Δ = 0 make the step an identity, stores masked.
        t = t0 + K - 1
        cur = t < L
        u_n = tl.load(u_ptr + t * s_ul, mask=md & cur, other=0.0)
        x_n = tl.load(dl_ptr + t * s_dl, mask=md & cur, other=0.0)
        B_n = tl.load(B_ptr + t * s_Bl, mask=mn & cur, other=0.0)
        C_n = tl.load(C_ptr + t * s_Cl, mask=mn & cur, other=0.0)
        g_n = tl.load(g_ptr + t * s_gl, mask=md & cur, other=0.0)
        if HAS_Z:
            z_n = tl.load(z_ptr + t * s_zl, mask=md & cur, other=0.0)
        for kk in range(K):
            k = K - 1 - kk
            t = t0 + k
            valid = t < L
            u, x, Bv, Cv = u_n.to(tl.float32), x_n.to(tl.float32) + bias, B_n.to(tl.float32), C_n.to(tl.float32)
            g = g_n.to(tl.float32)
            h_prev = tl.load(sc_ptr + k * BLOCK * N + tile)  # loaded here, not a step ahead: 1.84 -> 1.70 ms
            prv = (k > 0) & (t - 1 < L)
            u_n = tl.load(u_ptr + (t - 1) * s_ul, mask=md & prv, other=0.0)
            x_n = tl.load(dl_ptr + (t - 1) * s_dl, mask=md & prv, other=0.0)
            B_n = tl.load(B_ptr + (t - 1) * s_Bl, mask=mn & prv, other=0.0)
            C_n = tl.load(C_ptr + (t - 1) * s_Cl, mask=mn & prv, other=0.0)
            g_n = tl.load(g_ptr + (t - 1) * s_gl, mask=md & prv, other=0.0)
            dt = tl.where(valid, _softplus(x), 0.0)
            if HAS_Z:
                zv = z_n.to(tl.float32)
                z_n = tl.load(z_ptr + (t - 1) * s_zl, mask=md & prv, other=0.0)
                sz = tl.sigmoid(zv)
                y = tl.sum(h * Cv[None, :], axis=1) + Dv * u
                dz = g * y * sz * (1.0 + zv * (1.0 - sz))
                tl.store(dz_ptr + row + t * DIM, dz.to(dz_ptr.dtype.element_ty), mask=md & valid)
                gy = g * zv * sz
            else:
                gy = g
            dh = carry + gy[:, None] * Cv[None, :]
            tl.store(dC_ptr + part_bn + t * NS, tl.sum(gy[:, None] * h, axis=0), mask=mn & valid)
            dA_t = tl.exp2(dt[:, None] * A2)
            gdA = dh * dA_t * h_prev
            dA_acc += gdA * dt[:, None]
            dBu = tl.sum(dh * Bv[None, :], axis=1)
            ddt = tl.sum(gdA * A2, axis=1) * LN2 + dBu * u  # A = A2·ln2: one (BLOCK, N) tile fewer held
            tl.store(dB_ptr + part_bn + t * NS, tl.sum(dh * (dt * u)[:, None], axis=0), mask=mn & valid)
            tl.store(du_ptr + row + t * DIM, (dBu * dt + gy * Dv).to(du_ptr.dtype.element_ty), mask=md & valid)
            ddelta = tl.where(valid, ddt * tl.sigmoid(x), 0.0)
            tl.store(ddl_ptr + row + t * DIM, ddelta.to(ddl_ptr.dtype.element_ty), mask=md & valid)
            dD_acc += gy * u
            dbias_acc += ddelta
            carry = dA_t * dh
            h = h_prev
        tl.debug_barrier()  # the next chunk overwrites the scratch
    tl.store(dA_ptr + pid_b * DIM * NS + offs_d[:, None] * NS + offs_n[None, :], dA_acc, mask=m2)
    tl.store(dD_ptr + pid_b * DIM + offs_d, dD_acc, mask=md)
    tl.store(dbias_ptr + pid_b * DIM + offs_d, dbias_acc, mask=md)


def _rowmajor(x):
    """Kernels index (b, l, k) tensors by batch/token strides and assume unit stride on the last dim."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _common_args(u, delta, A, B, C, D, z, delta_bias):
    """The 8 leading tensor arguments of both kernels, in the layout they assume (unit stride on the last dim,
    dense A and D); u and D stand in for an absent z / bias (never read: HAS_Z / HAS_BIAS are off)."""
    u, delta, B, C = map(_rowmajor, (u, delta, B, C))
    zz = _rowmajor(z) if z is not None else u
    return u, delta, zz, B, C, A.contiguous(), D.contiguous(), delta_bias if delta_bias is not None else D


def _row_strides(*tensors):
    """(batch stride, token stride) of each (b, l, k) tensor, flattened, in the order the kernels take them."""
    return [s for t in tensors for s in (t.stride(0), t.stride(1))]


def _launch_fwd(u, delta, A, B, C, D, z, delta_bias, save_ck: bool = True):
    """(output, state checkpoints every CHUNK tokens): the backward recomputes the states from the checkpoints.
    ``save_ck=False`` (no backward to come): the checkpoints are neither allocated nor written (an empty tensor)."""
    args = _common_args(u, delta, A, B, C, D, z, delta_bias)
    u, delta, zz, B, C, A = args[:6]
    b, l, d = u.shape
    n = A.shape[1]
    K = min(CHUNK, l)
    out = torch.empty((b, l, d), device=u.device, dtype=u.dtype)
    ck_shape = (b, triton.cdiv(l, K), d, n) if save_ck else (0,)
    ck = torch.empty(ck_shape, device=u.device, dtype=torch.float32)
    _scan_fwd_kernel[(b, triton.cdiv(d, FWD_BLOCK_D))](
        *args, out, ck, d, n, *_row_strides(u, delta, zz, B, C, out),
        L=l, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, BLOCK=FWD_BLOCK_D,
        K=K, N=triton.next_power_of_2(n), SAVE_CK=save_ck, num_warps=FWD_WARPS,
    )
    return out, ck


def _launch_bwd(gout, u, delta, A, B, C, D, z, delta_bias, ck):
    """Gradients of every input; an absent z / delta_bias gets an empty tensor (a custom op cannot return None)."""
    args = _common_args(u, delta, A, B, C, D, z, delta_bias)
    u, delta, zz, B, C, A = args[:6]
    gout = _rowmajor(gout)
    b, l, d = u.shape
    n = A.shape[1]
    N = triton.next_power_of_2(n)
    K, BLOCK = min(CHUNK, l), BWD_BLOCK_D
    nblk = triton.cdiv(d, BLOCK)
    dev, f32 = u.device, torch.float32
    du = torch.empty((b, l, d), device=dev, dtype=u.dtype)
    ddelta = torch.empty((b, l, d), device=dev, dtype=delta.dtype)
    dz = torch.empty((b, l, d), device=dev, dtype=z.dtype) if z is not None else u.new_empty(0)
    dB_part = torch.empty((nblk, b, l, n), device=dev, dtype=f32)
    dC_part = torch.empty((nblk, b, l, n), device=dev, dtype=f32)
    dA_part = torch.empty((b, d, n), device=dev, dtype=f32)
    dD_part = torch.empty((b, d), device=dev, dtype=f32)
    dbias_part = torch.empty((b, d), device=dev, dtype=f32)
    grads = (du, ddelta, dz if z is not None else du, dB_part, dC_part, dA_part, dD_part, dbias_part)
    scratch = torch.empty(b * nblk * (K + 1) * BLOCK * N, device=dev, dtype=f32)
    _scan_bwd_kernel[(b, nblk)](
        *args, gout, ck, scratch, *grads, b, d, n, nblk, *_row_strides(u, delta, zz, B, C, gout),
        L=l, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, BLOCK=BLOCK, K=K, N=N, num_warps=BWD_WARPS,
    )
    dbias = dbias_part.sum(0).to(delta_bias.dtype) if delta_bias is not None else u.new_empty(0)
    return (du, ddelta, dA_part.sum(0).to(A.dtype), dB_part.sum(0).to(B.dtype), dC_part.sum(0).to(C.dtype),
            dD_part.sum(0).to(D.dtype), dz, dbias)


# Registered as torch.library custom ops so torch.compile treats the scan as one opaque op with a known
# output shape (no graph break per layer) and fuses the element-wise work around it.
@torch.library.custom_op("mambaprune::selective_scan_fwd", mutates_args=())
def _fwd_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
            D: torch.Tensor, z: torch.Tensor | None, delta_bias: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_fwd(u, delta, A, B, C, D, z, delta_bias)


@_fwd_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias):
    b, l, d = u.shape
    return u.new_empty((b, l, d)), u.new_empty((b, triton.cdiv(l, min(CHUNK, l)), d, A.shape[1]),
                                               dtype=torch.float32)


@torch.library.custom_op("mambaprune::selective_scan_bwd", mutates_args=())
def _bwd_op(gout: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
            C: torch.Tensor, D: torch.Tensor, z: torch.Tensor | None, delta_bias: torch.Tensor | None,
            ck: torch.Tensor) -> list[torch.Tensor]:
    return list(_launch_bwd(gout, u, delta, A, B, C, D, z, delta_bias, ck))


@_bwd_op.register_fake
def _(gout, u, delta, A, B, C, D, z, delta_bias, ck):
    like = lambda t: t.new_empty(t.shape) if t is not None else u.new_empty(0)  # noqa: E731
    return [like(u), like(delta), like(A), like(B), like(C), like(D), like(z), like(delta_bias)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[1])
    ctx.has_z, ctx.has_bias = z is not None, delta_bias is not None


def _backward(ctx, gout, _gck):
    u, delta, A, B, C, D, z, delta_bias, ck = ctx.saved_tensors
    du, ddelta, dA, dB, dC, dD, dz, dbias = _bwd_op(gout, u, delta, A, B, C, D, z, delta_bias, ck)
    return du, ddelta, dA, dB, dC, dD, dz if ctx.has_z else None, dbias if ctx.has_bias else None


torch.library.register_autograd("mambaprune::selective_scan_fwd", _backward, setup_context=_setup_context)


@torch.library.custom_op("mambaprune::selective_scan_infer", mutates_args=())
def _infer_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
              D: torch.Tensor, z: torch.Tensor | None, delta_bias: torch.Tensor | None) -> torch.Tensor:
    return _launch_fwd(u, delta, A, B, C, D, z, delta_bias, save_ck=False)[0]


@_infer_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias):
    return u.new_empty(u.shape)


def needs_autograd(*tensors) -> bool:
    """Whether autograd records this call: grad mode on and some input requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def eager_inference(*tensors) -> bool:
    """True when a kernel may be launched directly, outside its custom op: not under ``torch.compile`` (which
    needs the op) and no autograd to record."""
    return not torch.compiler.is_compiling() and not needs_autograd(*tensors)


def selective_scan_triton(u, delta, A, B, C, D, z=None, delta_bias=None):
    """Selective scan with fused Triton kernels; arguments and result as ``scan.selective_scan_ref``. Without
    autograd the forward kernel runs without checkpoints (directly in eager, as ``selective_scan_infer`` under
    ``torch.compile``): the same kernel, the same output."""
    args = (u, delta, A, B, C, D, z, delta_bias)
    if not needs_autograd(*args):
        return _infer_op(*args) if torch.compiler.is_compiling() else _launch_fwd(*args, save_ck=False)[0]
    return _fwd_op(*args)[0]
