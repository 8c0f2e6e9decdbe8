"""Packing and length grouping are exact: a packed row gives every conversation the logits,
loss and gradients it would get alone, and the layouts are deterministic, resumable and
split evenly across DDP ranks."""
import json
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from dataset.packing import grouped_batches, pack_rows, round_width
from dataset.sft_dataset import SFTDataset
from dataset.sft_tokenize import pretokenize_chat
from model import IGNORE_INDEX, SpongeBob, get_preset, token_loss
from model.masks import document_mask
from test_ddp import free_port
from tokenizer import load_tokenizer
from engine_run import Run
from trainer import parse_config
from trainer.distributed import DistInfo, init_distributed, shutdown
from trainer.engine import loss_normaliser
from distill import TeacherLoss, reasoning_weights


def chat_rows_file(root):
    """A chat file of 40 conversations of 1-3 turns and very different lengths."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(40):
        turns = []
        for t in range(int(rng.integers(1, 4))):
            turns += [{"role": "user", "content": f"问题{i}-{t}" + "海" * int(rng.integers(1, 30))},
                      {"role": "assistant", "content": f"回答{i}" + "绵" * int(rng.integers(1, 60))}]
        rows.append({"conversations": turns})
    path = root / "chats.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """TESTS_CHAT_ROWS tokenized as sft.py does."""
    root = tmp_path_factory.mktemp("chats")
    return pretokenize_chat([chat_rows_file(root)], load_tokenizer(), 256, val_fraction=0.0,
                            cache_root=root / "cache", show_progress=False)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return SpongeBob(get_preset("spongebob-tiny")).eval()


# ------------------------------------------------------------------ the pieces, by hand

def test_the_mask_is_block_diagonal_and_causal_and_padding_sees_only_padding():
    mask = document_mask(torch.tensor([[0, 0, 1, -1]]), flex=False)[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0],
                    [1, 1, 0, 0],
                    [0, 0, 1, 0],
                    [0, 0, 0, 1]]


def test_best_fit_decreasing_by_hand():
    # Capacity 10. Longest first: 7 opens row 0, 6 opens row 1, 4 fits row 1 (4 free: the fullest
    # that fits; row 0 has 3 free), 3 fills row 0, 2 opens row 2.
    rows = pack_rows(np.array([3, 7, 4, 6, 2]), capacity=10, seed=0)
    assert [r.tolist() for r in rows] == [[1, 0], [3, 2], [4]]
    with pytest.raises(ValueError, match="does not fit rows of 10"):
        pack_rows(np.array([11]), capacity=10, seed=0)


def test_packing_is_deterministic_never_splits_and_fills_the_rows():
    lengths = np.random.default_rng(1).integers(1, 200, size=2000)
    rows = pack_rows(lengths, capacity=1024, seed=5)
    assert [r.tolist() for r in rows] == [r.tolist() for r in pack_rows(lengths, capacity=1024, seed=5)]
    placed = np.concatenate(rows)
    assert sorted(placed.tolist()) == list(range(2000))  # every conversation once, whole
    assert max(int(lengths[r].sum()) for r in rows) <= 1024
    assert 1 - lengths.sum() / (len(rows) * 1024) < 0.02  # under 2% padding at rows of 1024


def test_length_grouping_by_hand():
    lengths = np.array([5, 50, 10, 40, 20, 30, 60, 15])
    # No shuffle: one mega-batch sorted longest first, cut into global batches of 2 x 2 rows,
    # rank 0 and rank 1 taking alternate rows of each.
    r0 = grouped_batches(lengths, batch_size=2, world_size=2, rank=0, seed=0, epoch=0, shuffle=False)
    r1 = grouped_batches(lengths, batch_size=2, world_size=2, rank=1, seed=0, epoch=0, shuffle=False)
    # Sorted: 60 (6), 50 (1), 40 (3), 30 (5) | 20 (4), 15 (7), 10 (2), 5 (0).
    assert [b.tolist() for b in r0] == [[6, 3], [4, 2]]  # lengths 60, 40 | 20, 10
    assert [b.tolist() for b in r1] == [[1, 5], [7, 0]]  # lengths 50, 30 | 15, 5
    assert round_width(65, 512) == 128 and round_width(500, 480) == 480


@pytest.mark.parametrize("packing", ["none", "group", "pack"])
def test_every_rank_gets_the_same_batch_count_and_every_row_once(corpus, packing):
    shards = [SFTDataset(corpus.train, 256, seed=3, rank=r, world_size=3, packing=packing) for r in range(3)]
    assert len({d.num_batches(4) for d in shards}) == 1
    assert all(len(d._epoch_rows(4, 1)) == d.num_batches(4) for d in shards)
    units = [tuple(np.atleast_1d(row).tolist()) for d in shards for rows in d._epoch_rows(4, 1) for row in rows]
    seen = [c for unit in units for c in unit]
    assert len(seen) == len(set(seen))  # no conversation twice
    assert len(units) >= shards[0].n_rows - 2  # at most world_size - 1 rows dropped, for equal shares


# ------------------------------------------------------------------ exactness

@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")  # the CPU reference path
@pytest.mark.parametrize("flex", [False, True])
def test_packed_logits_equal_each_conversation_alone(corpus, flex):
    model = tiny_model()
    data = SFTDataset(corpus.train, 256, packing="pack")
    batch = next(data.batches(2, epoch=0))
    mask = document_mask(batch["doc_ids"], flex=flex)
    with torch.no_grad():
        packed = model(batch["input_ids"], position_ids=batch["position_ids"], attn_mask=mask)
        checked = 0
        for r, row_docs in enumerate(data._epoch_rows(2, 0)[0]):
            at = 0
            for doc in row_docs:
                inputs, _, _ = data.conversation(int(doc))
                alone = model(inputs[None])[0]
                assert (packed[r, at:at + len(inputs)] - alone).abs().max() < 1e-5
                at += len(inputs)
                checked += 1
    assert checked >= 3  # the rows really held several conversations


def grads_of(model, loss):
    return torch.autograd.grad(loss, list(model.parameters()))


@pytest.mark.parametrize("weighted", [False, True])
def test_a_packed_batch_and_the_padded_batch_give_the_same_loss_and_gradients(corpus, weighted):
    tok = load_tokenizer()
    weigh = (lambda t: reasoning_weights(t, (tok.think_id, tok.think_end_id), tok.think_id, tok.think_end_id,
                                         tag_weight=10.0, think_weight=0.5) + (t != IGNORE_INDEX) * (t % 3)) \
        if weighted else None
    packed_data = SFTDataset(corpus.train, 256, packing="pack", weigh=weigh)
    rows = packed_data._epoch_rows(4, 0)[0]
    docs = np.concatenate(rows)
    packed = packed_data._packed(rows)
    padded = SFTDataset(corpus.train, 256, packing="none", weigh=weigh)._padded(docs)
    model = tiny_model()
    mask = document_mask(packed["doc_ids"], flex=False)
    loss_packed = token_loss(model(packed["input_ids"], position_ids=packed["position_ids"], attn_mask=mask),
                             packed["targets"], packed.get("loss_weight"), reduction="sum")
    loss_padded = token_loss(model(padded["input_ids"]), padded["targets"], padded.get("loss_weight"), reduction="sum")
    assert torch.allclose(loss_packed, loss_padded, rtol=1e-5)
    assert torch.isclose(loss_normaliser(packed), loss_normaliser(padded))
    for a, b in zip(grads_of(model, loss_packed), grads_of(model, loss_padded)):
        assert torch.allclose(a, b, atol=1e-5)


def test_distillation_from_a_teacher_is_the_same_packed_or_padded(corpus):
    packed_data = SFTDataset(corpus.train, 256, packing="pack")
    rows = packed_data._epoch_rows(4, 0)[0]
    packed = packed_data._packed(rows)
    padded = SFTDataset(corpus.train, 256, packing="none")._padded(np.concatenate(rows))
    packed["attn_mask"] = document_mask(packed.pop("doc_ids"), flex=False)
    student, kd = tiny_model(0).train(), TeacherLoss(tiny_model(1), alpha=0.7, temperature=2.0)
    logits = student(packed["input_ids"], position_ids=packed["position_ids"], attn_mask=packed["attn_mask"])
    loss_packed = kd(logits, packed)
    loss_padded = kd(student(padded["input_ids"]), padded)
    assert torch.allclose(loss_packed, loss_padded, rtol=1e-5)
    for a, b in zip(grads_of(student, loss_packed), grads_of(student, loss_padded)):
        assert torch.allclose(a, b, atol=1e-5)


# ------------------------------------------------------------------ resume and DDP

def trainer_for(tmp_path, corpus, packing, rank=0, world_size=1, dist=None, **overrides):
    values = dict(out_dir=str(tmp_path), preset="spongebob-tiny", epochs=2, batch_size=2, accumulation_steps=2,
                  learning_rate=1e-3, warmup_steps=1, log_interval=1, eval_interval=0, save_interval=3,
                  max_seq_len=256, device="cpu", dtype="float32", keep_last=5)
    values.update(overrides)
    cfg = parse_config([], "test", stage_defaults=values)
    torch.manual_seed(0)
    data = SFTDataset(corpus.train, 256, seed=1, rank=rank, world_size=world_size, packing=packing)
    return Run(cfg, SpongeBob(get_preset("spongebob-tiny")), data, tokenizer_id={"vocab_size": 6400}, dist=dist)


class Crash(Exception):
    pass


class CrashAt:
    """Wraps a dataset and dies when asked for its n-th micro-batch, like a kill mid-run."""

    def __init__(self, data, n):
        self.data, self.n, self.served = data, n, 0

    def num_batches(self, batch_size):
        return self.data.num_batches(batch_size)

    def batches(self, batch_size, epoch, start=0):
        for batch in self.data.batches(batch_size, epoch, start):
            self.served += 1
            if self.served == self.n:
                raise Crash
            yield batch


@pytest.mark.parametrize("packing", ["group", "pack"])
def test_resume_is_bit_exact(tmp_path, corpus, packing):
    full = trainer_for(tmp_path / "full", corpus, packing)
    full.fit()
    cut = trainer_for(tmp_path / "cut", corpus, packing)
    cut.data.train = CrashAt(cut.data.train, 9)  # dies inside step 5; the last state is step 3
    with pytest.raises(Crash):
        cut.fit()
    resumed = trainer_for(tmp_path / "cut", corpus, packing, resume=True)
    assert resumed.engine.step == 3
    resumed.fit()
    a, b = full.engine.model.state_dict(), resumed.engine.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def ddp_worker(rank, world_size, port, out_dir, corpus_dir, packing, steps):
    from dataset.token_files import load_tokenized
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    dist = init_distributed(torch.device("cpu"))
    try:
        trainer_for(out_dir, load_tokenized(corpus_dir), packing, rank, world_size, dist, batch_size=1,
                    epochs=1, max_steps=steps).fit()
    finally:
        shutdown()


@pytest.mark.parametrize("packing", ["group", "pack"])
def test_two_ranks_equal_one_process(tmp_path, corpus, packing):
    from model import read_checkpoint
    # Whole steps only: with an odd row count the single process would keep a last row the ranks drop.
    steps = SFTDataset(corpus.train, 256, seed=1, rank=0, world_size=2, packing=packing).num_batches(1) // 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer_for(tmp_path / "one", corpus, packing, epochs=1, max_steps=steps).fit()  # batch 2 = 2 ranks x 1
    finally:
        torch.set_num_threads(threads)
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path / "two"), str(corpus.dir), packing, steps), nprocs=2,
             join=True)
    one, two = read_checkpoint(tmp_path / "one" / "test.pth")["model"], read_checkpoint(tmp_path / "two" / "test.pth")["model"]
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-6, rtol=0), name
