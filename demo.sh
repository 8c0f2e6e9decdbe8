#!/usr/bin/env bash
# The whole demo chain on the built-in data (no download, no GPU needed):
#   pretrain -> sft -> sft_long -> distill, then the SFT-only model (sft_long)
#   and the distilled model answer the same held-out reasoning problems.
# Each stage starts from the one before (out/<stage>.pth). Set PYTHON to use
# another interpreter than the project's .venv.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}

"$PYTHON" pretrain.py
"$PYTHON" sft.py
"$PYTHON" sft_long.py
"$PYTHON" distill.py

# Problems that the r1 training set never asks (dataset/demo/, kind r1_test);
# the first 100 of its 200, greedy.
"$PYTHON" -m dataset.demo --kind r1_test --samples 0
for mode in 3 2; do
  echo "== eval_model.py --model_mode $mode (3: SFT only, 2: distilled) on 100 held-out problems =="
  "$PYTHON" eval_model.py --model_mode "$mode" --eval_file out/demo/r1_test.jsonl --max_samples 100 \
    --out "out/eval/r1_test.mode$mode.jsonl" --max_new_tokens 120
done
