"""The special-token facts templatekit reads from a model directory, checked against transformers
itself (``AutoTokenizer.from_pretrained`` on directories built here): the tokenizer class's own
special-token defaults, classes that rebuild the post-processor, ``split_special_tokens``, a
normalizer that maps a marker onto an added token, and the TK5xx findings that follow."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from templatekit.cli import main
from templatekit.sources import load_source
from templatekit.vocabulary import load_vocabulary

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors  # noqa: E402

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA2 = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]"
          "{% else %} {{ m.content }} {{ eos_token }}{% endif %}{% endfor %}")
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Prints every named special token, so a render shows exactly what the template receives.
PROBE = ("{% for name in ['bos_token','eos_token','unk_token','sep_token','pad_token','cls_token','mask_token'] %}"
         "{{ name }}={{ (self._TemplateReference__context[name] if name in self._TemplateReference__context else "
         "'UNDEF') }};{% endfor %}")
MESSAGES = [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Q"}]
LLAMA3_MARKERS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATEKIT_CACHE_DIR", str(tmp_path / "cache"))


def _byte_chars() -> list[str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [byte for byte in range(256) if byte not in printable]
    return [chr(code) for code in printable] + [chr(256 + index) for index in range(len(extra))]


def byte_level(added: list[tuple[str, bool]], *, bos: str | None = None, normalizer=None) -> Tokenizer:
    """A ByteLevel BPE tokenizer (GPT-2 / Llama 3 / Qwen shape) with ``added`` tokens (text, special)."""
    vocab = {char: index for index, char in enumerate(_byte_chars())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    if normalizer is not None:
        backend.normalizer = normalizer
    for text, special in added:
        token = AddedToken(text, special=special, normalized=normalizer is not None and not special)
        (backend.add_special_tokens if special else backend.add_tokens)([token])
    if bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, backend.token_to_id(bos))])
    return backend


def sentencepiece_like(base: tuple[str, ...], *, bos: str | None = None) -> Tokenizer:
    """A byte-fallback Metaspace BPE tokenizer (Llama 2 / Gemma shape) whose first ids are ``base``."""
    vocab = {token: index for index, token in enumerate(base)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    vocab["▁"] = len(vocab)
    for code in range(33, 127):
        vocab.setdefault(chr(code), len(vocab))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, fuse_unk=True, unk_token=base[0]))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in base])
    if bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, backend.token_to_id(bos))])
    return backend


def write_dir(directory: Path, backend: Tokenizer, config: dict, *, model_config: dict | None = None,
              generation: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    backend.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    if model_config is not None:
        (directory / "config.json").write_text(json.dumps(model_config), encoding="utf-8")
    if generation is not None:
        (directory / "generation_config.json").write_text(json.dumps(generation), encoding="utf-8")
    return directory


def hf_tokenizer(directory: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        return transformers.AutoTokenizer.from_pretrained(str(directory))


def tk_render(directory: Path) -> str:
    """``templatekit render DIR --add-generation-prompt --format raw``, as a user runs it."""
    messages = directory.parent / f"{directory.name}-messages.json"
    messages.write_text(json.dumps(MESSAGES), encoding="utf-8")
    result = CliRunner().invoke(main, ["render", str(directory), "--messages", str(messages),
                                       "--add-generation-prompt", "--format", "raw"])
    assert result.exit_code == 0, result.output
    return result.output


def lint(directory: Path) -> list[dict]:
    result = CliRunner().invoke(main, ["lint", "--no-cache", "--select", "TK5", "--format", "json", "--jobs", "1",
                                       str(directory)])
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.output)["diagnostics"]


def codes(diagnostics: list[dict]) -> list[str]:
    return sorted(item["code"] for item in diagnostics)


# -- D2: the tokenizer class's own defaults ------------------------------------------------------------

LLAMA_BASE = ("<unk>", "<s>", "</s>")
CHATML_ADDED = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True)]
LLAMA3_ADDED = [("<|begin_of_text|>", True), ("<|end_of_text|>", True), ("<|start_header_id|>", True),
                ("<|end_header_id|>", True), ("<|eot_id|>", True)]

CLASS_CASES = {
    # tokenizer_config.json names no token: LlamaTokenizer supplies <s>, </s>, <unk>.
    "llama_no_names": (lambda: sentencepiece_like(LLAMA_BASE, bos="<s>"),
                       {"tokenizer_class": "LlamaTokenizer"}, None),
    "llama_fast_no_names": (lambda: sentencepiece_like(LLAMA_BASE, bos="<s>"),
                            {"tokenizer_class": "LlamaTokenizerFast"}, None),
    "gemma_mask_default": (lambda: sentencepiece_like(("<unk>", "<pad>", "<eos>", "<bos>", "<mask>")),
                           {"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>"}, None),
    "qwen2_unk_pad_defaults": (lambda: byte_level(CHATML_ADDED),
                               {"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>"}, None),
    "gpt2_defaults": (lambda: byte_level(LLAMA3_ADDED + [("<|endoftext|>", True)], bos="<|begin_of_text|>"),
                      {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
                      None),
    "gptneox_defaults": (lambda: byte_level(LLAMA3_ADDED + [("<|endoftext|>", True), ("<|padding|>", True)],
                                            bos="<|begin_of_text|>"),
                         {"tokenizer_class": "GPTNeoXTokenizer", "bos_token": "<|begin_of_text|>",
                          "eos_token": "<|eot_id|>"}, None),
    "cohere_defaults": (lambda: byte_level(LLAMA3_ADDED),
                        {"tokenizer_class": "CohereTokenizer", "bos_token": "<|begin_of_text|>",
                         "eos_token": "<|eot_id|>"}, None),
    # model_type qwen2 has a known-wrong Hub class: AutoTokenizer loads Qwen2Tokenizer anyway.
    "qwen2_model_type_overrides_generic_class": (lambda: byte_level(CHATML_ADDED),
                                                 {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>"},
                                                 {"model_type": "qwen2"}),
    # model_type mistral registers the generic backend: LlamaTokenizer's defaults do not apply.
    "mistral_model_type_is_generic": (lambda: sentencepiece_like(LLAMA_BASE, bos="<s>"),
                                      {"tokenizer_class": "LlamaTokenizer"}, {"model_type": "mistral"}),
    # A LlamaTokenizer over a ByteLevel tokenizer.json loads the generic backend.
    "llama_class_over_byte_level_is_generic": (lambda: byte_level(LLAMA3_ADDED, bos="<|begin_of_text|>"),
                                               {"tokenizer_class": "LlamaTokenizerFast",
                                                "eos_token": "<|eot_id|>"}, None),
}


@pytest.mark.parametrize("name", sorted(CLASS_CASES))
def test_template_receives_the_special_tokens_transformers_passes(tmp_path, name):
    build, config, model_config = CLASS_CASES[name]
    directory = write_dir(tmp_path / name, build(), {**config, "chat_template": PROBE}, model_config=model_config)
    tokenizer = hf_tokenizer(directory)
    expected = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert tk_render(directory) == expected
    named = {key: str(value) for key, value in tokenizer.special_tokens_map.items() if isinstance(value, str)
             or hasattr(value, "content")}
    assert load_source(directory).special_tokens == named


def test_llama_class_defaults_fix_tk502_and_find_the_doubled_bos(tmp_path):
    # No bos/eos names in the config, as in older Llama 2 repos: transformers still uses <s>/</s>.
    directory = write_dir(tmp_path / "llama2", sentencepiece_like(LLAMA_BASE, bos="<s>"),
                          {"tokenizer_class": "LlamaTokenizer", "chat_template": LLAMA2}, generation={"eos_token_id": 2})
    tokenizer = hf_tokenizer(directory)
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<s>[INST]") and tokenizer(prompt)["input_ids"][:2] == [1, 1]
    assert tk_render(directory) == prompt
    diagnostics = lint(directory)
    assert codes(diagnostics) == ["TK501"]
    assert "puts another '<s>' in front" in diagnostics[0]["message"]


def test_render_error_no_longer_claims_transformers_passes_nothing(tmp_path):
    directory = write_dir(tmp_path / "generic", byte_level(CHATML_ADDED),
                          {"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": "{{ bos_token.upper() }}"})
    messages = tmp_path / "m.json"
    messages.write_text(json.dumps(MESSAGES))
    result = CliRunner().invoke(main, ["render", str(directory), "--messages", str(messages), "--format", "raw"])
    assert result.exit_code != 0
    assert "nor would transformers pass one" not in result.output
    assert "neither do the defaults of its tokenizer class that templatekit knows" in result.output
    assert "--var bos_token=TEXT" in result.output


# -- D3: classes that rebuild the post-processor -------------------------------------------------------

def test_gptneox_class_rebuilds_the_post_processor_so_no_bos_is_added(tmp_path):
    backend = byte_level(LLAMA3_ADDED + [("<|endoftext|>", True), ("<|padding|>", True)], bos="<|begin_of_text|>")
    directory = write_dir(tmp_path / "neox", backend, {"tokenizer_class": "GPTNeoXTokenizer",
                                                       "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                                       "chat_template": LLAMA3})
    tokenizer = hf_tokenizer(directory)
    assert tokenizer("hello")["input_ids"] == tokenizer("hello", add_special_tokens=False)["input_ids"]
    assert load_vocabulary(load_source(directory)).prepended == ()
    assert "TK501" not in codes(lint(directory))


# -- D1: split_special_tokens ------------------------------------------------------------------------------

def test_split_special_tokens_reports_every_special_marker(tmp_path):
    backend = byte_level(CHATML_ADDED + [("<tool_call>", False)])
    directory = write_dir(tmp_path / "split", backend, {"tokenizer_class": "PreTrainedTokenizerFast",
                                                        "eos_token": "<|im_end|>", "split_special_tokens": True,
                                                        "chat_template": CHATML})
    tokenizer = hf_tokenizer(directory)
    assert len(tokenizer("<|im_start|>", add_special_tokens=False)["input_ids"]) > 1
    # A non-special added token stays whole in transformers, and for templatekit.
    assert len(tokenizer("<tool_call>", add_special_tokens=False)["input_ids"]) == 1
    vocabulary = load_vocabulary(load_source(directory))
    assert vocabulary.is_atomic("<tool_call>") and not vocabulary.is_atomic("<|im_start|>")
    diagnostics = lint(directory)
    assert codes(diagnostics) == ["TK503", "TK503"]
    assert {item["message"].split("'")[1] for item in diagnostics} == {"<|im_start|>", "<|im_end|>"}
    assert all("split_special_tokens: true" in item["message"] for item in diagnostics)


def test_split_special_tokens_means_the_prompt_bos_is_not_a_second_bos(tmp_path):
    backend = byte_level(LLAMA3_ADDED, bos="<|begin_of_text|>")
    directory = write_dir(tmp_path / "split3", backend, {"tokenizer_class": "PreTrainedTokenizerFast",
                                                         "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                                         "split_special_tokens": True, "chat_template": LLAMA3})
    tokenizer = hf_tokenizer(directory)
    prompt = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id
    diagnostics = lint(directory)
    assert "TK501" not in codes(diagnostics)
    assert sorted(item["message"].split("'")[1] for item in diagnostics) == sorted(LLAMA3_MARKERS)


# -- D5: a normalizer maps the marker onto an added token -----------------------------------------------------

@pytest.mark.parametrize("added, written", [("<|im_start|>", "<|IM_START|>"), ("<|IM_START|>", "<|im_start|>")])
def test_marker_the_normalizer_maps_onto_an_added_token_is_not_unknown(tmp_path, added, written):
    backend = byte_level([("<|endoftext|>", True), ("<|im_end|>", True), (added, False)],
                         normalizer=normalizers.Lowercase())
    template = CHATML.replace("<|im_start|>", written)
    directory = write_dir(tmp_path / "lower", backend, {"tokenizer_class": "PreTrainedTokenizerFast",
                                                        "eos_token": "<|im_end|>", "chat_template": template})
    tokenizer = hf_tokenizer(directory)
    assert tokenizer(written, add_special_tokens=False)["input_ids"] == [tokenizer.convert_tokens_to_ids(added)]
    assert "TK504" not in codes(lint(directory))


# -- D7: whitespace before the BOS ---------------------------------------------------------------------------

def test_doubled_bos_after_leading_whitespace_says_so(tmp_path):
    directory = write_dir(tmp_path / "nl", sentencepiece_like(LLAMA_BASE, bos="<s>"),
                          {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                           "chat_template": "\n" + LLAMA2})
    tokenizer = hf_tokenizer(directory)
    ids = tokenizer(tokenizer.apply_chat_template(MESSAGES, tokenize=False))["input_ids"]
    assert ids[0] == 1 and ids[1] != 1 and ids.count(1) == 2
    [finding] = [item for item in lint(directory) if item["code"] == "TK501"]
    assert "starts with '\\n' and then '<s>'" in finding["message"]
    assert "already starts with" not in finding["message"]
