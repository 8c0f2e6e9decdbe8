"""PretrainDataset on hand-built token streams: exact rows, every token a target once
per epoch, padding only at the very end, deterministic shuffling, resume, DDP shards."""
from collections import Counter

import numpy as np
import pytest
import torch

from dataset.pretokenize import TokenFile
from dataset.pretrain_dataset import PretrainDataset

IGNORE = -100  # model.IGNORE_INDEX, written out so the test does not trust the code's constant


def token_file(tokens) -> TokenFile:
    tokens = np.asarray(tokens, dtype=np.uint16)
    starts = np.flatnonzero(np.r_[True, tokens[:-1] == 0]) if len(tokens) else np.zeros(0, np.int64)
    return TokenFile(tokens, starts.astype(np.int64))


def documents(n_docs: int, seed: int = 0) -> np.ndarray:
    """n_docs documents of 1..40 tokens, each followed by end-of-text (0). Every non-eot
    token id is distinct, so a token's value says where it came from."""
    rng = np.random.default_rng(seed)
    stream, next_id = [], 1
    for _ in range(n_docs):
        n = int(rng.integers(1, 41))
        stream += list(range(next_id, next_id + n)) + [0]
        next_id += n
    return np.array(stream, dtype=np.uint16)


def epoch(ds: PretrainDataset, batch_size: int, epoch_no: int = 0, start: int = 0) -> list[dict]:
    return list(ds.batches(batch_size, epoch_no, start))


def stacked(batches: list[dict], key: str) -> torch.Tensor:
    return torch.cat([b[key] for b in batches])


def test_rows_are_exact_and_only_the_last_is_padded():
    # 11 tokens, seq_len 4: 10 targets -> 3 rows; the third has 2 real targets.
    ds = PretrainDataset(token_file(range(1, 12)), seq_len=4, shuffle=False)
    assert ds.n_rows == 3 and ds.num_batches(2) == 2
    first, last = epoch(ds, 2)
    assert first["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert first["targets"].tolist() == [[2, 3, 4, 5], [6, 7, 8, 9]]
    assert last["input_ids"].tolist() == [[9, 10, 11, 0]]
    assert last["targets"].tolist() == [[10, 11, IGNORE, IGNORE]]
    assert first["input_ids"].dtype == torch.int64 and first["targets"].dtype == torch.int64


def test_documents_are_packed_across_rows_with_their_separators():
    # Two documents [7 8 9] and [5 6], each followed by end-of-text: 7 8 9 0 5 6 0.
    ds = PretrainDataset(token_file([7, 8, 9, 0, 5, 6, 0]), seq_len=3, shuffle=False)
    (batch,) = epoch(ds, 8)
    assert batch["input_ids"].tolist() == [[7, 8, 9], [0, 5, 6]]
    assert batch["targets"].tolist() == [[8, 9, 0], [5, 6, 0]]  # exactly full: no padding at all


def test_every_token_is_a_target_exactly_once_per_epoch():
    tokens = documents(300)
    ds = PretrainDataset(token_file(tokens), seq_len=16, seed=3)
    batches = epoch(ds, 7, epoch_no=2)
    targets, inputs = stacked(batches, "targets"), stacked(batches, "input_ids")
    assert targets.shape == (ds.n_rows, 16) and len(batches) == ds.num_batches(7)
    real = targets[targets != IGNORE]
    # No token lost or duplicated: the real targets are exactly the stream after its first token.
    assert Counter(real.tolist()) == Counter(tokens[1:].tolist())
    # Every target follows its input: each (input, target) pair is a consecutive pair of the stream.
    pairs = Counter(zip(inputs[targets != IGNORE].tolist(), real.tolist()))
    assert pairs == Counter(zip(tokens[:-1].tolist(), tokens[1:].tolist()))
    # Padding: one row only, as a suffix, fewer than seq_len slots, inputs padded with end-of-text.
    padded_rows = (targets == IGNORE).any(dim=1).nonzero().flatten()
    assert len(padded_rows) == 1
    row = padded_rows[0]
    n_pad = ds.n_rows * 16 - (len(tokens) - 1)
    assert 0 < n_pad < 16
    assert targets[row, -n_pad:].eq(IGNORE).all() and targets[row, :-n_pad].ne(IGNORE).all()
    assert inputs[row, 16 - n_pad + 1:].eq(0).all()


def test_same_seed_and_epoch_repeat_other_epochs_and_seeds_differ():
    tf = token_file(documents(200))
    a = stacked(epoch(PretrainDataset(tf, 8, seed=1), 5, epoch_no=0), "input_ids")
    again = stacked(epoch(PretrainDataset(tf, 8, seed=1), 5, epoch_no=0), "input_ids")
    next_epoch = stacked(epoch(PretrainDataset(tf, 8, seed=1), 5, epoch_no=1), "input_ids")
    other_seed = stacked(epoch(PretrainDataset(tf, 8, seed=2), 5, epoch_no=0), "input_ids")
    assert torch.equal(a, again)
    assert not torch.equal(a, next_epoch) and not torch.equal(a, other_seed)
    # A reordering, not other data: the same rows in another order.
    assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, next_epoch.tolist()))


def test_unshuffled_rows_come_in_stream_order():
    tokens = documents(50)
    ds = PretrainDataset(token_file(tokens), 10, shuffle=False)
    first_inputs = stacked(epoch(ds, 4), "input_ids")[:, 0]
    assert first_inputs.tolist() == tokens[0:ds.n_rows * 10:10].tolist()


@pytest.mark.parametrize("start", [0, 1, 5, 12, 13])
def test_start_resumes_exactly_at_that_batch(start):
    tokens = np.arange(1, 12 * 50 + 2, dtype=np.uint16)  # 600 targets / seq_len 12 = 50 rows
    ds = PretrainDataset(token_file(tokens), 12, seed=9)
    full = epoch(ds, 4, epoch_no=3)
    assert len(full) == 13  # 12 batches of 4 and one of 2; the starts cover first, middle, last, past the end
    tail = epoch(ds, 4, epoch_no=3, start=start)
    assert len(tail) == len(full) - start
    for got, want in zip(tail, full[start:]):
        assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["targets"], want["targets"])


def test_two_ranks_split_the_rows_evenly_and_disjointly():
    tokens = np.arange(1, 4 * 10 * 6 + 2, dtype=np.uint16)  # 240 targets / seq_len 6 = 40 rows
    tf = token_file(tokens)
    ranks = [PretrainDataset(tf, 6, seed=5, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].n_rows == 40
    assert ranks[0].num_batches(3) == ranks[1].num_batches(3) == 7  # 20 rows each: 6 of 3 and 1 of 2
    # A row is identified by its first input token (all token ids are distinct).
    seen = [stacked(epoch(ds, 3, epoch_no=1), "input_ids")[:, 0].tolist() for ds in ranks]
    assert len(seen[0]) == len(seen[1]) == 20
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(1, 241, 6))


def test_uneven_rows_drop_the_leftover_so_ranks_stay_in_step():
    tokens = np.arange(1, 7 * 5 + 2, dtype=np.uint16)  # 35 targets / seq_len 5 = 7 rows
    tf = token_file(tokens)
    ranks = [PretrainDataset(tf, 5, rank=r, world_size=3) for r in range(3)]
    assert [ds.num_batches(1) for ds in ranks] == [2, 2, 2]
    rows = [row for ds in ranks for row in stacked(epoch(ds, 1), "input_ids")[:, 0].tolist()]
    assert len(rows) == len(set(rows)) == 6
    # One GPU keeps every row.
    assert PretrainDataset(tf, 5).num_batches(1) == 7


def test_reads_rows_from_a_memmap(tmp_path):
    path = tmp_path / "train.tokens.bin"
    np.arange(100, 121, dtype=np.uint16).tofile(path)
    tf = TokenFile(np.memmap(path, dtype=np.uint16, mode="r"), np.array([0], dtype=np.int64))
    (batch,) = epoch(PretrainDataset(tf, 10, shuffle=False), 2)
    assert batch["input_ids"][1].tolist() == list(range(110, 120))
    assert batch["targets"][1].tolist() == list(range(111, 121))


def test_tiny_and_empty_splits_give_no_rows():
    for tokens in ([], [5]):
        ds = PretrainDataset(token_file(tokens), 4)
        assert ds.n_rows == 0 and ds.num_batches(8) == 0 and epoch(ds, 8) == []


def test_bad_arguments_are_clear_errors():
    tf = token_file(range(1, 30))
    with pytest.raises(ValueError, match="rank 2"):
        PretrainDataset(tf, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="seq_len"):
        PretrainDataset(tf, 0)
    ds = PretrainDataset(tf, 4)
    with pytest.raises(ValueError, match="batch_size"):
        ds.num_batches(0)
    with pytest.raises(ValueError, match="start batch 9"):
        next(ds.batches(4, 0, start=9))
