"""Data loading: streaming readers for user text files (see dataset/readers.py)."""
