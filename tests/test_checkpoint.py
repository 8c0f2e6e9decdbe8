"""Model checkpoints: self-describing, atomic, and never unpickling foreign objects."""
import os
import pickle

import pytest
import torch

from model import CheckpointError, SpongeBob, get_preset, load_model, read_checkpoint, save_model
from model import checkpoint as ckpt_module


class FakeTokenizer:
    """Just what checkpoints look at: a size and an identity."""

    def __init__(self, vocab_size=6400, sha="a" * 64):
        self.vocab_size, self.sha = vocab_size, sha

    def identity(self):
        return {"vocab_size": self.vocab_size, "sha256": self.sha}


def saved_tiny(tmp_path, name="m.pth", **changes):
    torch.manual_seed(0)
    model = SpongeBob(get_preset("spongebob-tiny").with_changes(**changes))
    path = tmp_path / name
    save_model(path, model, FakeTokenizer().identity(), meta={"stage": "test", "step": 3})
    return model, path


@pytest.mark.parametrize("tied", [False, True])
def test_round_trip_needs_no_flags(tmp_path, tied):
    model, path = saved_tiny(tmp_path, tie_embeddings=tied)
    loaded, meta = load_model(path, tokenizer=FakeTokenizer())
    assert loaded.config == model.config and meta == {"stage": "test", "step": 3}
    assert loaded.config.tie_embeddings is tied
    idx = torch.randint(0, 6400, (1, 10))
    with torch.no_grad():
        assert torch.equal(loaded(idx), model.eval()(idx))
    if tied:
        assert loaded.lm_head.weight is loaded.embed.weight


def test_vocab_mismatch_names_both_sizes(tmp_path):
    _, path = saved_tiny(tmp_path)
    with pytest.raises(CheckpointError, match="6400.*6000"):
        load_model(path, tokenizer=FakeTokenizer(vocab_size=6000))


def test_same_size_different_tokenizer_is_refused(tmp_path):
    _, path = saved_tiny(tmp_path)
    with pytest.raises(CheckpointError, match="different tokens"):
        load_model(path, tokenizer=FakeTokenizer(sha="b" * 64))


class Boom:
    """Unpickling this runs a shell command: what a malicious .pth would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_objects_are_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"format": "spongebob-model-v1", "payload": Boom(marker)}, path)
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        read_checkpoint(path)
    assert not marker.exists()
    # Plain pickle would have run it: the guard above is what stopped it.
    pickle.loads(pickle.dumps(Boom(marker)))
    assert marker.exists()


def test_missing_truncated_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pth")
    _, path = saved_tiny(tmp_path)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pth: not a loadable checkpoint"):
        read_checkpoint(truncated)
    foreign = tmp_path / "other.pth"
    torch.save({"model": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a SpongeBob model checkpoint"):
        read_checkpoint(foreign)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, path = saved_tiny(tmp_path)
    before = path.read_bytes()

    def dies_halfway(obj, f):
        f.write(b"partial garbage")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(ckpt_module.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_model(path, model, FakeTokenizer().identity())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth"]  # no temp file left behind


def test_checkpoint_carries_the_real_tokenizer_identity(tmp_path):
    from tokenizer import load_tokenizer
    tok = load_tokenizer()
    model = SpongeBob(get_preset("spongebob-tiny"))
    save_model(tmp_path / "m.pth", model, tok.identity())
    assert read_checkpoint(tmp_path / "m.pth")["tokenizer"]["sha256"] == tok.identity()["sha256"]
    loaded, _ = load_model(tmp_path / "m.pth", tokenizer=tok)
    assert loaded.config.vocab_size == tok.vocab_size


def test_weights_of_the_wrong_shape_name_the_tensor_and_both_shapes(tmp_path):
    _, path = saved_tiny(tmp_path)
    ckpt = read_checkpoint(path)
    ckpt["config"]["hidden_dim"] = 128  # the saved MLP weights are 160 wide: 3 per layer, 2 layers
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    assert str(e.value) == (
        f"{path}: tensor layers.0.mlp.gate_proj.weight has shape (160, 64) in the checkpoint but (128, 64) "
        "in the model (its config: vocab_size=6400 dim=64 n_layers=2 n_heads=4 n_kv_heads=2 hidden_dim=128); "
        "5 more tensor(s) differ too")


def test_a_single_wrong_tensor_or_a_non_tensor_is_named(tmp_path):
    _, path = saved_tiny(tmp_path)
    ckpt = read_checkpoint(path)
    ckpt["model"]["norm.weight"] = torch.ones(32)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    assert str(e.value) == (f"{path}: tensor norm.weight has shape (32,) in the checkpoint but (64,) in the model "
                            "(its config: vocab_size=6400 dim=64 n_layers=2 n_heads=4 n_kv_heads=2 hidden_dim=160)")
    ckpt["model"]["norm.weight"] = 3
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as e:
        load_model(path)
    assert str(e.value) == f"{path}: norm.weight in the checkpoint is not a tensor (found int)"


def test_a_full_disk_is_one_line_and_leaves_the_old_file(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple
    import model.checkpoint as checkpoint
    path = tmp_path / "pretrain.pth"
    checkpoint.atomic_torch_save({"x": 1}, path)
    before = path.read_bytes()

    def full(obj, f):  # what torch's writer raises when the disk fills up mid-file
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    with pytest.raises(OSError, match=r"cannot write .*pretrain.pth: no space left on its disk \(1 MiB free\); "
                                      "free some space or choose another --out_dir"):
        checkpoint.atomic_torch_save({"x": 2}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["pretrain.pth"]
    # The same error with room on the disk is not a full disk: it is raised as it is.
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10 * 2**30, 0, 10 * 2**30))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        checkpoint.atomic_torch_save({"x": 2}, path)
