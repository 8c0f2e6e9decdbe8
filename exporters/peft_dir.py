"""Write a LoRA adapter checkpoint as a Hugging Face PEFT adapter directory.

    adapter_config.json          peft_type LORA, r, lora_alpha, target_modules, base_model_name_or_path
    adapter_model.safetensors    base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight (r x in)
                                 and ...lora_B.weight (out x r), for every adapted layer

PEFT loads it onto the Hugging Face export of the base (export.py --format hf of the
checkpoint the adapter was trained on): PeftModel.from_pretrained(base, this_dir).
Our A and B are PEFT's lora_A and lora_B unchanged, and both scale by alpha / r.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from model import ModelConfig
from model.hf import hf_name_map

from .hf_dir import write_safetensors

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def peft_names(adapters: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our "layers.0.attn.q_proj.lora_A" -> PEFT's "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"."""
    names = hf_name_map(config)
    out = {}
    for name, tensor in adapters.items():
        layer, part = name.rsplit(".", 1)  # "layers.0.attn.q_proj", "lora_A"
        hf_layer = names[f"{layer}.weight"].removesuffix(".weight")
        out[f"base_model.model.{hf_layer}.{part}.weight"] = tensor.detach().float().contiguous()
    return out


def write_peft_export(adapters: dict[str, torch.Tensor], lora: dict, config: ModelConfig, base_hf_dir: str,
                      out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(peft_names(adapters, config), out / ADAPTER_WEIGHTS)
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora["rank"], "lora_alpha": lora["alpha"],
        "target_modules": list(lora["targets"]), "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "use_rslora": False, "use_dora": False,
        "modules_to_save": None, "base_model_name_or_path": base_hf_dir,
    }
    (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
    return out
