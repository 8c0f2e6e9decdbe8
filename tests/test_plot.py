"""python -m trainer.plot: runs found, labels that say what differs, a real PNG, one-line errors.

The run folders are written by hand here (metrics.jsonl + config.json as the
trainer writes them), so no training is needed. Tests that draw need
matplotlib, an optional dependency, and skip without it.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.plot import DPI, FIGSIZE, PlotError, Run, draw, ema, find_stage_dir, main, read_config, \
    read_metrics, run_labels

REPO = Path(__file__).resolve().parent.parent


def make_run(out_dir: Path, learning_rate: float, stage: str = "pretrain") -> Path:
    """A finished-looking stage folder: 40 log rows, validation every 50 steps, one spike."""
    folder = out_dir / stage
    folder.mkdir(parents=True)
    rows = []
    for i, step in enumerate([1] + list(range(5, 200, 5))):
        row = {"step": step, "epoch": step / 200, "loss": 8 * math.exp(-step * learning_rate * 20) + 0.5
               + 0.05 * (-1) ** i, "lr": learning_rate * min(1.0, step / 20), "tokens": step * 4096,
               "tokens_per_s": 3000.0 + 10 * i, "grad_norm": 0.5}
        if step % 50 == 0:
            row["val_loss"] = row["loss"] - 0.05
        if step == 120:
            row["spike"] = True
        rows.append(row)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"learning_rate": learning_rate, "batch_size": 16, "accumulation_steps": 1, "out_dir": str(out_dir)}
    (folder / "config.json").write_text(json.dumps({"stage": stage, "config": config, "model": {"dim": 256}}))
    return folder


def test_labels_name_only_what_differs() -> None:
    configs = [{"learning_rate": 0.002, "batch_size": 16, "out_dir": "runs/a"},
               {"learning_rate": 0.0005, "batch_size": 16, "out_dir": "runs/b"}]
    # out_dir differs too, but it never changes a curve and the name already says it.
    assert run_labels(["runs/a", "runs/b"], configs) == ["runs/a (learning_rate=0.002)",
                                                          "runs/b (learning_rate=0.0005)"]
    configs = [{"learning_rate": 5e-05, "batch_size": 16, "compile": False, "data_path": []},
               {"learning_rate": 5e-05, "batch_size": 32, "compile": True, "data_path": ["x.jsonl", "y.jsonl"]},
               {"learning_rate": 5e-05, "batch_size": 32, "compile": True, "data_path": [], "hidden_size": 0}]
    # hidden_size is in one config only (a newer version of the code wrote it): not the experiment.
    assert run_labels(["a", "b", "c"], configs) == ["a (batch_size=16, compile=false, data_path=[])",
                                                    "b (batch_size=32, compile=true, data_path=x.jsonl,y.jsonl)",
                                                    "c (batch_size=32, compile=true, data_path=[])"]
    # One run, or runs without config.json: just the names.
    assert run_labels(["out/pretrain"], [{"learning_rate": 0.002}]) == ["out/pretrain"]
    assert run_labels(["a", "b"], [{}, {}]) == ["a", "b"]


def test_stage_folder_or_out_dir(tmp_path: Path) -> None:
    stage = make_run(tmp_path / "a", 0.002)
    assert find_stage_dir(str(stage)) == stage
    assert find_stage_dir(str(tmp_path / "a")) == stage  # an out_dir with one stage in it
    make_run(tmp_path / "a", 0.002, stage="sft")
    with pytest.raises(PlotError, match=r"holds several runs \(pretrain, sft\); name one"):
        find_stage_dir(str(tmp_path / "a"))
    with pytest.raises(PlotError, match="no such directory"):
        find_stage_dir(str(tmp_path / "missing"))
    with pytest.raises(PlotError, match="no metrics.jsonl"):
        find_stage_dir(str(tmp_path))
    assert read_config(stage) == {"dim": 256, "learning_rate": 0.002, "batch_size": 16,
                                  "accumulation_steps": 1, "out_dir": str(tmp_path / "a")}


@pytest.mark.parametrize("text, line, what", [
    ('{"step": 1, "loss": 2.0}\n{"step": 5, "loss": \n', 2, "not JSON"),
    ('{"step": 1, "loss": 2.0}\n\n{"step": 5, "loss": 1.0}\n', 2, "empty line"),
    ('[1, 2]\n', 1, "numeric 'step' and 'loss'"),
    ('{"step": 1, "loss": "low"}\n', 1, "numeric 'step' and 'loss'"),
])
def test_bad_metrics_line_names_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(text)
    with pytest.raises(PlotError) as info:
        read_metrics(path)
    assert str(info.value).startswith(f"{path}:{line}: ") and what in str(info.value)


def test_empty_metrics_file(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(PlotError, match="empty, no steps logged yet"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_ema_follows_x_not_rows() -> None:
    xs = [float(x) for x in range(0, 201)]
    assert ema(xs, [3.0] * len(xs), 0.9, 200) == pytest.approx([3.0] * len(xs))  # no start-at-0 bias
    ys = [math.sin(x / 7) for x in xs]
    assert ema(xs, ys, 0.0, 200) == pytest.approx(ys)
    # The same loss curve logged every step or every 5th: the smoothed curves agree where both have
    # points, where a per-row EMA (gap 1 per row) would lag five times more on the sparse one.
    loss = [8 * math.exp(-x / 40) + 0.5 for x in xs]
    dense, sparse = ema(xs, loss, 0.9, 200)[::5], ema(xs[::5], loss[::5], 0.9, 200)
    per_row = ema([float(i) for i in range(41)], loss[::5], 0.9, 200)
    assert max(abs(d - s) for d, s in zip(dense, sparse)) < 0.2
    assert max(abs(d - s) for d, s in zip(dense, per_row)) > 1.0
    smoothed = ema([0.0, 1.0, 2.0, 3.0], [1.0, math.nan, 1.0, 1.0], 0.9, 3)
    assert math.isnan(smoothed[1]) and smoothed[2:] == pytest.approx([1.0, 1.0])  # a NaN is a gap


def test_renders_a_png_with_labelled_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.image
    make_run(tmp_path / "runs" / "a", 0.002)
    make_run(tmp_path / "runs" / "b", 0.0005)
    out = tmp_path / "figs" / "curves.png"
    assert main([str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b"), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    height, width = matplotlib.image.imread(out).shape[:2]  # bbox_inches="tight" trims or grows the margin
    assert abs(height - FIGSIZE[1] * DPI) < 0.1 * FIGSIZE[1] * DPI
    assert abs(width - FIGSIZE[0] * DPI) < 0.1 * FIGSIZE[0] * DPI
    assert [p.name for p in out.parent.iterdir()] == ["curves.png"]  # the temporary file is gone

    # The legend is what run_labels says: the folder plus the differing learning rate.
    runs = [Run(f"runs/{n}", s, read_metrics(s / "metrics.jsonl"), read_config(s))
            for n, s in (("a", tmp_path / "runs/a/pretrain"), ("b", tmp_path / "runs/b/pretrain"))]
    fig = draw(runs, run_labels([r.name for r in runs], [r.config for r in runs]), x_key="tokens")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["runs/a (learning_rate=0.002)",
                                                                   "runs/b (learning_rate=0.0005)"]


def test_rl_runs_get_a_linear_loss_axis_and_reward_panels(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    dpo = make_run(tmp_path / "runs" / "dpo", 0.002, "dpo")
    grpo = make_run(tmp_path / "runs" / "grpo", 0.001, "grpo")
    for folder, rows in ((dpo, [{"step": s, "loss": 0.69 - s / 400, "lr": 1e-5, "rewards/margins": s / 100,
                                 "rewards/accuracies": min(1.0, 0.5 + s / 400)} for s in range(5, 200, 5)]),
                         (grpo, [{"step": 0, "val_accuracy": 0.0}]  # the start, validated before step 1
                          + [{"step": s, "loss": 0.01 - s / 1000, "lr": 1e-6, "reward": s / 200,
                              "rewards/accuracy": s / 250, "mixed_groups": 0.5,
                              **({"val_accuracy": s / 300} if s % 50 == 0 else {})}
                             for s in range(5, 200, 5)])):
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = [Run(n, f, read_metrics(f / "metrics.jsonl"), read_config(f)) for n, f in (("dpo", dpo), ("grpo", grpo))]
    fig = draw(runs, ["dpo", "grpo"])
    loss, val, _, _, reward, accuracy = fig.axes
    assert loss.get_yscale() == "linear"  # GRPO's loss goes below 0: a log axis would lose it
    assert min(min(line.get_ydata()) for line in loss.get_lines()) < 0
    assert reward.get_title() == "rewards and RL diagnostics" and accuracy.get_title() == "held-out accuracy"
    assert [t.get_text() for t in reward.get_legend().get_texts()] == [
        "reward", "rewards/accuracies", "rewards/accuracy", "rewards/margins", "mixed_groups"]
    assert len(accuracy.get_lines()) == 2
    assert list(accuracy.get_lines()[1].get_ydata()) == [0.0, 50 / 300, 100 / 300, 150 / 300]
    out = tmp_path / "rl.png"
    assert main([str(tmp_path / "runs" / "dpo"), str(tmp_path / "runs" / "grpo"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pretrain = make_run(tmp_path / "runs" / "pre", 0.002)
    assert len(draw([Run("pre", pretrain, read_metrics(pretrain / "metrics.jsonl"), read_config(pretrain))],
                    ["pre"]).axes) == 4  # nothing to reward: the four panels as before


def test_tokens_axis_and_labels_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    make_run(tmp_path / "a", 0.002)
    make_run(tmp_path / "b", 0.0005)
    out = tmp_path / "t.png"
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--x", "tokens", "--labels", "fast,slow",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main([str(tmp_path / "a"), "--labels", "x,y", "--out", str(out)]) == 2
    assert capsys.readouterr().err == "error: --labels has 2 labels for 1 runs\n"


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    stage = make_run(tmp_path / "a", 0.002)
    with open(stage / "metrics.jsonl", "a") as f:
        f.write('{"step": 200, "loss": 0.5\n')  # a line cut short
    assert main([str(tmp_path / "a"), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {stage / 'metrics.jsonl'}:41: not JSON") and err.count("\n") == 1
    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing'}: no such directory\n"
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "a"), "--lr", "3"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: unknown option --lr; see --help for the options\n"
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_one_line_and_exit_2(tmp_path: Path) -> None:
    make_run(tmp_path / "a", 0.002)
    # sys.modules[name] = None makes `import matplotlib` fail as if it were not installed.
    code = ("import runpy, sys; sys.modules['matplotlib'] = None; "
            f"sys.argv = ['trainer.plot', {str(tmp_path / 'a')!r}, '--out', {str(tmp_path / 'x.png')!r}]; "
            "runpy.run_module('trainer.plot', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == "error: trainer.plot needs matplotlib: pip install matplotlib\n"
    assert done.stdout == "" and not (tmp_path / "x.png").exists()
