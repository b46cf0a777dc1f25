"""DDP data parallelism: 2 CPU processes (gloo, launched by torchrun) train like 1 process with the same global batch.

With no augmentation (crop_padding=0, hflip off) both runs see the same global batches in the same order; each rank
averages its 32-sample half and DDP averages the two gradients, which is the 64-sample mean computed in another
float order (and with other matmul blockings). So the two runs differ only by float32 rounding (~1e-7 relative per
step), which ~30 AdamW steps grow but keep far below the tolerances used here (rtol 1e-4 on the per-epoch losses,
1e-4 on the weights). Across the two ranks everything is bit-identical: the same weights get the same averaged
gradients.

The test file doubles as the worker script: ``python -m torch.distributed.run --nproc_per_node 2 tests/test_ddp.py
<data_dir> <out_dir>``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import mambaprune
from mambaprune import distributed
from mambaprune.config import DataCfg, TrainCfg
from mambaprune.data import BatchLoader, load_meta, load_split, prepare_data
from mambaprune.pruning.rsst import RSSTRegularizer
from mambaprune.train import TrainingError, fit, history_csv

SEED = 0
N_TRAIN = 1000  # even (no padding of the order across ranks), and 15 full batches of 64 + one of 40
CFG = TrainCfg(batch_size=64, lr=3e-3, warmup_epochs=1, crop_padding=0, hflip=False, device="cpu")
EPOCHS = 2


# ---------------------------------------------------------------------------------------------- shared by both runs


def _model(meta):
    torch.manual_seed(SEED)
    return mambaprune.create_model("mamba_tiny", num_classes=10, img_size=16, embed_dim=32, depth=2, d_state=4,
                                   patch_size=8, norm_mean=meta["mean"], norm_std=meta["std"])


def _loaders(data_dir, rank, world_size):
    x, y = load_split(data_dir, "train")
    train = BatchLoader(x[:N_TRAIN], y[:N_TRAIN], CFG.batch_size, shuffle=True, seed=SEED, device="cpu",
                        rank=rank, world_size=world_size)
    val = BatchLoader(*load_split(data_dir, "val"), 256, shuffle=False, seed=SEED, device="cpu")
    return train, val


def _rsst(model):
    """RSST on the first units of every block: its gradient is added after DDP's all-reduce."""
    depth = model.config["depth"]
    return RSSTRegularizer(model, {"ssm": [list(range(8))] * depth, "mlp": [list(range(16))] * depth}, strength=1.0,
                           update="gradient")


def _result(history, model):
    return {"train_loss": [r["train_loss"] for r in history], "val_loss": [r["val_loss"] for r in history],
            "epochs": [r["epoch"] for r in history],
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def run_scenarios(data_dir, out: Path, rank: int, world_size: int) -> dict:
    """Plain training (with a CSV and a resume checkpoint per rank) and an RSST round, as every rank runs them."""
    meta = load_meta(data_dir)
    train, val = _loaders(data_dir, rank, world_size)
    model = _model(meta)
    history = fit(model, train, val, CFG, EPOCHS, resume_path=out / f"resume_rank{rank}.pt", resume_key="plain",
                  callbacks=[history_csv(out / f"epochs_rank{rank}.csv")], desc="plain")
    res = {"plain": _result(history, model)}
    model = _model(meta)
    history = fit(model, train, val, CFG, 1, hooks=[_rsst(model)], desc="rsst")
    res["rsst"] = _result(history, model)
    return res


# ---------------------------------------------------------------------------------------------- DDP-only checks


class Stop(Exception):
    pass


class StopAtEpochEnd:
    """Raises on every rank at the end of ``epoch``, before the epoch's resume checkpoint is committed."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, epoch, record):
        if epoch == self.epoch:
            raise Stop


class NanOnRank1:
    """The loss turns NaN on rank 1 alone at the 3rd step: every rank must stop (no rank left in a collective)."""

    def __init__(self, rank):
        self.rank, self.calls = rank, 0

    def loss_term(self, model, progress):
        self.calls += 1
        return torch.tensor(float("nan")) if self.rank == 1 and self.calls == 3 else None


def worker(data_dir: Path, out: Path) -> None:
    torch.set_num_threads(1)
    rank, world_size, local_rank = distributed.init_from_env("cpu")
    assert (world_size, local_rank, distributed.is_main()) == (2, rank, rank == 0)
    res = run_scenarios(data_dir, out, rank, world_size)

    # resume: killed in epoch 2; rank 0 reads its checkpoint (rank 1 has no file at its path) and broadcasts it
    meta = load_meta(data_dir)
    train, val = _loaders(data_dir, rank, world_size)
    try:
        fit(_model(meta), train, val, CFG, EPOCHS, hooks=[StopAtEpochEnd(2)], resume_path=out / f"cut_rank{rank}.pt",
            resume_key="cut")
    except Stop:
        pass
    model = _model(meta)
    history = fit(model, train, val, CFG, EPOCHS, resume_path=out / f"cut_rank{rank}.pt", resume_key="cut")
    res["resumed"] = _result(history, model)

    try:  # a NaN on one rank: all raise, none deadlocks
        fit(_model(meta), train, val, CFG, 1, hooks=[NanOnRank1(rank)])
        res["nan"] = "no error"
    except TrainingError as e:
        res["nan"] = str(e)

    res["on_rank0"] = distributed.on_rank0(lambda: 10 * rank + 7)()
    try:
        distributed.on_rank0(lambda: 1 / 0)()
        res["on_rank0_error"] = "no error"
    except (ZeroDivisionError, RuntimeError) as e:
        res["on_rank0_error"] = type(e).__name__
    torch.save(res, out / f"rank{rank}.pt")
    distributed.barrier()
    distributed.cleanup()


# ---------------------------------------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    prepare_data(DataCfg(img_size=16), SEED, out)
    return out


def test_two_processes_match_one_process(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBAPRUNE_NO_PROGRESS", "1")
    ddp_out, single_out = tmp_path / "ddp", tmp_path / "single"
    ddp_out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"OMP_NUM_THREADS": "1", "MAMBAPRUNE_NO_PROGRESS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             __file__, str(digits), str(ddp_out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)

    threads = torch.get_num_threads()  # the 1-process reference runs meanwhile, on one thread like each worker
    torch.set_num_threads(1)
    try:
        single = run_scenarios(digits, single_out, 0, 1)
    finally:
        torch.set_num_threads(threads)
    try:
        log, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"torchrun did not finish (deadlock?):\n{proc.communicate()[0][-4000:]}")
    assert proc.returncode == 0, log[-4000:]
    print(f"torchrun + 1-process reference: {time.perf_counter() - t0:.1f} s")
    r0, r1 = (torch.load(ddp_out / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    for name in ("plain", "rsst"):
        # the two ranks are exact replicas: the same records and bit-identical weights (RSST's gradient, added
        # after the all-reduce, is computed from the same weights on both)
        assert r0[name]["train_loss"] == r1[name]["train_loss"]
        assert all(torch.equal(v, r1[name]["state"][k]) for k, v in r0[name]["state"].items()), name
        # ... and match one process with the same global batch up to float rounding
        print(name, "train loss 1 process", single[name]["train_loss"], "2 processes", r0[name]["train_loss"])
        assert r0[name]["train_loss"] == pytest.approx(single[name]["train_loss"], rel=1e-4)
        assert r0[name]["val_loss"] == pytest.approx(single[name]["val_loss"], rel=1e-4)
        worst = max((v - single[name]["state"][k]).abs().max().item() for k, v in r0[name]["state"].items())
        print(name, "max |w_2proc - w_1proc|", worst)
        assert worst < 1e-4
    assert single["plain"]["train_loss"][1] < single["plain"]["train_loss"][0]  # it does learn

    # rank 0 alone wrote the CSV and the resume checkpoint
    assert (ddp_out / "epochs_rank0.csv").is_file() and (ddp_out / "resume_rank0.pt").is_file()
    assert not (ddp_out / "epochs_rank1.csv").exists() and not (ddp_out / "resume_rank1.pt").exists()
    rows = list(csv.DictReader(open(ddp_out / "epochs_rank0.csv")))
    assert [float(r["train_loss"]) for r in rows] == pytest.approx(r0["plain"]["train_loss"], rel=1e-5)  # 6 digits

    # resume: both ranks continued from rank 0's epoch-1 checkpoint (rank 1 had no file) and ended exactly
    # where the uninterrupted run did
    assert not (ddp_out / "cut_rank1.pt").exists()
    for r in (r0, r1):
        assert r["resumed"]["epochs"] == [1, 2]
        assert all(torch.equal(v, r0["plain"]["state"][k]) for k, v in r["resumed"]["state"].items())

    # a NaN loss on rank 1 alone stopped both ranks with the same error
    assert "non-finite loss" in r0["nan"] and r0["nan"] == r1["nan"]
    assert r0["on_rank0"] == r1["on_rank0"] == 7
    assert (r0["on_rank0_error"], r1["on_rank0_error"]) == ("ZeroDivisionError", "RuntimeError")


# ---------------------------------------------------------------------------------------------- the stages


REPO = Path(__file__).resolve().parents[1]
TINY = dict(embed_dim=32, depth=2, d_state=4, patch_size=8)


def _stage_project(d: Path, data_dir: Path) -> None:
    """params.yaml + stages/ + digits, tiny fast params, no augmentation, taylor-ranked magnitude pruning."""
    shutil.copy2(REPO / "params.yaml", d / "params.yaml")
    shutil.copytree(REPO / "stages", d / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(data_dir, d / "data")
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["model"].update(TINY)
    p["data"]["val_fraction"] = STAGE_VAL_FRACTION
    p["train"].update(device="cpu", batch_size=64, crop_padding=0, hflip=False)
    p["pretrain"]["epochs"] = 2
    p["prune"].update(method="magnitude", importance="taylor", epochs=1, rewind="none", rounds={"r1": "pretrained"},
                      last="r1")
    (d / "params.yaml").write_text(yaml.safe_dump(p))


STAGE_VAL_FRACTION = 0.11  # leaves an even number of train images: no sample repeated to fill the 2 shards


def _run_stages(dirs: dict[int, Path], argv: list[str]) -> dict[int, subprocess.CompletedProcess]:
    """The same stage in each project at once: ``MAMBAPRUNE_NPROC`` = the dict key (1 = a plain process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_ROOT", "MLFLOW_TRACKING_URI", "RANK", "WORLD_SIZE",
                                                             "LOCAL_RANK")}
    env |= {"MAMBAPRUNE_TRACKING": "0", "MAMBAPRUNE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    procs = {n: subprocess.Popen([sys.executable, *argv], cwd=d, env=env | {"MAMBAPRUNE_NPROC": str(n)},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n, d in dirs.items()}
    out = {}
    for n, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{argv} with MAMBAPRUNE_NPROC={n} did not finish:\n{proc.communicate()[1][-4000:]}")
        out[n] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        assert proc.returncode == 0, f"MAMBAPRUNE_NPROC={n}: {argv}\n{stdout[-2000:]}\n{stderr[-4000:]}"
    return out


def _close(a: Path, b: Path) -> float:
    sa, sb = torch.load(a, weights_only=True)["state_dict"], torch.load(b, weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def test_stages_under_mambaprune_nproc_match_one_process(tmp_path_factory):
    """``MAMBAPRUNE_NPROC=2 python stages/...`` re-execs under torchrun; pretrain and a taylor-ranked prune round
    then give the 1-process results (the same plan; weights up to float rounding), written once, by rank 0."""
    data = tmp_path_factory.mktemp("stage_data")
    meta = prepare_data(DataCfg(img_size=16, val_fraction=STAGE_VAL_FRACTION), SEED, data)
    assert meta["sizes"]["train"] % 2 == 0
    dirs = {n: tmp_path_factory.mktemp(f"nproc{n}") for n in (1, 2)}
    for d in dirs.values():
        _stage_project(d, data)

    runs = _run_stages(dirs, ["stages/pretrain.py"])
    assert runs[2].stdout.count("pretrain: val") == 1  # rank 0 alone reports
    assert runs[2].stdout.count("[pretrain-train] epoch 2/2") == 1
    for name in ("models/pretrained.pt", "models/init.pt", "models/rewind/epoch1.pt", "models/rewind/epoch2.pt",
                 "metrics/pretrain.json", "plots/pretrain/train_epochs.csv"):
        assert (dirs[2] / name).is_file(), name
    assert not list((dirs[2] / ".cache" / "resume").glob("pretrain*"))  # cleared after success
    assert _close(dirs[1] / "models/init.pt", dirs[2] / "models/init.pt") == 0.0
    assert _close(dirs[1] / "models/pretrained.pt", dirs[2] / "models/pretrained.pt") < 1e-4
    m1, m2 = (json.loads((d / "metrics/pretrain.json").read_text()) for d in dirs.values())
    assert m2["val_loss"] == pytest.approx(m1["val_loss"], rel=1e-4)

    _run_stages(dirs, ["stages/prune.py", "r1"])
    c1, c2 = (torch.load(d / "models/r1.pt", weights_only=True) for d in dirs.values())
    assert c1["plans"] == c2["plans"] and c1["config"] == c2["config"]
    assert c2["config"]["ssm_widths"] != meta_widths(c2)  # something was cut
    assert _close(dirs[1] / "models/r1.pt", dirs[2] / "models/r1.pt") < 1e-4
    assert (dirs[2] / "metrics/prune_r1.json").is_file()


def meta_widths(ckpt: dict) -> list[int]:
    return [2 * ckpt["config"]["embed_dim"]] * ckpt["config"]["depth"]


if __name__ == "__main__":  # a torchrun worker
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
