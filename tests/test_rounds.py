"""Pruning rounds (``pruning/rounds.py``): the schedule across chained rounds, rewinding, importance on the
trained weights, every method × rewind mode end to end on digits, the random control, refill's targets.

Schedule tests use a fake ``fit`` (no training) so they can run N = 1..4 rounds for several methods in
milliseconds; the rewind and end-to-end tests train for real (1 epoch per round, one CPU thread).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import mambaprune
from mambaprune import paths
from mambaprune.checkpoint import load_checkpoint, save_checkpoint
from mambaprune.config import DataCfg, PruneCfg, TrainCfg
from mambaprune.counting import count_flops, count_params
from mambaprune.data import make_loaders, prepare_data
from mambaprune.pruning.plan import compose_plans, plan_widths, slice_state
from mambaprune.pruning.rounds import (
    FIT_TAGS,
    RoundContext,
    choose_units,
    cumulative_plan,
    lambda_points,
    rewind_source,
    round_metrics,
    round_ratios,
    run_round,
)
from mambaprune.pruning.schedule import kept_fraction, round_targets
from mambaprune.pruning.units import weight_matrices
from mambaprune.train import accuracy_of
from mambaprune.train import fit as train_fit

SEED = 0
CPU = torch.device("cpu")
KIND_WIDTHS = {"ssm": "ssm_widths", "mlp": "mlp_widths"}
# lr 1e-2: the tiny model learns digits in a few epochs, and RSST's penalty (see test 3) has room to act.
TRAIN = TrainCfg(batch_size=64, lr=1e-2, warmup_epochs=1.0, device="cpu")


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: this tiny model runs ~2x faster than with several (less sync overhead)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MAMBAPRUNE_NO_PROGRESS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The real prepare step on sklearn digits (16x16 RGB), and the stage's loaders over it."""
    out = tmp_path_factory.mktemp("digits")
    prepare_data(DataCfg(img_size=16), SEED, out)
    train, val, test, meta = make_loaders(out, TRAIN, SEED, "cpu", 512)
    return train, val, test, meta


def _model(meta=None, seed=1, **kw):
    torch.manual_seed(seed)
    norm = dict(norm_mean=meta["mean"], norm_std=meta["std"]) if meta else {}
    kw = dict(dict(embed_dim=32, depth=2, d_state=4, patch_size=8), **kw)
    return mambaprune.create_model("mamba_tiny", num_classes=10, img_size=16, **norm, **kw)


@pytest.fixture(scope="module")
def pretrained(digits):
    """(dense trained model, its init state, its state after epoch 1): 2 real epochs from init."""
    train, val, _, meta = digits
    model = _model(meta)
    init = copy.deepcopy(model.state_dict())
    snaps = {}

    def snapshot(history, m):
        snaps[history[-1]["epoch"]] = copy.deepcopy(m.state_dict())
    train_fit(model, train, val, TRAIN, 2, callbacks=[snapshot])
    return model, init, snaps[1]


def _fake_fit(model, epochs, hooks=(), tag=""):
    return []


def _fake_eval(model):
    return {"val_acc": 0.0, "test_acc": 0.0}


def _real_fit(digits):
    train, val, _, _ = digits

    def fit(model, epochs, hooks=(), tag=""):
        return train_fit(model, train, val, TRAIN, epochs, hooks=hooks, desc=tag or "fit")
    return fit


def _real_eval(digits):
    _, val, test, _ = digits
    return lambda m: accuracy_of(m, val, test, CPU)


class RecordingFit:
    """A fit that keeps a deep copy of the model's state_dict at each call, before delegating."""

    def __init__(self, inner):
        self.inner, self.states = inner, []

    def __call__(self, model, epochs, hooks=(), tag=""):
        self.states.append(copy.deepcopy(model.state_dict()))
        return self.inner(model, epochs, hooks=hooks, tag=tag)


def _run_rounds(model, cfg, n, fit=_fake_fit, evaluate=_fake_eval, rewind_state=None, calib=None, seed=SEED,
                on_round=None):
    """Chain ``n`` rounds like the stage does (history = plans so far) → (final model, plans, records)."""
    base = copy.deepcopy(model.config)
    plans, records = [], []
    for r in range(1, n + 1):
        ctx = RoundContext(cfg=cfg, round_index=r, num_rounds=n, base_config=base, history=list(plans),
                           rewind_state=rewind_state, calib=calib, seed=seed)
        model, plan, rec = run_round(model, ctx, fit, evaluate)
        plans.append(plan)
        records.append(rec)
        if on_round is not None:
            on_round(r, model, plan, rec)
    return model, plans, records


def _assert_states_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), f"{k} differs"


def _finals(cfg):
    return {kind: cfg.final_ratio(kind) for kind in ("ssm", "mlp")}


# ---------------------------------------------------------------- 1. the schedule inside rounds

# non-uniform widths, so a wrong per-layer base width (or a compounded rounding) shows
WIDTHS = dict(ssm_widths=[64, 40], mlp_widths=[128, 72])


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("method,scope", [("magnitude", "layerwise"), ("magnitude", "global"),
                                          ("rsst", "layerwise"), ("rsst", "global"), ("refill", "layerwise"),
                                          ("refill", "global")])
def test_kept_units_follow_schedule_every_round(n, method, scope):
    cfg = PruneCfg(method=method, scope=scope, target="both", ratio=0.5, mlp_ratio=0.75, round_to=1,
                   min_keep=1, importance="l1", rewind="none")
    dense = _model(**WIDTHS)
    base, dense_state = copy.deepcopy(dense.config), copy.deepcopy(dense.state_dict())

    def check(r, model, plan, rec):
        assert rec["target_ratios"] == pytest.approx(round_ratios(cfg, r, n))
        for kind, final in _finals(cfg).items():
            widths = model.config[KIND_WIDTHS[kind]]
            targets = round_targets(base[KIND_WIDTHS[kind]], final, r, n, 1, 1)
            total = sum(base[KIND_WIDTHS[kind]])
            if scope == "layerwise":  # per layer, exactly the schedule's width
                assert widths == targets, (kind, r)
            elif method == "refill":  # refill splits the schedule's total by its own per-layer counts
                assert abs(sum(widths) - sum(targets)) <= len(widths) / 2, (kind, r)
                continue
            else:  # one global count: round(f·Σ base); per-layer rounding of the schedule differs by < depth/2
                f = kept_fraction(final, r, n)
                assert sum(widths) == math.floor(f * total + 0.5 + 1e-9), (kind, r)
                assert abs(sum(widths) - sum(targets)) <= len(widths) / 2
            if r == n:  # kept fraction after the last round: exactly 1 − ratio
                assert sum(widths) == (1 - final) * total
                if scope == "layerwise":
                    assert widths == [(1 - final) * w for w in base[KIND_WIDTHS[kind]]]
        # the chained rounds compose: the model is the dense one sliced by the cumulative plan (no training)
        total_plan = cumulative_plan(plans_so_far + [plan])
        plans_so_far.append(plan)
        widths = plan_widths(total_plan, base)
        assert model.config["ssm_widths"] == widths["ssm"] and model.config["mlp_widths"] == widths["mlp"]
        _assert_states_equal(model.state_dict(), slice_state(dense_state, base, total_plan)[0])

    plans_so_far: list = []
    _, _, records = _run_rounds(dense, cfg, n, on_round=check)
    params = [rec["params"] for rec in records]
    assert all(b < a for a, b in zip(params, params[1:]))


# ---------------------------------------------------------------- 2. rewinding


@pytest.mark.parametrize("method", ["magnitude", "refill"])
def test_rewind_init_restores_init_weights_sliced_by_cumulative_plan(digits, pretrained, method):
    dense, init, _ = pretrained
    base = dense.config
    cfg = PruneCfg(method=method, ratio=0.5, round_to=4, min_keep=4, rewind="init", epochs=1)
    per_round = []

    def recorder(r, model, plan, rec):
        per_round.append((fit.states[-1], plan, rec))

    fit = RecordingFit(_real_fit(digits))
    incoming = copy.deepcopy(dense)
    incoming_state = copy.deepcopy(incoming.state_dict())
    _run_rounds(incoming, cfg, 2, fit=fit, evaluate=_fake_eval, rewind_state=init, on_round=recorder)
    assert len(fit.states) == 2  # one fit call per round (retrain), recorded before any step

    (state1, plan1, rec1), (state2, plan2, rec2) = per_round
    assert "after_rewind" in rec1 and "after_rewind" in rec2
    _assert_states_equal(state1, slice_state(init, base, plan1)[0])
    total = compose_plans(plan1, plan2)
    assert total == cumulative_plan([plan1, plan2])
    _assert_states_equal(state2, slice_state(init, base, total)[0])

    # the test is sharp: round 2's own plan is real, and slicing init by it alone gives other weights
    assert any(k is not None for kind in ("ssm", "mlp") for k in plan2[kind])
    wrong = slice_state(init, base, plan2)[0]
    assert any(not torch.equal(state2[k], wrong[k]) for k in state2)
    # ... and the rewound weights are not the trained ones
    trained_sliced = slice_state(incoming_state, base, plan1)[0]
    assert any(not torch.equal(state1[k], trained_sliced[k]) for k in state1 if k.startswith("blocks."))


def test_rewind_none_keeps_trained_sliced_weights(digits, pretrained):
    dense, init, _ = pretrained
    cfg = PruneCfg(method="magnitude", ratio=0.5, round_to=4, min_keep=4, rewind="none", epochs=1)
    fit = RecordingFit(_real_fit(digits))
    incoming = []
    model = copy.deepcopy(dense)
    base = copy.deepcopy(model.config)
    plans = []
    for r in (1, 2):
        incoming.append((copy.deepcopy(model.state_dict()), copy.deepcopy(model.config)))
        ctx = RoundContext(cfg=cfg, round_index=r, num_rounds=2, base_config=base, history=list(plans),
                           rewind_state=init, seed=SEED)  # a rewind state is there, and must be ignored
        model, plan, rec = run_round(model, ctx, fit, _fake_eval)
        assert "after_rewind" not in rec
        plans.append(plan)
    for (state, config), plan, seen in zip(incoming, plans, fit.states):
        _assert_states_equal(seen, slice_state(state, config, plan)[0])
    # round 2 started from round 1's trained weights, not from init
    init_sliced = slice_state(init, base, cumulative_plan(plans))[0]
    assert not torch.equal(fit.states[1]["blocks.0.mlp.fc1.weight"], init_sliced["blocks.0.mlp.fc1.weight"])


def _mlp_l1(state, config):
    """l1 importance of MLP neurons (mean |w| over fc1 row, fc1 bias, fc2 column), per block."""
    out = []
    for i in range(config["depth"]):
        p = f"blocks.{i}.mlp."
        s = state[p + "fc1.weight"].abs().sum(1) + state[p + "fc1.bias"].abs() + state[p + "fc2.weight"].abs().sum(0)
        out.append(s)
    return out


@pytest.mark.parametrize("rewind", ["init", "none"])
def test_importance_is_computed_on_trained_weights_not_rewind_state(rewind):
    init_model = _model()
    init = copy.deepcopy(init_model.state_dict())
    # "trained" weights whose l1 ranking is the REVERSE of init's: scale neuron j by 1/s_j², so its score is 1/s_j
    trained = copy.deepcopy(init_model)
    with torch.no_grad():
        for i, s in enumerate(_mlp_l1(init, init_model.config)):
            c = 1.0 / s.pow(2)
            p = trained.blocks[i].mlp
            p.fc1.weight.mul_(c[:, None])
            p.fc1.bias.mul_(c)
            p.fc2.weight.mul_(c[None, :])
    cfg = PruneCfg(method="magnitude", target="mlp", ratio=0.5, scope="layerwise", round_to=1, min_keep=1,
                   importance="l1", rewind=rewind)
    fit = RecordingFit(_fake_fit)
    ctx = RoundContext(cfg=cfg, round_index=1, num_rounds=1, base_config=init_model.config, history=[],
                       rewind_state=init, seed=SEED)
    trained_state = copy.deepcopy(trained.state_dict())
    model, plan, _ = run_round(trained, ctx, fit, _fake_eval)
    for i, (s_init, s_trained) in enumerate(zip(_mlp_l1(init, init_model.config),
                                               _mlp_l1(trained_state, init_model.config))):
        half = s_init.numel() // 2
        by_trained = sorted(s_trained.argsort(descending=True)[:half].tolist())
        by_init = sorted(s_init.argsort(descending=True)[:half].tolist())
        assert set(by_trained).isdisjoint(by_init)  # the crafted case: the two rankings disagree completely
        assert plan["mlp"][i] == by_trained, f"block {i}: units not chosen on the trained weights"
    assert plan["ssm"] is None
    # and the weights the retraining starts from are those units' init (rewind) or trained (none) values
    source = init if rewind == "init" else trained_state
    _assert_states_equal(fit.states[0], slice_state(source, init_model.config, plan)[0])


# ---------------------------------------------------------------- 3. every method × rewind mode, for real

VARIANTS = [
    *[(dict(method="magnitude", importance=imp), rw) for imp in ("l1", "taylor", "random")
      for rw in ("none", "init", "epoch")],
    *[(dict(method="refill", fillback_rate=0.0, refill_criterion=crit), rw) for crit in ("remain", "magnitude")
      for rw in ("none", "init", "epoch")],
    # rewind does not apply to rsst: run it with a rewind state given, which must be ignored
    *[(dict(method="rsst", rsst_update="gradient", rsst_penalty=pen, rsst_strength=50.0), "init")
      for pen in ("group_l2", "group_lasso")],
    (dict(method="rsst"), "init"),  # the default: decoupled
]


@pytest.mark.parametrize("variant,rewind", VARIANTS,
                         ids=[f"{'-'.join(str(v) for v in d.values())}-rewind_{r}" for d, r in VARIANTS])
def test_three_rounds_on_digits(digits, pretrained, variant, rewind):
    train = digits[0]
    dense, init, epoch1 = pretrained
    cfg = PruneCfg(ratio=0.5, round_to=4, min_keep=4, rewind=rewind, epochs=1, **variant)
    rewind_state = {"none": None, "init": init, "epoch": epoch1}[rewind]
    model, plans, records = _run_rounds(copy.deepcopy(dense), cfg, 3, fit=_real_fit(digits),
                                        evaluate=_real_eval(digits), rewind_state=rewind_state, calib=train)
    params = [count_params(dense), *[rec["params"] for rec in records]]
    assert all(b < a for a, b in zip(params, params[1:])), params
    summary = []
    for r, rec in enumerate(records, 1):
        for phase in ("before", "before_cut", "after_cut", "after"):
            for k in ("val_acc", "test_acc"):
                assert math.isfinite(rec[phase][k]) and 0.0 <= rec[phase][k] <= 1.0, (r, phase, k)
        assert rec["after"]["val_acc"] >= 0.3, f"round {r}: val acc {rec['after']['val_acc']:.3f} (chance 0.1)"
        for kind, final in _finals(cfg).items():
            widths = rec[KIND_WIDTHS[kind]]
            assert all(w % 4 == 0 and w >= 4 for w in widths), (kind, widths)
            base = dense.config[KIND_WIDTHS[kind]]
            targets = round_targets(base, final, r, 3, 4, 4)
            if cfg.method == "refill":
                assert widths == targets
            else:  # global scope: the total is f·Σ base up to per-layer rounding to 4
                assert abs(sum(widths) - kept_fraction(final, r, 3) * sum(base)) <= 2 * len(base) + 0.5
        has_rewind = cfg.method != "rsst" and rewind != "none"
        assert ("after_rewind" in rec) == has_rewind
        if cfg.method == "rsst":
            steps = len(train) * cfg.epochs
            trace = rec["lambda_trace"]
            assert len(trace) == steps  # one λ per training step
            assert all(b > a for a, b in zip(trace, trace[1:]))
            if cfg.rsst_update == "gradient":
                assert trace[-1] == pytest.approx(cfg.rsst_strength)
            else:  # the proximal coefficients c_t: ∏ 1/(1 + 2c_t) = 1/F over the round
                assert math.prod(1 + 2 * c for c in trace) == pytest.approx(cfg.rsst_strength, rel=1e-9)
            # Why strength 50: under AdamW the penalty's gradient is rescaled like any other, so a target
            # group shrinks by ~lr per step once the penalty dominates its data gradient, whatever λ is;
            # the exp^4 schedule keeps λ(p) tiny for most of the round (λ(0.5) ≈ 0.04·g), so g must be
            # large for the penalty to dominate over most of a 21-step round (g ≳ 0.1 already saturates
            # here; the default 0.01 leaves MLP groups at ~0.55 of the kept norm, g = 50 at ~0.08).
            n = rec["norms_at_cut"]
            assert n["mlp_removed_norm_mean"] < 0.2 * n["mlp_kept_norm_mean"], n
            # SSM groups include D (init 1.0) and conv1d (kaiming-uniform, |w| up to 0.5): with steps of ~lr
            # they cannot reach zero in one short round, so only a clear drop is required here.
            assert n["ssm_removed_norm_mean"] < 0.8 * n["ssm_kept_norm_mean"], n
            if cfg.rsst_update == "decoupled":  # the shrink is not capped at ~lr per step: all groups go
                assert n["ssm_removed_norm_mean"] < 0.01 * n["ssm_kept_norm_mean"], n
                assert n["mlp_removed_norm_mean"] < 0.01 * n["mlp_kept_norm_mean"], n
            # the penalised units carry almost nothing, so the cut itself barely moves accuracy
            assert abs(rec["after_cut"]["val_acc"] - rec["before_cut"]["val_acc"]) <= 0.05
        summary.append(f"r{r}: {rec['before']['val_acc']:.3f} -> cut {rec['before_cut']['val_acc']:.3f}/"
                       f"{rec['after_cut']['val_acc']:.3f} -> {rec['after']['val_acc']:.3f}")
    print(variant, rewind, "; ".join(summary))
    assert plans and records[-1]["ssm_widths"] == model.config["ssm_widths"]


# ---------------------------------------------------------------- 4. the random control


def _one_round_plan(model, importance, seed, scope="global"):
    cfg = PruneCfg(method="magnitude", ratio=0.5, scope=scope, round_to=1, min_keep=1, importance=importance)
    ctx = RoundContext(cfg=cfg, round_index=1, num_rounds=1, base_config=model.config, history=[],
                       rewind_state=None, seed=seed)
    return run_round(copy.deepcopy(model), ctx, _fake_fit, _fake_eval)[1]


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_random_importance_is_a_seeded_control_unlike_l1(pretrained, scope):
    dense = pretrained[0]
    l1 = _one_round_plan(dense, "l1", SEED, scope)
    rnd = _one_round_plan(dense, "random", SEED, scope)
    assert rnd == _one_round_plan(dense, "random", SEED, scope)  # reproducible with the same seed
    for kind in ("ssm", "mlp"):
        for a, b in zip(rnd[kind], l1[kind]):
            assert a != b, f"{kind}: random kept the same units as l1"
    other_seed = _one_round_plan(dense, "random", SEED + 1, scope)
    assert any(a != b for kind in ("ssm", "mlp") for a, b in zip(rnd[kind], other_seed[kind]))
    # a control: the draw does not look at the weights (a fresh model of the same widths gets the same plan)
    assert _one_round_plan(_model(seed=7), "random", SEED, scope) == rnd


# ---------------------------------------------------------------- 5. refill: the schedule decides how many, fillback
#                                                                     how many of those come back


@pytest.mark.parametrize("criterion", ["remain", "magnitude"])
@pytest.mark.parametrize("round_to", [1, 4])
def test_refill_keeps_schedule_target_without_fillback(pretrained, criterion, round_to):
    dense = pretrained[0]
    cfg = PruneCfg(method="refill", scope="layerwise", ratio=0.5, mlp_ratio=0.75, fillback_rate=0.0,
                   refill_criterion=criterion, round_to=round_to, min_keep=round_to)
    base = dense.config
    seen = []

    def check(r, model, plan, rec):
        for kind, final in _finals(cfg).items():
            targets = round_targets(base[KIND_WIDTHS[kind]], final, r, 3, round_to, round_to)
            assert model.config[KIND_WIDTHS[kind]] == targets, (kind, r)
            assert [layer["n_keep"] for layer in rec["selection"][kind]["layers"]] == targets
            if criterion == "magnitude":  # which ones: the largest total |w| of each layer (refill decides)
                for i, keep in enumerate(plan[kind]):
                    state = {n: p.detach() for n, p in seen[-1].named_parameters()}
                    mag = torch.cat([m.abs() for m in weight_matrices(state, seen[-1].config, kind, i)], 1).sum(1)
                    chosen = range(len(mag)) if keep is None else keep
                    top = sorted(mag.argsort(descending=True, stable=True)[:targets[i]].tolist())
                    assert sorted(chosen) == top
        seen.append(model)

    seen.append(copy.deepcopy(dense))
    _run_rounds(copy.deepcopy(dense), cfg, 3, on_round=check)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_refill_fillback_brings_back_that_share_of_the_removed_units_in_both_scopes(pretrained, scope):
    """fillback_rate means the same in both scopes (the seed's): per layer, that share of the units the round would
    remove at fillback 0 come back, the next ones by the refill criterion; 1 removes nothing."""
    dense = pretrained[0]
    kept = {}
    for fb in (0.0, 0.5, 1.0):
        cfg = PruneCfg(method="refill", scope=scope, ratio=0.5, mlp_ratio=0.75, fillback_rate=fb, round_to=1,
                       min_keep=1)
        ctx = RoundContext(cfg=cfg, round_index=1, num_rounds=2, base_config=dense.config, history=[],
                           rewind_state=None)
        kept[fb] = choose_units(dense, ctx).plan
    assert kept[0.0] != kept[1.0]
    for kind, final in _finals(cfg).items():
        widths = dense.config[KIND_WIDTHS[kind]]
        count = {fb: [w if k is None else len(k) for k, w in zip(plan[kind], widths)] for fb, plan in kept.items()}
        targets = round_targets(widths, final, 1, 2, 1, 1)
        if scope == "layerwise":
            assert count[0.0] == targets, kind
        else:  # the schedule's total, split by Refill's n_eq
            assert abs(sum(count[0.0]) - sum(targets)) <= len(widths) / 2, kind
        assert count[0.0] != widths and count[1.0] == widths, kind
        assert count[0.5] == [int(n + (w - n) * 0.5) for n, w in zip(count[0.0], widths)], kind
        for a, b, w in zip(kept[0.0][kind], kept[0.5][kind], widths):  # those that come back add to the kept
            assert set(a or range(w)) <= set(b or range(w))


def test_refill_global_splits_the_total_by_n_eq():
    """scope global: the schedule fixes the total, Refill's n_eq per layer sets the split."""
    dense = _model(**WIDTHS)
    with torch.no_grad():  # block 1's MLP weights are 10x larger: they survive magnitude pruning
        dense.blocks[1].mlp.fc1.weight.mul_(10)
        dense.blocks[1].mlp.fc2.weight.mul_(10)
    cfg = PruneCfg(method="refill", scope="global", target="mlp", ratio=0.5, fillback_rate=0.0, round_to=1,
                   min_keep=1)
    ctx = RoundContext(cfg=cfg, round_index=1, num_rounds=1, base_config=dense.config, history=[], rewind_state=None)
    plan = choose_units(dense, ctx).plan
    split = [len(k) for k in plan["mlp"]]
    assert abs(sum(split) - 100) <= 1  # half of 128 + 72
    assert split[1] > 36  # the layer holding the surviving weights keeps more than its proportional share


# ---------------------------------------------------------------- 6. what a round reads and publishes


def test_rewind_source_follows_prune_rewind_and_rsst_never_rewinds():
    assert rewind_source(PruneCfg(rewind="none")) is None
    assert rewind_source(PruneCfg(rewind="init", rewind_epoch=3)) == paths.init_checkpoint()
    assert rewind_source(PruneCfg(rewind="epoch", rewind_epoch=0)) == paths.init_checkpoint()
    assert rewind_source(PruneCfg(rewind="epoch", rewind_epoch=3)) == paths.epoch_checkpoint(3)
    assert rewind_source(PruneCfg(method="rsst", rewind="init")) is None


def test_round_metrics_report_size_against_dense_and_the_selection():
    dense = _model(**WIDTHS)
    cfg = PruneCfg(method="magnitude", ratio=0.5, min_keep=1, round_to=1, rewind="none")
    model, _, (record,) = _run_rounds(copy.deepcopy(dense), cfg, 1)
    m = round_metrics(model, record, dense)
    assert m["param_reduction"] == 1 - count_params(model) / count_params(dense)
    assert m["flop_reduction"] == 1 - count_flops(model) / count_flops(dense) and 0 < m["flop_reduction"] < 1
    assert (m["dense_params"], m["dense_flops"]) == (count_params(dense), count_flops(dense))
    assert m["target_ratios"] == {"ssm": 0.5, "mlp": 0.5} and m["selection_warnings"] == record["warnings"] == []
    assert m["ssm_widths"] == model.config["ssm_widths"] and "rsst_lambda_trace" not in m
    record = dict(record, lambda_trace=[float(i) for i in range(120)])
    m = round_metrics(model, record, dense)
    assert m["rsst_lambda_final"] == 119.0 and m["rsst_lambda_trace"] == [float(i) for i in range(0, 120, 2)]
    assert lambda_points([0.5, 0.7]) == [(0, 0.5), (1, 0.7)] and lambda_points([]) == []


def test_rounds_fit_under_the_tags_the_summary_orders_by():
    tags = []

    def fit(model, epochs, hooks=(), tag=""):
        tags.append(tag)
        return []

    for method in ("magnitude", "rsst"):
        _run_rounds(_model(), PruneCfg(method=method, ratio=0.5, min_keep=1, round_to=1), 1, fit=fit)
    assert tags == ["retrain", "rsst", "recover"] and set(tags) <= set(FIT_TAGS)


# ---------------------------------------------------------------- 7. the state and embed kinds in the rounds

EVERY_KIND = "ssm+mlp+state+embed"


@pytest.mark.parametrize("method", ["magnitude", "refill", "rsst"])
def test_every_kind_follows_the_schedule_to_hand_computed_widths(method):
    """Two rounds, layerwise, round_to = min_keep = 4, of ssm [64, 40], mlp [128, 72], 16 states, width 32. Kept
    after round r of 2: (1 − ratio)^(r/2) of the base width, rounded half up to a multiple of 4:
    ssm (0.5): 45.25 → 44, 28.28 → 28, then 32, 20; mlp (0.75): 64, 36, then 32, 18 → 20 (4.5 fours round up);
    state (0.5): 11.31 → 12, then 8; embed (0.25): 27.71 → 28, then 24."""
    cfg = PruneCfg(method=method, scope="layerwise", target=EVERY_KIND, ratio=0.5, mlp_ratio=0.75, state_ratio=0.5,
                   embed_ratio=0.25, round_to=4, min_keep=4, rewind="none")
    dense = _model(d_state=16, **WIDTHS)
    base, dense_state = copy.deepcopy(dense.config), copy.deepcopy(dense.state_dict())
    expected = {1: dict(ssm_widths=[44, 28], mlp_widths=[64, 36], d_states=[12, 12], embed_dim=28),
                2: dict(ssm_widths=[32, 20], mlp_widths=[32, 20], d_states=[8, 8], embed_dim=24)}
    plans_so_far: list = []

    def check(r, model, plan, rec):
        assert {k: model.config[k] for k in expected[r]} == expected[r], (method, r)
        assert {k: rec[k] for k in expected[r]} == expected[r]
        m = round_metrics(model, rec, dense)
        assert {k: m[k] for k in expected[r]} == expected[r]
        assert m["target_ratios"] == pytest.approx({"ssm": 1 - 0.5 ** (r / 2), "mlp": 1 - 0.25 ** (r / 2),
                                                    "state": 1 - 0.5 ** (r / 2), "embed": 1 - 0.75 ** (r / 2)})
        for kind in ("ssm", "mlp", "state", "embed"):  # each kind's removed/kept norms at the cut, as published
            assert m["norms_at_cut"][f"{kind}_removed_kept_ratio"] == pytest.approx(
                m["norms_at_cut"][f"{kind}_removed_norm_mean"] / m["norms_at_cut"][f"{kind}_kept_norm_mean"])
        assert len(plan["embed"]) == expected[r]["embed_dim"] and all(k is not None for k in plan["state"])
        # the model is the dense one sliced by the composed plan of every kind
        plans_so_far.append(plan)
        _assert_states_equal(model.state_dict(), slice_state(dense_state, base, cumulative_plan(plans_so_far))[0])

    _run_rounds(dense, cfg, 2, on_round=check)
    assert len(plans_so_far) == 2


def test_every_kind_rounds_rewind_and_reload_exactly(digits, pretrained, tmp_path):
    """Real rounds on digits with target ssm+mlp+state+embed and rewind to init: each retraining starts from init
    sliced by the composed plan of every kind (exact), and the checkpoint rebuilds the model (state sizes, embed
    width, plan history) with exactly its outputs. Layerwise, round_to 1: kept (1 − 0.5)^(r/2) of ssm 64, mlp 128,
    4 states, and (1 − 0.25)^(r/2) of 32 channels: 45.25 → 45, 90.51 → 91, 2.83 → 3, 27.71 → 28; then 32, 64, 2,
    24."""
    from mambaprune.checkpoint import CheckpointError, load_matching

    dense, init, _ = pretrained
    base = copy.deepcopy(dense.config)
    cfg = PruneCfg(method="magnitude", scope="layerwise", target=EVERY_KIND, ratio=0.5, embed_ratio=0.25,
                   round_to=1, min_keep=1, rewind="init", epochs=1)
    fit = RecordingFit(_real_fit(digits))
    model, plans, records = _run_rounds(copy.deepcopy(dense), cfg, 2, fit=fit, evaluate=_fake_eval,
                                        rewind_state=init)
    assert [(r["ssm_widths"], r["mlp_widths"], r["d_states"], r["embed_dim"]) for r in records] == [
        ([45, 45], [91, 91], [3, 3], 28), ([32, 32], [64, 64], [2, 2], 24)]
    assert all("after_rewind" in r for r in records)
    _assert_states_equal(fit.states[0], slice_state(init, base, plans[0])[0])
    _assert_states_equal(fit.states[1], slice_state(init, base, cumulative_plan(plans))[0])
    # sharp: round 2 cuts states and channels of its own, and init sliced by its plan alone is other weights
    assert plans[1]["embed"] is not None and all(k is not None for k in plans[1]["state"])
    wrong = slice_state(init, base, plans[1])[0]
    assert any(wrong[k].shape != fit.states[1][k].shape or not torch.equal(wrong[k], fit.states[1][k])
               for k in wrong)

    path = save_checkpoint(model, tmp_path / "r2.pt", plans=plans)
    loaded, extra = load_checkpoint(path, return_extra=True)
    assert loaded.config == model.config and loaded.d_states == [2, 2] and loaded.config["embed_dim"] == 24
    assert extra["plans"] == plans
    x = next(iter(digits[1]))[0][:16]
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    dense_path = save_checkpoint(dense, tmp_path / "pretrained.pt")
    load_matching(path, dense, dense_path)  # the same network, its pruned widths (embed width too) aside
    with pytest.raises(CheckpointError, match="embed_dim 32 vs 24"):  # pruning never widens: another model
        load_matching(dense_path, model, path)
    with pytest.raises(CheckpointError, match="embed_dim 24 vs 32"):
        load_matching(path, dense, dense_path, widths=True)


def test_rsst_shrinks_the_state_and_embed_groups_it_removes(digits, pretrained):
    """RSST's decoupled shrink acts on every targeted kind's groups: at the cut the removed states' B/C rows and
    the removed residual channels (every entry over the model) are ~0 next to the kept ones, as for ssm/mlp."""
    dense = pretrained[0]
    cfg = PruneCfg(method="rsst", scope="layerwise", target=EVERY_KIND, ratio=0.5, embed_ratio=0.25, round_to=2,
                   min_keep=2, epochs=1)
    _, plans, (rec,) = _run_rounds(copy.deepcopy(dense), cfg, 1, fit=_real_fit(digits), evaluate=_real_eval(digits))
    n = rec["norms_at_cut"]
    for kind in ("ssm", "mlp", "state", "embed"):
        assert n[f"{kind}_removed_norm_mean"] < 0.01 * n[f"{kind}_kept_norm_mean"], (kind, n)
    assert rec["d_states"] == [2, 2] and rec["embed_dim"] == 24
