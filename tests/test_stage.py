"""stage.py: resume keys and files, and the rewind snapshots pretrain keeps (tested without running a stage)."""

import torch

import mambaprune as mp
from mambaprune import paths
from mambaprune.config import REWIND_EPOCHS, TrainCfg
from mambaprune.stage import clear_resume, fingerprint, publish_rewind_snapshots, rewind_snapshots


def test_fingerprint_changes_with_params_and_input_files(tmp_path):
    data = tmp_path / "train.pt"
    data.write_bytes(b"a")
    key = fingerprint("pretrain", 0, TrainCfg(), files=(data,))
    assert key == fingerprint("pretrain", 0, TrainCfg(), files=(data,)) and len(key) == 16
    assert key != fingerprint("pretrain", 0, TrainCfg(lr=0.1), files=(data,))
    data.write_bytes(b"b")
    assert key != fingerprint("pretrain", 0, TrainCfg(), files=(data,))


def test_rewind_snapshots_keep_the_first_epochs_and_publish_only_this_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = mp.create_model("mamba_tiny", num_classes=10, img_size=16, depth=1, embed_dim=16)
    folder = paths.snapshot_dir("pretrain")
    snapshot = rewind_snapshots(folder)
    history = []
    for epoch in range(1, REWIND_EPOCHS + 3):
        history.append({"epoch": epoch})
        snapshot(history, model)
    assert sorted(p.name for p in folder.iterdir()) == [f"epoch{e}.pt" for e in range(1, REWIND_EPOCHS + 1)]
    publish_rewind_snapshots(folder, epochs=3)  # a 3-epoch run: epochs 4 and 5 in the folder are not its own
    assert sorted(p.name for p in paths.epoch_checkpoint(1).parent.iterdir()) == ["epoch1.pt", "epoch2.pt", "epoch3.pt"]
    loaded = mp.load_checkpoint(paths.epoch_checkpoint(2))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))

    paths.resume_file("pretrain-train").write_bytes(b"resume")
    (paths.RESUME_DIR / ".pretrain-train.pt.k1ll3d.tmp").write_bytes(b"half")  # a kill landed mid atomic_write
    (paths.RESUME_DIR / "prune_r1-retrain.pt").write_bytes(b"other")  # another stage's: stays
    clear_resume("pretrain")
    assert [p.name for p in paths.RESUME_DIR.iterdir()] == ["prune_r1-retrain.pt"]
    clear_resume("prune@r1")  # the stage finished: its resume file and snapshot folder go
    assert not paths.RESUME_DIR.exists() or not any(paths.RESUME_DIR.iterdir())
