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
