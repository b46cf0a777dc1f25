"""The published CIFAR-10 results: the README's table and commands are what the raw JSON and params say."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "cifar10-jpg"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table():
    return _load("results_table")


def _rows():
    return sorted(p.name for p in RESULTS.iterdir() if (p / "params.yaml").exists())


@pytest.mark.parametrize("row", _rows())
def test_each_rows_dvc_command_reproduces_its_params(table, row):
    """`dvc exp run -S ...` as printed: the settings applied to the repository's params.yaml give the row's."""
    defaults = yaml.safe_load((ROOT / "params.yaml").read_text())
    settings = table.dvc_settings(RESULTS / row / "params.yaml", table.flat(defaults))
    assert all(s.startswith("-S ") for s in settings)
    applied = table.flat(_load("set_params").set_keys(defaults, [s[3:] for s in settings]))
    saved = table.flat(yaml.safe_load((RESULTS / row / "params.yaml").read_text()))
    assert {k: applied[k] for k in saved} == saved
    # keys added after the run: their defaults must be the behaviour the run had
    assert {k: applied[k] for k in applied.keys() - saved.keys()} == table.ADDED_SINCE_THE_RUNS


def test_readme_table_matches_the_raw_results(table, tmp_path, monkeypatch, capsys):
    shutil.copytree(RESULTS, tmp_path / "r")
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["results_table.py", str(tmp_path / "r")])
    table.main()
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("|", "dvc exp run", "C10="))]
    readme = (ROOT / "README.md").read_text()
    missing = [line for line in printed if line not in readme]
    assert len(printed) >= 8 and not missing, missing


def test_several_seeds_give_mean_and_half_range(table, tmp_path, monkeypatch, capsys):
    for seed, rsst_acc in (("s0", 0.78), ("s1", 0.79)):
        shutil.copytree(RESULTS, tmp_path / seed)
        ev = json.loads((tmp_path / seed / "rsst/evaluate.json").read_text())
        (tmp_path / seed / "rsst/evaluate.json").write_text(json.dumps({**ev, "test_acc": rsst_acc}))
    shutil.rmtree(tmp_path / "s1" / "refill")  # a row only one seed has: reported over that seed alone
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["results_table.py", str(tmp_path / "s0"), str(tmp_path / "s1")])
    table.main()
    out = capsys.readouterr().out
    rsst = next(line for line in out.splitlines() if line.startswith("| rsst"))
    refill = next(line for line in out.splitlines() if line.startswith("| refill"))
    assert "| 78.50% ± 0.50% (n=2) |" in rsst
    assert "(n=" not in refill.split("|")[2]


def test_recipe_dense_row_is_what_the_recipe_and_its_json_say():
    """The README's recipe row: the saved params are recipes/cifar10.yaml applied, and its numbers are the JSON's."""
    from mambaprune.recipes import load_recipe

    row = ROOT / "results" / "cifar10-jpg-recipe" / "dense"
    saved = yaml.safe_load((row / "params.yaml").read_text())
    for key, value in load_recipe(ROOT / "recipes" / "cifar10.yaml").items():
        section, leaf = key.split(".")
        if key.startswith(("prune.", "finetune.", "evaluate.")):
            continue  # not used by prepare/pretrain
        assert saved[section][leaf] == value, key
    metrics = json.loads((row / "pretrain.json").read_text())
    readme = (ROOT / "README.md").read_text()
    val, test = f"{metrics['val_acc'] * 100:.2f} %", f"{metrics['test_acc'] * 100:.2f} %"
    assert f"**{val}** | **{test}**" in readme
    assert f"{test} test, {val} val" in readme


def test_results_written_under_the_old_metric_names_give_the_same_table(table, tmp_path, monkeypatch, capsys):
    """Results folders from before the one vocabulary (flop_ratio = dense/final, throughput_img_s, sparsity) still
    read: the table from them is the table from the committed (renamed) JSON, line for line."""
    monkeypatch.chdir(ROOT)
    outputs = []
    for name, old_names in (("new", False), ("old", True)):
        shutil.copytree(RESULTS, tmp_path / name)
        for path in (tmp_path / name).glob("*/*.json"):
            m = json.loads(path.read_text())
            if old_names and "flop_reduction" in m and path.name == "evaluate.json":
                m["flop_ratio"] = m["dense_flops"] / m["flops"]
                del m["flop_reduction"]
                m["throughput_img_s"], m["dense_throughput_img_s"] = m.pop("img_per_s"), m.pop("dense_img_per_s")
            if old_names and path.name.startswith("prune_"):
                m["sparsity"] = m.pop("param_reduction")
            path.write_text(json.dumps(m))
        monkeypatch.setattr(sys, "argv", ["results_table.py", str(tmp_path / name)])
        table.main()
        outputs.append(capsys.readouterr().out)
    assert "fewer" in outputs[0] and outputs[0] == outputs[1]
    for new in (tmp_path / "new").glob("*/*.json"):  # every record reads the same, not only the table's columns
        a, b = table.load(new), table.load(tmp_path / "old" / new.parent.name / new.name)
        assert a.pop("flop_reduction", 0.0) == pytest.approx(b.pop("flop_reduction", 0.0), abs=1e-6) and a == b
