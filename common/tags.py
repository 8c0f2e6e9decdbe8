"""The four reasoning tags: single tokens of the tokenizer (tokenizer/specials.py), and the marks the
reasoning format is read by (common/reasoning.py). Here on their own, so that loading the tokenizer
loads no reasoning code."""
THINK, THINK_END, ANSWER, ANSWER_END = "<think>", "</think>", "<answer>", "</answer>"
