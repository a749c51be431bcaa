"""Find and load the model ``templatekit validate`` generates with, caching GGUF conversions.

A model is a local directory in transformers' format, a GGUF file, or a Hugging Face Hub id. A
GGUF file is dequantized by transformers, which takes tens of seconds even for a small model;
the converted copy (plain safetensors + tokenizer.json) is saved once under the model cache,
keyed by the GGUF file's SHA-256, and every later run loads that copy in seconds.

Loading goes through one path on every device: ``from_pretrained(..., dtype=..., device_map=...)``
on the converted or original directory. On CUDA, ``device_map="auto"`` lets accelerate place the
layers on the available GPUs; on the CPU the whole model sits on ``"cpu"``.

torch, accelerate and transformers are imported only inside the functions that need them, so
importing this module costs nothing; ``require_validate_extra`` turns their absence into one line
saying how to install them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .authoring import write_atomically
from .errors import InputError
from .sources import check_gguf, is_gguf

# Overrides where converted GGUF models are kept (default: <cache root>/models, next to the lint cache).
MODEL_CACHE_ENV = "TEMPLATEKIT_MODEL_CACHE_DIR"
# Named by package, not by templatekit's extra: "templatekit" on PyPI is an unrelated project.
INSTALL_HINT = "pip install -e '.[validate]' in a templatekit checkout"
# What the validate extra brings; transformers and gguf are core dependencies but checked anyway.
_REQUIRED_MODULES = ("torch", "accelerate", "transformers", "gguf")
# owner/name as the Hub spells repository ids.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What a causal LM needs from a Hub repository: configs, weights, tokenizer files and templates.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "tokenizer.model", "*.tiktoken", "merges.txt", "vocab.txt",
                 "additional_chat_templates/*"]
_CACHE_METADATA = "templatekit-conversion.json"
_HASH_CHUNK = 1 << 20

DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("auto", "bfloat16", "float32")

# progress(label, completed, total): called as work advances; the CLI draws it, nothing here prints.
ProgressCallback = Callable[[str, int, int], None]


def _no_progress(label: str, completed: int, total: int) -> None:
    """The default progress callback: report nothing."""


@dataclasses.dataclass(frozen=True)
class ModelLocation:
    """Where a model's files are. ``kind`` is "directory", "gguf" or "hub" (downloaded to ``path``)."""

    spec: str
    kind: str
    path: Path

    @property
    def label(self) -> str:
        return self.spec


@dataclasses.dataclass
class LoadedModel:
    """A model and its tokenizer, ready to generate.

    ``loaded_from`` is "gguf" (converted from the GGUF file in this run), "cache" (the converted
    copy of a GGUF file) or "directory"; ``load_seconds`` is the wall time of the whole load.
    """

    model: Any
    tokenizer: Any
    location: ModelLocation
    device: str
    dtype: str
    load_seconds: float
    loaded_from: str
    cache_path: Path | None = None

    @property
    def eos_token_ids(self) -> list[int]:
        """End-of-turn ids: the generation config's ``eos_token_id`` (int or list) and the tokenizer's eos."""
        found: list[int] = []
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (configured if isinstance(configured, (list, tuple)) else [configured]):
            if isinstance(value, int) and value not in found:
                found.append(value)
        tokenizer_eos = self.tokenizer.eos_token_id
        if isinstance(tokenizer_eos, int) and tokenizer_eos not in found:
            found.append(tokenizer_eos)
        return found


def require_validate_extra() -> None:
    """Raise ``InputError`` naming the missing packages and the install command; prepare torch."""
    missing = [name for name in _REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(None, f"templatekit validate needs {_missing_packages(missing)}; install "
                               f"{'it' if len(missing) == 1 else 'them'} with: pip install {' '.join(missing)} "
                               f"(or {INSTALL_HINT})")
    if "torch" not in sys.modules:
        # OpenMP threads spin while they wait by default. On a machine whose cores are shared (CI
        # runners, a busy laptop) spinning threads starve each other: measured on 2 shared cores,
        # 16 greedy tokens of a 135M model took 14 s spinning and 2 s with passive waiting. The
        # variable is read once, when torch loads its OpenMP runtime; a user's setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _missing_packages(names: list[str]) -> str:
    """'torch, which is not installed' or 'torch and accelerate, which are not installed'."""
    if len(names) == 1:
        return f"{names[0]}, which is not installed"
    return f"{', '.join(names[:-1])} and {names[-1]}, which are not installed"


def model_cache_directory() -> Path:
    """``$TEMPLATEKIT_MODEL_CACHE_DIR``, else ``models`` under the cache root the lint cache uses."""
    explicit = os.environ.get(MODEL_CACHE_ENV)
    if explicit:
        return Path(explicit)
    from .lint.runner import cache_directory

    return cache_directory().parent / "models"


# ---------------------------------------------------------------------------------------------
# finding the model


def locate_model(spec: str | os.PathLike) -> ModelLocation:
    """Resolve MODEL: an existing directory or GGUF file, else a Hub id (downloaded when allowed).

    Raises ``InputError`` for a path that is neither, and for a Hub id that cannot be fetched.
    """
    text = os.fspath(spec)
    path = Path(text)
    if path.exists():
        if path.is_dir():
            return _locate_directory(text, path)
        if is_gguf(path):
            check_gguf(path)
            return ModelLocation(text, "gguf", path)
        raise InputError(path, "not a model: expected a model directory (config.json + weights) or a GGUF file")
    if _HUB_ID.match(text) and not text.startswith((".", "/")):
        return ModelLocation(text, "hub", _download(text))
    raise InputError(path, "no such file or directory (and not a Hub id of the form owner/name)")


def _locate_directory(text: str, path: Path) -> ModelLocation:
    if (path / "config.json").is_file():
        return ModelLocation(text, "directory", path)
    ggufs = sorted(candidate for candidate in path.glob("*.gguf") if candidate.is_file())
    if len(ggufs) == 1:
        check_gguf(ggufs[0])
        return ModelLocation(text, "gguf", ggufs[0])
    if ggufs:
        names = ", ".join(candidate.name for candidate in ggufs)
        raise InputError(path, f"holds several GGUF files ({names}); name the one to validate")
    raise InputError(path, "not a model directory: it has no config.json (and no GGUF file)")


def _download(repo_id: str) -> Path:
    """The local snapshot of a Hub repository: the Hugging Face cache first, the network only when
    the environment allows it (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE unset)."""
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise InputError(repo_id, "downloading from the Hub needs huggingface_hub: pip install huggingface_hub") from None
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    except Exception as error:  # noqa: BLE001 - a malformed id or cache is the user's input problem
        raise InputError(repo_id, f"cannot read the Hub cache: {type(error).__name__}: {error}") from None
    offline = constants.HF_HUB_OFFLINE or os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in ("1", "ON", "YES",
                                                                                                   "TRUE")
    if offline:
        raise InputError(repo_id, "not in the local Hugging Face cache, and downloads are off (HF_HUB_OFFLINE "
                                  "or TRANSFORMERS_OFFLINE is set); download it first or give a local path")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS))
    except Exception as error:  # noqa: BLE001 - network, authentication and missing-repo errors alike
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(repo_id, f"cannot download from the Hugging Face Hub: {message}") from None


# ---------------------------------------------------------------------------------------------
# the GGUF conversion cache


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
                digest.update(chunk)
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror or error}") from None
    return digest.hexdigest()


def _remembered_digest(path: Path, cache_dir: Path) -> str:
    """The file's digest, remembered per (path, size, mtime) so a multi-GB GGUF is hashed once."""
    stat = path.stat()
    index_path = cache_dir / "digests.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        index = json.loads(index_path.read_text("utf-8"))
        if not isinstance(index, dict):
            index = {}
    except (OSError, ValueError):
        index = {}
    if isinstance(index.get(key), str):
        return index[key]
    digest = file_digest(path)
    index[key] = digest
    # The index only saves hashing time: an unwritable cache costs speed, never the run.
    with contextlib.suppress(OSError, InputError):
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_atomically(index_path, json.dumps(index, indent=1).encode("utf-8"))
    return digest


def cached_conversion(gguf_path: Path, cache_dir: Path | None = None) -> Path:
    """Where the converted copy of ``gguf_path`` lives (it may not exist yet)."""
    root = cache_dir or model_cache_directory()
    return root / f"gguf-{_remembered_digest(gguf_path, root)[:32]}"


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars and warnings while templatekit reports progress."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_were_on:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _tensor_progress(progress: ProgressCallback, label: str) -> Iterator[None]:
    """Route transformers' per-tensor GGUF conversion bar (a bare tqdm) into ``progress``."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return

    def counted(items: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        items = list(items)
        for index, item in enumerate(items):
            progress(label, index, len(items))
            yield item
        progress(label, len(items), len(items))

    gguf_utils.tqdm = counted
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def convert_gguf(gguf_path: Path, destination: Path, progress: ProgressCallback = _no_progress) -> None:
    """Dequantize a GGUF file with transformers and save it as a plain model directory.

    The copy is written next to ``destination`` and renamed into place, so a concurrent run or an
    interrupted one never leaves a half-written model behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=destination.name + ".partial-"))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
            with _tensor_progress(progress, "converting GGUF tensors (once; cached for later runs)"):
                model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        except Exception as error:  # noqa: BLE001 - its GGUF reader fails on corrupt files in many ways
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise InputError(gguf_path, f"transformers cannot load this GGUF file: {first_line}") from None
        # The weights are dequantized already; transformers refuses to save while the model still
        # says it is gguf-quantized, and the saved copy must load as a plain model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        metadata = {"gguf": str(gguf_path.resolve()), "sha256": file_digest(gguf_path),
                    "transformers": _transformers_version()}
        (staging / _CACHE_METADATA).write_text(json.dumps(metadata, indent=1), encoding="utf-8")
        try:
            staging.rename(destination)
        except OSError:
            if not (destination / _CACHE_METADATA).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


# ---------------------------------------------------------------------------------------------
# loading


def resolve_device(device: str) -> str:
    """"cuda" or "cpu" for a requested device ("auto" picks CUDA when torch sees a GPU)."""
    import torch

    if device not in DEVICES:
        raise InputError(None, f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda: torch sees no CUDA device (is a CUDA build of torch installed?)")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """bfloat16 on a GPU that supports it, float32 otherwise (CPU matmuls in bf16 are slower)."""
    import torch

    if dtype not in DTYPES:
        raise InputError(None, f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    if device == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


def load_model(
    location: ModelLocation,
    *,
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: Path | None = None,
    progress: ProgressCallback = _no_progress,
) -> LoadedModel:
    """Load ``location``'s tokenizer and causal LM on ``device`` in ``dtype``.

    A GGUF file is converted into the model cache first unless a converted copy is already there.
    """
    require_validate_extra()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    chosen_device = resolve_device(device)
    chosen_dtype = resolve_dtype(dtype, chosen_device)
    directory, loaded_from, cache_path = location.path, "directory", None
    steps = 3 if location.kind == "gguf" else 2
    with _quiet_transformers():
        if location.kind == "gguf":
            progress("hashing GGUF file", 0, steps)
            cache_path = cached_conversion(location.path, cache_dir)
            if (cache_path / _CACHE_METADATA).is_file():
                loaded_from = "cache"
            else:
                progress("reading GGUF tokenizer", 0, steps)
                convert_gguf(location.path, cache_path, progress)
                loaded_from = "gguf"
            directory = cache_path
            progress("loading tokenizer", 1, steps)
        else:
            progress("loading tokenizer", 0, steps)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
        except Exception as error:  # noqa: BLE001 - any failure here is a problem with the model's files
            raise InputError(location.spec, f"cannot load the tokenizer: {_first_line(error)}") from None
        progress("loading weights", steps - 1, steps)
        device_map = "auto" if chosen_device == "cuda" else "cpu"
        try:
            model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=getattr(torch, chosen_dtype),
                                                         device_map=device_map)
        except Exception as error:  # noqa: BLE001 - unsupported architecture, missing weights, ...
            raise InputError(location.spec, f"cannot load the model: {_first_line(error)}") from None
        model.eval()
        progress("model loaded", steps, steps)
    return LoadedModel(model, tokenizer, location, chosen_device, chosen_dtype, time.perf_counter() - started,
                       loaded_from, cache_path)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
