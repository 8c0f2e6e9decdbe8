"""One recipe for seeded randomness: a string of parts, hashed, seeds a torch.Generator.

Hashing (rather than adding seeds) gives independent streams for neighbouring
parts, (seed 1, epoch 2) and (seed 2, epoch 1) say, and SHA-256 is the same on
every platform and Python, so a data order or a rollout is reproducible anywhere:
that is what makes --resume exact.
"""
from __future__ import annotations

import hashlib

import torch


def seed_from(*parts: object) -> int:
    """A 63-bit seed from any parts, e.g. seed_from(seed, epoch) or seed_from(seed, epoch, batch, rank)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seeded_generator(*parts: object, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator seeded by seed_from(*parts)."""
    return torch.Generator(device=device).manual_seed(seed_from(*parts))


def epoch_order(n_rows: int, seed: int, epoch: int, rank: int, world_size: int, shuffle: bool) -> torch.Tensor:
    """The rows one rank visits in one epoch: a permutation seeded by (seed, epoch),
    the same on every rank, of which rank r takes every world_size-th row,
    n_rows // world_size of them (equal counts: DDP hangs on an extra step)."""
    if shuffle:
        # (seed, epoch) hashed into one seed: nearby pairs such as (0, 1) and (1, 0) cannot
        # collide the way seed + epoch would.
        order = torch.randperm(n_rows, generator=seeded_generator(seed, epoch))
    else:
        order = torch.arange(n_rows)
    return order[rank::world_size][:n_rows // world_size]
