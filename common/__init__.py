"""The bottom of the tree: what every part of the project shares, and nothing that trains.

    cli.py        the one-line flag parser (did-you-mean for MiniMind / LLaMA-Factory names)
    device.py     device, dtype and autocast choice, and the peak-FLOPs table for MFU
    seeding.py    the one seeded-generator recipe (data order, packing, rollouts)
    stages.py     the table of stages: name, previous stage, checkpoint, mode, thinks, demo data
    tags.py       the four reasoning tags, which the tokenizer makes single tokens
    reasoning.py  the <think>/<answer> format and the one answer matcher

These modules import only the standard library and torch, so serving, inference
and exporters can use them without loading the trainer.
"""
