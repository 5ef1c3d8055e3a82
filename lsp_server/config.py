"""Server configuration: typed, defaulted, validated, in one place.

Keys are camelCase on the wire (``initializationOptions`` and
``workspace/didChangeConfiguration``), as the editor clients send them::

    {
      "model": "default",            # "default", "qwen2.5-coder-0.5b", a hub id, a dir or a .gguf
      "device": "auto",              # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
      "dtype": "auto",               # "auto" | "float32" | "float16" | "bfloat16"
      "quantize": "auto",            # "auto" | "none" | "int8" | "int4" (CPU: low-bit weights)
      "trustRemoteCode": false,
      "completion": {
        "maxTokens": 64,
        "temperature": 0.0,          # 0 = greedy, deterministic
        "multiline": "auto",         # "auto" | "always" | "never"
        "contextTokens": 2048,       # prompt budget in tokens
        "maxItems": 3,               # suggestions for an invoked request (cycling)
        "panelItems": 5,             # drafts a suggestions panel asks for by default (1-10)
        "workspaceTokens": 0.25      # share of contextTokens for other files' definitions
      },
      "cache": {"strategy": "pie", "tailTokens": 32, "afterEditTokens": 32, "staleBudget": 512,
                "confidenceMargin": 0.05, "gateRefreshTokens": 128, "maxStaleTokens": -1,
                "idleRefreshMs": 800, "maxDocuments": 8, "maxMemoryMB": 2048,
                "diskMB": 2048, "diskDir": ""},  # diskDir "": $PIE_LSP_CACHE_DIR/kv
      "speculative": {"enabled": true, "maxDraftTokens": 16},
      "constraints": {"members": true, "syntax": true, "oracleBudgetMs": -1},
      "workspace": {"watch": true, "maxFiles": 20000}
    }

An invalid value never stops the server: it is reported and its default is used.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from cache import STRATEGIES
from completion.lowbit import QUANTIZE

MULTILINE = ("auto", "always", "never")
DTYPES = ("auto", "float32", "float16", "bfloat16", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class CompletionConfig:
    """``completion.*``."""

    maxTokens: int = 64
    """Most tokens generated for one completion (1-1024)."""
    temperature: float = 0.0
    """0 is greedy and deterministic; above 0 samples (0-2)."""
    multiline: str = "auto"
    """auto: one line inside a line, a block on an empty line; always; never."""
    contextTokens: int = 2048
    """Prompt budget in tokens, split between the text before and after the cursor."""
    maxItems: int = 3
    """Suggestions returned when completion is invoked explicitly (cycling); automatic
    requests (while typing) get one, so typing never waits for alternatives."""
    panelItems: int = 5
    """Drafts ``pie/panelCompletion`` returns when the request gives no ``count``."""
    workspaceTokens: float = 0.25
    """Share of ``contextTokens`` for definitions the file uses from other workspace
    files (Python imports resolved in the workspace folders); 0 turns it off."""


@dataclass(frozen=True)
class CacheConfig:
    """``cache.*``."""

    strategy: str = "pie"
    """How a document's cached prompt follows edits: pie | prefix | recompute."""
    tailTokens: int = 32
    """pie: the prompt's last tokens (nearest the cursor) re-encoded at every update."""
    afterEditTokens: int = 32
    """pie: kept tokens right after each edit that are re-encoded with it."""
    staleBudget: int = 512
    """pie (drift budget): past this many stale tokens a document is re-encoded in the
    background once it is idle; never blocking a completion."""
    confidenceMargin: float = 0.05
    """pie: when stale tokens are cached and a pick that made the suggestion won by less
    than this logit margin, re-encode them and decode again (exact; 0: never)."""
    gateRefreshTokens: int = 128
    """pie: the most stale tokens the gate re-encodes inside a request (-1: no limit).
    Past it the suggestion is answered from the cache as it is and the stale tokens
    are refreshed in the background at once; the next request decides exactly."""
    maxStaleTokens: int = -1
    """pie: hard cap on stale tokens at completion time (-1: none; 0: always exact).
    Past it the stale tokens nearest the cursor are re-encoded before decoding."""
    idleRefreshMs: int = 800
    """pie: how long a document must be quiet before a background refresh starts."""
    maxDocuments: int = 8
    """Documents whose prompt caches are kept; the least recently used is evicted."""
    maxMemoryMB: int = 2048
    """Memory for all documents' keys and values; least recently used evicted past it."""
    diskMB: int = 2048
    """Disk for prompt caches saved across restarts (0: none saved); least recently used
    evicted past it."""
    diskDir: str = ""
    """Where they are saved ("": ``kv/`` under the cache directory, ``$PIE_LSP_CACHE_DIR``)."""


@dataclass(frozen=True)
class SpeculativeConfig:
    """``speculative.*``."""

    enabled: bool = True
    """Verify drafts (earlier suggestions, the prompt) in one forward pass: same output
    as plain decoding, fewer steps when drafts hit."""
    maxDraftTokens: int = 16
    """Most drafted tokens per verify step; the measured verify cost may draft fewer."""


@dataclass(frozen=True)
class ConstraintsConfig:
    """``constraints.*``."""

    members: bool = True
    """Member monitor: a member access may only name a member the static analysis
    (jedi for Python, tree-sitter symbol tables for JavaScript/TypeScript) knows;
    where it knows nothing, nothing is constrained."""
    syntax: bool = True
    """A suggestion that leaves the file less parseable (tree-sitter) is trimmed,
    closed or dropped."""
    oracleBudgetMs: int = -1
    """How long a decode step waits for the member oracle (-1: one measured decode
    step). A later answer still serves the finished suggestion and the next request."""


@dataclass(frozen=True)
class WorkspaceConfig:
    """``workspace.*``."""

    watch: bool = True
    """Follow the workspace folders' files on disk (the editor's watcher, else watchdog):
    a file changed while closed is marked, a deleted one's saved cache dropped."""
    maxFiles: int = 20000
    """Most source files known per server (the walk stops there)."""


@dataclass(frozen=True)
class Config:
    """Everything a client can set."""

    model: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    quantize: str = "auto"
    """CPU only: the linear layers' weights in low bits (``int8``, ``int4``) or ``none``."""
    trustRemoteCode: bool = False
    completion: CompletionConfig = field(default_factory=CompletionConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    constraints: ConstraintsConfig = field(default_factory=ConstraintsConfig)
    workspace: WorkspaceConfig = field(default_factory=WorkspaceConfig)

    def model_key(self) -> tuple[str, str, str, str, bool]:
        """The settings whose change means loading another model."""
        return (self.model, self.device, self.dtype, self.quantize, self.trustRemoteCode)


def _check(section: str, name: str, value: Any, default: Any) -> tuple[Any, str | None]:
    """Validate one leaf value; returns (value to use, problem or None)."""
    key = f"{section}.{name}" if section else name
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value, None
        return default, f"{key} must be true or false, got {value!r}"
    if isinstance(default, int):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or int(value) != value
        ):
            return default, f"{key} must be an integer, got {value!r}"
        value = int(value)
        bounds = {
            "maxTokens": (1, 1024),
            "maxItems": (1, 8),
            "panelItems": (1, 10),
            "maxDraftTokens": (0, 64),
            "contextTokens": (64, 131072),
            "maxDocuments": (1, 256),
            "tailTokens": (1, 4096),
            "afterEditTokens": (0, 4096),
            "staleBudget": (0, 1 << 20),
            "maxStaleTokens": (-1, 1 << 20),
            "gateRefreshTokens": (-1, 1 << 20),
            "idleRefreshMs": (0, 600_000),
            "maxMemoryMB": (16, 1 << 20),
            "diskMB": (0, 1 << 22),
            "maxFiles": (0, 1_000_000),
            "oracleBudgetMs": (-1, 10_000),
        }
        lo, hi = bounds.get(name, (0, 2**31))
        if not lo <= value <= hi:
            return default, f"{key} must be between {lo} and {hi}, got {value}"
        return value, None
    if isinstance(default, float):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return default, f"{key} must be a number, got {value!r}"
        flo, fhi = {"confidenceMargin": (0.0, 20.0), "workspaceTokens": (0.0, 0.75)}.get(
            name, (0.0, 2.0)
        )
        if not flo <= float(value) <= fhi:
            return default, f"{key} must be between {flo:g} and {fhi:g}, got {value}"
        return float(value), None
    if name == "diskDir" and isinstance(value, str):
        return value.strip(), None  # "": the default place
    if not isinstance(value, str) or not value.strip():
        return default, f"{key} must be a non-empty string, got {value!r}"
    choices = {
        "multiline": MULTILINE,
        "strategy": STRATEGIES,
        "dtype": DTYPES,
        "quantize": QUANTIZE,
    }.get(name)
    if choices and value not in choices:
        return default, f"{key} must be one of {', '.join(choices)}; got {value!r}"
    if name == "device" and not (
        value in ("auto", "cpu", "mps", "cuda") or re.fullmatch(r"cuda:\d+", value)
    ):
        return default, f"device must be auto, cpu, cuda, cuda:N or mps; got {value!r}"
    return value, None


def _parse_section(section: str, raw: Any, base: Any) -> tuple[Any, list[str]]:
    problems: list[str] = []
    if raw is None:
        return base, problems
    if not isinstance(raw, dict):
        return base, [f"{section or 'options'} must be an object, got {raw!r}"]
    known = {f.name: f for f in fields(base)}
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            where = f"{section}.{name}" if section else name
            problems.append(f"unknown setting {where!r} (ignored)")
            continue
        current = getattr(base, name)
        if hasattr(current, "__dataclass_fields__"):
            sub, sub_problems = _parse_section(name, value, current)
            changes[name] = sub
            problems.extend(sub_problems)
            continue
        default = getattr(type(base)(), name)
        checked, problem = _check(section, name, value, default)
        if problem:
            problems.append(problem)
        changes[name] = checked
    return replace(base, **changes), problems


def parse_config(raw: Any, base: Config | None = None) -> tuple[Config, list[str]]:
    """Build a :class:`Config` from client options on top of ``base`` (or the defaults).

    Returns the config and a list of human-readable problems: an invalid value falls
    back to its default and is listed, unknown keys are listed and ignored.
    """
    return _parse_section("", raw, base or Config())


def settings_from_did_change(settings: Any) -> Any:
    """``workspace/didChangeConfiguration`` settings: ours, under ``pie`` if nested."""
    if isinstance(settings, dict) and isinstance(settings.get("pie"), dict):
        return settings["pie"]
    return settings
