"""Load a trained tokenizer directory into a thin wrapper over tokenizers.Tokenizer.

No transformers here: training, data preparation and inference only need the
Rust tokenizers library. The same directory also loads with
transformers.AutoTokenizer, which the tests use as an oracle; hf_format.write_hf_dir(tok.json_text, dir)
writes a copy of it (export.py does, beside an exported model).
"""

import hashlib
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer

from .chat_template import render_chat
from .specials import ANSWER, ANSWER_END, ENDOFTEXT, IM_END, IM_START, SPECIAL_TOKENS, THINK, THINK_END

# The shipped tokenizer lives next to this file.
DEFAULT_TOKENIZER_DIR = Path(__file__).resolve().parent


class TokenizerError(ValueError):
    """A tokenizer file is missing or unusable; str(e) is one line naming the file."""


class SpongeTokenizer:
    """Byte-level BPE with our seven special tokens and the ChatML template."""

    def __init__(self, tokenizer: Tokenizer, json_path: Path, json_bytes: bytes):
        self._tok = tokenizer
        self.json_path = json_path
        self.path = json_path.parent  # the tokenizer directory
        self._sha256 = hashlib.sha256(json_bytes).hexdigest()
        self.json_text = json_bytes.decode("utf-8")  # byte for byte, for exports (hf_format.write_hf_dir)
        # Every id the tokenizer can emit: the embedding table needs exactly this many rows.
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        ids = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
        self.special_tokens: dict[str, int] = ids
        self.endoftext_id: int = ids[ENDOFTEXT]
        self.im_start_id: int = ids[IM_START]
        self.im_end_id: int = ids[IM_END]
        self.think_id: int = ids[THINK]
        self.think_end_id: int = ids[THINK_END]
        self.answer_id: int = ids[ANSWER]
        self.answer_end_id: int = ids[ANSWER_END]
        self.pad_id: int = self.endoftext_id
        # What pretraining puts before every document (dataset/pretokenize.py), so a tool that starts
        # a text with the BOS (lm-eval's rolling loglikelihood, llama.cpp) gives the trained context.
        self.bos_id: int = self.endoftext_id
        self.eos_id: int = self.im_end_id  # a reply ends with <|im_end|>

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"SpongeTokenizer(path='{self.path}', vocab_size={self.vocab_size})"

    def encode(self, text: str) -> list[int]:
        """Token ids of text. Nothing is added; special tokens written in the text become their ids."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """encode() plus each token's character span [start, end) in text (a character split over
        several byte-level tokens gives each of them that character's span)."""
        encoding = self._tok.encode(text, add_special_tokens=False)
        return encoding.ids, encoding.offsets

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """encode() over many texts, in parallel threads (much faster for data preparation)."""
        return [enc.ids for enc in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ids. skip_special_tokens drops the control tokens but keeps <think>/<answer> tags."""
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = False, tokenize: bool = False
    ) -> str | list[int]:
        """ChatML text of a conversation (or its ids with tokenize=True); see chat_template.py."""
        text = render_chat(messages, add_generation_prompt=add_generation_prompt)
        return self.encode(text) if tokenize else text

    def identity(self) -> dict:
        """What a checkpoint records so that a model is never paired with the wrong tokenizer."""
        return {"vocab_size": self.vocab_size, "sha256": self._sha256, "special_tokens": dict(self.special_tokens)}

    def record(self) -> dict:
        """What a checkpoint stores: the identity, and for an own tokenizer (not the shipped one)
        the directory where the next stages, eval_model, export and serve will find it."""
        if self.path.resolve() == DEFAULT_TOKENIZER_DIR:
            return self.identity()
        return {**self.identity(), "dir": str(self.path.resolve())}



def _check_special_tokens(tokenizer: Tokenizer, json_path: Path) -> None:
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is None or tokenizer.encode(token, add_special_tokens=False).ids != [token_id]:
            raise TokenizerError(
                f"{json_path}: {token} is not a single token; train the tokenizer with train_tokenizer.py"
            )


def tokenizer_for(identity: dict | None) -> SpongeTokenizer:
    """The tokenizer a checkpoint was trained with: the directory its identity records (an own
    tokenizer from train_tokenizer.py), else the shipped one. A recorded directory that is gone
    is one line saying where it was."""
    recorded = (identity or {}).get("dir")
    if not recorded:
        return load_tokenizer()
    if not Path(recorded).is_dir():
        raise TokenizerError(f"the model was trained with the tokenizer in {recorded}, which is gone; "
                             "put it back there or pass its new place with --tokenizer_dir")
    return load_tokenizer(recorded)


def load_tokenizer(path: str | Path | None = None) -> SpongeTokenizer:
    """Load a tokenizer directory (or its tokenizer.json); None means the shipped one."""
    path = Path(DEFAULT_TOKENIZER_DIR if path is None else path)
    json_path = path / "tokenizer.json" if path.is_dir() else path
    if not json_path.is_file():
        raise TokenizerError(f"{json_path}: no such file; pass a tokenizer directory or its tokenizer.json")
    try:
        json_bytes = json_path.read_bytes()
        tokenizer = Tokenizer.from_str(json_bytes.decode("utf-8"))
    except Exception as e:  # OSError, UnicodeDecodeError, or the bare Exception tokenizers raises on bad JSON
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TokenizerError(f"{json_path}: not a readable tokenizer.json ({reason})") from None
    _check_special_tokens(tokenizer, json_path)
    return SpongeTokenizer(tokenizer, json_path, json_bytes)
