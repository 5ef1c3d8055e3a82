"""A converted model directory is trusted only while its weights are as written."""

from __future__ import annotations

import json
from pathlib import Path

from completion.models import SOURCE_STAMP, is_converted

STAMP = {"source": "/x/model.gguf", "size": 10, "mtime": 1, "converter": 3}


def converted(root: Path) -> Path:
    out = root / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"w" * 100)
    marker = {**STAMP, "files": {"model.safetensors": 100}}
    (out / SOURCE_STAMP).write_text(json.dumps(marker))
    return out


def test_a_finished_conversion_of_the_same_source(tmp_path: Path) -> None:
    out = converted(tmp_path)
    assert is_converted(out) and is_converted(out, STAMP)
    assert not is_converted(out, {**STAMP, "mtime": 2})


def test_truncated_or_deleted_weights_make_it_unconverted(tmp_path: Path) -> None:
    out = converted(tmp_path)
    with (out / "model.safetensors").open("r+b") as f:
        f.truncate(50)
    assert not is_converted(out, STAMP)
    (out / "model.safetensors").unlink()
    assert not is_converted(out)


def test_markers_written_before_file_sizes_were_recorded_still_count(tmp_path: Path) -> None:
    out = converted(tmp_path)
    (out / SOURCE_STAMP).write_text(json.dumps(STAMP))
    assert is_converted(out, STAMP)
