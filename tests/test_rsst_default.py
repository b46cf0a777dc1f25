"""RSST does what its name promises with the shipped settings: on the digits default (params.yaml's data, model,
training and prune settings, ``prune.method: rsst``), one round drives the units to remove to <= 1 % of the kept
units' mean group norm before the cut, for SSM channels and MLP neurons alike, and the cut costs <= 0.2 points.

The dense model is trained briefly (4 epochs instead of pretrain's 20, to keep the test near 30 s on one CPU
thread): its data gradients are larger than a fully trained model's, so it pushes back harder against the shrink.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mambaprune.config import load_params
from mambaprune.data import make_loaders, prepare_data
from mambaprune.pruning.rounds import RoundContext, run_round
from mambaprune.stage import build_model
from mambaprune.train import accuracy_of, fit

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN_EPOCHS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # this model is tiny: one intra-op thread is faster than several
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAMBAPRUNE_NO_PROGRESS", "1")
        params = load_params(ROOT / "params.yaml")
        params = dataclasses.replace(params, prune=dataclasses.replace(params.prune, method="rsst"),
                                     train=dataclasses.replace(params.train, device="cpu"))
        out = tmp_path_factory.mktemp("digits")
        prepare_data(params.data, params.seed, out)
        train, val, test, meta = make_loaders(out, params.train, params.seed, "cpu", params.evaluate.batch_size)
        torch.manual_seed(params.seed)
        model = build_model(params, meta)
        fit(model, train, val, params.train, PRETRAIN_EPOCHS, desc="pretrain")
        yield params, model, (train, val, test)
    torch.set_num_threads(threads)


def test_default_rsst_round_drives_removed_units_to_zero_and_the_cut_is_free(setup):
    params, model, (train, val, test) = setup
    cfg = params.prune
    ctx = RoundContext(cfg=cfg, round_index=1, num_rounds=cfg.num_rounds, base_config=model.config, history=[],
                       rewind_state=None, calib=None, seed=params.seed)

    def round_fit(m, epochs, hooks=(), tag=""):
        return fit(m, train, val, params.train, epochs, hooks=hooks, desc=tag)

    _, _, record = run_round(model, ctx, round_fit, lambda m: accuracy_of(m, val, test, "cpu"))
    norms = record["norms_at_cut"]
    print({k: f"{v:.3g}" for k, v in norms.items()},
          {phase: f"{record[phase]['val_acc']:.4f}/{record[phase]['test_acc']:.4f}"
           for phase in ("before", "before_cut", "after_cut")})
    for kind in ("ssm", "mlp"):
        assert norms[f"{kind}_removed_kept_ratio"] <= 0.01, (kind, norms)
        assert norms[f"{kind}_removed_kept_ratio"] == pytest.approx(
            norms[f"{kind}_removed_norm_mean"] / norms[f"{kind}_kept_norm_mean"])
    # the cut: at most 0.2 points over val + test together (1 image of 504)
    n_val, n_test = len(val.labels), len(test.labels)
    correct = {phase: record[phase]["val_acc"] * n_val + record[phase]["test_acc"] * n_test
               for phase in ("before_cut", "after_cut")}
    assert (correct["before_cut"] - correct["after_cut"]) / (n_val + n_test) <= 0.002 + 1e-9, record
