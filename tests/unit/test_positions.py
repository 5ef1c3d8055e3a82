"""LineIndex, byte offsets and tree-sitter points against reference computations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_server.positions import (
    ENCODINGS,
    LineIndex,
    PositionError,
    advance_point,
    byte_offset,
    char_units,
    line_starts,
    point_at,
    units_len,
)

CODECS = {"utf-8": ("utf-8", 1), "utf-16": ("utf-16-le", 2), "utf-32": ("utf-32-le", 4)}


##### Reference implementations (deliberately naive) #####


def ref_units(s: str, encoding: str) -> int:
    codec, width = CODECS[encoding]
    return len(s.encode(codec)) // width


def ref_lines(text: str) -> list[tuple[int, int]]:
    """(start, content_end) of every LSP line, scanning character by character."""
    lines = []
    start = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\r" and i + 1 < len(text) and text[i + 1] == "\n":
            lines.append((start, i))
            i += 2
            start = i
        elif ch in "\r\n":
            lines.append((start, i))
            i += 1
            start = i
        else:
            i += 1
    lines.append((start, len(text)))
    return lines


def ref_position(text: str, offset: int, encoding: str) -> tuple[int, int]:
    for line, (start, end) in enumerate(ref_lines(text)):
        if start <= offset <= end:
            return line, ref_units(text[start:offset], encoding)
    raise AssertionError("offset inside a line break")


def inside_crlf(text: str, offset: int) -> bool:
    return 0 < offset < len(text) and text[offset - 1] == "\r" and text[offset] == "\n"


def ref_byte_offset(text: str, offset: int) -> int:
    return len(text[:offset].encode("utf-8"))


def ref_point(text: str, offset: int) -> tuple[int, int]:
    row = 0
    col = 0
    for ch in text[:offset]:
        if ch == "\n":
            row += 1
            col = 0
        else:
            col += len(ch.encode("utf-8"))
    return row, col


SAMPLES = [
    "",
    "a",
    "abc",
    "😀",
    "a😀b",
    "形状",
    "x = '形状😀'\n",
    "line1\nline2",
    "line1\nline2\n",
    "a\r\nb\r\n",
    "a\rb\rc",
    "\r\n\r\n",
    "\n\n\n",
    "\r\r\n\n",
    "😀\r\n形状\r🙂é\nend",
    "é😀形\r",
]


##### Helpers #####


def test_char_units_and_units_len():
    for ch, expected in [("a", (1, 1, 1)), ("é", (2, 1, 1)), ("形", (3, 1, 1)), ("😀", (4, 2, 1))]:
        assert tuple(char_units(ch, e) for e in ENCODINGS) == expected
    s = "a é形😀"
    for enc in ENCODINGS:
        assert units_len(s, enc) == ref_units(s, enc)
        assert units_len(s, enc) == sum(char_units(c, enc) for c in s)


@pytest.mark.parametrize("text", SAMPLES)
def test_line_starts_match_reference(text):
    assert line_starts(text) == [start for start, _ in ref_lines(text)]
    index = LineIndex.of(text)
    for line, (_, end) in enumerate(ref_lines(text)):
        assert index.line_content_end(line) == end


def test_line_endings():
    assert line_starts("a\r\nb") == [0, 3]
    assert line_starts("a\rb") == [0, 2]
    assert line_starts("a\nb") == [0, 2]
    assert line_starts("a\n\rb") == [0, 2, 3]  # "\n\r" is two breaks
    assert line_starts("") == [0]
    assert line_starts("abc") == [0]


##### Round trips #####


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_every_offset(text, encoding):
    index = LineIndex.of(text)
    for offset in range(len(text) + 1):
        if inside_crlf(text, offset):
            continue
        pos = index.position(offset, encoding)
        assert pos == ref_position(text, offset, encoding), offset
        assert index.offset(*pos, encoding, strict=True) == offset


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("utf-8", (1, 5)), ("utf-16", (1, 3)), ("utf-32", (1, 2))],
)
def test_emoji_position(encoding, expected):
    text = "first\r\na😀b"
    index = LineIndex.of(text)
    offset = text.index("b")
    assert index.position(offset, encoding) == expected
    assert index.offset(*expected, encoding, strict=True) == offset


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [("utf-8", (0, 6)), ("utf-16", (0, 2)), ("utf-32", (0, 2))],
)
def test_cjk_position(encoding, expected):
    text = "形状=1"
    index = LineIndex.of(text)
    assert index.position(2, encoding) == expected
    assert index.offset(*expected, encoding, strict=True) == 2


def test_empty_text():
    index = LineIndex.of("")
    for enc in ENCODINGS:
        assert index.position(0, enc) == (0, 0)
        assert index.offset(0, 0, enc, strict=True) == 0
        with pytest.raises(PositionError):
            index.offset(1, 0, enc, strict=True)
        with pytest.raises(PositionError):
            index.offset(0, 1, enc, strict=True)
        assert index.offset(1, 0, enc, strict=False) == 0
        assert index.offset(0, 1, enc, strict=False) == 0


def test_no_trailing_newline():
    text = "ab\ncd"
    index = LineIndex.of(text)
    for enc in ENCODINGS:
        assert index.position(5, enc) == (1, 2)
        assert index.offset(1, 2, enc, strict=True) == 5
        with pytest.raises(PositionError):
            index.offset(2, 0, enc, strict=True)


def test_trailing_newline_adds_an_empty_line():
    text = "ab\n"
    index = LineIndex.of(text)
    for enc in ENCODINGS:
        assert index.position(3, enc) == (1, 0)
        assert index.offset(1, 0, enc, strict=True) == 3


def test_crlf_and_lone_cr_lines():
    text = "ab\r\ncd\ref\ngh"
    index = LineIndex.of(text)
    for enc in ENCODINGS:
        assert index.offset(1, 0, enc, strict=True) == 4
        assert index.offset(2, 0, enc, strict=True) == 7
        assert index.offset(3, 0, enc, strict=True) == 10
        assert index.offset(0, 2, enc, strict=True) == 2  # end of "ab", before "\r\n"
        assert index.offset(1, 2, enc, strict=True) == 6  # end of "cd", before "\r"
        assert index.position(2, enc) == (0, 2)
        assert index.position(6, enc) == (1, 2)


##### Strict errors and clamping #####


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_strict_errors(encoding):
    text = "a😀\r\nb"
    index = LineIndex.of(text)
    with pytest.raises(PositionError):
        index.offset(2, 0, encoding, strict=True)  # line past end
    with pytest.raises(PositionError):
        index.offset(1, 2, encoding, strict=True)  # past end of "b"
    line0_len = ref_units("a😀", encoding)
    with pytest.raises(PositionError):
        index.offset(0, line0_len + 1, encoding, strict=True)  # would point into "\r\n"
    for line, character in [(-1, 0), (0, -1), (-3, -3)]:
        with pytest.raises(PositionError):
            index.offset(line, character, encoding, strict=True)
        with pytest.raises(PositionError):
            index.offset(line, character, encoding, strict=False)


@pytest.mark.parametrize(("encoding", "splits"), [("utf-16", [1]), ("utf-8", [1, 2, 3])])
def test_strict_split_code_point(encoding, splits):
    index = LineIndex.of("😀x")
    for character in splits:
        with pytest.raises(PositionError):
            index.offset(0, character, encoding, strict=True)


def test_cjk_split_utf8():
    index = LineIndex.of("形状")
    for character in (1, 2, 4, 5):
        with pytest.raises(PositionError):
            index.offset(0, character, "utf-8", strict=True)
    assert index.offset(0, 3, "utf-8", strict=True) == 1


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_non_strict_clamps(encoding):
    text = "a😀\r\nbc\rd"
    index = LineIndex.of(text)
    assert index.offset(10, 0, encoding, strict=False) == len(text)
    assert index.offset(3, 0, encoding, strict=False) == len(text)
    assert index.offset(0, 100, encoding, strict=False) == 2  # end of "a😀", before "\r\n"
    assert index.offset(1, 100, encoding, strict=False) == 6  # end of "bc", before "\r"
    assert index.offset(2, 100, encoding, strict=False) == len(text)


def test_non_strict_split_rounds_down():
    index = LineIndex.of("a😀b")
    assert index.offset(0, 2, "utf-16", strict=False) == 1
    for character in (2, 3, 4):
        assert index.offset(0, character, "utf-8", strict=False) == 1
    assert index.offset(0, 5, "utf-8", strict=False) == 2


def test_position_out_of_range():
    index = LineIndex.of("abc")
    with pytest.raises(PositionError):
        index.position(-1, "utf-16")
    with pytest.raises(PositionError):
        index.position(4, "utf-16")


##### Property #####

ALPHABET = st.sampled_from(["a", "é", "形", "😀", "\n", "\r\n", "\r", " "])
TEXTS = st.lists(ALPHABET, max_size=40).map("".join)


@settings(max_examples=200, deadline=None)
@given(TEXTS)
def test_round_trip_property(text):
    index = LineIndex.of(text)
    for encoding in ENCODINGS:
        for offset in range(len(text) + 1):
            if inside_crlf(text, offset):
                continue
            pos = index.position(offset, encoding)
            assert pos == ref_position(text, offset, encoding)
            assert index.offset(*pos, encoding, strict=True) == offset
            assert index.offset(*pos, encoding, strict=False) == offset


@settings(max_examples=100, deadline=None)
@given(TEXTS, st.data())
def test_every_valid_position_resolves(text, data):
    index = LineIndex.of(text)
    encoding = data.draw(st.sampled_from(ENCODINGS))
    for line, (start, end) in enumerate(ref_lines(text)):
        # Every code point boundary of the line is a valid position.
        for offset in range(start, end + 1):
            character = ref_units(text[start:offset], encoding)
            assert index.offset(line, character, encoding, strict=True) == offset
        length = ref_units(text[start:end], encoding)
        with pytest.raises(PositionError):
            index.offset(line, length + 1, encoding, strict=True)
        assert index.offset(line, length + 1, encoding, strict=False) == end


##### Bytes and tree-sitter points #####


@settings(max_examples=200, deadline=None)
@given(TEXTS)
def test_byte_offset_and_point_at(text):
    for offset in range(len(text) + 1):
        assert byte_offset(text, offset) == ref_byte_offset(text, offset)
        assert point_at(text, offset) == ref_point(text, offset)


@settings(max_examples=200, deadline=None)
@given(TEXTS, TEXTS, st.data())
def test_advance_point(text, inserted, data):
    offset = data.draw(st.integers(0, len(text)))
    start = ref_point(text, offset)
    new_text = text[:offset] + inserted + text[offset:]
    assert advance_point(start, inserted) == ref_point(new_text, offset + len(inserted))


def test_point_examples():
    text = "a😀\r\n形\rb"
    assert point_at(text, 0) == (0, 0)
    assert point_at(text, 2) == (0, 5)
    assert point_at(text, 3) == (0, 6)  # "\r" is a column, not a row
    assert point_at(text, 4) == (1, 0)
    assert point_at(text, 6) == (1, 4)  # lone "\r" does not start a row
    assert point_at(text, len(text)) == (1, 5)
    assert byte_offset(text, len(text)) == len(text.encode("utf-8"))
    assert advance_point((3, 7), "") == (3, 7)
    assert advance_point((3, 7), "形") == (3, 10)
    assert advance_point((3, 7), "x\r\n😀") == (4, 4)
    assert advance_point((3, 7), "\n\n") == (5, 0)
