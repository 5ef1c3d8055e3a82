"""Prompt layouts: fill-in-the-middle templates per model family, and token budgets.

The family is detected from the tokenizer's vocabulary, never from the model's name:
a fine-tune keeps its tokens. Models without FIM tokens (SmolLM2) get the prefix only.

Document text is data, not control tokens: it is tokenized with
``split_special_tokens=True`` and the template's special tokens are added as ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class Tokenizer(Protocol):
    """The part of a transformers tokenizer the prompt builder uses."""

    def __call__(self, text: str, **kwargs: Any) -> Any:
        """Tokenize ``text``; the result has ``input_ids``."""

    def get_vocab(self) -> dict[str, int]:
        """Token string -> id."""


@dataclass(frozen=True)
class FimTemplate:
    """Special tokens of one FIM family, in PSM order (prefix, suffix, middle)."""

    name: str
    prefix: str
    suffix: str
    middle: str
    stops: tuple[str, ...]
    bos: bool = False
    """Whether the family expects the tokenizer's BOS token first."""


FAMILIES: tuple[FimTemplate, ...] = (
    FimTemplate(
        "qwen",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        (
            "<|endoftext|>",
            "<|fim_pad|>",
            "<|file_sep|>",
            "<|repo_name|>",
            "<|im_end|>",
            "<|im_start|>",
            "<|fim_prefix|>",
            "<|fim_suffix|>",
            "<|fim_middle|>",
        ),
    ),
    FimTemplate(
        "starcoder",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        (
            "<|endoftext|>",
            "<file_sep>",
            "<fim_prefix>",
            "<fim_suffix>",
            "<fim_middle>",
            "<fim_pad>",
        ),
    ),
    FimTemplate(
        "deepseek",
        "<｜fim▁begin｜>",
        "<｜fim▁hole｜>",
        "<｜fim▁end｜>",
        ("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
        bos=True,
    ),
    FimTemplate(
        "codellama",
        "▁<PRE>",
        "▁<SUF>",
        "▁<MID>",
        ("▁<EOT>", "</s>"),
        bos=True,
    ),
)

# Tokens that end a prefix-only completion for models without FIM.
GENERIC_STOPS = ("<|endoftext|>", "<|im_end|>", "<|im_start|>", "<file_sep>", "<|file_sep|>")
REPO_TOKENS = ("<|repo_name|>", "<|file_sep|>")
"""Qwen2.5-Coder's repository-level tokens (a repository name, then each file's path)."""
# Tokens that begin a text, for a prefix-only prompt with no text before the cursor.
GENERIC_STARTS = ("<|endoftext|>", "<s>", "<|begin_of_text|>")


@dataclass(frozen=True)
class PromptFormat:
    """How prompts are laid out for one model, with the ids resolved."""

    template: FimTemplate | None
    """None: prefix-only prompts."""
    special_ids: tuple[int, ...] = ()
    """Ids of the template's prefix, suffix and middle tokens (FIM only)."""
    bos_id: int | None = None
    stop_ids: frozenset[int] = field(default_factory=frozenset)
    start_id: int | None = None
    """Prefix-only: the token a prompt starts from when no text fits before the cursor
    (an empty file, a first half-typed word, a cursor line longer than the budget): the
    document separator the model was trained on, else its BOS token. None: such a
    request gets no suggestion."""
    repo_ids: tuple[int, int] | None = None
    """Ids of ``<|repo_name|>`` and ``<|file_sep|>`` (Qwen2.5-Coder's repository
    format) when the vocabulary has both: other files go into the prompt that way."""

    @property
    def fim(self) -> bool:
        """Whether prompts are fill-in-the-middle."""
        return self.template is not None

    @property
    def name(self) -> str:
        """Family name, or "prefix-only"."""
        return self.template.name if self.template else "prefix-only"


def _lookup(vocab: dict[str, int], token: str) -> int | None:
    if token in vocab:
        return vocab[token]
    if token.startswith("▁") and token[1:] in vocab:
        return vocab[token[1:]]
    return None


def detect_format(
    tokenizer: Tokenizer, eos_ids: list[int] | None = None, *, fim: bool | None = None
) -> PromptFormat:
    """Detect the FIM family from the tokenizer vocabulary.

    ``fim=False`` forces prefix-only prompts; ``fim=True`` fails if no family matches.
    """
    vocab = tokenizer.get_vocab()
    extra = set(eos_ids or [])
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        extra.add(eos)
    if fim is not False:
        for fam in FAMILIES:
            ids = [_lookup(vocab, t) for t in (fam.prefix, fam.suffix, fam.middle)]
            if all(i is not None for i in ids):
                stops = {i for t in fam.stops if (i := _lookup(vocab, t)) is not None}
                bos = getattr(tokenizer, "bos_token_id", None) if fam.bos else None
                repo = [_lookup(vocab, t) for t in REPO_TOKENS]
                return PromptFormat(
                    template=fam,
                    special_ids=tuple(i for i in ids if i is not None),
                    bos_id=bos if isinstance(bos, int) else None,
                    stop_ids=frozenset(stops | extra),
                    repo_ids=(repo[0], repo[1]) if None not in repo else None,  # type: ignore[arg-type]
                )
        if fim:
            raise ValueError("the tokenizer has no known fill-in-the-middle tokens")
    stops = {i for t in GENERIC_STOPS if (i := _lookup(vocab, t)) is not None}
    starts = [i for t in GENERIC_STARTS if (i := _lookup(vocab, t)) is not None]
    bos = getattr(tokenizer, "bos_token_id", None)
    start = starts[0] if starts else (bos if isinstance(bos, int) else None)
    return PromptFormat(template=None, stop_ids=frozenset(stops | extra), start_id=start)


##### Token budgets #####


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of document text, special-token look-alikes kept as plain text."""
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


CHARS_PER_TOKEN = 8
"""Generous characters-per-token bound (source code averages 3-4): a character window cut
before tokenizing then never holds fewer tokens than the budget."""


SLIDE = 0.25
"""When the prefix window must slide, it slides by this share of its budget at once."""


def fit_prefix(
    tokenizer: Tokenizer, prefix: str, budget: int, prefer_start: int | None = None
) -> tuple[int, list[int]]:
    """Keep the end of ``prefix`` that fits ``budget`` tokens, cut at a line start.

    Returns the str offset in ``prefix`` where the kept text starts, and its token ids.
    Cutting at a line start keeps the window's first tokens stable while the user types,
    which the prompt cache relies on. ``prefer_start`` (the previous window's start) is
    kept while the text from it still fits; when it no longer does, the window slides by
    :data:`SLIDE` of the budget at once instead of a line per keystroke, since every
    slide shifts (re-rotates) the whole cached prompt.
    """
    if budget <= 0:
        return len(prefix), []
    at_line_start = prefer_start is not None and (
        prefer_start == 0 or (0 < prefer_start <= len(prefix) and prefix[prefer_start - 1] == "\n")
    )
    if at_line_start:
        ids = encode(tokenizer, prefix[prefer_start:])
        if len(ids) <= budget:
            return prefer_start, ids  # type: ignore[return-value]
        budget = max(1, int(budget * (1 - SLIDE)))
    start = max(0, len(prefix) - budget * CHARS_PER_TOKEN)
    if start > 0:
        nl = prefix.find("\n", start)
        start = nl + 1 if nl != -1 else len(prefix)
    ids = encode(tokenizer, prefix[start:])
    while len(ids) > budget:
        # Drop whole lines from the top until it fits (estimate how many from the excess).
        excess = len(ids) - budget
        cut = start + max(1, int((len(prefix) - start) * excess / max(1, len(ids))))
        # From cut - 1: a cut that lands on a line start keeps that line.
        nl = prefix.find("\n", cut - 1)
        start = nl + 1 if nl != -1 else len(prefix)
        ids = encode(tokenizer, prefix[start:])
    return start, ids


def fit_suffix(tokenizer: Tokenizer, suffix: str, budget: int) -> tuple[int, list[int]]:
    """Keep the start of ``suffix`` that fits ``budget`` tokens, cut at a line end.

    Returns the str offset in ``suffix`` where the kept text ends, and its token ids.
    """
    if budget <= 0 or not suffix:
        return 0, []
    end = min(len(suffix), budget * CHARS_PER_TOKEN)
    if end < len(suffix):
        nl = suffix.rfind("\n", 0, end)
        end = nl + 1 if nl != -1 else 0
    ids = encode(tokenizer, suffix[:end])
    while len(ids) > budget and end > 0:
        excess = len(ids) - budget
        cut = end - max(1, int(end * excess / max(1, len(ids))))
        nl = suffix.rfind("\n", 0, max(0, cut))
        end = nl + 1 if nl != -1 else 0
        ids = encode(tokenizer, suffix[:end])
    return end, ids


@dataclass(frozen=True)
class Prompt:
    """A prompt ready to encode, and where its text came from."""

    ids: list[int]
    prefix_start: int
    """Str offset in the document where the prompt's prefix starts."""
    suffix_end: int
    """Str offset in the document where the prompt's suffix ends (= cursor if none)."""
    healed: str
    """Whitespace cut from the end of the prefix; the completion must re-create it."""
    fim: bool
    context_end: int = 0
    """``ids[:context_end]`` are the format's opening tokens and other files' context:
    the part documents may share, the document's own text starts after it."""


HEAL_WORD_CHARS = 32
"""Longest half-typed word cut off a prompt's end (longer runs are left alone)."""


def _word_char(c: str) -> bool:
    return c.isascii() and (c.isalnum() or c == "_")


def _receiver_end(text: str) -> bool:
    """Whether ``text`` ends with a name (not a number), ``)`` or ``]``."""
    word = len(text)
    while word > 0 and _word_char(text[word - 1]):
        word -= 1
    if word < len(text):
        return not text[word].isdigit()
    return text[-1:] in (")", "]")


def heal_split(prefix: str, *, blank_lines: bool = True, dot: bool = False) -> tuple[str, str]:
    """Split what the model should re-create off the prefix's last line.

    BPE vocabularies attach a space to the word after it (and merge runs of indentation),
    so a prompt ending in spaces is out of distribution; a prompt ending inside a word
    (the user typed part of an identifier) splits it into tokens the model seldom saw
    there, and it continues from those instead of finishing the word. So a trailing
    ASCII word (up to :data:`HEAL_WORD_CHARS` characters) is cut off, then the spaces and
    tabs before it, and when that leaves the line empty, its line break: vocabularies
    write a line break and the indentation after it as one token, so a prompt that ends
    at a bare line break reads as "the next line starts at column 0". The model
    re-creates the cut text (under :class:`~completion.constraints.TextPrefix` when a
    word or a line break was cut) and :func:`completion.stops.strip_healed` drops it
    again. With ``blank_lines=False`` (FIM) a line's indentation stays but for its last
    space: FIM models read a prefix that ends at a line break, followed by a suffix that
    starts with one, as "this line stays empty", and the last space goes with the word
    after it (``" raise"``). Measurements: docs/architecture.md. With ``dot``
    (tokenizers that merge the dot into the member name, as Qwen's does 96% of the
    time) a member access's dot after a receiver is cut off with the half-typed name:
    ``obj.ap`` heals ``.ap``.
    """
    line = prefix[prefix.rfind("\n") + 1 :]
    start = len(line)
    while start > 0 and _word_char(line[start - 1]):
        start -= 1
    if len(line) - start > HEAL_WORD_CHARS or (start and line[start - 1].isalnum()):
        start = len(line)  # too long to be half-typed, or part of a non-ASCII word
    elif dot and start >= 2 and line[start - 1] == "." and _receiver_end(line[: start - 1]):
        start -= 1  # ``obj.`` / ``obj.na``: the model writes ``.name`` as one token
    stripped = line[:start].rstrip(" \t")
    if not stripped and not blank_lines:
        indent = line[:start]  # the indentation stays, but for its last space
        stripped = indent[:-1] if indent.endswith("  ") else indent
    cut = len(line) - len(stripped)
    if not cut:
        return prefix, ""
    if not stripped and blank_lines and len(line) < len(prefix):
        cut += 2 if prefix.endswith("\r\n" + line) else 1  # the line break too
    return prefix[:-cut], prefix[-cut:]


def build_prompt(
    tokenizer: Tokenizer,
    fmt: PromptFormat,
    text: str,
    cursor: int,
    context_tokens: int,
    suffix_share: float = 0.25,
    prefer_start: int | None = None,
    heal_dot: bool = False,
    header: list[int] | None = None,
) -> Prompt:
    """Lay out the prompt for a completion at str offset ``cursor`` of ``text``.

    FIM prompts give the suffix up to ``suffix_share`` of the budget; what one side does
    not use goes to the other. Prefix-only prompts spend it all on the prefix; one that
    would be empty starts from the format's ``start_id`` instead (and stays empty
    without one: the caller then suggests nothing). ``heal_dot``: see :func:`heal_split`.
    ``header``: other files' context (:func:`context_header`), first in the prompt
    (Qwen's repository format before the FIM tokens, otherwise at the prefix's start),
    its tokens taken from the budget.
    """
    header = header or []
    context_tokens = max(16, context_tokens - len(header))
    prefix, healed = heal_split(text[:cursor], blank_lines=not fmt.fim, dot=heal_dot)
    if not fmt.fim:
        start, pre_ids = fit_prefix(tokenizer, prefix, context_tokens, prefer_start)
        if not pre_ids and fmt.start_id is not None and not header:
            pre_ids = [fmt.start_id]
        return Prompt([*header, *pre_ids], start, cursor, healed, False, len(header))
    fixed = 3 + (1 if fmt.bos_id is not None else 0)
    budget = max(8, context_tokens - fixed)
    suffix = text[cursor:]
    suffix_budget = int(budget * suffix_share)
    end, suf_ids = fit_suffix(tokenizer, suffix, suffix_budget)
    start, pre_ids = fit_prefix(tokenizer, prefix, budget - len(suf_ids), prefer_start)
    if start == 0 and len(pre_ids) < budget - len(suf_ids) and end < len(suffix):
        # Short prefix: give the unused budget to the suffix.
        end, suf_ids = fit_suffix(tokenizer, suffix, budget - len(pre_ids))
    p, s, m = fmt.special_ids
    head = [fmt.bos_id] if fmt.bos_id is not None else []
    if fmt.repo_ids is not None:
        opening = [*head, *header]
        ids = [*opening, p, *pre_ids, s, *suf_ids, m]
    else:
        opening = [*head, p, *header]
        ids = [*opening, *pre_ids, s, *suf_ids, m]
    return Prompt(ids, start, cursor + end, healed, True, len(opening))


def context_header(
    tokenizer: Tokenizer, fmt: PromptFormat, snippets: list[Any], repo: str, current: str
) -> list[int]:
    """The token ids of other files' context for a prompt (empty without snippets).

    ``snippets``: :class:`~completion.workspace_context.Snippet` (``path``, ``text``).
    Qwen2.5-Coder's repository format where the vocabulary has it::

        <|repo_name|>repo
        <|file_sep|>pkg/util.py
        def helper(x): ...
        <|file_sep|>current/file.py
        (then the FIM prompt)

    Otherwise a header of comments naming the files, the stubs as code, and a comment
    naming the current file, ahead of its text.
    """
    if not snippets:
        return []
    if fmt.repo_ids is not None:
        name, sep = fmt.repo_ids
        ids = [name, *encode(tokenizer, f"{repo}\n")]
        for snippet in snippets:
            ids += [sep, *encode(tokenizer, f"{snippet.path}\n{snippet.text}\n")]
        return [*ids, sep, *encode(tokenizer, f"{current}\n")]
    parts = ["# Context: definitions this file uses from other files of the workspace.\n"]
    for snippet in snippets:
        parts.append(f"# --- {snippet.path} ---\n{snippet.text}\n")
    parts.append(f"# --- {current} ---\n")
    return encode(tokenizer, "".join(parts))
