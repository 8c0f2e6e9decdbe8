"""The built-in demo corpus: a seeded, made-up Chinese world that every stage trains on when no data is given.

Here: the world's facts (world.py), the pretrain / chat / reasoning generators, and corpus.py, which writes
out/demo/{kind}.jsonl (ensure_demo_corpus; `python -m dataset.demo`). Not here: readers, masks, Datasets (dataset/).
"""
from .corpus import DEMO_DIR, DEMO_KINDS, DEFAULT_SIZES, demo_corpus_current, demo_records, ensure_demo_corpus

__all__ = ["DEMO_DIR", "DEMO_KINDS", "DEFAULT_SIZES", "demo_corpus_current", "demo_records", "ensure_demo_corpus"]
