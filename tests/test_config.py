"""params.yaml validation: every kind of bad value gives one message naming key, value and what is allowed."""

from pathlib import Path

import pytest
import yaml

from mambaprune.config import ConfigError, ModelCfg, Params, PruneCfg, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_yaml_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert params.prune.num_rounds == len(params.prune.rounds)


def test_defaults_when_sections_are_missing():
    p = parse_params({})
    assert p.data.name == "digits" and p.prune.scope == "global" and p.seed == 0


@pytest.mark.parametrize("raw, message", [
    ({"prune": {"ratio": 1.2}}, "prune.ratio must be in [0.0, 1.0), got 1.2"),
    ({"prune": {"ratio": 1.0}}, "prune.ratio must be in [0.0, 1.0), got 1.0"),
    ({"prune": {"ratio": "half"}}, "prune.ratio must be a number in [0.0, 1.0), got 'half'"),
    ({"prune": {"scope": "layer-wise"}}, "prune.scope must be one of 'global', 'layerwise', got 'layer-wise'"),
    ({"prune": {"method": "lth"}}, "prune.method must be one of 'magnitude', 'refill', 'rsst', got 'lth'"),
    ({"prune": {"rewind": True}}, "prune.rewind must be a string"),
    ({"prune": {"rewind": "epoch", "rewind_epoch": 6}}, "prune.rewind_epoch must be in [0, 5]"),
    ({"prune": {"rewind": "epoch", "rewind_epoch": 3}, "pretrain": {"epochs": 2}},
     "prune.rewind_epoch must be in [0, 2]"),
    ({"prune": {"min_keep": 0}}, "prune.min_keep must be in [1, 65536], got 0"),
    ({"prune": {"round_to": 2.5}}, "prune.round_to must be an integer in [1, 1024], got 2.5"),
    ({"prune": {"rsst_strength": float("nan")}}, "prune.rsst_strength must be finite"),
    ({"prune": {"method": "rsst", "rsst_strength": 0.01}}, "prune.rsst_strength must be >= 1 with "
     "prune.rsst_update: decoupled"),
    ({"prune": {"method": "rsst", "rsst_penalty": "group_lasso"}}, "prune.rsst_penalty 'group_lasso' needs "
     "prune.rsst_update: gradient"),
    ({"train": {"lr": 0}}, "train.lr must be in (0.0, 10.0], got 0"),
    ({"train": {"batch_size": True}}, "train.batch_size must be an integer"),
    ({"train": {"hflip": "yes"}}, "train.hflip must be true or false, got 'yes'"),
    ({"train": {"optimizer": "adam"}}, "train.optimizer must be one of 'adamw', 'sgd', got 'adam'"),
    ({"data": {"name": "mnist"}}, "data.name must be one of 'digits', 'cifar10', 'cifar100', 'imagefolder'"),
    ({"data": {"img_size": 15}}, "data.img_size (15) must be a multiple of model.patch_size (4)"),
    ({"model": {"name": "mamba_huge"}}, "model.name must be one of"),
    ({"model": {"embed_dim": None, "depth": -1}}, "model.depth must be in [1, 256], got -1"),
    ({"seed": -3}, "seed must be in [0, 2147483647], got -3"),
    ({"pretrain": {"epochs": None}}, "pretrain.epochs must not be null"),
    ({"finetune": {"epoch": 3}}, "unknown key finetune.epoch; allowed keys: epochs, lr_scale"),
    ({"bogus": 1}, "unknown key bogus; allowed keys: seed, data"),
    ({"train": [1, 2]}, "train. must be a mapping"),
    ({"prune": {"rounds": {"r1": "pretrained", "r2": "r3"}, "last": "r2"}}, "prune.rounds.r2 starts from 'r3'"),
    ({"prune": {"rounds": {"r1": "pretrained", "r2": "r1"}, "last": "r1"}}, "prune.last must be the final round"),
    ({"prune": {"rounds": {"r1": "pretrained"}, "last": "r9"}}, "prune.last must be one of the rounds (r1)"),
    ({"prune": {"rounds": {}, "last": "r1"}}, "prune.rounds must name at least one round"),
    ({"prune": {"rounds": {"r1": "pretrained", "r2": "pretrained"}, "last": "r2"}}, "must form one chain"),
    ({"evaluate": {"speed_modes": "eager"}}, "evaluate.speed_modes must be a non-empty list without repeats"),
    ({"evaluate": {"speed_modes": []}}, "evaluate.speed_modes must be a non-empty list without repeats"),
    ({"evaluate": {"speed_modes": ["one_call", "one_call"]}}, "evaluate.speed_modes must be a non-empty list"),
    ({"evaluate": {"speed_modes": ["eager", "graph", "one_call"]}}, "evaluate.speed_modes must be a list, each one "
     "of 'eager', 'compiled', 'one_call', got ['eager', 'graph', 'one_call']"),
    ({"evaluate": {"speed_modes": ["eager", "compiled"]}}, "evaluate.speed_modes must include 'one_call' (the "
     "headline speedup is the one-call path's"),
])
def test_bad_values_give_one_clear_message(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert message in str(err.value)


def test_rsst_settings_of_the_other_update_or_method_load():
    """group_lasso and a strength below 1 are fine for the gradient update, and ignored by other methods."""
    for prune in ({"method": "rsst", "rsst_update": "gradient", "rsst_penalty": "group_lasso", "rsst_strength": 0.01},
                  {"method": "refill", "rsst_penalty": "group_lasso", "rsst_strength": 0.01}):
        assert parse_params({"prune": prune}).prune.rsst_strength == 0.01


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prune: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_ratio_helpers_follow_target():
    p = parse_params({"prune": {"target": "ssm", "ratio": 0.7}}).prune
    assert (p.final_ratio("ssm"), p.final_ratio("mlp")) == (0.7, 0.0)
    p = parse_params({"prune": {"target": "both", "ratio": 0.7, "mlp_ratio": 0.3}}).prune
    assert (p.final_ratio("ssm"), p.final_ratio("mlp")) == (0.7, 0.3)
    p = parse_params({"prune": {"target": "mlp", "ratio": 0.7}}).prune
    assert (p.final_ratio("ssm"), p.final_ratio("mlp")) == (0.0, 0.7)


@pytest.mark.parametrize("target,kinds", [("both", ("ssm", "mlp")), ("ssm+mlp", ("ssm", "mlp")),
                                          ("state+ssm", ("ssm", "state")), ("embed", ("embed",)),
                                          ("ssm + mlp+state+embed", ("ssm", "mlp", "state", "embed"))])
def test_target_combinations_name_their_kinds(target, kinds):
    p = parse_params({"prune": {"target": target, "ratio": 0.5}}).prune
    assert p.kinds == kinds
    assert {k: p.final_ratio(k) for k in ("ssm", "mlp", "state", "embed")} == {
        k: 0.5 if k in kinds else 0.0 for k in ("ssm", "mlp", "state", "embed")}


def test_per_kind_ratios_default_to_ratio():
    p = parse_params({"prune": {"target": "ssm+mlp+state+embed", "ratio": 0.6, "mlp_ratio": 0.3,
                                "state_ratio": 0.5, "embed_ratio": 0.25}}).prune
    assert [p.final_ratio(k) for k in ("ssm", "mlp", "state", "embed")] == [0.6, 0.3, 0.5, 0.25]
    p = parse_params({"prune": {"target": "state+embed", "ratio": 0.6, "state_ratio": 0.5}}).prune
    assert [p.final_ratio(k) for k in ("ssm", "mlp", "state", "embed")] == [0.0, 0.0, 0.5, 0.6]


@pytest.mark.parametrize("prune,message", [
    ({"target": "ssm+attn"}, r"prune.target 'ssm\+attn': unknown kind 'attn'; use kinds from ssm, mlp, state, embed"),
    ({"target": "ssm+"}, r"unknown kind ''"),
    ({"target": "both+state"}, r"unknown kind 'both'"),
    ({"target": "ssm+mlp+ssm"}, r"names ssm more than once"),
    ({"target": "ssm+mlp", "state_ratio": 0.5},
     r"prune.state_ratio is 0.5 but prune.target 'ssm\+mlp' does not prune state: add '\+state' to prune.target, "
     r"or set prune.state_ratio to null"),
    ({"target": "both", "embed_ratio": 0.25}, r"prune.embed_ratio is 0.25 .* does not prune embed"),
    ({"target": "ssm", "mlp_ratio": 0.3}, r"prune.mlp_ratio is 0.3 but prune.target 'ssm' does not prune mlp"),
    ({"target": "ssm+state", "state_ratio": 1.0}, r"prune.state_ratio must be in \[0.0, 1.0\), got 1.0"),
    ({"target": "embed", "embed_ratio": -0.1}, r"prune.embed_ratio must be in \[0.0, 1.0\), got -0.1"),
])
def test_bad_target_combinations_fail_at_load(prune, message):
    with pytest.raises(ConfigError, match=message):
        parse_params({"prune": prune})


def test_round_index_walks_the_chain():
    p = parse_params({"prune": {"rounds": {"a": "pretrained", "b": "a", "c": "b"}, "last": "c"}}).prune
    assert [p.round_index(r) for r in "abc"] == [1, 2, 3] and p.num_rounds == 3
    with pytest.raises(ConfigError, match=r"round 'r9' is not in prune.rounds \(a, b, c\)"):
        p.round_index("r9")


@pytest.mark.parametrize("method,rewind,rewinds", [("magnitude", "init", True), ("refill", "epoch", True),
                                                   ("magnitude", "none", False), ("rsst", "init", False),
                                                   ("rsst", "epoch", False)])
def test_rsst_never_rewinds(method, rewind, rewinds):
    assert PruneCfg(method=method, rewind=rewind).rewinds is rewinds


def test_choices_are_the_values_the_code_supports():
    """A choices list that drifts from the library's own would refuse a supported value (e.g. importance: taylor)
    or let through one the code cannot run."""
    import dataclasses

    from mambaprune import list_models
    from mambaprune.config import PRUNE_KINDS
    from mambaprune.pruning import IMPORTANCES, KINDS, SCOPES, TARGETS
    from mambaprune.pruning.refill import REFILL_CRITERIA
    from mambaprune.pruning.rsst import RSST_PENALTIES, RSST_UPDATES
    from mambaprune.pruning.schedule import RSST_SCHEDULES

    def choices(cls, name):
        return set(next(f.metadata["choices"] for f in dataclasses.fields(cls) if f.name == name))

    assert choices(ModelCfg, "name") == set(list_models())
    assert PRUNE_KINDS == KINDS  # prune.target's kinds are the pruning engine's
    for target in TARGETS:
        parse_params({"prune": {"target": target}})
    for name, supported in [("importance", IMPORTANCES), ("scope", SCOPES),
                            ("refill_criterion", REFILL_CRITERIA), ("rsst_penalty", RSST_PENALTIES),
                            ("rsst_schedule", RSST_SCHEDULES), ("rsst_update", RSST_UPDATES)]:
        assert choices(PruneCfg, name) == set(supported), name


def test_speed_modes_load_as_a_list():
    assert parse_params({}).evaluate.speed_modes == ["eager", "one_call"]
    modes = parse_params({"evaluate": {"speed_modes": ["one_call", "compiled"]}}).evaluate.speed_modes
    assert modes == ["one_call", "compiled"]


def test_params_yaml_holds_the_defaults():
    """params.yaml says it is the defaults: a key left out of it takes the same value from config.py (the model's
    width and depth excepted: null there means the size's own, and the digits run shrinks them)."""
    defaults, shipped = parse_params({}).to_dict(), load_params(ROOT / "params.yaml").to_dict()
    for section in (defaults, shipped):
        section["model"].pop("embed_dim"), section["model"].pop("depth")
    assert defaults == shipped


def test_every_field_is_documented():
    import dataclasses
    import typing

    hints = typing.get_type_hints(Params)
    sections = [hints[f.name] for f in dataclasses.fields(Params) if dataclasses.is_dataclass(hints[f.name])]
    assert len(sections) == 7
    for cls in sections:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == {f.name for f in dataclasses.fields(Params)}


@pytest.mark.parametrize("raw,expected", [("auto", "auto"), (True, "on"), (False, "off"), ("on", "on"), ("off", "off")])
def test_cuda_graph_takes_yaml_on_off(raw, expected):
    """`-S train.cuda_graph=off` reaches params.yaml as YAML `off`, which YAML reads as false."""
    assert parse_params({"train": {"cuda_graph": raw}}).train.cuda_graph == expected


def test_cuda_graph_refuses_other_values():
    with pytest.raises(ConfigError, match="train.cuda_graph"):
        parse_params({"train": {"cuda_graph": "sometimes"}})
