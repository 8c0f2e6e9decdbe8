"""SFT rows: one conversation per row, padded to the longest row of its batch.

Conversations come from the token files written by dataset/sft_tokenize.py
(ids + loss mask). Targets are the next token where the mask says it is
trained and IGNORE_INDEX everywhere else, padding included, so the engine's
token-count normalisation sees exactly the reply tokens. Rows are padded per
batch rather than to max_seq_len, and never packed: packing would need
per-conversation attention masks, which the flash path of SDPA cannot take.
Order and sharding are PretrainDataset's (epoch_order), so resume and DDP
behave identically.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from model import IGNORE_INDEX
from .pretrain_dataset import epoch_order
from .token_files import TokenFile


class SFTDataset:
    def __init__(self, token_file: TokenFile, seq_len: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        if token_file.loss_mask is None:
            raise ValueError("SFT data needs a loss mask: tokenize it with dataset/sft_tokenize.py")
        self.file, self.seq_len = token_file, seq_len
        self.seed, self.rank, self.world_size, self.shuffle = seed, rank, world_size, shuffle
        self.ends = np.append(token_file.doc_starts[1:], token_file.n_tokens)

    @property
    def n_rows(self) -> int:
        return self.file.n_docs

    def num_batches(self, batch_size: int) -> int:
        return -(-(self.n_rows // self.world_size) // batch_size)

    def row(self, doc: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of one conversation, without its trailing end-of-text."""
        start, end = int(self.file.doc_starts[doc]), int(self.ends[doc]) - 1
        ids = np.asarray(self.file.tokens[start:end], dtype=np.int64)[: self.seq_len + 1]
        mask = np.asarray(self.file.loss_mask[start:end], dtype=bool)[: self.seq_len + 1]
        return ids[:-1], np.where(mask[1:], ids[1:], IGNORE_INDEX)

    def batches(self, batch_size: int, epoch: int, start: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        order = epoch_order(self.n_rows, self.seed, epoch, self.rank, self.world_size, self.shuffle).numpy()
        for b in range(start, self.num_batches(batch_size)):
            rows = [self.row(d) for d in order[b * batch_size:(b + 1) * batch_size]]
            width = max(len(inputs) for inputs, _ in rows)
            input_ids = torch.full((len(rows), width), self.file.endoftext_id, dtype=torch.long)
            targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
            for i, (inputs, target) in enumerate(rows):
                input_ids[i, :len(inputs)] = torch.from_numpy(inputs)
                targets[i, :len(target)] = torch.from_numpy(target)
            yield {"input_ids": input_ids, "targets": targets}
