"""Registers, spills and loop sizes of the Triton kernels compiled for a Hopper GPU (sm_90), on any machine.

    PYTHONPATH=src python benchmarks/kernel_resources.py [--arch 90] [--candidates]

Triton compiles ahead of time for a named target with its bundled ptxas, and its bundled cuobjdump reads the
resources and the SASS, so register pressure can be worked on without a GPU. Each integer argument gets the
specialisation a launch at mamba_small's shape gives it (Triton marks an int divisible by 16, and a pointer
aligned to 16 bytes, which decides vector widths and so the register layouts the compiler picks): with it the
scan backward comes out at 210 registers where ncu read 212 on the H200 (255 with plain i32 arguments). Spills
show as STACK bytes. ``loops``: SASS instructions in each loop body, in code order (innermost loops come first);
for the scan kernels, the cost of one token step for one warp. ``--candidates`` adds models/scan_triton_next.py's.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mambaprune.models import conv_triton, norm_triton, scan_triton

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
FP32_POINTERS = {"A_ptr", "D_ptr", "bias_ptr", "ck_ptr", "sc_ptr", "dB_ptr", "dC_ptr", "dA_ptr", "dD_ptr",
                 "dbias_ptr", "w_ptr", "b_ptr", "dw_ptr", "db_ptr",
                 "r_ptr", "rout_ptr", "drout_ptr", "dr_ptr", "mean_ptr", "rstd_ptr"}  # the rest are bf16 activations
FP32_SCALARS = {"eps"}  # the other scalar arguments are integers
# integer arguments at mamba_small's shape (b 1024, l 64, d_inner 384, n 16, dim 192) that are not multiples of
# 16, so not specialised as such (Δ, B, C are views of x_proj's (b, l, 416) output and z of in_proj's (b, l, 768))
NOT_DIVISIBLE = {"n_dblocks": 12, "n_lblocks": 2}


def compile_for(kernel, constexprs: dict, num_warps: int, arch: int, maxnreg: int | None = None):
    no_spec = {kernel.arg_names[i] if isinstance(i, int) else i for i in (kernel.do_not_specialize or ())}
    signature, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        is_ptr = name.endswith("_ptr")
        signature[name] = (("*fp32" if name in FP32_POINTERS else "*bf16") if is_ptr else
                           "fp32" if name in FP32_SCALARS else "i32")
        if is_ptr or (name not in FP32_SCALARS and name not in NOT_DIVISIBLE and name not in no_spec):
            attrs[(i,)] = [["tt.divisibility", 16]]
    options = {"num_warps": num_warps, **({"maxnreg": maxnreg} if maxnreg else {})}
    return triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", arch, 32), options=options)


def resources(compiled) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        cuobjdump = os.path.join(BIN, "cuobjdump")
        usage = subprocess.run([cuobjdump, "--dump-resource-usage", path], capture_output=True, text=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", path], capture_output=True, text=True).stdout
    fields = next(line for line in usage.splitlines() if "REG:" in line).split()
    branches = re.findall(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?BRA\s+0x([0-9a-f]+)", sass)
    loops = [(int(at, 16) - int(to, 16)) // 16 for at, to in branches if int(to, 16) < int(at, 16)]
    return " ".join(f for f in fields if f.startswith(("REG:", "STACK:", "SHARED:"))) + f" loops:{loops}"


def rows(candidates: bool):
    """(name, kernel, constexprs, num_warps, maxnreg) for every kernel to compile."""
    scan = dict(L=64, K=scan_triton.CHUNK, HAS_Z=True, HAS_BIAS=True, N=16)
    out = [("scan forward", scan_triton._scan_fwd_kernel, {**scan, "BLOCK": scan_triton.FWD_BLOCK_D},
            scan_triton.FWD_WARPS, None),
           ("scan backward", scan_triton._scan_bwd_kernel, {**scan, "BLOCK": scan_triton.BWD_BLOCK_D},
            scan_triton.BWD_WARPS, None)]
    conv = dict(W=4, BL=conv_triton.BLOCK_L, BD=conv_triton.BLOCK_D)
    out += [("conv forward", conv_triton._conv_fwd_kernel, conv, conv_triton.WARPS, None),
            ("conv backward", conv_triton._conv_bwd_kernel, conv, conv_triton.WARPS, None)]
    norm = dict(BM=norm_triton.BLOCK_M, BN=256)
    out += [("add+norm fwd", norm_triton._add_norm_fwd_kernel, {**norm, "HAS_BRANCH": True}, norm_triton.WARPS, None),
            ("add+norm bwd", norm_triton._add_norm_bwd_kernel,
             {**norm, "HAS_DROUT": True, "HAS_DX": True, "PER_PROGRAM": 4}, norm_triton.WARPS, None)]
    if candidates:
        from mambaprune.models import scan_triton_next as nx

        scan = {**scan, "K": nx.CHUNK}
        for name, c in nx.FWD_CANDIDATES.items():
            out.append((f"fwd {name}", nx._fwd_kernel,
                        {**scan, "BLOCK": c.block, "PAIR": 2 if c.pair else 1, "LANE": c.lane}, c.warps, c.maxnreg))
        kernels = {"scratch": nx._bwd_kernel, "registers": nx._bwd_reg_kernel, "today": scan_triton._scan_bwd_kernel}
        for name, c in nx.BWD_CANDIDATES.items():
            out.append((f"bwd {name}", kernels[c.kernel], {**scan, "BLOCK": c.block}, c.warps, c.maxnreg))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--candidates", action="store_true", help="also the kernels of models/scan_triton_next.py")
    a = ap.parse_args()
    print(f"sm_{a.arch}, Triton {triton.__version__}, mamba_small's constants (L 64, n 16, conv width 4, dim 192)")
    for name, kernel, constexprs, warps, maxnreg in rows(a.candidates):
        cap = f", maxnreg {maxnreg}" if maxnreg else ""
        compiled = compile_for(kernel, constexprs, warps, a.arch, maxnreg)
        print(f"  {name:<22}{warps} warp(s){cap:<14} {resources(compiled)}")


if __name__ == "__main__":
    main()
