"""Speculative decoding and typing-through reuse on the real models."""

from __future__ import annotations

import math
import random
import sysconfig
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cache.growing import growing_cache
from completion.decode import decode_one_token, prefill
from completion.drafting_policy import Acceptance, CostModel, Drafter
from completion.drafting_sources import NgramIndex
from completion.engine import CompletionOptions, CompletionRequest, Engine
from completion.models import is_converted, load_model, qwen_dir
from completion.verify import (
    SAFETY,
    AheadDraft,
    SpecStats,
    forward_with_draft,
    speculative_generate,
)
from tooling.bench_decode import make_position
from tooling.bench_edits import SOURCES
from tooling.engines import SnapshotEngine

pytestmark = pytest.mark.model

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MOVING_AVERAGE = Path(__file__).parent / "data" / "moving_average.py"


def positions(n: int, seed: int) -> list:
    rng = random.Random(seed)
    files = [STDLIB / s for s in SOURCES if (STDLIB / s).is_file()]
    out = []
    for attempt in range(n * 20):
        if len(out) >= n:
            break
        p = make_position(rng, files[attempt % len(files)], ("line", "block")[len(out) % 2], 2500)
        if p is not None:
            out.append(p)
    return out


def check_identical(on: Engine, off: Engine, n: int, seed: int) -> int:
    """Cold request, a re-ask after an edit above, the same again, a wrong character typed,
    then deleted and asked again; returns accepted drafts.

    The edit is a comment line ten lines above the cursor (inside the prompt window, so
    the cache update runs). The last re-ask has the text an earlier suggestion came from:
    all of that suggestion is verified in the cache update's forward, when the cost
    curve drafts it.
    """
    base = CompletionOptions(max_tokens=32, context_tokens=768)
    for i, p in enumerate(positions(n, seed)):
        key = f"doc{i}"
        starts = [0] + [j + 1 for j, c in enumerate(p.text[: p.cursor]) if c == "\n"]
        at = starts[max(0, len(starts) - 10)]
        edited = p.text[:at] + "# edited\n" + p.text[at:]
        at = p.cursor + 9
        wrong = edited[:at] + "@" + edited[at:]
        asks = ((p.text, p.cursor), (edited, at), (edited, at), (wrong, at + 1), (edited, at))
        for text, cursor in asks:
            a = on.complete(CompletionRequest(key, text, cursor, base))
            b = off.complete(CompletionRequest(key, text, cursor, replace(base, speculative=False)))
            assert a.text == b.text, (p.source, p.kind)
            assert a.generated_tokens == b.generated_tokens
    return on.totals.acceptedTokens


@pytest.fixture(scope="module")
def loaded_default():
    # fp32, as these tests were written for: near ties decided again, drafts merged into
    # the prompt's forward of any size. The low-bit default (row-exact) has its own below.
    return load_model("default", "cpu", "auto", quantize="none")


def test_default_model_identical_with_and_without_speculation(loaded_default) -> None:
    on, off = Engine(loaded_default), Engine(loaded_default)
    assert on.costs  # measured up front (a server does it in the background after loading)
    accepted = check_identical(on, off, 4, seed=3)
    assert on.totals.verifySteps > 0 and accepted > 0  # the drafts did hit
    assert off.totals.verifySteps == 0
    # The steps were timed: the curve in use has learned from them, and stays a curve.
    timed = on.costs.observed
    assert len(timed.get(1, ())) == min(on.totals.plainSteps, 16)
    assert 0 < sum(len(t) for n, t in timed.items() if n > 1) <= on.totals.verifySteps
    curve = on.verify_cost()
    assert curve["1"] == 1.0 and list(curve.values()) == sorted(curve.values())


def test_the_low_bit_default_model_is_identical_with_and_without_speculation() -> None:
    # The lossless guarantee on the default path (quantize auto: the file's int4 blocks):
    # the model is row-exact, so its verify steps compute the one-token steps' numbers
    # (drift 0) and no pick needs deciding again.
    loaded = load_model("default", "cpu", "auto")
    assert loaded.quantize == "int4"
    on, off = Engine(loaded), Engine(loaded)
    assert on.costs.drift == 0.0  # measured on these kernels
    assert check_identical(on, off, 2, seed=5) > 0
    assert on.totals.verifySteps > 0 and on.totals.nearTies == 0


def flat_costs(eng: Engine) -> CostModel:
    """A fixed verify-cost curve where short drafts cost what a step costs."""
    measured = eng.costs  # picks the linear paths
    curve = {1: 1.0, 2: 1.0, 4: 1.05, 8: 1.2, 16: 1.5}
    return CostModel(curve, measured.fast_rows, learn=False)


def test_re_asks_are_verified_in_the_cache_updates_forward(loaded_default) -> None:
    on, off = Engine(loaded_default), Engine(loaded_default)
    on._costs = flat_costs(on)
    assert check_identical(on, off, 2, seed=3) > 0
    assert on.totals.promptVerifySteps > 0


def test_a_re_ask_expects_what_the_model_said_as_it_said_it(loaded_default) -> None:
    """On a blank indented line the prompt ends before the line break (healing) and the
    model re-creates the break and the indentation under a constraint. Asked again with
    nothing changed, the expected tokens are its output's, from the first token on (they
    used to start with the healed indentation where the model had not said it, so that
    the draft fed with the prompt was rejected at its first token at every such re-ask)."""
    eng = Engine(loaded_default)
    opts = CompletionOptions(max_tokens=16, context_tokens=768)
    led = 0
    for i, p in enumerate(positions(8, seed=11)):
        if p.kind != "block":
            continue
        req = CompletionRequest(f"doc{i}", p.text, p.cursor, opts)
        eng.complete(req)
        _, context, start = eng.history.items[-1]
        out = context[start:]
        found = eng._expected(req, eng._prompt(req))
        assert found is not None, p.source
        ids = found[0]
        n = min(len(ids), len(out))
        assert n > 0 and ids[:n] == out[:n], (p.source, ids[:4], out[:4])
        healed = eng._prompt(req).healed
        led += healed.startswith("\n") and eng._recent[req.key][0].lead == healed
    assert led > 0  # the case above was met


def test_a_re_asked_suggestion_is_verified_ahead_while_its_picks_likely_come_again(
    loaded_default,
) -> None:
    eng = Engine(loaded_default)
    eng._costs = CostModel(
        {1: 1.0, 2: 1.1, 4: 1.3, 8: 1.7, 16: 2.5}, eng.costs.fast_rows, learn=False
    )
    tok = eng.tokenizer
    out = list(tok.encode("    return total / count\n", add_special_tokens=False))
    assert 4 <= len(out) <= 15
    opts = CompletionOptions(max_tokens=32)
    assert eng._draft_ahead(out, [5.0] * len(out), opts, line=False) == out  # clear picks
    thin = [5.0, 4.0, 0.1, 6.0] + [5.0] * (len(out) - 4)
    for _ in range(60):  # this model's thin picks flip when asked again
        eng.bands.observe([5.0, 0.1], [1, 2], [1, 3])
    assert eng.bands.rate(0.1) < 0.2 and eng.bands.rate(5.0) > 0.99
    assert eng._draft_ahead(out, thin, opts, line=False) == out[:2]
    assert eng._draft_ahead(out, [0.1, *thin[1:]], opts, line=False) == []
    # A completion remembers where each token of its suggestion ends and its margin...
    p = positions(1, seed=5)[0]
    r = eng.complete(CompletionRequest("doc", p.text, p.cursor, opts))
    text, cursor, suggestion, marks, _ = eng._recent["doc"][0]
    assert (text, cursor) == (p.text, p.cursor) and suggestion.startswith(r.text)
    ends = [e for e, _ in marks]
    assert ends == sorted(ends) and ends[-1] >= len(suggestion)
    # Greedy picks: each margin is finite (a sampled pick would be marked inf).
    assert all(0 <= m < math.inf for _, m in marks) and min(m for _, m in marks) >= r.min_margin
    # ...and asked again, learns how much of it came again.
    seen = eng.bands.counts[-1][1]
    eng.complete(CompletionRequest("doc", p.text, p.cursor, opts))
    assert eng.bands.counts[-1][1] > seen


def test_typing_through_a_suggestion_reuses_it(loaded_default) -> None:
    eng = Engine(loaded_default)
    text = "def greet(name):\n    return 'Hello, ' + "
    first = eng.complete(CompletionRequest("t.py", text, len(text)))
    assert len(first.text) >= 3, first.text
    typed = first.text[:2]
    second = eng.complete(CompletionRequest("t.py", text + typed, len(text) + 2))
    assert second.stop_reason == "reused" and second.text == first.text[2:]
    assert eng.totals.reusedCompletions == 1 and second.generated_tokens == 0
    # Typing something else runs the model again.
    third = eng.complete(CompletionRequest("t.py", text + typed + "#", len(text) + 3))
    assert third.stop_reason != "reused"
    assert eng.totals.reusedCompletions == 1


def test_code_in_another_open_document_is_drafted_from(loaded_default) -> None:
    lib = MOVING_AVERAGE.read_text(encoding="utf-8")
    text = "import math\n\n" + lib[: lib.index("    for i") + len("    for i")]
    opts = CompletionOptions(max_tokens=48, context_tokens=768)
    results = {}
    for others in ((), (("lib.py", lib),)):
        eng = Engine(loaded_default)
        # Verification as cheap as a step, so any draft is tried whatever this machine's
        # measured curve says (the choice of length is tested apart).
        eng._costs = CostModel({n: 1.0 for n in range(1, 40)}, learn=False)
        r = eng.complete(CompletionRequest("new.py", text, len(text), opts, others))
        results[bool(others)] = (r.text, eng.totals.draftsBySource["workspace"][0])
    assert results[True][0] == results[False][0]  # lossless either way
    assert results[True][1] > 0 and results[False][1] == 0  # lib.py was drafted from


def test_drafting_state_restored_repeats_a_request_exactly(loaded_default) -> None:
    """bench decode times a request several times from one state: the repeats must be
    the same work (same output, same drafts), not a re-ask that drafts from the first."""
    eng = SnapshotEngine(loaded_default)
    assert eng.costs
    p = positions(1, seed=11)[0]
    opts = CompletionOptions(
        max_tokens=32, context_tokens=768, confidence_margin=0.0
    )  # as the bench
    eng.complete(CompletionRequest("d", p.text, p.cursor, opts))
    edited = "# edited\n" + p.text
    state = eng.drafting_state("d")
    counts = []
    for _ in range(2):
        before = eng.totals.draftTokens, eng.totals.acceptedTokens
        r = eng.complete(CompletionRequest("d", edited, p.cursor + 9, opts))
        counts.append(
            (r.text, eng.totals.draftTokens - before[0], eng.totals.acceptedTokens - before[1])
        )
        eng.restore_drafting_state(state)
    assert counts[0] == counts[1]
    # Without the restore, the second ask drafts from the first ask's answer.
    eng.complete(CompletionRequest("d", edited, p.cursor + 9, opts))
    before = eng.totals.acceptedTokens
    again = eng.complete(CompletionRequest("d", edited, p.cursor + 9, opts))
    assert again.text == counts[0][0]
    assert eng.totals.acceptedTokens - before >= counts[0][2]


@pytest.mark.qwen
@pytest.mark.skipif(
    not is_converted(qwen_dir()), reason="the opt-in Qwen2.5-Coder model is not installed"
)
def test_qwen_fim_identical_with_and_without_speculation() -> None:
    loaded = load_model("qwen2.5-coder-0.5b", "cpu", "auto")
    on, off = Engine(loaded), Engine(loaded)
    assert on.format.fim and on.costs
    on._costs = flat_costs(on)  # what is drafted must not depend on this machine's load
    check_identical(on, off, 2, seed=5)
    # (At these positions Qwen's suggestions are too short to be fed with the prompt:
    # that path is tested with the default model, and is model-independent.)
    assert on.totals.verifySteps > 0


TEXTWRAP = STDLIB / "textwrap.py"


def test_default_model_speculation_decodes_as_a_fresh_plain_decoder(loaded_default) -> None:
    """Token for token, at positions all over a real file: drafts that are the plain
    output itself (long accepted runs), a corrupted copy, earlier outputs, and some fed
    with the prompt's last span. Also: the drift the calibration measured on random
    tokens, times the safety factor, covers what verify forwards differ by here."""
    model = loaded_default.model
    costs = Engine(loaded_default).costs  # the server's calibration, drift included
    assert costs.drift is not None and costs.drift > 0
    ids = list(loaded_default.tokenizer.encode(TEXTWRAP.read_text(), add_special_tokens=False))
    rng = random.Random(7)
    history: list[list[int]] = []
    n, span, worst, stats = 24, 32, 0.0, SpecStats()
    for at in range(400, len(ids) - n, (len(ids) - 400) // 10):
        prompt = ids[max(0, at - 600) : at]
        # Plain decoding, the prompt encoded as a cache update does (its last span apart).
        cache = growing_cache(model.config)
        prefill(model, prompt[:-span], cache, 0)
        rows = [prefill(model, prompt[-span:], cache, len(prompt) - span)]
        reference = []
        for i in range(n):
            reference.append(int(torch.argmax(rows[-1])))
            if i < n - 1:
                rows.append(decode_one_token(model, reference[-1], cache, len(prompt) + i))
        # What a verify forward over the same tokens differs by.
        cache.crop(-(n - 1))
        with torch.inference_mode():
            verify = model(
                input_ids=torch.tensor([reference[:16]]),
                past_key_values=cache,
                position_ids=torch.arange(len(prompt), len(prompt) + 16).unsqueeze(0),
                logits_to_keep=16,
            ).logits[0]
        worst = max(worst, float((verify - torch.stack(rows[1:17])).abs().max()))
        # Speculative decoding from the same encoding.
        wrong = list(reference)
        wrong[rng.randrange(n)] = rng.randrange(len(ids))
        cache = growing_cache(model.config)
        prefill(model, prompt[:-span], cache, 0)
        ahead = rng.choice([[], reference[: rng.randint(1, n - 1)], wrong[: n - 1]])
        last, fed = forward_with_draft(model, prompt[-span:], ahead, cache, len(prompt) - span)
        drafter = Drafter(
            prompt=NgramIndex(),
            history=NgramIndex(),
            max_draft=16,
            costs=CostModel({k: 1.0 for k in range(1, 40)}, drift=costs.drift, learn=False),
            acceptance=Acceptance(),
        )
        drafter.prompt.add(list(prompt))
        drafter.history.add_many([*history[-4:], prompt[-4:] + wrong, prompt[-4:] + reference])
        verified = AheadDraft(ahead, fed) if ahead else None
        out = speculative_generate(
            model,
            cache,
            last,
            len(prompt),
            n,
            drafter,
            stats,
            context=prompt[-8:],
            verified=verified,
        )
        assert list(out) == reference, at
        history.append(prompt[-4:] + reference)
    assert stats.acceptedTokens > 100
    assert worst <= SAFETY * costs.drift, (worst, costs.drift)
