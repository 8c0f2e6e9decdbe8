"""SFT rows over a tokenized chat corpus: padded per batch, grouped by length, or packed.

Conversations come from the token files written by dataset/sft_tokenize.py
(ids + loss mask). Targets are the next token where the mask says it is
trained and IGNORE_INDEX everywhere else, padding included, so the engine's
token-count normalisation sees exactly the reply tokens. The three layouts
(--packing, dataset/packing.py) give the same loss on the same conversations:

    none    one conversation per row, rows in a seeded random order, padded to the
            longest row of the batch (what every stage did before packing);
    group   one conversation per row, batches of similar lengths, width rounded up to 64;
    pack    several whole conversations per row of max_seq_len, each with its own
            positions (0, 1, 2, ... again for each) and a block-diagonal causal mask
            (doc_ids), so no token sees another conversation.

Every batch also carries seq_lens, the length of each conversation in it, so that
tokens/s and MFU count real tokens, not padding. Order and sharding follow
PretrainDataset (epoch_order): resume is exact and DDP ranks get equal counts.
With `weigh` (distillation's tag/think weights), each conversation's targets are
weighted on their own, before any packing, so a weight never leaks across.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from model import IGNORE_INDEX
from .packing import PACKING_MODES, grouped_batches, pack_rows, round_width
from common.seeding import epoch_order
from .token_files import TokenFile

Weigh = Callable[[torch.Tensor], torch.Tensor]  # (1, T) targets -> (1, T) weights
PAD_DOC = -1  # the doc id of padding: it attends only to padding


class SFTDataset:
    def __init__(self, token_file: TokenFile, seq_len: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, packing: str = "none", weigh: Weigh | None = None):
        if token_file.loss_mask is None:
            raise ValueError("SFT data needs a loss mask: tokenize it with dataset/sft_tokenize.py")
        if packing not in PACKING_MODES:
            raise ValueError(f"--packing {packing}: choose {', '.join(PACKING_MODES)}")
        self.file, self.seq_len, self.packing, self.weigh = token_file, seq_len, packing, weigh
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.ends = np.append(token_file.doc_starts[1:], token_file.n_tokens)
        # Positions a conversation fills as a row: its tokens without the end-of-text, minus one
        # (inputs are ids[:-1], targets ids[1:]); the corpus keeps at most seq_len + 1 tokens.
        self.lengths = np.minimum(self.ends - 1 - token_file.doc_starts, seq_len + 1) - 1
        self.packs = pack_rows(self.lengths, seq_len, seed) if packing == "pack" else None

    @property
    def n_rows(self) -> int:
        return len(self.packs) if self.packs is not None else self.file.n_docs

    def num_batches(self, batch_size: int) -> int:
        return -(-(self.n_rows // self.world_size) // batch_size)

    def padding_share(self, batch_size: int) -> float:
        """The share of positions that are padding over one epoch (epoch 0) on this rank."""
        real = total = 0
        for rows in self._epoch_rows(batch_size, 0):
            lens = self.lengths[np.concatenate(rows)] if self.packs is not None else self.lengths[rows]
            real += int(lens.sum())
            total += len(rows) * self._width(lens)
        return 1 - real / max(total, 1)

    def conversation(self, doc: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(inputs, targets, weights or None) of one conversation, without its trailing end-of-text."""
        start, end = int(self.file.doc_starts[doc]), int(self.ends[doc]) - 1
        ids = torch.from_numpy(np.asarray(self.file.tokens[start:end], dtype=np.int64)[: self.seq_len + 1])
        mask = torch.from_numpy(np.asarray(self.file.loss_mask[start:end], dtype=bool)[: self.seq_len + 1])
        targets = torch.where(mask[1:], ids[1:], IGNORE_INDEX)
        weights = self.weigh(targets[None])[0] if self.weigh is not None else None
        return ids[:-1], targets, weights

    def _epoch_rows(self, batch_size: int, epoch: int) -> list:
        """Per batch: conversation indices (none, group) or lists of them, one per packed row."""
        if self.packing == "group":
            return grouped_batches(self.lengths, batch_size, self.world_size, self.rank, self.seed, epoch,
                                   self.shuffle)
        order = epoch_order(self.n_rows, self.seed, epoch, self.rank, self.world_size, self.shuffle).numpy()
        picked = [order[b * batch_size:(b + 1) * batch_size] for b in range(self.num_batches(batch_size))]
        return [[self.packs[r] for r in rows] for rows in picked] if self.packs is not None else picked

    def _width(self, lengths: list | np.ndarray) -> int:
        if self.packing == "pack":
            return self.seq_len  # packed rows are all full width: one shape, no recompiles
        width = int(max(lengths))
        return round_width(width, self.seq_len) if self.packing == "group" else width

    def batches(self, batch_size: int, epoch: int, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        for rows in self._epoch_rows(batch_size, epoch)[start:]:
            yield self._packed(rows) if self.packs is not None else self._padded(rows)

    def _padded(self, docs: np.ndarray) -> dict[str, torch.Tensor]:
        convs = [self.conversation(int(d)) for d in docs]
        width = self._width([len(inputs) for inputs, _, _ in convs])
        batch = self._empty(len(convs), width)
        for i, (inputs, targets, weights) in enumerate(convs):
            batch["input_ids"][i, :len(inputs)] = inputs
            batch["targets"][i, :len(targets)] = targets
            if weights is not None:
                batch["loss_weight"][i, :len(weights)] = weights
        batch["seq_lens"] = torch.tensor([len(inputs) for inputs, _, _ in convs])
        return batch

    def _packed(self, rows: list[np.ndarray]) -> dict[str, torch.Tensor]:
        batch = self._empty(len(rows), self.seq_len)
        batch["position_ids"] = torch.zeros(len(rows), self.seq_len, dtype=torch.long)
        batch["doc_ids"] = torch.full((len(rows), self.seq_len), PAD_DOC, dtype=torch.long)
        lens = []
        for i, row in enumerate(rows):
            at = 0
            for j, doc in enumerate(row):
                inputs, targets, weights = self.conversation(int(doc))
                n = len(inputs)
                batch["input_ids"][i, at:at + n] = inputs
                # Its last target is the newline after <|im_end|>, never trained: nothing crosses over.
                batch["targets"][i, at:at + n] = targets
                batch["position_ids"][i, at:at + n] = torch.arange(n)
                batch["doc_ids"][i, at:at + n] = j
                if weights is not None:
                    batch["loss_weight"][i, at:at + n] = weights
                at += n
                lens.append(n)
            batch["position_ids"][i, at:] = torch.arange(self.seq_len - at)  # padding: a run of its own
        batch["seq_lens"] = torch.tensor(lens)
        return batch

    def _empty(self, rows: int, width: int) -> dict[str, torch.Tensor]:
        batch = {"input_ids": torch.full((rows, width), self.file.endoftext_id, dtype=torch.long),
                 "targets": torch.full((rows, width), IGNORE_INDEX, dtype=torch.long)}
        if self.weigh is not None:
            batch["loss_weight"] = torch.zeros(rows, width)
        return batch
