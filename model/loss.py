"""The network's training loss: next-token cross-entropy over the targets that are trained.

Two ways to compute the same number:

token_loss(logits, ...)     from logits already computed: what evaluation, distillation
                            (which needs the logits for its KL term) and the tests use.

linear_cross_entropy(h, W, ...)
                            from the last hidden states and the output head's weight, a chunk
                            of positions at a time, so the (positions x 6400) logits never exist
                            at once. With 84 x 512 positions they would be 1.1 GB in fp32, plus as
                            much again for their gradient. Each chunk's logits are turned into
                            the loss *and* its gradients right away (d loss / d logits =
                            softmax - one_hot), and only the small gradients of the hidden
                            states and of the head are kept for the backward pass. The sums are
                            exact; only the rounding differs from token_loss.

Both take per-token weights: the loss is sum(w * ce) over trained targets, divided by
sum(w) for reduction="mean" (the weighted mean), or left as the sum for "sum" (the
engine divides by the whole step's count itself).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # targets with this value get no loss (prompt tokens, padding)
CHUNK_POSITIONS = 4096  # eager: logits of at most this many positions exist at once (4096 x 6400 fp32 = 105 MB)
COMPILED_CHUNKS = 16    # compiled: always this many chunks (84 x 512 positions -> 2,688 each, 69 MB)


def _token_weights(targets: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    valid = (targets != IGNORE_INDEX).float()
    return valid if weight is None else weight.reshape(-1).float() * valid


def _reduce(total: torch.Tensor, w: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'sum', got '{reduction}'")
    return total / w.sum().clamp(min=1e-8)


def token_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
               reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy per position, ignoring IGNORE_INDEX targets.

    With `weight` (same shape as targets), the loss is the weighted mean
    sum(w * ce) / sum(w) over the positions that are not ignored, so a x10
    weight on a few tokens raises their share without inflating the loss
    scale. reduction="sum" returns the numerator alone, for callers that
    normalise over several micro-batches themselves.
    """
    ce = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                         ignore_index=IGNORE_INDEX, reduction="none")
    w = _token_weights(targets.reshape(-1), weight)
    return _reduce((ce * w).sum(), w, reduction)


def n_chunks(positions: int) -> int:
    """How many chunks the loss takes `positions` in. Eager: enough for CHUNK_POSITIONS each.
    Under torch.compile: always COMPILED_CHUNKS. A count read from the size would be a Python
    int that dynamo specialises on (it guards on the exact size to unroll the loop), so every
    new batch width -- common with --packing none|group -- would compile anew until dynamo's
    recompile limit, after which the step silently runs eager. A fixed count keeps the size
    symbolic: one graph serves every width."""
    if torch.compiler.is_compiling():
        return COMPILED_CHUNKS
    return max(1, -(-positions // CHUNK_POSITIONS))


class _LinearCrossEntropy(torch.autograd.Function):
    """sum_t w_t * CE(h_t @ W^T, y_t), with its gradients computed chunk by chunk in forward.
    The matmuls run in `dtype` (the autocast dtype, or fp32); the gradients come back in the
    inputs' own dtypes (the head's stays fp32, accumulated over the chunks in fp32)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, head: torch.Tensor, targets: torch.Tensor,  # type: ignore[override]
                w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        # Pad the positions to k equal chunks and view them as (k, size, dim): the padding has
        # weight 0, so it adds exactly 0 to the loss and to the head's gradient, and its rows of
        # the hidden gradient are cut off below. No slice bound depends on the size, so under
        # compile nothing is specialised (see n_chunks).
        n, k = hidden.size(0), n_chunks(hidden.size(0))
        size = (n + k - 1) // k
        pad = k * size - n
        hidden_k = F.pad(hidden, (0, 0, 0, pad)).view(k, size, hidden.size(1))
        targets_k = F.pad(targets.clamp(min=0), (0, pad)).view(k, size)
        w_k = F.pad(w, (0, pad)).view(k, size)
        head_c = head.to(dtype)
        grad_hidden = torch.empty_like(hidden_k)
        grad_head = torch.zeros(head.shape, dtype=torch.float32, device=head.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for i in range(k):
            h, y, wt = hidden_k[i].to(dtype), targets_k[i], w_k[i]
            logits = (h @ head_c.t()).float()
            log_z = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, y.unsqueeze(1)).squeeze(1)
            total += ((log_z - picked) * wt).sum()
            # d/dlogits of w * (log_z - logit_y) = w * (softmax - one_hot(y)), 0 where w is 0.
            grad = torch.softmax(logits, dim=-1)
            grad.scatter_add_(1, y.unsqueeze(1), torch.full_like(picked, -1.0).unsqueeze(1))
            grad = (grad * wt.unsqueeze(1)).to(dtype)
            grad_hidden[i] = (grad @ head_c).to(hidden.dtype)
            grad_head += (grad.t() @ h).float()
        ctx.save_for_backward(grad_hidden.view(k * size, -1).narrow(0, 0, n), grad_head.to(head.dtype))
        return total

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        grad_hidden, grad_head = ctx.saved_tensors
        return grad_hidden * grad_output, grad_head * grad_output, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor,
                         weight: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """token_loss(hidden @ head_weight.T, targets, weight) without ever holding all the logits.
    hidden: (..., dim) last hidden states (after the final norm); targets: (...) ids or IGNORE_INDEX."""
    flat_targets = targets.reshape(-1)
    w = _token_weights(flat_targets, weight)
    device = hidden.device.type
    # Under autocast the chunk matmuls run in the compute dtype, as the head's own matmul would.
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else head_weight.dtype
    with torch.autocast(device, enabled=False):
        total = _LinearCrossEntropy.apply(hidden.reshape(-1, hidden.size(-1)), head_weight, flat_targets, w, dtype)
    return _reduce(total, w, reduction)
