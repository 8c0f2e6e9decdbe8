"""Train the byte-level BPE and measure it. train_tokenizer.py is the command line around this."""

import resource
import sys
from typing import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from .hf_format import portable_tokenizer_json
from .specials import SPECIAL_TOKENS


def new_byte_level_bpe() -> Tokenizer:
    """An empty byte-level BPE with the GPT-2 pre-tokenizer (the GGUF export declares pre='gpt-2')."""
    tok = Tokenizer(models.BPE())
    # No prefix space: "你好" and " 你好" must stay different texts, or round-trips break.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)  # offsets only; never adds tokens
    return tok


def train_bpe(texts: Sequence[str], vocab_size: int, min_frequency: int = 2, show_progress: bool = True) -> str:
    """Train on texts; return the tokenizer.json text, with ids 0-6 = SPECIAL_TOKENS in order."""
    tok = new_byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),  # given first, so they take ids 0..6
        # All 256 byte symbols, seen or not: any byte sequence (emoji, rare CJK,
        # control chars) then has a tokenization, and nothing is silently dropped.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return portable_tokenizer_json(tok.to_str())


def compression(tok: Tokenizer, texts: Sequence[str]) -> dict:
    """Characters and UTF-8 bytes per token over texts (higher = shorter sequences)."""
    n_tokens = sum(len(enc.ids) for enc in tok.encode_batch(list(texts), add_special_tokens=False))
    n_chars = sum(map(len, texts))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "chars": n_chars,
        "bytes": n_bytes,
        "tokens": n_tokens,
        "chars_per_token": n_chars / max(n_tokens, 1),
        "bytes_per_token": n_bytes / max(n_tokens, 1),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (tokenizers' threads included)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KB on Linux
