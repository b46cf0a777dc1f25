"""A training stage SIGKILLed mid-epoch and rerun through `dvc repro` resumes from its last finished epoch and
ends with the same metrics and weights as an uninterrupted run (same seed, CPU)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pipeline_helpers import ROOT, set_params

pytestmark = pytest.mark.slow
DVC = [sys.executable, "-m", "dvc"]
TINY = {
    "data": {"img_size": 8},
    "model": {"embed_dim": 16, "depth": 1, "d_state": 4, "patch_size": 4},
    "train": {"batch_size": 4},  # many small steps: an epoch lasts long enough to be killed inside it
    "pretrain": {"epochs": 4},
}


def make_repo(path: Path, env: dict) -> Path:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        if rel.startswith(("metrics/", "plots/", "results/")) or rel == "dvc.lock" or not (ROOT / rel).is_file():
            continue
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes((ROOT / rel).read_bytes())
    set_params(path, TINY)
    subprocess.run(["git", "init", "-q"], cwd=path, env=env, check=True)
    return path


def repro(repo: Path, env: dict, *targets: str) -> str:
    proc = subprocess.run([*DVC, "repro", *targets], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def epochs_done(repo: Path) -> int:
    csv = repo / "plots/pretrain/train_epochs.csv"
    return max(0, len(csv.read_text().splitlines()) - 1) if csv.exists() else 0


def test_sigkill_mid_epoch_then_dvc_repro_resumes_with_identical_results(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(MAMBAPRUNE_NO_PROGRESS="1", MAMBAPRUNE_TRACKING="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    killed = make_repo(tmp_path / "killed", env)
    clean = make_repo(tmp_path / "clean", env)

    repro(killed, env, "prepare")
    proc = subprocess.Popen([*DVC, "repro", "pretrain"], cwd=killed, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while epochs_done(killed) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage process with it, inside epoch 3
    proc.wait()
    done = epochs_done(killed)
    assert 2 <= done < 4, f"expected to kill inside epoch 3 or 4, the stage had finished {done} epochs"
    assert not (killed / "metrics/pretrain.json").exists()

    # a snapshot a crashed run with more epochs left behind is not this run's, and must not reach models/rewind/
    snapshots = killed / ".cache/resume/pretrain-snapshots"
    (snapshots / "epoch5.pt").write_bytes((snapshots / "epoch1.pt").read_bytes())
    out = repro(killed, env, "pretrain")
    # the CSV row of an epoch is written just before its resume checkpoint: a kill in between loses that epoch
    resumed = re.search(r"resuming from \.cache/resume/pretrain-train\.pt after epoch (\d+)/4", out)
    assert resumed, out[-2000:]
    k = int(resumed.group(1))
    assert done - 1 <= k <= done and k >= 1  # at most one epoch lost
    assert f"epoch {k}/4 " not in out and f"epoch {k + 1}/4 " in out  # finished epochs are not trained again
    repro(clean, env, "pretrain")

    got, want = (json.loads((r / "metrics/pretrain.json").read_text()) for r in (killed, clean))
    for key in ("val_acc", "test_acc", "val_loss", "test_loss", "params", "epochs"):
        assert got[key] == want[key], key
    a, b = (torch.load(r / "models/pretrained.pt", weights_only=True)["state_dict"] for r in (killed, clean))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (killed / "models/rewind").iterdir()) == \
        sorted(p.name for p in (clean / "models/rewind").iterdir())
    assert not any((killed / ".cache/resume").iterdir())  # resume files cleared once the stage finished
