"""Registers and spills of the Triton kernels compiled for a Hopper GPU (sm_90), on any machine, GPU or not.

    PYTHONPATH=src python benchmarks/kernel_resources.py [--arch 90]

Triton compiles ahead of time for a named target with its bundled ptxas, and its bundled cuobjdump reads the
resources, so register pressure can be worked on without a GPU. Integer arguments are compiled as plain i32
(no divisibility specialisation), so counts can differ a little from a real launch: on the H200, ncu read 212
registers for the scan backward where this prints 255. Spills show as STACK bytes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mambaprune.models import conv_triton, norm_triton, scan_triton

CUOBJDUMP = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
FP32_POINTERS = {"A_ptr", "D_ptr", "bias_ptr", "ck_ptr", "sc_ptr", "dB_ptr", "dC_ptr", "dA_ptr", "dD_ptr",
                 "dbias_ptr", "w_ptr", "b_ptr", "dw_ptr", "db_ptr",
                 "r_ptr", "rout_ptr", "drout_ptr", "dr_ptr", "mean_ptr", "rstd_ptr"}  # the rest are bf16 activations
FP32_SCALARS = {"eps"}  # the other scalar arguments are integers


def resources(kernel, constexprs: dict, num_warps: int, arch: int) -> str:
    signature = {name: "constexpr" if name in constexprs else
                 ("*fp32" if name in FP32_POINTERS else "*bf16") if name.endswith("_ptr") else
                 "fp32" if name in FP32_SCALARS else "i32"
                 for name in kernel.arg_names}
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        out = subprocess.run([CUOBJDUMP, "--dump-resource-usage", path], capture_output=True, text=True).stdout
    fields = next(line for line in out.splitlines() if "REG:" in line).split()
    return " ".join(f for f in fields if f.startswith(("REG:", "STACK:", "SHARED:")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90)
    arch = ap.parse_args().arch
    scan = dict(L=64, K=scan_triton.CHUNK, HAS_Z=True, HAS_BIAS=True, N=16)
    rows = [("scan forward", scan_triton._scan_fwd_kernel, {**scan, "BLOCK": scan_triton.FWD_BLOCK_D},
             scan_triton.FWD_WARPS),
            ("scan backward", scan_triton._scan_bwd_kernel, {**scan, "BLOCK": scan_triton.BWD_BLOCK_D},
             scan_triton.BWD_WARPS)]
    conv = dict(W=4, BL=conv_triton.BLOCK_L, BD=conv_triton.BLOCK_D)
    rows += [("conv forward", conv_triton._conv_fwd_kernel, conv, conv_triton.WARPS),
             ("conv backward", conv_triton._conv_bwd_kernel, conv, conv_triton.WARPS)]
    norm = dict(BM=norm_triton.BLOCK_M, BN=256)
    rows += [("add+norm fwd", norm_triton._add_norm_fwd_kernel, {**norm, "HAS_BRANCH": True}, norm_triton.WARPS),
             ("add+norm bwd", norm_triton._add_norm_bwd_kernel,
              {**norm, "HAS_DROUT": True, "HAS_DX": True, "PER_PROGRAM": 4}, norm_triton.WARPS)]
    print(f"sm_{arch}, Triton {triton.__version__}, mamba_small's constants (L 64, n 16, conv width 4, dim 192)")
    for name, kernel, constexprs, warps in rows:
        print(f"  {name:<15}{warps} warp(s)  {resources(kernel, constexprs, warps, arch)}")


if __name__ == "__main__":
    main()
