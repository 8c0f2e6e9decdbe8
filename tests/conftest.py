"""Shared test setup: offline Hugging Face, the repo root importable, shared-data lookup."""
import os
from pathlib import Path

import pytest

# transformers is only an oracle here, and the hub is unreachable: never try it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real corpora live next to the project, never inside it; tests that use them skip without them.
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA
