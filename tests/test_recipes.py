"""Recipes: flat params settings, validated before use, printed as `dvc exp run -S` flags or applied."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from mambaprune.config import ConfigError
from mambaprune.recipes import apply_recipe, dvc_set_args, load_recipe, main

ROOT = Path(__file__).resolve().parents[1]


def test_cifar10_recipe_applies_to_the_default_params():
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    settings = load_recipe(ROOT / "recipes" / "cifar10.yaml")
    new = apply_recipe(base, settings)
    assert new["model"]["name"] == "mamba_small" and new["model"]["embed_dim"] is None
    assert new["train"]["auto_augment"] == "trivialaugment" and new["train"]["random_erasing"] == 0.25
    assert base["model"]["name"] == "mamba_tiny"  # the input is not modified


def test_dvc_flags_round_trip_through_yaml():
    settings = {"model.embed_dim": None, "train.hflip": True, "train.lr": 0.002, "data.root": ".cache/x y"}
    args = dvc_set_args(settings)
    assert args[::2] == ["-S"] * 4
    back = {a.split("=", 1)[0]: yaml.safe_load(a.split("=", 1)[1]) for a in args[1::2]}
    assert back == settings


@pytest.mark.parametrize("bad,match", [({"train.lrr": 1.0}, "train.lrr"), ({"train.lr": -1}, "train.lr"),
                                       ({"nosection.x": 1}, "nosection")])
def test_a_bad_recipe_key_is_refused_before_anything_happens(bad, match):
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    with pytest.raises(ConfigError, match=match):
        apply_recipe(base, bad)


def test_cli_prints_flags_and_applies(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train.lr: 0.01\nmodel.drop_path: 0.2\n")
    main([str(recipe), "--params", str(params)])
    assert shlex.split(capsys.readouterr().out) == ["-S", "train.lr=0.01", "-S", "model.drop_path=0.2"]
    main([str(recipe), "--apply", str(params)])
    applied = yaml.safe_load(params.read_text())
    assert applied["train"]["lr"] == 0.01 and applied["model"]["drop_path"] == 0.2
