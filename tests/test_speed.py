"""Side-by-side inference timing: both models measured, and a CUDA-graph replay computes what eager does."""

from __future__ import annotations

import pytest
import torch

from mambaprune import create_model
from mambaprune.speed import _cuda_graph, compare_throughput


def tiny(seed):
    torch.manual_seed(seed)
    return create_model("mamba_tiny", embed_dim=16, depth=1, img_size=8)


def test_compare_throughput_measures_every_model():
    rates = compare_throughput({"a": tiny(0), "b": tiny(1)}, batch=2, iters=2, device=torch.device("cpu"),
                               rounds=2, cuda_graph=True)  # cuda_graph is a no-op on CPU
    assert set(rates) == {"a", "b"} and all(r > 0 for r in rates.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_matches_eager():
    model = tiny(0).cuda().eval()
    x = torch.rand(3, 3, 8, 8, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, cache_enabled=False):
        replay = _cuda_graph(lambda: model(x))
        x.copy_(torch.rand_like(x))  # the graph reads x's memory: new values, same tensor
        torch.testing.assert_close(replay(), model(x))
