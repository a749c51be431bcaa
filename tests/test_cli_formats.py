"""Every command a script or CI job reads takes --format: capabilities, fuzz and fixtures print
one JSON document on stdout (valid even when something failed, with nothing else on stdout),
render's --json and --raw are aliases of --format json/raw, and capabilities picks a named
template with -t as render does."""

from __future__ import annotations

import json

import pytest
import yaml

from templatekit.conversation import Conversation

CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Prints tools, so it supports them where CHATML does not.
CHATML_WITH_TOOLS = "{% if tools %}{{ tools | tojson }}\n{% endif %}" + CHATML
# Concatenating None raises, so an assistant turn with null content cannot render.
NEEDS_CONTENT = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content + '' }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Planted bug: a system message anywhere but first is silently left out.
LATE_SYSTEM_DROPPED = ("{% for m in messages %}{% if m.role != 'system' or loop.first %}<|im_start|>{{ m.role }}\n"
                       "{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
                       "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Planted bug: the generation prompt is printed whatever add_generation_prompt says.
PROMPT_ALWAYS = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                 "<|im_start|>assistant\n")
# Declines every conversation with its own raise_exception (after naming the field
# continue_final_message continues, which transformers otherwise refuses before rendering).
DECLINES_EVERYTHING = "{{ raise_exception('not today') }}{% for m in messages %}{{ m.content }}{% endfor %}"


@pytest.fixture
def template(tmp_path):
    def write(text: str, name: str = "chat_template.jinja") -> str:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def named_templates(tmp_path) -> str:
    path = tmp_path / "tokenizer_config.json"
    path.write_text(json.dumps({"chat_template": [{"name": "default", "template": CHATML},
                                                  {"name": "tool_use", "template": CHATML_WITH_TOOLS}],
                                "eos_token": "<|im_end|>"}), encoding="utf-8")
    return str(path)


def _json(result) -> object:
    """stdout as one JSON document (stderr kept apart)."""
    return json.loads(result.stdout)


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("templatekit: error: ")
    return lines[0]


# ---------------------------------------------------------------------------------------------
# render


@pytest.mark.parametrize("spelled_format, alias", [("json", "--json"), ("raw", "--raw")])
def test_render_format_prints_what_its_alias_prints(run, template, spelled_format, alias) -> None:
    source = template(CHATML)
    spelled = run("render", source, "-f", "basic", "--format", spelled_format)
    aliased = run("render", source, "-f", "basic", alias)
    assert spelled.exit_code == aliased.exit_code == 0
    assert spelled.stdout == aliased.stdout
    if spelled_format == "json":
        (rendering,) = _json(spelled)
        assert rendering["fixture"] == "basic" and rendering["text"].startswith("<|im_start|>user\n")
    else:
        assert spelled.stdout.startswith("<|im_start|>user\nWhat is the capital")


def test_render_format_text_is_the_default(run, template) -> None:
    source = template(CHATML)
    assert run("render", source, "-f", "basic", "--format", "text", "--no-color").stdout == \
        run("render", source, "-f", "basic", "--no-color").stdout


def test_render_json_stays_json_when_a_render_fails(run, template) -> None:
    result = run("render", template("{{ raise_exception('no') }}"), "-f", "basic", "--format", "json")
    assert result.exit_code == 1
    (rendering,) = _json(result)
    assert rendering["error"]["kind"] == "raised" and rendering["text"] is None


@pytest.mark.parametrize("args, named", [
    (("--format", "json", "--raw"), "--format json and --raw"),
    (("--format", "raw", "--json"), "--format raw and --json"),
    (("--format", "text", "--raw"), "--format text and --raw"),
    (("--json", "--raw"), "--json and --raw"),
])
def test_render_conflicting_formats_are_a_usage_error(run, template, args, named) -> None:
    line = _one_error_line(run("render", template(CHATML), "-f", "basic", *args))
    assert line.startswith("templatekit: error: render: ")
    assert named in line and "give one" in line


@pytest.mark.parametrize("args", [("--format", "json", "--json"), ("--format", "raw", "--raw")])
def test_render_an_alias_agreeing_with_format_is_fine(run, template, args) -> None:
    assert run("render", template(CHATML), "-f", "basic", *args).exit_code == 0


def test_render_unknown_format_names_the_closest(run, template) -> None:
    line = _one_error_line(run("render", template(CHATML), "--format", "jsn"))
    assert "'--format'" in line and "(did you mean 'json'?)" in line


# ---------------------------------------------------------------------------------------------
# capabilities


def test_capabilities_json_says_what_is_supported_and_where_it_came_from(run, template) -> None:
    source = template("{# templatekit: capabilities documents=true #}" + NEEDS_CONTENT)
    result = run("capabilities", source, "--format", "json")
    assert result.exit_code == 0, result.output
    payload = _json(result)
    assert payload["source"] == source
    (entry,) = payload["templates"]
    assert entry["template"] == "default"
    assert entry["probing_stopped"] is None
    found = entry["capabilities"]
    assert list(found)[:3] == ["system", "tools", "tool_calls"]
    assert found["system"] == {"supported": True, "source": "probed", "note": None, "description": "system role"}
    assert found["tools"]["supported"] is False
    assert found["documents"]["supported"] is True and found["documents"]["source"] == "comment"
    # The null-content fact goes with tool calls (where content is null), not with a "no".
    assert found["tool_calls"]["supported"] is False and found["tool_calls"]["note"] is None
    skipped = {item["fixture"]: item["needs"] for item in entry["not_evaluated"]}
    assert skipped["tool-call"] == ["tool_calls"]
    assert "documents" not in skipped


def test_capabilities_note_null_content_on_tool_calls_the_template_renders(run, template) -> None:
    # Clients send tool-call turns with null content; this template needs a string there.
    calls = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content + '' }}{% for c in m.tool_calls or [] %}"
             "<call>{{ c.function.name }}{{ c.function.arguments|tojson }}</call>{% endfor %}{% endfor %}"
             "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    found = _json(run("capabilities", template(calls), "--format", "json"))["templates"][0]["capabilities"]
    assert found["tool_calls"]["supported"] is True
    assert found["tool_calls"]["note"] == "requires non-null content on tool-call turns"
    # A template that takes null content on tool-call turns (only a plain null turn fails) gets no note.
    tolerant = calls.replace("{{ m.content + '' }}", "{% if not m.tool_calls %}{{ m.content + '' }}{% endif %}")
    found = _json(run("capabilities", template(tolerant), "--format", "json"))["templates"][0]["capabilities"]
    assert found["tool_calls"]["supported"] is True and found["tool_calls"]["note"] is None


def test_capabilities_text_is_unchanged_by_the_new_options(run, template) -> None:
    result = run("capabilities", template(CHATML), "--format", "text")
    assert result.exit_code == 0
    assert result.stdout.startswith("system ")
    assert "not evaluated (fixtures needing a capability this template lacks):" in result.stdout


def test_capabilities_of_several_named_templates_shows_each_without_a_name(run, named_templates) -> None:
    text = run("capabilities", named_templates)
    assert "== default" in text.stdout and "== tool_use" in text.stdout
    payload = _json(run("capabilities", named_templates, "--format", "json"))
    assert [entry["template"] for entry in payload["templates"]] == ["default", "tool_use"]


@pytest.mark.parametrize("name, tools", [("default", False), ("tool_use", True)])
def test_capabilities_template_name_picks_one(run, named_templates, name, tools) -> None:
    text = run("capabilities", named_templates, "-t", name)
    assert text.exit_code == 0
    assert "==" not in text.stdout
    assert sum(line.startswith("generation_prompt ") for line in text.stdout.splitlines()) == 1
    assert ("tools                yes" in text.stdout) is tools
    payload = _json(run("capabilities", named_templates, "--template-name", name, "--format", "json"))
    (entry,) = payload["templates"]
    assert entry["template"] == name
    assert entry["capabilities"]["tools"]["supported"] is tools


@pytest.mark.parametrize("output_format", ["text", "json"])
def test_capabilities_unknown_template_name_names_the_available_ones(run, named_templates, output_format) -> None:
    line = _one_error_line(run("capabilities", named_templates, "-t", "tools", "--format", output_format))
    assert named_templates in line
    assert "no chat template named 'tools'" in line and "available: 'default', 'tool_use'" in line


def test_capabilities_template_name_of_a_single_template(run, template) -> None:
    source = template(CHATML)
    assert run("capabilities", source, "-t", "default").exit_code == 0
    line = _one_error_line(run("capabilities", source, "-t", "tool_use"))
    assert "single unnamed chat template" in line and "'tool_use'" in line


def test_capabilities_json_when_probing_ran_out_of_time(run, template) -> None:
    # Every render of this runs out of its time budget (two nested loops of 10**5).
    endless = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}" + CHATML
    result = run("capabilities", template(endless), "--format", "json")
    assert result.exit_code == 1
    (entry,) = _json(result)["templates"]
    assert entry["probing_stopped"]["probe"].startswith("probe:")
    assert "time budget" in entry["probing_stopped"]["message"]
    # Nothing was seen, so no "no" can claim to be a probed fact.
    assert {item["source"] for item in entry["capabilities"].values()} == {"unknown"}
    assert "probing stopped at 'probe:" in result.stderr


# ---------------------------------------------------------------------------------------------
# fuzz


def test_fuzz_json_reports_a_broken_invariant_as_data(run, template, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = template(LATE_SYSTEM_DROPPED)
    output = tmp_path / "found.yaml"
    result = run("fuzz", source, "-n", "200", "--seed", "11", "--format", "json", "-o", str(output))
    assert result.exit_code == 1
    payload = _json(result)
    assert payload["source"] == source and payload["template"] == "default"
    assert payload["seed"] == 11 and payload["examples"] == 200
    assert 1 <= payload["examples_run"] <= 200
    assert payload["ok"] is False
    assert "render-error" in payload["invariants"] and "TK603 content-dropped" in payload["invariants"]
    (broken,) = payload["broken"]
    assert (broken["code"], broken["name"]) == ("TK603", "content-dropped")
    assert broken["message"].startswith("content silently dropped: messages[")
    assert broken["fixture_file"] == str(output)
    # The conversation is the written fixture, as data.
    assert broken["conversation"] == yaml.safe_load(output.read_text(encoding="utf-8"))
    conversation = Conversation.from_mapping(broken["conversation"])
    assert any(message["role"] == "system" for message in conversation.messages[1:])
    assert "wrote" not in result.output


def test_fuzz_json_when_nothing_breaks(run, template) -> None:
    result = run("fuzz", template(CHATML), "-n", "20", "--seed", "1", "--format", "json")
    assert result.exit_code == 0
    payload = _json(result)
    assert payload["ok"] is True and payload["broken"] == []
    assert payload["examples_run"] == 20


def test_fuzz_json_without_output_has_no_fixture_file(run, template) -> None:
    (broken,) = _json(run("fuzz", template(LATE_SYSTEM_DROPPED), "-n", "200", "--seed", "11",
                          "--format", "json"))["broken"]
    assert broken["fixture_file"] is None


def test_fuzz_json_keeps_the_declined_warning_off_stdout(run, template) -> None:
    result = run("fuzz", template(DECLINES_EVERYTHING), "-n", "5", "--seed", "1", "--format", "json")
    assert result.exit_code == 0
    assert _json(result)["declined"] == 5
    assert "declined or went over budget on every example" in result.stderr


def test_fuzz_text_and_json_agree_with_the_same_seed(run, template) -> None:
    source = template(PROMPT_ALWAYS)
    text = run("fuzz", source, "-n", "20", "--seed", "3")
    payload = _json(run("fuzz", source, "-n", "20", "--seed", "3", "--format", "json"))
    assert text.exit_code == 1
    for broken in payload["broken"]:
        assert f"FAILED {broken['invariant']}" in text.stdout
        assert broken["message"] in text.stdout


@pytest.mark.parametrize("source, words", [
    (PROMPT_ALWAYS, "the generated conversation renders the same with and without add_generation_prompt"),
    (LATE_SYSTEM_DROPPED, "(system) of the generated conversation"),
], ids=["TK601", "TK603"])
def test_fuzz_calls_a_generated_conversation_what_it_is(run, template, source, words) -> None:
    result = run("fuzz", template(source), "-n", "200", "--seed", "11")
    assert result.exit_code == 1
    assert words in result.stdout
    assert "fixture 'conversation'" not in result.stdout and "of conversation" not in result.stdout


def test_fuzz_unknown_template_name_is_one_line(run, named_templates) -> None:
    line = _one_error_line(run("fuzz", named_templates, "-t", "nope", "--format", "json"))
    assert "available: 'default', 'tool_use'" in line


# ---------------------------------------------------------------------------------------------
# fixtures


def test_fixtures_json_lists_every_built_in_whole(run) -> None:
    result = run("fixtures", "--format", "json")
    assert result.exit_code == 0
    listed = _json(result)
    names = [fixture["name"] for fixture in listed]
    assert "basic" in names and "tool-call" in names
    assert len(names) == len(run("fixtures").stdout.splitlines())
    for fixture in listed:
        assert {"name", "description", "requires", "messages", "tools", "documents"} <= set(fixture)
    call = listed[names.index("tool-call")]
    assert call["requires"] == ["tool_calls", "tool_responses"]
    assert call["tools"] and call["documents"] is None
    assert any(message.get("tool_calls") for message in call["messages"])
    assert listed[names.index("documents")]["documents"]


def test_fixtures_json_of_named_ones_matches_their_yaml(run) -> None:
    listed = _json(run("fixtures", "tool-call", "prefill", "--format", "json"))
    assert [fixture["name"] for fixture in listed] == ["tool-call", "prefill"]
    shown = yaml.safe_load(run("fixtures", "prefill").stdout)
    assert listed[1]["requires"] == [] and listed[1]["tools"] is None and listed[1]["documents"] is None
    assert {key: value for key, value in listed[1].items() if value not in (None, [])} == shown


def test_a_fixture_copied_from_the_json_renders_like_the_built_in(run, template, tmp_path) -> None:
    source = template(CHATML_WITH_TOOLS)
    for fixture in _json(run("fixtures", "--format", "json")):
        copied = tmp_path / f"{fixture['name']}.json"
        copied.write_text(json.dumps(fixture), encoding="utf-8")
        mine = run("render", source, "-f", str(copied), "--format", "json")
        builtin = run("render", source, "-f", fixture["name"], "--format", "json")
        assert _json(mine)[0]["text"] == _json(builtin)[0]["text"], fixture["name"]


def test_fixtures_json_of_an_unknown_name_is_one_line(run) -> None:
    line = _one_error_line(run("fixtures", "bsic", "--format", "json"))
    assert "did you mean 'basic'?" in line


@pytest.mark.parametrize("command", [
    ["render", "{template}", "-f", "basic", "--format", "json"],
    ["diff", "{template}", "{other}", "-f", "basic", "--format", "json"],
], ids=["render", "diff"])
def test_json_output_stays_utf8_when_a_template_prints_a_lone_surrogate(tmp_path, command):
    """A lone surrogate cannot be written as UTF-8; the JSON escapes it (\\udcff) instead of
    writing a byte no strict reader accepts."""
    import subprocess
    import sys

    template = tmp_path / "surrogate.json"
    # A JSON string may hold a lone surrogate; the template prints one in every message.
    template.write_text(json.dumps({"chat_template": "{% for m in messages %}{{ m.content }}\udcff{% endfor %}"}),
                        encoding="utf-8")
    other = tmp_path / "other.jinja"
    other.write_text("{% for m in messages %}{{ m.content }}{% endfor %}", encoding="utf-8")
    arguments = [part.format(template=template, other=other) for part in command]
    completed = subprocess.run([sys.executable, "-m", "templatekit", *arguments], capture_output=True, timeout=120)
    document = json.loads(completed.stdout.decode("utf-8"))  # strict: raises on a raw surrogate byte
    assert "\udcff" in json.dumps(document, ensure_ascii=False)
