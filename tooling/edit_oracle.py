"""The edit-stream oracle at scale: incremental state equals a rebuild, step by step.

Random edits in one position encoding over several documents (code with emoji, CJK,
combining marks, CRLF and lone CR), with completions and cancelled completions in
between. After every step: the document's text equals the replay of the edits
(:class:`tooling.fuzz_protocol.Replay`, written apart from the server's position code),
the tree completions decode against (the document's incremental tree, parsed again by
the engine where it has errors: :func:`completion.syntax.exact_tree`) equals a fresh
parse of that text (kinds, byte ranges, points), and
after every completion the prompt cache's token ids equal the prompt built from scratch,
its keys and values as many as its ids. ``pie-lsp bench oracle`` runs it long; the test
suite runs it short (tests/test_edit_oracle.py).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lsp_server.positions import ENCODINGS, Encoding

from .fuzz_protocol import PIECES, Replay

SEED_TEXTS = (
    "# -*- coding: utf-8 -*- 形状 😀\r\nimport os\r\n\ndef 形状(x, y='😀'):\n"
    '    """Docstring with CJK 漢字 and emoji 🙂."""\r\n    total = x + y  # 注释 😀\n'
    "    if total:\r\n        return '形' * 3\n    return None\n",
    "class Point:\r\n    def __init__(self, x, y):\r\n        self.x = x\r\n"
    "        self.y = y\r\n\r\n    def norm(self):\r\n        return (self.x ** 2 + "
    "self.y ** 2) ** 0.5\r\n",
    'def café(naïve: str) -> str:\r    """e\u0301 a\u0308\u0323 👩\u200d💻"""\r'
    "    return naïve.upper()\rprint(café('x'))\n",
)
"""The documents at the start: CRLF, lone CR, astral, combining and joined characters."""


@dataclass
class OracleCounts:
    """What one stream did and found."""

    encoding: str
    seed: int
    edits: int = 0
    completions: int = 0
    cancelled: int = 0
    text_divergences: int = 0
    tree_divergences: int = 0
    token_divergences: int = 0
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def divergences(self) -> int:
        """Every kind together."""
        return self.text_divergences + self.tree_divergences + self.token_divergences


def nodes(tree: Any) -> list[tuple[str, int, int, tuple[int, int], tuple[int, int]]]:
    """Every node of a tree in document order: kind, byte range, points."""
    out = []
    cursor = tree.walk()
    while True:
        node = cursor.node
        out.append(
            (
                node.type,
                node.start_byte,
                node.end_byte,
                tuple(node.start_point),
                tuple(node.end_point),
            )
        )
        if cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return out


class CancelAfter:
    """A cancel token that cancels itself at its ``n``-th check (mid-sync or decode)."""

    def __init__(self, n: int) -> None:
        from completion.cancel import CancelToken

        self.token = CancelToken()
        self.left = n
        check = self.token.check

        def counting() -> None:
            self.left -= 1
            if self.left <= 0:
                self.token.cancel("oracle")
            check()

        self.token.check = counting  # type: ignore[method-assign]


def run_stream(
    engine: Any, encoding: Encoding, edits: int, seed: int, complete_every: int = 10
) -> OracleCounts:
    """One stream of ``edits`` edits, checked after each.

    ``engine`` (None: no completions) completes every ``complete_every`` edits, one
    time in three cancelled partway.
    """
    from completion.syntax import exact_tree, make_parser
    from lsp_server.documents import Document

    rng = random.Random(seed)
    counts = OracleCounts(encoding, seed)
    t0 = time.perf_counter()
    replay = Replay(encoding)
    docs = {}
    for i, text in enumerate(SEED_TEXTS):
        uri = f"file:///oracle/doc{i}.py"
        docs[uri] = Document.open(uri, text, 1, "python")
        replay.open(uri, text)
    parser = make_parser("python")
    while counts.edits < edits:
        uri = rng.choice(sorted(docs))
        doc, mine = docs[uri], replay.docs[uri]
        start, end = _position(rng, replay, mine.text), _position(rng, replay, mine.text)
        if rng.random() < 0.6:
            end = start
        new = "".join(rng.choice(PIECES) for _ in range(rng.choice((0, 1, 1, 1, 2, 4))))
        doc.apply_change(start, end, new, encoding)
        replay.change(uri, (*start, *end), new, counts.edits + 2)
        counts.edits += 1
        if doc.text != mine.text:
            counts.text_divergences += 1
            _example(counts, f"text after edit {counts.edits}: {doc.text!r} != {mine.text!r}")
            doc.replace_all(mine.text)
        assert parser is not None
        used = exact_tree(doc.tree, doc.text, "python")  # the tree completions decode against
        if used is not None and nodes(used) != nodes(
            parser.parse(doc.text.encode("utf-8", "surrogatepass"))
        ):
            counts.tree_divergences += 1
            _example(counts, f"tree after edit {counts.edits} ({new!r}) of {doc.text!r}")
        if engine is not None and counts.edits % complete_every == 0:
            _complete(engine, doc, rng, counts)
    counts.seconds = round(time.perf_counter() - t0, 1)
    return counts


def _position(rng: random.Random, replay: Replay, text: str) -> tuple[int, int]:
    line, character = replay.position(text, rng.randint(0, len(text)))
    roll = rng.random()
    if roll < 0.05:
        return line, character + rng.randint(1, 20)  # past the line's end
    if roll < 0.08:
        return line + rng.randint(1, 3), character  # past the document's end
    if roll < 0.12:
        return line, max(0, character - 1) + 1  # maybe inside a code point
    return line, character


def _complete(engine: Any, doc: Any, rng: random.Random, counts: OracleCounts) -> None:
    from completion.cancel import Cancelled
    from completion.engine import CompletionOptions, CompletionRequest

    opts = CompletionOptions(max_tokens=4, context_tokens=rng.choice((256, 1024)))
    cursor = rng.randint(0, len(doc.text))
    req = CompletionRequest(doc.uri, doc.text, cursor, opts, language="python", tree=doc.tree)
    cancel = CancelAfter(rng.randint(1, 6)) if rng.random() < 1 / 3 else None
    try:
        engine.complete(req, cancel.token if cancel else None)
        counts.completions += 1
    except Cancelled:
        counts.cancelled += 1
    pc = engine.caches.peek(doc.uri)
    if pc is None or pc.kv is None:
        return
    held = pc.kv.get_seq_length() if hasattr(pc.kv, "get_seq_length") else len(pc.ids)
    if held != len(pc.ids):
        counts.token_divergences += 1
        _example(counts, f"cache holds {held} positions for {len(pc.ids)} ids")
    if cancel is None:
        prompt = engine._prompt(req).ids
        if pc.ids[: len(prompt)] != prompt:
            counts.token_divergences += 1
            _example(counts, f"cached ids differ from the prompt at edit {counts.edits}")


def _example(counts: OracleCounts, text: str) -> None:
    if len(counts.examples) < 5:
        counts.examples.append(text[:400])


def run_oracle(args: argparse.Namespace) -> int:
    """``pie-lsp bench oracle``: a stream per encoding; 0 when nothing diverged."""
    import tempfile

    from completion.engine import Engine
    from completion.models import load_model

    from .tiny_model import make_tiny_model

    scratch = Path(tempfile.mkdtemp(prefix="pie-oracle-"))
    engine = Engine(load_model(str(make_tiny_model(scratch / "tiny")), "cpu", "auto"))
    results = []
    for i, encoding in enumerate(ENCODINGS):
        counts = run_stream(engine, encoding, args.edits, args.seed + i)
        results.append(counts)
        print(
            f"[{encoding}] {counts.edits} edits, {counts.completions} completions, "
            f"{counts.cancelled} cancelled: divergences text {counts.text_divergences}, "
            f"tree {counts.tree_divergences}, tokens {counts.token_divergences} "
            f"({counts.seconds} s) {counts.examples[:1]}",
            file=sys.stderr,
        )
    engine.close()
    report = {
        "edits": sum(c.edits for c in results),
        "divergences": sum(c.divergences for c in results),
        "streams": [{**asdict(c), "divergences": c.divergences} for c in results],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "oracle.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "streams"}))
    print(f"written: {path}", file=sys.stderr)
    return 0 if report["divergences"] == 0 else 1
