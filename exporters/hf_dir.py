"""Write a trained model as a Hugging Face `LlamaForCausalLM` directory.

    config.json              hf_config_dict (rope_theta for transformers 4.x and 5.x)
    generation_config.json   bos/eos/pad and greedy decoding (do_sample false, no penalty)
    model.safetensors        the weights under HF's names (model/hf.py's names), float32
    tokenizer.json, tokenizer_config.json (ChatML template), special_tokens_map.json

The result loads with AutoModelForCausalLM / AutoTokenizer and no custom code.
The caller gives a fresh directory; export.py makes the write atomic.
"""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import torch

from tokenizer import SpongeTokenizer
from tokenizer.hf_format import write_hf_dir

from model import SpongeBob
from model.hf import hf_config_dict, to_hf_state_dict

WEIGHTS_FILE = "model.safetensors"
_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}

# Greedy by default, and nothing else: transformers applies a repetition_penalty
# in the file even under generate(do_sample=False), which then is no longer argmax
# and differs from our greedy (and llama.cpp's) token for token. Sampling as
# eval_model.py does is one call away: do_sample=True, temperature=0.7, top_p=0.9,
# repetition_penalty=1.1. No temperature or top_p here either: with do_sample false,
# transformers warns that they are set and unused.
_DECODING_DEFAULTS = {"do_sample": False}


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write tensors in the safetensors format, by hand.

    The format is small enough to write directly: an 8-byte little-endian
    header size, a JSON header giving each tensor's dtype, shape and byte
    range, then the raw little-endian bytes back to back. That spares users a
    runtime dependency on the `safetensors` package; the tests read the file
    back with the real one (through transformers).
    """
    if sys.byteorder != "little":  # the data must be little-endian; torch writes native order
        raise RuntimeError("safetensors export needs a little-endian machine")
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}  # transformers refuses files without it
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: dtype {tensor.dtype} is not supported")
        nbytes = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # pad so the tensor data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for tensor in tensors.values():
            # A byte view writes bf16 too, which numpy has no type for.
            f.write(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)


def generation_config(tok: SpongeTokenizer) -> dict:
    """generation_config.json: a reply ends at <|im_end|>, a plain continuation at <|endoftext|>."""
    return {"bos_token_id": tok.bos_id, "eos_token_id": [tok.eos_id, tok.endoftext_id],
            "pad_token_id": tok.pad_id, **_DECODING_DEFAULTS}


def _dump(obj: dict, path: Path) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_hf_export(model: SpongeBob, tok: SpongeTokenizer, out_dir: str | Path) -> Path:
    """Write model + tokenizer into out_dir (created if needed) as a LlamaForCausalLM directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    # With a tied head lm_head is left out (safetensors refuses one tensor
    # under two names); tie_word_embeddings in config.json makes HF re-tie it.
    weights = {name: w.detach().float().contiguous()
               for name, w in to_hf_state_dict(model.state_dict(), cfg).items()}
    write_safetensors(weights, out / WEIGHTS_FILE)
    _dump(hf_config_dict(cfg, bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id),
          out / "config.json")
    _dump(generation_config(tok), out / "generation_config.json")
    write_hf_dir(tok.json_text, out)  # tokenizer.json byte for byte, with its two companions
    # transformers 4.x's fast tokenizer otherwise also returns token_type_ids,
    # which Llama's generate() rejects: `model.generate(**tok(text))` must work.
    config_path = out / "tokenizer_config.json"
    tok_config = json.loads(config_path.read_text(encoding="utf-8"))
    _dump({**tok_config, "model_input_names": ["input_ids", "attention_mask"]}, config_path)
    return out
