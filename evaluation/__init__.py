"""Scores of generated text: BLEU-4 and ROUGE (text_metrics.py), format compliance, answer matching and
think length for reasoning (reasoning_metrics.py), and the --eval_file batch evaluation (batch_eval.py).

Not here: generation itself (inference/) or the validation loss of training (trainer/).
"""
