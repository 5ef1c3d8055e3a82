"""FIM family detection, prompt layout and token budgets with fake tokenizers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from completion.fim import (
    FAMILIES,
    GENERIC_STOPS,
    build_prompt,
    detect_format,
    encode,
    fit_prefix,
    fit_suffix,
    heal_split,
)

SPECIAL_BASE = 0x200000  # above every code point, so text ids never collide


class FakeTokenizer:
    """Character-level tokenizer: one id per code point, special tokens above them."""

    def __init__(self, specials, eos=None, bos=None):
        self.vocab = {tok: SPECIAL_BASE + i for i, tok in enumerate(specials)}
        self.eos_token_id = self.vocab[eos] if eos else None
        self.bos_token_id = self.vocab[bos] if bos else None
        self.calls = []

    def get_vocab(self):
        return dict(self.vocab)

    def __call__(self, text, add_special_tokens=True, split_special_tokens=False):
        self.calls.append((add_special_tokens, split_special_tokens))
        return {"input_ids": [ord(c) for c in text]}


def qwen():
    return FakeTokenizer(
        [
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<|fim_prefix|>",
            "<|fim_middle|>",
            "<|fim_suffix|>",
            "<|fim_pad|>",
            "<|repo_name|>",
            "<|file_sep|>",
        ],
        eos="<|endoftext|>",
    )


def starcoder():
    return FakeTokenizer(
        [
            "<|endoftext|>",
            "<fim_prefix>",
            "<fim_middle>",
            "<fim_suffix>",
            "<fim_pad>",
            "<file_sep>",
        ],
        eos="<|endoftext|>",
    )


def deepseek(with_bos=True):
    return FakeTokenizer(
        [
            "<｜begin▁of▁sentence｜>",
            "<｜end▁of▁sentence｜>",
            "<｜fim▁hole｜>",
            "<｜fim▁begin｜>",
            "<｜fim▁end｜>",
            "<|EOT|>",
        ],
        eos="<｜end▁of▁sentence｜>",
        bos="<｜begin▁of▁sentence｜>" if with_bos else None,
    )


def codellama(marker="▁"):
    return FakeTokenizer(
        ["<s>", "</s>", f"{marker}<PRE>", f"{marker}<SUF>", f"{marker}<MID>", f"{marker}<EOT>"],
        eos="</s>",
        bos="<s>",
    )


def plain():
    """SmolLM2-like: no FIM tokens."""
    return FakeTokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos="<|endoftext|>")


def ids_of(tok, *names):
    return [tok.vocab[n] for n in names]


##### detect_format #####


def test_qwen():
    tok = qwen()
    fmt = detect_format(tok)
    assert fmt.fim
    assert fmt.name == "qwen"
    assert list(fmt.special_ids) == ids_of(
        tok, "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"
    )
    assert fmt.bos_id is None
    assert fmt.stop_ids == frozenset(tok.vocab.values())  # every listed token stops
    assert tok.eos_token_id in fmt.stop_ids


def test_starcoder():
    tok = starcoder()
    fmt = detect_format(tok)
    assert fmt.name == "starcoder"
    assert list(fmt.special_ids) == ids_of(tok, "<fim_prefix>", "<fim_suffix>", "<fim_middle>")
    assert fmt.bos_id is None
    assert fmt.stop_ids == frozenset(tok.vocab.values())


def test_deepseek():
    tok = deepseek()
    fmt = detect_format(tok)
    assert fmt.name == "deepseek"
    assert list(fmt.special_ids) == ids_of(
        tok, "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"
    )
    assert fmt.bos_id == tok.vocab["<｜begin▁of▁sentence｜>"]
    expected = set(tok.vocab.values()) - {fmt.bos_id}
    assert fmt.stop_ids == frozenset(expected)
    assert tok.eos_token_id in fmt.stop_ids


def test_deepseek_without_bos_token():
    fmt = detect_format(deepseek(with_bos=False))
    assert fmt.name == "deepseek"
    assert fmt.bos_id is None


@pytest.mark.parametrize("marker", ["▁", ""])
def test_codellama(marker):
    tok = codellama(marker)
    fmt = detect_format(tok)
    assert fmt.name == "codellama"
    assert list(fmt.special_ids) == ids_of(
        tok, f"{marker}<PRE>", f"{marker}<SUF>", f"{marker}<MID>"
    )
    assert fmt.bos_id == tok.vocab["<s>"]
    assert fmt.stop_ids == frozenset(ids_of(tok, f"{marker}<EOT>", "</s>"))


def test_prefix_only():
    tok = plain()
    fmt = detect_format(tok)
    assert not fmt.fim
    assert fmt.name == "prefix-only"
    assert fmt.special_ids == ()
    assert fmt.bos_id is None
    assert fmt.stop_ids == frozenset(ids_of(tok, "<|endoftext|>", "<|im_start|>", "<|im_end|>"))
    assert set(GENERIC_STOPS) >= {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}


def test_prefix_only_start_token_is_the_document_separator_else_bos():
    assert detect_format(plain()).start_id == plain().vocab["<|endoftext|>"]
    bos_only = FakeTokenizer(["<unk>", "<bos>"], bos="<bos>")
    assert detect_format(bos_only).start_id == bos_only.vocab["<bos>"]
    assert detect_format(FakeTokenizer(["<unk>"])).start_id is None


@pytest.mark.parametrize(
    ("text", "cursor"),
    [("", 0), ("im", 2), ("x" * 5000, 5000), ("a\n" + "y" * 900, 902)],
    ids=["empty file", "first half-typed word", "long first line", "line over budget"],
)
def test_an_empty_prefix_only_prompt_starts_from_the_start_token(text, cursor):
    tok = plain()
    fmt = detect_format(tok)
    prompt = build_prompt(tok, fmt, text, cursor, context_tokens=64)
    assert prompt.ids == [tok.vocab["<|endoftext|>"]]
    bare = detect_format(FakeTokenizer(["<unk>"]))
    assert build_prompt(tok, bare, text, cursor, context_tokens=64).ids == []


def test_eos_ids_are_added_to_stops():
    tok = FakeTokenizer(["<unk>", "<eos>"], eos="<eos>")
    fmt = detect_format(tok, eos_ids=[7, 8])
    assert fmt.stop_ids == frozenset({7, 8, tok.vocab["<eos>"]})
    fmt = detect_format(qwen(), eos_ids=[5])
    assert 5 in fmt.stop_ids


def test_non_int_eos_is_ignored():
    tok = plain()
    tok.eos_token_id = None
    fmt = detect_format(tok)
    assert fmt.stop_ids == frozenset(ids_of(tok, "<|endoftext|>", "<|im_start|>", "<|im_end|>"))


@pytest.mark.parametrize("make", [qwen, starcoder, deepseek, codellama])
def test_fim_false_forces_prefix_only(make):
    tok = make()
    fmt = detect_format(tok, fim=False)
    assert not fmt.fim
    assert fmt.special_ids == ()
    assert tok.eos_token_id in fmt.stop_ids


def test_fim_true_without_tokens_raises():
    with pytest.raises(ValueError):
        detect_format(plain(), fim=True)
    assert detect_format(qwen(), fim=True).name == "qwen"


def test_partial_family_is_not_detected():
    tok = FakeTokenizer(["<fim_prefix>", "<fim_suffix>", "<|endoftext|>"], eos="<|endoftext|>")
    assert not detect_format(tok).fim


def test_families_are_distinct():
    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names))


##### encode #####


def test_encode_keeps_special_look_alikes_as_text():
    tok = qwen()
    text = "x = '<|fim_prefix|>'"
    assert encode(tok, text) == [ord(c) for c in text]
    assert tok.calls == [(False, True)]
    assert encode(tok, "") == []


##### build_prompt layout #####


def chars(s):
    return [ord(c) for c in s]


@pytest.mark.parametrize("make", [qwen, starcoder, deepseek, codellama])
def test_psm_layout(make):
    tok = make()
    fmt = detect_format(tok)
    text = "def f(x):\n    return x\n\nprint(f(1))\n"
    cursor = text.index("\n\nprint") + 1
    prompt = build_prompt(tok, fmt, text, cursor, context_tokens=512)
    p, s, m = fmt.special_ids
    head = [fmt.bos_id] if fmt.bos_id is not None else []
    assert prompt.ids == [*head, p, *chars(text[:cursor]), s, *chars(text[cursor:]), m]
    assert prompt.fim
    assert prompt.prefix_start == 0
    assert prompt.suffix_end == len(text)
    assert prompt.healed == ""


def test_deepseek_layout_starts_with_bos():
    tok = deepseek()
    fmt = detect_format(tok)
    prompt = build_prompt(tok, fmt, "(b", 1, context_tokens=64)
    assert prompt.ids == [
        tok.vocab["<｜begin▁of▁sentence｜>"],
        tok.vocab["<｜fim▁begin｜>"],
        ord("("),
        tok.vocab["<｜fim▁hole｜>"],
        ord("b"),
        tok.vocab["<｜fim▁end｜>"],
    ]


def test_prefix_only_layout():
    tok = plain()
    fmt = detect_format(tok)
    text = "import os\nprint(os.sep)\n"
    cursor = text.index("(") + 1
    prompt = build_prompt(tok, fmt, text, cursor, context_tokens=512)
    assert prompt.ids == chars(text[:cursor])
    assert not prompt.fim
    assert prompt.prefix_start == 0
    assert prompt.suffix_end == cursor


def test_healed_whitespace_is_left_out_of_the_prompt():
    tok = qwen()
    fmt = detect_format(tok)
    text = "def f():\n    return \n"
    cursor = text.index(" \n") + 1
    prompt = build_prompt(tok, fmt, text, cursor, context_tokens=512)
    p, s, m = fmt.special_ids
    assert prompt.healed == " "
    assert prompt.ids == [p, *chars("def f():\n    return"), s, *chars("\n"), m]
    plain_prompt = build_prompt(plain(), detect_format(plain()), text, cursor, 512)
    assert plain_prompt.healed == " "
    assert plain_prompt.ids == chars("def f():\n    return")


def test_blank_line_is_healed_whole_only_for_prefix_only_prompts():
    text = "def f():\n    \n"
    cursor = text.index("    \n") + 4
    tok = qwen()
    fmt = detect_format(tok)
    prompt = build_prompt(tok, fmt, text, cursor, context_tokens=512)
    p, s, m = fmt.special_ids
    assert prompt.healed == " "  # FIM: the line keeps all but the space a word takes
    assert prompt.ids == [p, *chars("def f():\n   "), s, *chars("\n"), m]
    tok = plain()
    prompt = build_prompt(tok, detect_format(tok), text, cursor, context_tokens=512)
    assert prompt.healed == "\n    "
    assert prompt.ids == chars("def f():")


@pytest.mark.parametrize(
    ("prefix", "blank_lines", "kept", "healed"),
    [
        ("if not gr", True, "if not", " gr"),  # a half-typed word and the space before it
        ("x = self.fo", True, "x = self.", "fo"),
        ("    return x", True, "    return", " x"),
        ("a\n    gr", True, "a", "\n    gr"),  # a word alone on its line: and the break
        ("a\n    gr", False, "a\n   ", " gr"),  # FIM: the indentation stays, but a space
        ("a\n\tgr", False, "a\n\t", "gr"),  # tabs: all of it
        ("call(", True, "call(", ""),
        ("x = 12", True, "x =", " 12"),
        ("s = 'héllo", True, "s = 'héllo", ""),  # not an ASCII word: left alone
        ("x = " + "a" * 40, True, "x = " + "a" * 40, ""),  # too long to be half-typed
    ],
)
def test_a_half_typed_word_is_healed(prefix, blank_lines, kept, healed):
    assert heal_split(prefix, blank_lines=blank_lines) == (kept, healed)


##### budgets #####


def make_text(line_lengths, trailing=()):
    """Lines of ``n`` digits, each followed by ``trailing[i]`` spaces (if given)."""
    spaces = list(trailing) + [0] * (len(line_lengths) - len(trailing))
    return "".join(
        f"{i % 10}" * n + " " * k + "\n"
        for i, (n, k) in enumerate(zip(line_lengths, spaces, strict=True))
    )


def check_prompt(tok, fmt, text, cursor, context_tokens):
    prompt = build_prompt(tok, fmt, text, cursor, context_tokens)
    assert len(prompt.ids) <= context_tokens
    prefix, healed = heal_split(text[:cursor], blank_lines=not fmt.fim)
    assert prompt.healed == healed
    assert prefix + healed == text[:cursor]
    assert prompt.prefix_start == 0 or text[prompt.prefix_start - 1] == "\n"
    assert 0 <= prompt.prefix_start <= len(prefix)
    if fmt.fim:
        assert cursor <= prompt.suffix_end <= len(text)
        assert prompt.suffix_end in (cursor, len(text)) or text[prompt.suffix_end - 1] == "\n"
        p, s, m = fmt.special_ids
        head = [fmt.bos_id] if fmt.bos_id is not None else []
        expected = [
            *head,
            p,
            *chars(prefix[prompt.prefix_start :]),
            s,
            *chars(text[cursor : prompt.suffix_end]),
            m,
        ]
        assert prompt.ids == expected
    else:
        assert prompt.suffix_end == cursor
        kept = chars(prefix[prompt.prefix_start :])
        # Nothing fits before the cursor: the prompt starts from the start token.
        start = [fmt.start_id] if fmt.start_id is not None else []
        assert prompt.ids == (kept or start)
    return prompt


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 3)), min_size=1, max_size=120),
    st.data(),
    st.integers(64, 300),
    st.sampled_from(["qwen", "deepseek", "plain"]),
)
def test_budget_property(lines, data, context_tokens, family):
    tok = {"qwen": qwen, "deepseek": deepseek, "plain": plain}[family]()
    fmt = detect_format(tok)
    text = make_text([n for n, _ in lines], [k for _, k in lines])
    cursor = data.draw(st.integers(0, len(text)))
    check_prompt(tok, fmt, text, cursor, context_tokens)


def test_long_text_never_exceeds_budget():
    tok = starcoder()
    fmt = detect_format(tok)
    text = make_text([(i * 7) % 40 for i in range(400)])
    for cursor in range(0, len(text) + 1, 97):
        for context_tokens in (64, 100, 257, 1024):
            check_prompt(tok, fmt, text, cursor, context_tokens)


def test_unused_suffix_budget_goes_to_prefix():
    tok = qwen()
    fmt = detect_format(tok)
    text = make_text([20] * 200)
    cursor = len(text) - 5  # short suffix
    context_tokens = 400
    prompt = check_prompt(tok, fmt, text, cursor, context_tokens)
    budget = context_tokens - 3
    n_suffix = len(text) - cursor
    assert prompt.suffix_end == len(text)
    n_prefix = len(prompt.ids) - 3 - n_suffix
    assert n_prefix > int(budget * 0.75)  # more than the prefix's own share
    assert n_prefix >= budget - n_suffix - 2 * 21  # at most the line cut is lost


def test_unused_prefix_budget_goes_to_suffix():
    tok = qwen()
    fmt = detect_format(tok)
    text = make_text([20] * 200)
    cursor = 10  # short prefix
    context_tokens = 400
    prompt = check_prompt(tok, fmt, text, cursor, context_tokens)
    assert prompt.prefix_start == 0
    n_suffix = prompt.suffix_end - cursor
    assert n_suffix > int((context_tokens - 3) * 0.25)
    assert n_suffix >= context_tokens - 3 - 10 - 21


def test_fit_prefix_and_suffix_cut_at_lines():
    tok = plain()
    text = make_text([9] * 10)  # ten lines of 10 characters with the newline
    start, ids = fit_prefix(tok, text, 35)
    assert text[start - 1] == "\n"
    assert ids == chars(text[start:])
    assert len(ids) <= 35
    end, ids = fit_suffix(tok, text, 35)
    assert text[end - 1] == "\n"
    assert ids == chars(text[:end])
    assert len(ids) <= 35
    assert fit_prefix(tok, text, 0) == (len(text), [])
    assert fit_suffix(tok, text, 0) == (0, [])
    assert fit_suffix(tok, "", 10) == (0, [])
    assert fit_prefix(tok, text, 1000) == (0, chars(text))
    assert fit_suffix(tok, text, 1000) == (len(text), chars(text))


##### heal_split #####


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("    return ", ("    return", " ")),
        ("def f():\n    ", ("def f():", "\n    ")),
        ("def f():\r\n    ", ("def f():", "\r\n    ")),
        ("    ", ("", "    ")),
        ("x = 1\n\t \t", ("x = 1", "\n\t \t")),
        ("x = retur", ("x =", " retur")),  # a half-typed word and the space before it
        ("x = 1\n", ("x = 1\n", "")),
        ("x = 1 \n", ("x = 1 \n", "")),  # only the last line is healed
        ("", ("", "")),
        ("a  b  ", ("a  b", "  ")),
    ],
)
def test_heal_split(prefix, expected):
    assert heal_split(prefix) == expected
    last = prefix[prefix.rfind("\n") + 1 :]
    fim = (prefix[:-1], " ") if last.endswith("  ") else (prefix, "")
    assert heal_split(prefix, blank_lines=False) == (expected if last.strip(" \t") else fim)


def test_fit_suffix_keeps_longest_line_aligned_head():
    tok = plain()
    text = "aaaa\nbbbb\ncccc\n"
    assert fit_suffix(tok, text, 10) == (10, chars("aaaa\nbbbb\n"))
    assert fit_suffix(tok, text, 9) == (5, chars("aaaa\n"))


def test_fit_prefix_keeps_longest_line_aligned_tail():
    # With one token per character the excess estimate is exact: dropping "aaaa\n"
    # (5 tokens) leaves exactly 10 tokens, which fit.
    tok = plain()
    text = "aaaa\nbbbb\ncccc\n"
    assert fit_prefix(tok, text, 10) == (5, chars("bbbb\ncccc\n"))
