"""Packed pretraining rows over a tokenized split, shuffled, sharded and resumable.

The split is one stream of tokens (documents separated by the end-of-text id),
cut into rows of seq_len + 1 tokens that overlap by one:

    row r = tokens[r*L : r*L + L + 1]     input_ids = row[:-1], targets = row[1:]

so every token after the first is a target exactly once per epoch, and no row
is padded except the very last (< 1 row per epoch; its padded targets are
IGNORE_INDEX). A document may span two rows: the model still sees it in
order, and attention may look back across the end-of-text separator into the
previous document, as in GPT-2/nanoGPT pretraining. The reference instead put
each document in its own row padded to 512 tokens; bench/bench_data.py
measures how much of such rows is padding on real text.

Order. Each epoch visits the rows in a permutation drawn from a
torch.Generator seeded by (seed, epoch): deterministic on every platform and
different every epoch. Every rank computes the same permutation and takes
every world_size-th row of it, so ranks never share a row and each gets the
same count (n_rows // world_size): DDP hangs if one rank runs an extra step.
A position in the data is just (epoch, micro-batch index); batches(start=k)
resumes exactly there.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from common.seeding import epoch_order

from model import IGNORE_INDEX

from .token_files import TokenFile


class PretrainDataset:
    """Packed rows of seq_len + 1 tokens over a TokenFile (see the module docstring)."""

    def __init__(self, token_file: TokenFile, seq_len: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        if seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
        self.tokens = token_file.tokens
        # Row r as a view of the token file: tokens[r*L : r*L + L + 1], for every row that
        # has all its L + 1 tokens (all rows but possibly the last). Nothing is read yet.
        if len(self.tokens) > seq_len:
            self._windows = np.lib.stride_tricks.sliding_window_view(self.tokens, seq_len + 1)[::seq_len]
        else:
            self._windows = np.zeros((0, seq_len + 1), dtype=self.tokens.dtype)
        self.pad_id = token_file.endoftext_id
        self.seq_len, self.seed, self.rank, self.world_size, self.shuffle = seq_len, seed, rank, world_size, shuffle

    @property
    def n_rows(self) -> int:
        """Rows in the whole split: enough for every token but the first to be a target."""
        targets = len(self.tokens) - 1
        return -(-targets // self.seq_len) if targets > 0 else 0

    @property
    def rows_per_rank(self) -> int:
        # The < world_size leftover rows of an epoch are dropped so that every rank runs
        # the same number of steps. They are the permutation's last rows, so they differ
        # from epoch to epoch and no token is left out for good.
        return self.n_rows // self.world_size

    def num_batches(self, batch_size: int) -> int:
        """Micro-batches per epoch on this rank (the same on every rank); the last may be smaller."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return -(-self.rows_per_rank // batch_size)

    def row_order(self, epoch: int) -> torch.Tensor:
        """This rank's rows for the epoch, in visiting order."""
        return epoch_order(self.n_rows, self.seed, epoch, self.rank, self.world_size, self.shuffle)

    def rows(self, row_ids: np.ndarray) -> dict[str, torch.Tensor]:
        """input_ids and targets (both (len(row_ids), seq_len) int64) of the given rows."""
        ids = np.asarray(row_ids, dtype=np.int64)
        full = ids < len(self._windows)
        # Whole rows come out of the memmap in one vectorised gather of the window view:
        # 5x faster than indexing token by token (0.06 against 0.31 ms for 84 rows of
        # 513 tokens on a 2-core Xeon).
        data = self._windows[ids[full]]
        inputs = np.empty((len(ids), self.seq_len), dtype=np.int64)
        targets = np.empty((len(ids), self.seq_len), dtype=np.int64)
        inputs[full], targets[full] = data[:, :-1], data[:, 1:]
        for i in np.flatnonzero(~full):  # only the split's last row can be short
            row = np.asarray(self.tokens[ids[i] * self.seq_len:])
            inputs[i], targets[i] = self.pad_id, IGNORE_INDEX
            inputs[i, :len(row)] = row[:self.seq_len]
            targets[i, :len(row) - 1] = row[1:]
        return {"input_ids": torch.from_numpy(inputs), "targets": torch.from_numpy(targets)}

    def batches(self, batch_size: int, epoch: int, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Micro-batches start, start + 1, ... of this epoch on this rank:
        {"input_ids", "targets"}, LongTensors of shape (B, seq_len)."""
        total = self.num_batches(batch_size)
        if not 0 <= start <= total:
            raise ValueError(f"start batch {start} is outside this epoch's 0..{total} batches")
        order = self.row_order(epoch).numpy()
        for b in range(start, total):
            yield self.rows(order[b * batch_size:(b + 1) * batch_size])
