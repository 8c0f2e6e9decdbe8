"""Scores of generated text: BLEU-4 and ROUGE (text_metrics.py), format compliance, answer matching and
think length for reasoning (reasoning_metrics.py), the --eval_file batch evaluation (batch_eval.py), and the stage report
(`python -m evaluation.report`: bits per byte, multiple choice, math, chat and preference for every stage).

Not here: generation itself (inference/) or the validation loss of training (trainer/).
"""
