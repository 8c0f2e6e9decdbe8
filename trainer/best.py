"""The best validation's weights, for a loop whose validation measures a figure where higher is better
(GRPO's held-out accuracy): they are kept in <stage>/best.pth as the run goes and, with keep, become
<stage>.pth at the end. Selection on the validation split, never on a test set. The start is
measured too (step 0), so a run that only makes the model worse keeps the weights it started from.
Its state travels in the engine's resumable state (engine.extra_state), so --resume remembers it.
"""
from __future__ import annotations

import os
import shutil

from tqdm import tqdm

from .engine import Engine


class BestCheckpoint:
    def __init__(self, engine: Engine, key: str, keep: bool):
        self.engine, self.key, self.keep_at_end = engine, key, keep
        self.state: dict | None = engine.restored.get("best")  # {"key", "value", "step"}

    def measure_start(self, validation: dict) -> None:
        """The validation of the starting weights, at step 0: a line, a metrics row, and the best so far."""
        if validation and self.engine.dist.is_main:
            tqdm.write("step 0: " + ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in validation.items()))
        self.track(validation)
        self.engine.log.write({"step": 0, **validation})

    def track(self, validation: dict) -> dict:
        """A validation's figures, passed through; a better one than any so far keeps its weights."""
        engine = self.engine
        if self.key in validation and (self.state is None or validation[self.key] > self.state["value"]):
            self.state = {"key": self.key, "value": validation[self.key], "step": engine.step}
            engine.extra_state["best"] = self.state
            if engine.dist.is_main:
                engine.save_weights(engine.paths.run_dir / "best.pth", None)
        return validation

    def keep(self) -> None:
        """After the last step, with keep: the best validation's weights become the stage's."""
        engine, best, weights = self.engine, self.engine.paths.run_dir / "best.pth", self.engine.paths.weights
        if not (self.keep_at_end and self.state) or engine.step < engine.total_steps or not best.is_file():
            return
        if self.state["step"] != engine.step and engine.dist.is_main:
            tmp = weights.with_name(f".{weights.name}.best.tmp")
            shutil.copyfile(best, tmp)
            os.replace(tmp, weights)
            print(f"keeping the best validation: step {self.state['step']} ({self.key} {self.state['value']:.4f}) "
                  f"in {weights}; the last step's weights are in {engine.last_saved}")
