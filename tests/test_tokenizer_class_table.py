"""The tokenizer class AutoTokenizer loads for a model directory, and that class's special-token
defaults, from transformers' own tables shipped as templatekit/data/tokenizer_classes.json: the
file matches the installed transformers, ships with the package, costs lint no transformers
import, and gives the special tokens ``AutoTokenizer.from_pretrained(directory)`` gives."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from templatekit.sources import load_source, tokenizer_class_for

ROOT = Path(__file__).resolve().parents[1]
DATA_FILE = ROOT / "templatekit" / "data" / "tokenizer_classes.json"
GENERATOR = ROOT / "scripts" / "generate_tokenizer_classes.py"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_tokenizer_classes", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_table_matches_the_installed_transformers():
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed, so there is nothing to compare the shipped table with")
    generator = _generator()
    expected = generator.render(generator.build())
    assert DATA_FILE.read_text(encoding="utf-8") == expected, (
        "templatekit/data/tokenizer_classes.json is stale for this transformers: "
        "run python scripts/generate_tokenizer_classes.py")


def test_table_is_package_data():
    """A non-editable install ships the file: pyproject's package-data for templatekit covers it."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data.get("templatekit", [])
    shipped = [path.relative_to(ROOT / "templatekit").as_posix() for path in (ROOT / "templatekit" / "data").iterdir()
               if path.is_file()]
    assert shipped and all(any(fnmatch.fnmatch(name, pattern) for pattern in patterns) for name in shipped)


def test_table_is_read_without_importing_transformers(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ bos_token }}"}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "olmoe"}))
    code = (
        "import sys\n"
        "from templatekit.sources import load_source\n"
        f"print(load_source({str(tmp_path)!r}).special_tokens['bos_token'])\n"
        "print(','.join(m for m in ('transformers', 'torch', 'tokenizers') if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == ["<|endoftext|>", ""]


def test_a_missing_table_is_one_line_naming_the_installation(tmp_path, monkeypatch, run):
    # A damaged installation is not the user's file: say which file is missing and how to mend it.
    import templatekit.sources as sources

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ bos_token }}"}))
    monkeypatch.setattr(sources, "TOKENIZER_CLASSES_RESOURCE", "data/no_such_table.json")
    monkeypatch.setattr(sources, "_tokenizer_class_table_cache", [])
    result = run("render", str(tmp_path))
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "no_such_table.json: templatekit's tokenizer-class table is missing or damaged" in line
    assert line.endswith("reinstall templatekit")


# -- parity with AutoTokenizer ---------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
from tests.test_tokenizer_class_defaults import (  # noqa: E402
    CHATML_ADDED, LLAMA_BASE, MESSAGES, PROBE, byte_level, hf_tokenizer, sentencepiece_like, tk_render, write_dir,
)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATEKIT_CACHE_DIR", str(tmp_path / "cache"))


# Chat and vision-language model types the hand-written table lacked (each gave the wrong tokens),
# and a few it had; crossed with the Hub classes real repositories name.
MODEL_TYPES = ["qwen3_5", "qwen3_vl", "internvl", "olmoe", "aya_vision", "gemma3n_text", "idefics2", "qwen2_5_omni",
               "llava", "smolvlm", "code_llama", "internlm2", "qwen2", "mistral", "gemma3"]
HUB_CLASSES = [None, "LlamaTokenizer", "PreTrainedTokenizerFast", "Qwen2Tokenizer"]


def _named(tokenizer) -> dict[str, str]:
    return {key: str(value) for key, value in tokenizer.special_tokens_map.items()
            if isinstance(value, str) or hasattr(value, "content")}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_special_tokens_follow_autotokenizer_for_every_model_type(tmp_path, model_type):
    for hub_class in HUB_CLASSES:
        directory = write_dir(tmp_path / f"{model_type}-{hub_class}", sentencepiece_like(LLAMA_BASE, bos="<s>"),
                              {"chat_template": PROBE, **({"tokenizer_class": hub_class} if hub_class else {})},
                              model_config={"model_type": model_type})
        tokenizer = hf_tokenizer(directory)
        assert load_source(directory).special_tokens == _named(tokenizer), (model_type, hub_class)
        assert tk_render(directory) == tokenizer.apply_chat_template(MESSAGES, tokenize=False,
                                                                     add_generation_prompt=True)


@pytest.mark.parametrize("config, model_config, expected", [
    # model_type qwen3_5's Hub class is known to be wrong: Qwen3_5Tokenizer loads whatever it says.
    ({"tokenizer_class": "PreTrainedTokenizerFast"}, {"model_type": "qwen3_5"}, "Qwen3_5Tokenizer"),
    # llava registers the generic backend, which wins over the Hub's LlamaTokenizer.
    ({"tokenizer_class": "LlamaTokenizer"}, {"model_type": "llava"}, "TokenizersBackend"),
    ({}, {"model_type": "olmoe"}, "GPTNeoXTokenizer"),
    # transformers strips "Fast" until it finds a class.
    ({"tokenizer_class": "LlamaTokenizerFastFast"}, None, "LlamaTokenizer"),
    # code_llama has a tokenizer but no config class: with no class named, the generic backend.
    ({}, {"model_type": "code_llama"}, "TokenizersBackend"),
])
def test_tokenizer_class_for_names_the_class_autotokenizer_loads(tmp_path, config, model_config, expected):
    directory = write_dir(tmp_path / "model", sentencepiece_like(LLAMA_BASE, bos="<s>"),
                          {"chat_template": PROBE, **config}, model_config=model_config)
    assert type(hf_tokenizer(directory)).__name__ == expected
    assert tokenizer_class_for(directory) == expected


# -- auto_map without trust_remote_code ------------------------------------------------------------

AUTO_MAP = {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}


@pytest.mark.parametrize("config, model_config", [
    # A plain AutoTokenizer.from_pretrained does not run the repository's code when transformers has
    # a class of its own: the tokenizer_class named, ...
    ({"tokenizer_class": "LlamaTokenizer"}, None),
    # ... even for a checkpoint otherwise forced onto the generic backend (auto_map skips that check),
    ({"tokenizer_class": "LlamaTokenizer"}, {"model_type": "llama", "_name_or_path": "deepseek-ai/deepseek-coder-x"}),
    # ... or the model type's class.
    ({}, {"model_type": "gemma"}),
])
def test_auto_map_without_trust_remote_code_uses_the_local_class(tmp_path, config, model_config):
    directory = write_dir(tmp_path / "model", sentencepiece_like(LLAMA_BASE, bos="<s>"),
                          {"chat_template": PROBE, "auto_map": AUTO_MAP, **config}, model_config=model_config)
    tokenizer = hf_tokenizer(directory)
    assert tokenizer_class_for(directory) == type(tokenizer).__name__ != "TokenizersBackend"
    assert load_source(directory).special_tokens == _named(tokenizer)
    assert tk_render(directory) == tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)


def test_auto_map_with_no_local_class_needs_the_repository_code(tmp_path):
    directory = write_dir(tmp_path / "model", byte_level(CHATML_ADDED), {"chat_template": PROBE, "auto_map": AUTO_MAP,
                                                                        "tokenizer_class": "XTokenizer"})
    with warnings.catch_warnings(), pytest.raises(ValueError, match="trust_remote_code=True"):
        warnings.simplefilter("ignore")
        transformers.AutoTokenizer.from_pretrained(str(directory))
    assert tokenizer_class_for(directory) is None
    assert "bos_token" not in load_source(directory).special_tokens
