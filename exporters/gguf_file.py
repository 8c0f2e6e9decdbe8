"""Write a trained model as one GGUF file for llama.cpp and Ollama.

The file is written with the `gguf` package's GGUFWriter (the format's
reference writer, from the llama.cpp project); the conversion itself is ours.
Three things make a GGUF of a Hugging-Face-convention Llama right:

1. Q/K rows are permuted. Our RoPE (like HF's) rotates dimension j of a head
   together with j + head_dim/2; llama.cpp's Llama graph rotates adjacent
   pairs (2i, 2i+1). Reordering the rows of q_proj/k_proj per head makes
   llama.cpp's rotation act on the same pairs, so attention is unchanged.
2. The tokenizer is described as llama.cpp's "gpt2" (byte-level BPE) with
   pre-tokenizer "gpt-2": our tokenizer.json pre-tokenizes with ByteLevel
   (use_regex, no prefix space), which is exactly GPT-2's split regex, and
   "gpt-2" is the name under which llama.cpp applies that regex. (Its
   "default" would split digits and punctuation differently.)
3. Token types: <|endoftext|>, <|im_start|>, <|im_end|> are CONTROL (hidden
   when printing, like skip_special_tokens); <think>, </think>, <answer>,
   </answer> are USER_DEFINED, so they are matched whole in text and shown.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import gguf
import numpy as np
import torch

from tokenizer import CHAT_TEMPLATE, SpongeTokenizer

from model import SpongeBob
from model.hf import to_hf_state_dict

GGUF_DTYPES = ("f32", "f16", "q8_0")
PRE_TOKENIZER = "gpt-2"

_FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
               "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
_GLOBAL_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                 "lm_head.weight": "output.weight"}
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")


def gguf_name(hf_name: str) -> str:
    """GGUF tensor name of a LlamaForCausalLM weight name."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    match = _LAYER_RE.fullmatch(hf_name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        raise KeyError(f"no GGUF name for weight '{hf_name}'")
    return f"blk.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"


def interleave_rope_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder the rows of a q_proj/k_proj weight from HF's RoPE layout to llama.cpp's.

    Within each head, new row 2i is old row i and new row 2i+1 is old row
    i + head_dim/2: the pairs HF rotates together become adjacent.
    """
    rows, cols = weight.shape
    head_dim = rows // n_heads
    half = head_dim // 2
    # [0, half, 1, half+1, ...]: the old row that lands at each new position.
    order = torch.stack([torch.arange(half), torch.arange(half, head_dim)], dim=1).reshape(-1)
    return weight.reshape(n_heads, head_dim, cols)[:, order].reshape(rows, cols)


def gguf_weights(model: SpongeBob) -> dict[str, torch.Tensor]:
    """All weights under GGUF names, float32, Q/K already permuted."""
    cfg = model.config
    out = {}
    for hf_name, weight in to_hf_state_dict(model.state_dict(), cfg).items():
        weight = weight.detach().float()
        if hf_name.endswith("q_proj.weight"):
            weight = interleave_rope_rows(weight, cfg.n_heads)
        elif hf_name.endswith("k_proj.weight"):
            weight = interleave_rope_rows(weight, cfg.n_kv_heads)
        out[gguf_name(hf_name)] = weight
    return out


def encode_tensor(weight: torch.Tensor, dtype: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """The array to store and its GGML type. Norm vectors always stay f32, as llama.cpp expects."""
    data = weight.numpy()
    if weight.dim() == 1 or dtype == "f32":
        return data, gguf.GGMLQuantizationType.F32
    # Q8_0 packs rows in blocks of 32 values; a row that does not divide falls back to f16.
    if dtype == "q8_0" and data.shape[-1] % 32 == 0:
        qtype = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(data, qtype), qtype
    return data.astype(np.float16), gguf.GGMLQuantizationType.F16


def add_hparams(writer: gguf.GGUFWriter, model: SpongeBob) -> None:
    cfg = model.config
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.hidden_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)


def token_types(tok: SpongeTokenizer, added_tokens: list[dict]) -> list[int]:
    types = [int(gguf.TokenType.NORMAL)] * tok.vocab_size
    for added in added_tokens:
        kind = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
        types[added["id"]] = int(kind)
    return types


def add_tokenizer(writer: gguf.GGUFWriter, tok: SpongeTokenizer) -> None:
    data = json.loads(tok.json_path.read_text(encoding="utf-8"))
    tokens = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    if None in tokens:  # llama.cpp needs ids 0..n-1 with no gap
        raise ValueError(f"{tok.json_path}: token id {tokens.index(None)} is unused")
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(token_types(tok, data["added_tokens"]))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.bos_id)
    writer.add_eos_token_id(tok.eos_id)
    writer.add_pad_token_id(tok.pad_id)
    # Prompts come from the chat template (or start with <|endoftext|>); nothing is prepended.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)


def write_gguf(model: SpongeBob, tok: SpongeTokenizer, path: str | Path, dtype: str = "f32",
               name: str = "SpongeBob") -> Path:
    """Write model + tokenizer as a GGUF file at path, weights in dtype (f32, f16 or q8_0)."""
    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(GGUF_DTYPES)}, got {dtype!r}")
    path = Path(path)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_file_type(_FILE_TYPES[dtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_hparams(writer, model)
    add_tokenizer(writer, tok)
    for tensor_name, weight in gguf_weights(model).items():
        data, qtype = encode_tensor(weight, dtype)
        writer.add_tensor(tensor_name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
