"""The one training engine every stage runs.

    loop.py      the loop of every stage but GRPO (fit), its data contract and its validation
    engine.py    the primitives that loop calls: set_lr, micro_batch, forward, backward, update,
                 after_step, and saving and resuming (exact)
    stage.py     what a stage hands over: its data (StageData) and its loss (StageLoss)
    optim.py     AdamW and Muon, the cosine and warmup-stable-decay schedules
    ops.py       what keeps a run safe around the loop: memory fit, elastic resume, move-aside,
                 Ctrl-C, spikes, milestones; best.py: GRPO's best checkpoint
    run.py       a stage script's main: flags, device, DDP, checks, model, engine, loop, one-line errors
    config.py    the flags (one field each: default, help, check, resume rule); finetune.py (chat
                 format, LoRA) and chat_data.py add the later stages' options and their chat data
    checkpoints.py, resume.py, memory.py, metrics.py, distributed.py, prefetch.py,
    reference.py (DPO's and GRPO's frozen reference), plot.py

Not here: the network (model/), the data readers and Datasets (dataset/), a stage's own flags, data,
loss and (GRPO) loop (the stage scripts), the device, the flag parser and the stage table (common/).
"""
from .config import ConfigError, TrainConfig, parse_config
from .engine import Engine, TrainingError
from .run import build_model, run_stage, train_stage
from .stage import StageData, StageLoss
