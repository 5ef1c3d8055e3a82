"""What a request's guards decide before decoding: in code or not, file paths."""

from __future__ import annotations

import pytest

from completion.guards import cursor_in_code, uri_path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x = os.|", True),
        ('x = "os.|', False),  # an unterminated string on the line
        ('"""Doc\nwith os.|\nmore."""\n', False),  # a docstring opened lines above (the tree)
        ("# note: os.|", False),
        ("s = '漢字 🙂'; y = os.|", True),  # emoji/CJK before: byte offsets matter
        ("a = 1\r\nb = os.|\r\n", True),
        ("f'{a}' + os.|", True),
    ],
)
def test_cursor_in_code(text: str, expected: bool) -> None:
    cursor = text.index("|")
    doc = text.replace("|", "", 1)
    assert cursor_in_code("python", doc, cursor) is expected


def test_javascript_strings_and_comments() -> None:
    for text, expected in (("const a = b.|", True), ("// b.|", False), ("const s = `x.|`", False)):
        cursor = text.index("|")
        assert cursor_in_code("javascript", text.replace("|", ""), cursor) is expected, text


def test_uri_path() -> None:
    assert uri_path("file:///tmp/a%20b.py") == "/tmp/a b.py"
    assert uri_path("untitled:Untitled-1") is None
    assert uri_path("/abs/x.py") == "/abs/x.py"


def test_the_oracle_answers_typescript_from_symbol_tables_without_a_worker() -> None:
    from completion.member_oracle import MemberOracle, MemberQuery

    text = (
        "class Counter {\n  private count = 0;\n  increment(): void {\n    this.count++;\n  }\n"
        "  reset(): void {\n    this.\n  }\n}\n"
    )
    offset = text.index("this.\n") + len("this.")
    oracle = MemberOracle()
    found = oracle.members(MemberQuery(text, offset, None, "typescript"), budget_s=0)
    assert found.names is not None and {"count", "increment", "reset"} <= found.names
    assert oracle.pid is None  # no worker process for TypeScript
    unknown = oracle.members(MemberQuery("foo.", 4, None, "typescript"), budget_s=0)
    assert unknown.names is None
