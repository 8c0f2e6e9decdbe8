"""Training curves of one or more runs in one PNG: a wandb chart that needs no account.

    python -m trainer.plot out/pretrain --out curves.png
    python -m trainer.plot runs/a runs/b --x tokens --out lr.png

Each RUN_DIR is a stage folder (the one holding metrics.jsonl) or an out_dir
holding exactly one. The figure has four panels: train loss (EMA-smoothed,
the raw loss faint behind it), validation loss, learning rate and tokens/s,
against steps or, with --x tokens, tokens seen. Runs that log rewards (GRPO's
reward and rewards/NAME, DPO's rewards/chosen ...) or val_accuracy get two panels
more: the rewards, and the held-out accuracy. The loss panels are on a log axis,
unless a loss is zero or negative (GRPO's and DPO's can be): then on a linear one. Runs are overlaid and each is
labelled with its folder plus the config values in which it differs from the
others (read from config.json), e.g. "runs/a (learning_rate=0.002)". matplotlib
is optional: it is imported only when drawing, so training never needs it.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.cli import OneLineParser

FIGSIZE = (12.0, 8.0)  # inches; with DPI this is a 1200 x 800 PNG
REWARD_FIGSIZE = (12.0, 12.0)  # three rows of panels when rewards are logged
DPI = 100
# Keys that differ between runs without changing the curves: naming them would only clutter labels.
LABEL_IGNORES = {"out_dir", "config", "resume", "save_interval", "keep_last", "save_at_epochs",
                 "use_wandb", "wandb_project", "wandb_mode"}
SMOOTH_POINTS = 200  # --smooth acts like a plain per-row EMA on a run logged 200 times


class PlotError(Exception):
    """A user error: printed as one line, exit status 2."""


@dataclass
class Run:
    name: str                    # the RUN_DIR as the user typed it
    path: Path                   # the stage folder
    rows: list[dict[str, Any]]   # metrics.jsonl, one dict per log step
    config: dict[str, Any]       # flattened config.json, {} if absent


def find_stage_dir(run_dir: str) -> Path:
    """The folder holding metrics.jsonl: run_dir itself or its only stage folder."""
    path = Path(run_dir)
    if (path / "metrics.jsonl").is_file():
        return path
    if not path.is_dir():
        raise PlotError(f"{run_dir}: no such directory")
    stages = sorted(p for p in path.iterdir() if (p / "metrics.jsonl").is_file())
    if not stages:
        raise PlotError(f"{run_dir}: no metrics.jsonl in it or in its stage folders")
    if len(stages) > 1:
        names = ", ".join(p.name for p in stages)  # say which, so the fix is one copy-paste away
        raise PlotError(f"{run_dir} holds several runs ({names}); name one, e.g. {stages[0]}")
    return stages[0]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every row of a metrics.jsonl; a bad line is an error naming file:line."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:  # bad bytes fail as bad JSON, with a line
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise PlotError(f"{path}:{n}: " + (f"not JSON ({e.msg})" if line.strip() else "empty line")) from None
            # step is on every row the trainer writes, and loss on every row but the validation of
            # the start (step 0, GRPO); without them the row is not ours.
            ours = isinstance(row, dict) and _is_number(row.get("step")) and \
                (_is_number(row.get("loss")) or (row.get("step") == 0 and len(row) > 1))
            if not ours:
                raise PlotError(f"{path}:{n}: expected an object with numeric 'step' and 'loss'")
            rows.append(row)
    if not rows:
        raise PlotError(f"{path}: empty, no steps logged yet")
    return rows


def read_config(stage_dir: Path) -> dict[str, Any]:
    """The training and model config of a run as one flat dict; {} without config.json."""
    path = stage_dir / "config.json"
    if not path.is_file():
        return {}  # labels then just lack the differences; the curves are still worth drawing
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        return {**saved.get("config", {}), **saved.get("model", {})}  # the model as built wins
    except (json.JSONDecodeError, AttributeError, TypeError):
        raise PlotError(f"{path}: not a config.json written by the trainer") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()  # as the flag is written: --compile true
    if isinstance(value, float):
        return f"{value:g}"        # 0.0005, 5e-05: short and exact enough for a legend
    if isinstance(value, list):
        return ",".join(map(_format_value, value)) or "[]"
    return str(value)


def run_labels(names: list[str], configs: list[dict[str, Any]]) -> list[str]:
    """Each run's name plus the config values that differ between the runs, e.g. "a (learning_rate=0.002)"
    and "b (learning_rate=0.0005)": like a wandb chart, the legend says what is being compared."""
    # Only keys every run has: one that some lack comes from another version of the code, not the experiment.
    keys = sorted(set.intersection(*(set(c) for c in configs)) - LABEL_IGNORES) if configs else []
    differing = [k for k in keys if len({json.dumps(c[k], sort_keys=True) for c in configs}) > 1]
    labels = []
    for name, config in zip(names, configs):
        values = ", ".join(f"{k}={_format_value(config[k])}" for k in differing)
        labels.append(f"{name} ({values})" if values else name)
    return labels


def ema(xs: list[float], ys: list[float], smooth: float, span: float) -> list[float]:
    """Bias-corrected exponential moving average whose decay follows x, not the row count:
    `smooth` is the weight of the past per 1/SMOOTH_POINTS of `span` (the chart's x range), so
    runs logged every 5 or every 100 steps smooth alike, over ~5% of the chart at 0.9."""
    out, total, weight = [], 0.0, 0.0
    for i, (x, y) in enumerate(zip(xs, ys)):
        decay = smooth ** ((x - xs[i - 1]) / span * SMOOTH_POINTS if i and span > 0 else 1.0)
        finite = math.isfinite(y)  # a NaN loss (a skipped step) leaves a gap, not a poisoned average
        total, weight = total * decay + (y if finite else 0.0), weight * decay + finite
        out.append(total / weight if finite else math.nan)  # dividing by the weight removes the start-at-0 bias
    return out


def series(run: Run, x_key: str, y_key: str) -> tuple[list[float], list[float]]:
    """The (x, y) points of one metric: only rows that logged it (val_loss is on eval steps only)."""
    points = [(r[x_key], r[y_key]) for r in run.rows if _is_number(r.get(x_key)) and _is_number(r.get(y_key))]
    return [p[0] for p in points], [float(p[1]) for p in points]


# GRPO's diagnostics, shares in [0, 1] drawn beside the rewards: where the signal comes from.
DIAGNOSTICS = ("correct", "mixed_groups", "all_wrong_advantage_share", "truncated", "tool_use")


def reward_keys(runs: list[Run]) -> list[str]:
    """The reward columns logged by any run: reward first, then rewards/NAME in name order, then
    the RL diagnostics that were logged."""
    keys = {k for run in runs for row in run.rows for k in row if k == "reward" or k.startswith("rewards/")}
    logged = {k for run in runs for row in run.rows for k in row if k in DIAGNOSTICS}
    return sorted(keys, key=lambda k: (k != "reward", k)) + [k for k in DIAGNOSTICS if k in logged]


def has_accuracy(runs: list[Run]) -> bool:
    return any("val_accuracy" in row for run in runs for row in run.rows)


def draw(runs: list[Run], labels: list[str], x_key: str = "step", smooth: float = 0.9) -> Any:
    """The four-panel figure (a matplotlib Figure); matplotlib must be importable."""
    import matplotlib
    from matplotlib.figure import Figure  # not pyplot: no global figure list to leak into
    from matplotlib.ticker import EngFormatter, LogFormatter

    class PlainLogFormatter(LogFormatter):  # LogFormatter picks which ticks to label; print 0.4, not 4e-01
        def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
            return f"{x:g}"

    for run in (r for r in runs if not series(r, x_key, "loss")[0]):  # only --x tokens can find none
        raise PlotError(f"{run.path / 'metrics.jsonl'}: no '{x_key}' column to plot against")
    # One x range for every run, so each is smoothed over the same stretch of the chart.
    span = max(max(xs) - min(xs) for xs in (series(run, x_key, "loss")[0] for run in runs))
    with matplotlib.rc_context({"font.size": 11, "axes.titlesize": 13, "axes.grid": True, "grid.alpha": 0.3}):
        # constrained layout keeps room for the legend below the panels, so it never covers a curve.
        rewards, accuracy = reward_keys(runs), has_accuracy(runs)
        extra = bool(rewards or accuracy)
        fig = Figure(figsize=REWARD_FIGSIZE if extra else FIGSIZE, dpi=DPI, layout="constrained")
        axes = list(fig.subplots(3 if extra else 2, 2).flat)
        ax_loss, ax_val, ax_lr, ax_speed = axes[:4]
        for i, run in enumerate(runs):
            color = f"C{i % 10}"  # the default color cycle: a run has the same color in every panel
            xs, loss = series(run, x_key, "loss")
            ax_loss.plot(xs, loss, color=color, alpha=0.2, linewidth=1)
            ax_loss.plot(xs, ema(xs, loss, smooth, span), color=color, linewidth=2, label=labels[i])
            spikes = [(r[x_key], r["loss"]) for r in run.rows if r.get("spike") and x_key in r]
            if spikes:  # the trainer flagged these: worth seeing where they fall
                ax_loss.scatter(*zip(*spikes), color=color, marker="x", s=40, zorder=3)
            if series(run, x_key, "val_loss")[0]:  # an empty line would hide the "no validation loss" note
                ax_val.plot(*series(run, x_key, "val_loss"), color=color, marker="o", markersize=4, linewidth=1.5)
            ax_lr.plot(*series(run, x_key, "lr"), color=color, linewidth=2)
            ax_speed.plot(*series(run, x_key, "tokens_per_s"), color=color, linewidth=1.5)
            if extra:  # several runs: the run's color, one line style per reward; one run: a color each
                for j, (key, style) in enumerate(zip(rewards, ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 3))] * 4)):
                    alone = len(runs) == 1
                    axes[4].plot(*series(run, x_key, key), color=f"C{(j + 1) % 10}" if alone else color,
                                 linestyle="-" if alone else style, linewidth=1.5, label=key if i == 0 else None)
                axes[5].plot(*series(run, x_key, "val_accuracy"), color=color, marker="o", markersize=4,
                             linewidth=1.5)

        titles = (f"train loss (EMA {smooth:g}, raw faint)", "validation loss", "learning rate", "tokens / s",
                  "rewards and RL diagnostics", "held-out accuracy")
        for ax, title in zip(axes, titles):
            ax.set_title(title)
            ax.set_xlabel(x_key)
            if x_key == "tokens":
                ax.xaxis.set_major_formatter(EngFormatter())  # 1.1 M, not 1.1e6
        # Loss falls over orders of magnitude; on a log axis the late progress is still visible.
        # GRPO's loss is often negative and DPO's can reach 0: a log axis would drop those points.
        for ax, key in ((ax_loss, "loss"), (ax_val, "val_loss")):
            if ax.has_data() and all(y > 0 for run in runs for y in series(run, x_key, key)[1]):
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(PlainLogFormatter())
                ax.yaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        empty = [(ax_val, "no validation loss logged")]
        if extra:
            empty += [(axes[4], "no reward logged"), (axes[5], "no val_accuracy logged")]
            if rewards:
                axes[4].legend(loc="best", fontsize=9, frameon=False)  # which line style is which reward
        for ax, note in empty:
            if not ax.has_data():
                ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, color="gray")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        ax_speed.yaxis.set_major_formatter(EngFormatter())
        # One legend under all panels: two labels a row while they fit the width, else one.
        fig.legend(loc="outside lower center", frameon=False, ncol=1 if max(map(len, labels)) > 70 else 2)
    return fig


def save_png(fig: Any, out: Path) -> None:
    """Write the figure atomically: a reader never sees half a PNG, a crash leaves the old one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # bbox_inches="tight": the PNG grows to hold any label or legend that would be cut off.
            fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight", pil_kwargs={"optimize": True})
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a figure is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m trainer.plot",
                description="Plot loss, validation loss, learning rate and tokens/s of training runs into one PNG.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a stage folder holding metrics.jsonl, or an out_dir holding exactly one")
    p.add_argument("--out", default="curves.png", help="the PNG to write (default: curves.png)")
    p.add_argument("--x", choices=("steps", "tokens"), default="steps",
                   help="horizontal axis: optimizer steps or tokens seen (default: steps)")
    p.add_argument("--smooth", type=float, default=0.9,
                   help=f"train-loss EMA weight per 1/{SMOOTH_POINTS} of the x axis, so any --log_interval "
                        "smooths alike; 0 = raw, nearer 1 = smoother (default: 0.9)")
    p.add_argument("--labels", type=lambda text: text.split(","), default=None,
                   help="comma-separated legend labels, one per RUN_DIR (default: dir + differing config)")
    args = p.parse_args(argv)
    try:
        if not 0 <= args.smooth < 1:
            raise PlotError(f"--smooth must be in [0, 1), got {args.smooth:g}")
        try:  # before reading any run, so a missing dependency is the first thing said
            import matplotlib
            matplotlib.use("Agg")  # files only: works on a server with no display
        except ImportError:
            raise PlotError("trainer.plot needs matplotlib: pip install matplotlib") from None
        stages = [find_stage_dir(d) for d in args.run_dirs]
        runs = [Run(d.rstrip("/") or d, stage, read_metrics(stage / "metrics.jsonl"), read_config(stage))
                for d, stage in zip(args.run_dirs, stages)]
        labels = args.labels or run_labels([r.name for r in runs], [r.config for r in runs])
        if len(labels) != len(runs):
            raise PlotError(f"--labels has {len(labels)} labels for {len(runs)} runs")
        fig = draw(runs, labels, "tokens" if args.x == "tokens" else "step", args.smooth)
        save_png(fig, Path(args.out))
    except (PlotError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
