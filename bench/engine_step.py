"""One optimizer step of the engine, for the benchmarks that time or measure steps one at a time
(bench_train, bench_memory, bench_sft, gpu_check): the step trainer/loop.py's fit takes, without
its prefetch thread, progress bar, logs and checkpoints."""
from __future__ import annotations

import torch

from model import SpongeBob, get_preset
from trainer import Engine, StageData, parse_config
from trainer.distributed import DistInfo
from trainer.loop import CrossEntropy

LOSS = CrossEntropy()


def make_engine(preset: str, batch: int, seq: int, device: torch.device, dtype: torch.dtype, compiled: bool,
                data, out_dir: str, accumulation: int = 1, **options) -> Engine:
    """An engine over data as a stage builds one, from seeded weights; options: more TrainConfig values."""
    cfg = parse_config([], "bench", dict(preset=preset, batch_size=batch, accumulation_steps=accumulation,
                                         max_seq_len=seq, compile=compiled, out_dir=out_dir, warmup_steps=1,
                                         device=device.type, epochs=1) | options)
    torch.manual_seed(0)
    steps = StageData(data, None, "", "").steps_per_epoch(batch, accumulation, seq)
    return Engine(cfg, SpongeBob(get_preset(preset)), "bench", device, dtype, DistInfo(), steps, {})


def engine_step(engine: Engine, micro_batches: list[dict]) -> torch.Tensor:
    """One optimizer step over the micro-batches; the step's statistics (trainer/engine.py STATS)."""
    engine.set_lr()
    last = len(micro_batches) - 1
    for i, batch in enumerate(engine.to_device(b) for b in micro_batches):
        with engine.micro_batch(last=i == last):
            loss = LOSS(engine.forward(batch), batch)
        engine.backward(loss, batch)
    return engine.update()
