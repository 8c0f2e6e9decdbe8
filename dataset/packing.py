"""How chat rows are laid out: padded per batch, grouped by length, or packed.

Conversations differ in length, and a batch is as wide as its longest row, so a
random batch of chats is largely padding (41% on BELLE multi-turn chats at batch
84, bench/RESULTS.md). Two ways to waste less, both deterministic from the seed:

group   each epoch, one seeded permutation is cut into mega-batches of
        GROUP_MEGABATCHES global batches; inside a mega-batch rows are sorted by
        length and cut into global batches (batch x world rows, so every rank's
        share of a global batch has about the same width); then the order of the
        global batches is shuffled with the same seed. Still one conversation per
        row, no mask needed.

pack    once, before training, whole conversations are packed into rows of
        max_seq_len positions by best-fit decreasing (longest first, each into the
        fullest row it still fits); ties are broken in a seeded order. A conversation
        is never split. The rows then go through the usual seeded per-epoch shuffle.
        Each packed row needs a block-diagonal attention mask (model/masks.py).
"""
from __future__ import annotations

import numpy as np
import torch

from common.seeding import seeded_generator

PACKING_MODES = ("none", "group", "pack")
GROUP_MEGABATCHES = 32  # global batches sorted together (HF's group_by_length uses 50)
WIDTH_MULTIPLE = 64     # grouped batch widths round up to this: few distinct shapes for compile


def grouped_batches(lengths: np.ndarray, batch_size: int, world_size: int, rank: int, seed: int,
                    epoch: int, shuffle: bool = True) -> list[np.ndarray]:
    """This rank's rows of every batch of one epoch, length-grouped (see the module docstring).
    Every rank gets the same number of batches, each its share of the same global batch."""
    n = len(lengths) - len(lengths) % world_size  # equal shares: drop < world_size rows this epoch
    if shuffle:
        order = torch.randperm(len(lengths), generator=seeded_generator(seed, epoch)).numpy()[:n]
    else:
        order = np.arange(n)
    global_batch = batch_size * world_size
    mega = global_batch * GROUP_MEGABATCHES
    batches = []
    for start in range(0, n, mega):
        chunk = order[start:start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]  # longest first, ties keep the seeded order
        batches += [chunk[b:b + global_batch] for b in range(0, len(chunk), global_batch)]
    if shuffle:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=seeded_generator(seed, epoch, "batches"))]
    # Interleaved shares: after the sort, neighbours have similar lengths, so every rank's
    # rows of one global batch are about as long as every other rank's.
    return [b[rank::world_size] for b in batches]


def pack_rows(lengths: np.ndarray, capacity: int, seed: int) -> list[np.ndarray]:
    """Best-fit decreasing: conversation indices per row, no row holding more than capacity
    positions. free[c] holds the rows with exactly c positions free; `has` marks the non-empty
    ones, so the fullest row that fits is the first non-empty free[c] with c >= length."""
    if len(lengths) and int(lengths.max()) > capacity:
        raise ValueError(f"a conversation of {int(lengths.max())} positions does not fit rows of {capacity}")
    tie_break = torch.randperm(len(lengths), generator=seeded_generator(seed, "pack")).numpy()
    order = np.lexsort((tie_break, -lengths))  # longest first; equal lengths in a seeded order
    free: list[list[int]] = [[] for _ in range(capacity + 1)]
    has = np.zeros(capacity + 1, dtype=bool)
    rows: list[list[int]] = []
    room: list[int] = []
    for conv in order:
        need = int(lengths[conv])
        fit = need + int(np.argmax(has[need:]))
        if has[fit]:
            row = free[fit].pop()
            has[fit] = bool(free[fit])
        else:
            row = len(rows)
            rows.append([])
            room.append(capacity)
        rows[row].append(int(conv))
        room[row] -= need
        if room[row] > 0:
            free[room[row]].append(row)
            has[room[row]] = True
    return [np.asarray(r, dtype=np.int64) for r in rows]


def round_width(width: int, limit: int) -> int:
    """Round a batch width up to a multiple of WIDTH_MULTIPLE, but never past limit."""
    return min(-(-width // WIDTH_MULTIPLE) * WIDTH_MULTIPLE, limit)
