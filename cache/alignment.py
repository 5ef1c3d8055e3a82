"""Token-level edits: how the cached prompt's ids map onto the new prompt's ids.

The new prompt is always tokenized in full (a few milliseconds for thousands of tokens
with a fast tokenizer), so the cached ids end up equal to a fresh tokenization by
construction: tokenization is not stable at arbitrary cut points, and mapping character
offsets onto tokens directly would drift. The diff finds what can be kept:

1. the common prefix (kept in place),
2. the common suffix (kept, shifted),
3. inside the changed middle, long identical runs (multi-place edits, a moved cursor
   window), found with difflib on the ids.

Everything else in the new prompt is encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher

MIN_KEEP = 8
"""Identical runs shorter than this inside the changed middle are re-encoded instead:
short runs are often chance matches of common tokens (newlines, indentation)."""


@dataclass(frozen=True)
class Segment:
    """A run of the new prompt: kept from the old cache, or to be encoded."""

    keep: bool
    new_start: int
    new_end: int
    old_start: int = -1
    """Where a kept run sits in the old prompt (``-1`` for encoded runs)."""

    @property
    def delta(self) -> int:
        """Position shift of a kept run (new minus old)."""
        return self.new_start - self.old_start if self.keep else 0

    def __len__(self) -> int:
        return self.new_end - self.new_start


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    while n < limit and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return n


def diff_ids(old: list[int], new: list[int], min_keep: int = MIN_KEEP) -> list[Segment]:
    """Cover ``new`` with kept runs of ``old`` and runs to encode, in order."""
    if not new:
        return []
    p = common_prefix(old, new)
    s = _common_suffix(old, new, min(len(old), len(new)) - p)
    segments: list[Segment] = []
    if p:
        segments.append(Segment(True, 0, p, 0))
    old_mid, new_mid = old[p : len(old) - s], new[p : len(new) - s]
    cursor = p  # next new index to cover
    if old_mid and len(new_mid) >= min_keep:
        matcher = SequenceMatcher(None, old_mid, new_mid, autojunk=False)
        for block in matcher.get_matching_blocks():
            if block.size < min_keep:
                continue
            start = p + block.b
            if start > cursor:
                segments.append(Segment(False, cursor, start))
            segments.append(Segment(True, start, start + block.size, p + block.a))
            cursor = start + block.size
    end_mid = len(new) - s
    if end_mid > cursor:
        segments.append(Segment(False, cursor, end_mid))
    if s:
        segments.append(Segment(True, end_mid, len(new), len(old) - s))
    return merge(segments)


def merge(segments: list[Segment]) -> list[Segment]:
    """Join neighbouring runs that can be handled as one."""
    out: list[Segment] = []
    for seg in segments:
        if not len(seg):
            continue
        if out:
            last = out[-1]
            if not seg.keep and not last.keep:
                out[-1] = Segment(False, last.new_start, seg.new_end)
                continue
            if seg.keep and last.keep and seg.delta == last.delta:
                out[-1] = Segment(True, last.new_start, seg.new_end, last.old_start)
                continue
        out.append(seg)
    return out


def force_encode_tail(segments: list[Segment], start: int, total: int) -> list[Segment]:
    """Cover ``[0, total)``: keep what ``segments`` keep before ``start``, encode the rest."""
    out: list[Segment] = []
    start = max(0, min(start, total))
    for seg in segments:
        if seg.new_end <= start:
            out.append(seg)
        elif seg.new_start < start:
            out.append(Segment(seg.keep, seg.new_start, start, seg.old_start))
    covered = out[-1].new_end if out else 0
    if covered < total:
        out.append(Segment(False, covered, total))
    return merge(out)


def widen_edits(segments: list[Segment], n: int) -> list[Segment]:
    """Re-encode the first ``n`` tokens of every kept run that follows an edit.

    The leading run (nothing before it changed, or only tokens before the window were
    dropped) is left alone.
    """
    out: list[Segment] = []
    for seg in segments:
        if seg.keep and seg.new_start > 0:
            cut = min(n, len(seg))
            out.append(Segment(False, seg.new_start, seg.new_start + cut))
            if cut < len(seg):
                out.append(Segment(True, seg.new_start + cut, seg.new_end, seg.old_start + cut))
        else:
            out.append(seg)
    return merge(out)


def encoded_tokens(segments: list[Segment]) -> int:
    """How many tokens the segments encode."""
    return sum(len(s) for s in segments if not s.keep)
