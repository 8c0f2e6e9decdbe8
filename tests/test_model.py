"""The model: parameter count, RoPE convention, loss semantics, and parity with HF Llama."""
import math

import pytest
import torch

from model import IGNORE_INDEX, ModelConfig, SpongeBob, get_preset, token_loss
from model.hf import from_hf_state_dict, hf_config_dict, to_hf_state_dict
from model.model import apply_rope, rope_cos_sin


def expected_params(dim, n_layers, n_heads, n_kv, hidden, vocab, tied):
    """Parameter count written out from the architecture, independent of the code."""
    head = dim // n_heads
    attn = dim * dim + 2 * dim * n_kv * head + dim * dim        # q, k, v, o
    mlp = 3 * dim * hidden                                      # gate, up, down
    norms = 2 * dim
    embed_and_head = vocab * dim * (1 if tied else 2)
    return n_layers * (attn + mlp + norms) + embed_and_head + dim  # + final norm


def test_default_preset_is_the_29m_spongebob_shape():
    cfg = get_preset("spongebob-29m")
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads) == (512, 8, 8, 2)
    assert (cfg.vocab_size, cfg.rope_theta, cfg.norm_eps) == (6400, 1e6, 1e-5)
    assert 1350 <= cfg.hidden_dim <= 1450 and cfg.max_position_embeddings >= 2048
    n = SpongeBob(cfg).num_parameters()
    assert n == expected_params(512, 8, 8, 2, cfg.hidden_dim, 6400, tied=False)
    assert 28_500_000 <= n <= 29_500_000


def test_tied_preset_counts_the_shared_head_once():
    cfg = get_preset("spongebob-29m-tied")
    model = SpongeBob(cfg)
    assert model.lm_head.weight is model.embed.weight
    assert model.num_parameters() == expected_params(512, 8, 8, 2, cfg.hidden_dim, 6400, tied=True)


def test_unknown_config_key_suggests_the_closest():
    with pytest.raises(ValueError, match="did you mean 'n_kv_heads'"):
        ModelConfig.from_dict({"n_kv_head": 2})
    with pytest.raises(ValueError, match="did you mean 'spongebob-tiny'"):
        get_preset("spongebob-tiyn")


def test_rope_pairs_split_halves_like_hf():
    # head_dim 4: frequencies are [1, theta^-1/2]. In the HF convention
    # dimension 0 rotates with dimension 2 (split halves), not with 1.
    theta, pos = 10000.0, 3
    cos, sin = rope_cos_sin(head_dim=4, max_positions=8, theta=theta)
    x = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 4)
    y = apply_rope(x, cos[pos:pos + 1], sin[pos:pos + 1]).flatten()
    assert torch.allclose(y, torch.tensor([math.cos(3.0), 0.0, math.sin(3.0), 0.0]), atol=1e-6)
    x = torch.tensor([0.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 4)
    y = apply_rope(x, cos[pos:pos + 1], sin[pos:pos + 1]).flatten()
    slow = pos * theta ** -0.5
    assert torch.allclose(y, torch.tensor([0.0, math.cos(slow), 0.0, math.sin(slow)]), atol=1e-6)


def test_rope_keeps_norm_and_depends_only_on_relative_position():
    cos, sin = rope_cos_sin(head_dim=8, max_positions=32, theta=1e6)
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    rot = lambda t, p: apply_rope(t, cos[p:p + 1], sin[p:p + 1])
    assert torch.allclose(rot(q, 5).norm(), q.norm(), atol=1e-5)
    assert torch.allclose((rot(q, 7) * rot(k, 2)).sum(), (rot(q, 25) * rot(k, 20)).sum(), atol=1e-5)


def test_loss_ignores_masked_targets_and_weights_by_weighted_mean():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])
    targets = torch.tensor([[0, IGNORE_INDEX, 1]])
    ce = lambda row, t: -torch.log_softmax(logits[0, row], -1)[t]
    plain = (ce(0, 0) + ce(2, 1)) / 2
    assert torch.allclose(token_loss(logits, targets), plain)
    # Weight 10 on position 2: (1*ce0 + 10*ce2) / (1 + 10). The weight on the
    # ignored position 1 must have no effect at all.
    weight = torch.tensor([[1.0, 7.0, 10.0]])
    weighted = (ce(0, 0) + 10 * ce(2, 1)) / 11
    assert torch.allclose(token_loss(logits, targets, weight), weighted)
    assert torch.allclose(token_loss(logits, targets, weight, reduction="sum"), ce(0, 0) + 10 * ce(2, 1))


def test_the_model_returns_logits_near_uniform_at_init():
    model = SpongeBob(get_preset("spongebob-tiny"))
    idx = torch.randint(0, 6400, (2, 12))
    targets = idx.roll(-1, dims=1)
    targets[:, -1] = IGNORE_INDEX
    logits = model(idx)
    assert logits.shape == (2, 12, 6400) and model(idx, last_only=True).shape == (2, 1, 6400)
    assert abs(token_loss(logits, targets).item() - math.log(6400)) < 0.5  # near-uniform at init


def _hf_model(cfg: ModelConfig):
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.LlamaConfig(**hf_config_dict(cfg))
    return transformers.LlamaForCausalLM(hf_cfg).eval()


@pytest.mark.parametrize("preset,tied", [("spongebob-tiny", False), ("spongebob-tiny", True),
                                         ("spongebob-29m", False), ("spongebob-29m-tied", True)])
def test_logits_match_hf_llama(preset, tied):
    torch.manual_seed(0)
    # A wider init than training's 0.02 makes logits large, so any convention
    # mismatch (RoPE layout, norm placement, GQA grouping) shows up clearly.
    cfg = get_preset(preset).with_changes(tie_embeddings=tied, init_std=0.1)
    ours = SpongeBob(cfg).eval()
    hf = _hf_model(cfg)
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours.state_dict(), cfg), strict=False)
    assert not unexpected
    assert missing == (["lm_head.weight"] if tied else [])
    if tied:
        hf.tie_weights()
        assert torch.equal(hf.lm_head.weight, ours.embed.weight)
    idx = torch.randint(0, cfg.vocab_size, (2, 40))
    with torch.no_grad():
        diff = (ours(idx) - hf(idx).logits).abs().max().item()
    assert diff <= 1e-4, f"max |dlogits| = {diff}"


def test_hf_name_map_round_trips():
    cfg = get_preset("spongebob-tiny")
    sd = SpongeBob(cfg).state_dict()
    back = from_hf_state_dict(to_hf_state_dict(sd, cfg), cfg)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_hf_config_keeps_rope_theta_for_both_transformers_generations():
    cfg = hf_config_dict(get_preset("spongebob-29m"))
    assert cfg["rope_theta"] == 1e6 and cfg["rope_parameters"] == {"rope_theta": 1e6, "rope_type": "default"}
    assert cfg["num_key_value_heads"] == 2 and cfg["tie_word_embeddings"] is False
