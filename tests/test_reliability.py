"""Bad inputs, end to end: each row runs a stage script as a subprocess in a throwaway project and expects
ONE clear ``error: ...`` line naming the cause and the fix, exit status 2, no traceback, and the project
tree left exactly as it was (no partial or temp file at any output path, inputs untouched).

The rows are independent, so a module fixture runs them all concurrently (each subprocess pays ~2-3 s of
imports) and each test checks one row. A NaN at epoch 2 keeping epoch 1's resume checkpoint is covered
in-process by test_train.py::test_nan_loss_stops_and_keeps_the_last_good_checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

import mambaprune as mp
from mambaprune.config import DataCfg
from mambaprune.data import prepare_data

REPO = Path(__file__).resolve().parents[1]
TINY = dict(embed_dim=32, depth=2, d_state=4, patch_size=8)
MARKER = "PWNED"  # a tampered checkpoint would create this file in the project if loading ran its code


# ---------------------------------------------------------------------------------------------- rows


@dataclass
class Row:
    argv: list[str]  # after `python`
    setup: Callable[[Path], None]
    expect: tuple[str, ...]  # substrings of stderr
    ready: bool = False  # start from prepared data + a tiny pretrained model (else: params.yaml + stages/ only)
    rc: int = 2
    check: Callable[[Path, dict], None] | None = None  # extra assertions (project dir, outcome)


def _params(d: Path, **dotted) -> None:
    """Set params.yaml keys, e.g. _params(d, **{"train.lr": "fast"})."""
    p = yaml.safe_load((d / "params.yaml").read_text())
    for key, value in dotted.items():
        *parents, last = key.split(".")
        node = p
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    (d / "params.yaml").write_text(yaml.safe_dump(p))


def _set(**dotted) -> Callable[[Path], None]:
    return lambda d: _params(d, **dotted)


def _images(d: Path, splits=("train", "test"), classes=("a", "b"), n=3) -> None:
    from PIL import Image

    for s in splits:
        for c in classes:
            (d / "imgs" / s / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (40 * i, 20, 0)).save(d / "imgs" / s / c / f"{i}.png")
    _params(d, **{"data.name": "imagefolder", "data.root": "imgs"})


def _then(*fns) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for fn in fns:
            fn(d)
    return setup


def _tiny(d: Path | None = None, **kw):
    meta = json.loads((d / "data" / "meta.json").read_text()) if d else {"mean": [0.5] * 3, "std": [0.25] * 3}
    cfg = dict(num_classes=10, img_size=16, norm_mean=meta["mean"], norm_std=meta["std"], **TINY) | kw
    return mp.create_model("mamba_tiny", **cfg)


def _truncate(d: Path) -> None:
    f = d / "models" / "pretrained.pt"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _bare_state_dict(d: Path) -> None:
    torch.save(_tiny(d, embed_dim=48).state_dict(), d / "models" / "r1.pt")


def _edited_payload(d: Path, **changes) -> None:
    """A mambaprune checkpoint with some payload entries replaced (as another tool or an edit would)."""
    path = mp.save_checkpoint(_tiny(d), d / "models" / "r1.pt")
    payload = torch.load(path, weights_only=True) | changes
    torch.save(payload, path)


class _RunsCode:
    """Pickles as a call of os.system: whoever unpickles it with plain pickle creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _tampered(d: Path) -> None:
    payload = {"format": "mambaprune-checkpoint/1", "arch": "VisionMamba", "config": {}, "state_dict": {},
               "plans": [_RunsCode(d / MARKER)]}
    torch.save(payload, d / "models" / "r1.pt")


def _nonfinite_weights(d: Path) -> None:
    m = mp.load_checkpoint(d / "models" / "pretrained.pt")
    with torch.no_grad():
        m.head.weight[0, 0] = float("inf")
    mp.save_checkpoint(m, d / "models" / "r1.pt")


def _copy_pretrained_to_r1(d: Path) -> None:
    shutil.copy2(d / "models" / "pretrained.pt", d / "models" / "r1.pt")


def _check_no_code_ran(d: Path, outcome: dict) -> None:
    assert not (d / MARKER).exists()


def _check_min_keep_warning(d: Path, outcome: dict) -> None:
    for kind, effective in (("ssm", "0.8750"), ("mlp", "0.9375")):  # 8 of 64 SSM channels, 8 of 128 neurons
        assert re.search(rf"warning: {kind}: min_keep=8 .*effective ratio {effective} instead of the asked 0\.9900",
                         outcome["stderr"]), outcome["stderr"]
    model = mp.load_checkpoint(d / "models" / "r1.pt")
    assert model.config["ssm_widths"] == [8, 8] and model.config["mlp_widths"] == [8, 8]
    metrics = json.loads((d / "metrics" / "prune_r1.json").read_text())
    assert len(metrics["selection_warnings"]) == 2


def _round_metrics(d: Path, cuts: dict[str, tuple[float, float] | None]) -> None:
    """Rounds r1 -> r2 -> ... with these (val accuracy before, after the cut) in their metrics (None: a record from
    before the cut report), and the dense model standing in for the finetuned one."""
    names = list(cuts)
    _params(d, **{"prune.rounds": dict(zip(names, ["pretrained", *names[:-1]])), "prune.last": names[-1]})
    for name, cut in cuts.items():
        record = {"val_acc_before": 0.9} if cut is None else {"val_acc_before_cut": cut[0], "val_acc_after_cut": cut[1]}
        (d / "metrics").mkdir(exist_ok=True)
        (d / "metrics" / f"prune_{name}.json").write_text(json.dumps(record))
    shutil.copy2(d / "models" / "pretrained.pt", d / "models" / "finetuned.pt")


def _check_costly_cut_flagged(d: Path, outcome: dict) -> None:
    """The round that lost 1.5 points is flagged (one warning line, the record, the count); those that lost 0.5
    and exactly 1.0 are not. The speed record has every default mode; on CPU one_call says it ran eagerly."""
    record = json.loads((d / "metrics" / "evaluate.json").read_text())
    assert record["cut_cost"] == {"r1": 0.005, "r2": 0.015, "r3": 0.01}
    assert record["costly_cuts"] == 1 and record["costly_cut_warnings"] == [
        "r2: the cut lost 1.50 points of validation accuracy (97.00% -> 95.50%), more than 1"]
    warnings = [line for line in outcome["stderr"].splitlines() if line.startswith("warning: r")]
    assert warnings == ["warning: " + record["costly_cut_warnings"][0]], outcome["stderr"]
    assert "costly cuts: 1 of 3 round(s)" in outcome["stdout"]
    modes = record["speed_by_mode"]
    assert list(modes) == ["eager", "one_call"]
    assert modes["one_call"]["runs_as"] == "eager" and "no CUDA device" in modes["one_call"]["reason"]
    assert record["speedup"] == modes["one_call"]["speedup"] > 0


def _check_nan_stop(d: Path, outcome: dict) -> None:
    assert re.search(r"non-finite loss \((nan|-?inf)\) at epoch 1, step \d+/\d+", outcome["stderr"]), outcome["stderr"]


_CIFAR = ("CIFAR10 not found", "download is off (data.download: false)", "cifar-10-python.tar.gz",
          "set data.root")

ROWS: dict[str, Row] = {
    # ---- params.yaml, through the stage CLIs (test_config.py covers every message in-process)
    "params-type-train.lr": Row(["stages/pretrain.py"], _set(**{"train.lr": "fast"}),
                                ("train.lr must be a number in (0.0, 10.0], got 'fast'",)),
    "params-type-model.depth": Row(["stages/evaluate.py"], _set(**{"model.depth": 2.5}),
                                   ("model.depth must be an integer in [1, 256], got 2.5",)),
    "params-range-prune.ratio": Row(["stages/prune.py", "r1"], _set(**{"prune.ratio": 1.5}),
                                    ("prune.ratio must be in [0.0, 1.0), got 1.5",)),
    "params-range-data.img_size": Row(["stages/prepare.py"], _set(**{"data.img_size": 2}),
                                      ("data.img_size must be in [4, 512], got 2",)),
    "params-unknown-data.colour": Row(["stages/prepare.py"], _set(**{"data.colour": "rgb"}),
                                      ("unknown key data.colour; allowed keys: name, root",)),
    "params-unknown-top-level": Row(["stages/pretrain.py"], _set(prune_ratio=0.5),
                                    ("unknown key prune_ratio; allowed keys: seed, data, model",)),
    "params-choice-prune.scope": Row(["stages/prune.py", "r1"], _set(**{"prune.scope": "layer-wise"}),
                                     ("prune.scope must be one of 'global', 'layerwise', got 'layer-wise'",)),
    "params-choice-train.optimizer": Row(["stages/finetune.py"], _set(**{"train.optimizer": "adam"}),
                                         ("train.optimizer must be one of 'adamw', 'sgd', got 'adam'",)),
    "params-not-yaml": Row(["stages/prepare.py"],
                           lambda d: (d / "params.yaml").write_text("data:\n  name: [digits\n"),
                           ("params.yaml is not valid YAML",)),
    # ---- datasets: prepare must fail before writing anything
    "data-imagefolder-root-missing": Row(["stages/prepare.py"],
                                         _set(**{"data.name": "imagefolder", "data.root": "nope"}),
                                         ("imagefolder root", "nope does not exist", "<root>/train/<class>/<image>",
                                          "set data.root in params.yaml")),
    "data-imagefolder-no-test": Row(["stages/prepare.py"], lambda d: _images(d, splits=("train",)),
                                    ("imgs/test does not exist", "<root>/test/<class>/<image>")),
    "data-imagefolder-no-class-folders": Row(["stages/prepare.py"],
                                             _then(_images, lambda d: shutil.rmtree(d / "imgs" / "train"),
                                                   lambda d: (d / "imgs" / "train").mkdir()),
                                             ("imgs/train has no class folders", "ImageFolder layout")),
    "data-unreadable-image": Row(["stages/prepare.py"],
                                 _then(_images, lambda d: (d / "imgs/train/b/bad.png").write_bytes(b"no png")),
                                 ("cannot read image", "imgs/train/b/bad.png", "replace or delete that file")),
    "data-empty-class": Row(["stages/prepare.py"],
                            _then(_images, lambda d: (d / "imgs/train/c").mkdir(),
                                  lambda d: (d / "imgs/test/c").mkdir()),
                            ("class folder(s) c in", "hold no images", "add images to them or remove them")),
    "data-cifar10-offline": Row(["stages/prepare.py"],
                                _then(lambda d: (d / "empty").mkdir(),
                                      _set(**{"data.name": "cifar10", "data.root": "empty",
                                              "data.download": False})),
                                _CIFAR),
    # ---- checkpoints
    "ckpt-missing-prune": Row(["stages/prune.py", "r1"], lambda d: (d / "models/pretrained.pt").unlink(),
                              ("models/pretrained.pt: checkpoint not found", "run the stage that writes it"),
                              ready=True),
    "ckpt-missing-finetune": Row(["stages/finetune.py"], lambda d: None,
                                 ("models/r1.pt: checkpoint not found", "run the stage that writes it"), ready=True),
    "ckpt-missing-evaluate": Row(["stages/evaluate.py"],
                                 _then(lambda d: _round_metrics(d, {"r1": (0.9, 0.9)}),
                                       lambda d: (d / "models" / "finetuned.pt").unlink()),
                                 ("models/finetuned.pt: checkpoint not found",), ready=True),
    "metrics-round-predates-cut-report": Row(["stages/evaluate.py"],
                                             lambda d: _round_metrics(d, {"r1": (0.9, 0.9), "r2": None}),
                                             ("round r2's metrics lack val_acc_before_cut, val_acc_after_cut",
                                              "rerun the prune stages (dvc repro)"), ready=True),
    "ckpt-truncated": Row(["stages/prune.py", "r1"], _truncate,
                          ("models/pretrained.pt: truncated or corrupt checkpoint",
                           "restore it or re-run the stage that writes it"), ready=True),
    "ckpt-bare-state-dict": Row(["stages/finetune.py"], _bare_state_dict,
                                ("models/r1.pt: not a mambaprune checkpoint", "bare state dict",
                                 "load_state_dict_checked"), ready=True),
    "ckpt-weights-of-another-width": Row(["stages/finetune.py"],
                                         lambda d: _edited_payload(d, state_dict=_tiny(d, embed_dim=48).state_dict()),
                                         ("models/r1.pt: state dict does not match", "pos_embed: file (1, 4, 48) vs "
                                          "model (1, 4, 32)", "written for another architecture or other widths"),
                                         ready=True),
    "ckpt-another-architecture": Row(["stages/finetune.py"], lambda d: _edited_payload(d, arch="ResNet"),
                                     ("models/r1.pt: architecture 'ResNet' is not supported",), ready=True),
    "ckpt-other-data": Row(["stages/finetune.py"],
                           lambda d: mp.save_checkpoint(_tiny(d, img_size=32, num_classes=100), d / "models/r1.pt"),
                           ("models/r1.pt does not fit the prepared data", "img_size 32 vs data 16",
                            "num_classes 100 vs data 10", "Re-run the pipeline from pretrain"), ready=True),
    "ckpt-other-model-size": Row(["stages/evaluate.py"],
                                 _then(lambda d: _round_metrics(d, {"r1": (0.9, 0.9)}),
                                       lambda d: mp.save_checkpoint(_tiny(d, embed_dim=48), d / "models/finetuned.pt")),
                                 ("models/finetuned.pt and models/pretrained.pt are not the same architecture",
                                  "embed_dim 48 vs 32", "Re-run the pipeline from pretrain"), ready=True),
    "ckpt-tampered-pickle": Row(["stages/finetune.py"], _tampered,
                                ("models/r1.pt: refused to load", "not tensor data", "GLOBAL",
                                 "never retries with weights_only=False"),
                                ready=True, check=_check_no_code_ran),
    "ckpt-non-finite-weights": Row(["stages/finetune.py"], _nonfinite_weights,
                                   ("models/r1.pt: non-finite weights (inf/NaN) in head.weight",
                                    "re-run the stage that writes it"), ready=True),
    # ---- min_keep binds: a warning naming the effective ratio, not a failure
    "prune-min-keep-binds-refill": Row(["stages/prune.py", "r1"],
                                       _set(**{"prune.ratio": 0.99, "prune.min_keep": 8, "prune.method": "refill"}),
                                       (), ready=True, rc=0, check=_check_min_keep_warning),
    "prune-min-keep-binds-magnitude": Row(["stages/prune.py", "r1"],
                                          _set(**{"prune.ratio": 0.99, "prune.min_keep": 8,
                                                  "prune.method": "magnitude"}),
                                          (), ready=True, rc=0, check=_check_min_keep_warning),
    # ---- evaluate flags a round whose cut lost more than 1 point: a warning, not a failure
    "evaluate-flags-a-costly-cut": Row(["stages/evaluate.py"],
                                       lambda d: _round_metrics(d, {"r1": (0.98, 0.975), "r2": (0.97, 0.955),
                                                                    "r3": (0.96, 0.95)}),
                                       (), ready=True, rc=0, check=_check_costly_cut_flagged),
    # ---- a diverging run: lr 10 * lr_scale 10 without clipping or warm-up goes NaN within the first epoch
    "train-non-finite-loss": Row(["stages/finetune.py"],
                                 _then(_copy_pretrained_to_r1,
                                       _set(**{"train.lr": 10.0, "train.grad_clip": 0.0, "train.warmup_epochs": 0,
                                               "finetune.lr_scale": 10.0, "finetune.epochs": 2})),
                                 ("finetune-train: non-finite loss", "Likely fixes: lower train.lr"),
                                 ready=True, check=_check_nan_stop),
}


# ---------------------------------------------------------------------------------------------- running


def _tree(d: Path) -> dict[str, bytes | None]:
    """Every path under ``d`` (folders too) → its bytes (None for folders); __pycache__ ignored."""
    out = {}
    for p in sorted(d.rglob("*")):
        if "__pycache__" in p.parts:
            continue
        out[str(p.relative_to(d))] = None if p.is_dir() else p.read_bytes()
    return out


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "MLFLOW_TRACKING_URI")}
    env.update(MAMBAPRUNE_TRACKING="0", MAMBAPRUNE_NO_PROGRESS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONDONTWRITEBYTECODE="1")
    return env


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[bool, Path]:
    """bare: params.yaml + stages/; ready: + digits at 16 px, a tiny pretrained model and tiny, fast params."""
    bare = tmp_path_factory.mktemp("bare")
    shutil.copy2(REPO / "params.yaml", bare / "params.yaml")
    shutil.copytree(REPO / "stages", bare / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    ready = tmp_path_factory.mktemp("ready")
    shutil.copytree(bare, ready, dirs_exist_ok=True)
    prepare_data(DataCfg(name="digits", img_size=16), 0, ready / "data")
    mp.save_checkpoint(_tiny(ready), ready / "models" / "pretrained.pt", plans=[])
    _params(ready, **{f"model.{k}": v for k, v in TINY.items()},
            **{"train.device": "cpu", "train.batch_size": 256, "prune.epochs": 0, "prune.rounds": {"r1": "pretrained"},
               "prune.last": "r1", "finetune.epochs": 1, "evaluate.throughput_iters": 1,
               "evaluate.throughput_batch": 8})
    return {False: bare, True: ready}


@pytest.fixture(scope="module")
def outcomes(bases, tmp_path_factory) -> dict[str, dict]:
    """Set up every row's project, then run all the stage subprocesses concurrently."""
    root = tmp_path_factory.mktemp("rows")
    jobs = {}
    for name, row in ROWS.items():
        d = root / name
        shutil.copytree(bases[row.ready], d)
        row.setup(d)
        jobs[name] = (d, _tree(d))

    def run(name: str) -> dict:
        d, before = jobs[name]
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, *ROWS[name].argv], cwd=d, env=_env(), capture_output=True, text=True,
                              timeout=300)
        return dict(dir=d, before=before, after=_tree(d), rc=proc.returncode, stdout=proc.stdout,
                    stderr=proc.stderr, seconds=time.perf_counter() - start)

    workers = max(2, min(8, os.cpu_count() or 2))
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(jobs, pool.map(run, jobs)))


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input(outcomes, name):
    row, out = ROWS[name], outcomes[name]
    err = out["stderr"]
    assert out["rc"] == row.rc, f"exit {out['rc']}\nstdout:\n{out['stdout']}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    if row.rc != 0:
        lines = err.splitlines()
        assert lines and lines[0].startswith("error: ") and sum(ln.startswith("error:") for ln in lines) == 1, err
        for text in row.expect:
            assert text in err, f"{text!r} not in:\n{err}"
        changed = sorted(k for k in out["before"].keys() | out["after"].keys()
                         if out["before"].get(k, 0) != out["after"].get(k, 0))
        assert not changed, f"a failed stage changed or left files behind: {changed}"
    if row.check:
        row.check(out["dir"], out)
