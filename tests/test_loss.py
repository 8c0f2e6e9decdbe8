"""The chunked loss (model/loss.py linear_cross_entropy) is the plain cross-entropy: same value
and same gradients, with weights, ignored targets and any chunking, and through the model."""
import pytest
import torch

import model.loss as loss_module
from model import IGNORE_INDEX, SpongeBob, get_preset, linear_cross_entropy, token_loss


def case(seed=0, n=37, dim=16, vocab=50):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, dim, generator=g, dtype=torch.float64, requires_grad=True)
    head = torch.randn(vocab, dim, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, vocab, (n,), generator=g)
    targets[::5] = IGNORE_INDEX
    weight = torch.rand(n, generator=g, dtype=torch.float64) * 3
    return hidden, head, targets, weight


@pytest.mark.parametrize("chunk", [1, 7, 37, 4096])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_value_and_gradients_equal_the_plain_cross_entropy(monkeypatch, chunk, reduction):
    monkeypatch.setattr(loss_module, "CHUNK_POSITIONS", chunk)
    hidden, head, targets, weight = case()
    ref = token_loss(hidden @ head.t(), targets, weight, reduction)
    ref_grads = torch.autograd.grad(ref * 1.7, (hidden, head))
    got = linear_cross_entropy(hidden, head, targets, weight, reduction)
    got_grads = torch.autograd.grad(got * 1.7, (hidden, head))  # the upstream gradient scales both
    # token_loss works in fp32 whatever its input, so fp32 rounding is the bar.
    assert torch.allclose(got.double(), ref.double(), rtol=1e-6)
    for a, b in zip(got_grads, ref_grads):
        assert torch.allclose(a.double(), b.double(), atol=1e-6)


def test_a_hand_computed_value():
    # Two positions, vocab 2, unit head: logits are the hidden states themselves.
    hidden = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    head = torch.eye(2)
    targets = torch.tensor([1, 0])
    weight = torch.tensor([1.0, 3.0])
    # CE_0 = log(e^0 + e^0) - 0 = log 2; CE_1 = log(e^2 + 1) - 2.
    expected = 1.0 * torch.log(torch.tensor(2.0)) + 3.0 * (torch.log(torch.exp(torch.tensor(2.0)) + 1) - 2)
    assert torch.isclose(linear_cross_entropy(hidden, head, targets, weight, "sum"), expected)


def test_the_model_loss_path_matches_the_logits_path():
    torch.manual_seed(0)
    model = SpongeBob(get_preset("spongebob-tiny"))
    idx = torch.randint(0, 6400, (2, 24))
    targets = torch.randint(0, 6400, (2, 24))
    targets[0, :5] = IGNORE_INDEX
    full = model(idx, targets=targets, reduction="sum")
    grads_full = torch.autograd.grad(full.loss, list(model.parameters()))
    fused = model(idx, targets=targets, reduction="sum", return_logits=False)
    grads_fused = torch.autograd.grad(fused.loss, list(model.parameters()))
    assert fused.logits is None
    assert torch.allclose(fused.loss, full.loss, rtol=1e-5)
    for a, b in zip(grads_fused, grads_full):
        assert torch.allclose(a, b, atol=1e-5)
