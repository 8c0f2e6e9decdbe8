"""The one training engine every stage runs: flags and YAML (config.py), the loop (engine.py), what every stage
shares (run.py, chat_data.py), precision and MFU, DDP, checkpoints and exact resume, losses, metrics.

Not here: the network (model/), the data readers and Datasets (dataset/), a stage's own choices (the stage scripts).
"""
from .config import ConfigError, TrainConfig, parse_config
from .engine import Trainer, TrainingError
from .step import default_loss, loss_normaliser
from .run import StageData, build_model, cli_config, run_stage

__all__ = ["ConfigError", "TrainConfig", "parse_config", "Trainer", "TrainingError", "default_loss",
           "loss_normaliser", "StageData", "build_model", "cli_config", "run_stage"]
