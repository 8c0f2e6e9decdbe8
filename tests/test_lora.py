"""LoRA: a fresh adapter changes nothing, only adapters train, merging is exact, the adapter
file is small and names its base, PEFT loads our export, and training resumes exactly."""
import json
import logging

import pytest
import torch

import export
from model import (ADAPTER_FORMAT, CheckpointError, SpongeBob, file_sha256, get_preset, load_model, read_checkpoint,
                   save_adapter, save_model, token_loss)
from model.lora import LORA_TARGETS, adapter_parameters, adapter_state, apply_lora, merge_lora, parse_targets, set_adapters
from tokenizer import load_tokenizer
from trainer import ConfigError, parse_config
from trainer.chat_data import ChatConfig

TOK_ID = {"vocab_size": 6400, "sha256": "x"}


def tiny(seed=0):
    torch.manual_seed(seed)
    return SpongeBob(get_preset("spongebob-tiny"))


def with_lora(model, rank=4, targets=LORA_TARGETS, seed=1):
    torch.manual_seed(seed)
    apply_lora(model, rank, 2.0 * rank, 0.0, targets)
    return model


def randomise_b(model):
    """A trained-looking adapter: B is no longer zero."""
    with torch.no_grad():
        for p in adapter_parameters(model):
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_a_fresh_adapter_leaves_the_output_exactly_equal():
    base = tiny()
    idx = torch.randint(0, 6400, (2, 16))
    expected = base(idx)
    adapted = with_lora(tiny())
    assert torch.equal(adapted(idx), expected)


def test_only_the_adapters_get_gradients():
    model = with_lora(tiny(), targets=("q_proj", "v_proj"))
    token_loss(model(torch.randint(0, 6400, (2, 16))), torch.randint(0, 6400, (2, 16))).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, _ in model.named_parameters() if n.endswith((".lora_A", ".lora_B"))}
    assert all(n.split(".")[-2] in ("q_proj", "v_proj") for n in with_grad)
    # Two layers x (q, v) x (A: 4 x 64, B: q 64 x 4, v 32 x 4): counted by hand.
    assert sum(p.numel() for p in adapter_parameters(model)) == 2 * (4 * 64 + 64 * 4 + 4 * 64 + 32 * 4)


def test_merged_equals_unmerged_and_switching_off_gives_the_base():
    model = randomise_b(with_lora(tiny()))
    idx = torch.randint(0, 6400, (2, 16))
    with torch.no_grad():
        unmerged = model(idx)
        set_adapters(model, False)
        assert torch.equal(model(idx), tiny()(idx))
        set_adapters(model, True)
        merged = merge_lora(model)(idx)
    assert (merged - unmerged).abs().max() < 1e-5
    assert not any(n.endswith(("lora_A", "lora_B")) for n in model.state_dict())


def test_bad_targets_are_one_line_with_the_valid_names():
    assert parse_targets("all") == LORA_TARGETS and parse_targets("q_proj, v_proj") == ("q_proj", "v_proj")
    with pytest.raises(ValueError, match="no such module 'qkv'; choose from q_proj, k_proj, v_proj, o_proj, "
                                         "gate_proj, up_proj, down_proj"):
        parse_targets("q_proj,qkv")
    with pytest.raises(ConfigError, match="--lora_target attn: no such module 'attn'"):
        parse_config(["--lora_rank", "8", "--lora_target", "attn"], "t", {}, config_cls=ChatConfig).check()


@pytest.fixture
def adapter_files(tmp_path):
    tok = load_tokenizer()
    save_model(tmp_path / "base.pth", tiny(), tok.identity(), {"stage": "sft"})
    model = randomise_b(with_lora(load_model(tmp_path / "base.pth")[0]))
    base = {"path": str(tmp_path / "base.pth"), "sha256": file_sha256(tmp_path / "base.pth")}
    save_adapter(tmp_path / "dpo.pth", model, tok.identity(), base, {"rank": 4, "alpha": 8.0,
                                                                      "targets": list(LORA_TARGETS)})
    return tmp_path, model, tok


def test_the_adapter_file_is_small_and_loads_merged(adapter_files, capsys):
    root, model, tok = adapter_files
    raw = read_checkpoint(root / "dpo.pth")
    assert raw["format"] == ADAPTER_FORMAT and set(raw["adapters"]) == set(adapter_state(model))
    ratio = (root / "dpo.pth").stat().st_size / (root / "base.pth").stat().st_size
    with capsys.disabled():
        print(f"\n  adapter file / full checkpoint (tiny preset, rank 4, all 7 targets): {ratio:.1%}")
    assert ratio < 0.3
    loaded, meta = load_model(root / "dpo.pth", tokenizer=tok)
    idx = torch.randint(0, 6400, (1, 12))
    with torch.no_grad():
        assert (loaded(idx) - model(idx)).abs().max() < 1e-5
    assert meta["adapter"]["rank"] == 4


def test_a_missing_or_different_base_is_one_line_naming_both_hashes(adapter_files):
    root, _, tok = adapter_files
    good = file_sha256(root / "base.pth")
    save_model(root / "base.pth", tiny(seed=5), tok.identity())  # another model at the same path
    with pytest.raises(CheckpointError, match=f"adapter trained on base {good[:12]}, but .*base.pth is "
                                              f"{file_sha256(root / 'base.pth')[:12]}"):
        load_model(root / "dpo.pth")
    (root / "base.pth").unlink()
    with pytest.raises(CheckpointError, match=r"its base checkpoint .*base.pth \(sha256 [0-9a-f]{12}\) is missing"):
        load_model(root / "dpo.pth")


def test_peft_loads_our_adapter_onto_our_hf_export(adapter_files, monkeypatch):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    root, model, tok = adapter_files
    monkeypatch.chdir(root)
    assert export.main(["--ckpt", str(root / "base.pth"), "--format", "hf", "--export_dir", "base-hf"]) == 0
    assert export.main(["--ckpt", str(root / "dpo.pth"), "--format", "peft", "--export_dir", "dpo-peft"]) == 0
    config = json.loads((root / "dpo-peft" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 4, 8.0)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    hf = transformers.AutoModelForCausalLM.from_pretrained(root / "base-hf")
    hf = peft.PeftModel.from_pretrained(hf, root / "dpo-peft").eval()
    ours = merge_lora(model).eval()
    prompt = tok.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True, tokenize=True)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        assert (hf(ids).logits - ours(ids)).abs().max() < 1e-4
        theirs = hf.generate(ids, max_new_tokens=12, do_sample=False)[0, len(prompt):].tolist()
    from inference.generate import generate
    from inference.sampling import SamplingConfig
    mine = list(generate(ours, prompt, SamplingConfig(max_new_tokens=12, temperature=0)))
    assert theirs[:len(mine)] == mine and len(mine) > 0


def lora_trainer(root, corpus, rank=0, world_size=1, dist=None, **overrides):
    from dataset.sft_dataset import SFTDataset
    from engine_run import Run
    values = dict(out_dir=str(root), preset="spongebob-tiny", epochs=2, batch_size=2, accumulation_steps=1,
                  learning_rate=1e-2, warmup_steps=1, log_interval=1, eval_interval=0, save_interval=3,
                  max_seq_len=256, device="cpu", dtype="float32", keep_last=5)
    values.update(overrides)
    cfg = parse_config([], "test", stage_defaults=values)
    model = with_lora(tiny(), rank=2, targets=("q_proj", "down_proj"))
    data = SFTDataset(corpus.train, 256, seed=1, rank=rank, world_size=world_size, packing="pack")
    base = {"path": str(root / "base.pth"), "sha256": "0" * 64, "rank": 2, "alpha": 4.0,
            "targets": ["q_proj", "down_proj"]}
    return Run(cfg, model, data, tokenizer_id=TOK_ID, dist=dist, adapter_base=base)


def test_lora_training_resumes_exactly_and_saves_only_adapters(tmp_path):
    from dataset.sft_tokenize import pretokenize_chat
    from test_packing import chat_rows_file, Crash, CrashAt
    corpus = pretokenize_chat([chat_rows_file(tmp_path)], load_tokenizer(), 256, val_fraction=0.0,
                              cache_root=tmp_path / "cache", show_progress=False)
    full = lora_trainer(tmp_path / "full", corpus)
    before = {k: v.clone() for k, v in full.engine.model.state_dict().items() if not k.endswith(("lora_A", "lora_B"))}
    full.fit()
    after = full.engine.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the base never moved
    assert read_checkpoint(tmp_path / "full" / "test.pth")["format"] == ADAPTER_FORMAT
    cut = lora_trainer(tmp_path / "cut", corpus)
    cut.data.train = CrashAt(cut.data.train, 5)  # dies inside step 5; the last state is step 3
    with pytest.raises(Crash):
        cut.fit()
    resumed = lora_trainer(tmp_path / "cut", corpus, resume=True)
    assert resumed.engine.step == 3
    resumed.fit()
    a, b = full.engine.model.state_dict(), resumed.engine.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
