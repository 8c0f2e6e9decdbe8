"""Data: streaming readers for every file format (file:line errors), chat and R1 formats, the SFT loss mask,
pretokenized uint16 token files, the Dataset classes the engine iterates, dataset.stats and dataset.convert.

Not here: the built-in demo corpus generators (dataset/demo/), tokenizer training (tokenizer/), the loop (trainer/).
"""
