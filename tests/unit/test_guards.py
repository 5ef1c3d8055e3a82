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


def test_cursor_site_takes_the_typed_part_of_the_name_out() -> None:
    from completion.guards import cursor_site

    text = "import os\nos.path.jo\nx = 1\n"
    cursor = text.index("jo") + 2
    assert cursor_site(text, cursor) == ("import os\nos.path.\nx = 1\n", text.index("jo"))
    assert cursor_site("x = 1", 5) is None
    assert cursor_site("x = 1.5", 6) is None  # a number's dot is no member access


def _request(text: str, cursor: int, **options: object) -> object:
    from completion.engine import CompletionOptions, CompletionRequest

    return CompletionRequest(
        "file:///tmp/a.py", text, cursor, CompletionOptions(**options), language="python"
    )


def test_anticipate_asks_the_oracle_before_the_request() -> None:
    """An edit that typed ``os.path.``: the answer is cached with no request waiting."""
    import time

    from completion.guards import anticipate, cursor_site, member_queries
    from completion.member_oracle import MemberOracle

    text = "import os\n\nos.path."
    oracle = MemberOracle()
    try:
        req = _request(text, len(text))
        assert anticipate(oracle, req)
        query = member_queries(req)(*cursor_site(text, len(text)))  # type: ignore[misc]
        deadline = time.monotonic() + 60
        while oracle.cached(query) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        found = oracle.cached(query)
        assert found is not None and found.names is not None and "join" in found.names
        in_string = 'import os\n\ns = "os.path.'
        assert not anticipate(oracle, _request(in_string, len(in_string)))
        assert not anticipate(oracle, _request(text, len(text), members=False))
        assert not anticipate(oracle, _request("x = 1\n", 6))
    finally:
        oracle.close()


def test_a_lookup_counts_the_queries_the_oracle_had_not_answered_yet() -> None:
    from completion.constraints import ConstraintStats
    from completion.guards import OracleLookup
    from completion.member_oracle import MemberOracle, MemberQuery

    text = "class A {\n  go(): void {}\n  run(): void {\n    this.\n  }\n}\n"
    offset = text.index("this.\n") + len("this.")
    stats = ConstraintStats()
    oracle = MemberOracle()
    lookup = OracleLookup(oracle, lambda t, o: MemberQuery(t, o, None, "typescript"), 1.0, stats)
    assert lookup(text, offset, ask=False) is False  # not asked, not known yet: no query
    names = lookup(text, offset, ask=True)
    assert names is not None and "go" in names.set and stats.memberQueries == 1
    assert lookup(text, offset, ask=True) is names and stats.memberQueries == 1  # memo
    again = OracleLookup(oracle, lambda t, o: MemberQuery(t, o, None, "typescript"), 1.0, stats)
    assert again(text, offset, ask=True) is not None and stats.memberQueries == 1  # cached
