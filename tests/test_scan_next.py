"""The candidate scan kernels (models/scan_triton_next.py) against the float64 reference: output and every gradient,
under the Triton interpreter, with the same cases as test_scan.py's interpreter test."""

from __future__ import annotations

import pytest
import torch
from triton_interpreter import run_interpreted

# Every code path once: 1 or 2 tokens per loop iteration, with and without the lane-per-channel layout, a
# 64-channel block (partial at d=40), and both backward kernels.
COMBOS = [("pair", "registers"), ("lane", "scratch"), ("lane_pair_b64w2", "registers")]

_SCRIPT = r"""
import functools, json, sys, torch
sys.path.insert(0, {tests_dir!r})
import test_scan as T
from mambaprune.models import scan_triton_next as nx
out = {{}}
for fwd, bwd in __COMBOS__:
    fn = functools.partial(nx.selective_scan_next, fwd_cfg=nx.FWD_CANDIDATES[fwd], bwd_cfg=nx.BWD_CANDIDATES[bwd])
    for name, case, dtype, tol, chunk in [
        ("fp32_z_bias_bigdelta", (1, 65, 40, 5, True, True, 5.0), torch.float32, 1e-5, 8),
        ("fp32_plain_chunk4", (2, 9, 24, 4, False, False, 0.0), torch.float32, 1e-5, 4),
        ("bf16_z_bias", (1, 21, 40, 5, True, True, 0.0), torch.bfloat16, 2e-2, 8),
    ]:
        nx.CHUNK = chunk
        b, l, d, n, z, bias, shift = case
        try:
            T.assert_close_to_ref(fn, T.make_inputs(b, l, d, n, z, bias, shift), tol, dtype)
            out[f"{{fwd}}+{{bwd}}:{{name}}"] = "ok"
        except AssertionError as e:
            out[f"{{fwd}}+{{bwd}}:{{name}}"] = str(e)
print("RESULT" + json.dumps(out))
"""


@pytest.mark.parametrize("combo", COMBOS, ids=["+".join(c) for c in COMBOS])
def test_candidates_match_reference_under_interpreter(combo):
    """d=40 leaves a partial channel block, l=65 and l=21 partial chunks, l=9 with CHUNK=4 two full chunks and a
    partial one; the large-Δ case checks ΔA·h_{t-1} written as h_t − Δ·u·B where ΔA is tiny."""
    pytest.importorskip("triton")
    from mambaprune.models import scan_triton_next as nx

    assert combo[0] in nx.FWD_CANDIDATES and combo[1] in nx.BWD_CANDIDATES
    results = run_interpreted(_SCRIPT.replace("__COMBOS__", repr([combo])))
    assert len(results) == 3 and all(v == "ok" for v in results.values()), results


def test_every_candidate_is_tested():
    """Each forward candidate's code path (tokens per iteration, layout) and each backward kernel is in COMBOS,
    or the candidate differs from a tested one only in launch options (warps, register cap, block size)."""
    from mambaprune.models import scan_triton_next as nx

    tested_fwd = {(nx.FWD_CANDIDATES[f].pair, nx.FWD_CANDIDATES[f].lane) for f, _ in COMBOS}
    assert {(c.pair, c.lane) for c in nx.FWD_CANDIDATES.values()} <= tested_fwd
    tested_bwd = {nx.BWD_CANDIDATES[b].kernel for _, b in COMBOS} | {"today"}  # "today": test_scan.py's kernel
    assert {c.kernel for c in nx.BWD_CANDIDATES.values()} <= tested_bwd


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("combo", COMBOS, ids=["+".join(c) for c in COMBOS])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_candidates_cuda_match_reference(combo, dtype, tol):
    import functools

    from test_scan import assert_close_to_ref, make_inputs

    from mambaprune.models import scan_triton_next as nx

    fn = functools.partial(nx.selective_scan_next, fwd_cfg=nx.FWD_CANDIDATES[combo[0]],
                           bwd_cfg=nx.BWD_CANDIDATES[combo[1]])
    inputs = {k: v.cuda() if v is not None else None for k, v in make_inputs(4, 65, 100, 16, delta_shift=5.0).items()}
    assert_close_to_ref(fn, inputs, tol, dtype)
