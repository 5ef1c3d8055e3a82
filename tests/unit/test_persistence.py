"""Saved prompt caches for an engine (completion/persistence.py): counts, skips, identity."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch

from cache import DiskStore, Exported, Fingerprint, Saved
from completion.persistence import Persistence, fingerprint, text_hash, weights_identity

FP = Fingerprint("w", "float32", "rope", "5", "int4", "cpu")


def entry(text: str, ids: list[int], key: str = "file:///a.py") -> Saved:
    n = len(ids)
    layers = [(torch.full((1, 1, n, 4), float(i)), torch.zeros(1, 1, n, 4)) for i in range(2)]
    return Saved(key, text_hash(text), Exported(ids, bytearray(n), layers), start=0)


def test_a_load_is_a_hit_for_the_same_text_a_repair_for_another_a_miss_for_none(
    tmp_path: Path,
) -> None:
    p = Persistence(DiskStore(tmp_path, 1 << 30), FP)
    assert p.load("file:///a.py", "x = 1\n") == ("miss", None)
    assert p.save(entry("x = 1\n", [5, 6, 7]))
    how, saved = p.load("file:///a.py", "x = 1\n")
    assert how == "hit" and saved is not None and saved.cached.ids == [5, 6, 7]
    how, saved = p.load("file:///a.py", "x = 2\n")
    assert how == "repair" and saved is not None
    stats = p.stats()
    assert (stats["diskHits"], stats["diskRepairs"], stats["diskMisses"]) == (1, 1, 1)
    assert stats["diskSaves"] == 1 and stats["diskCacheBytes"] > 0 and stats["diskErrors"] == 0


def test_an_unchanged_cache_is_not_written_again(tmp_path: Path) -> None:
    p = Persistence(DiskStore(tmp_path, 1 << 30), FP)
    assert p.save(entry("a", [1, 2]))
    assert not p.save(entry("a", [1, 2]))  # the same text, ids and stale flags
    assert p.save(entry("b", [1, 2]))  # another text
    assert p.save(entry("b", [1, 2, 3]))  # other ids
    refreshed = entry("b", [1, 2, 3])
    refreshed.cached.stale[1] = 1
    assert p.save(refreshed)
    # An entry loaded from disk is on disk as it is: saving it back writes nothing.
    q = Persistence(DiskStore(tmp_path, 1 << 30), FP)
    _, loaded = q.load("file:///a.py", "b")
    assert loaded is not None and not q.save(loaded)
    assert p.counters.diskSaves == 4


def test_a_stopped_load_counts_nothing(tmp_path: Path) -> None:
    import pytest

    p = Persistence(DiskStore(tmp_path, 1 << 30), FP)
    p.save(entry("a", [1, 2]))

    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        p.load("file:///a.py", "a", stop)
    assert (p.counters.diskHits, p.counters.diskMisses) == (0, 0)
    assert p.load("file:///a.py", "a")[0] == "hit"  # the entry is still there


def test_off_saves_and_loads_nothing(tmp_path: Path) -> None:
    p = Persistence(DiskStore(tmp_path / "kv", 0), FP)
    assert not p.enabled and not p.save(entry("a", [1]))
    assert p.load("file:///a.py", "a") == ("miss", None)
    assert p.stats()["diskCacheBytes"] == 0 and not (tmp_path / "kv").exists()


def test_forget_drops_the_entry(tmp_path: Path) -> None:
    p = Persistence(DiskStore(tmp_path, 1 << 30), FP)
    p.save(entry("a", [1]))
    p.forget("file:///a.py")
    assert p.load("file:///a.py", "a")[0] == "miss"
    assert p.save(entry("a", [1]))  # written again: the skip was forgotten too


def test_the_weights_identity_follows_the_files(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x" * 10)
    (tmp_path / "notes.txt").write_text("not a weight")
    config = SimpleNamespace()
    first = weights_identity(str(tmp_path), config)
    assert weights_identity(str(tmp_path), config) == first
    (tmp_path / "notes.txt").write_text("changed")
    assert weights_identity(str(tmp_path), config) == first  # not a model file
    os.utime(weights, ns=(1, 1))
    assert weights_identity(str(tmp_path), config) != first  # rewritten weights
    hub = weights_identity("org/model", SimpleNamespace(_commit_hash="abc"))
    assert hub != weights_identity("org/model", SimpleNamespace(_commit_hash="def"))


def test_the_fingerprint_names_numbers_rotation_and_library(tmp_path: Path, tiny_llama) -> None:
    from completion.models import LoadedModel

    model = tiny_llama(40, 256, 0)
    loaded = LoadedModel(
        "tiny", str(tmp_path), model, None, torch.device("cpu"), torch.float32, 0.0, "none"
    )
    fp = fingerprint(loaded)
    assert (fp.dtype, fp.quantize, fp.device) == ("float32", "none", "cpu")
    assert fp.transformers.isdigit() and "10000" in fp.rope
    assert fingerprint(replace(loaded, quantize="int8")).key() != fp.key()
