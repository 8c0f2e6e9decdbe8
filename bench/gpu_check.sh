#!/usr/bin/env bash
# The GPU check in one call (see bench/gpu_check.py): correctness and speed of the engine on one GPU,
# in under 5 minutes on an H100/H200.
#   bash bench/gpu_check.sh            # prints a summary table; with $OUT set (or --out DIR), each
#                                      # result is appended there (gpu_check.md, gpu_check.jsonl) as measured
#   bash bench/gpu_check.sh --smoke    # the same code on the CPU at toy sizes (tests/test_gpu_check.py)
# Runs on the GPU machine's own torch. Python packages it lacks (tokenizers, tqdm, ...) are installed
# from bench/wheels/ when that folder was carried along (pip download them there beforehand), since
# such a machine may have no network.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
missing=$("$PYTHON" - <<'PY'
import importlib.util
print(" ".join(m for m in ("tokenizers", "numpy", "tqdm", "yaml") if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then
  if [ -d bench/wheels ]; then
    "$PYTHON" -m pip install --quiet --no-index --find-links bench/wheels tokenizers numpy tqdm pyyaml
  else
    echo "gpu_check: missing $missing and no bench/wheels to install from" >&2
    exit 2
  fi
fi
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
# The script keeps to its own --budget (280 s); the timeout only stops a hang. Results so far are on disk.
exec timeout 300 "$PYTHON" bench/gpu_check.py "$@"
