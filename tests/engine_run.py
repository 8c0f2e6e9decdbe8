"""For engine tests: an Engine over a dataset, built as trainer/run.py builds one for a stage, and
the same loop call (trainer/loop.py's fit unless a test names another)."""
from __future__ import annotations

import torch

from common.device import DTYPES
from trainer.distributed import DistInfo
from trainer.engine import Engine
from trainer.loop import fit
from trainer.stage import StageData

TOKENIZER_ID = {"vocab_size": 6400, "sha256": "test"}


class Run:
    def __init__(self, cfg, model, train, val=None, loss_fn=None, stage="test", tokenizer_id=None, dist=None,
                 adapter_base=None, loop=fit):
        self.data, self.loss_fn, self.loop = StageData(train, val, "", ""), loss_fn, loop
        steps = self.data.steps_per_epoch(cfg.batch_size, cfg.accumulation_steps, cfg.max_seq_len)
        dtype = DTYPES[cfg.dtype] if cfg.dtype in DTYPES else torch.float32
        self.engine = Engine(cfg, model, stage, torch.device("cpu"), dtype, dist or DistInfo(), steps,
                             tokenizer_id or TOKENIZER_ID, adapter_base=adapter_base)

    def fit(self) -> None:
        self.loop(self.engine, self.data, self.loss_fn)
