"""(Slow: about 30 s of compiling on 2 CPU cores; python -m pytest -m slow.)
torch.compile sees one graph for every batch width: with --packing none or group each step can have
a new width, and a graph per width would hit dynamo's recompile limit (8) and silently fall back to
eager. The first width compiles static, the second marks the size dynamic (dynamo's automatic dynamic
shapes), and that second graph must serve all the others, backward included."""
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from model import SpongeBob, get_preset, token_loss


@pytest.mark.slow
def test_six_widths_compile_at_most_twice():
    torch.manual_seed(0)
    model = SpongeBob(get_preset("spongebob-tiny"))
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="aot_eager", dynamic=None)
    for width in (24, 40, 56, 72, 100, 130):
        idx = torch.randint(0, 6400, (4, width))
        targets = torch.randint(0, 6400, (4, width))
        got = token_loss(compiled(idx), targets, reduction="sum")
        want = token_loss(model(idx), targets, reduction="sum")
        assert torch.allclose(got, want, rtol=1e-5), width
        got.backward()  # the backward compiles too (aot_eager traces it)
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    torch._dynamo.reset()
