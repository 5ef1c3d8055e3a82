"""Property: random interleavings of everything a client sends, against the real server.

Opens, edits (emoji, CJK, CRLF), closes, configuration changes, completions and
cancellations arrive in a random order drawn from a seed, many without waiting for the
one before. The server must answer every request (a result or an error response), keep
serving, count no failed completion, and hold exactly the texts a replay of the edits
gives (``pie/stats`` reports each document's sha256). A tiny random model with the
default model's tokenizer keeps the forwards cheap; the server, its threads and its
caches are the real ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient, client_capabilities

from tooling.client import _plain

from .conftest import DATA, server_config, units, uri_for

pytestmark = [pytest.mark.e2e, pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

SEEDS = (1, 2, 3)
STEPS = 120
PIECES = ("x", " ", "😀", "漢字", "\r\n", "\n", "def f():", "    return 1", "é", "\t")
FILES = ("sample_unicode.py", "sample_crlf.py", "moving_average.py")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random two-layer Llama saved with the default model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from completion.models import load_model

    path = tmp_path_factory.mktemp("tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(load_model("default", "cpu", "auto").path)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest_lsp.fixture(
    scope="module",
    config=server_config(),
)
async def client(lsp_client: LanguageClient, tiny_model: Path):
    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),  # utf-16 positions
        initialization_options={"model": str(tiny_model), "dtype": "float32"},
    )
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


def position(text: str, offset: int) -> types.Position:
    """The utf-16 LSP position of str ``offset`` (line breaks are \\n or \\r\\n here)."""
    line_start = text.rfind("\n", 0, offset) + 1
    return types.Position(
        line=text.count("\n", 0, offset), character=units(text[line_start:offset], "utf-16")
    )


def boundary(rng: random.Random, text: str) -> int:
    """A random offset that does not split a \\r\\n pair."""
    offset = rng.randint(0, len(text))
    return (
        offset - 1 if 0 < offset < len(text) and text[offset - 1 : offset + 1] == "\r\n" else offset
    )


class Session:
    """One seed's client: the texts it sent, and every request still to be answered."""

    def __init__(self, client: LanguageClient, seed: int) -> None:
        self.client = client
        self.rng = random.Random(seed)
        self.texts: dict[str, str] = {}
        self.versions: dict[str, int] = {}
        self.pending: dict[str, asyncio.Future[Any]] = {}

    def open(self) -> None:
        name = self.rng.choice(FILES)
        uri = uri_for(f"interleave_{self.rng.randint(0, 3)}_{name}")
        if uri in self.texts:
            return
        text = (DATA / name).read_bytes().decode("utf-8")
        self.texts[uri], self.versions[uri] = text, 1
        item = types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=item))

    def edit(self, uri: str) -> None:
        text = self.texts[uri]
        a, b = sorted((boundary(self.rng, text), boundary(self.rng, text)))
        b = min(b, a + 12)
        b -= 1 if 0 < b < len(text) and text[b - 1 : b + 1] == "\r\n" else 0
        b = max(a, b)
        new = "".join(self.rng.choice(PIECES) for _ in range(self.rng.randint(0, 3)))
        self.versions[uri] += 1
        change = types.TextDocumentContentChangePartial(
            range=types.Range(start=position(text, a), end=position(text, b)), text=new
        )
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=uri, version=self.versions[uri]
                ),
                content_changes=[change],
            )
        )
        self.texts[uri] = text[:a] + new + text[b:]

    def close(self, uri: str) -> None:
        del self.texts[uri], self.versions[uri]
        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )

    def configure(self) -> None:
        settings = {
            "completion": {
                "maxTokens": self.rng.randint(1, 12),
                "multiline": self.rng.choice(["auto", "always", "never"]),
            },
            "cache": {"strategy": self.rng.choice(["pie", "prefix", "recompute"])},
            "speculative": {"enabled": self.rng.random() < 0.5},
        }
        self.client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"pie": settings})
        )

    def ask(self, uri: str) -> None:
        text = self.texts[uri]
        msg_id = uuid.uuid4().hex
        method = self.rng.choice(
            [types.TEXT_DOCUMENT_INLINE_COMPLETION, types.TEXT_DOCUMENT_COMPLETION]
        )
        where = types.TextDocumentIdentifier(uri=uri)
        at = position(text, boundary(self.rng, text))
        params: Any = (
            types.InlineCompletionParams(
                text_document=where,
                position=at,
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Invoked
                ),
            )
            if method == types.TEXT_DOCUMENT_INLINE_COMPLETION
            else types.CompletionParams(text_document=where, position=at)
        )
        # pygls' plain send writes at once (pytest-lsp's async one only when its task
        # runs, after the notifications that follow it here).
        future = self.client.protocol.send_request(method, params, msg_id=msg_id)
        self.pending[msg_id] = asyncio.wrap_future(future)

    def cancel(self) -> None:
        msg_id = self.rng.choice(sorted(self.pending))
        self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))

    async def step(self) -> None:
        roll = self.rng.random()
        uris = sorted(self.texts)
        if not uris or roll < 0.08:
            self.open()
        elif roll < 0.45:
            self.edit(self.rng.choice(uris))
        elif roll < 0.52:
            self.close(self.rng.choice(uris))
        elif roll < 0.58:
            self.configure()
        elif roll < 0.85:
            self.ask(self.rng.choice(uris))
        elif self.pending:
            self.cancel()
        if self.rng.random() < 0.2:
            await asyncio.sleep(self.rng.random() * 0.05)  # let the worker get ahead

    async def answers(self) -> list[Any]:
        """Every request's answer (a result, or the error it was answered with)."""
        _, unanswered = await asyncio.wait(self.pending.values(), timeout=120)
        assert not unanswered, f"{len(unanswered)} of {len(self.pending)} requests unanswered"
        return [f.exception() or f.result() for f in self.pending.values()]


@pytest.mark.parametrize("seed", SEEDS)
async def test_random_interleavings_are_all_answered_and_texts_replay(
    client: LanguageClient, seed: int
) -> None:
    session = Session(client, seed)
    for _ in range(STEPS):
        await session.step()
    answers = await session.answers()
    assert len(answers) == len(session.pending) > 0
    for answer in answers:
        cancelled = isinstance(answer, JsonRpcException) and answer.code == -32800
        assert cancelled or not isinstance(answer, JsonRpcException), answer  # RequestCancelled
    stats = _plain(await client.protocol.send_request_async("pie/stats", None))
    assert stats["model"]["status"] == "ready"
    assert stats["totals"]["errors"] == 0
    held = {d["uri"]: d["sha256"] for d in stats["documents"]}
    assert held == {
        uri: hashlib.sha256(text.encode("utf-8")).hexdigest() for uri, text in session.texts.items()
    }
    for uri in list(session.texts):
        session.close(uri)
