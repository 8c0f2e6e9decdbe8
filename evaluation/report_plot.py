"""report.png: the report's table as bars, one small panel per measure, one bar per stage.

matplotlib is optional: without it plot_report returns a one-line reason and the
report keeps its markdown. The image is written to a temp file, then renamed.
"""
from __future__ import annotations

import math
import os
from pathlib import Path


def plot_report(path: Path, stages: list[str], columns: list[tuple[str, str]], results: dict[str, dict],
                chance: dict[str, float], percent: set[str]) -> str | None:
    """Draw every column that has a value, a bar for each stage it applies to (percent columns on a
    0-100 axis, so panels compare); returns None, or why no image was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: report.png not written (pip install matplotlib)"
    shown = [(key, label) for key, label in columns if any(results[s].get(key) is not None for s in stages)]
    if not shown:
        return "no measure to plot: report.png not written"
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (key, label) in zip(axes.flat, shown):
        here = [i for i, s in enumerate(stages) if results[s].get(key) is not None]  # stages it applies to
        heights = [results[stages[i]][key] for i in here]
        bars = ax.bar(range(len(here)), heights, color=[colours(i % 10) for i in here])  # a stage keeps its colour
        for bar, v in zip(bars, heights):  # the number on each bar: no squinting at the axis
            ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        if key in chance:
            ax.axhline(chance[key], color="grey", linestyle="--", linewidth=1)
            ax.annotate("chance", (len(here) - 0.5, chance[key]), ha="right", va="bottom", fontsize=7,
                        color="grey")
        if key in percent:
            ax.set_ylim(0, 105)
        else:
            ax.set_ylim(0, max(heights) * 1.15 or 1.0)
        ax.set_xlim(-0.6, max(len(here), 3) - 0.4)  # one bar stays a bar, not a slab
        ax.set_title(label, fontsize=10)
        ax.set_xticks(range(len(here)), [stages[i] for i in here], rotation=30, fontsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return None
