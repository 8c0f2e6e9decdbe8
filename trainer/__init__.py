"""The one training engine every stage runs: flags and YAML (config.py), the contract with a stage
(contract.py), the loop (engine.py) and its step (step.py), what every stage shares (run.py,
chat_data.py, reference.py), DDP, checkpoints and exact resume, metrics and plots.

Not here: the network (model/), the data readers and Datasets (dataset/), a stage's own flags, data,
loss and reference (the stage scripts), the device, the flag parser and the stage table (common/).
"""
from .config import ConfigError, TrainConfig, parse_config
from .engine import Trainer, TrainingError
from .step import default_loss, loss_normaliser
from .run import StageData, build_model, cli_config, run_stage, train_stage

__all__ = ["ConfigError", "TrainConfig", "parse_config", "Trainer", "TrainingError", "default_loss",
           "loss_normaliser", "StageData", "build_model", "cli_config", "run_stage", "train_stage"]
