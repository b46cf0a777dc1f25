"""Checkpoints: self-describing round trip, atomic writes, and a clear refusal for every bad file."""

import os
import pickle

import pytest
import torch

from mambaprune import VisionMamba, load_checkpoint, prune_model, save_checkpoint
from mambaprune.checkpoint import FORMAT, CheckpointError, load_state_dict_checked


def small(**kw):
    torch.manual_seed(0)
    m = VisionMamba(img_size=8, patch_size=2, embed_dim=16, depth=2, d_state=4, d_conv=3,
                    ssm_widths=[24, 16], mlp_widths=[32, 20], **kw).eval()
    m.set_scan_impl("ref")
    return m


def outputs(model, x):
    model.set_scan_impl("ref")
    with torch.no_grad():
        return model.eval()(x)


class RunsCode:
    """Unpickling this runs a shell command: what a tampered checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def pruned():
    pruned, plan = prune_model(small(bidirectional=True), 0.5, 0.5, min_keep=4, round_to=4)
    return pruned, plan


def test_round_trip_is_bit_identical_and_weights_only(tmp_path, pruned):
    model, plan = pruned
    path = save_checkpoint(model, tmp_path / "a" / "b" / "m.pt", plans=[plan], round="r1", acc=0.5)
    assert sorted(os.listdir(path.parent)) == ["m.pt"]  # no temp file left behind
    raw = torch.load(path, weights_only=True)  # loads without unpickling any code
    assert raw["format"] == FORMAT and raw["arch"] == "VisionMamba" and raw["config"] == model.config
    assert raw["plans"] == [plan] and raw["round"] == "r1"
    loaded, extra = load_checkpoint(path, return_extra=True)
    assert extra == {"plans": [plan], "round": "r1", "acc": 0.5}
    assert loaded.ssm_widths == model.ssm_widths and loaded.mlp_widths == model.mlp_widths
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(outputs(loaded, x), outputs(model, x))
    assert isinstance(load_checkpoint(path), VisionMamba)


def test_float64_model_keeps_its_precision(tmp_path):
    m = small().double()
    loaded = load_checkpoint(save_checkpoint(m, tmp_path / "m.pt"))
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(m.state_dict().values(),
                                                                         loaded.state_dict().values()))


def test_overwrite_is_atomic_and_plans_default_to_empty(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(small(), path)
    save_checkpoint(small(), path, plans=None)
    assert load_checkpoint(path, return_extra=True)[1] == {"plans": []}
    assert os.listdir(tmp_path) == ["m.pt"]


def test_save_rejects_what_weights_only_could_not_load(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\['note'\] is a PosixPath"):
        save_checkpoint(small(), tmp_path / "m.pt", note=tmp_path)
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(small(), tmp_path / "m.pt", config={})
    assert not os.listdir(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path, pruned):
    path = save_checkpoint(pruned[0], tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"m\.pt: truncated or corrupt"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"m\.pt: .*corrupt"):
        load_checkpoint(path)


def test_not_a_mambaprune_checkpoint(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(small().state_dict(), path)
    with pytest.raises(CheckpointError, match=r"sd\.pt: not a mambaprune checkpoint.*load_state_dict_checked"):
        load_checkpoint(path)
    torch.save([1, 2], path)
    with pytest.raises(CheckpointError, match="not a mambaprune checkpoint"):
        load_checkpoint(path)


def test_state_dict_of_another_width(tmp_path, pruned):
    """A pruned state dict under the dense config (another architecture/width) is refused by name."""
    path = save_checkpoint(pruned[0], tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"] = small(bidirectional=True).config
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"m\.pt: state dict does not match.*shape mismatches: "
                                              r"blocks\.0\.mixer\.in_proj\.weight"):
        load_checkpoint(path)
    payload["config"] = small().config  # unidirectional: the second direction's keys are unexpected
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"unexpected keys: blocks\.0\.mixer\.ssm\.1\."):
        load_checkpoint(path)


def test_another_architecture_is_refused(tmp_path):
    path = save_checkpoint(small(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["arch"] = "ResNet"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"m\.pt: architecture 'ResNet' is not supported"):
        load_checkpoint(path)


def test_load_state_dict_checked_reports_missing_keys():
    m = small()
    state = dict(m.state_dict())
    del state["head.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys: head\.weight"):
        load_state_dict_checked(small(), state)
    assert load_state_dict_checked(small(), m.state_dict()) is not None


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("how", ["pickle_protocol_2", "pickle_default", "torch_save", "inside_payload"])
def test_tampered_pickle_is_refused_and_runs_nothing(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    evil = RunsCode(marker)
    if how == "pickle_protocol_2":
        path.write_bytes(pickle.dumps(evil, protocol=2))
    elif how == "pickle_default":
        path.write_bytes(pickle.dumps(evil))
    elif how == "torch_save":
        torch.save(evil, path)
    else:  # a real checkpoint with one extra entry that runs code
        save_checkpoint(small(), path)
        payload = torch.load(path, weights_only=True)
        payload["evil"] = evil
        torch.save(payload, path)
    assert b"system" in path.read_bytes()  # the file really does carry the os.system call
    # torch's weights-only reader cannot parse protocol >= 4 framing at all, so it fails before the global
    names = "weights-only unpickling failed" if how == "pickle_default" else "the file asks to import or call.*system"
    with pytest.raises(CheckpointError, match=rf"evil\.pt: refused to load: {names}.*NOT loaded.*weights_only=False"):
        load_checkpoint(path)
    assert not marker.exists()


def test_random_bytes_are_reported_as_corrupt(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(os.urandom(300))
    with pytest.raises(CheckpointError, match=r"noise\.pt: .*(corrupt|truncated)"):
        load_checkpoint(path)
