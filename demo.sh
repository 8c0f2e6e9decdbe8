#!/usr/bin/env bash
# The whole demo chain on the built-in data (no download, no GPU needed):
#   pretrain -> sft -> sft_long -> distill, then the SFT-only model (sft_long) and
#   the distilled model answer held-out reasoning problems (the distilled one greedy
#   and 8 times sampled: pass@k, with intervals);
#   dpo (from sft), then the SFT and the DPO model rank held-out preference pairs;
#   grpo (from distill), then the GRPO model answers the same held-out problems;
#   last, the report of every stage side by side (python -m evaluation.report).
# Each stage starts from the one before in out/ (OUT_DIR to change it). Set PYTHON
# to use another interpreter than the project's .venv.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT_DIR:-out}

stage() {  # stage SCRIPT [flags]: run a training stage afresh (an earlier run is moved aside) and say how long it took
  local start=$SECONDS
  "$PYTHON" "$@" --out_dir "$OUT" --overwrite
  echo "== $1 took $((SECONDS - start)) s =="
}

# Pretraining runs the whole epoch on every CPU (--max_steps 0). The README's first command
# already did that where the CPU has native bf16; on one without, it stopped early to keep its
# minutes, and a shorter pretraining leaves every later stage far weaker (bench/LOG.md).
whole_demo_pretraining() {  # is $OUT/pretrain.pth the demo's pretraining, run to the end of its epoch?
  "$PYTHON" -c '
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
cfg = json.loads((run / "config.json").read_text())["config"]
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
demo = not cfg.get("data_path") and not cfg.get("tokenizer_dir") and not cfg.get("init")
sys.exit(0 if demo and cfg.get("max_steps") == 0 and rows and rows[-1].get("epoch", 0) >= 1 else 1)
' "$OUT/pretrain" 2>/dev/null && [ -f "$OUT/pretrain.pth" ]
}
if whole_demo_pretraining; then
  echo "== pretrain.py: keeping $OUT/pretrain.pth (the whole demo epoch, from the README's first command) =="
else
  stage pretrain.py --max_steps 0
fi
stage sft.py
stage sft_long.py
stage distill.py

# Held-out sets that no training set contains (dataset/demo/): 500 problems the
# r1 set never asks, and 200 preference pairs that the dpo set does not hold.
"$PYTHON" -m dataset.demo --kind r1_test --samples 0
"$PYTHON" -m dataset.demo --kind dpo_test --samples 0
# Every model answers with the calculator that GRPO's rollouts use (inference/calculator.py): it
# writes the result after each equation's "=", so what is measured is the choice of working.
reasoning_eval() {  # reasoning_eval MODE N [flags]: greedy answers to the first N held-out problems
  local mode=$1 n=$2
  shift 2
  "$PYTHON" eval_model.py --model_mode "$mode" --out_dir "$OUT" --eval_file out/demo/r1_test.jsonl \
    --max_samples "$n" --max_new_tokens 160 --calculator --out "$OUT/eval/r1_test.$mode.jsonl" "$@"
}
echo "== eval_model.py --model_mode sft_long (SFT only: it never thinks) on 100 held-out problems =="
reasoning_eval sft_long 100
echo "== eval_model.py --model_mode distill on 400 held-out problems: greedy, then pass@k of 8 samples =="
reasoning_eval distill 400 --samples 8

stage dpo.py
for mode in sft dpo; do
  echo "== eval_model.py --model_mode $mode on 200 held-out preference pairs =="
  "$PYTHON" eval_model.py --model_mode "$mode" --out_dir "$OUT" --eval_file out/demo/dpo_test.jsonl
done

stage grpo.py
echo "== eval_model.py --model_mode grpo on the same 400 held-out problems: greedy, then pass@k of 8 samples =="
reasoning_eval grpo 400 --samples 8

echo "== every stage on the same held-out sets: $OUT/report.md and $OUT/report.png (docs/report.md) =="
"$PYTHON" -m evaluation.report --out_dir "$OUT" --max_samples 100 --calculator
