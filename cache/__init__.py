"""Edit-aware KV cache: per-document prompt caches (no LSP imports here)."""

from .prompt_cache import STRATEGIES, CacheStore, PromptCache, Strategy, SyncResult, common_prefix

__all__ = ["STRATEGIES", "CacheStore", "PromptCache", "Strategy", "SyncResult", "common_prefix"]
