"""Evaluation of generated text: BLEU-4 and ROUGE-1/2/L against references (see text_metrics.py)."""
