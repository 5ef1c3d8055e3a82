"""The decode loop as small free functions and a generator.

Shapes: ``ids`` are python lists of token ids; logits returned are fp32 ``[vocab]`` for
the last fed position only (``logits_to_keep=1``: never full-vocabulary logits for a
whole prompt). The KV cache is a transformers ``Cache`` owned by the caller.

Later work plugs in here: speculative drafting replaces ``decode_one_token`` with a
verify step; constraints mask the logits inside ``sample``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from .constraints import Constraint, ConstraintStats, new_bitmask, restrict

PREFILL_CHUNK = 512
"""Tokens per forward when encoding a prompt; bounds memory and lets work be cancelled."""


@torch.inference_mode()
def forward(model: Any, ids: list[int], cache: Any, start: int) -> torch.Tensor:
    """Feed ``ids`` at positions ``start..`` on top of ``cache``; last-position logits."""
    device = model.device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)  # [1, S]
    positions = torch.arange(start, start + len(ids), device=device).unsqueeze(0)  # [1, S]
    out = model(
        input_ids=input_ids,
        past_key_values=cache,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[0, -1].float()  # [vocab]


def prefill(
    model: Any,
    ids: list[int],
    cache: Any,
    start: int,
    check: Callable[[], None] | None = None,
    chunk: int = PREFILL_CHUNK,
) -> torch.Tensor:
    """Encode ``ids`` in chunks; ``check`` runs between chunks (it may raise to cancel)."""
    if not ids:
        raise ValueError("prefill needs at least one token")
    logits = None
    for i in range(0, len(ids), chunk):
        if check is not None:
            check()
        logits = forward(model, ids[i : i + chunk], cache, start + i)
    assert logits is not None
    return logits


def sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    """Greedy at temperature 0, else a draw from ``softmax(logits / temperature)``."""
    if temperature <= 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def margin(logits: torch.Tensor) -> float:
    """How sure the greedy pick is: the top logit minus the runner-up's."""
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])


def decode_one_token(model: Any, token: int, cache: Any, position: int) -> torch.Tensor:
    """Feed one token; logits for the next."""
    return forward(model, [token], cache, position)


def generate(
    model: Any,
    cache: Any,
    logits: torch.Tensor,
    position: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    stop_ids: frozenset[int] = frozenset(),
    generator: torch.Generator | None = None,
    first: int | None = None,
    margins: list[float] | None = None,
    constraint: Constraint | None = None,
    stats: ConstraintStats | None = None,
) -> Iterator[int]:
    """Yield generated tokens one by one, starting from the prompt's last logits.

    ``position`` is the number of tokens already in ``cache``. A yielded token is fed to
    the model only when the caller asks for the next one, so stopping the generator
    leaves the cache holding the prompt plus every token except the last yielded one.
    Stop tokens are yielded (so the caller knows why it ended) and end the loop.
    ``first`` forces the first token (alternative suggestions branch on it).
    ``margins`` receives :func:`margin` of the logits each token was picked from.
    ``constraint``: restricts each pick (:func:`~completion.constraints.restrict`), and
    accepts each token (a forced ``first`` too); ``stats`` gets the time it took.
    """
    mask = new_bitmask(1, logits.shape[-1]) if constraint is not None else None
    for step in range(max_new_tokens):
        greedy, want = temperature <= 0, margins is not None
        logits = restrict(logits, constraint, mask, greedy=greedy, margin=want, stats=stats)
        token = first if step == 0 and first is not None else sample(logits, temperature, generator)
        if margins is not None:
            margins.append(margin(logits))
        if constraint is not None:
            constraint.accept(token)
        yield token
        if token in stop_ids or step == max_new_tokens - 1:
            return
        logits = decode_one_token(model, token, cache, position)
        position += 1
