"""Write a tokenizer directory in the Hugging Face format, without transformers.

The directory holds three files:
  tokenizer.json           the tokenizers-library model (vocab, merges, added tokens)
  tokenizer_config.json    what AutoTokenizer reads first: class, special-token roles, chat template
  special_tokens_map.json  the bos/eos/pad roles again, for older loaders

We write them with json.dump rather than transformers' save_pretrained: that
keeps transformers a test-only oracle, and 5.x's save_pretrained writes
"TokenizersBackend" and "extra_special_tokens": [] which 4.x cannot load.
"""

import json
from pathlib import Path

from .chat_template import CHAT_TEMPLATE
from .specials import ENDOFTEXT, IM_END, REASONING_TAGS

# Long enough for any context a tiny model is trained with; transformers only
# uses it to warn about over-long inputs.
MODEL_MAX_LENGTH = 32768

# bos is <|endoftext|>: pretraining separates documents with it, so every document the model
# read followed one. Nothing adds it by itself (add_bos_token false): a chat starts at <|im_start|>
# as SFT trained it, and tools that prefix a BOS to plain text (lm-eval's rolling loglikelihood
# uses bos_token_id as its prefix) get exactly the context of pretraining.
SPECIAL_TOKENS_MAP = {"bos_token": ENDOFTEXT, "eos_token": IM_END, "pad_token": ENDOFTEXT}


def portable_tokenizer_json(tokenizer_json: str) -> str:
    """Turn the trainer's tokenizer.json into the one we ship. Two changes:

    1. "special": false on the four reasoning tags. The BPE trainer marks every
       special token special=True, so decode(skip_special_tokens=True) would
       delete <think>/<answer> too. With special=False they keep their ids and
       are still matched as whole tokens in text (they stay in added_tokens),
       but survive skip_special_tokens.
    2. merges written as "a b" strings, not ["a", "b"] pairs: tokenizers < 0.20
       (transformers < 4.45) only reads strings, and every version reads them.
       Safe for byte-level BPE, whose tokens never contain a real space.
    """
    data = json.loads(tokenizer_json)
    for added in data["added_tokens"]:
        if added["content"] in REASONING_TAGS:
            added["special"] = False
    merges = data["model"]["merges"]
    if any(not isinstance(m, str) and any(" " in part for part in m) for m in merges):
        raise ValueError("a merge contains a space: not a byte-level BPE")
    data["model"]["merges"] = [m if isinstance(m, str) else " ".join(m) for m in merges]
    return json.dumps(data, ensure_ascii=False, indent=2)


def tokenizer_config(tokenizer_json: str) -> dict:
    """The tokenizer_config.json contents matching a tokenizer.json."""
    added = json.loads(tokenizer_json)["added_tokens"]
    # The same flags as tokenizer.json, so a 4.x loader re-adding these tokens
    # cannot turn the reasoning tags back into special ones.
    decoder = {
        str(tok["id"]): {k: tok[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        for tok in added
    }
    return {
        # Both 4.x and 5.x know this class name; no "extra_special_tokens" key (4.x chokes on a list).
        "tokenizer_class": "PreTrainedTokenizerFast",
        **SPECIAL_TOKENS_MAP,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,  # would alter text ("a ." -> "a."): breaks exact round-trips
        "split_special_tokens": False,
        "model_max_length": MODEL_MAX_LENGTH,
        "padding_side": "right",
        "added_tokens_decoder": decoder,
        "chat_template": CHAT_TEMPLATE,
    }


def _dump(obj: dict, path: Path) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_hf_dir(tokenizer_json: str, out_dir: str | Path) -> Path:
    """Write tokenizer.json (byte for byte as given) and its two companions into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_bytes(tokenizer_json.encode("utf-8"))
    _dump(tokenizer_config(tokenizer_json), out / "tokenizer_config.json")
    _dump(SPECIAL_TOKENS_MAP, out / "special_tokens_map.json")
    return out
