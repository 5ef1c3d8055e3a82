"""Prompt caches on disk (cache/disk_store.py): round trip, checks, eviction, privacy."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import torch

from cache.disk_store import DiskStore, Fingerprint, Saved
from cache.growing import growing_cache
from completion.decode import prefill

FP = Fingerprint("weights-hash", "float32", "theta=10000", "5", "int4")


def saved(key: str = "file:///a.py", n: int = 6, seed: int = 0) -> Saved:
    gen = torch.Generator().manual_seed(seed)
    layers = [
        (torch.randn(1, 2, n, 8, generator=gen), torch.randn(1, 2, n, 8, generator=gen))
        for _ in range(3)
    ]
    stale = bytearray(n)
    stale[2] = stale[3] = 1
    return Saved(key, "text-hash", list(range(100, 100 + n)), stale, layers)


def equal(a: Saved, b: Saved) -> bool:
    return (
        (a.key, a.text_sha256, a.ids, a.stale) == (b.key, b.text_sha256, b.ids, b.stale)
        and len(a.layers) == len(b.layers)
        and all(
            torch.equal(k1, k2) and torch.equal(v1, v2) and k1.dtype == k2.dtype
            for (k1, v1), (k2, v2) in zip(a.layers, b.layers, strict=True)
        )
    )


def test_a_saved_cache_loads_back_bit_for_bit(tmp_path: Path, tiny_llama) -> None:
    store = DiskStore(tmp_path / "kv", 1 << 30)
    entry = saved()
    assert store.save(FP, entry)
    loaded = store.load(FP, entry.key)
    assert loaded is not None and equal(loaded, entry)
    # A real model's growing cache (views into larger buffers) too.
    model = tiny_llama(40, 256, 0)
    cache = growing_cache(model.config)
    ids = list(range(1, 30))
    prefill(model, ids, cache, 0)
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    real = Saved("file:///b.py", "h", ids, bytearray(len(ids)), layers)
    assert store.save(FP, real)
    back = store.load(FP, "file:///b.py")
    assert back is not None and equal(back, real)
    assert store.errors == 0 and store.nbytes() > 0


def test_another_model_or_document_is_a_miss(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, 1 << 30)
    store.save(FP, saved())
    other = Fingerprint("weights-hash", "float32", "theta=10000", "5", "none")
    assert store.load(other, "file:///a.py") is None
    assert store.load(FP, "file:///other.py") is None
    assert store.errors == 0


def entry_files(store: DiskStore) -> tuple[Path, Path]:
    (manifest,) = store.root.glob("*.json")
    return manifest, manifest.with_suffix(".safetensors")


def test_truncated_corrupted_or_foreign_entries_are_discarded_and_counted(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, 1 << 30)
    for damage in ("truncate", "flip", "fingerprint", "json"):
        store.save(FP, saved())
        manifest, tensors = entry_files(store)
        if damage == "truncate":
            tensors.write_bytes(tensors.read_bytes()[:-100])
        elif damage == "flip":
            data = bytearray(tensors.read_bytes())
            data[-5] ^= 0xFF
            tensors.write_bytes(bytes(data))
        elif damage == "fingerprint":
            m = json.loads(manifest.read_text())
            m["fingerprint"]["dtype"] = "bfloat16"
            manifest.write_text(json.dumps(m))
        else:
            manifest.write_text("{not json")
        assert store.load(FP, "file:///a.py") is None, damage
        assert not list(store.root.glob("*.json")), damage  # discarded
    assert store.errors == 4


def test_least_recently_used_entries_go_past_the_cap(tmp_path: Path) -> None:
    one = DiskStore(tmp_path / "probe", 1 << 30)
    one.save(FP, saved("file:///probe.py"))
    size = one.nbytes()
    store = DiskStore(tmp_path / "kv", int(size * 2.5))  # room for two entries
    for name in ("a", "b"):
        store.save(FP, saved(f"file:///{name}.py"))
        time.sleep(0.02)
    assert store.load(FP, "file:///a.py") is not None  # a is used: b is now the oldest
    time.sleep(0.02)
    store.save(FP, saved("file:///c.py"))
    assert store.load(FP, "file:///b.py") is None
    assert store.load(FP, "file:///a.py") is not None
    assert store.load(FP, "file:///c.py") is not None
    assert store.nbytes() <= store.cap_bytes


def test_the_store_is_private(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "kv", 1 << 30)
    store.save(FP, saved())
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
    for path in store.root.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_a_store_that_cannot_write_or_is_off_stores_nothing_and_keeps_going(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    store = DiskStore(blocked / "kv", 1 << 30)
    assert not store.save(FP, saved()) and store.errors == 1
    assert store.load(FP, "file:///a.py") is None
    off = DiskStore(tmp_path / "off", 0)
    assert not off.save(FP, saved()) and off.load(FP, "file:///a.py") is None
    assert not (tmp_path / "off").exists()
