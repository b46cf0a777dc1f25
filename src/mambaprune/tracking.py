"""MLflow tracking for the DVC stages: one parent run per experiment, one child run per stage.

This is the only module that imports mlflow, and only inside functions: importing mambaprune stays fast
and a broken or missing MLflow never stops a stage (``MAMBAPRUNE_TRACKING=0`` turns tracking off;
any MLflow error prints one warning and the stage goes on untracked).

Where runs go
    ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo root>/mlflow.db``. The repo root is
    ``DVC_ROOT`` when set (queued ``dvc exp run`` runs in a temp copy that is deleted afterwards;
    DVC_ROOT is the real repo), else the ``root`` passed in, else the cwd. The experiment
    (``mambaprune``, or ``MAMBAPRUNE_EXPERIMENT``) is created with ``artifact_location=<root>/mlartifacts``
    because the Default experiment's artifact root comes from the cwd of whoever created the DB.

Parent run key (each stage is its own process, so stages find their parent again by the tag
``mambaprune.parent_key``; see ``parent_key``)
    1. ``dvc exp run``: ``exp:<DVC_EXP_BASELINE_REV>:<DVC_EXP_NAME>``, run name = the exp name.
    2. ``MAMBAPRUNE_RUN_NAME`` set: ``name:<value>``; every run with that value shares one parent.
    3. plain ``dvc repro``: ``repro:<host>:<pid>:<start time>`` of the ``dvc`` process that runs the
       stages (found by walking up the process tree past the shell DVC runs each cmd in; without a
       dvc ancestor, the direct parent process). Stages of one ``dvc repro`` share it; the next
       ``dvc repro`` is a new process, so a new parent named ``repro-<git short sha>-<YYYYmmdd-HHMMSS>``,
       unless none of its stages ran: then the summary stage logs to the latest parent with the same
       pipeline state (``pipeline_state``: dvc.lock's hashes), so a no-op repro adds no empty row.

The summary stage puts on the parent what differs from the baseline params.yaml (``params_changes``: git's
HEAD, or ``DVC_EXP_BASELINE_REV``) as the tag ``mambaprune.changes`` and, with the headline metrics, as the
run's description. The experiment carries the tags that make the UI open on the comparison (``ui_url``).

Concurrency
    A file lock next to the DB (``<root>/.mlflow.db.lock``) serialises the first DB open of each process
    (schema creation/migration races corrupt a fresh SQLite store), experiment creation and
    find-or-create of the parent run. Metric writes run without the lock.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

EXPERIMENT = "mambaprune"
PARENT_KEY_TAG = "mambaprune.parent_key"
LOCK_TIMEOUT_S = 300  # a fresh DB's migration takes ~20 s on a loaded 2-core box; the lock dies with its holder
_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value
_BATCH = 100  # MLflow's limit on params/tags per log_batch (metrics: 1000)
STATE_TAG = "mambaprune.state"  # hash of dvc.lock (summary aside): a parent's pipeline state
CHANGES_TAG = "mambaprune.changes"  # "prune.ratio 0.5→0.7": what differs from the baseline params
NOTE_TAG = "mlflow.note.content"  # MLflow's run/experiment description (markdown)

# What the MLflow UI (3.x) opens on. The experiment page's landing tab follows the "workflow type": the URL's
# ``workflowType`` parameter, else the browser's stored choice, else ``genai`` (the GenAI overview). So the URL
# that ``ui_url`` prints carries ``workflowType=machine_learning``. The experiment-kind tag is what MLflow
# 3.0-3.x without the workflow switch read instead; it is set too. ``viewStateShareKey`` names an experiment tag
# ``mlflow.sharedViewState.<key>`` holding the runs table's columns and the comparison charts (README
# "Comparing runs").
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
VIEW_KEY = "mambaprune-compare-v1"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
COMPARE_METRICS = ("test_acc", "test_acc_drop", "params", "param_reduction", "speedup")
COMPARE_PARAMS = ("prune.method", "prune.target", "prune.ratio")

_sessions: dict[tuple[str, str], tuple[object, str]] = {}  # (uri, experiment) -> (MlflowClient, experiment id)
_warned: set[str] = set()


# ----------------------------------------------------------------------------------------------- settings
def enabled() -> bool:
    """False when ``MAMBAPRUNE_TRACKING`` is 0/false/no/off."""
    return os.environ.get("MAMBAPRUNE_TRACKING", "1").strip().lower() not in ("0", "false", "no", "off")


def repo_root(root: Path | str | None = None) -> Path:
    """DVC_ROOT first: under the queue both the cwd and a relative ``root`` are the temp copy."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    return Path(root if root is not None else os.getcwd()).resolve()


def tracking_uri(root: Path | str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else an absolute ``sqlite:///<repo root>/mlflow.db``."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return "sqlite:///" + (repo_root(root) / "mlflow.db").as_posix()


def experiment_name() -> str:
    return os.environ.get("MAMBAPRUNE_EXPERIMENT") or EXPERIMENT


def artifact_location(root: Path | str | None = None) -> str:
    return (repo_root(root) / "mlartifacts").as_uri()


def lock_path(root: Path | str | None = None) -> Path:
    """Next to a SQLite DB (all processes sharing the DB share the lock), else in the repo root."""
    uri = tracking_uri(root)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return db.with_name(f".{db.name}.lock")
    return repo_root(root) / ".mlflow.lock"


def comparison_view() -> dict:
    """The MLflow runs page's view state (the shape the UI's "Share" button stores in an experiment tag): the
    runs table with the headline metrics, the params that usually vary and what changed against the baseline as
    columns, every run shown in the charts, and charts that compare experiments: accuracy against parameters and
    against the ratio, the headline bars, and a parallel-coordinates plot."""
    section = "mambaprune-comparison"

    def chart(uuid: str, kind: str, **fields) -> dict:
        return {"uuid": uuid, "type": kind, "runsCountToCompare": 100, "metricSectionId": section,
                "deleted": False, "isGenerated": False, **fields}

    def axis(key: str, kind: str = "METRIC") -> dict:
        return {"key": key, "type": kind}

    charts = [
        chart("mp-acc-vs-params", "SCATTER", xaxis=axis("params"), yaxis=axis("test_acc")),
        chart("mp-acc-vs-ratio", "SCATTER", xaxis=axis("prune.ratio", "PARAM"), yaxis=axis("test_acc")),
        *(chart(f"mp-bar-{m}", "BAR", metricKey=m) for m in ("test_acc", "param_reduction", "speedup")),
        chart("mp-parallel", "PARALLEL", selectedParams=["prune.method", "prune.ratio"],
              selectedMetrics=["params", "param_reduction", "test_acc"], showAllRuns=False),
    ]
    columns = [*(f"metrics.`{k}`" for k in COMPARE_METRICS), *(f"params.`{k}`" for k in COMPARE_PARAMS),
               f"tags.`{CHANGES_TAG}`"]
    return {
        "selectedColumns": columns,
        "columnOrder": columns,  # the table groups them by kind (metrics, params, tags); this orders each group
        "columnWidths": {f"tags.`{CHANGES_TAG}`": 320},
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts,
        "compareRunSections": [{"uuid": section, "name": "Compare experiments", "display": True,
                                "isReordered": False, "deleted": False, "isGenerated": False}],
        "isAccordionReordered": False,
        "hideEmptyCharts": True,
    }


def experiment_tags() -> dict[str, str]:
    """Tags every mambaprune experiment carries (set at creation and on an existing experiment)."""
    return {
        EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
        VIEW_TAG: json.dumps(comparison_view(), separators=(",", ":")),
        NOTE_TAG: ("One row per DVC experiment (parent run; its stages are child runs). Columns and charts: "
                   "open the URL `make ui` prints. `mambaprune.changes` says what differs from the baseline "
                   "params.yaml."),
    }


def ui_url(root: Path | str | None = None, port: int = 5000) -> str:
    """The MLflow UI's URL of this repo's runs table with the comparison view (sets the experiment up first)."""
    _, exp_id = _session(root)
    return (f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")


# ----------------------------------------------------------------------------------------------- identity
def git_commit(root: Path | str | None = None) -> str | None:
    """The commit the code came from: the exp baseline under ``dvc exp run``, else HEAD; None without git."""
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        return os.environ["DVC_EXP_BASELINE_REV"]
    for where in (Path.cwd(), repo_root(root)):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                 timeout=10, check=True)
            return out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def _proc(pid: int) -> tuple[int, str, list[str]] | None:
    """(parent pid, start time, argv) of a process, or None if it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces and ')'
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        return int(fields[1]), fields[19], [a for a in argv if a]  # ppid, starttime (clock ticks since boot)
    except (OSError, ValueError, IndexError):
        pass
    try:  # not Linux: psutil when present (it ships with mlflow's usual installs)
        import psutil

        p = psutil.Process(pid)
        return p.ppid(), f"{p.create_time():.3f}", p.cmdline()
    except Exception:
        return None


def _is_dvc(argv: list[str]) -> bool:
    """``dvc ...``, ``python /venv/bin/dvc ...`` or ``python -m dvc ...``."""
    head = argv[:3]
    if any(Path(a).name in ("dvc", "dvc.exe") for a in head):
        return True
    return any(a == "-m" and b == "dvc" for a, b in zip(head, head[1:])) or any(
        a.replace("\\", "/").endswith("dvc/__main__.py") for a in head)


def _anchor_process(max_depth: int = 8) -> tuple[int, str]:
    """The ``dvc`` process above us (DVC runs each cmd through a shell), else our direct parent."""
    first = None
    pid = os.getppid()
    for _ in range(max_depth):
        if pid <= 1:
            break
        info = _proc(pid)
        if info is None:
            break
        ppid, start, argv = info
        if first is None:
            first = (pid, start)
        if _is_dvc(argv):
            return pid, start
        pid = ppid
    return first or (os.getppid(), "")


def parent_key() -> str:
    """The key shared by all stage processes of one experiment (module docstring, "Parent run key")."""
    env = os.environ
    if env.get("DVC_EXP_NAME"):
        return f"exp:{env.get('DVC_EXP_BASELINE_REV', '')}:{env['DVC_EXP_NAME']}"
    if env.get("MAMBAPRUNE_RUN_NAME"):
        return f"name:{env['MAMBAPRUNE_RUN_NAME']}"
    pid, start = _anchor_process()
    return f"repro:{socket.gethostname()}:{pid}:{start}"


def _parent_name(key: str, commit: str | None) -> str:
    kind, _, rest = key.partition(":")
    if kind == "exp":
        return rest.partition(":")[2]
    if kind == "name":
        return rest
    return f"repro-{(commit or 'nogit')[:7]}-{datetime.now():%Y%m%d-%H%M%S}"


def stage_name(stage: str) -> str:
    """``DVC_STAGE`` (``prune@r2``) when DVC runs us, else the name the script passes."""
    return os.environ.get("DVC_STAGE") or stage


# ----------------------------------------------------------------------------------------------- helpers
def _warn(msg: str, once: str | None = None) -> None:
    key = once or msg
    if key in _warned:
        return
    _warned.add(key)
    print(f"[mambaprune.tracking] warning: {msg}", file=sys.stderr, flush=True)


def flatten(d: Mapping, sep: str = ".", prefix: str = "") -> dict[str, object]:
    """Nested dicts -> ``{"a.b.c": value}`` (lists and other values are leaves)."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, sep, key))
        else:
            out[key] = v
    return out


def clean_key(key: str) -> str:
    """MLflow accepts ``[/\\w.\\- ]`` and no ``..``/leading ``/``: ``prune@r2`` -> ``prune_r2``."""
    key = re.sub(r"[^\w./\- ]", "_", str(key))
    parts = [p for p in key.split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"


def _as_float(v: object) -> float | None:
    """A number (Python, numpy or 0-d torch) as float, else None (strings, None, lists...)."""
    if isinstance(v, numbers.Real):
        return float(v)
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:
        item = v.item()
        return float(item) if isinstance(item, numbers.Real) else None
    return None


def _param_value(v: object) -> str:
    s = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return s[:_MAX_PARAM_LEN]


# ----------------------------------------------------------------------------------------------- runs
class NullRun:
    """What ``stage_run`` yields when tracking is off or MLflow failed: same methods, does nothing."""

    run_id: str | None = None
    parent_run_id: str | None = None
    enabled = False

    def log_params(self, params: Mapping) -> None: ...
    def log_metrics(self, metrics: Mapping, step: int | None = None) -> None: ...
    def log_epoch(self, record: Mapping) -> None: ...
    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None: ...
    def log_dict(self, d: Mapping, name: str) -> None: ...
    def set_tags(self, tags: Mapping) -> None: ...


class Run(NullRun):
    """One MLflow run written through ``MlflowClient`` (no global active-run state).

    Every method swallows MLflow errors: the first one prints a warning and turns this run into a no-op,
    so a full disk or a locked DB costs the tracking, not the training.
    """

    enabled = True

    def __init__(self, client, run_id: str, parent_run_id: str | None = None, params: Mapping | None = None):
        self.client = client
        self.run_id = run_id
        self.parent_run_id = parent_run_id
        self._params: dict[str, str] = dict(params or {})  # already logged: params are immutable per run

    def _failed(self, what: str, e: Exception) -> None:
        _warn(f"{what} failed ({type(e).__name__}: {e}); run {self.run_id} continues untracked")
        self.enabled = False

    def log_params(self, params: Mapping) -> None:
        """Flattened ``a.b.c`` keys, values as strings; a key already logged is skipped (changed: warned)."""
        if not self.enabled or not params:
            return
        new, changed = {}, []
        for k, v in flatten(params).items():
            k, v = clean_key(k), _param_value(v)
            if k in self._params:
                if self._params[k] != v:
                    changed.append(k)
            else:
                new[k] = v
        if changed:
            _warn(f"run {self.run_id}: params {sorted(changed)} already logged with other values; kept the first")
        try:
            from mlflow.entities import Param

            items = [Param(k, v) for k, v in new.items()]
            for i in range(0, len(items), _BATCH):
                self.client.log_batch(self.run_id, params=items[i:i + _BATCH])
            self._params.update(new)
        except Exception as e:
            self._failed("log_params", e)

    def log_metrics(self, metrics: Mapping, step: int | None = None) -> None:
        """Numeric values only (nested dicts flattened with ``/``); others are skipped silently."""
        if not self.enabled or not metrics:
            return
        try:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            items = [Metric(clean_key(k), f, now, int(step or 0))
                     for k, v in flatten(metrics, sep="/").items() if (f := _as_float(v)) is not None]
            for i in range(0, len(items), 1000):
                self.client.log_batch(self.run_id, metrics=items[i:i + 1000])
        except Exception as e:
            self._failed("log_metrics", e)

    def log_epoch(self, record: Mapping) -> None:
        """One per-epoch record (e.g. from ``train.fit``): its ``epoch`` is the step, the rest are metrics."""
        rest = {k: v for k, v in record.items() if k != "epoch"}
        step = _as_float(record.get("epoch"))
        self.log_metrics(rest, step=None if step is None else int(step))

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """A file or a folder; a missing path is a warning, not an error."""
        if not self.enabled:
            return
        path = Path(path)
        if not path.exists():
            _warn(f"artifact {path} does not exist; not logged")
            return
        try:
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path or path.name)
            else:
                self.client.log_artifact(self.run_id, str(path), artifact_path)
        except Exception as e:
            self._failed(f"log_artifact({path})", e)

    def log_dict(self, d: Mapping, name: str) -> None:
        """``d`` as a JSON artifact ``name`` (non-JSON values as strings)."""
        if not self.enabled:
            return
        try:
            self.client.log_text(self.run_id, json.dumps(d, indent=2, sort_keys=True, default=str) + "\n", name)
        except Exception as e:
            self._failed(f"log_dict({name})", e)

    def set_tags(self, tags: Mapping) -> None:
        if not self.enabled or not tags:
            return
        try:
            from mlflow.entities import RunTag

            items = [RunTag(str(k), str(v)) for k, v in tags.items()]
            for i in range(0, len(items), _BATCH):
                self.client.log_batch(self.run_id, tags=items[i:i + _BATCH])
        except Exception as e:
            self._failed("set_tags", e)

    def end(self, status: str = "FINISHED") -> None:
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as e:
            _warn(f"ending run {self.run_id} failed ({type(e).__name__}: {e})")


def _lock(root: Path | str | None):
    from filelock import FileLock

    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=LOCK_TIMEOUT_S)


def _session(root: Path | str | None = None):
    """(client, experiment id), set up once per process under the lock: DB creation/migration and
    experiment creation race when parallel queue workers start together."""
    uri, name = tracking_uri(root), experiment_name()
    if (uri, name) in _sessions:
        return _sessions[(uri, name)]
    from mlflow import MlflowClient
    from mlflow.entities import LifecycleStage

    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    tags = experiment_tags()
    with _lock(root):
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(name)  # first DB access: creates/migrates the schema
        if exp is None:
            exp_id = client.create_experiment(name, artifact_location=artifact_location(root), tags=tags)
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == LifecycleStage.DELETED:
                client.restore_experiment(exp_id)
            for key, value in tags.items():  # an experiment made before these tags, or by an older version
                if exp.tags.get(key) != value and not (key == NOTE_TAG and key in exp.tags):  # keep a user's note
                    client.set_experiment_tag(exp_id, key, value)
    _sessions[(uri, name)] = (client, exp_id)
    return client, exp_id


def _base_tags(commit: str | None) -> dict[str, str]:
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    tags = {}
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.exp_baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


def _parent(client, exp_id: str, root: Path | str | None, commit: str | None, state: str | None = None):
    """Find the parent run by its key tag, or create it; under the lock so two stages never make two.

    ``state`` (the summary stage's ``pipeline_state``): a plain ``dvc repro`` whose stages all were up to date
    (none ran, so none made the parent) reuses the latest parent with the same state instead of adding an
    empty one. A ``dvc exp run`` always gets its own parent: it is its own row in ``dvc exp show`` too.
    """
    key = parent_key().replace("'", "_")  # the key goes into a filter string
    with _lock(root):
        found = client.search_runs([exp_id], f"tags.`{PARENT_KEY_TAG}` = '{key}'", max_results=1,
                                   order_by=["attributes.start_time ASC"])
        if found:
            return found[0]
        if state and key.startswith("repro:"):
            same = client.search_runs([exp_id], f"tags.`{STATE_TAG}` = '{state}'", max_results=1,
                                      order_by=["attributes.start_time DESC"])
            if same:
                return same[0]
        tags = {PARENT_KEY_TAG: key, "mambaprune.kind": "parent", **_base_tags(commit)}
        return client.create_run(exp_id, tags=tags, run_name=_parent_name(key, commit))


def _on_rank0() -> bool:
    """True in a plain process and on rank 0 of a ``torchrun`` launch (which sets RANK in every process)."""
    return os.environ.get("RANK", "0") == "0"


def open_stage_run(stage: str) -> NullRun:
    """A child ``Run`` under this experiment's parent, or a ``NullRun`` (tracking off, a rank other than 0 of
    a data-parallel stage, or MLflow failed)."""
    if not enabled() or not _on_rank0():
        return NullRun()
    try:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        client, exp_id = _session()
        commit = git_commit()
        parent = _parent(client, exp_id, None, commit)
        name = stage_name(stage)
        tags = {MLFLOW_PARENT_RUN_ID: parent.info.run_id, "dvc.stage": name, "mambaprune.kind": "stage",
                **_base_tags(commit)}
        child = client.create_run(exp_id, tags=tags, run_name=name)
        return Run(client, child.info.run_id, parent.info.run_id)
    except Exception as e:
        _warn(f"MLflow setup failed ({type(e).__name__}: {e}); stage {stage!r} runs untracked", once="setup")
        return NullRun()


@contextmanager
def stage_run(stage: str, params: Mapping | None = None) -> Iterator[NullRun]:
    """``with stage_run("prune", params) as run:`` -> a child run for this stage, FAILED if the block raises.

    Under DDP only rank 0 tracks; every other rank gets a ``NullRun``. Exceptions of the block always propagate;
    tracking errors never do.
    """
    run = open_stage_run(stage)
    if params:
        run.log_params(params)
    try:
        yield run
    except KeyboardInterrupt:
        if isinstance(run, Run):
            run.end("KILLED")
            _mark_parent(run, "FAILED")
        raise
    except BaseException:
        if isinstance(run, Run):
            run.end("FAILED")
            _mark_parent(run, "FAILED")
        raise
    else:
        if isinstance(run, Run):
            run.end("FINISHED")


def epoch_logger(run: NullRun, prefix: str):
    """An epoch callback for ``train.fit`` logging each record it has not logged yet to ``run``: its metrics as
    ``<prefix>/<key>`` at step = its epoch."""
    logged = 0

    def log(history: list[Mapping], model=None) -> None:
        nonlocal logged
        for record in history[logged:]:
            run.log_epoch({f"{prefix}/{k}": v for k, v in record.items()} | {"epoch": record["epoch"]})
        logged = len(history)

    return log


def _mark_parent(run: Run, status: str) -> None:
    """A failed stage marks the experiment's row FAILED; a later successful summary sets FINISHED."""
    if run.parent_run_id:
        try:
            run.client.set_terminated(run.parent_run_id, status)
        except Exception as e:
            _warn(f"marking parent {run.parent_run_id} {status} failed ({e})")


def summarize(root: Path | str | None, params: Mapping, final_metrics: Mapping,
              artifacts: Iterable[Path | str] = ()) -> str | None:
    """For the always-run summary stage: params, final metrics and artifacts on the PARENT run, then
    the parent ends FINISHED. Runs even when DVC restored every other stage from its run-cache (those
    log nothing). Relative artifact paths keep their folder (``plots/x.png`` -> ``plots/``).

    The parent also gets what differs from the baseline params (tag ``mambaprune.changes`` and, with the
    headline numbers, its description) and the pipeline state. A repro that reran nothing adds no parent and
    changes nothing: it finds the earlier parent of the same state (``_parent``), which has these results and
    the description of its time. Params and dvc.lock are read from the cwd. Returns the parent run id, or None
    when untracked.
    """
    if not enabled():
        return None
    try:
        client, exp_id = _session(root)
        commit, state, changes = git_commit(root), pipeline_state(), params_changes(root)
        parent = _parent(client, exp_id, root, commit, state=state)
        if parent.data.tags.get(PARENT_KEY_TAG) != parent_key().replace("'", "_"):
            return parent.info.run_id  # an earlier parent with these very results: it has them all already
        run = Run(client, parent.info.run_id, params=parent.data.params)
        run.set_tags({"mambaprune.summarized": "1", **_base_tags(commit), CHANGES_TAG: changes,
                      NOTE_TAG: describe_run(changes, final_metrics, commit), **({STATE_TAG: state} if state else {})})
    except Exception as e:
        _warn(f"MLflow setup failed ({type(e).__name__}: {e}); summary not tracked", once="setup")
        return None
    run.log_params(params)
    run.log_metrics(final_metrics)
    for a in artifacts:
        a = Path(a)
        folder = a.parent.as_posix() if not a.is_absolute() and a.parent != Path(".") else None
        run.log_artifact(a, folder)
    if run.enabled:
        run.end("FINISHED")
    return run.run_id


# ----------------------------------------------------------------------------------------------- what changed
def pipeline_state(lock: Path | str = "dvc.lock") -> str | None:
    """A hash of ``dvc.lock`` without the always-run summary stage: the params, code and outputs every other
    stage ran with. Equal states = equal results, whoever produced them. None without a readable lock file."""
    import hashlib

    import yaml

    try:
        stages = dict(yaml.safe_load(Path(lock).read_text())["stages"])
    except (OSError, TypeError, KeyError, yaml.YAMLError):
        return None
    stages.pop("summary", None)
    return hashlib.sha256(json.dumps(stages, sort_keys=True, default=str).encode()).hexdigest()[:16]


def baseline_params(root: Path | str | None = None) -> dict | None:
    """params.yaml as committed at the baseline: ``DVC_EXP_BASELINE_REV`` under ``dvc exp run``, else HEAD.
    Read through git from the cwd, then the repo root (a queued run's temp copy may lack the commit); None
    without git or without the file at that commit."""
    import yaml

    rev = os.environ.get("DVC_EXP_BASELINE_REV") or "HEAD"
    for where in dict.fromkeys((Path.cwd(), repo_root(root))):
        try:
            out = subprocess.run(["git", "show", f"{rev}:./params.yaml"], cwd=where, capture_output=True,
                                 text=True, timeout=10, check=True)
            return yaml.safe_load(out.stdout) or {}
        except (OSError, subprocess.SubprocessError, yaml.YAMLError):
            continue
    return None


def _yaml_value(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def describe_changes(baseline: Mapping, current: Mapping) -> str:
    """``"prune.ratio 0.5→0.7, prune.method refill→rsst"``: every flattened key whose value differs, in key
    order (an added key: ``key (new) 3``, a removed one: ``key removed``); ``"no change"`` when none does."""
    def leaves(d: Mapping) -> dict:  # an emptied section shows as its removed keys, not as a new leaf `{}`
        return {k: v for k, v in flatten(d).items() if not (isinstance(v, Mapping) and not v)}

    old, new = leaves(baseline), leaves(current)
    parts = []
    for key in sorted(old.keys() | new.keys()):
        if key not in old:
            parts.append(f"{key} (new) {_yaml_value(new[key])}")
        elif key not in new:
            parts.append(f"{key} removed")
        elif old[key] != new[key]:
            parts.append(f"{key} {_yaml_value(old[key])}→{_yaml_value(new[key])}")
    return ", ".join(parts) or "no change"


def params_changes(root: Path | str | None = None, params_file: Path | str = "params.yaml") -> str:
    """``describe_changes`` of the cwd's params.yaml against ``baseline_params``."""
    import yaml

    baseline = baseline_params(root)
    if baseline is None:
        return "no git baseline"
    try:
        current = yaml.safe_load(Path(params_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return "params.yaml unreadable"
    return describe_changes(baseline, current)


def describe_run(changes: str, metrics: Mapping, commit: str | None) -> str:
    """A parent run's description (markdown): what changed, against which commit, and the headline."""
    def num(key: str, fmt: str) -> str:
        value = _as_float(metrics.get(key))
        return "n/a" if value is None else format(value, fmt)

    return (f"**{changes}** (vs params.yaml at {(commit or 'no git')[:7]})\n\n"
            f"test acc {num('test_acc', '.4f')} (dense {num('dense_test_acc', '.4f')}), "
            f"params {num('params', ',.0f')} ({num('param_reduction', '.1%')} fewer), "
            f"FLOPs {num('flop_reduction', '.1%')} fewer, speedup {num('speedup', '.2f')}x")
