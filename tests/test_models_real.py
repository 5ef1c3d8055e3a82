"""Real weights: the default model, a local checkpoint directory, the opt-in FIM model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from completion.engine import CompletionOptions, CompletionRequest, Engine
from completion.fim import build_prompt
from completion.models import ModelLoadError, is_converted, load_model, qwen_dir, resolve

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def default_engine() -> Engine:
    return Engine(load_model("default", "cpu", "auto"))


def test_default_model_loads_its_files_4_bit_weights_on_cpu(default_engine: Engine) -> None:
    # quantize "auto": the embedded Q4_1 file's weights run on the int4 layers, the rest
    # of the model (and the cache) in fp32, and the model is row-exact.
    from completion.fastpath import row_exact
    from completion.lowbit import LowBitLinear

    loaded = default_engine.loaded
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    assert loaded.quantize == "int4" and row_exact(loaded.model)
    assert all(m.kind == "int4" for m in loaded.model.modules() if isinstance(m, LowBitLinear))
    assert Path(loaded.path, "model.safetensors").is_file()
    assert default_engine.format.name == "prefix-only"  # SmolLM2 has no FIM tokens
    facts = default_engine.describe()
    assert (facts["forward"], facts["rowExact"]) == ("lean", True)
    assert load_model("default", "cpu", "auto", quantize="none").quantize == "none"


def test_default_model_completes_a_return_statement(default_engine: Engine) -> None:
    text = "def add(a: int, b: int) -> int:\n    return \n"
    r = default_engine.complete(CompletionRequest("add.py", text, text.index("return ") + 7))
    assert r.mode == "line"
    assert "a" in r.text and "b" in r.text and "\n" not in r.text


@pytest.mark.parametrize(
    ("text", "rest"),
    [
        ("import sys\n\ndef main():\n    args = sys.ar", "gv"),
        ("class Foo:\n    def __in", "it"),
        ("data = [1, 2]\nfor i in ra", "nge"),
    ],
)
def test_a_half_typed_word_is_finished(default_engine: Engine, text: str, rest: str) -> None:
    # Token healing: the prompt is cut before the half-typed word and the model re-creates
    # it under a constraint. Without it, SmolLM2 continued from the odd tokens the word
    # split into ("sys.ar" -> "()", "for i in ra" -> "iz_list:").
    for speculative in (True, False):
        opts = CompletionOptions(max_tokens=12, speculative=speculative)
        r = default_engine.complete(CompletionRequest("half.py", text, len(text), opts))
        assert r.text.startswith(rest), (text, r.text)


def test_special_token_text_in_documents_is_data(default_engine: Engine) -> None:
    text = 'END = "<|endoftext|>"\nSTART = "<|im_start|>"\nvalue = '
    r = default_engine.complete(CompletionRequest("special.py", text, len(text)))
    assert r.prompt_tokens > 10  # the look-alikes were tokenized as text, not as 1 id each
    tok = default_engine.tokenizer
    ids = build_prompt(tok, default_engine.format, text, len(text), 2048).ids
    special = {tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>")}
    assert not special & set(ids)


def test_prompts_stay_inside_the_models_trained_context(default_engine: Engine) -> None:
    assert default_engine.max_positions == 8192  # SmolLM2-135M
    eng = Engine(default_engine.loaded)
    eng.max_positions = 300  # as if the model had been trained on 300 positions
    text = "".join(f"value_{i} = {i} * 2\n" for i in range(200)) + "total = "
    opts = CompletionOptions(max_tokens=16, context_tokens=4096)
    r = eng.complete(CompletionRequest("long.py", text, len(text), opts))
    assert 200 < r.prompt_tokens <= 300 - 16 - 8


def test_local_checkpoint_directory(tmp_path: Path, default_engine: Engine) -> None:
    """Any transformers checkpoint directory loads (here a tiny random Llama)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = default_engine.tokenizer
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    engine = Engine(load_model(str(tmp_path), "cpu", "float32"))
    text = "def f(x):\n    return "
    r = engine.complete(CompletionRequest("t.py", text, len(text), CompletionOptions(max_tokens=4)))
    assert r.generated_tokens >= 1


def test_missing_path_and_offline_hub_id_fail_with_reasons() -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        resolve("/no/such/model.gguf")
    with pytest.raises(ModelLoadError, match="not found"):
        resolve("./no/such/dir")
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model("default", "cpu", "float8")


def test_cli_complete_prints_a_completion(tmp_path: Path) -> None:
    src = tmp_path / "cli_sample.py"
    src.write_text("def add(a, b):\n    return \n", encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lsp_server",
            "complete",
            str(src),
            "--line",
            "1",
            "--character",
            "11",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "lsp_server",
            "complete",
            str(src),
            "--line",
            "9",
            "--character",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "line 9" in bad.stderr


def test_cli_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lsp_server", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("pie-lsp ")
    helped = subprocess.run(
        [sys.executable, "-m", "lsp_server", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "complete" in helped.stdout


qwen = pytest.mark.skipif(
    not is_converted(qwen_dir()),
    reason="the opt-in Qwen2.5-Coder model is not installed (pie-lsp models install qwen2.5-coder-0.5b)",
)


@qwen
@pytest.mark.qwen
def test_qwen_fills_the_middle_and_stops_at_the_suffix() -> None:
    engine = Engine(load_model("qwen2.5-coder-0.5b", "cpu", "auto"))
    assert engine.format.name == "qwen"
    assert engine.loaded.quantize == "int8"  # its file is mostly 5-bit blocks
    text = (
        "def fibonacci(n: int) -> int:\n"
        '    """Return the n-th Fibonacci number."""\n'
        "    if n < 2:\n"
        "        return n\n"
        "    return \n"
        "\n\n"
        "def main() -> None:\n"
        "    print(fibonacci(10))\n"
    )
    cursor = text.index("    return \n") + len("    return ")
    r = engine.complete(CompletionRequest("fib.py", text, cursor, CompletionOptions(max_tokens=32)))
    assert r.text.replace(" ", "") == "fibonacci(n-1)+fibonacci(n-2)"
    # Block mode in the middle: the body is filled and generation stops before the suffix.
    text2 = (
        "def is_even(n: int) -> bool:\n"
        "    \n"
        "\n\n"
        "def is_odd(n: int) -> bool:\n"
        "    return not is_even(n)\n"
    )
    cursor2 = text2.index("    \n") + 4
    r2 = engine.complete(
        CompletionRequest("even.py", text2, cursor2, CompletionOptions(max_tokens=48))
    )
    assert r2.mode == "block"
    assert "%" in r2.text or "&" in r2.text
    assert "def is_odd" not in r2.text


def test_single_line_suggestions_never_start_with_a_line_break(default_engine: Engine) -> None:
    # At a cursor after indentation only, SmolLM2 starts most suggestions with a line
    # break ("\ndef wrap(text, width=70, ..."): an empty ghost line. With multiline
    # "never" it is made to write on the cursor's line instead.
    import textwrap

    lines = Path(textwrap.__file__).read_text(encoding="utf-8").split("\n")
    indented = [i for i, line in enumerate(lines) if i > 40 and line.startswith("    ")]
    shown = []
    for i in indented[:: max(1, len(indented) // 12)][:12]:
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip(" "))]
        prefix = "\n".join(lines[:i]) + "\n" + indent
        text = prefix + "\n" + "\n".join(lines[i + 1 :])
        opts = CompletionOptions(max_tokens=24, multiline="never")
        r = default_engine.complete(CompletionRequest("wrap.py", text, len(prefix), opts))
        assert "\n" not in r.text and "\r" not in r.text, (i, r.text)
        shown.append(r.text)
    assert sum(bool(t.strip()) for t in shown) >= 9, shown  # suggestions, not silence


def test_a_probe_decodes_unstopped_and_completes_as_plain_decoding(
    default_engine: Engine,
) -> None:
    from tooling.engines import ProbeEngine

    text = "def add(a: int, b: int) -> int:\n    return a"
    opts = CompletionOptions(max_tokens=8, speculative=False, multiline="never")
    req = CompletionRequest("probe.py", text, len(text), opts)
    result, ids = ProbeEngine(default_engine.loaded).probe(req, 32)
    assert len(ids) == 32  # no stop rule, no stop token: a fixed length
    assert result.text == Engine(default_engine.loaded).complete(req).text


def read_q4_1(path: Path, config: object) -> dict[str, tuple[torch.Tensor, ...]]:
    """A llama GGUF file's Q4_1 linear weights as (q, d, m) per transformers module.

    A block: fp16 d, fp16 m, 16 bytes of two 4-bit values (value j in the low nibble of
    byte j, j + 16 in its high nibble), w = q * d + m. Query and key rows are stored
    permuted by llama.cpp's converter; undone here as transformers undoes it.
    """
    import gguf
    import numpy as np

    modules = {
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}  # type: ignore[attr-defined]
    out = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        _, layer, kind, _ = t.name.split(".") if t.name.count(".") == 3 else ("", "", "", "")
        if t.tensor_type != gguf.GGMLQuantizationType.Q4_1 or kind not in modules:
            continue
        rows = t.data.shape[0]
        blocks = np.ascontiguousarray(t.data).reshape(rows, -1, 20)
        d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        q = np.concatenate([blocks[..., 4:] & 0x0F, blocks[..., 4:] >> 4], -1).reshape(rows, -1)
        parts = [torch.from_numpy(x.astype(np.int32) if x is q else x) for x in (q, d, m)]
        if kind in heads:
            h = heads[kind]
            parts = [
                x.reshape(h, rows // h // 2, 2, -1).transpose(1, 2).reshape(x.shape) for x in parts
            ]
        out[f"model.layers.{layer}.{modules[kind]}"] = tuple(parts)
    return out


def test_int4_is_the_embedded_files_own_q4_1_blocks() -> None:
    # Q4_1 rounds each block of 32 from its minimum to its maximum in 15 steps, as int4
    # does: rounding the fp32 copy again gives the file's own values, bit for bit.
    from completion.lowbit import LowBitLinear
    from completion.models import default_gguf_path

    fp32 = load_model("default", "cpu", "auto", quantize="none").model
    blocks = read_q4_1(default_gguf_path(), fp32.config)
    assert len(blocks) == 7 * fp32.config.num_hidden_layers  # every linear layer but the head
    for name, (q, d, m) in blocks.items():
        weight = fp32.get_submodule(name).weight
        w = q.float() * d.repeat_interleave(32, 1) + m.repeat_interleave(32, 1)
        assert torch.equal(w, weight.float()), name  # the fp32 copy is the file's values
        again, own = LowBitLinear.int4(weight), LowBitLinear.from_int4(q, d, m)
        assert torch.equal(again.packed, own.packed), name
        assert torch.equal(again.scales, own.scales), name


PANEL_TEXT = (
    "import os\n\n\ndef list_python_files(root: str) -> list[str]:\n"
    '    """Every .py file under root, sorted."""\n    found = []\n'
    "    for dirpath, _dirs, files in os.walk(root):\n        for name in files:\n"
    "            if \n    return sorted(found)\n"
)
PANEL_CURSOR = PANEL_TEXT.index("if \n") + 3


def test_the_panel_gives_distinct_drafts_after_the_inline_completion(
    default_engine: Engine,
) -> None:
    from completion.panel import normalised

    req = CompletionRequest("panel.py", PANEL_TEXT, PANEL_CURSOR, language="python")
    inline = default_engine.complete(req).text
    default_engine.forget("panel.py")
    shown: list[str] = []
    result = default_engine.panel(req, 5, on_item=lambda item: shown.append(item.text))
    texts = [item.text for item in result.items]
    assert result.batched and texts[0] == inline and result.items[0].greedy
    assert 3 <= len(texts) <= 5 and len({normalised(t) for t in texts}) == len(texts)
    # Each item was streamed as it ended; a draft the inline completion turned out to
    # repeat was streamed too, and left out of the final list.
    assert sorted(shown) == sorted(texts + result.withdrawn)
    assert all(item.syntax_valid is not None for item in result.items)
    # The batch read the prompt's cache and left it as the prompt.
    assert default_engine.cached_tokens("panel.py") == result_prompt_tokens(default_engine, req)


def result_prompt_tokens(engine: Engine, req: CompletionRequest) -> int:
    return len(engine._prompt(req).ids)


def test_a_cancelled_panel_stops_and_the_next_one_answers(default_engine: Engine) -> None:
    from completion.cancel import Cancelled, CancelToken

    req = CompletionRequest("cancel.py", PANEL_TEXT, PANEL_CURSOR, language="python")
    token = CancelToken()
    with pytest.raises(Cancelled):
        default_engine.panel(req, 5, token, on_item=lambda item: token.cancel())
    assert len(default_engine.panel(req, 3).items) >= 2
