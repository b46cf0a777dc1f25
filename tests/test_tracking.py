"""MLflow tracking (one parent per experiment, one child per stage) and the plot/metric file writers.

Importing mlflow and opening a DB costs seconds per process, so most tests share one store (module
fixture) and tell experiments apart by DVC_EXP_NAME. Subprocess workers load tracking.py by file path:
``import mambaprune`` would import torch in each of them. Top-level imports stay stdlib + pytest because
spawned workers import this module.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TRACKING_ENV = ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_STAGE",
                "MAMBAPRUNE_RUN_NAME", "MAMBAPRUNE_TRACKING", "MAMBAPRUNE_EXPERIMENT")
FAKE_SHA = "0123456789abcdef0123456789abcdef01234567"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tracking_py() -> str:
    """src/mambaprune/tracking.py without executing mambaprune/__init__ (find_spec does not import)."""
    return str(Path(importlib.util.find_spec("mambaprune").submodule_search_locations[0]) / "tracking.py")


def load_tracking_standalone():
    spec = importlib.util.spec_from_file_location("mambaprune_tracking_standalone", tracking_py())
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def clean_env(monkeypatch):
    for name in TRACKING_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    return tmp_path_factory.mktemp("repo")


@pytest.fixture
def trk(clean_env, store_root):
    """tracking with DVC_ROOT = the shared temp repo and a cwd elsewhere (as under the DVC queue)."""
    from mambaprune import tracking

    clean_env.setenv("DVC_ROOT", str(store_root))
    clean_env.setenv("DVC_EXP_BASELINE_REV", FAKE_SHA)
    clean_env.chdir(store_root.parent)
    return tracking


def client_and_exp(tracking):
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri())
    return client, client.get_experiment_by_name("mambaprune")


def parents(client, exp, key: str):
    return client.search_runs([exp.experiment_id], f"tags.`mambaprune.parent_key` = '{key}'")


def children(client, exp, parent_id: str):
    return client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def run_stage(tracking, monkeypatch, exp_name: str, stage: str, epochs: int = 3, params: dict | None = None):
    monkeypatch.setenv("DVC_EXP_NAME", exp_name)
    monkeypatch.setenv("DVC_STAGE", stage)
    with tracking.stage_run(stage.split("@")[0], params or {"prune": {"ratio": 0.5, "rounds": ["r1", "r2"]}}) as run:
        assert run.enabled, "tracking fell back to the no-op run"
        for epoch in range(1, epochs + 1):
            run.log_epoch({"epoch": epoch, "val_acc": epoch / 10, "lr": 0.01, "phase": "train"})
        run.log_metrics({"test_acc": 0.75, "comment": "not a number"})
    return run


# ----------------------------------------------------------------------------------------------- tracking
def test_one_parent_two_children_with_epoch_metrics(trk, clean_env):
    a = run_stage(trk, clean_env, "exp-a", "pretrain", epochs=3)
    b = run_stage(trk, clean_env, "exp-a", "prune@r2", epochs=2)
    client, exp = client_and_exp(trk)

    found = parents(client, exp, f"exp:{FAKE_SHA}:exp-a")
    assert len(found) == 1
    parent = found[0]
    assert parent.info.run_name == "exp-a" and a.parent_run_id == b.parent_run_id == parent.info.run_id
    kids = {r.info.run_name: r for r in children(client, exp, parent.info.run_id)}
    assert set(kids) == {"pretrain", "prune@r2"}

    r2 = kids["prune@r2"]
    assert r2.info.status == "FINISHED"
    assert r2.data.tags["dvc.stage"] == "prune@r2" and r2.data.tags["dvc.exp_name"] == "exp-a"
    assert r2.data.tags["mlflow.source.git.commit"] == FAKE_SHA
    assert r2.data.params == {"prune.ratio": "0.5", "prune.rounds": '["r1", "r2"]'}
    history = client.get_metric_history(r2.info.run_id, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 0.1), (2, 0.2)]
    assert [m.step for m in client.get_metric_history(kids["pretrain"].info.run_id, "val_acc")] == [1, 2, 3]
    assert set(r2.data.metrics) == {"val_acc", "lr", "test_acc"}  # "phase" and "comment" skipped


def test_other_exp_name_other_parent_and_summary_on_parent(trk, clean_env, store_root, tmp_path):
    run_stage(trk, clean_env, "exp-b1", "pretrain", epochs=1)
    run_stage(trk, clean_env, "exp-b2", "pretrain", epochs=1)
    client, exp = client_and_exp(trk)
    p1, p2 = parents(client, exp, f"exp:{FAKE_SHA}:exp-b1"), parents(client, exp, f"exp:{FAKE_SHA}:exp-b2")
    assert len(p1) == len(p2) == 1 and p1[0].info.run_id != p2[0].info.run_id

    clean_env.setenv("DVC_STAGE", "summary")  # exp-b2 still set: the summary lands on exp-b2's parent
    clean_env.chdir(tmp_path)  # relative artifact paths keep their folder
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "rounds.png").write_bytes(PNG_MAGIC + b"x")
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    parent_id = trk.summarize(tmp_path, {"seed": 0, "prune": {"ratio": 0.5}},
                              {"finetune": {"test_acc": 0.93}, "params": 1234},
                              [Path("plots/rounds.png"), Path("params.yaml"), Path("missing.lock")])
    assert parent_id == p2[0].info.run_id
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params == {"seed": "0", "prune.ratio": "0.5"}
    assert parent.data.metrics == {"finetune/test_acc": 0.93, "params": 1234.0}
    assert {a.path for a in client.list_artifacts(parent_id)} == {"plots", "params.yaml"}
    assert [a.path for a in client.list_artifacts(parent_id, "plots")] == ["plots/rounds.png"]
    assert len(children(client, exp, parent_id)) == 1  # the summary made no child run
    assert client.get_run(p1[0].info.run_id).data.params == {}


def test_failure_ends_child_failed_and_propagates(trk, clean_env):
    clean_env.setenv("DVC_EXP_NAME", "exp-fail")
    clean_env.setenv("DVC_STAGE", "finetune")
    with pytest.raises(ZeroDivisionError), trk.stage_run("finetune", {"x": 1}) as run:
        run.log_metrics({"loss": 1.0})
        raise ZeroDivisionError
    client, _ = client_and_exp(trk)
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert client.get_run(run.parent_run_id).info.status == "FAILED"


def test_store_and_artifacts_live_under_the_root(trk, clean_env, store_root):
    run_stage(trk, clean_env, "exp-loc", "prepare", epochs=1)
    assert trk.tracking_uri() == "sqlite:///" + (store_root.resolve() / "mlflow.db").as_posix()
    assert (store_root / "mlflow.db").is_file()
    client, exp = client_and_exp(trk)
    root_uri = (store_root.resolve() / "mlartifacts").as_uri()
    assert exp.artifact_location == root_uri
    assert all(r.info.artifact_uri.startswith(root_uri) for r in client.search_runs([exp.experiment_id]))
    assert not any(e.name == "Default" and client.search_runs([e.experiment_id]) for e in client.search_experiments())


def test_tracking_uri_env_wins(trk, clean_env, tmp_path):
    clean_env.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert trk.tracking_uri() == "http://127.0.0.1:5000"
    clean_env.delenv("DVC_ROOT")
    clean_env.delenv("MLFLOW_TRACKING_URI")
    clean_env.chdir(tmp_path)
    assert trk.tracking_uri() == "sqlite:///" + (tmp_path.resolve() / "mlflow.db").as_posix()


def test_disabled_writes_nothing(clean_env, tmp_path):
    from mambaprune import tracking

    clean_env.setenv("DVC_ROOT", str(tmp_path))
    clean_env.setenv("MAMBAPRUNE_TRACKING", "0")
    with tracking.stage_run("pretrain", {"a": 1}) as run:
        assert not run.enabled and run.run_id is None
        run.log_params({"b": 2})
        run.log_epoch({"epoch": 1, "acc": 0.5})
        run.log_metrics({"acc": 0.5})
        run.log_artifact(tmp_path / "nothing")
        run.log_dict({"a": 1}, "a.json")
        run.set_tags({"t": 1})
    assert tracking.summarize(tmp_path, {"a": 1}, {"m": 1.0}, []) is None
    assert list(tmp_path.iterdir()) == []


def test_epoch_logger_logs_each_record_once_with_its_prefix():
    """A resumed fit shows the logger the restored history first, then one more record per epoch."""
    from mambaprune import tracking

    class Recorder(tracking.NullRun):
        def __init__(self):
            self.epochs = []

        def log_epoch(self, record):
            self.epochs.append(dict(record))

    run = Recorder()
    log = tracking.epoch_logger(run, "rsst")
    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.6}]
    log(history)
    log(history + [{"epoch": 3, "val_acc": 0.7}])
    assert run.epochs == [{"rsst/epoch": e, "rsst/val_acc": a, "epoch": e} for e, a in ((1, 0.5), (2, 0.6), (3, 0.7))]


def test_only_rank_0_of_a_data_parallel_stage_tracks(clean_env, tmp_path):
    from mambaprune import tracking

    clean_env.setenv("DVC_ROOT", str(tmp_path))
    clean_env.setenv("RANK", "1")  # torchrun sets RANK in every process it starts
    with tracking.stage_run("pretrain", {"a": 1}) as run:
        assert not run.enabled and run.run_id is None
        run.log_metrics({"acc": 0.5})
    assert list(tmp_path.iterdir()) == []  # no store was even opened


def test_broken_store_is_a_warning_not_an_error(clean_env, tmp_path, capsys):
    from mambaprune import tracking

    (tmp_path / "a_file").write_text("")
    clean_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/a_file/mlflow.db")  # cannot be created
    clean_env.setenv("DVC_ROOT", str(tmp_path))
    tracking._warned.clear()
    for _ in range(2):
        with tracking.stage_run("pretrain", {"a": 1}) as run:
            run.log_metrics({"acc": 1.0})
        assert not run.enabled
    assert capsys.readouterr().err.count("[mambaprune.tracking] warning") == 1


def test_nested_params_and_metric_keys_are_cleaned():
    from mambaprune import tracking

    assert tracking.flatten({"a": {"b": {"c": 1}}, "d": [1]}) == {"a.b.c": 1, "d": [1]}
    assert tracking.clean_key("prune@r2/val acc") == "prune_r2/val acc"
    assert tracking.clean_key("/../x//y") == "x/y"


# ----------------------------------------------------------------------------------------------- comparing runs
def test_describe_changes_exact():
    from mambaprune import tracking

    base = {"seed": 0, "prune": {"ratio": 0.5, "method": "refill", "mlp_ratio": None, "rounds": {"r1": "pretrained"}},
            "train": {"hflip": False}}
    new = {"seed": 0, "prune": {"ratio": 0.7, "method": "rsst", "mlp_ratio": 0.3,
                                "rounds": {"r1": "pretrained", "r2": "r1"}}, "train": {}}
    assert tracking.describe_changes(base, new) == (
        "prune.method refill→rsst, prune.mlp_ratio null→0.3, prune.ratio 0.5→0.7, prune.rounds.r2 (new) r1, "
        "train.hflip removed")
    assert tracking.describe_changes(base, base) == "no change"


def test_pipeline_state_ignores_the_summary_stage(tmp_path):
    from mambaprune import tracking

    lock = {"schema": "2.0", "stages": {"evaluate": {"cmd": "python stages/evaluate.py", "outs": [{"md5": "a"}]},
                                        "summary": {"cmd": "python stages/summary.py", "outs": [{"md5": "s1"}]}}}
    (tmp_path / "a.lock").write_text(json.dumps(lock))
    lock["stages"]["summary"]["outs"][0]["md5"] = "s2"
    (tmp_path / "b.lock").write_text(json.dumps(lock))
    lock["stages"]["evaluate"]["outs"][0]["md5"] = "b"
    (tmp_path / "c.lock").write_text(json.dumps(lock))
    a, b, c = (tracking.pipeline_state(tmp_path / f"{n}.lock") for n in "abc")
    assert a == b != c and len(a) == 16
    assert tracking.pipeline_state(tmp_path / "missing.lock") is None


def test_comparison_view_columns_and_charts_name_logged_keys():
    from mambaprune import tracking
    from mambaprune.headline import HEADLINE_KEYS

    view = tracking.comparison_view()
    assert view["selectedColumns"][0] == "metrics.`test_acc`" and view["selectedColumns"][-4:] == [
        "params.`prune.method`", "params.`prune.target`", "params.`prune.ratio`", "tags.`mambaprune.changes`"]
    assert "metrics.`test_acc`" in view["selectedColumns"] and set(tracking.COMPARE_METRICS) <= set(HEADLINE_KEYS)
    sections = {s["uuid"] for s in view["compareRunSections"]}
    charts = view["compareRunCharts"]
    assert all(c["metricSectionId"] in sections for c in charts)
    first = charts[0]  # the chart the view opens on: accuracy against parameters, across experiments
    assert (first["type"], first["xaxis"], first["yaxis"]) == (
        "SCATTER", {"key": "params", "type": "METRIC"}, {"key": "test_acc", "type": "METRIC"})
    for c in charts:
        keys = [c[a]["key"] for a in ("xaxis", "yaxis") if a in c] + [c.get("metricKey")] \
            + c.get("selectedParams", []) + c.get("selectedMetrics", [])
        assert set(filter(None, keys)) <= set(HEADLINE_KEYS) | set(tracking.COMPARE_PARAMS), c
    assert json.loads(tracking.experiment_tags()[tracking.VIEW_TAG]) == view


def test_experiment_tags_set_at_creation_and_on_an_existing_experiment(trk, clean_env):
    from mlflow import MlflowClient

    client = MlflowClient(trk.tracking_uri())
    client.create_experiment("made-before", tags={"mlflow.note.content": "my own note"})  # e.g. an older version
    for name in ("made-before", "made-now"):
        clean_env.setenv("MAMBAPRUNE_EXPERIMENT", name)
        client_, exp_id = trk._session()
        tags = client.get_experiment(exp_id).tags
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        assert json.loads(tags[trk.VIEW_TAG]) == trk.comparison_view()
        assert (tags["mlflow.note.content"] == "my own note") == (name == "made-before")  # a user's note is kept
    assert trk.ui_url(port=5001) == (f"http://127.0.0.1:5001/#/experiments/{exp_id}/runs"
                                     f"?workflowType=machine_learning&viewStateShareKey={trk.VIEW_KEY}")


def test_a_repro_that_changed_nothing_reuses_the_parent_with_its_state(trk, clean_env, tmp_path):
    client, exp = None, None
    clean_env.setenv("MAMBAPRUNE_EXPERIMENT", "states")
    clean_env.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("prune:\n  ratio: 0.5\n")

    def summary(key: str, state: str, acc: float = 0.9) -> str:
        (tmp_path / "dvc.lock").write_text(json.dumps({"stages": {"evaluate": {"outs": [{"md5": state}]}}}))
        clean_env.setattr(trk, "parent_key", lambda: key)
        return trk.summarize(tmp_path, {"prune": {"ratio": 0.5}}, {"test_acc": acc, "params": 10})

    first = summary("repro:h:1:1", "A")  # a repro whose stages ran: stage runs made this parent
    assert summary("repro:h:2:2", "A", acc=0.1) == first  # the next repro reran nothing: no new parent, and
    second = summary("repro:h:3:3", "B")  # outputs changed without a stage running (run-cache restore)
    assert second != first
    assert summary("repro:h:4:4", "A") == first  # back to A: the run that has these results
    assert summary("exp:abc:exp-x", "A") not in (first, second)  # a dvc exp run is always its own row
    from mlflow import MlflowClient

    client = MlflowClient(trk.tracking_uri())
    exp = client.get_experiment_by_name("states")
    assert len(client.search_runs([exp.experiment_id])) == 3
    run = client.get_run(first)
    assert run.data.metrics["test_acc"] == 0.9  # ... the parent it found keeps what it had
    assert run.data.tags["mambaprune.changes"] == "no git baseline"  # tmp_path is no git repo
    assert run.data.tags["mlflow.note.content"].startswith("**no git baseline**")
    assert "test acc 0.9000" in run.data.tags["mlflow.note.content"]


# ----------------------------------------------------------------------------------------------- processes
def _parallel_worker(env: dict, barrier) -> None:
    os.environ.update(env)
    tracking = load_tracking_standalone()
    import mlflow  # noqa: F401  (the slow import before the barrier: the store setup itself is what races)

    barrier.wait(timeout=120)
    with tracking.stage_run("worker", {"i": env["DVC_STAGE"]}) as run:
        if not run.enabled:
            raise SystemExit(3)
        run.log_epoch({"epoch": 1, "acc": 0.5})


def test_parallel_processes_on_a_fresh_store_share_one_parent(clean_env, tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    env = {"DVC_ROOT": str(tmp_path), "DVC_EXP_NAME": "exp-par", "DVC_EXP_BASELINE_REV": FAKE_SHA}
    procs = [ctx.Process(target=_parallel_worker, args=({**env, "DVC_STAGE": f"s{i}"}, barrier)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]

    from mlflow import MlflowClient

    client = MlflowClient("sqlite:///" + (tmp_path.resolve() / "mlflow.db").as_posix())
    exp = client.get_experiment_by_name("mambaprune")
    runs = client.search_runs([exp.experiment_id])
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(top) == 1 and top[0].info.run_name == "exp-par"
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == top[0].info.run_id]
    assert sorted(r.info.run_name for r in kids) == ["s0", "s1", "s2", "s3"]
    assert all(r.info.status == "FINISHED" and r.data.metrics == {"acc": 0.5} for r in kids)


KEY_SNIPPET = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("t", sys.argv[1])
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    print(m.parent_key())
""")


def _keys(cmd: list[str], env: dict) -> list[str]:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    return out.split()


def test_repro_parent_key_is_per_invoking_process(clean_env, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in TRACKING_ENV}
    stage = [sys.executable, "-c", KEY_SNIPPET, tracking_py()]

    # two stage processes of the same parent (this pytest process): one key, naming this process
    direct = _keys(stage, env) + _keys(stage, env)
    assert direct[0] == direct[1] and direct[0].split(":")[2] == str(os.getpid())

    # a fake `dvc` that runs each stage through a shell, as DVC does: the shell is skipped, dvc is the anchor
    fake_dvc = tmp_path / "bin" / "dvc"
    fake_dvc.parent.mkdir()
    shell_cmd = " ".join(f"'{a}'" for a in stage) + "; true"  # '; true' keeps the shell from exec'ing python
    fake_dvc.write_text(f"#!{sys.executable}\nimport os, subprocess\nprint('pid', os.getpid(), flush=True)\n"
                        f"for _ in range(2):\n    subprocess.run({shell_cmd!r}, shell=True, check=True)\n")
    fake_dvc.chmod(0o755)
    out = _keys([str(fake_dvc)], env)
    assert out[0] == "pid"
    dvc_pid, via_dvc = out[1], out[2:]
    assert len(via_dvc) == 2 and via_dvc[0] == via_dvc[1] and via_dvc[0].split(":")[2] == dvc_pid
    assert via_dvc[0] != direct[0]

    # a named run and `dvc exp run` override the process key
    assert _keys(stage, {**env, "MAMBAPRUNE_RUN_NAME": "mine"}) == ["name:mine"]
    assert _keys(stage, {**env, "DVC_EXP_NAME": "e", "DVC_EXP_BASELINE_REV": "abc"}) == ["exp:abc:e"]


# ----------------------------------------------------------------------------------------------- records, plots
def test_write_json_exact_and_rounded(tmp_path):
    from mambaprune.records import write_json

    path = tmp_path / "metrics" / "m.json"
    write_json(path, {"b": 1, "a": {"y": 0.123456789, "x": (1.0, float("nan"))}, "c": "s", "p": Path("d/e")})
    assert path.read_text() == textwrap.dedent("""\
        {
          "a": {
            "x": [
              1.0,
              null
            ],
            "y": 0.123457
          },
          "b": 1,
          "c": "s",
          "p": "d/e"
        }
        """)
    assert json.loads(path.read_text())["a"]["y"] == 0.123457
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_write_csv_exact(tmp_path):
    from mambaprune.records import read_csv, write_csv

    path = tmp_path / "plots" / "rounds.csv"
    write_csv(path, [{"round": "r1", "params": 1000, "val_acc": 0.91234567},
                     {"round": "r2", "params": 500, "test_acc": 0.8}])
    assert path.read_text() == "round,params,val_acc,test_acc\nr1,1000,0.912346,\nr2,500,,0.8\n"
    assert read_csv(path)[1] == {"round": "r2", "params": 500.0, "val_acc": None, "test_acc": 0.8}


def test_writers_leave_old_file_and_no_temp_on_failure(tmp_path, monkeypatch):
    from mambaprune import records

    path = tmp_path / "m.json"
    records.write_json(path, {"a": 1})

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(records.os, "replace", broken_replace)
    with pytest.raises(OSError):
        records.write_json(path, {"a": 2})
    with pytest.raises(OSError):
        records.write_csv(tmp_path / "x.csv", [{"a": 1}])
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"] and json.loads(path.read_text()) == {"a": 1}


def test_pngs_are_png_files(tmp_path):
    from mambaprune import plots
    from mambaprune.records import write_csv

    d = tmp_path / "plots"
    write_csv(d / "epochs.csv", [{"step": i + 1, "stage": stage, "train_acc": a - 0.05, "val_acc": a,
                                  "train_loss": 1 - a, "val_loss": 1.1 - a}
                                 for i, (stage, a) in enumerate([("pretrain", 0.3), ("pretrain", 0.6),
                                                                 ("prune@r1", 0.7), ("prune@r1", 0.75)])])
    write_csv(d / "rounds.csv", [{"round": r, "params": p, "flops": 2 * p, "val_acc": a, "test_acc": a - 0.01}
                                 for r, p, a in (("pretrained", 9000, 0.9), ("r1", 6000, 0.88))])
    write_csv(d / "widths.csv", [{"layer": i, "ssm_width": 64 - 8 * i, "mlp_width": 128 - 16 * i,
                                  "ssm_dense": 64, "mlp_dense": 128} for i in range(4)])
    pngs = [plots.plot_epochs(d / "epochs.csv", d / "epochs.png"),
            plots.plot_rounds(d / "rounds.csv", d / "rounds.png"),
            plots.plot_widths(d / "widths.csv", d / "widths.png"),
            plots.png_line_plot(d / "absent.csv", "epoch", ["val_acc"], d / "empty.png", "no data yet")]
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, png
    assert not list(d.glob("*.tmp")) and not list(d.glob(".*"))
