"""Where chat templates come from: .jinja files, JSON configs, model directories and GGUF files.

Every loader returns the template text exactly as transformers 5 would compile it, together with
the named special tokens transformers passes into the template (``tokenizer.special_tokens_map``)
and the file a user edits to change each template, so findings can point into that file.

Model directories follow ``PreTrainedTokenizerBase.from_pretrained`` / ``_from_pretrained``:

1. ``chat_template.jinja`` is the template named "default" and every
   ``additional_chat_templates/<name>.jinja`` is the template ``<name>``. When any of these files
   exists they replace ``tokenizer_config.json["chat_template"]`` wholesale, even when only
   additional templates exist (the result then has no default). A lone default is held as a plain
   string; anything else as named templates.
2. Otherwise ``tokenizer_config.json["chat_template"]``: a string, or a list of
   ``{"name", "template"}`` objects (always held as named templates, even a lone "default").
3. ``chat_template.json`` is read only by processors (``ProcessorMixin.get_processor_dict``), never
   by the tokenizer. It is used when the tokenizer has no template at all, because then the only
   template that can render in that directory is the processor's. When the tokenizer has one, the
   tokenizer's wins, since templatekit renders as ``tokenizer.apply_chat_template`` does.

Special tokens mirror the tokenizer-independent part of loading: ``tokenizer_config.json`` (named
``*_token`` keys, the ``extra_special_tokens`` dict form, ``{"__type": "AddedToken"}`` objects),
the legacy ``special_tokens_map.json`` (read only when the config has no
``added_tokens_decoder``), and the ``pad_token`` that ``tokenizer.json``'s padding section supplies
when the config has no ``pad_token`` key. Token lists that transformers' tokenizers backend refuses
at load time are refused too. A token that none of these files names takes the default of the
tokenizer class ``AutoTokenizer`` picks (``tokenizer_class_for``; LlamaTokenizer's ``bos_token`` is
``"<s>"``, GemmaTokenizer's ``mask_token`` is ``"<mask>"``, ...), from ``TOKENIZER_CLASS_DEFAULTS``,
which lists the classes chat models name; a class missing from it (or a repository's own code,
``auto_map``) contributes no defaults.

A config file (``tokenizer_config.json``, ``chat_template.json``) or a ``.jinja`` file that sits in
a tokenizer directory takes its special tokens from that directory's files, so rendering
``model/chat_template.jinja`` gives what rendering ``model/`` gives.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import mmap
import os
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError, clipped

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
ADDITIONAL_TEMPLATES_DIR = "additional_chat_templates"
PROCESSOR_TEMPLATE_FILE = "chat_template.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
TOKENIZER_FILE = "tokenizer.json"
ADDED_TOKENS_FILE = "added_tokens.json"
GENERATION_CONFIG_FILE = "generation_config.json"
MODEL_CONFIG_FILE = "config.json"

# transformers' PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES, in its order, which is also the
# order special_tokens_map lists them in.
STANDARD_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# The special tokens each tokenizer class's ``__init__`` supplies when neither tokenizer_config.json
# nor special_tokens_map.json names them (transformers 5.25, models/*/tokenization_*.py). None means
# the class passes None: no such token, and tokenizer.json's padding token does not fill pad_token.
TOKENIZER_CLASS_DEFAULTS: dict[str, dict[str, str | None]] = {
    "LlamaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "CodeLlamaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "GemmaTokenizer": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
                       "mask_token": "<mask>"},
    "Qwen2Tokenizer": {"bos_token": None, "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                       "pad_token": "<|endoftext|>"},
    "Qwen3_5Tokenizer": {"bos_token": None, "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                         "pad_token": "<|endoftext|>"},
    "GPT2Tokenizer": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                      "pad_token": None},
    "GPTNeoXTokenizer": {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                         "pad_token": "<|padding|>"},
    "CohereTokenizer": {"bos_token": "<BOS_TOKEN>", "eos_token": "<|END_OF_TURN_TOKEN|>", "unk_token": "<UNK>",
                        "sep_token": "<SEP>", "pad_token": "<PAD>", "cls_token": "<CLS>", "mask_token": "<MASK_TOKEN>"},
    "BertTokenizer": {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                      "mask_token": "[MASK]"},
    "RobertaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                         "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"},
    "XLMRobertaTokenizer": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                            "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"},
}
# The generic backend, which has no defaults of its own; AutoTokenizer maps these names to it.
GENERIC_TOKENIZER_CLASS = "TokenizersBackend"
_GENERIC_CLASS_NAMES = frozenset({
    "TokenizersBackend", "PreTrainedTokenizerFast", "PreTrainedTokenizer", "PythonBackend", "BloomTokenizer",
    "MistralCommonBackend",
})
# The class AutoTokenizer registers for a config.json model_type (TOKENIZER_MAPPING_NAMES), for the
# model types of chat models; a model type missing here is treated as registering no class.
_MODEL_TYPE_TOKENIZER_CLASS = {
    **dict.fromkeys(("gemma", "gemma2", "gemma3", "gemma3_text", "gemma3n", "recurrent_gemma"), "GemmaTokenizer"),
    **dict.fromkeys(("qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen3_next", "qwen2_vl", "qwen2_5_vl"),
                    "Qwen2Tokenizer"),
    **dict.fromkeys(("gpt2", "phi", "starcoder2", "gptj", "codegen", "dbrx"), "GPT2Tokenizer"),
    **dict.fromkeys(("gpt_neox", "olmo", "mpt", "mamba", "mamba2"), "GPTNeoXTokenizer"),
    **dict.fromkeys(("cohere", "cohere2"), "CohereTokenizer"),
    "code_llama": "CodeLlamaTokenizer",
    **dict.fromkeys(("mistral", "mixtral", "ministral", "mistral3", "phi3", "phimoe", "olmo2", "granite", "granitemoe",
                     "internlm2", "jamba", "nemotron", "ernie4_5", "stablelm", "persimmon", "glm", "glm4"),
                    "TokenizersBackend"),
}
# Model types whose Hub tokenizer_class transformers knows to be wrong
# (MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS): their registered class wins over it.
_INCORRECT_HUB_CLASS_MODEL_TYPES = frozenset({
    "arctic", "chatlm", "ernie4_5", "ernie4_5_moe", "fuyu", "h2ovl_chat", "hyperclovax", "hyperclovax_vlm",
    "hyperclovax_vision_v2", "internlm2", "internlm3", "iquestcoder", "jamba", "llava", "llava_next", "minicpm3",
    "minicpmv", "minimax_m2", "modernbert", "modernbert-decoder", "molmo", "molmo2", "nemotron", "nvfp4", "opencua",
    "openvla", "paddleocr_vl", "phi3", "phi3_v", "phimoe", "qwen2", "qwen3_5", "qwen3_5_moe", "qwen3_5_moe_text",
    "qwen4_exp", "step3_vl", "vipllava", "cohere_asr", "siglip2", "smolvlm",
})
# Checkpoints (config.json ``_name_or_path``) AutoTokenizer always loads with the generic backend.
_GENERIC_CHECKPOINT_PATTERNS = (
    "deepseek-ai/deepseek-r1-distill-llama-*", "deepseek-ai/deepseek-coder-*", "allenai/dolma2-tokenizer",
)

GGUF_MAGIC = b"GGUF"
GGUF_TEMPLATE_KEY = "tokenizer.chat_template"
# transformers' GGUF tokenizer reads exactly these four ids (integrations/gguf/gguf_tokenizer_mapping.py).
GGUF_SPECIAL_TOKEN_IDS = {
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


@dataclass(frozen=True)
class ChatTemplate:
    """One template's text as transformers compiles it, and where a user edits it."""

    text: str
    name: str
    path: Path
    kind: str
    embedded: bool

    def location(self, line: int | None = None, column: int | None = None) -> str:
        """``path:line:col`` for a file, ``path[name]:line:col`` for a template inside JSON or GGUF.

        Lines and columns count inside the template text; omitted parts are left out.
        """
        where = f"{self.path}[{self.name}]" if self.embedded else str(self.path)
        if line is None:
            return where
        where = f"{where}:{line}"
        return where if column is None else f"{where}:{column}"


@dataclass
class TemplateSource:
    """Everything one loaded file or directory offers: its templates and special tokens."""

    path: Path
    kind: str
    templates: dict[str, ChatTemplate]
    single: bool
    special_tokens: dict[str, str]
    tokenizer_dir: Path | None = None
    # The texts of the unnamed special-token list (``extra_special_tokens``, formerly
    # ``additional_special_tokens``) a tokenizer loaded from tokenizer_dir ends up with; no
    # template sees them, but the tokenizer matches them whole (the TK5xx rules need that).
    unnamed_special_tokens: tuple[str, ...] = ()

    def select(self, name: str | None = None, tools: list | None = None) -> ChatTemplate:
        """Pick a template the way ``tokenizer.get_chat_template`` does.

        A name picks that template. Without one, named templates yield "tool_use" when ``tools``
        is given (even an empty list) and it exists, otherwise "default".
        """
        if self.single:
            if name not in (None, "default"):
                problem = f"holds a single unnamed chat template, so there is no template named {name!r}"
                raise InputError(self.path, problem)
            return next(iter(self.templates.values()))
        if name is not None:
            if name not in self.templates:
                raise InputError(self.path, f"has no chat template named {name!r}; available: {self._names()}")
            return self.templates[name]
        if tools is not None and "tool_use" in self.templates:
            return self.templates["tool_use"]
        if "default" in self.templates:
            return self.templates["default"]
        raise InputError(
            self.path, f"has multiple chat templates with no default; choose one by name: {self._names()}"
        )

    def _names(self) -> str:
        return ", ".join(repr(name) for name in self.templates) or "(none)"


def template_from_text(text: str, name: str = "default") -> TemplateSource:
    """A source holding one template given as a string (held by name unless it is the default)."""
    path = Path("<string>")
    template = ChatTemplate(text=text, name=name, path=path, kind="string", embedded=False)
    return TemplateSource(path, "string", {name: template}, single=name == "default", special_tokens={})


def load_source(spec: str | os.PathLike) -> TemplateSource:
    """Load the templates of a .jinja file, JSON config, model directory or GGUF file.

    GGUF is recognised by its magic bytes whatever the file is called; ``*.json`` files are JSON;
    every other file is read as a Jinja template. Any problem raises ``InputError``.
    """
    path = Path(spec)
    if not path.exists():
        raise InputError(path, _missing_path_problem(path))
    if path.is_dir():
        return _load_model_dir(path)
    if is_gguf(path):
        return _load_gguf(path)
    if path.suffix.lower() == ".gguf":
        raise InputError(path, "not a GGUF file (it does not start with the GGUF magic bytes)")
    if path.suffix.lower() == ".json":
        return _load_json_file(path)
    return _load_jinja_file(path)


# --- reading files -------------------------------------------------------------------------


# What GGUF parsing reads from: a mapped file, or the bytes of a pipe.
_Buffer = mmap.mmap | bytes

# A pipe or device (``<(git show ...)``, /dev/stdin) is read whole, once, up to this size; an
# endless one (/dev/zero) would otherwise be read until memory runs out.
STREAM_LIMIT = 256 * 1024 * 1024
# Contents of the pipes and devices read so far, by path: a second read of a pipe finds it
# empty, and loading one source looks at its first bytes before reading it all.
_stream_contents: dict[str, bytes] = {}


def _missing_path_problem(path: Path) -> str:
    """Why ``path.exists()`` is False: really absent, or a symbolic link that leads nowhere."""
    if not path.is_symlink():
        return "no such file or directory"
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop: the link leads back to itself"
    try:
        target = os.readlink(path)
    except OSError:
        return "broken symbolic link"
    return f"broken symbolic link: its target {target} does not exist"


def _is_stream(path: Path) -> bool:
    """Whether ``path`` is a pipe, socket or device rather than a regular file or directory."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _read_bytes(path: Path) -> bytes:
    try:
        if _is_stream(path):
            return _read_stream(path)
        return path.read_bytes()
    except IsADirectoryError:
        raise InputError(path, "is a directory, not a file") from None
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror or error}") from None


def _read_stream(path: Path) -> bytes:
    key = os.path.abspath(path)
    if key not in _stream_contents:
        with path.open("rb") as handle:
            data = handle.read(STREAM_LIMIT + 1)
        if len(data) > STREAM_LIMIT:
            raise InputError(path, f"a pipe or device that gives more than {STREAM_LIMIT:,} bytes; "
                                   "give the path of a regular file")
        _stream_contents[key] = data
    return _stream_contents[key]


def is_gguf(path: Path) -> bool:
    """Whether ``path`` is a GGUF file (by its magic bytes, whatever it is called)."""
    return _starts_with(path, GGUF_MAGIC)


def _starts_with(path: Path, magic: bytes) -> bool:
    if _is_stream(path):
        return _read_bytes(path).startswith(magic)
    try:
        with path.open("rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror or error}") from None


@contextlib.contextmanager
def _file_buffer(path: Path) -> Iterator[_Buffer]:
    """The whole file as a read-only buffer: mapped for a regular file (GGUF files run to many
    gigabytes), the bytes already read for a pipe or device, which cannot be mapped."""
    if _is_stream(path):
        yield _read_bytes(path)
        return
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            yield b""  # mmap refuses empty files
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            yield data


def _decode_utf8(data: bytes, path: Path) -> str:
    """The text of ``data``; undecodable bytes are reported with their line and column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        raise InputError(f"{path}:{line}:{column}", f"not UTF-8 text (byte 0x{data[error.start]:02x})") from None


def read_template_file(path: Path) -> str:
    """A .jinja file's text as transformers reads it: UTF-8, newlines translated, a BOM kept.

    transformers opens template files with ``open(path, encoding="utf-8")``; text mode turns
    ``\\r\\n`` and lone ``\\r`` into ``\\n`` and keeps a byte order mark as U+FEFF.
    """
    data = _read_bytes(path)
    if not data:
        raise InputError(path, "empty file: there is no template text")
    if b"\x00" in data:
        raise InputError(path, "binary file (it contains NUL bytes), not a Jinja template")
    return _decode_utf8(data, path).replace("\r\n", "\n").replace("\r", "\n")


def read_json_file(path: Path) -> tuple[str, Any]:
    """A JSON file's raw text (newlines untouched) and its parsed value, as ``json.load`` parses it."""
    data = _read_bytes(path)
    if not data.strip():
        raise InputError(path, "empty file: expected a JSON object")
    text = _decode_utf8(data, path)
    try:
        return text, json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}:{error.colno}", f"invalid JSON: {error.msg}") from None
    except RecursionError:
        raise InputError(path, "invalid JSON: nested too deeply to parse") from None
    except ValueError as error:
        # json raises plain ValueError for values it recognises but refuses, e.g. huge integers.
        raise InputError(path, f"invalid JSON: {error}") from None


def read_json_object(path: Path) -> dict:
    """A JSON file whose top level must be an object (else one InputError naming what it found)."""
    _, value = read_json_file(path)
    if not isinstance(value, dict):
        raise InputError(path, f"expected a JSON object at the top level, found {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


# --- .jinja and JSON files -----------------------------------------------------------------


def _load_jinja_file(path: Path) -> TemplateSource:
    template = ChatTemplate(read_template_file(path), "default", path, "jinja", embedded=False)
    tokenizer_dir = _template_file_tokenizer_dir(path)
    special_tokens, unnamed = _directory_special_tokens(tokenizer_dir) if tokenizer_dir is not None else ({}, ())
    return TemplateSource(path, "jinja", {"default": template}, True, special_tokens, tokenizer_dir, unnamed)


def _template_file_tokenizer_dir(path: Path) -> Path | None:
    """The tokenizer directory a ``.jinja`` file sits in, if any.

    A template file next to tokenizer files (``chat_template.jinja``, or a draft beside it) is
    rendered with that tokenizer's special tokens, as the tokenizer would render it; so is one
    in the directory's ``additional_chat_templates/``. Other files read as Jinja (``.txt``,
    pipes) and ``.jinja`` files elsewhere have no tokenizer.
    """
    if path.suffix.lower() != ".jinja":
        return None
    directory = path.parent
    if directory.name == ADDITIONAL_TEMPLATES_DIR:
        directory = directory.parent
    if (directory / TOKENIZER_CONFIG_FILE).is_file() or (directory / TOKENIZER_FILE).is_file():
        return directory
    return None


def _load_json_file(path: Path) -> TemplateSource:
    config = read_json_object(path)
    kind = "chat_template_json" if path.name == PROCESSOR_TEMPLATE_FILE else "tokenizer_config"
    if "chat_template" not in config:
        raise InputError(path, 'no "chat_template" key: this JSON file holds no chat template')
    templates, single = _templates_from_json(config["chat_template"], path, kind)
    tokenizer_dir = _sibling_tokenizer_dir(path)
    if tokenizer_dir is not None:
        own_config = config if path.name == TOKENIZER_CONFIG_FILE else None
        special_tokens, unnamed = _directory_special_tokens(tokenizer_dir, own_config)
    elif kind == "tokenizer_config":
        special_tokens, unnamed = declared_special_tokens(config, path)
    else:
        special_tokens, unnamed = {}, ()
    return TemplateSource(path, kind, templates, single, special_tokens, tokenizer_dir, unnamed)


def _sibling_tokenizer_dir(path: Path) -> Path | None:
    """The tokenizer directory a config file belongs to, if it sits in one under its usual name.

    A file with another name may be a copy taken elsewhere, so its neighbours are not trusted to
    be its tokenizer.
    """
    if path.name not in (TOKENIZER_CONFIG_FILE, PROCESSOR_TEMPLATE_FILE):
        return None
    directory = path.parent
    if (directory / TOKENIZER_CONFIG_FILE).is_file() or (directory / TOKENIZER_FILE).is_file():
        return directory
    return None


def _templates_from_json(value: Any, path: Path, kind: str) -> tuple[dict[str, ChatTemplate], bool]:
    """Templates held in a ``chat_template`` value, and whether transformers holds a plain string."""
    if value is None:
        raise InputError(path, "chat_template is null: there is no template")
    if isinstance(value, str):
        _require_text(value, path, "chat_template")
        return {"default": ChatTemplate(value, "default", path, kind, embedded=True)}, True
    if kind == "chat_template_json":
        raise InputError(path, f"chat_template must be a string, found {_json_type(value)}")
    if not isinstance(value, list):
        shape = "a string or a list of {name, template} objects"
        raise InputError(path, f"chat_template must be {shape}, found {_json_type(value)}")
    if not value:
        raise InputError(path, "chat_template is an empty list: there is no template")
    templates: dict[str, ChatTemplate] = {}
    for index, item in enumerate(value):
        name, text = _named_template_item(item, f"{path}[chat_template][{index}]")
        # Like transformers' dict comprehension, a repeated name keeps its first position and the last text.
        templates[name] = ChatTemplate(text, name, path, kind, embedded=True)
    return templates, False


def _named_template_item(item: Any, where: str) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise InputError(where, f"expected an object with name and template, found {_json_type(item)}")
    missing = [key for key in ("name", "template") if key not in item]
    if missing:
        raise InputError(where, f"missing {' and '.join(missing)}")
    if not isinstance(item["name"], str):
        raise InputError(where, f"name must be a string, found {_json_type(item['name'])}")
    if not isinstance(item["template"], str):
        raise InputError(where, f"template must be a string, found {_json_type(item['template'])}")
    _require_text(item["template"], where, "template")
    return item["name"], item["template"]


def _require_text(text: str, where: str | Path, field: str) -> None:
    if not text:
        raise InputError(where, f"{field} is an empty string: there is no template text")


# --- model directories ---------------------------------------------------------------------


def _load_model_dir(directory: Path) -> TemplateSource:
    config_path = directory / TOKENIZER_CONFIG_FILE
    config = read_json_object(config_path) if config_path.is_file() else {}
    templates, single = _template_files(directory)
    if not templates and config.get("chat_template") is not None:
        templates, single = _templates_from_json(config["chat_template"], config_path, "tokenizer_config")
    if not templates:
        templates, single = _processor_templates(directory)
    special_tokens, unnamed = _directory_special_tokens(directory, config)
    return TemplateSource(directory, "model_dir", templates, single, special_tokens, directory, unnamed)


def _template_files(directory: Path) -> tuple[dict[str, ChatTemplate], bool]:
    """``chat_template.jinja`` and ``additional_chat_templates/*.jinja``, as the tokenizer loads them.

    transformers lists the additional files with ``glob("*.jinja")`` (hidden files included, so
    ``.jinja`` is the template named "") and reads them after the default, so an additional
    ``default.jinja`` replaces ``chat_template.jinja``. They are taken in name order here because
    glob order depends on the file system.
    """
    files: list[tuple[str, Path]] = []
    default_file = directory / CHAT_TEMPLATE_FILE
    if default_file.exists():
        files.append(("default", default_file))
    extra_dir = directory / ADDITIONAL_TEMPLATES_DIR
    if extra_dir.is_dir():
        files.extend((file.name.removesuffix(".jinja"), file) for file in sorted(extra_dir.glob("*.jinja")))
    templates = {
        name: ChatTemplate(read_template_file(file), name, file, "jinja", embedded=False) for name, file in files
    }
    return templates, len(templates) == 1 and "default" in templates


def _processor_templates(directory: Path) -> tuple[dict[str, ChatTemplate], bool]:
    processor_file = directory / PROCESSOR_TEMPLATE_FILE
    if processor_file.is_file():
        config = read_json_object(processor_file)
        if config.get("chat_template") is not None:
            return _templates_from_json(config["chat_template"], processor_file, "chat_template_json")
    looked_for = (
        f"{CHAT_TEMPLATE_FILE}, {ADDITIONAL_TEMPLATES_DIR}/*.jinja, "
        f'"chat_template" in {TOKENIZER_CONFIG_FILE} and {PROCESSOR_TEMPLATE_FILE}'
    )
    ggufs = sorted(file.name for file in directory.glob("*.gguf"))
    hint = f" (to read a GGUF file, give its path, e.g. {directory / ggufs[0]})" if ggufs else ""
    # transformers skips a link that leads nowhere as if the file were absent; say so, since the
    # user sees the file listed.
    dangling = [name for name in (CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE, PROCESSOR_TEMPLATE_FILE)
                if (directory / name).is_symlink() and not (directory / name).exists()]
    if len(dangling) == 1:
        hint += f" ({dangling[0]}: {_missing_path_problem(directory / dangling[0])})"
    elif dangling:
        hint += f" (broken symbolic links: {', '.join(dangling)})"
    # A directory or device under one of these names is skipped too; the user sees it listed.
    unreadable = [name for name in (CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE, PROCESSOR_TEMPLATE_FILE)
                  if (directory / name).exists() and not (directory / name).is_file()]
    if unreadable:
        hint += f" (not a regular file, so skipped: {', '.join(unreadable)})"
    raise InputError(directory, f"no chat template: looked for {looked_for}{hint}")


# --- special tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class _AddedToken:
    """Stands in for ``tokenizers.AddedToken``: only its content reaches a template."""

    content: str

    def __str__(self) -> str:
        return self.content


@dataclass(frozen=True, eq=False)
class _ListEntry:
    """An entry of a special-token list that is neither a string nor an AddedToken, and where it is written.

    transformers keeps such an entry in ``extra_special_tokens`` and refuses it only when the
    tokens are added to the backend, so it rides through the loading steps until then. It compares
    by value, as the raw entry does when transformers drops repeated entries.
    """

    value: Any
    path: Path | str
    field: str

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ListEntry) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]


# The two spellings of the list of unnamed special tokens (transformers 5 renames the first).
_TOKEN_LIST_KEYS = ("additional_special_tokens", "extra_special_tokens")


def _directory_special_tokens(directory: Path, config: dict | None = None) -> tuple[dict[str, str], tuple[str, ...]]:
    """The special tokens of a tokenizer loaded from ``directory``: the named ones it passes into
    its templates, and the texts of its unnamed list (``declared_special_tokens``)."""
    config_path = directory / TOKENIZER_CONFIG_FILE
    if config is None:
        config = read_json_object(config_path) if config_path.is_file() else {}
    legacy_path = directory / SPECIAL_TOKENS_MAP_FILE
    legacy = read_json_object(legacy_path) if legacy_path.is_file() else None
    class_defaults = TOKENIZER_CLASS_DEFAULTS.get(tokenizer_class_for(directory, config) or "", {})
    padding_token = _tokenizer_json_pad_token(directory / TOKENIZER_FILE) \
        if "pad_token" not in config and "pad_token" not in class_defaults else None

    def backend_added_tokens() -> set[str]:
        contents = _tokenizer_json_added_tokens(directory / TOKENIZER_FILE)
        added_file = directory / ADDED_TOKENS_FILE
        # transformers reads the legacy added_tokens.json only when the config has no added_tokens_decoder.
        if "added_tokens_decoder" not in config and added_file.is_file():
            contents.update(str(token) for token in read_json_object(added_file))
        return contents

    return declared_special_tokens(config, config_path, legacy, legacy_path, padding_token, backend_added_tokens,
                                   class_defaults)


def tokenizer_class_for(directory: Path, config: dict | None = None) -> str | None:
    """The tokenizer class ``AutoTokenizer.from_pretrained(directory)`` instantiates, by name
    (``GENERIC_TOKENIZER_CLASS`` for the generic backend), or None when it would run the
    repository's own code (``auto_map``), whose defaults are unknown here.

    As ``AutoTokenizer.from_pretrained`` decides for a local directory: tokenizer_config.json's
    ``tokenizer_class`` (else config.json's), with or without "Fast"; a LlamaTokenizer over a
    ByteLevel tokenizer.json loads the generic backend; when config.json's ``model_type``
    registers a different class, a generic registered class wins, and a specific one wins only for
    the model types whose Hub class is known to be wrong; with no class named, the model type's.
    """
    if config is None:
        path = directory / TOKENIZER_CONFIG_FILE
        config = _optional_json_object(path)
    model_config = _optional_json_object(directory / MODEL_CONFIG_FILE)
    model_type = model_config.get("model_type") if isinstance(model_config.get("model_type"), str) else ""
    auto_map = config.get("auto_map")
    remote = isinstance(auto_map, (list, tuple)) or (isinstance(auto_map, dict) and bool(auto_map.get("AutoTokenizer")))
    if remote and model_type not in _INCORRECT_HUB_CLASS_MODEL_TYPES:
        return None
    declared, model_declared = (value if isinstance(value := where.get("tokenizer_class"), str) else None
                                for where in (config, model_config))
    hub_class = declared or model_declared
    registered = _MODEL_TYPE_TOKENIZER_CLASS.get(model_type)
    if not remote:
        name_or_path = model_config.get("_name_or_path")
        if isinstance(name_or_path, str) and any(fnmatch.fnmatch(name_or_path.lower(), pattern)
                                                 for pattern in _GENERIC_CHECKPOINT_PATTERNS):
            return GENERIC_TOKENIZER_CLASS
        if (hub_class is not None and hub_class.removesuffix("Fast") == "LlamaTokenizer"
                and model_type not in _INCORRECT_HUB_CLASS_MODEL_TYPES and _tokenizer_json_is_byte_level(directory)):
            return GENERIC_TOKENIZER_CLASS
        if hub_class is not None and registered is not None and registered != hub_class.removesuffix("Fast"):
            if registered != GENERIC_TOKENIZER_CLASS:
                chosen = _known_class(registered if model_type in _INCORRECT_HUB_CLASS_MODEL_TYPES else hub_class)
                if chosen != GENERIC_TOKENIZER_CLASS:
                    return chosen
            return GENERIC_TOKENIZER_CLASS
    if declared is not None:
        return _known_class(declared)
    if model_declared is not None:
        return _known_class(model_declared)
    return registered or GENERIC_TOKENIZER_CLASS


def _known_class(name: str) -> str:
    """A tokenizer_class value as the class it loads: "XFast" is X; the generic names are the backend."""
    base = name.removesuffix("Fast")
    return GENERIC_TOKENIZER_CLASS if base in _GENERIC_CLASS_NAMES or name in _GENERIC_CLASS_NAMES else base


def _optional_json_object(path: Path) -> dict:
    """A JSON object that only refines an answer (config.json): absent or unreadable counts as {}."""
    if not path.is_file():
        return {}
    try:
        return read_json_object(path)
    except InputError:
        return {}


def _tokenizer_json_is_byte_level(directory: Path) -> bool:
    """Whether tokenizer.json mentions a ByteLevel component (the test AutoTokenizer makes)."""
    path = directory / TOKENIZER_FILE
    try:
        return path.is_file() and b'"ByteLevel"' in path.read_bytes()
    except OSError:
        return False


def declared_special_tokens(
    config: dict,
    config_path: Path | str,
    legacy_map: dict | None = None,
    legacy_path: Path | str = SPECIAL_TOKENS_MAP_FILE,
    padding_token: str | None = None,
    backend_added_tokens: Callable[[], set[str]] | None = None,
    class_defaults: dict[str, str | None] | None = None,
) -> tuple[dict[str, str], tuple[str, ...]]:
    """``tokenizer.special_tokens_map`` of a tokenizer built from these loaded files, and the
    texts of its unnamed special tokens (``extra_special_tokens`` as a list) in its order.

    Follows transformers 5's ``_from_pretrained``, ``PreTrainedTokenizerBase.__init__`` and the
    token-adding step of ``TokenizersBackend.__init__`` in order, because the order of those steps
    decides both which value wins and the order of the model-specific names. Values transformers
    refuses (a TypeError at load time) are InputErrors. ``backend_added_tokens`` gives the contents
    of the added tokens the tokenizer files define besides the config's ``added_tokens_decoder``
    (tokenizer.json's ``added_tokens``, the legacy added_tokens.json); it is only called when a
    token list holds an entry that is neither a string nor an AddedToken object. ``class_defaults``
    are the tokenizer class's own defaults (``TOKENIZER_CLASS_DEFAULTS``), for names no file gives.
    """
    kwargs = dict(config)
    kwargs.pop("chat_template", None)
    _mark_list_entries(kwargs, config_path)
    config_list_key = "extra_special_tokens"
    if "additional_special_tokens" in kwargs and not kwargs.get("extra_special_tokens"):
        kwargs["extra_special_tokens"] = kwargs.pop("additional_special_tokens")
        config_list_key = "additional_special_tokens"
    # At this point JSON values are still plain dicts, so only string-valued names qualify here;
    # AddedToken objects are picked up later, in __init__, which puts them first.
    named = {
        key: kwargs.pop(key)
        for key in list(kwargs)
        if key not in STANDARD_SPECIAL_TOKENS and key.endswith("_token") and isinstance(kwargs[key], str)
    }
    if isinstance(kwargs.get("extra_special_tokens"), dict):
        named.update(kwargs.pop("extra_special_tokens"))
    if named:
        kwargs["model_specific_special_tokens"] = named
    legacy_keys = set(legacy_map or ()) if "added_tokens_decoder" not in kwargs else set()

    def added_tokens() -> set[str]:
        contents = _config_added_tokens(config)
        if backend_added_tokens is not None:
            contents |= backend_added_tokens()
        return contents

    try:
        if legacy_keys:
            _merge_legacy_map(kwargs, legacy_map, legacy_path, config_path)
        kwargs = {key: _convert_added_tokens(value, key) for key, value in kwargs.items()}
        for key, value in (class_defaults or {}).items():
            kwargs.setdefault(key, value)
        if padding_token is not None:
            kwargs.setdefault("pad_token", padding_token)
        return _init_special_tokens(kwargs, added_tokens)
    except _BadAddedToken as error:
        key, where = error.key, error.path
        if where is None:
            where = legacy_path if key in legacy_keys else config_path
            if key == "extra_special_tokens" and key not in legacy_keys:
                key = config_list_key  # name the list as the config spells it
        raise InputError(where, f"{key}: {error.problem}; transformers 5 cannot load this tokenizer") from None


class _BadAddedToken(Exception):
    """A value transformers would refuse with a TypeError.

    ``key`` names the entry for the message; ``path`` is the file it is in when known here, else
    the caller works it out from the key.
    """

    def __init__(self, key: str, problem: str, path: Path | str | None = None) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem
        self.path = path


def _mark_list_entries(values: dict, path: Path | str) -> None:
    """Wrap the entries of the token lists in ``values`` that transformers does not turn into tokens.

    Strings stay and ``{"__type": "AddedToken"}`` objects are converted later, as transformers'
    ``convert_added_tokens`` does; anything else (a plain object, a number, null, a nested list)
    is kept as it is and refused at the end unless its text happens to be an added token.
    """
    for key in _TOKEN_LIST_KEYS:
        entries = values.get(key)
        if isinstance(entries, list):
            values[key] = [
                entry if _is_token_form(entry) else _ListEntry(entry, path, f"{key}[{index}]")
                for index, entry in enumerate(entries)
            ]


def _is_token_form(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, dict) and value.get("__type") == "AddedToken")


def _merge_legacy_map(kwargs: dict, legacy_map: dict, legacy_path: Path | str, config_path: Path | str) -> None:
    """Apply ``special_tokens_map.json`` over the config, as transformers' legacy path does.

    A named token given as an object, and each object in an ``extra_special_tokens`` list, become
    AddedTokens; an ``extra_special_tokens`` list is appended to the config's list (skipping
    entries already there); every other value replaces the config's.
    """
    # Only additional_special_tokens: its entries stay raw until __init__ (extra_special_tokens
    # entries are converted below, as they are merged).
    legacy_map = dict(legacy_map)
    if isinstance(legacy_map.get("additional_special_tokens"), list):
        marked = {"additional_special_tokens": legacy_map["additional_special_tokens"]}
        _mark_list_entries(marked, legacy_path)
        legacy_map["additional_special_tokens"] = marked["additional_special_tokens"]
    for key, value in legacy_map.items():
        if isinstance(value, dict) and key != "extra_special_tokens":
            fields = {field: item for field, item in value.items() if field != "special"}
            value = _added_token(fields, key)
        elif key == "extra_special_tokens" and isinstance(value, list):
            merged = _list_to_extend(kwargs.get(key), config_path)
            for index, entry in enumerate(value):
                token = _legacy_list_token(entry, legacy_path, f"{key}[{index}]")
                if token not in merged:
                    merged.append(token)
            value = merged
        kwargs[key] = value
    if isinstance(kwargs.get("extra_special_tokens"), dict):
        kwargs.setdefault("model_specific_special_tokens", {}).update(kwargs.pop("extra_special_tokens"))


def _list_to_extend(value: Any, config_path: Path | str) -> list:
    """``list(value or [])``, the config's token list that special_tokens_map.json's list extends."""
    if not value:
        return []
    if isinstance(value, (str, list, tuple)):
        return list(value)
    raise _BadAddedToken("extra_special_tokens", "must be a list of tokens or an object of named tokens", config_path)


def _legacy_list_token(entry: Any, path: Path | str, field: str) -> Any:
    """An entry of special_tokens_map.json's ``extra_special_tokens`` list, as ``AddedToken(**entry, special=True)``."""
    if isinstance(entry, str):
        return entry
    if not isinstance(entry, dict):
        return _ListEntry(entry, path, field)
    if "special" in entry:
        # transformers passes special=True besides the object's own fields: a TypeError in Python.
        raise _BadAddedToken(field, 'an AddedToken object in this list must not have a "special" field', path)
    return _added_token(entry, field, path)


def _added_token(fields: dict, key: str, path: Path | str | None = None) -> _AddedToken:
    """What ``tokenizers.AddedToken(**fields)`` makes: content defaults to "", unknown fields are ignored."""
    content = fields.get("content", "")
    if not isinstance(content, str):
        raise _BadAddedToken(key, f"AddedToken content must be a string, found {_json_type(content)}", path)
    return _AddedToken(content)


def _convert_added_tokens(value: Any, key: str) -> Any:
    """Turn ``{"__type": "AddedToken", ...}`` objects into tokens, at any depth, like transformers."""
    if isinstance(value, dict):
        if value.get("__type") == "AddedToken":
            return _added_token({field: item for field, item in value.items() if field != "__type"}, key)
        return {inner: _convert_added_tokens(item, inner) for inner, item in value.items()}
    if isinstance(value, list):
        return [_convert_added_tokens(item, key) for item in value]
    return value


def _init_special_tokens(kwargs: dict, added_tokens: Callable[[], set[str]]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The named-token part of ``PreTrainedTokenizerBase.__init__`` and ``special_tokens_map``,
    then the check ``TokenizersBackend.__init__`` makes when it adds the unnamed special tokens;
    returns the named tokens and the texts of the unnamed ones."""
    list_key = "extra_special_tokens"
    if "additional_special_tokens" in kwargs and list_key not in kwargs:
        kwargs[list_key] = kwargs.pop("additional_special_tokens")
        list_key = "additional_special_tokens"
    explicit = kwargs.pop("model_specific_special_tokens", None) or {}
    if not isinstance(explicit, dict):
        raise _BadAddedToken("model_specific_special_tokens", "must be an object of token names to tokens")
    attributes = list(STANDARD_SPECIAL_TOKENS)
    values: dict[str, Any] = {}
    detected: dict[str, Any] = {}
    unnamed: list | tuple = ()
    for key in list(kwargs):
        value = kwargs[key]
        if key in attributes:
            if value is not None:
                values[key] = _special_token_value(key, value)
        elif key == "extra_special_tokens":
            if isinstance(value, dict):
                _add_named_tokens(attributes, values, value)
            elif isinstance(value, (list, tuple)):
                unnamed = value
            elif value is not None:
                raise _BadAddedToken(list_key, "must be a list of tokens or an object of named tokens")
        elif key.endswith("_token") and isinstance(value, (str, _AddedToken)):
            detected[key] = value
    # transformers merges {**detected, **explicit}: detected names come first, explicit values win.
    merged = {**detected, **explicit}
    if merged:
        _add_named_tokens(attributes, values, merged)
    _check_unnamed_tokens(unnamed, added_tokens)
    named = {name: str(values[name]) for name in attributes if values.get(name) is not None}
    # An entry that is neither a string nor an AddedToken passed the check only because its text
    # already is an added token, which the backend matches whole anyway.
    texts = tuple(dict.fromkeys(str(entry) for entry in unnamed if isinstance(entry, (str, _AddedToken))))
    return named, texts


def _check_unnamed_tokens(entries: list | tuple, added_tokens: Callable[[], set[str]]) -> None:
    """Refuse what ``TokenizersBackend.__init__`` cannot add to the backend tokenizer.

    It hands every unnamed special token whose text (``str(entry)``) is not yet an added token to
    ``tokenizers``' ``add_tokens``, which accepts only strings and AddedTokens ("Input must be a
    List[Union[str, AddedToken]]"). An entry whose text already is one is skipped, so it passes.
    """
    odd = [entry for entry in entries if isinstance(entry, _ListEntry)]
    if not odd:
        return
    known = added_tokens()
    for entry in odd:
        if str(entry.value) not in known:
            found = _json_type(entry.value)
            if isinstance(entry.value, dict):
                found = 'an object without "__type": "AddedToken"'
            problem = f"a special token must be a string or an AddedToken object, found {found}"
            raise _BadAddedToken(entry.field, problem, entry.path)


def _add_named_tokens(attributes: list[str], values: dict[str, Any], tokens: dict) -> None:
    attributes.extend(tokens)
    for key, value in tokens.items():
        values[key] = _special_token_value(key, value)


def _special_token_value(key: str, value: Any) -> str | _AddedToken:
    if not isinstance(value, (str, _AddedToken)):
        problem = f"a special token must be a string or an AddedToken object, found {_json_type(value)}"
        raise _BadAddedToken(key, problem)
    return value


def _config_added_tokens(config: dict) -> set[str]:
    """Contents of the config's ``added_tokens_decoder`` entries (``AddedToken(**entry)``)."""
    decoder = config.get("added_tokens_decoder")
    if not isinstance(decoder, dict):
        return set()
    return {
        entry.get("content", "") for entry in decoder.values()
        if isinstance(entry, dict) and isinstance(entry.get("content", ""), str)
    }


def _tokenizer_json_member(path: Path, key: str) -> Any:
    """The first top-level ``key`` of a tokenizer.json, or None when the file or the key is absent.

    The file can be tens of megabytes. The ``tokenizers`` library writes ``padding`` and
    ``added_tokens`` before the vocabulary and rejects a repeated field, so the scan stops at the
    first match.
    """
    if not path.is_file():
        return None
    document = JsonDocument(_decode_utf8(_read_bytes(path), path))
    try:
        member = next((member for member in document.iter_members() if member.key == key), None)
        return document.value(member) if member is not None else None
    except (ValueError, IndexError, RecursionError):
        # The whole file is parsed only now, to say where and what is wrong with it.
        read_json_object(path)
        raise InputError(path, "invalid JSON") from None


def _tokenizer_json_pad_token(path: Path) -> str | None:
    """``padding.pad_token`` of a tokenizer.json, which becomes the pad token when the config has none."""
    value = _tokenizer_json_member(path, "padding")
    if isinstance(value, dict) and isinstance(value.get("pad_token"), str):
        return value["pad_token"]
    return None


def _tokenizer_json_added_tokens(path: Path) -> set[str]:
    """Contents of a tokenizer.json's ``added_tokens``."""
    value = _tokenizer_json_member(path, "added_tokens")
    if not isinstance(value, list):
        return set()
    return {entry["content"] for entry in value if isinstance(entry, dict) and isinstance(entry.get("content"), str)}


# --- locating values in JSON text ----------------------------------------------------------

_JSON_WHITESPACE = " \t\n\r"


@dataclass(frozen=True)
class JsonMember:
    """One ``"key": value`` of an object, as offsets into the document text."""

    key: str
    key_start: int
    key_end: int
    value_start: int
    value_end: int


class JsonDocument:
    """Offsets of keys and values in a JSON text, found without re-serialising anything.

    Objects and arrays are walked in Python only where an offset is needed; every other value is
    skipped with the C JSON decoder, so large files stay fast. Offsets are only meaningful for
    text that ``json.loads`` accepts; malformed text raises ``ValueError`` or ``IndexError``.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._decoder = json.JSONDecoder()
        self.root = self._skip_whitespace(0)

    def _skip_whitespace(self, position: int) -> int:
        text = self.text
        while position < len(text) and text[position] in _JSON_WHITESPACE:
            position += 1
        return position

    def _expect(self, position: int, char: str) -> int:
        if self.text[position] != char:
            raise ValueError(f"expected {char!r} at offset {position}")
        return position + 1

    def value(self, member: JsonMember) -> Any:
        return self._decoder.raw_decode(self.text, member.value_start)[0]

    def iter_members(self, start: int | None = None):
        """The members of the object whose ``{`` is at ``start`` (the top-level object by default), lazily."""
        position = self._skip_whitespace(self._expect(self.root if start is None else start, "{"))
        while self.text[position] != "}":
            key, key_end = json.decoder.scanstring(self.text, self._expect(position, '"'))
            value_start = self._skip_whitespace(self._expect(self._skip_whitespace(key_end), ":"))
            value_end = self._decoder.raw_decode(self.text, value_start)[1]
            yield JsonMember(key, position, key_end, value_start, value_end)
            position = self._skip_whitespace(value_end)
            if self.text[position] == ",":
                position = self._skip_whitespace(position + 1)

    def members(self, start: int | None = None) -> list[JsonMember]:
        return list(self.iter_members(start))

    def last_member(self, key: str, start: int | None = None) -> JsonMember | None:
        """The member ``json.loads`` keeps for ``key``: the last one."""
        found = [member for member in self.iter_members(start) if member.key == key]
        return found[-1] if found else None

    def array_items(self, start: int) -> list[tuple[int, int]]:
        """(start, end) of each item of the array whose ``[`` is at ``start``."""
        position = self._skip_whitespace(self._expect(start, "["))
        items: list[tuple[int, int]] = []
        while self.text[position] != "]":
            end = self._decoder.raw_decode(self.text, position)[1]
            items.append((position, end))
            position = self._skip_whitespace(end)
            if self.text[position] == ",":
                position = self._skip_whitespace(position + 1)
        return items


# --- GGUF ----------------------------------------------------------------------------------


class _Truncated(Exception):
    """A read ran past the end of the file."""


# GGUF metadata value types with a fixed width (struct format, width).
_GGUF_SCALARS = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_VERSIONS = (2, 3)
# Short strings kept besides templates: they decide how llama.cpp tokenizes (see vocabulary.py).
_GGUF_KEPT_STRINGS = ("tokenizer.ggml.model", "tokenizer.ggml.pre")
_GGUF_METADATA_END = "\0metadata_end"  # not a possible key: GGUF keys are printable


@dataclass(frozen=True)
class _GgufStringArray:
    """Where a string array starts, so single elements can be read later without decoding all."""

    offset: int
    count: int


@dataclass(frozen=True)
class _GgufSkipped:
    """A value read past without keeping it (a string nobody asked for, an array of arrays)."""

    kind: str


_SKIPPED_STRING = _GgufSkipped("a string")
_SKIPPED_NESTED_ARRAY = _GgufSkipped("an array of arrays")


@dataclass(frozen=True)
class _GgufScalarArray:
    """Where an array of fixed-width values (token types, say) starts, read only when asked for."""

    offset: int
    count: int
    element_type: int


class _GgufCursor:
    """Reads little-endian GGUF values from a mapped file, checking every read against its end."""

    def __init__(self, data: _Buffer) -> None:
        self.data = data
        self.position = 0

    def take(self, width: int) -> int:
        start = self.position
        if width < 0 or start + width > len(self.data):
            raise _Truncated()
        self.position = start + width
        return start

    def scalar(self, fmt: str, width: int) -> Any:
        return struct.unpack_from(fmt, self.data, self.take(width))[0]

    def raw_string(self) -> bytes:
        length = self.scalar("<Q", 8)
        start = self.take(length)
        return self.data[start : start + length]

    def skip_string(self) -> None:
        self.take(self.scalar("<Q", 8))

    def value(self, value_type: int, keep: bool) -> Any:
        """One metadata value; strings are kept as bytes only when ``keep``, string arrays never."""
        if value_type in _GGUF_SCALARS:
            return self.scalar(*_GGUF_SCALARS[value_type])
        if value_type == _GGUF_STRING:
            if keep:
                return self.raw_string()
            self.skip_string()
            return _SKIPPED_STRING
        if value_type == _GGUF_ARRAY:
            return self.array()
        raise ValueError(f"unknown metadata value type {value_type}")

    def array(self) -> Any:
        """A string or fixed-width array's position (vocabularies are read later, by index); arrays
        of arrays are skipped."""
        element_type, count = self.array_header()
        if element_type == _GGUF_STRING:
            start = self.position
            for _ in range(count):
                self.skip_string()
            return _GgufStringArray(start, count)
        start = self.position
        self.skip_elements(element_type, count)
        if element_type in _GGUF_SCALARS:
            return _GgufScalarArray(start, count, element_type)
        return _SKIPPED_NESTED_ARRAY

    def array_header(self) -> tuple[int, int]:
        return self.scalar("<I", 4), self.scalar("<Q", 8)

    def skip_elements(self, element_type: int, count: int) -> None:
        """Skip ``count`` elements; nested arrays use a stack, as a file can nest deeper than recursion allows."""
        pending = [(element_type, count)]
        while pending:
            element_type, count = pending.pop()
            if element_type in _GGUF_SCALARS:
                self.take(count * _GGUF_SCALARS[element_type][1])
            elif element_type == _GGUF_STRING:
                for _ in range(count):
                    self.skip_string()
            elif element_type == _GGUF_ARRAY:
                if count:
                    pending.append((_GGUF_ARRAY, count - 1))
                    pending.append(self.array_header())
            else:
                raise ValueError(f"unknown array element type {element_type}")


@contextlib.contextmanager
def _read_as_gguf(path: Path) -> Iterator[_Buffer]:
    """``path``'s bytes, with every way reading them as GGUF can fail turned into one ``InputError``."""
    try:
        with _file_buffer(path) as data:
            yield data
    except _Truncated:
        raise InputError(path, "truncated GGUF file: it ends before its metadata or tensor data does") from None
    except (ValueError, struct.error) as error:
        raise InputError(path, f"unreadable GGUF file: {error}") from None
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror or error}") from None


def _load_gguf(path: Path) -> TemplateSource:
    with _read_as_gguf(path) as data:
        metadata = _read_gguf(data)
        templates = _gguf_templates(metadata, path)
        special_tokens, _ = declared_special_tokens(_gguf_token_config(data, metadata, path), path)
    single = list(templates) == ["default"]
    return TemplateSource(path, "gguf", templates, single, special_tokens)


def check_gguf(path: Path) -> None:
    """Raise ``InputError`` unless ``path`` is a whole GGUF file: metadata that parses, and a
    tensor table whose data lies inside the file. Whether it holds a chat template is not asked.

    Cheap (the metadata and the tensor table only), so a truncated download is reported before
    anything spends minutes hashing or converting it.
    """
    with _read_as_gguf(path) as data:
        _read_gguf(data)


def _read_gguf(data: _Buffer, *, check_tensors: bool = True) -> dict[str, Any]:
    """Metadata values that matter here (template and tokenizer-model strings as bytes, ids, array positions).

    Checks the tensor table and the data section against the file size, so a partial download is
    reported rather than half-read (unless ``check_tensors`` is false: the caller already did).
    """
    cursor = _GgufCursor(data)
    if data[:4] != GGUF_MAGIC:
        raise ValueError("it does not start with the GGUF magic bytes")
    cursor.take(4)
    version = cursor.scalar("<I", 4)
    if version not in _GGUF_VERSIONS:
        raise ValueError(f"GGUF version {version} is not supported (transformers reads versions 2 and 3)")
    tensor_count, value_count = cursor.scalar("<Q", 8), cursor.scalar("<Q", 8)
    metadata: dict[str, Any] = {}
    for _ in range(value_count):
        key = _decode_gguf_string(cursor.raw_string(), "a metadata key")
        if key in metadata:
            # gguf's reader, which transformers uses, refuses such a file too.
            raise ValueError(f"metadata key {clipped(key)} appears twice")
        value_type = cursor.scalar("<I", 4)
        metadata[key] = cursor.value(value_type, keep=key.startswith(GGUF_TEMPLATE_KEY) or key in _GGUF_KEPT_STRINGS)
    # Where the metadata ends: everything about the tokenizer lies before it (a fingerprint hashes it).
    metadata[_GGUF_METADATA_END] = cursor.position
    if check_tensors:
        _check_tensor_data(cursor, tensor_count, metadata.get("general.alignment", 32))
    return metadata


def _check_tensor_data(cursor: _GgufCursor, tensor_count: int, alignment: Any) -> None:
    """Raise ``_Truncated`` when the tensor table or any tensor's bytes lie past the end of the file."""
    tensors = []
    for _ in range(tensor_count):
        cursor.skip_string()
        dimensions = cursor.scalar("<I", 4)
        shape = struct.unpack_from(f"<{dimensions}Q", cursor.data, cursor.take(8 * dimensions))
        tensors.append((shape, cursor.scalar("<I", 4), cursor.scalar("<Q", 8)))
    if not tensors:
        return
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0:
        found = alignment if isinstance(alignment, int) and not isinstance(alignment, bool) else _gguf_kind(alignment)
        raise ValueError(f"general.alignment must be a positive integer, found {found}")
    data_start = -(-cursor.position // alignment) * alignment
    sizes = _ggml_type_sizes()
    for shape, ggml_type, offset in tensors:
        elements = 1
        for dimension in shape:
            elements *= dimension
        block, block_bytes = sizes.get(ggml_type, (1, 0))
        if data_start + offset + elements // block * block_bytes > len(cursor.data):
            raise _Truncated()


def _ggml_type_sizes() -> dict[int, tuple[int, int]]:
    """(elements per block, bytes per block) for each ggml tensor type the gguf package knows."""
    # Imported here: gguf pulls in numpy, which only GGUF loading should pay for.
    from gguf.constants import GGML_QUANT_SIZES

    return {int(kind): sizes for kind, sizes in GGML_QUANT_SIZES.items()}


def _decode_gguf_string(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8 text") from None


def _gguf_templates(metadata: dict[str, Any], path: Path) -> dict[str, ChatTemplate]:
    """``tokenizer.chat_template`` as "default" and ``tokenizer.chat_template.<name>`` by name, in file order.

    transformers itself reads only ``tokenizer.chat_template``; the named ones are llama.cpp's
    convention and are offered so they can be checked too.
    """
    templates: dict[str, ChatTemplate] = {}
    for key, value in metadata.items():
        if key == GGUF_TEMPLATE_KEY:
            name = "default"
        elif key.startswith(GGUF_TEMPLATE_KEY + "."):
            name = key.removeprefix(GGUF_TEMPLATE_KEY + ".")
        else:
            continue
        where = f"{path}[{key}]"
        if not name:
            raise InputError(where, "a named chat template needs a name after 'tokenizer.chat_template.'")
        if not isinstance(value, bytes):
            raise InputError(where, "a chat template must be a string")
        if name in templates:
            raise InputError(where, "a second default chat template (tokenizer.chat_template is the default)")
        text = _decode_gguf_string(value, key)
        _require_text(text, where, key)
        templates[name] = ChatTemplate(text, name, path, "gguf", embedded=True)
    if not templates:
        raise InputError(path, f"no chat template: the GGUF metadata has no {GGUF_TEMPLATE_KEY} key")
    return templates


def _gguf_token_config(data: _Buffer, metadata: dict[str, Any], path: Path) -> dict[str, str | None]:
    """The special tokens transformers' GGUF tokenizer puts in its config: vocabulary entries by id."""
    config: dict[str, str | None] = {}
    tokens = metadata.get("tokenizer.ggml.tokens")
    wanted: dict[str, int] = {}
    for name, key in GGUF_SPECIAL_TOKEN_IDS.items():
        token_id = metadata.get(key)
        config[name] = None
        if token_id is None:
            continue
        if not isinstance(tokens, _GgufStringArray):
            raise InputError(f"{path}[{key}]", "names a token id but the file has no tokenizer.ggml.tokens list")
        wanted[name] = _gguf_token_index(tokens, token_id, f"{path}[{key}]")
    texts = _gguf_tokens_at(data, tokens, set(wanted.values())) if wanted else {}
    for name, index in wanted.items():
        config[name] = _decode_gguf_string(texts[index], f"token {index}")
    return config


def _gguf_kind(value: Any) -> str:
    """What a GGUF metadata value is, for messages (never its internal representation)."""
    if isinstance(value, _GgufSkipped):
        return value.kind
    if isinstance(value, bytes):
        return "a string"
    if isinstance(value, _GgufStringArray):
        return "an array of strings"
    if isinstance(value, _GgufScalarArray):
        return "an array of numbers"
    if isinstance(value, bool):
        return "a boolean"
    return "a number" if isinstance(value, (int, float)) else type(value).__name__


def _require_token_id(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(where, f"token id must be an integer, found {_gguf_kind(value)}")


def _gguf_token_index(tokens: _GgufStringArray, token_id: Any, where: str) -> int:
    """The vocabulary index of ``token_id``, indexed like a Python list (as transformers indexes it)."""
    _require_token_id(token_id, where)
    index = token_id + tokens.count if token_id < 0 else token_id
    if not 0 <= index < tokens.count:
        raise InputError(where, f"token id {token_id} is outside the vocabulary of {tokens.count} tokens")
    return index


def _gguf_tokens_at(data: _Buffer, tokens: _GgufStringArray, indexes: set[int]) -> dict[int, bytes]:
    """The raw vocabulary entries at ``indexes``, read in one pass (entries have no fixed width)."""
    found: dict[int, bytes] = {}
    cursor = _GgufCursor(data)
    cursor.position = tokens.offset
    for index in range(max(indexes) + 1):
        if index in indexes:
            found[index] = cursor.raw_string()
        else:
            cursor.skip_string()
    return found


@dataclass(frozen=True)
class GgufTokenizer:
    """The tokenizer a GGUF file carries: its vocabulary, token types and ``tokenizer.ggml.*`` values.

    ``metadata`` holds the scalar ``tokenizer.ggml.*`` values (ids, flags) and the ``model``/``pre``
    names as text; ``token_types`` is None when the file has no ``tokenizer.ggml.token_type``;
    ``digest`` is a SHA-256 of the whole metadata section, which changes whenever any of it does.
    """

    tokens: list[str]
    token_types: list[int] | None
    metadata: dict[str, Any]
    digest: str


def read_gguf_tokenizer(path: Path) -> GgufTokenizer | None:
    """The tokenizer in a GGUF file, or None when it has no ``tokenizer.ggml.tokens`` list."""
    import hashlib

    try:
        with _file_buffer(path) as data:
            metadata = _read_gguf(data, check_tensors=False)
            tokens = metadata.get("tokenizer.ggml.tokens")
            if not isinstance(tokens, _GgufStringArray):
                return None
            cursor = _GgufCursor(data)
            cursor.position = tokens.offset
            # Undecodable bytes (rare byte-level pieces) become U+FFFD: they never look like markers.
            texts = [cursor.raw_string().decode("utf-8", "replace") for _ in range(tokens.count)]
            types = metadata.get("tokenizer.ggml.token_type")
            token_types = _gguf_scalars(data, types) if isinstance(types, _GgufScalarArray) else None
            digest = hashlib.sha256(data[: metadata[_GGUF_METADATA_END]]).hexdigest()
    except _Truncated:
        raise InputError(path, "truncated GGUF file: it ends before its metadata does") from None
    except (ValueError, struct.error) as error:
        raise InputError(path, f"unreadable GGUF file: {error}") from None
    except OSError as error:
        raise InputError(path, f"cannot read: {error.strerror or error}") from None
    if token_types is not None and len(token_types) != len(texts):
        raise InputError(f"{path}[tokenizer.ggml.token_type]",
                         f"has {len(token_types)} entries for {len(texts)} tokens")
    values: dict[str, Any] = {}
    for key, value in metadata.items():
        if not key.startswith("tokenizer.ggml."):
            continue
        if key.endswith("_token_id"):
            _require_token_id(value, f"{path}[{key}]")
        if isinstance(value, bytes):
            values[key] = value.decode("utf-8", "replace")
        elif isinstance(value, (int, float, bool)):
            values[key] = value
    return GgufTokenizer(texts, token_types, values, digest)


def _gguf_scalars(data: _Buffer, array: _GgufScalarArray) -> list[int]:
    fmt, width = _GGUF_SCALARS[array.element_type]
    if array.offset + width * array.count > len(data):
        raise _Truncated()
    return list(struct.unpack_from(f"<{array.count}{fmt[1]}", data, array.offset))
