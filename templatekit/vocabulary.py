"""What a tokenizer says about the special tokens a chat template emits.

The special-token rules (TK5xx) and ``templatekit validate`` ask a few questions of a tokenizer:
which strings it matches whole in text (added tokens; in GGUF, control and user-defined tokens),
which of those are special, which ids end generation, which token its default encoding puts in
front of a text, and what id any string has. ``Vocabulary`` answers them, from

- a model directory (``tokenizer.json``, ``tokenizer_config.json``, ``generation_config.json``,
  ``config.json``), through ``load_vocabulary(source)``;
- a GGUF file's ``tokenizer.ggml.*`` metadata, read by templatekit's own GGUF reader;
- a live transformers tokenizer (``vocabulary_from_tokenizer``), duck-typed, for ``validate``;
- a short mapping (``vocabulary_from_mapping``), for rule examples and tests.

Nothing here imports ``tokenizers`` or transformers; ``Vocabulary.encode`` builds a real
``tokenizers.Tokenizer`` from tokenizer.json the first time it is called.

Which ids end generation follows the consumers: transformers' ``generate`` stops on
``generation_config.eos_token_id`` (an int or a list; taken from config.json when there is no
generation_config.json), and the tokenizer's eos token is what trainers append; llama.cpp stops on
its end-of-generation set, built from the eos/eot/eom/FIM ids in the file and a list of token
texts (``llama-vocab.cpp``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import InputError, clipped
from .sources import (
    GENERATION_CONFIG_FILE,
    MODEL_CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    TemplateSource,
    read_gguf_tokenizer,
    read_json_object,
    tokenizer_class_for,
)

# llama.cpp token types (gguf TokenType): which tokens its tokenizer matches whole in text
# (``cache_special_tokens``: control, user-defined and unknown) and which count as special.
GGUF_UNKNOWN, GGUF_CONTROL, GGUF_USER_DEFINED = 2, 3, 4
GGUF_ATOMIC_TYPES = (GGUF_UNKNOWN, GGUF_CONTROL, GGUF_USER_DEFINED)
GGUF_SPECIAL_TYPES = (GGUF_UNKNOWN, GGUF_CONTROL)

# Token texts llama.cpp adds to its end-of-generation set whatever the ids in the file say
# (llama-vocab.cpp, ``special_eog_ids``), and the ids it adds from metadata.
LLAMA_CPP_EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
})
GGUF_EOG_ID_KEYS = (
    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.fim_pad_token_id", "tokenizer.ggml.fim_rep_token_id", "tokenizer.ggml.fim_sep_token_id",
)
# BPE pre-tokenizers for which llama.cpp adds a BOS by default (when the file does not say).
_LLAMA_CPP_BOS_PRETOKENIZERS = frozenset({
    "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "tekken", "chameleon",
})


class Vocabulary:
    """The special-token facts of one tokenizer (see the module docstring).

    ``atomic`` maps every string the tokenizer matches whole in text to its id; ``special_ids``
    are the special (control) ones; ``eos_ids`` every id that ends generation; ``prepended`` the
    tokens default encoding (``add_special_tokens=True``) puts before a text; ``special_tokens``
    the named tokens (``bos_token``, ``eos_token``, ...) a template receives. ``complete`` is
    False when only the added tokens are known (no tokenizer.json), so a string missing from
    ``atomic`` may still be an ordinary vocabulary entry. ``fingerprint`` changes whenever any of
    this can (lint caches key on it).
    """

    def __init__(
        self,
        *,
        source: str,
        atomic: Mapping[str, int],
        special_ids: Iterable[int],
        eos_ids: Iterable[int],
        special_tokens: Mapping[str, str],
        prepended: Iterable[str] = (),
        fingerprint: str,
        tokens: Mapping[str, int] | Callable[[], Mapping[str, int]] | None = None,
        complete: bool = True,
        encoder: Callable[[], Callable[[str], list[int]] | None] | None = None,
        single_word: Iterable[str] = (),
        gguf: bool = False,
        added_on_load: Iterable[str] = (),
        split_special: bool = False,
        transformers_prepended: Iterable[str] | None = None,
        unknown_id: int | None = None,
        notes: Iterable[str] = (),
    ) -> None:
        self.source = source
        # What was read differently from how the file is laid out (and why), for lint to pass on
        # as notes: facts the user should know although transformers loads the tokenizer.
        self.notes = list(notes)
        self.atomic = dict(atomic)
        # Added tokens marked single_word: matched whole only where no letter, digit or "_"
        # touches them (so "hi<|im_end|>" splits the marker; "hi\n<|im_end|>" does not).
        self.single_word = frozenset(single_word)
        # From a GGUF file's metadata (llama.cpp's rules), not from tokenizer files.
        self.gguf = gguf
        # Special tokens the config declares (named or in its unnamed list) that the vocabulary
        # lacks: transformers adds each as a new token whose embedding was never trained.
        self.added_on_load = frozenset(added_on_load)
        # tokenizer_config.json's split_special_tokens: transformers then matches no special token
        # in text (tokenizers' encode_special_tokens); non-special added tokens stay whole.
        self.split_special = split_special
        # For a GGUF file: what transformers (``gguf_file=``) puts before a text, where llama.cpp's
        # rules (``prepended``) may differ; None when they are the same runtime.
        self.transformers_prepended = tuple(transformers_prepended) if transformers_prepended is not None else None
        self.special_ids = frozenset(special_ids)
        self.eos_ids = frozenset(eos_ids)
        self.special_tokens = dict(special_tokens)
        self.prepended = tuple(prepended)
        self.fingerprint = fingerprint
        self.complete = complete
        self._tokens = tokens
        self._encoder_factory = encoder
        self._encoder: Callable[[str], list[int]] | None = None
        self._encoder_built = False
        # The id the tokenizer model gives a text it has no token for: a marker that encodes to it
        # alone is unknown, not a spelling of that token.
        self.unknown_id = unknown_id

    def __repr__(self) -> str:
        return f"Vocabulary({self.source!r}, {len(self.atomic)} atomic tokens, eos ids {sorted(self.eos_ids)})"

    # -- lookups ---------------------------------------------------------------------------------
    @cached_property
    def tokens(self) -> Mapping[str, int]:
        """Every token string the tokenizer has, with its id (added tokens included)."""
        found = self._tokens() if callable(self._tokens) else self._tokens
        merged = dict(found or {})
        merged.update(self.atomic)
        return merged

    @cached_property
    def _texts_by_id(self) -> dict[int, str]:
        texts = {token_id: text for text, token_id in self.tokens.items()}
        texts.update({token_id: text for text, token_id in self.atomic.items()})
        return texts

    def id_of(self, text: str) -> int | None:
        """The id of the token spelled exactly ``text``, or None when the tokenizer has no such token."""
        if text in self.atomic:
            return self.atomic[text]
        return self.tokens.get(text)

    def text_of(self, token_id: int) -> str | None:
        return self._texts_by_id.get(token_id)

    def is_atomic(self, text: str) -> bool:
        """Whether tokenizing a text containing ``text`` always yields it as one token."""
        return text in self.atomic and not self.split_in_text(text)

    def split_in_text(self, text: str) -> bool:
        """Whether ``text`` is a special token that tokenizing text splits anyway
        (``split_special_tokens``): the tokenizer has it, yet never matches it in text."""
        return self.split_special and self.atomic.get(text, -1) in self.special_ids

    def token_for(self, text: str) -> str | None:
        """The added token the real tokenizer turns ``text`` into when that is exactly one added
        token; a normalizer can map a spelling the vocabulary lacks (``<|IM_START|>`` under a
        Lowercase normalizer) onto one. None without an encoder or otherwise, and when the text
        comes out as the unknown token (the model's ``unk_token``), which says the tokenizer lacks it."""
        if self.is_atomic(text):
            return text
        ids = self.encode(text) if text else None
        if not ids or len(ids) != 1 or ids[0] == self.unknown_id:
            return None
        found = self.text_of(ids[0])
        return found if found is not None and self.is_atomic(found) else None

    def is_special(self, text: str) -> bool:
        return self.atomic.get(text, -1) in self.special_ids

    @property
    def bos_token(self) -> str | None:
        return self.special_tokens.get("bos_token")

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    def describe(self, token_id: int) -> str:
        text = self.text_of(token_id)
        return f"{text!r} (id {token_id})" if text is not None else f"id {token_id}"

    def eos_description(self) -> str:
        return ", ".join(self.describe(token_id) for token_id in sorted(self.eos_ids)) or "none"

    @cached_property
    def _atomic_by_first_char(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for text in self.atomic:
            if text:
                index.setdefault(text[0], []).append(text)
        for candidates in index.values():
            candidates.sort(key=len, reverse=True)
        return index

    def atomic_at(self, text: str, start: int = 0) -> str | None:
        """The longest atomic token that ``text`` spells at ``start`` (as tokenizers match them)."""
        if start >= len(text):
            return None
        for candidate in self._atomic_by_first_char.get(text[start], ()):
            if self.split_in_text(candidate):
                continue
            if text.startswith(candidate, start) and (
                    candidate not in self.single_word or _alone(text, start, start + len(candidate))):
                return candidate
        return None

    # -- encoding --------------------------------------------------------------------------------
    @property
    def can_encode(self) -> bool:
        return self._encoder_factory is not None and not (self._encoder_built and self._encoder is None)

    def encode(self, text: str) -> list[int] | None:
        """``text``'s ids without added special tokens, from the real tokenizer; None without one.

        An encoder that fails (an exception, or a Rust panic of the ``tokenizers`` library, such
        as a normalizer regex hitting Oniguruma's retry limit) is dropped for good: every later
        call answers None, "cannot tell", as if there were no encoder, and the rules fall back to
        what the added tokens say. A panic may leave the library's state unknown, and a text that
        made it fail once would make it spend that time again.
        """
        if not self._encoder_built:
            self._encoder_built = True
            if self._encoder_factory is not None:
                self._encoder = _guarded(self._encoder_factory)
        if self._encoder is None:
            return None
        ids = _guarded(self._encoder, text)
        if ids is None:
            self._encoder = None
        return ids

    def splits(self, text: str) -> bool:
        """Whether tokenizing ``text`` does not give exactly its own token. Atomic tokens never
        split; for anything else the real tokenizer decides when there is one (an ordinary entry
        can still come out whole, from a word-level model say; a normalizer can turn it into
        another single token, the unknown one say), and without one it is assumed to split."""
        if self.is_atomic(text):
            return False
        ids = self.encode(text)
        return ids != [self.id_of(text)] if ids is not None else True


def _guarded(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, or None when it fails with an exception or a ``tokenizers`` panic.

    pyo3 raises a Rust panic as ``pyo3_runtime.PanicException``, which derives from
    ``BaseException`` so that ``except Exception`` does not hide it; it is caught by its type's
    name, as the class cannot be imported. Every other ``BaseException`` (KeyboardInterrupt,
    SystemExit, the lint engine's rule deadline) goes through untouched.
    """
    try:
        with _rust_panic_message_hidden():
            return call(*args)
    except Exception:  # noqa: BLE001 - a failing encoder only costs precision
        return None
    except BaseException as error:
        if _is_rust_panic(error):
            return None
        raise


@contextlib.contextmanager
def _rust_panic_message_hidden() -> Iterator[None]:
    """Send file descriptor 2 to the null device meanwhile: Rust's panic hook writes its message
    (and, with RUST_BACKTRACE set, a whole backtrace) straight to it, which would read as a crash
    although the panic is caught and only means "cannot tell". Where that cannot be arranged the
    call runs as it is."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            os.close(null)
        except OSError:
            pass
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _is_rust_panic(error: BaseException) -> bool:
    kind = type(error)
    return kind.__name__ == "PanicException" and kind.__module__ == "pyo3_runtime"


def _alone(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` stands as a word of its own, as the tokenizers library decides
    for a single_word token: no word character (alphanumeric or "_") right before or after."""
    before = text[start - 1] if start > 0 else ""
    after = text[end] if end < len(text) else ""
    return not any(char.isalnum() or char == "_" for char in (before, after) if char)


# ---------------------------------------------------------------------------------------------
# loading


def load_vocabulary(source: TemplateSource) -> Vocabulary | None:
    """The tokenizer that comes with ``source``, or None when it has none.

    A GGUF file's own vocabulary; for a model directory or a config file inside one, the
    directory's tokenizer.json (or, without it, the added tokens of tokenizer_config.json).
    Unreadable or malformed tokenizer files raise ``InputError`` naming the file.
    """
    if source.kind == "gguf":
        return _gguf_vocabulary(source.path, source.special_tokens)
    if source.tokenizer_dir is None:
        return None
    return _directory_vocabulary(Path(source.tokenizer_dir), source.special_tokens, source.unnamed_special_tokens)


def _json_object(path: Path) -> dict | None:
    return read_json_object(path) if path.is_file() else None


def _directory_vocabulary(directory: Path, special_tokens: Mapping[str, str],
                          unnamed_special_tokens: Iterable[str] = ()) -> Vocabulary | None:
    tokenizer_path = directory / TOKENIZER_FILE
    config_path = directory / TOKENIZER_CONFIG_FILE
    tokenizer = _json_object(tokenizer_path)
    config = _json_object(config_path) or {}
    config_added = _config_added_tokens(config, config_path)
    if tokenizer is None and not config_added:
        return None
    atomic: dict[str, int] = {}
    special_ids: set[int] = set()
    if tokenizer is not None:
        for token_id, content, special in _tokenizer_json_added_tokens(tokenizer, tokenizer_path):
            atomic[content] = token_id
            if special:
                special_ids.add(token_id)
        model = tokenizer.get("model")
        if not isinstance(model, dict):
            raise InputError(tokenizer_path, 'not a tokenizer.json: "model" must be an object')
        _model_vocab(model, tokenizer_path)  # checked now, so a broken file fails before any rule runs
    # transformers adds the config's added_tokens_decoder entries the backend lacks.
    for token_id, content, special in config_added:
        atomic.setdefault(content, token_id)
        if special:
            special_ids.add(atomic[content])
    # It then adds every named special token and every entry of the unnamed list
    # (extra_special_tokens, formerly additional_special_tokens) the backend does not match
    # whole, as a special token: one that is an ordinary vocabulary entry keeps its id and is
    # matched whole from then on. One missing from the vocabulary gets a new, untrained id
    # (TK504 says so); it is left out here.
    single_word = {content for content, flags in _added_token_flags(tokenizer, config) if flags.get("single_word")}
    declared_added: list[tuple[int, str, bool]] = []
    added_on_load: list[str] = []
    if tokenizer is not None:
        declared = [*special_tokens.values(), *unnamed_special_tokens]
        pending = [text for text in dict.fromkeys(declared) if text and text not in atomic]
        if pending:
            vocab = _model_vocab(tokenizer["model"], tokenizer_path)
            for text in pending:
                if text in vocab:
                    atomic[text] = vocab[text]
                    special_ids.add(vocab[text])
                    declared_added.append((vocab[text], text, True))
                else:
                    added_on_load.append(text)
    eos_ids = set(_generation_eos_ids(directory))
    eos_text = special_tokens.get("eos_token")
    vocab_of = (lambda: _model_vocab(tokenizer["model"], tokenizer_path)) if tokenizer is not None else None
    split_special = config.get("split_special_tokens") is True
    vocabulary = Vocabulary(
        unknown_id=_model_unknown_id(tokenizer["model"], atomic, vocab_of) if tokenizer is not None else None,
        source=str(tokenizer_path if tokenizer is not None else config_path),
        atomic=atomic,
        special_ids=special_ids,
        eos_ids=(),
        special_tokens=special_tokens,
        prepended=_hf_prepended(config, tokenizer, special_tokens, tokenizer_class_for(directory, config)),
        fingerprint=_files_digest(directory, (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE,
                                              GENERATION_CONFIG_FILE, MODEL_CONFIG_FILE)),
        tokens=vocab_of,
        complete=tokenizer is not None,
        encoder=(lambda: _tokenizers_encoder(tokenizer_path, config_added + declared_added, split_special))
        if tokenizer is not None else None,
        single_word=single_word,
        added_on_load=added_on_load,
        split_special=split_special,
    )
    if eos_text is not None and vocabulary.id_of(eos_text) is not None:
        eos_ids.add(vocabulary.id_of(eos_text))
    vocabulary.eos_ids = frozenset(eos_ids)
    return vocabulary


def _added_token_flags(tokenizer: dict | None, config: dict) -> Iterator[tuple[str, dict]]:
    """(content, entry) of every added token of tokenizer.json and of the config's
    added_tokens_decoder (their shapes were checked when they were read)."""
    for entry in (tokenizer or {}).get("added_tokens") or ():
        yield entry["content"], entry
    decoder = config.get("added_tokens_decoder")
    for entry in decoder.values() if isinstance(decoder, dict) else ():
        if entry.get("content"):
            yield entry["content"], entry


def _tokenizer_json_added_tokens(tokenizer: dict, path: Path) -> list[tuple[int, str, bool]]:
    added = tokenizer.get("added_tokens", [])
    if added is None:
        return []
    if not isinstance(added, list):
        raise InputError(path, 'not a tokenizer.json: "added_tokens" must be a list')
    found = []
    for index, item in enumerate(added):
        if not (isinstance(item, dict) and isinstance(item.get("content"), str) and _is_id(item.get("id"))):
            raise InputError(path, f'not a tokenizer.json: added_tokens[{index}] needs an integer "id" and a string "content"')
        found.append((item["id"], item["content"], bool(item.get("special", False))))
    return found


def _config_added_tokens(config: dict, path: Path) -> list[tuple[int, str, bool]]:
    decoder = config.get("added_tokens_decoder")
    if decoder is None:
        return []
    if not isinstance(decoder, dict):
        raise InputError(path, "added_tokens_decoder must be an object of token ids to tokens")
    found = []
    for key, item in decoder.items():
        # transformers builds AddedToken(**entry), whose content defaults to "": an entry without
        # one loads, and the backend never adds an empty token, so it matches nothing.
        content = item.get("content", "") if isinstance(item, dict) else None
        token_id = _decimal_id(key)
        if token_id is None or not isinstance(content, str):
            raise InputError(path, f"added_tokens_decoder[{clipped(key)}] must map an integer id to an object with a string content")
        if content:
            found.append((token_id, content, bool(item.get("special", False))))
    return found


def _decimal_id(key: str) -> int | None:
    """The id an ``added_tokens_decoder`` key spells, as transformers reads it (``int(key)``), or None.

    ``str.isdigit`` is no test for that: it accepts "²", which ``int`` refuses.
    """
    try:
        return int(key)
    except ValueError:
        return None


def _model_unknown_id(model: dict, atomic: Mapping[str, int], vocab_of: Callable[[], Mapping[str, int]]) -> int | None:
    """The id a tokenizer.json model gives text it has no token for: Unigram's ``unk_id``, the
    others' ``unk_token`` (an added token or a vocabulary entry); None when it has none."""
    if model.get("type") == "Unigram":
        return model["unk_id"] if _is_id(model.get("unk_id")) else None
    unknown = model.get("unk_token")
    if not isinstance(unknown, str):
        return None
    return atomic[unknown] if unknown in atomic else vocab_of().get(unknown)


def _model_vocab(model: dict, path: Path) -> dict[str, int]:
    """Token -> id of a tokenizer.json model: a mapping (BPE, WordPiece, WordLevel) or, for
    Unigram, a list of [piece, score] whose index is the id."""
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        if not all(_is_id(value) for value in vocab.values()):
            raise InputError(path, 'not a tokenizer.json: "model.vocab" ids must be integers')
        return vocab
    if isinstance(vocab, list):
        pieces: dict[str, int] = {}
        for index, entry in enumerate(vocab):
            if not (isinstance(entry, list) and entry and isinstance(entry[0], str)):
                raise InputError(path, f'not a tokenizer.json: "model.vocab"[{index}] must be a [piece, score] pair')
            pieces.setdefault(entry[0], index)
        return pieces
    if vocab is None and model.get("type") in (None, "BPE", "WordPiece", "WordLevel", "Unigram"):
        raise InputError(path, 'not a tokenizer.json: "model" has no "vocab"')
    return {}


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _eos_id_list(value: Any, where: Path | str) -> list[int]:
    if value is None:
        return []
    if _is_id(value):
        return [value]
    if isinstance(value, list) and all(_is_id(item) for item in value):
        return list(value)
    raise InputError(where, f"eos_token_id must be an integer or a list of integers, found {json.dumps(value)[:60]}")


def _generation_eos_ids(directory: Path) -> list[int]:
    """``generation_config.eos_token_id``, or config.json's when there is no generation config
    (transformers builds the generation config from the model config then)."""
    generation = _json_object(directory / GENERATION_CONFIG_FILE)
    if generation is not None:
        return _eos_id_list(generation.get("eos_token_id"), directory / GENERATION_CONFIG_FILE)
    model_config = _json_object(directory / MODEL_CONFIG_FILE)
    if model_config is None:
        return []
    value = model_config.get("eos_token_id")
    if value is None and isinstance(model_config.get("text_config"), dict):
        value = model_config["text_config"].get("eos_token_id")
    return _eos_id_list(value, directory / MODEL_CONFIG_FILE)


# Tokenizer classes that rebuild the post-processor from their own add_bos_token whatever
# tokenizer.json says, with that flag's default: GPTNeoXTokenizer calls update_post_processor() at
# the end of __init__; CodeLlamaTokenizer passes add_bos_token=True explicitly, which makes the
# backend rebuild it.
_POST_PROCESSOR_REBUILT_ADD_BOS = {"GPTNeoXTokenizer": False, "CodeLlamaTokenizer": True}


def _hf_prepended(config: dict, tokenizer: dict | None, special_tokens: Mapping[str, str],
                  tokenizer_class: str | None = None) -> tuple[str, ...]:
    """What transformers 5 puts before a text with ``add_special_tokens=True``.

    With a tokenizer.json, its post-processor decides: transformers 5 drops ``add_bos_token`` and
    ``add_eos_token`` from the config when it loads one (``PreTrainedTokenizerBase._from_pretrained``).
    Without one, the config's ``add_bos_token`` does. A class that rebuilds the post-processor
    (``_POST_PROCESSOR_REBUILT_ADD_BOS``) decides with its own default instead of the file's.
    """
    bos = special_tokens.get("bos_token")
    if tokenizer_class in _POST_PROCESSOR_REBUILT_ADD_BOS:
        add_bos = _POST_PROCESSOR_REBUILT_ADD_BOS[tokenizer_class]
        if tokenizer is None and isinstance(config.get("add_bos_token"), bool):
            add_bos = config["add_bos_token"]
        return (bos,) if add_bos and bos else ()
    if tokenizer is not None:
        return _post_processor_prefix(tokenizer.get("post_processor"))
    return (bos,) if config.get("add_bos_token") is True and bos else ()


def _post_processor_prefix(processor: Any) -> tuple[str, ...]:
    """The tokens a tokenizer.json post-processor puts before a single text.

    Fields of the wrong shape add nothing rather than failing: the ``tokenizers`` library is the
    judge of a malformed file, and this only refines what the special-token rules know. Nested
    ``Sequence`` processors are walked with a stack, as a file may nest them arbitrarily deep.
    """
    prefix: tuple[str, ...] = ()
    pending = [processor]
    while pending:
        current = pending.pop()
        if not isinstance(current, dict):
            continue
        kind = current.get("type")
        if kind == "Sequence":
            inner = current.get("processors")
            if isinstance(inner, list):
                pending.extend(reversed(inner))
        elif kind in ("BertProcessing", "RobertaProcessing"):
            cls = current.get("cls")
            if isinstance(cls, list) and cls and isinstance(cls[0], str):
                prefix += (cls[0],)
        elif kind == "TemplateProcessing":
            prefix += _template_processing_prefix(current)
    return prefix


def _template_processing_prefix(processor: dict) -> tuple[str, ...]:
    named = processor.get("special_tokens")
    pieces = processor.get("single")
    prefix: tuple[str, ...] = ()
    for piece in pieces if isinstance(pieces, list) else ():
        if not isinstance(piece, dict) or "Sequence" in piece:
            break
        special = piece.get("SpecialToken")
        token = special.get("id") if isinstance(special, dict) else None
        if not isinstance(token, str):
            continue
        entry = named.get(token) if isinstance(named, dict) else None
        tokens = entry.get("tokens") if isinstance(entry, dict) else None
        prefix += tuple(item for item in tokens if isinstance(item, str)) if isinstance(tokens, list) and tokens \
            else (token,)
    return prefix


def _files_digest(directory: Path, names: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        path = directory / name
        digest.update(name.encode() + b"\0")
        if path.is_file():
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError as error:
                raise InputError(path, f"cannot read: {error.strerror or error}") from None
    return digest.hexdigest()


def _tokenizers_encoder(path: Path, config_added: list[tuple[int, str, bool]],
                        split_special: bool = False) -> Callable[[str], list[int]] | None:
    """An encoder backed by the real tokenizer, or None when the ``tokenizers`` library is
    missing or cannot read this file (a newer format, say): the rules then fall back to what
    the added tokens say."""
    try:
        from tokenizers import AddedToken, Tokenizer
    except ImportError:
        return None
    try:
        backend = Tokenizer.from_file(str(path))
        known = set(backend.get_vocab(with_added_tokens=True))
        missing = [(content, special) for _, content, special in config_added if content not in known]
        if missing:
            backend.add_special_tokens([AddedToken(c, special=True) for c, special in missing if special])
            backend.add_tokens([AddedToken(c, special=False) for c, special in missing if not special])
        backend.encode_special_tokens = split_special
    except Exception:  # noqa: BLE001 - the library refusing a file only costs precision here
        return None
    return lambda text: backend.encode(text, add_special_tokens=False).ids


# -- GGUF ---------------------------------------------------------------------------------------


def _gguf_vocabulary(path: Path, special_tokens: Mapping[str, str]) -> Vocabulary | None:
    tokenizer = read_gguf_tokenizer(path)
    if tokenizer is None:
        return None
    tokens, metadata = tokenizer.tokens, tokenizer.metadata
    types = tokenizer.token_types
    notes = []
    if types is not None and len(types) != len(tokens):
        # transformers pairs them with zip(), so the tokens past the end of the shorter list have
        # no type (normal tokens) and extra types are ignored; zip() below does the same.
        untyped = f"tokens {len(types)} to {len(tokens) - 1} are read as normal tokens, as transformers reads them" \
            if len(types) < len(tokens) else "the extra entries are ignored, as transformers ignores them"
        notes.append(f"{path}[tokenizer.ggml.token_type]: has {len(types)} entries for {len(tokens)} tokens; {untyped}")
    atomic: dict[str, int] = {}
    special_ids: set[int] = set()
    if types is not None:
        for token_id, (text, kind) in enumerate(zip(tokens, types)):
            if kind in GGUF_ATOMIC_TYPES:
                atomic[text] = token_id
            if kind in GGUF_SPECIAL_TYPES:
                special_ids.add(token_id)

    def token_id(key: str) -> int | None:
        value = metadata.get(key)
        if value is None:
            return None
        # Negative ids index from the end, as transformers indexes the vocabulary list when it
        # builds the template's special tokens (sources.py): lint and render must agree.
        index = value + len(tokens) if _is_id(value) and value < 0 else value
        if not _is_id(value) or not 0 <= index < len(tokens):
            raise InputError(f"{path}[{key}]", f"token id {value!r} is outside the vocabulary of {len(tokens)} tokens")
        return index

    eog = {token_id(key) for key in GGUF_EOG_ID_KEYS} - {None}
    by_text = {text: index for index, text in enumerate(tokens)}
    eog |= {by_text[text] for text in LLAMA_CPP_EOG_TEXTS if text in by_text}
    texts = {tokens[index] for index in eog}
    # llama.cpp's own exceptions: harmony-style vocabularies end turns with <|end|> but stop on
    # <|return|>/<|call|>; vocabularies with <|tool_response> use </s> for something else.
    if "<|end|>" in texts and ({"<|return|>", "<|call|>"} <= texts or {"<|calls|>", "<|flush|>"} <= texts):
        eog.discard(by_text["<|end|>"])
    if "</s>" in texts and "<|tool_response>" in texts:
        eog.discard(by_text["</s>"])
    bos_id = token_id("tokenizer.ggml.bos_token_id")
    add_bos = metadata.get("tokenizer.ggml.add_bos_token")
    if add_bos is None:
        model = metadata.get("tokenizer.ggml.model")
        add_bos = model in ("llama", "bert") or (model == "gpt2" and metadata.get("tokenizer.ggml.pre") in _LLAMA_CPP_BOS_PRETOKENIZERS)
    # transformers' GGUF loader (integrations/gguf): the file's flag, else True for a "llama"
    # (sentencepiece) vocabulary only; "gemma4" never.
    model = metadata.get("tokenizer.ggml.model")
    hf_add_bos = metadata.get("tokenizer.ggml.add_bos_token")
    if hf_add_bos is None:
        hf_add_bos = model == "llama"
    if model == "gemma4":
        hf_add_bos = False
    named = dict(special_tokens)
    if bos_id is not None:
        named.setdefault("bos_token", tokens[bos_id])
    return Vocabulary(
        source=str(path),
        atomic=atomic,
        special_ids=special_ids,
        eos_ids=eog,
        special_tokens=named,
        prepended=(tokens[bos_id],) if add_bos and bos_id is not None else (),
        fingerprint=tokenizer.digest,
        tokens=lambda: by_text,
        gguf=True,
        transformers_prepended=(tokens[bos_id],) if hf_add_bos and bos_id is not None else (),
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# other origins


def vocabulary_from_tokenizer(tokenizer: Any, generation_config: Any = None) -> Vocabulary:
    """The vocabulary of a loaded transformers tokenizer (used by ``validate``; no import of
    transformers: only the tokenizer's public attributes are read).

    ``generation_config`` is a ``GenerationConfig``, a dict, or None; its ``eos_token_id`` (an
    int or a list) joins the tokenizer's eos id.
    """
    vocab = dict(tokenizer.get_vocab())
    atomic: dict[str, int] = {}
    special_ids = {token_id for token_id in getattr(tokenizer, "all_special_ids", ()) or () if _is_id(token_id)}
    single_word = set()
    for token_id, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        content = getattr(token, "content", token)
        if isinstance(content, str):
            atomic[content] = int(token_id)
            if getattr(token, "special", False):
                special_ids.add(int(token_id))
            if getattr(token, "single_word", False):
                single_word.add(content)
    named = {key: str(value) for key, value in (getattr(tokenizer, "special_tokens_map", None) or {}).items()
             if isinstance(value, str) or hasattr(value, "content")}
    eos_ids = set()
    eos_id = getattr(tokenizer, "eos_token_id", None)
    if _is_id(eos_id):
        eos_ids.add(eos_id)
    configured = generation_config.get("eos_token_id") if isinstance(generation_config, dict) \
        else getattr(generation_config, "eos_token_id", None)
    eos_ids.update(_eos_id_list(configured, "generation_config"))
    prepended = _live_prepended(tokenizer)
    fingerprint = hashlib.sha256(json.dumps(
        [getattr(tokenizer, "name_or_path", ""), len(vocab), sorted(atomic.items()), sorted(eos_ids), prepended, named],
        default=str).encode()).hexdigest()
    return Vocabulary(
        source=str(getattr(tokenizer, "name_or_path", "") or "tokenizer"),
        atomic=atomic,
        special_ids=special_ids,
        eos_ids=eos_ids,
        special_tokens=named,
        prepended=prepended,
        fingerprint=fingerprint,
        tokens=vocab,
        encoder=lambda: (lambda text: list(tokenizer.encode(text, add_special_tokens=False))),
        single_word=single_word,
        split_special=getattr(tokenizer, "split_special_tokens", False) is True,
        unknown_id=_live_unknown_id(tokenizer, vocab),
    )


def _live_unknown_id(tokenizer: Any, vocab: Mapping[str, int]) -> int | None:
    """The id the backend model of a live tokenizer gives unknown text, when it has one."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    unknown = getattr(model, "unk_token", None)
    if isinstance(unknown, str):
        return vocab.get(unknown)
    unknown_id = getattr(model, "unk_id", None)
    return unknown_id if _is_id(unknown_id) else None


def _live_prepended(tokenizer: Any) -> tuple[str, ...]:
    """The tokens ``tokenizer.encode`` puts before a text: where the ids of a probe text encoded
    without special tokens start inside its ids encoded with them."""
    for probe in ("a", "hello", " the", "0"):
        without = list(tokenizer.encode(probe, add_special_tokens=False))
        if without:
            break
    else:
        return ()
    with_special = list(tokenizer.encode(probe, add_special_tokens=True))
    start = next((index for index in range(len(with_special) - len(without) + 1)
                  if with_special[index:index + len(without)] == without), 0)
    return tuple(tokenizer.convert_ids_to_tokens(with_special[:start])) if start else ()


MAPPING_KEYS = ("special", "added", "plain", "bos", "eos", "generation_eos", "add_bos")


def vocabulary_from_mapping(mapping: Mapping[str, Any], source: str = "<tokenizer>") -> Vocabulary:
    """A vocabulary described in a few lines (rule examples, test cases)::

        special: ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]   # special tokens, matched whole
        added: ["<tool_call>"]        # added tokens that are not special, matched whole
        plain: ["hello"]              # ordinary entries, which tokenization does not keep whole
        bos: "<s>"                    # the named bos/eos tokens (normally listed above)
        eos: "</s>"
        generation_eos: ["<|im_end|>"]  # generation_config.eos_token_id, as texts
        add_bos: true                 # default encoding prepends bos

    Ids follow the order of ``special``, ``added``, ``plain``.
    """
    unknown = set(mapping) - set(MAPPING_KEYS)
    if unknown:
        raise ValueError(f"unknown tokenizer keys {sorted(unknown)}; expected some of {', '.join(MAPPING_KEYS)}")
    ordered: dict[str, int] = {}
    for key in ("special", "added", "plain"):
        for text in mapping.get(key) or ():
            ordered.setdefault(str(text), len(ordered))
    special = {ordered[str(text)] for text in mapping.get("special") or ()}
    atomic = {str(text): ordered[str(text)] for key in ("special", "added") for text in mapping.get(key) or ()}
    named = {name: mapping[key] for name, key in (("bos_token", "bos"), ("eos_token", "eos")) if mapping.get(key)}
    generation = mapping.get("generation_eos") or []
    if isinstance(generation, str):
        generation = [generation]
    missing = [text for text in generation if text not in ordered]
    if missing:
        raise ValueError(f"generation_eos tokens {missing} are not among the listed tokens")
    # A bos or eos the vocabulary lacks is allowed: it describes a broken tokenizer config.
    eos_texts = [*generation, *([named["eos_token"]] if named.get("eos_token") in ordered else [])]
    bos = named.get("bos_token")
    fingerprint = hashlib.sha256(json.dumps(dict(mapping), sort_keys=True, default=str).encode()).hexdigest()
    return Vocabulary(
        source=source,
        atomic=atomic,
        special_ids=special,
        eos_ids={ordered[text] for text in eos_texts},
        special_tokens=named,
        prepended=(bos,) if mapping.get("add_bos") and bos else (),
        fingerprint=fingerprint,
        tokens=ordered,
    )
