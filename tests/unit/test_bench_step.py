"""``pie-lsp bench step``'s summary of a numeric path against fp32."""

from __future__ import annotations

from tooling.bench_step import PathRun, summarize


def test_a_path_is_summarized_against_fp32_measured_in_the_same_run() -> None:
    base = PathRun("fp32", [99.0] * 3 + [40.0] * 10, {2: 60.0}, 3.0, [1, 2, 3, 4], ["a", "b"])
    fast = PathRun(
        "int4", [99.0] * 3 + [10.0] * 9 + [30.0], {2: 15.0}, 2.0, [1, 2, 9, 4], ["a", "c"]
    )
    row = summarize(fast, base)
    assert row["stepMs"]["median"] == 10.0  # the first three steps are warm-up
    assert row["speedupVsFp32"] == 4.0 and row["tokensPerSecond"] == 100.0
    assert row["verifyRelative"] == {2: 1.5} and row["prefillVsFp32"] == 1.5
    assert (row["sameTokensAsFp32"], row["firstDifference"]) == (3, 2)
    assert (row["sameCompletionsAsFp32"], row["completions"]) == (1, 2)
    assert summarize(base, base)["firstDifference"] is None
