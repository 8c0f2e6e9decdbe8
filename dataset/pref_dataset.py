"""Batches of preference pairs for DPO: the chosen and the rejected conversation of each pair,
side by side in one forward pass.

The token files (dataset/sft_tokenize.py, pairs=True) hold each pair as two documents
in a row, chosen then rejected, with SFT's loss mask on the replies. A batch of B
pairs holds 2B sequences: sequence 2j is pair j's chosen, 2j + 1 its rejected. Every
position carries `seq_index`, the sequence it belongs to (-1 on padding), so the
loss can sum each sequence's reply log-probabilities whatever the layout:

    none    the 2B sequences one per row, padded to the longest (pairs in seeded random order)
    group   the same, with pairs of similar length batched together (dataset/packing.py)
    pack    the 2B sequences packed into as few rows of max_seq_len as fit (best-fit
            decreasing, per batch), with per-sequence positions and doc_ids for the
            block-diagonal mask: a pair's two sequences never see each other

`loss_count` (B) tells the engine what the summed loss is over: pairs, not tokens.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from model import IGNORE_INDEX
from .packing import PACKING_MODES, grouped_batches, pack_rows, round_width
from common.seeding import epoch_order
from .sft_dataset import PAD_DOC, SFTDataset
from .token_files import TokenFile


class PreferenceDataset:
    def __init__(self, token_file: TokenFile, seq_len: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, packing: str = "none"):
        if token_file.n_docs % 2:
            raise ValueError("preference token files hold pairs: an even number of documents")
        if packing not in PACKING_MODES:
            raise ValueError(f"--packing {packing}: choose {', '.join(PACKING_MODES)}")
        self.sequences = SFTDataset(token_file, seq_len)  # one conversation at a time, and their lengths
        self.seq_len, self.packing = seq_len, packing
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        lengths = self.sequences.lengths.reshape(-1, 2)
        self.pair_widths = lengths.max(axis=1)  # a padded pair is as wide as its longer reply

    @property
    def n_rows(self) -> int:
        return len(self.pair_widths)

    def num_batches(self, batch_size: int) -> int:
        return -(-(self.n_rows // self.world_size) // batch_size)

    def _epoch_pairs(self, batch_size: int, epoch: int) -> list[np.ndarray]:
        if self.packing == "group":
            return grouped_batches(self.pair_widths, batch_size, self.world_size, self.rank, self.seed, epoch,
                                   self.shuffle)
        order = epoch_order(self.n_rows, self.seed, epoch, self.rank, self.world_size, self.shuffle).numpy()
        return [order[b * batch_size:(b + 1) * batch_size] for b in range(self.num_batches(batch_size))]

    def batches(self, batch_size: int, epoch: int, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        for pairs in self._epoch_pairs(batch_size, epoch)[start:]:
            docs = np.stack([2 * pairs, 2 * pairs + 1], axis=1).reshape(-1)  # chosen, rejected, chosen, ...
            convs = [self.sequences.conversation(int(d))[:2] for d in docs]
            batch = self._packed(convs) if self.packing == "pack" else self._padded(convs)
            batch["loss_count"] = torch.tensor(float(len(pairs)))
            batch["seq_lens"] = torch.tensor([len(inputs) for inputs, _ in convs])
            yield batch

    def _padded(self, convs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        width = max(len(inputs) for inputs, _ in convs)
        if self.packing == "group":
            width = round_width(width, self.seq_len)
        batch = _empty(len(convs), width, self.sequences.file.endoftext_id)
        for i, (inputs, targets) in enumerate(convs):
            batch["input_ids"][i, :len(inputs)] = inputs
            batch["targets"][i, :len(targets)] = targets
            batch["seq_index"][i, :len(inputs)] = i
        return batch

    def _packed(self, convs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        rows = pack_rows(np.array([len(inputs) for inputs, _ in convs]), self.seq_len, self.seed)
        batch = _empty(len(rows), self.seq_len, self.sequences.file.endoftext_id)
        batch["position_ids"] = torch.zeros(len(rows), self.seq_len, dtype=torch.long)
        batch["doc_ids"] = torch.full((len(rows), self.seq_len), PAD_DOC, dtype=torch.long)
        for r, row in enumerate(rows):
            at = 0
            for j, s in enumerate(row):
                inputs, targets = convs[s]
                n = len(inputs)
                batch["input_ids"][r, at:at + n] = inputs
                batch["targets"][r, at:at + n] = targets
                batch["seq_index"][r, at:at + n] = int(s)
                batch["position_ids"][r, at:at + n] = torch.arange(n)
                batch["doc_ids"][r, at:at + n] = j
                at += n
            batch["position_ids"][r, at:] = torch.arange(self.seq_len - at)
        return batch


def _empty(rows: int, width: int, pad_id: int) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.full((rows, width), pad_id, dtype=torch.long),
            "targets": torch.full((rows, width), IGNORE_INDEX, dtype=torch.long),
            "seq_index": torch.full((rows, width), -1, dtype=torch.long)}
