"""End to end: the real dvc.yaml and stage scripts in a temp git repo, on tiny digits settings.

Checks what users rely on: `dvc repro` produces metrics in range and an MLflow parent with one child per
stage and per-epoch metrics; only the always-run summary is stale afterwards; a `prune.ratio` change
invalidates exactly the check and the rounds onward; the plots put what they say on each axis; a bad `-S` value
fails before any output is touched; a repro that reran nothing adds no MLflow parent, a real one adds exactly
one that says what changed; `dvc exp run -S` shows up in `dvc exp show`, which shows the headline metrics only;
two queued experiments run by 2 workers both land in MLflow under their own parent runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_helpers import ROOT, set_params

from mambaprune.headline import HEADLINE_KEYS

DVC = [sys.executable, "-m", "dvc"]
STAGES = ["prepare", "pretrain", "prune@r1", "prune@r2", "finetune", "evaluate"]

pytestmark = pytest.mark.slow

TINY = {
    "data": {"img_size": 8},
    "model": {"embed_dim": 16, "depth": 1, "d_state": 4, "patch_size": 4},
    "train": {"batch_size": 128},
    "pretrain": {"epochs": 2},
    "prune": {"epochs": 1, "min_keep": 4, "round_to": 4},
    "finetune": {"epochs": 1},
    "evaluate": {"throughput_iters": 2, "throughput_batch": 16},
}


def run(cmd, cwd, env, check=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repo holding the project's tracked files, tiny params, after one `dvc repro`."""
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for rel in tracked:
        src = ROOT / rel
        if not src.is_file() or rel.startswith(("metrics/", "plots/")) or rel == "dvc.lock":
            continue
        dst = repo / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    set_params(repo, TINY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(MAMBAPRUNE_NO_PROGRESS="1", GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@example.com",
               GIT_COMMITTER_NAME="ci", GIT_COMMITTER_EMAIL="ci@example.com",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "tiny pipeline"], repo, env)
    proc = run([*DVC, "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "repro"], repo, env)
    return repo, env, proc.stdout


def metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def dvc_stale(repo, env) -> set[str]:
    out = run([*DVC, "status", "--json"], repo, env).stdout
    return set(json.loads(out or "{}"))


def test_repro_writes_metrics_in_range(repo):
    repo, _, stdout = repo
    for stage in STAGES:
        assert f"Running stage '{stage}'" in stdout
    pre, r1, r2, fin, ev = (metrics(repo, n) for n in ("pretrain", "prune_r1", "prune_r2", "finetune", "evaluate"))
    for m in (pre, fin, ev):
        assert 0.0 <= m["test_acc"] <= 1.0 and 0.0 <= m["val_acc"] <= 1.0
    assert pre["params"] > r1["params"] > r2["params"] == fin["params"] == ev["params"]
    assert 0.0 < r1["param_reduction"] < r2["param_reduction"] == ev["param_reduction"] < 1.0 and ev["speedup"] > 0
    assert 0.0 < r1["flop_reduction"] < r2["flop_reduction"] == ev["flop_reduction"] < 1.0
    assert ev["img_per_s"] > 0 and ev["dense_img_per_s"] > 0
    assert all(w % 4 == 0 and w >= 4 for w in r2["ssm_widths"] + r2["mlp_widths"])
    rounds = (repo / "plots/summary/rounds.csv").read_text().splitlines()
    assert rounds[0].startswith("round,") and len(rounds) == 1 + 4  # dense, r1, r2, finetuned
    for png in ("epochs.png", "rounds.png", "widths.png"):
        assert (repo / "plots/summary" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mlflow_has_one_parent_and_a_child_per_stage(repo):
    repo, _, _ = repo
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mambaprune")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(r.info.run_name for r in children) == sorted(STAGES)
    pretrain = next(r for r in children if r.info.run_name == "pretrain")
    history = client.get_metric_history(pretrain.info.run_id, "train/val_acc")
    assert [m.step for m in history] == [1, 2]
    assert "test_acc" in parents[0].data.metrics  # the summary stage logs the final state on the parent
    assert exp.artifact_location.removeprefix("file://").startswith(str(repo))


def test_second_repro_reruns_only_summary_and_ratio_change_reruns_rounds_onward(repo):
    repo, env, _ = repo
    assert dvc_stale(repo, env) == {"summary"}
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, {"prune": {"ratio": 0.3}})
        # status names the stages whose own params changed; finetune/evaluate follow through their deps. The
        # check stage reruns too, but its output does not change, so prepare and pretrain do not
        assert dvc_stale(repo, env) == {"check", "prune@r1", "prune@r2", "summary"}
    finally:
        (repo / "params.yaml").write_text(original)
    assert dvc_stale(repo, env) == {"summary"}


def test_plot_specs_put_layer_on_x_width_on_y_and_fit_accuracy(repo):
    repo, env, _ = repo
    shown = json.loads(run([*DVC, "plots", "show", "--json"], repo, env).stdout)
    assert not shown.get("errors")
    specs = {plot_id: renders[0]["content"] for plot_id, renders in shown["data"].items()}
    widths = specs["kept_widths"]
    enc = widths["spec"]["encoding"]
    assert enc["x"]["field"] == "layer"
    # y is `units`, computed from DVC's y value, whose rows are the width columns (kept and dense)
    assert enc["y"]["field"] == "units" and enc["y"]["type"] == "quantitative"
    assert {"calculate": "toNumber(datum['dvc_inferred_y_value'])", "as": "units"} in widths["transform"]
    rows = widths["data"]["values"]
    assert {r["field"] for r in rows} == {"ssm_width", "ssm_dense", "mlp_width", "mlp_dense"}
    assert all(float(r["dvc_inferred_y_value"]) == float(r[r["field"]]) for r in rows)
    assert sorted({int(r["layer"]) for r in rows}) == [0]  # TINY has one block: layer 0 must be a bar, not empty

    pareto = specs["accuracy_vs_params"]
    assert pareto["encoding"]["x"]["title"] == "parameters"
    assert pareto["encoding"]["y"] == {"field": "y_value", "type": "quantitative", "title": "test accuracy",
                                       "scale": {"zero": False}}  # fitted to the data, not 0..1
    for plot_id, ys in (("accuracy_per_epoch", {"train_acc", "val_acc"}), ("loss_per_epoch", {"train_loss",
                                                                                              "val_loss"})):
        spec = specs[plot_id]
        assert {r["field"] for r in spec["data"]["values"]} == ys
        assert {r["stage"] for r in spec["data"]["values"]} == {"pretrain", "prune@r1", "prune@r2", "finetune"}
        assert spec["layer"][1]["layer"][0]["mark"]["type"] == "rule"  # where each stage starts


def output_hashes(repo: Path) -> dict[str, str]:
    """sha256 of every file the pipeline writes (DVC outputs, cached or not) and of dvc.lock."""
    files = [p for d in ("data", "models", "metrics", "plots") for p in (repo / d).rglob("*") if p.is_file()]
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in [*files, repo / "dvc.lock"]}


def test_a_bad_set_value_fails_before_any_output_is_touched(repo):
    repo, env, _ = repo
    before = output_hashes(repo)
    assert len(before) > 20 and "models/r1.pt" in before and "metrics/prune_r1.json" in before
    try:
        # without the check stage, DVC deletes prune@r1's outputs and then the stage fails on the value
        proc = run([*DVC, "exp", "run", "-S", "prune.ratio=1.5"], repo, env, check=False)
        assert proc.returncode != 0
        assert "prune.ratio must be in [0.0, 1.0), got 1.5" in proc.stdout + proc.stderr
        assert "Running stage 'prune@r1'" not in proc.stdout
        assert output_hashes(repo) == before
    finally:
        run(["git", "checkout", "params.yaml"], repo, env)  # the README's way back
    assert dvc_stale(repo, env) == {"summary"}


def mlflow_parents(repo: Path) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mambaprune")
    runs = client.search_runs([exp.experiment_id])
    return {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}


def test_a_repro_that_reran_nothing_adds_no_parent_and_a_real_one_adds_one_saying_what_changed(repo):
    repo, env, _ = repo
    before = mlflow_parents(repo)
    out = run([*DVC, "repro"], repo, env).stdout
    assert out.count("Running stage") == 1 and "Running stage 'summary'" in out
    assert mlflow_parents(repo).keys() == before.keys()
    try:
        set_params(repo, {"finetune": {"epochs": 2}})
        out = run([*DVC, "repro"], repo, env).stdout
        assert "Running stage 'finetune'" in out and "Running stage 'pretrain'" not in out
        after = mlflow_parents(repo)
        new = [after[i] for i in after.keys() - before.keys()]
        assert len(new) == 1 and after.keys() >= before.keys()
        tags, metrics = new[0].data.tags, new[0].data.metrics
        assert tags["mambaprune.changes"] == "finetune.epochs 1→2"  # against params.yaml at HEAD
        assert tags["mlflow.note.content"].startswith("**finetune.epochs 1→2** (vs params.yaml at ")
        summary = json.loads((repo / "metrics/summary.json").read_text())
        assert metrics["test_acc"] == summary["test_acc"] and metrics["param_reduction"] == pytest.approx(
            summary["param_reduction"])
    finally:  # back to the committed state, as the README's troubleshooting says
        run(["git", "checkout", "HEAD", "--", "params.yaml", "dvc.lock", "metrics", "plots"], repo, env)
        run([*DVC, "checkout"], repo, env)
    assert dvc_stale(repo, env) == {"summary"}


def test_exp_run_and_queue_land_in_dvc_and_mlflow(repo):
    repo, env, _ = repo
    out = run([*DVC, "exp", "run", "-n", "ratio-03", "-S", "prune.ratio=0.3"], repo, env).stdout
    assert "Running stage 'prune@r1'" in out
    assert "Running stage 'prepare'" not in out and "Running stage 'pretrain'" not in out
    run([*DVC, "exp", "run", "--queue", "-n", "q-02", "-S", "prune.ratio=0.2"], repo, env)
    run([*DVC, "exp", "run", "--queue", "-n", "q-04", "-S", "prune.ratio=0.4"], repo, env)
    run([*DVC, "exp", "run", "--run-all", "-j", "2"], repo, env)
    shown = run([*DVC, "exp", "show", "--json"], repo, env).stdout
    for name in ("ratio-03", "q-02", "q-04"):
        assert name in shown

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mambaprune")
    runs = client.search_runs([exp.experiment_id])
    parents = {r.info.run_name: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    for name in ("ratio-03", "q-02", "q-04"):
        assert name in parents, sorted(parents)
        kids = [r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[name].info.run_id]
        assert {"prune@r1", "prune@r2", "finetune", "evaluate"} <= set(kids)
        assert parents[name].data.metrics["test_acc"] >= 0.0


def metric_columns(exp_show: list) -> list[dict[str, dict]]:
    """Every row's {metrics file: its values} in `dvc exp show --json` (baselines and their experiments)."""
    rows = []

    def walk(node):
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and "metrics" in data:
                rows.append({f: (m or {}).get("data", {}) for f, m in (data["metrics"] or {}).items()})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(exp_show)
    return rows


def test_dvc_exp_show_holds_the_headline_metrics_only(repo):
    repo, env, _ = repo
    rows = metric_columns(json.loads(run([*DVC, "exp", "show", "--json"], repo, env).stdout))
    assert len(rows) >= 2  # the workspace and the committed baseline (plus any experiments run above)
    for files in rows:
        assert set(files) == {"metrics/summary.json"}, sorted(files)
        columns = files["metrics/summary.json"]
        # a withheld speedup is null in the file, and dvc leaves null values out
        assert len(columns) <= 15 and set(HEADLINE_KEYS) - {"speedup"} <= set(columns), sorted(columns)
