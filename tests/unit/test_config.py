"""Configuration parsing: defaults, validation, fallbacks and partial updates."""

from __future__ import annotations

import pytest

from cache import STRATEGIES
from lsp_server.config import (
    CacheConfig,
    CompletionConfig,
    Config,
    parse_config,
    settings_from_did_change,
)

VALID = {
    "model": "qwen2.5-coder-0.5b",
    "device": "cuda:1",
    "dtype": "bfloat16",
    "quantize": "int4",
    "trustRemoteCode": True,
    "completion": {
        "maxTokens": 128,
        "temperature": 0.7,
        "multiline": "never",
        "contextTokens": 4096,
    },
    "cache": {"strategy": "recompute", "maxDocuments": 3},
}


def test_defaults():
    for raw in (None, {}):
        config, problems = parse_config(raw)
        assert config == Config()
        assert problems == []
    config = Config()
    assert config.model == "default"
    assert config.device == "auto"
    assert config.dtype == "auto"
    assert config.trustRemoteCode is False
    assert config.completion == CompletionConfig(64, 0.0, "auto", 2048)
    assert config.cache == CacheConfig(strategy="pie", maxDocuments=8)
    assert config.cache.strategy == "pie" and config.cache.tailTokens == 32
    assert config.model_key() == ("default", "auto", "auto", "auto", False)


def test_valid_nested_values():
    config, problems = parse_config(VALID)
    assert problems == []
    assert config.model == "qwen2.5-coder-0.5b"
    assert config.device == "cuda:1"
    assert config.dtype == "bfloat16"
    assert config.trustRemoteCode is True
    assert config.completion == CompletionConfig(128, 0.7, "never", 4096)
    assert config.cache == CacheConfig(strategy="recompute", maxDocuments=3)
    assert config.model_key() == ("qwen2.5-coder-0.5b", "cuda:1", "bfloat16", "int4", True)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:7", "mps"])
def test_valid_devices(device):
    config, problems = parse_config({"device": device})
    assert problems == []
    assert config.device == device


@pytest.mark.parametrize(
    "dtype", ["auto", "float32", "float16", "bfloat16", "fp32", "fp16", "bf16"]
)
def test_valid_dtypes(dtype):
    config, problems = parse_config({"dtype": dtype})
    assert problems == []
    assert config.dtype == dtype


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_valid_strategies(strategy):
    config, problems = parse_config({"cache": {"strategy": strategy}})
    assert problems == []
    assert config.cache.strategy == strategy


def test_numbers_are_coerced():
    config, problems = parse_config(
        {"completion": {"maxTokens": 32.0, "temperature": 1, "contextTokens": 64}}
    )
    assert problems == []
    assert config.completion.maxTokens == 32
    assert isinstance(config.completion.maxTokens, int)
    assert config.completion.temperature == 1.0
    assert isinstance(config.completion.temperature, float)
    config, problems = parse_config({"completion": {"temperature": 2}})
    assert problems == [] and config.completion.temperature == 2.0


def test_bounds_are_inclusive():
    raw = {
        "completion": {"maxTokens": 1024, "contextTokens": 131072, "temperature": 0},
        "cache": {"maxDocuments": 256},
    }
    config, problems = parse_config(raw)
    assert problems == []
    raw = {"completion": {"maxTokens": 1, "contextTokens": 64}, "cache": {"maxDocuments": 1}}
    config, problems = parse_config(raw)
    assert problems == []
    assert (config.completion.maxTokens, config.cache.maxDocuments) == (1, 1)


# (path to the key, invalid value, key name expected in the problem)
INVALID = [
    (("model",), "", "model"),
    (("model",), "   ", "model"),
    (("model",), 3, "model"),
    (("model",), None, "model"),
    (("device",), "gpu", "device"),
    (("device",), "CUDA", "device"),
    (("device",), 0, "device"),
    (("dtype",), "float64", "dtype"),
    (("quantize",), "int3", "quantize"),
    (("quantize",), 4, "quantize"),
    (("dtype",), "int8", "dtype"),
    (("dtype",), True, "dtype"),
    (("trustRemoteCode",), "yes", "trustRemoteCode"),
    (("trustRemoteCode",), 1, "trustRemoteCode"),
    (("completion", "maxTokens"), 0, "completion.maxTokens"),
    (("completion", "maxTokens"), 1025, "completion.maxTokens"),
    (("completion", "maxTokens"), -5, "completion.maxTokens"),
    (("completion", "maxTokens"), 1.5, "completion.maxTokens"),
    (("completion", "maxTokens"), "64", "completion.maxTokens"),
    (("completion", "maxTokens"), True, "completion.maxTokens"),
    (("completion", "maxTokens"), None, "completion.maxTokens"),
    (("completion", "temperature"), -0.1, "completion.temperature"),
    (("completion", "temperature"), 2.5, "completion.temperature"),
    (("completion", "temperature"), "hot", "completion.temperature"),
    (("completion", "temperature"), False, "completion.temperature"),
    (("completion", "temperature"), float("nan"), "completion.temperature"),
    (("completion", "multiline"), "sometimes", "completion.multiline"),
    (("completion", "multiline"), "Auto", "completion.multiline"),
    (("completion", "multiline"), 1, "completion.multiline"),
    (("completion", "contextTokens"), 63, "completion.contextTokens"),
    (("completion", "contextTokens"), 131073, "completion.contextTokens"),
    (("completion", "contextTokens"), [2048], "completion.contextTokens"),
    (("cache", "strategy"), "pie-magic", "cache.strategy"),
    (("cache", "strategy"), "", "cache.strategy"),
    (("cache", "maxDocuments"), 0, "cache.maxDocuments"),
    (("cache", "maxDocuments"), 257, "cache.maxDocuments"),
    (("cache", "maxDocuments"), "8", "cache.maxDocuments"),
]


def with_value(path, value):
    raw = {
        "model": VALID["model"],
        "device": VALID["device"],
        "dtype": VALID["dtype"],
        "quantize": VALID["quantize"],
        "trustRemoteCode": VALID["trustRemoteCode"],
        "completion": dict(VALID["completion"]),
        "cache": dict(VALID["cache"]),
    }
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return raw


def get(config, path):
    value = config
    for key in path:
        value = getattr(value, key)
    return value


def all_leaves(config):
    return {
        ("model",): config.model,
        ("device",): config.device,
        ("dtype",): config.dtype,
        ("quantize",): config.quantize,
        ("trustRemoteCode",): config.trustRemoteCode,
        **{("completion", k): getattr(config.completion, k) for k in VALID["completion"]},
        **{("cache", k): getattr(config.cache, k) for k in VALID["cache"]},
    }


@pytest.mark.parametrize(("path", "value", "key"), INVALID, ids=[repr(c[:2]) for c in INVALID])
def test_invalid_value_falls_back_to_default(path, value, key):
    config, problems = parse_config(with_value(path, value))
    assert len(problems) == 1, problems
    assert key in problems[0]
    assert get(config, path) == get(Config(), path)
    # Every other (valid) value is kept.
    expected = all_leaves(parse_config(VALID)[0])
    expected[path] = get(Config(), path)
    assert all_leaves(config) == expected


@pytest.mark.parametrize("section", ["completion", "cache"])
@pytest.mark.parametrize("value", [5, "fast", [1, 2], True])
def test_non_dict_section(section, value):
    raw = {"model": "m", section: value}
    config, problems = parse_config(raw)
    assert len(problems) == 1
    assert section in problems[0]
    assert getattr(config, section) == getattr(Config(), section)
    assert config.model == "m"


def test_null_section_keeps_base():
    config, problems = parse_config({"completion": None, "model": "m"})
    assert problems == []
    assert config.completion == CompletionConfig()
    assert config.model == "m"


@pytest.mark.parametrize("raw", [5, "x", [1], True])
def test_non_dict_options(raw):
    config, problems = parse_config(raw)
    assert config == Config()
    assert len(problems) == 1
    assert "options" in problems[0]


def test_unknown_keys_are_reported_and_ignored():
    raw = {
        "modle": "typo",
        "completion": {"maxTokens": 10, "maxTokenz": 11},
        "cache": {"size": 1},
    }
    config, problems = parse_config(raw)
    assert len(problems) == 3
    assert any("modle" in p for p in problems)
    assert any("completion.maxTokenz" in p for p in problems)
    assert any("cache.size" in p for p in problems)
    assert config.model == "default"
    assert config.completion.maxTokens == 10
    assert config.cache == CacheConfig()


def test_several_problems_at_once():
    raw = {
        "device": "tpu",
        "completion": {"maxTokens": 0, "temperature": 0.5, "multiline": "x"},
        "cache": {"strategy": "nope", "maxDocuments": 4},
    }
    config, problems = parse_config(raw)
    assert len(problems) == 4
    for key in ("device", "completion.maxTokens", "completion.multiline", "cache.strategy"):
        assert any(key in p for p in problems), key
    assert config.device == "auto"
    assert config.completion == CompletionConfig(64, 0.5, "auto", 2048)
    assert config.cache == CacheConfig(strategy="pie", maxDocuments=4)


def test_partial_update_respects_base():
    base, problems = parse_config(VALID)
    assert problems == []
    config, problems = parse_config({"completion": {"temperature": 0.2}}, base)
    assert problems == []
    assert config.completion == CompletionConfig(128, 0.2, "never", 4096)
    assert config.cache == base.cache
    assert config.model_key() == base.model_key()
    config, problems = parse_config({"model": "other"}, base)
    assert config.model == "other"
    assert config.completion == base.completion
    config, problems = parse_config({}, base)
    assert config == base
    config, problems = parse_config(None, base)
    assert config == base


def test_invalid_update_on_base_is_reported():
    base, _ = parse_config(VALID)
    config, problems = parse_config({"completion": {"maxTokens": -1, "temperature": 0.3}}, base)
    assert len(problems) == 1
    assert "completion.maxTokens" in problems[0]
    # The documented fallback is the default, not the base's value.
    assert config.completion.maxTokens == CompletionConfig().maxTokens
    assert config.completion.temperature == 0.3
    assert config.completion.contextTokens == 4096
    assert config.cache == base.cache


def test_config_is_immutable():
    config = Config()
    with pytest.raises(AttributeError):
        config.model = "x"  # type: ignore[misc]


def test_settings_from_did_change():
    inner = {"model": "m"}
    assert settings_from_did_change({"pie": inner}) is inner
    assert settings_from_did_change(inner) is inner
    assert settings_from_did_change({"pie": "notadict", "model": "m"}) == {
        "pie": "notadict",
        "model": "m",
    }
    assert settings_from_did_change(None) is None
    assert settings_from_did_change([1]) == [1]
    config, problems = parse_config(settings_from_did_change({"pie": VALID}))
    assert problems == []
    assert config == parse_config(VALID)[0]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_integer_setting_is_a_problem_not_a_crash(value):
    config, problems = parse_config({"completion": {"maxTokens": value}})
    assert config.completion.maxTokens == 64
    assert len(problems) == 1
    assert "completion.maxTokens" in problems[0]


@pytest.mark.parametrize("device", ["cuda:", "cuda:x", "cuda:-1"])
def test_malformed_cuda_device_is_rejected(device):
    config, problems = parse_config({"device": device})
    assert config.device == "auto"
    assert len(problems) == 1


def test_speculative_and_max_items_settings():
    config, problems = parse_config(
        {"speculative": {"enabled": False, "maxDraftTokens": 8}, "completion": {"maxItems": 5}}
    )
    assert problems == []
    assert config.speculative.enabled is False and config.speculative.maxDraftTokens == 8
    assert config.completion.maxItems == 5
    config, problems = parse_config(
        {"speculative": {"enabled": "yes", "maxDraftTokens": 100}, "completion": {"maxItems": 0}}
    )
    assert len(problems) == 3
    assert config.speculative.enabled is True and config.speculative.maxDraftTokens == 16
    assert config.completion.maxItems == 3


def test_confidence_margin_has_its_own_bounds():
    config, problems = parse_config({"cache": {"confidenceMargin": 12}})
    assert problems == [] and config.cache.confidenceMargin == 12.0
    for bad in (-1, 20.5, "high", True):
        config, problems = parse_config({"cache": {"confidenceMargin": bad}})
        assert len(problems) == 1 and "cache.confidenceMargin" in problems[0]
        assert config.cache.confidenceMargin == CacheConfig().confidenceMargin


def test_cache_defaults_are_the_engines():
    from completion.engine import (
        AFTER_EDIT_TOKENS,
        CONFIDENCE_MARGIN,
        GATE_REFRESH_TOKENS,
        TAIL_TOKENS,
    )

    c = CacheConfig()
    assert (c.tailTokens, c.afterEditTokens, c.confidenceMargin, c.gateRefreshTokens) == (
        TAIL_TOKENS,
        AFTER_EDIT_TOKENS,
        CONFIDENCE_MARGIN,
        GATE_REFRESH_TOKENS,
    )


def test_gate_refresh_tokens_takes_minus_one_and_refuses_less():
    config, problems = parse_config({"cache": {"gateRefreshTokens": -1}})
    assert problems == [] and config.cache.gateRefreshTokens == -1
    config, problems = parse_config({"cache": {"gateRefreshTokens": -2}})
    assert len(problems) == 1 and "cache.gateRefreshTokens" in problems[0]
    assert config.cache.gateRefreshTokens == CacheConfig().gateRefreshTokens
