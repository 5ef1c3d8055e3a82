"""The parts of ``pie-lsp bench constraints`` that need no model: corpus rule, positions,
independent judges (ast, mypy) and the summary figures."""

from __future__ import annotations

import hashlib
import random
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from tooling import constraints_corpus as corpus
from tooling.bench_constraints import (
    OracleRow,
    Row,
    bootstrap_ci,
    cell,
    check_targets,
    compare,
    false_blocks,
    narrowed_truth,
    overhead,
    rate,
    run_order,
)
from tooling.constraints_checks import (
    PROBE,
    MypyCase,
    MypyError,
    MypyJudge,
    exact,
    judge_case,
    missing_names,
    next_identifier_match,
    parse_mypy,
    parses,
    probe_text,
    written_members,
)
from tooling.constraints_corpus import (
    CorpusPackage,
    Position,
    SourceFile,
    Survey,
    block_positions,
    draw,
    draw_positions,
    eol_positions,
    is_test_path,
    member_positions,
    mid_position,
    verdict,
)

MODULE = '''"""Module docstring: obj.attr here is text."""
import os


class Box:
    """A box."""

    def __init__(self, size: int) -> None:
        self.size = size  # self.comment is not code
        self.items: list[str] = []

    def grow(self, by: int) -> int:
        """Grow: self.size.doc"""
        total = self.size + by
        del self.items
        a, self.size = 1, total
        for self.size in range(3):
            pass
        name = f"{self.size}"
        é = "ünï"
        return os.path.join(str(total), name).count(é)


def use(box: Box) -> int:
    if box.size > 3:
        return box.grow(1)
    return len(box.items)
'''


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A package root holding ``pkg/mod.py`` (and a test file that is not corpus code)."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text(MODULE)
    (tmp_path / "pkg" / "tests").mkdir()
    (tmp_path / "pkg" / "tests" / "test_x.py").write_text("x.y\n")
    return tmp_path


@pytest.fixture
def source(package: Path) -> SourceFile:
    return SourceFile(package, package / "pkg" / "mod.py")


##### Corpus rule #####


def test_python_files_leave_out_tests_and_metadata(package: Path) -> None:
    (package / "pkg-1.0.dist-info").mkdir()
    (package / "pkg-1.0.dist-info" / "x.py").write_text("")
    rels = [str(p.relative_to(package)) for p in corpus.python_files(package)]
    assert rels == ["pkg/__init__.py", "pkg/mod.py"]
    assert is_test_path(Path("a/tests/b.py")) and is_test_path(Path("a/test_b.py"))
    assert not is_test_path(Path("a/testing_tools.py"))


def _survey(**kw: object) -> Survey:
    base: dict[str, object] = {
        "name": "x",
        "first_upload": "2025-03-01T00:00:00",
        "version": "1.0",
        "wheel": "x-1.0-py3-none-any.whl",
        "sha256": "0" * 64,
        "url": "u",
        "requirements": [],
        "lines": 2000,
    }
    return Survey(**{**base, **kw})  # type: ignore[arg-type]


def test_the_rule_keeps_only_new_pure_small_dependency_packages() -> None:
    assert verdict(_survey()).eligible
    assert "before" in verdict(_survey(first_upload="2024-12-31T23:59:59")).why_not
    assert verdict(_survey(wheel=None)).why_not == "no py3-none-any wheel"
    assert "requirements" in verdict(_survey(requirements=["a", "b", "c", "d", "e"])).why_not
    assert "lines" in verdict(_survey(lines=corpus.MIN_LINES - 1)).why_not


def test_the_draw_is_seeded_sorted_and_splits_by_package() -> None:
    names = [f"p{i}" for i in range(10)]
    first = draw(names)
    assert first == draw(list(reversed(names)))  # input order does not matter
    assert len(first) == corpus.PACKAGES
    assert list(first.values()).count("dev") == (corpus.PACKAGES + 1) // 2
    assert draw(names, seed=1) != first


def test_the_manifest_pins_every_package_by_hash_and_follows_its_rule() -> None:
    manifest = corpus.load_manifest()
    survey = {s["name"]: s for s in manifest["survey"]}
    pinned = corpus.packages()
    assert pinned and {p.split for p in pinned} == {"dev", "test"}
    eligible = [n for n, s in survey.items() if s["eligible"]]
    assert {p.name: p.split for p in pinned} == draw(eligible)
    for p in pinned:
        assert len(p.sha256) == 64 and p.sha256 == survey[p.name]["sha256"]
        assert p.first_upload >= corpus.FIRST_RELEASE_FROM and p.lines >= corpus.MIN_LINES


def _wheel(tmp: Path, name: str) -> tuple[Path, str]:
    path = tmp / name
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pkg/__init__.py", "x = 1\n")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_unpacks_a_wheel_only_with_the_pinned_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIE_LSP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(corpus, "_pip_download", lambda pkg, dest: None)  # no network
    wheels = tmp_path / "bench-corpus" / "wheels"
    wheels.mkdir(parents=True)
    _, digest = _wheel(wheels, "pkg-1.0-py3-none-any.whl")
    good = CorpusPackage("pkg", "1.0", "pkg-1.0-py3-none-any.whl", digest, "dev", "", 0, 0)
    root = corpus.fetch(good)
    assert (root / "pkg" / "__init__.py").read_text() == "x = 1\n"
    bad = CorpusPackage("pkg", "2.0", "pkg-1.0-py3-none-any.whl", "f" * 64, "dev", "", 0, 0)
    with pytest.raises(RuntimeError, match="sha256"):
        corpus.fetch(bad)


##### Positions #####


def test_member_positions_are_uses_right_after_the_dot(source: SourceFile) -> None:
    found = member_positions(source, "pkg")
    names = [p.member for p in found]
    # Targets (self.size = ..., del, tuple and for targets), strings, comments and
    # docstrings are left out; uses on both sides of an assignment's value are kept.
    assert names == ["size", "path", "join", "count", "size", "grow", "items"]
    for p in found:
        assert p.text[p.cursor - 1] == "." and p.truth.startswith(p.member or "?")
        assert p.original == MODULE
        assert "\n" not in p.truth and p.text[p.cursor :].startswith("\n")


def test_block_positions_are_statement_starts_in_function_bodies(source: SourceFile) -> None:
    found = block_positions(source, "pkg")
    firsts = [p.truth.split("\n")[0] for p in found]
    assert "self.size = size  # self.comment is not code" not in firsts  # comment is not part
    assert "self.size = size" in firsts and "return len(box.items)" in firsts
    assert not any(t.startswith('"""') for t in firsts)  # no docstrings
    assert "import os" not in firsts and "pass" in firsts
    for p in found:
        line = p.text[: p.cursor].rsplit("\n", 1)[-1]
        assert line.strip() == "" and p.original == MODULE


def test_eol_positions_remove_the_next_code_line(source: SourceFile) -> None:
    found = eol_positions(source, "pkg")
    assert found
    for p in found:
        assert p.truth.startswith("\n") and p.truth.strip()
        assert p.original == MODULE
        assert not p.truth.strip().startswith("#")


def test_mid_positions_are_in_code_and_cut_the_rest_of_the_line(source: SourceFile) -> None:
    rng = random.Random(0)
    for _ in range(40):
        p = mid_position(source, "pkg", rng)
        assert p is not None and p.original == MODULE
        assert source.in_code(p.cursor)
        line_start = p.text.rfind("\n", 0, p.cursor) + 1
        assert p.text[line_start : p.cursor].strip()  # something typed on the line
        assert "\n" not in p.truth and p.truth


def test_offsets_are_characters_not_bytes(source: SourceFile) -> None:
    start = MODULE.index("return os.path")
    assert source.in_code(start)
    string = MODULE.index('"ünï"')
    assert not source.in_code(string + 2)
    last = member_positions(source, "pkg")[3]
    assert last.member == "count" and MODULE[last.cursor : last.cursor + 5] == "count"


def test_draws_are_deterministic_distinct_and_take_turns(package: Path) -> None:
    other = package / "other"
    (other / "q").mkdir(parents=True)
    (other / "q" / "m.py").write_text("def f(a):\n    x = a.b\n    return x.c\n")
    sources = {
        "pkg": corpus.load_sources(package),
        "q": corpus.load_sources(other),
    }
    first = draw_positions(sources, "member", 6, seed=3)
    assert first == draw_positions(sources, "member", 6, seed=3)
    assert len({(p.package, p.file, p.cursor) for p in first}) == len(first)
    assert [p.package for p in first[:4]] == ["pkg", "q", "pkg", "q"]
    assert {p.package for p in first[4:]} == {"pkg"}  # q has only two member uses
    assert run_order(first) == sorted(range(len(first)), key=lambda i: first[i].package)


##### Judges #####


def test_parses_and_exact_and_next_identifier() -> None:
    assert parses("x = (1,\n 2)\n") and not parses("x = (1,\n")
    assert parses('s = "\\d"\n')  # an invalid escape warns, but parses
    assert exact("a = 1  \n", "a = 1") and not exact("a = 2", "a = 1")
    assert next_identifier_match("append(x)", "append")
    assert not next_identifier_match("appendx(x)", "append")
    assert not next_identifier_match("", "append")


def test_written_members_are_the_attributes_of_the_suggestion() -> None:
    doc = "import os\nx = os.\ny = 1\n"
    cursor = doc.index("os.") + 3
    sug = "path.join(a.b, 'c.d')"
    text = doc[:cursor] + sug + doc[cursor:]
    found = written_members(text, cursor, cursor + len(sug))
    assert [w.name for w in found] == ["path", "join", "b"]
    assert text[found[0].start : found[0].end] == "path"
    assert written_members(text, cursor, cursor) == []
    probed = probe_text(text, found[0])
    assert f"os.{PROBE}.join" in probed


def test_parse_mypy_reads_errors_with_and_without_codes() -> None:
    out = (
        'pkg/a.py:3:5: error: "list[str]" has no attribute "appendx"; maybe "append"?  [attr-defined]\n'
        "pkg/a.py:9:1: error: invalid syntax\n"
        "pkg/a.py:4:1: note: something\n"
    )
    found = parse_mypy(out)["pkg/a.py"]
    assert found[0] == MypyError(3, found[0].message, "attr-defined")
    assert found[1].code == "" and len(found) == 2


def test_union_attr_counts_only_when_every_real_item_lacks_the_member() -> None:
    union = 'Item "A" of "A | B[C | D] | None" has no attribute "x"'
    only_none = MypyError(1, 'Item "None" of "A | None" has no attribute "x"', "union-attr")
    one_of_two = MypyError(2, union, "union-attr")
    both = [
        MypyError(3, union, "union-attr"),
        MypyError(3, union.replace('Item "A"', 'Item "B[C | D]"'), "union-attr"),
    ]
    assert missing_names([only_none]) == []
    assert missing_names([one_of_two]) == []
    assert [n for _, n in missing_names(both)] == ["x"]
    none_only = MypyError(4, '"None" has no attribute "usage_key"', "attr-defined")
    assert missing_names([none_only]) == []  # mypy typed the receiver as None alone
    real = MypyError(5, 'Module has no attribute "joinpath"', "attr-defined")
    assert [n for _, n in missing_names([real])] == ["joinpath"]


def _case(text: str, span: tuple[int, int], names: tuple[str, ...]) -> MypyCase:
    return MypyCase("k", Path("."), "pkg/a.py", text, span, names, None)


def test_an_invented_member_must_be_new_on_the_suggestion_s_lines() -> None:
    text = "a = 1\nb = x.nope\nc = y.gone\n"
    span = (text.index("nope"), text.index("nope") + 4)
    err = MypyError(2, '"X" has no attribute "nope"', "attr-defined")
    elsewhere = MypyError(3, '"Y" has no attribute "gone"', "attr-defined")
    probe = [MypyError(2, f'"X" has no attribute "{PROBE}"', "attr-defined")]
    v = judge_case(_case(text, span, ("nope",)), [err, elsewhere], probe, [])
    assert v.invented == ("nope",) and v.judged
    # The original file had the same error (mypy's own blind spot): not new.
    v = judge_case(_case(text, span, ("nope",)), [err], [], [err])
    assert v.invented == () and not v.judged
    # A name the suggestion did not write is not its invention.
    v = judge_case(_case(text, span, ("other",)), [err], probe, [])
    assert v.invented == ()


SHAPES = "class Square:\n    side = 2\n    def area(self) -> int:\n        return self.side**2\n"
USE = (
    "from typing import Any\n"
    "from .shapes import Square\n\n"
    "def f(s: Square, u: Any) -> int:\n"
    "    return s.area() + u.anything\n"
)


def _mypy_case(root: Path, key: str, after: str, removed: str, suggestion: str) -> MypyCase:
    """``USE`` with ``removed`` (right after ``after``) replaced by ``suggestion``."""
    cursor = USE.index(after) + len(after)
    assert USE[cursor:].startswith(removed)
    text = USE[:cursor] + suggestion + USE[cursor + len(removed) :]
    span = (cursor, cursor + len(suggestion))
    w = written_members(text, *span)
    names = tuple(x.name for x in w)
    return MypyCase(key, root, "pkg/use.py", text, span, names, probe_text(text, w[0]))


def test_mypy_judges_a_package_and_knows_when_it_cannot(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "shapes.py").write_text(SHAPES)
    (tmp_path / "pkg" / "use.py").write_text(USE)
    cases = [
        _mypy_case(tmp_path, "real", "s.", "area() + u.anything", "area() + u.anything"),
        _mypy_case(tmp_path, "made", "s.", "area() + u.anything", "perimeter()"),
        _mypy_case(tmp_path, "any", "u.", "anything", "whatever"),  # u is Any
    ]
    verdicts = MypyJudge(tmp_path).judge(cases)
    assert [v.key for v in verdicts] == ["real", "made", "any"]
    assert verdicts[0].judged and verdicts[0].invented == ()
    assert verdicts[1].judged and verdicts[1].invented == ("perimeter",)
    assert not verdicts[2].judged and verdicts[2].invented == ()
    assert not list(tmp_path.rglob("_pie_*"))  # the package itself is left alone


##### Summary #####


def _row(constraints: str, **kw: object) -> Row:
    base: dict[str, object] = {
        "model": "m",
        "package": "p",
        "file": "f.py",
        "kind": "member",
        "mode": "line",
        "position": 0,
        "constraints": constraints,
        "text": "x",
        "truth": "x",
        "exact": True,
        "similarity": 1.0,
        "nim": True,
        "original_parses": True,
        "variant_parses": True,
        "document_parses": True,
        "members": (),
        "total_ms": 100.0,
        "decode_ms": 50.0,
        "tokens": 5,
        "counters": {"decodeCostSteps": 4.0},
    }
    return Row(**{**base, **kw})  # type: ignore[arg-type]


def test_cell_counts_invented_members_breaks_and_checks() -> None:
    rows = [
        _row("on", members=("a",), judged=True, invented=("a",)),
        _row("on", members=("b",), judged=True),
        _row("on", members=("c",), judged=False),
        _row("on", members=("d",), variant_parses=False, exact=False, similarity=0.5),
        _row("on", text="", exact=False, similarity=0.0, counters={"syntaxDropped": 1.0}),
        _row("on", variant_parses=False, document_parses=False, exact=False, similarity=0.5),
    ]
    c = cell(rows)
    assert (c["n"], c["shown"], c["memberWriting"], c["memberWritingParsed"], c["judged"]) == (
        6,
        5,
        4,
        3,
        2,
    )
    assert c["invented"]["rate"] == pytest.approx(1 / 3)
    assert c["inventedAmongJudged"]["rate"] == 0.5
    assert c["breaks"]["count"] == 2 and c["breaks"]["of"] == 5  # empty suggestions excluded
    # The last row's document was broken before its suggestion (a half-typed line).
    assert (c["breaksOfParsingDocuments"]["count"], c["breaksOfParsingDocuments"]["of"]) == (1, 4)
    assert c["dropped"]["count"] == 1
    assert c["exact"]["rate"] == 0.5 and c["similarity"] == pytest.approx(4 / 6)


def test_compare_overhead_latency_and_speculation() -> None:
    off = [
        _row(
            "off",
            total_ms=100.0,
            counters={"maskMs": 0.5, "draftTokens": 10.0, "acceptedTokens": 5.0},  # healing
        )
    ]
    on = [
        _row(
            "on",
            total_ms=105.0,
            exact=False,
            counters={
                "maskMs": 1.5,  # the oracle wait is part of it
                "oracleMs": 0.5,
                "syntaxMs": 1.0,
                "draftTokens": 10.0,
                "acceptedTokens": 4.0,
                "decodeCostSteps": 3.0,
            },
        )
    ]
    c = compare(off, on)
    assert c["latencyRatio"] == pytest.approx(1.05)
    assert c["exactDropPoints"] == pytest.approx(100.0)
    assert c["overheadOn"]["median"] == pytest.approx(2.5 / 50.0)
    assert c["overheadAdded"]["median"] == pytest.approx(2.0 / 50.0)  # less the off mask
    assert c["overheadOn"]["partsMs"]["oracleMs"]["median"] == 0.5
    assert c["speculation"]["off"]["acceptance"] == 0.5
    assert c["speculation"]["on"]["costStepsPerToken"] == pytest.approx(3.0 / 5)
    assert overhead([_row("on", decode_ms=0.0)])["n"] == 0  # typed through: nothing decoded
    # One token read off the prompt's logits: no decode step to take a share of.
    assert overhead([_row("on", decode_ms=2.0, counters={"syntaxMs": 1.5})])["n"] == 0


def _oracle(known: bool, allowed: bool | None, reason: str = "known") -> OracleRow:
    return OracleRow("m", "p", "f.py", 0, "x", known, allowed, reason, 3, 10.0)


def test_false_blocks_are_counted_among_known_answers() -> None:
    rows = [
        _oracle(True, True),
        _oracle(True, False),
        _oracle(False, None, "empty"),
        _oracle(True, True),
    ]
    fb = false_blocks(rows)
    assert fb["falseBlock"]["rate"] == pytest.approx(1 / 3)
    assert fb["unknown"]["rate"] == 0.25
    assert fb["reasons"] == {"known": 3, "empty": 1}


def test_targets_are_checked_against_the_issue() -> None:
    on = [_row("on", members=("a",), judged=True)] * 99 + [
        _row("on", members=("a",), judged=True, invented=("a",))
    ]
    model = {
        "falseBlocks": false_blocks([_oracle(True, True)]),
        "overheadAll": overhead(on),
        "overheadChecks": overhead(on, part=lambda r: r.checks_ms),
        "modes": {"line": compare([_row("off")] * 100, on)},
    }
    t = check_targets(model)
    assert t["inventedRateOn.line"]["met"] and t["inventedRateOn.line"]["value"] == 0.01
    assert t["falseBlockRate"]["met"] and t["breakRateOn.line"]["met"]
    assert t["latencyRatio.line"]["met"] and t["overheadMedian"]["met"] is True


def test_bootstrap_interval_brackets_the_mean() -> None:
    values = [1.0] * 10 + [0.0] * 90
    lo, hi = bootstrap_ci(values, seed=1) or (0.0, 0.0)
    assert lo < 0.1 < hi and lo >= 0.0 and hi <= 0.25
    assert bootstrap_ci([]) is None
    assert rate([True, False])["count"] == 1


##### The runner, with a stand-in engine #####


class _FakeOracle:
    """Knows ``size`` and ``grow`` at every position."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, float | None]] = []

    def members(self, query: object, budget_s: float | None) -> object:
        from completion.member_oracle import Members

        self.asked.append((query.text, query.offset, budget_s))  # type: ignore[attr-defined]
        return Members(frozenset({"size", "grow"}), "known")


class _FakeEngine:
    """Answers every request with ``.size`` (on) or ``.sizes`` (off); counts like the engine."""

    def __init__(self) -> None:
        from completion.engine import Totals

        self.totals = Totals()
        self.oracle = _FakeOracle()
        self.calls: list[tuple[str, object]] = []
        self.workspaces: list[list[str]] = []
        self.state = 0

    def drafting_state(self, key: str) -> int:
        return self.state

    def restore_drafting_state(self, state: int) -> None:
        self.calls.append(("restore", state))

    def prepare(self, req: object) -> None:
        self.calls.append(("prepare", req))

    def anticipate(self, req: object) -> bool:
        self.calls.append(("anticipate", req.options.members))  # type: ignore[attr-defined]
        return True

    def complete(self, req: object) -> object:
        from completion.engine import CompletionResult

        on = req.options.members  # type: ignore[attr-defined]
        self.state += 1
        self.calls.append(("complete", on))
        if on:
            self.totals.maskMs += 1.5
            self.totals.syntaxTrimmed += 1
        self.totals.draftTokens += 4
        return CompletionResult(
            "size" if on else "sizes", "line", "eos", 10, 0, 0, 0.0, 2, 30.0, 40.0
        )

    def forget(self, key: str) -> None:
        self.calls.append(("forget", key))

    def set_workspace(self, roots: list[str]) -> None:
        self.workspaces.append(roots)

    def warm_oracle(self, text: str, path: str | None, language: str) -> None:
        self.calls.append(("warm", path))


def test_the_runner_completes_each_position_off_and_on_from_one_state(
    package: Path, source: SourceFile
) -> None:
    from tooling.bench_constraints import Runner

    engine = _FakeEngine()
    runner = Runner("m", engine, 16, 512, {"pkg": package})  # type: ignore[arg-type]
    positions = [p for p in member_positions(source, "pkg") if p.member == "size"][:2]
    for i, pos in enumerate(positions):
        runner.run(i, pos)
    assert engine.workspaces == [[str(package)]]  # once per package
    assert [c for c in engine.calls if c[0] == "warm"] == [
        ("warm", positions[0].path)
    ]  # once per file
    completes = [c[1] for c in engine.calls if c[0] == "complete"]
    assert completes == [False, True, True, False]  # the order alternates
    # Each request follows its edit's oracle prefetch, as the server does on didChange.
    steps = [c for c in engine.calls if c[0] in ("anticipate", "complete")]
    assert steps == [x for on in completes for x in (("anticipate", on), ("complete", on))]
    restores = [c[1] for c in engine.calls if c[0] == "restore"]
    assert restores == [0, 0, 2, 2]  # both variants start from the state before the first
    rows = runner.rows
    assert [r.constraints for r in rows] == ["off", "on", "on", "off"]
    on = rows[1]
    assert on.nim and on.members == ("size",) and on.similarity > 0
    assert on.counters["maskMs"] == 1.5 and on.counters["syntaxTrimmed"] == 1
    assert rows[0].counters["maskMs"] == 0.0 and rows[0].counters["draftTokens"] == 4
    assert rows[0].nim is False and rows[0].members == ("sizes",)
    # The file's first request waited for the oracle on the file as saved, no budget.
    assert engine.oracle.asked == [(MODULE, positions[0].cursor, None)]
    oracle = runner.oracle_rows(list(enumerate(positions)))
    assert [(o.known, o.allowed, o.names) for o in oracle] == [(True, True, 2)] * 2
    assert engine.oracle.asked[1:] == [(p.text, p.cursor, None) for p in positions]


def test_mypy_verdicts_and_the_report_files(
    package: Path, source: SourceFile, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse
    import json

    from tooling.bench_constraints import mypy_verdicts, summarize_model, write
    from tooling.constraints_corpus import KINDS

    pos = next(p for p in member_positions(source, "pkg") if p.member == "items")
    base = _row("off", package="pkg", file=pos.file, position=0, truth=pos.truth)
    rows = [
        replace(base, text="items)", members=("items",)),
        replace(base, constraints="on", text="itemz)", members=("itemz",), exact=False),
    ]
    judged, info = mypy_verdicts(rows, {0: pos}, {"pkg": package})
    assert info["cases"] == 2
    assert judged[0].judged and judged[0].invented == ()
    assert judged[1].judged and judged[1].invented == ("itemz",)
    model = {"model": "m", "device": "cpu", "dtype": "float32", "mypy": info}
    model |= summarize_model(judged, [])
    report = {"split": "dev", "positionsPerKind": 1, "models": {"m": model}}
    args = argparse.Namespace(split="dev")
    write(report, judged, [], tmp_path / "out", args.split)
    data = json.loads((tmp_path / "out" / "constraints-dev.json").read_text())
    assert data["models"]["m"]["modes"]["line"]["off"]["invented"]["rate"] == 0.0
    assert data["models"]["m"]["modes"]["line"]["on"]["invented"]["rate"] == 1.0
    assert len(data["rows"]) == 2 and set(KINDS) >= {r["kind"] for r in data["rows"]}
    assert (tmp_path / "out" / "constraints-dev.png").stat().st_size > 0
    assert "inventedRateOn.line" in capsys.readouterr().out


def test_a_member_of_an_object_receiver_narrowed_on_its_line_is_not_blocked() -> None:
    head = "def f(value: object):\n    return value."
    pos = Position("p", "f.py", "/f.py", "member", head + "\n", len(head), "", "base")
    narrowed = replace(pos, truth="base if isinstance(value, Tiered) else value")
    assert narrowed_truth(narrowed)
    assert not narrowed_truth(replace(pos, truth="base"))
    assert not narrowed_truth(replace(pos, truth="base if isinstance(other, Tiered) else 0"))


def test_the_readme_row_shows_counts_and_the_on_sides_actions() -> None:
    from tooling.constraints_report import row

    def r(count: int, of: int) -> dict[str, int]:
        return {"count": count, "of": of}

    cell = {
        "n": 60, "exact": r(20, 60), "similarity": 0.604, "invented": r(1, 31),
        "breaks": r(2, 56), "breaksOfParsingDocuments": r(0, 18), "trimmed": r(2, 60),
        "closed": r(1, 60), "dropped": r(4, 60), "latencyMs": {"median": 261.6},
    }  # fmt: skip
    assert row("Qwen", "line", "on", cell) == (
        "| Qwen | line | on | 60 | 20/60 | 0.60 | 1/31 | 2/56 | 0/18 | 2/1/4 | 262 |"
    )
    assert row("Qwen", "line", "off", cell).endswith("| 0/18 | - | 262 |")
