"""One source, one verdict: lint, render and transformers agree on what loads.

Each case here is a source transformers 5.25 loads and renders (checked by hand with
``AutoTokenizer.from_pretrained(dir)`` / ``gguf_file=`` and ``apply_chat_template``) that lint
used to refuse as a whole, or one where lint and render said different things.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from templatekit.errors import InputError
from templatekit.sources import load_source
from templatekit.vocabulary import load_vocabulary

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
STRING, ARRAY, INT32, UINT32 = 8, 9, 5, 4


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf_strings(*texts: str) -> bytes:
    return struct.pack("<IQ", STRING, len(texts)) + b"".join(gguf_string(text) for text in texts)


def gguf_ints(*values: int) -> bytes:
    return struct.pack(f"<IQ{len(values)}i", INT32, len(values), *values)


def raw_gguf(path: Path, entries: list[tuple[str, int, bytes]], *, big_endian: bool = False) -> Path:
    """A tensor-less GGUF holding exactly ``entries`` (GGUFWriter refuses the odd ones needed here)."""
    body = b"".join(gguf_string(key) + struct.pack("<I", kind) + payload for key, kind, payload in entries)
    header = struct.pack(">IQQ" if big_endian else "<IQQ", 3, 0, len(entries))
    path.write_bytes(b"GGUF" + header + body)
    return path


def lint_report(run, path: Path) -> tuple[int, dict]:
    result = run("lint", "--no-cache", "--format", "json", str(path))
    [report] = json.loads(result.output)["files"]
    return result.exit_code, report


def render(run, *args: str):
    return run("render", "--raw", "-f", "basic", *args)


# -- case 1: a tokenizer part that lint refused although transformers loads it -----------------


def test_a_gguf_token_type_list_shorter_than_the_vocabulary_is_read_as_transformers_reads_it(tmp_path, run):
    # transformers zips tokens with their types: tokens past the end of the list are normal ones.
    path = raw_gguf(tmp_path / "m.gguf", [
        ("tokenizer.ggml.model", STRING, gguf_string("gpt2")),
        ("tokenizer.ggml.tokens", ARRAY, gguf_strings("<unk>", "<|im_start|>", "<|im_end|>", "a")),
        ("tokenizer.ggml.token_type", ARRAY, gguf_ints(2, 3)),
        ("tokenizer.ggml.eos_token_id", UINT32, struct.pack("<I", 2)),
        ("tokenizer.chat_template", STRING, gguf_string(CHATML)),
    ])
    vocabulary = load_vocabulary(load_source(path))
    assert vocabulary.is_atomic("<|im_start|>") and not vocabulary.is_atomic("<|im_end|>")
    code, report = lint_report(run, path)
    assert code != 2 and report["error"] is None and report["templates"] == 1
    assert (f"{path}[tokenizer.ggml.token_type]: has 2 entries for 4 tokens; tokens 2 to 3 are read as normal "
            "tokens, as transformers reads them") in report["notes"]
    assert render(run, str(path)).exit_code == 0


def test_an_added_tokens_decoder_entry_without_content_loads_as_in_transformers(tmp_path, run):
    # AddedToken(**{"special": True}) has the content "", which the backend never adds.
    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": CHATML, "eos_token": "<|im_end|>",
        "added_tokens_decoder": {"1": {"special": True}, "2": {"content": "<|im_end|>", "special": True}},
    }), encoding="utf-8")
    vocabulary = load_vocabulary(load_source(model))
    assert vocabulary.atomic == {"<|im_end|>": 2} and vocabulary.is_special("<|im_end|>")
    code, report = lint_report(run, model)
    assert code != 2 and report["error"] is None and report["templates"] == 1 and report["notes"] == []


def test_a_non_string_added_token_content_is_still_refused(tmp_path):
    # transformers' AddedToken(content=5) raises: this one stays an input error.
    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": CHATML, "added_tokens_decoder": {"1": {"content": 5}}}), encoding="utf-8")
    with pytest.raises(InputError, match=r"added_tokens_decoder\['1'\] must map an integer id"):
        load_vocabulary(load_source(model))


# -- case 2: chat_template.jinja that is a directory -------------------------------------------


def test_a_chat_template_jinja_directory_gets_the_same_error_from_lint_and_render(tmp_path, run):
    # transformers skips it and, with no other template, has none to render.
    model = tmp_path / "model"
    (model / "chat_template.jinja").mkdir(parents=True)
    (model / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}), encoding="utf-8")
    rendered = render(run, str(model))
    code, report = lint_report(run, model)
    assert rendered.exit_code == 2 and code == 2
    assert "not a regular file, so skipped: chat_template.jinja" in report["error"]
    assert report["error"] in rendered.output and report["notes"] == []


def test_a_chat_template_jinja_directory_leaves_the_json_template_to_both(tmp_path, run):
    model = tmp_path / "model"
    (model / "chat_template.jinja").mkdir(parents=True)
    (model / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML}), encoding="utf-8")
    assert render(run, str(model)).output.startswith("<|im_start|>user\n")
    code, report = lint_report(run, model)
    assert code != 2 and report["templates"] == 1


def test_a_base_model_directory_is_still_a_note(tmp_path, run):
    model = tmp_path / "model"
    model.mkdir()
    (model / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}), encoding="utf-8")
    code, report = lint_report(run, model)
    assert code == 0 and report["error"] is None and "a base model?" in report["notes"][0]


# -- case 3: GGUF files transformers reads although a named template key is odd -----------------


@pytest.mark.parametrize("key, kind, payload, problem", [
    ("tokenizer.chat_template.x", UINT32, struct.pack("<I", 5), "a chat template must be a string, found a number"),
    ("tokenizer.chat_template.", STRING, gguf_string("T"), "a named chat template needs a name after"),
    ("tokenizer.chat_template.default", STRING, gguf_string("T"), "a named template cannot be called 'default'"),
    ("tokenizer.chat_template.x", STRING, gguf_string(""), "an empty string: there is no template text"),
], ids=["number", "no-name", "default", "empty"])
def test_a_bad_named_gguf_template_is_passed_over_and_the_default_served(tmp_path, run, key, kind, payload, problem):
    path = raw_gguf(tmp_path / "m.gguf", [
        ("tokenizer.chat_template", STRING, gguf_string(CHATML)),
        (key, kind, payload),
    ])
    source = load_source(path)
    assert list(source.templates) == ["default"] and source.select().text == CHATML
    rendered = render(run, str(path))
    assert rendered.exit_code == 0 and rendered.output.startswith("<|im_start|>user\n")
    code, report = lint_report(run, path)
    assert code != 2 and report["templates"] == 1
    [note] = report["notes"]
    assert note.startswith(f"{path}[{key}]: {problem}") and note.endswith("not linted as a template")


def test_asking_for_a_passed_over_named_gguf_template_says_why(tmp_path, run):
    path = raw_gguf(tmp_path / "m.gguf", [
        ("tokenizer.chat_template", STRING, gguf_string(CHATML)),
        ("tokenizer.chat_template.x", UINT32, struct.pack("<I", 5)),
    ])
    result = render(run, "-t", "x", str(path))
    assert result.exit_code == 2
    assert (f"{path}: its chat template named 'x' was passed over: {path}[tokenizer.chat_template.x]: a chat "
            "template must be a string, found a number") in result.output


def test_a_default_gguf_template_that_is_not_a_string_still_makes_the_file_unusable(tmp_path):
    path = raw_gguf(tmp_path / "m.gguf", [("tokenizer.chat_template", UINT32, struct.pack("<I", 5))])
    with pytest.raises(InputError, match=r"\[tokenizer\.chat_template\]: a chat template must be a string, found a number"):
        load_source(path)


def test_a_gguf_token_list_of_numbers_says_so(tmp_path):
    path = raw_gguf(tmp_path / "m.gguf", [
        ("tokenizer.ggml.tokens", ARRAY, gguf_ints(1, 2)),
        ("tokenizer.ggml.bos_token_id", UINT32, struct.pack("<I", 0)),
        ("tokenizer.chat_template", STRING, gguf_string(CHATML)),
    ])
    with pytest.raises(InputError) as error:
        load_source(path)
    assert str(error.value) == f"{path}[tokenizer.ggml.tokens]: must be an array of strings, found an array of numbers"


def test_a_big_endian_gguf_is_named_as_such(tmp_path):
    path = raw_gguf(tmp_path / "m.gguf", [], big_endian=True)
    with pytest.raises(InputError) as error:
        load_source(path)
    assert "a big-endian GGUF file (version 3 with its bytes swapped)" in str(error.value)
    assert "little-endian" in str(error.value)


def test_a_directory_search_reports_a_model_directory_whose_template_is_a_directory(tmp_path, run):
    # Searched, it used to be passed over in silence while render refused it.
    model = tmp_path / "repo" / "model"
    (model / "chat_template.jinja").mkdir(parents=True)
    (model / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}), encoding="utf-8")
    (tmp_path / "repo" / "ok.jinja").write_text(CHATML, encoding="utf-8")
    result = run("lint", "--no-cache", "-j", "1", "--format", "json", str(tmp_path / "repo"))
    reports = {Path(report["path"]).name: report for report in json.loads(result.output)["files"]}
    assert result.exit_code == 2 and reports["ok.jinja"]["templates"] == 1
    assert "not a regular file, so skipped: chat_template.jinja" in reports["model"]["error"]
