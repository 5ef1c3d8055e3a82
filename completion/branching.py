"""Several drafts decoded as one batch on a shared prompt cache (the panel's drafts).

A draft is a row. Every row starts where the prompt ends, so all rows always sit at the
same position: one forward of ``r`` rows, one token each, advances them all, and reads
the weights once for all of them. A row **forks** where the model hesitates: when the
second likeliest token of a row is likely enough (:data:`FORK_FLOOR`) and there is room
for another draft, a new row takes that token and the first row's history, so drafts
branch at their first uncertain positions (the likeliest alternatives where the greedy
margin is small). Row 0 is the greedy draft.

The prompt's keys and values are read from the document's cache in place, never copied
and never written: each row keeps only its own keys and values since the prompt
(:class:`RowCache`), and the attention reads the prompt's once for all rows
(:func:`shared_prefix_attention`). Cancelling between steps leaves the document's cache
as it was.

The forward reuses :mod:`completion.lean_forward`'s layer halves, so it takes the models
that one does (Llama, Qwen2; :func:`supported`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from . import lean_forward
from .constraints import Constraint, ConstraintStats, new_bitmask, restrict
from .fastpath import packed_gqa_attention

FORK_FLOOR = 0.05
"""A row forks on its second likeliest token when that has at least this probability."""
OVERRUN = 0.5
"""Once the greedy row has ended after ``n`` tokens, the other rows end by ``n`` plus this
share of it (at least :data:`MIN_OVERRUN` more): the batch runs as long as its longest
row, and a draft much longer than the greedy one is rarely the one wanted."""
MIN_OVERRUN = 4


def supported(model: Any) -> bool:
    """Whether :func:`decode_drafts` can batch this model's drafts."""
    return lean_forward.installed(model)


##### The batched forward #####


@dataclass
class RowCache:
    """Each row's own keys and values since the prompt, per layer: ``[r, Hkv, t, D]``."""

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)

    def append(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Add one position's keys and values ``[r, Hkv, 1, D]`` to every row."""
        if layer == len(self.keys):
            self.keys.append(key)
            self.values.append(value)
            return
        self.keys[layer] = torch.cat([self.keys[layer], key], dim=2)
        self.values[layer] = torch.cat([self.values[layer], value], dim=2)

    def select(self, rows: Sequence[int]) -> None:
        """Keep these rows, in this order (a row named twice is forked)."""
        if not self.keys or list(rows) == list(range(self.keys[0].shape[0])):
            return  # nothing held yet, or the same rows: nothing to copy
        index = torch.tensor(list(rows), dtype=torch.long)
        if self.keys:
            index = index.to(self.keys[0].device)
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]


def shared_prefix_attention(
    query: torch.Tensor,
    prefix_keys: torch.Tensor,
    prefix_values: torch.Tensor,
    own_keys: torch.Tensor,
    own_values: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """Attention of one query position per row over the shared prefix and its own keys.

    ``query`` ``[r, H, 1, D]``; ``prefix_*`` ``[1, Hkv, P, D]`` (read once for all rows);
    ``own_*`` ``[r, Hkv, t, D]`` (the row's positions after the prefix, the current one
    included). One softmax over both parts. Returns ``[r, 1, H, D]``.
    """
    rows, heads, _, dim = query.shape
    kv_heads, prefix = prefix_keys.shape[1], prefix_keys.shape[2]
    groups = heads // kv_heads
    q = query.reshape(rows, kv_heads, groups, dim)
    # Rows and heads sharing a key/value head become rows of it: [Hkv, r*G, D].
    folded = q.permute(1, 0, 2, 3).reshape(kv_heads, rows * groups, dim)
    on_prefix = torch.matmul(folded, prefix_keys[0].transpose(-1, -2)) * scaling
    on_own = torch.matmul(q, own_keys.transpose(-1, -2)) * scaling  # [r, Hkv, G, t]
    own = own_keys.shape[2]
    on_own = on_own.permute(1, 0, 2, 3).reshape(kv_heads, rows * groups, own)
    weights = torch.softmax(torch.cat([on_prefix, on_own], dim=-1), dim=-1)
    out = torch.matmul(weights[..., :prefix], prefix_values[0])  # [Hkv, r*G, D]
    own_weights = weights[..., prefix:].reshape(kv_heads, rows, groups, own)
    out_own = torch.matmul(own_weights.permute(1, 0, 2, 3), own_values)  # [r, Hkv, G, D]
    out = out.reshape(kv_heads, rows, groups, dim).permute(1, 0, 2, 3) + out_own
    return out.reshape(rows, 1, heads, dim)


@torch.inference_mode()
def rows_forward(
    model: Any,
    tokens: Sequence[int],
    position: int,
    prefix: Any,
    prompt: int,
    rows: RowCache,
    greedy_in_cache: bool = False,
) -> torch.Tensor:
    """Feed one token per row at ``position``; each row's next-token logits ``[r, V]``.

    ``prefix``: the document's cache; its first ``prompt`` positions are the prompt,
    which every row reads. ``greedy_in_cache``: row 0 is the greedy row kept in the
    document's cache itself: its keys and values are appended there and it attends as a
    one-token step of plain decoding does (the same call on the same keys), so on a
    row-exact model (:func:`completion.fastpath.row_exact`) its logits are plain
    decoding's bit for bit. Otherwise the cache is read and never written.
    """
    inner, count = model.model, len(tokens)
    ids = torch.tensor(list(tokens), dtype=torch.long, device=model.device)[:, None]
    hidden = F.embedding(ids, inner.embed_tokens.weight)  # [r, 1, d]
    positions = torch.full((count, 1), position, dtype=torch.long, device=model.device)
    rotary = inner.rotary_emb(hidden, positions)
    first = 1 if greedy_in_cache else 0  # the rows attending over the shared prefix
    for index, layer in enumerate(inner.layers):
        attn = layer.self_attn
        query, key, value = lean_forward.project(layer, hidden, rotary)
        rows.append(index, key, value)
        parts = []
        if greedy_in_cache:
            keys, values = prefix.update(key[:1], value[:1], index)
            greedy, _ = packed_gqa_attention(
                attn, query[:1], keys, values, None, scaling=attn.scaling
            )
            parts.append(greedy)
        if count > first:
            cached = prefix.layers[index]
            parts.append(
                shared_prefix_attention(
                    query[first:],
                    cached.keys[:, :, :prompt],
                    cached.values[:, :, :prompt],
                    rows.keys[index][first:],
                    rows.values[index][first:],
                    attn.scaling,
                )
            )
        attended = parts[0] if len(parts) == 1 else torch.cat(parts)
        hidden = lean_forward.finish(layer, hidden, attended)
    return lean_forward.head(model, hidden)[:, -1].float()


##### The decode loop #####


@dataclass
class Draft:
    """One row's tokens and their summed log-probability."""

    ids: list[int]
    logprob: float = 0.0
    stopped: bool = False
    """It ended on a stop token or the caller's stop rule (else it ran out of tokens)."""
    branched_at: int = -1
    """The step whose second likeliest token started this row (-1: the greedy row)."""

    @property
    def mean_logprob(self) -> float:
        """Log-probability per token (0 for an empty draft)."""
        return self.logprob / len(self.ids) if self.ids else 0.0


class Pick(NamedTuple):
    """A token chosen for a row: which row it continues, the token, its log-probability."""

    row: int
    token: int
    logprob: float
    fork: bool = False
    """A new row (the second likeliest token), not the row's own continuation."""


def picks(logprobs: torch.Tensor, room: int, floor: float = FORK_FLOOR) -> list[Pick]:
    """Each row's likeliest token, then up to ``room`` forks on second likeliest tokens.

    ``logprobs`` ``[r, V]``. Forks go to the likeliest second choices of at least
    ``floor`` probability (ties: the earlier row). Returned rows in row order, a fork
    right after the row it comes from.
    """
    # The likeliest by argmax, as plain decoding picks (topk breaks ties its own way).
    best = logprobs.argmax(dim=-1, keepdim=True)
    others = logprobs.scatter(-1, best, float("-inf"))
    second = others.argmax(dim=-1, keepdim=True)
    indices = torch.cat([best, second], dim=-1).tolist()
    values = torch.cat([logprobs.gather(-1, best), others.gather(-1, second)], dim=-1).tolist()
    threshold = math.log(floor)
    seconds = sorted(
        (r for r in range(len(values)) if values[r][1] >= threshold),
        key=lambda r: (-values[r][1], r),
    )
    forked = set(seconds[: max(0, room)])
    out: list[Pick] = []
    for r, (vals, toks) in enumerate(zip(values, indices, strict=True)):
        out.append(Pick(r, toks[0], vals[0]))
        if r in forked:
            out.append(Pick(r, toks[1], vals[1], fork=True))
    return out


class Batch(NamedTuple):
    """What :func:`decode_drafts` decoded."""

    drafts: list[Draft]
    """Greedy first, then in the order they were forked."""
    greedy_logits: list[torch.Tensor]
    """With ``greedy_in_place``: the greedy row's logits after each token it fed (the
    first ``len(greedy_logits)`` of its ids, now in the document's cache); else empty."""


@dataclass
class _Row:
    """A live draft: its fork order, its tokens, its own constraint state."""

    rank: int
    draft: Draft
    constraint: Constraint | None


def decode_drafts(
    model: Any,
    prefix: Any,
    first_logits: torch.Tensor,
    count: int,
    max_tokens: int,
    stop_ids: Iterable[int],
    stops: Callable[[list[int]], bool] = lambda ids: False,
    check: Callable[[], None] = lambda: None,
    on_done: Callable[[Draft], None] = lambda draft: None,
    constraint: Constraint | None = None,
    stats: ConstraintStats | None = None,
    greedy_in_place: bool = False,
) -> Batch:
    """Up to ``count`` drafts after the prompt, decoded as one batch; row 0 greedy.

    ``prefix``: the document's cache holding exactly the prompt; ``first_logits`` its
    last position's logits. A draft ends on a stop token (not kept), when ``stops``
    says so for its tokens (kept), or after ``max_tokens``; once the greedy row has
    ended, the others end by :data:`OVERRUN` more than it took. ``check`` runs before
    every forward and may raise to cancel. ``on_done`` gets each draft as it ends.
    ``constraint`` (fresh) restricts every row's picks, each row with its own fork of
    it (:func:`restrict`; ``stats`` gets its time). The cache is only read, unless
    ``greedy_in_place``: the greedy row then decodes in it as plain decoding does
    (:func:`rows_forward`), and its fed tokens stay after the prompt for the caller to
    use or crop (also when cancelled). Returns the drafts in the order they were forked
    (greedy first), and the greedy row's logits after each fed token.
    """
    start, stop_set = prefix.get_seq_length(), set(stop_ids)
    cache = RowCache()
    live: list[_Row] = [_Row(0, Draft([]), constraint)]
    done: list[_Row] = []
    logits, forks = first_logits.float()[None], 0
    greedy_logits: list[torch.Tensor] = []
    limit = max_tokens  # until the greedy row ends (:data:`OVERRUN`)
    for step in range(max(1, max_tokens)):
        logprobs = torch.log_softmax(_restricted(logits, live, stats), dim=-1)
        chosen = picks(logprobs, count - len(live) - len(done))
        # A fork's constraint is copied before its parent's continuation accepts a token.
        states = [_child_constraint(live[p.row].constraint, p.fork) for p in chosen]
        following: list[_Row] = []
        parents: list[int] = []
        for pick, state in zip(chosen, states, strict=True):
            parent = live[pick.row]
            forks += pick.fork
            row = _Row(forks if pick.fork else parent.rank, parent.draft, state)
            branched = step if pick.fork else parent.draft.branched_at
            if pick.token in stop_set:
                row.draft = Draft(parent.draft.ids, parent.draft.logprob, True, branched)
            else:
                if state is not None:
                    state.accept(pick.token)
                ids = [*parent.draft.ids, pick.token]
                logprob = parent.draft.logprob + pick.logprob
                row.draft = Draft(ids, logprob, stops(ids), branched)
                if not row.draft.stopped and len(ids) < min(max_tokens, limit):
                    following.append(row)
                    parents.append(pick.row)
                    continue
            done.append(row)
            on_done(row.draft)
            if row.rank == 0:
                limit = len(row.draft.ids) + max(MIN_OVERRUN, int(OVERRUN * len(row.draft.ids)))
        if not following:
            break
        check()
        cache.select(parents)
        tokens = [row.draft.ids[-1] for row in following]
        in_cache = greedy_in_place and following[0].rank == 0
        logits = rows_forward(model, tokens, start + step, prefix, start, cache, in_cache)
        if in_cache:
            greedy_logits.append(logits[0])
        live = following
    drafts = [row.draft for row in sorted(done, key=lambda row: row.rank)]
    return Batch(drafts, greedy_logits)


def _child_constraint(parent: Constraint | None, fork: bool) -> Constraint | None:
    """A new row's constraint state: a copy of its parent's; a continuation's: the same."""
    return parent.fork() if fork and parent is not None else parent


def _restricted(
    logits: torch.Tensor, live: list[_Row], stats: ConstraintStats | None
) -> torch.Tensor:
    """Each row's logits under its constraint (its top two picks allowed ones)."""
    if all(row.constraint is None for row in live):
        return logits
    out = logits.clone()
    for i, row in enumerate(live):
        mask = new_bitmask(1, logits.shape[-1])
        out[i] = restrict(logits[i], row.constraint, mask, greedy=True, margin=True, stats=stats)
    return out
