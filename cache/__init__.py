"""Edit-aware KV cache: per-document prompt caches (no LSP imports here)."""

from .alignment import Segment, common_prefix, diff_ids
from .disk_store import DiskStore, Fingerprint, Saved
from .prompt_cache import STRATEGIES, CacheStore, Exported, PromptCache, Strategy, SyncResult
from .rope import Rerotator, find_rotary, rerotation_support

__all__ = [
    "STRATEGIES",
    "CacheStore",
    "DiskStore",
    "Exported",
    "Fingerprint",
    "PromptCache",
    "Rerotator",
    "Saved",
    "Segment",
    "Strategy",
    "SyncResult",
    "common_prefix",
    "diff_ids",
    "find_rotary",
    "rerotation_support",
]
