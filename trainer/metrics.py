"""metrics.jsonl (always) and wandb (optional).

One JSON object per log step, so any tool (pandas, jq, a plotting script)
can read a run without this code. Only rank 0 writes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, path: Path, enabled: bool, resume_step: int | None = None,
                 wandb_run: Any = None):
        self.path, self.enabled, self.wandb_run = path, enabled, wandb_run
        if not enabled:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            path.write_text("")
        else:
            self._truncate_after(resume_step)

    def _truncate_after(self, step: int) -> None:
        """A resumed run repeats the steps after its state was saved: drop their
        old rows so every step appears once."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in clean.items() if isinstance(v, (int, float))}, step=row["step"])

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


def start_wandb(project: str, mode: str, run_dir: Path, name: str, config: dict) -> Any:
    """A wandb run, or a clear error if wandb is not installed."""
    try:
        import wandb
    except ImportError:
        raise ValueError("--use_wandb needs the wandb package: pip install wandb") from None
    return wandb.init(project=project, mode=mode, dir=str(run_dir), name=name, config=config)
