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
       ``dvc repro`` is a new process, so a new parent named ``repro-<git short sha>-<YYYYmmdd-HHMMSS>``.

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
    with _lock(root):
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(name)  # first DB access: creates/migrates the schema
        if exp is None:
            exp_id = client.create_experiment(name, artifact_location=artifact_location(root))
        else:
            exp_id = exp.experiment_id
            if exp.lifecycle_stage == LifecycleStage.DELETED:
                client.restore_experiment(exp_id)
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


def _parent(client, exp_id: str, root: Path | str | None, commit: str | None):
    """Find the parent run by its key tag, or create it; under the lock so two stages never make two."""
    key = parent_key().replace("'", "_")  # the key goes into a filter string
    with _lock(root):
        found = client.search_runs([exp_id], f"tags.`{PARENT_KEY_TAG}` = '{key}'", max_results=1,
                                   order_by=["attributes.start_time ASC"])
        if found:
            return found[0]
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
    Returns the parent run id, or None when untracked.
    """
    if not enabled():
        return None
    try:
        client, exp_id = _session(root)
        commit = git_commit(root)
        parent = _parent(client, exp_id, root, commit)
        run = Run(client, parent.info.run_id, params=parent.data.params)
        run.set_tags({"mambaprune.summarized": "1", **_base_tags(commit)})
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
