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
from cache.prompt_cache import Exported
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
    return Saved(key, "text-hash", Exported(list(range(100, 100 + n)), stale, layers), start=3)


def equal(a: Saved, b: Saved) -> bool:
    return (
        (a.key, a.text_sha256, a.start) == (b.key, b.text_sha256, b.start)
        and (a.cached.ids, a.cached.stale) == (b.cached.ids, b.cached.stale)
        and len(a.cached.layers) == len(b.cached.layers)
        and all(
            torch.equal(k1, k2) and torch.equal(v1, v2) and k1.dtype == k2.dtype
            for (k1, v1), (k2, v2) in zip(a.cached.layers, b.cached.layers, strict=True)
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
    real = Saved("file:///b.py", "h", Exported(ids, bytearray(len(ids)), layers))
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


def test_a_store_in_a_shared_directory_touches_only_its_own_files(tmp_path: Path) -> None:
    # cache.diskDir may name a directory that holds other files: eviction must never
    # delete them, and an existing directory keeps its mode.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    mine = shared / "settings.json"
    mine.write_text("{}")
    os.utime(mine, (1, 1))  # the oldest file there
    store = DiskStore(shared, 1)  # a cap that nothing fits: evict all it can
    store.save(FP, saved("file:///a.py"))
    store.save(FP, saved("file:///b.py"))
    assert mine.read_text() == "{}"
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o755
    assert store.nbytes() > 0  # the newest entry stays, past the cap


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


def test_a_restored_cache_goes_on_as_the_live_one_would(tmp_path: Path, tiny_llama) -> None:
    # Oracle: export -> disk -> adopt, then the same edit as the live cache: equal bit for
    # bit (pie keeps, re-rotates and re-encodes the same tokens either way); unchanged
    # ids re-encode only the tail to get the last logits back.
    from cache import PromptCache, Rerotator, find_rotary

    model = tiny_llama(60, 512, 3)
    rot = Rerotator(find_rotary(model))

    def encode(ids: list[int], kv: object, start: int) -> torch.Tensor:
        return prefill(model, ids, kv, start, chunk=16)

    def sync(pc: PromptCache, ids: list[int]) -> object:
        return pc.sync(ids, encode, "pie", rerotator=rot, tail=8, after_edit=4)

    first = [(7 * i) % 59 + 1 for i in range(120)]
    ids = first[:10] + [9, 9] + first[10:]  # an edit: the tokens after it go stale
    edited = ids[:40] + [5, 6, 7] + ids[40:]
    live = PromptCache(lambda: growing_cache(model.config))
    sync(live, first)
    sync(live, ids)
    exported = live.export()
    assert exported is not None and exported.stale.count(1) > 0
    store = DiskStore(tmp_path, 1 << 30)
    store.save(FP, Saved("file:///x.py", "t", exported))
    loaded = store.load(FP, "file:///x.py")
    assert loaded is not None
    restored = PromptCache(lambda: growing_cache(model.config))
    restored.adopt(loaded.cached)
    again = sync(restored, ids)
    assert again.encoded == 8 and restored.last_logits is not None  # the tail only
    torch.testing.assert_close(restored.last_logits, live.last_logits, rtol=1e-5, atol=1e-5)
    restored.adopt(loaded.cached)
    sync(live, edited)
    sync(restored, edited)
    assert restored.ids == live.ids and restored.stale == live.stale
    assert torch.equal(restored.last_logits, live.last_logits)
    for a, b in zip(restored.kv.layers, live.kv.layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_a_saved_cache_that_does_not_fit_the_model_or_its_ids_is_refused(tiny_llama) -> None:
    import pytest

    from cache import PromptCache

    model = tiny_llama(60, 512, 3)
    pc = PromptCache(lambda: growing_cache(model.config))
    three_layers = saved(n=6)  # the tiny model has two
    with pytest.raises(ValueError, match="number of layers"):
        pc.adopt(three_layers.cached)
    c = three_layers.cached
    with pytest.raises(ValueError, match="do not match"):
        pc.adopt(Exported(c.ids[:4], c.stale[:4], c.layers[:2]))
    assert pc.kv is None and pc.ids == []


def test_a_full_disk_fails_the_save_cleanly(tmp_path: Path, monkeypatch) -> None:
    import errno

    store = DiskStore(tmp_path / "kv", 1 << 30)
    assert store.save(FP, saved("file:///old.py"))  # an entry from before: kept
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert not store.save(FP, saved("file:///a.py")) and store.errors == 1
    assert not store.save(FP, saved("file:///b.py")) and store.errors == 2  # counted again
    monkeypatch.setattr(os, "fsync", real_fsync)
    leftovers = [p.name for p in store.root.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []  # no half-written files
    assert store.load(FP, "file:///a.py") is None
    assert store.load(FP, "file:///old.py") is not None
