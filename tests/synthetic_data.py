"""A tiny in-memory dataset that follows the engine's data contract, for engine tests.

Rows carry different numbers of masked (IGNORE_INDEX) targets, like SFT data,
so tests can show that loss normalisation counts tokens, not rows.
"""
import torch

from model import IGNORE_INDEX


class SyntheticRows:
    def __init__(self, n_rows=24, seq_len=16, vocab=6400, seed=0, rank=0, world_size=1, weights=False):
        g = torch.Generator().manual_seed(seed)
        self.inputs = torch.randint(0, vocab, (n_rows, seq_len), generator=g)
        self.targets = torch.randint(0, vocab, (n_rows, seq_len), generator=g)
        for r in range(n_rows):  # row r has its first r % seq_len targets masked
            self.targets[r, : r % seq_len] = IGNORE_INDEX
        self.weights = torch.rand(n_rows, seq_len, generator=g) * 3 if weights else None
        self.seed, self.rank, self.world_size, self.n_rows = seed, rank, world_size, n_rows

    def rows_for(self, epoch):
        order = torch.randperm(self.n_rows, generator=torch.Generator().manual_seed(self.seed + epoch))
        return order[self.rank::self.world_size][: self.n_rows // self.world_size]

    def num_batches(self, batch_size):
        return -(-(self.n_rows // self.world_size) // batch_size)

    def batches(self, batch_size, epoch, start=0):
        rows = self.rows_for(epoch)
        for b in range(start, self.num_batches(batch_size)):
            idx = rows[b * batch_size:(b + 1) * batch_size]
            batch = {"input_ids": self.inputs[idx], "targets": self.targets[idx]}
            if self.weights is not None:
                batch["loss_weight"] = self.weights[idx]
            yield batch
