"""Lint configuration values: rule options checked against their declared specs, selections that
select nothing, and what `--config` accepts.

The bad-value cases are generated from the rules' declarations, so a new option is covered as
soon as it is declared; a new kind of spec, or an option with no behaviour case below, fails here
until it gets cases of its own.
"""

from __future__ import annotations

import json
import os

import pytest

from templatekit.lint.config import NameList, RuleOptions, WholeNumber, option_spec
from templatekit.lint.registry import all_rules

TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}\n"


@pytest.fixture(autouse=True)
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TEMPLATEKIT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "t.jinja").write_text(TEMPLATE, encoding="utf-8")
    return tmp_path


def declared_options() -> list[tuple[str, str]]:
    return [(rule.code, option) for rule in all_rules() for option in rule.options]


def spec_of(code: str, option: str):
    return option_spec(next(rule for rule in all_rules() if rule.code == code), option)


def bad_values(spec) -> list[tuple[str, str, str]] | None:
    """(value as TOML, how the message shows it, hint after it) for values ``spec`` refuses."""
    if isinstance(spec, WholeNumber):
        below = spec.minimum - 1
        return [
            ('"abc"', "'abc'", ""),
            ('"10"', "'10'", ""),
            ("1e400", "inf", ""),
            ("nan", "nan", ""),
            ("1.9", "1.9", ""),
            ("[1]", "[1]", ""),
            ("{ a = 1 }", "{'a': 1}", ""),
            ("true", "true", ""),
            ("false", "false", ""),
            (str(below), str(below), ""),
            ("-5", "-5", ""),
        ]
    if isinstance(spec, NameList):
        return [
            ("5", "5", ""),
            ("true", "true", ""),
            ("[1]", "[1]", ""),
            ('["ok", 2]', "['ok', 2]", ""),
            ('[["a"]]', "[['a']]", ""),
            ("{ a = 1 }", "{'a': 1}", ""),
            ('"system_date"', "'system_date'", '; write a list, even for one name: ["system_date"]'),
            ('["system-date"]', "['system-date']", " ('system-date' is not a variable name)"),
            ('[""]', "['']", " ('' is not a variable name)"),
        ]
    return None


def expected_type(spec) -> str:
    if isinstance(spec, WholeNumber):
        return f"a whole number of at least {spec.minimum:,}"
    return "a list of variable names (strings)"


def bad_cases() -> list:
    cases = []
    for code, option in declared_options():
        spec = spec_of(code, option)
        for toml, shown, hint in bad_values(spec) or [(None, None, None)]:
            cases.append(pytest.param(code, option, toml, shown, hint, id=f"{code}-{option}-{toml}"))
    return cases


def lint(run, *args: str):
    return run("lint", "--no-cache", "--static", *args)


def write_config(project, text: str, name: str = "templatekit.toml") -> None:
    (project / name).write_text(text, encoding="utf-8")


def test_every_rule_option_declares_its_spec():
    for rule in all_rules():
        if rule.options:
            assert isinstance(rule.options, RuleOptions), f"{rule.code}: declare options with RuleOptions"
            assert set(rule.options.specs) == set(rule.options), rule.code
            for option, spec in rule.options.specs.items():
                assert spec.parse(spec.default) == spec.default, f"{rule.code}.{option}: its default is refused"


@pytest.mark.parametrize("code, option, toml, shown, hint", bad_cases())
def test_a_bad_rule_option_value_is_one_line_naming_file_and_key(run, project, code, option, toml, shown, hint):
    spec = spec_of(code, option)
    if toml is None:
        pytest.fail(f"{code}.{option}: no bad values for a {type(spec).__name__} option; add them to bad_values()")
    write_config(project, f"[rules.{code}]\n{option} = {toml}\n")
    result = lint(run, "--config", "templatekit.toml", "t.jinja")
    assert result.exit_code == 2
    assert result.output == (
        f"templatekit: error: templatekit.toml: rules.{code}.{option} must be {expected_type(spec)}, got {shown}{hint}\n"
    )


def test_the_key_is_named_as_written_by_rule_name_and_in_pyproject(run, project):
    write_config(project, '[rules.loop-blowup]\nmax-iterations = "abc"\n')
    result = lint(run, "--config", "templatekit.toml", "t.jinja")
    assert result.exit_code == 2
    assert result.output == ("templatekit: error: templatekit.toml: rules.loop-blowup.max-iterations must be "
                             "a whole number of at least 1, got 'abc'\n")
    write_config(project, "[tool.templatekit.rules.TK006]\nextra-inputs = 5\n", "pyproject.toml")
    result = lint(run, "--config", "pyproject.toml", "t.jinja")
    assert result.exit_code == 2
    assert result.output == ("templatekit: error: pyproject.toml: rules.TK006.extra-inputs must be "
                             "a list of variable names (strings), got 5\n")


# (template, option value, a fragment of the rule's finding, whether the value makes it appear
# (True) or go away (False)).
BEHAVIOUR = {
    ("TK006", "kwargs"): ("{{ my_flg }}", '["my_flag"]', "did you mean 'my_flag'?", True),
    ("TK006", "extra-inputs"): ("{{ system_dat }}", '["system_date"]', "did you mean 'system_date'?", True),
    ("TK007", "extra-inputs"): ("{% if x == null %}{% endif %}", '["null"]', "'null' is not defined in Jinja", False),
    ("TK008", "kwargs"): ("{{ my_flag }}", '["my_flag"]', "'my_flag' (a widely used kwarg)", True),
    ("TK008", "extra-inputs"): ("{{ system_date }}", '["system_date"]', "reads 'system_date'", False),
    ("TK907", "max-size"): ("{{ '=' * 80 }}", "50", "(max-size 50)", True),
    ("TK908", "max-iterations"): (
        "{% for i in range(10) %}{% for j in range(10) %}.{% endfor %}{% endfor %}", "100", "(max-iterations 100)", True,
    ),
}


def messages(run, code: str, *config: str) -> list[str]:
    result = lint(run, *config, "--format", "json", "--select", code, "t.jinja")
    assert result.exit_code in (0, 1), result.output
    return [d["message"] for d in json.loads(result.output)["diagnostics"] if d["code"] == code]


def test_every_declared_option_has_a_behaviour_case():
    assert set(BEHAVIOUR) == set(declared_options())


@pytest.mark.parametrize("code, option", sorted(BEHAVIOUR), ids=lambda item: str(item))
def test_a_good_value_changes_what_the_rule_reports(run, project, code, option):
    template, value, fragment, appears = BEHAVIOUR[(code, option)]
    (project / "t.jinja").write_text(template, encoding="utf-8")
    before = messages(run, code)
    write_config(project, f"[rules.{code}]\n{option} = {value}\n")
    after = messages(run, code, "--config", "templatekit.toml")
    assert any(fragment in message for message in after) == appears, after
    assert any(fragment in message for message in before) != appears, before


def test_a_whole_number_may_be_written_in_float_syntax(run, project):
    template, _value, _fragment, _appears = BEHAVIOUR[("TK908", "max-iterations")]
    (project / "t.jinja").write_text(template, encoding="utf-8")
    write_config(project, "[rules.TK908]\nmax-iterations = 1e2\n")
    assert messages(run, "TK908", "--config", "templatekit.toml") == [
        "nested loops with constant bounds run 100 iterations (max-iterations 100)"
    ]


# ---------------------------------------------------------------------------------------------
# a selection that selects nothing


@pytest.mark.parametrize("config, problem", [
    ("select = []\n", "select selects no rule (it is empty); leave it out to select every rule"),
    ('ignore = ["ALL"]\n', "select selects no rule: ignore (ALL) removes every rule it names"),
    ('select = ["TK9"]\nignore = ["TK90", "TK91"]\n',
     "select selects no rule: ignore (TK90, TK91) removes every rule it names"),
])
def test_a_config_selecting_no_rule_is_refused(run, project, config, problem):
    write_config(project, config)
    result = lint(run, "t.jinja")
    assert result.exit_code == 2
    assert result.output == f"templatekit: error: {project / 'templatekit.toml'}: {problem}\n"


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_an_empty_select_on_the_command_line_is_refused(run, project, value):
    result = lint(run, "--select", value, "t.jinja")
    assert result.exit_code == 2
    assert result.output == (
        "templatekit: error: command line: --select selects no rule (it is empty); leave it out to select every rule\n"
    )


def test_a_selection_narrowed_by_ignore_still_runs(run, project):
    (project / "t.jinja").write_text("{{ system_dat }}{% if x == null %}{% endif %}", encoding="utf-8")
    write_config(project, 'select = ["TK00"]\nignore = ["TK008"]\n')
    result = lint(run, "--format", "json", "t.jinja")
    assert result.exit_code == 1
    assert {d["code"] for d in json.loads(result.output)["diagnostics"]} == {"TK007"}


# ---------------------------------------------------------------------------------------------
# what --config accepts


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_config_dev_null_means_every_default(run, project):
    (project / "t.jinja").write_text("{{ enable_thinkng }}", encoding="utf-8")
    write_config(project, 'select = ["TK9"]\n')
    assert lint(run, "t.jinja").exit_code == 0  # the directory's config: security rules only
    result = lint(run, "--config", "/dev/null", "--format", "json", "t.jinja")
    assert result.exit_code == 1
    assert "TK006" in {d["code"] for d in json.loads(result.output)["diagnostics"]}


def test_an_empty_config_path_is_named_as_the_working_directory(run, project):
    result = lint(run, "--config", "", "t.jinja")
    assert result.exit_code == 2
    assert result.output == (
        "templatekit: error: .: is the working directory, not a config file (an empty --config value names it too)\n"
    )


def test_a_missing_config_file_is_named(run, project):
    result = lint(run, "--config", "missing.toml", "t.jinja")
    assert result.exit_code == 2
    assert result.output == "templatekit: error: missing.toml: no such config file\n"


def test_a_huge_config_file_is_refused_without_reading_it_all(run, project):
    (project / "templatekit.toml").write_text("# padding\n" * 120_000, encoding="utf-8")
    result = lint(run, "--config", "templatekit.toml", "t.jinja")
    assert result.exit_code == 2
    assert result.output == "templatekit: error: templatekit.toml: larger than 1 MiB; not a config file\n"


@pytest.mark.parametrize("name, text", [
    ("templatekit.toml", 'select = ["TK008"]\n'),
    ("pyproject.toml", '[tool.templatekit]\nselect = ["TK008"]\n'),
])
def test_a_config_starting_with_a_byte_order_mark_is_read(run, project, name, text):
    (project / "t.jinja").write_text("{{ system_dat }}{% if x == null %}{% endif %}", encoding="utf-8")
    (project / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    for args in (("--config", name), ()):  # named, and found by search
        result = lint(run, *args, "--format", "json", "t.jinja")
        assert result.exit_code == 0, result.output  # TK008 is info: below the default fail-on
        assert {d["code"] for d in json.loads(result.output)["diagnostics"]} == {"TK008"}


def test_a_named_pyproject_without_a_templatekit_table_is_refused(run, project):
    write_config(project, '[project]\nname = "x"\n', "pyproject.toml")
    result = lint(run, "--config", "pyproject.toml", "t.jinja")
    assert result.exit_code == 2
    assert result.output == "templatekit: error: pyproject.toml: has no [tool.templatekit] table\n"
    # Found by search instead, it is simply not a templatekit config.
    assert lint(run, "t.jinja").exit_code == 0
