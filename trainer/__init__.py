"""The one training engine: config, loop, checkpoints, DDP, logging. Every stage uses it."""
from .config import ConfigError, TrainConfig, parse_config
from .engine import Trainer, TrainingError, default_loss, loss_normaliser
from .run import StageData, build_model, cli_config, run_stage

__all__ = ["ConfigError", "TrainConfig", "parse_config", "Trainer", "TrainingError", "default_loss",
           "loss_normaliser", "StageData", "build_model", "cli_config", "run_stage"]
