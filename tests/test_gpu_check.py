"""bench/gpu_check.sh runs every section of bench/gpu_check.py on the CPU at toy sizes (--smoke), so the
script that will meet a GPU has had its own code exercised. The full smoke run is slow (under a minute
alone on 2 cores): python -m pytest -m slow. The budget test is quick: no section fits, each says so."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_check(tmp_path, *args, script="gpu_check.sh"):
    env = dict(os.environ, OUT=str(tmp_path), PYTHONPATH=str(REPO), PYTHON=sys.executable)
    command = ["bash", str(REPO / "bench" / script)] if script.endswith(".sh") else [sys.executable,
                                                                                     str(REPO / "bench" / script)]
    return subprocess.run(command + list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def results(tmp_path):
    lines = [json.loads(x) for x in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    return lines[0], lines[1:]


@pytest.mark.slow
def test_every_section_of_the_gpu_check_runs(tmp_path):
    done = run_check(tmp_path, "--smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "FAILED" not in table and "skipped" not in table, table
    for check in ("fp32 eager", "fp32 compiled", "largest batch", "--packing none", "--packing group",
                  "--packing pack", "generation", "DDP, 1 rank, gloo", "reference recipe", "bf16 vs fp32"):
        assert check in table
    head, rows = results(tmp_path)
    assert head["smoke"] and len(rows) == table.count("\n| ") - 1  # every table row also a json line


def test_sections_that_do_not_fit_the_budget_are_skipped_with_a_line(tmp_path):
    done = run_check(tmp_path, "--smoke", "--budget", "0", script="gpu_check.py")
    assert done.returncode == 0, done.stderr[-3000:]
    _, rows = results(tmp_path)
    assert len(rows) == 7 and all(r["result"].startswith("skipped: 0 s left of the 0 s budget") for r in rows)
    assert "check_pretrain" in (tmp_path / "gpu_check.md").read_text()
