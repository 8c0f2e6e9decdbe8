"""(Slow: about 30 s of compiling on 2 CPU cores; python -m pytest -m slow.)
torch.compile sees one graph for every batch width (model/loss.py n_chunks): with --packing none or
group each step can have a new width, and a graph per width would hit dynamo's recompile limit (8)
and silently fall back to eager. The first width compiles static, the second marks the size dynamic
(dynamo's automatic dynamic shapes), and that second graph must serve all the others."""
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import model.loss as loss_module
from model import SpongeBob, get_preset


@pytest.mark.slow
def test_six_widths_compile_at_most_twice_with_the_eager_loss(monkeypatch):
    # Chunks of 64 positions: eagerly the widths below take 2 to 9 chunks, which is what used
    # to specialise the graph (each chunk count its own unrolled loop).
    monkeypatch.setattr(loss_module, "CHUNK_POSITIONS", 64)
    torch.manual_seed(0)
    model = SpongeBob(get_preset("spongebob-tiny"))
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="aot_eager", dynamic=None)
    for width in (24, 40, 56, 72, 100, 130):
        idx = torch.randint(0, 6400, (4, width))
        targets = torch.randint(0, 6400, (4, width))
        got = compiled(idx, targets=targets, reduction="sum", return_logits=False).loss
        want = model(idx, targets=targets, reduction="sum", return_logits=False).loss
        assert torch.allclose(got, want, rtol=1e-5), width
        got.backward()  # the backward compiles too (aot_eager traces it)
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    torch._dynamo.reset()
