"""Edit-aware KV cache: per-document prompt caches (no LSP imports here)."""

from .alignment import Segment, common_prefix, diff_ids
from .prompt_cache import STRATEGIES, CacheStore, PromptCache, Strategy, SyncResult
from .rope import Rerotator, find_rotary, rerotation_support

__all__ = [
    "STRATEGIES",
    "CacheStore",
    "PromptCache",
    "Rerotator",
    "Segment",
    "Strategy",
    "SyncResult",
    "common_prefix",
    "diff_ids",
    "find_rotary",
    "rerotation_support",
]
