"""bench/gpu_check.py runs every section on the CPU at toy sizes (--smoke), so the script that
will meet a GPU has had its own code exercised. Slow (about a minute): python -m pytest -m slow."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_section_of_the_gpu_check_runs(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--smoke"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "FAILED" not in table, table
    for check in ("bf16 vs fp32", "eager", "compiled", "reference recipe", "--packing pack", "generation"):
        assert check in table
