"""End to end: the real dvc.yaml and stage scripts in a temp git repo, on tiny digits settings.

Checks what users rely on: `dvc repro` produces metrics in range and an MLflow parent with one child per
stage and per-epoch metrics; only the always-run summary is stale afterwards; a `prune.ratio` change
invalidates exactly the rounds onward; `dvc exp run -S` shows up in `dvc exp show`; two queued experiments
run by 2 workers both land in MLflow under their own parent runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_helpers import ROOT, set_params

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
        # status names the stages whose own params changed; finetune/evaluate follow through their deps
        assert dvc_stale(repo, env) == {"prune@r1", "prune@r2", "summary"}
    finally:
        (repo / "params.yaml").write_text(original)
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
