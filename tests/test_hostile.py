"""Hostile templates end quickly, with one clear line, no side effects and bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from templatekit.conversation import Conversation
from templatekit.guards import Budget
from templatekit.rendering import render_template

PAYLOAD_FILE = "__templatekit_pwned__"
EXPLOSION = "{% set a = ['x' * 1000] * 1000 %}{% set b = [a] * 1000 %}"

# name -> (template, expected failure kind)
HOSTILE = {
    "nested-range-loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "budget"),
    "string-repetition": ("{{ 'a' * 4000000000 }}", "budget"),
    "self-recursive-macro": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "budget"),
    "exponential-macro": ("{% macro f(n) %}{% if n > 0 %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(60) }}", "budget"),
    "mro-walk": ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "security"),
    "cycler-globals-popen": (f"{{{{ cycler.__init__.__globals__.os.popen('touch {PAYLOAD_FILE}').read() }}}}", "security"),
    "joiner-globals": ("{{ joiner.__init__.__globals__['__builtins__'] }}", "security"),
    "lipsum-globals": ("{{ lipsum.__globals__.os.system('id') }}", "security"),
    "self-reference": ("{{ self.__init__.__globals__ }}", "security"),
    "namespace-underscore": ("{% set ns = namespace() %}{% set ns.__class__ = 1 %}", "security"),
    "list-append": ("{{ messages.append({'role': 'system'}) }}", "security"),
    "big-power": ("{{ 10 ** 10000000 }}", "budget"),
    "center-filter": ("{{ 'a'|center(4000000000) }}", "budget"),
    "center-method": ("{{ 'a'.center(4000000000) }}", "budget"),
    "replace-chain": ("{% set s = 'a' * 1000 %}{{ s|replace('a', s)|replace('a', s)|replace('a', s) }}", "budget"),
    "percent-width": ("{{ '%999999999d' % 1 }}", "budget"),
    "percent-star-width": ("{{ '%*d' % (999999999, 1) }}", "budget"),
    "format-width": ("{{ '{:>999999999}'.format(1) }}", "budget"),
    "format-filter-width": ("{{ '%999999999s'|format('x') }}", "budget"),
    "doubling-with-tilde": ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "budget"),
    "doubling-with-plus": ("{% set ns = namespace(s=[1]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "budget"),
    "shared-reference-print": (EXPLOSION + "{% set c = [b] * 1000 %}{{ c }}", "budget"),
    "shared-reference-tojson": (EXPLOSION + "{{ b|tojson }}", "budget"),
    "shared-reference-string": (EXPLOSION + "{{ b|string|length }}", "budget"),
    "shared-reference-pprint": (EXPLOSION + "{{ b|pprint|length }}", "budget"),
    "shared-reference-concat": (EXPLOSION + "{{ ('' ~ b)|length }}", "budget"),
    "join-separator": ("{{ range(100000)|join('x' * 100000) }}", "budget"),
    "join-method": ("{{ ('x' * 100000).join(range(100000)|map('string')) }}", "budget"),
    "lipsum-size": ("{{ lipsum(100000000) }}", "budget"),
    "indent-width": ("{{ ('a\n' * 100000)|indent(100000) }}", "budget"),
    "batch-fill": ("{{ [1]|batch(1000000000, 0)|list }}", "budget"),
    "slice-count": ("{{ [1]|slice(1000000000)|list|length }}", "budget"),
    "accumulated-memory": ("{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = ns.l + ['x' * 8000000 ~ i] %}{% endfor %}", "budget"),
    "quadratic-sum": ("{{ range(100000)|batch(1)|sum(start=[])|length }}", "budget"),
    "triple-loop-over-string": ("{% set s = 'x' * 3000 %}{% for a in s %}{% for b in s %}{% for c in s %}{% endfor %}{% endfor %}{% endfor %}", "budget"),
    "deep-parentheses": ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "budget"),
    "too-many-nested-loops": ("".join("{%% for x%d in [1] %%}" % i for i in range(30)) + "{% endfor %}" * 30, "budget"),
    "recursive-loop": ("{% for x in [[1]] recursive %}{{ loop([x]) }}{% endfor %}", "budget"),
    "huge-range": ("{{ range(10 ** 12)|length }}", "error"),
    "translate-table": ("{{ ('a' * 1000000).translate({97: 'x' * 1000}) }}", "budget"),
    "strftime-format": ("{{ strftime_now('%c' * 1000000) }}", "budget"),
    "expandtabs": ("{{ ('\t' * 100000).expandtabs(100000) }}", "budget"),
    "wordwrap-wrapstring": ("{{ ('a ' * 1000000)|wordwrap(1, wrapstring='x' * 1000) }}", "budget"),
    "dict-fromkeys-print": ("{{ dict.fromkeys(range(100000), 'x' * 1000000)|string|length }}", "budget"),
    "tojson-separators": ("{{ ([0] * 1000000)|tojson(separators=('x' * 1000, ':')) }}", "budget"),
    "indent-at-every-line-break": ("{{ ('a\\r' * 15000)|indent(100000) }}", "budget"),
    "namespace-grown-after-printing": (
        "{% set ns = namespace(x='a') %}{{ [ns] }}{% set ns.x = 'b' * 1500000 %}{{ ([ns] * 1000)|length }}"
        "{{ ([ns] * 1000)|string|length }}", "budget"),
    "output-flood": ("{% for i in range(100000) %}{% for j in range(100) %}{{ 'x' * 1000 }}{% endfor %}{% endfor %}", "budget"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_template_ends_quickly_with_a_clear_error(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    template, kind = HOSTILE[name]
    started = time.monotonic()
    result = render_template(template, Conversation([{"role": "user", "content": "hi"}]))
    elapsed = time.monotonic() - started
    assert elapsed < 5.0, f"{name} took {elapsed:.1f} s"
    assert result.error is not None, f"{name} rendered {result.text[:80]!r}"
    assert result.error.kind == kind, result.error.describe()
    line = result.error.describe()
    assert "\n" not in line and "Traceback" not in line
    assert not (tmp_path / PAYLOAD_FILE).exists()


def test_budget_errors_explain_which_budget():
    result = render_template(HOSTILE["string-repetition"][0], Conversation([{"role": "user", "content": "x"}]))
    assert result.error.describe() == (
        "<template>:1: budget exceeded: repeated string (*) of 4,000,000,000 characters exceeds "
        "the size budget of 8,388,608 characters"
    )


def test_budgets_are_options():
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    result = render_template(loop, Conversation([{"role": "user", "content": "x"}]), budget=Budget(seconds=0.2))
    assert time.monotonic() - started < 1.5
    assert "longer than 0.2 s" in result.error.message
    small = render_template("{{ 'a' * 100 }}", Conversation([{"role": "user", "content": "x"}]), budget=Budget(max_output=50))
    assert small.error.kind == "budget"
    assert render_template("{{ 'a' * 100 }}", Conversation([{"role": "user", "content": "x"}])).text == "a" * 100


def test_guards_leave_large_benign_renders_alone():
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": ("word " * 2000) + str(i)} for i in range(200)]
    template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content|trim }}<|im_end|>\n{% endfor %}{{ messages|tojson|length }}"
    result = render_template(template, Conversation(messages))
    assert result.ok, result.error
    assert len(result.text) > 2_000_000


_RUN_ALL = """
import json, sys
from templatekit.conversation import Conversation
from templatekit.rendering import render_template
cases = json.load(sys.stdin)
for name, template in cases.items():
    result = render_template(template, Conversation([{"role": "user", "content": "hi"}]))
    assert result.error is not None, name
# Peak resident size of this process's own address space. getrusage's ru_maxrss would also count
# the parent's size at fork time (Linux keeps it across execve), so read VmHWM where it exists.
try:
    with open("/proc/self/status") as status:
        print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")))
except OSError:
    import resource
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_peak_memory_of_all_hostile_renders_stays_under_one_gigabyte(tmp_path):
    cases = {name: template for name, (template, _) in HOSTILE.items()}
    completed = subprocess.run(
        [sys.executable, "-c", _RUN_ALL], input=json.dumps(cases), capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    peak_kib = int(completed.stdout.split()[-1])  # the child's own peak resident size (Linux: KiB)
    assert peak_kib < 1024 * 1024, f"peak RSS {peak_kib // 1024} MiB"
    assert not (tmp_path / PAYLOAD_FILE).exists()


@pytest.mark.parametrize("name", ["cycler-globals-popen", "nested-range-loops", "string-repetition", "self-recursive-macro"])
def test_cli_reports_a_hostile_template_in_one_line(name, tmp_path):
    template = tmp_path / "hostile.jinja"
    template.write_text(HOSTILE[name][0], encoding="utf-8")
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "templatekit", "render", str(template), "--fixture", "basic", "--no-color"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert time.monotonic() - started < 5.0
    assert completed.returncode == 1
    assert "Traceback" not in completed.stdout + completed.stderr
    failure_lines = [line for line in completed.stdout.splitlines() if str(template) in line]
    assert len(failure_lines) == 1 and ("budget exceeded" in failure_lines[0] or "sandbox refused" in failure_lines[0])
    assert not (tmp_path / PAYLOAD_FILE).exists()


@pytest.mark.parametrize("chain", [
    " and ".join(f"m{i}" for i in range(3000)),
    " + ".join("'a'" for _ in range(3000)),
    "messages" + "|first" * 3000,
])
def test_lint_survives_operator_chains_deeper_than_python_recursion(chain, tmp_path):
    # Jinja parses a flat chain in a loop but builds a tree as deep as it is long: every recursive
    # analysis (and Jinja's compiler) overflows. Lint must still report, not stop with an internal
    # error, and keep what the other rules found.
    template = tmp_path / "chain.jinja"
    template.write_text("{{ messages[0].content.strip() }}{% if " + chain + " %}x{% endif %}", encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "templatekit", "lint", str(template), "--no-cache", "--no-color", "--format", "json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert completed.returncode in (0, 1), completed.stderr
    assert "internal error" not in completed.stderr and "Traceback" not in completed.stderr
    findings = json.loads(completed.stdout)["diagnostics"]
    codes = {d["code"] for d in findings}
    assert "TK201" in codes  # the .strip() finding of a rule that does not recurse survives
    assert any(d["message"].startswith("not checked: the template nests expressions") for d in findings)


def test_render_and_diff_spend_a_hostile_templates_budget_once(tmp_path, monkeypatch):
    # Every render of an endless loop spends the whole time budget; a run of several fixtures
    # pays it once and says so for the rest, instead of going silent for a budget per fixture.
    from click.testing import CliRunner

    from templatekit import rendering
    from templatekit.cli import main

    endless = tmp_path / "endless.jinja"
    endless.write_text(HOSTILE["nested-range-loops"][0] + "{{ messages[0].content }}", encoding="utf-8")
    plain = tmp_path / "plain.jinja"
    plain.write_text("{% for m in messages %}{{ m.content }}{% endfor %}", encoding="utf-8")
    renders = []
    real = rendering.render_template
    monkeypatch.setattr(rendering, "render_template", lambda *args, **kwargs: renders.append(1) or real(*args, **kwargs))
    fixtures = ["-f", "basic", "-f", "multi-turn", "-f", "unicode"]

    result = CliRunner().invoke(main, ["render", str(endless), "--timeout", "0.5", "--no-color", *fixtures])
    assert result.exit_code == 1 and len(renders) == 1
    failures = [line for line in result.output.splitlines() if line.startswith(str(endless))]
    assert len(failures) == 3 and "took longer than 0.5 s" in failures[0]
    assert all("not rendered: the render of 'basic' spent its whole budget" in line for line in failures[1:])

    renders.clear()
    compared = CliRunner().invoke(main, ["diff", str(endless), str(plain), *fixtures])
    assert compared.exit_code == 1 and len(renders) == 1 + 3  # the plain side renders every fixture


def test_a_static_rule_that_runs_too_long_is_stopped_and_says_so(monkeypatch):
    # A template can make an analysis quadratic (thousands of elif branches): lint must not hang.
    from templatekit.lint import engine
    from templatekit.lint.engine import run_rules
    from templatekit.lint.registry import find_rule
    from templatekit.lint.target import LintTarget

    def spin(self, target):
        while True:
            pass

    monkeypatch.setattr(engine, "RULE_SECONDS", 0.2)
    slow, other = find_rule("TK207"), find_rule("TK201")
    monkeypatch.setattr(slow, "check", spin)
    started = time.monotonic()
    found = run_rules(LintTarget("{% for m in messages %}{{ m['content'].strip() }}{% endfor %}"), [slow(), other()])
    assert time.monotonic() - started < 5
    stopped = [d for d in found if d.code == "TK207"]
    assert len(stopped) == 1 and stopped[0].severity == "info" and "ran out of its time budget" in stopped[0].message
    assert [d.code for d in found if d.code != "TK207"] == ["TK201"]  # the other rules still run


def test_a_security_rule_that_runs_out_of_time_is_an_error(monkeypatch):
    # Padding that makes the security analysis slow must not switch it off quietly.
    from templatekit.lint import engine
    from templatekit.lint.engine import run_rules
    from templatekit.lint.registry import find_rule
    from templatekit.lint.target import LintTarget

    def spin(self, target):
        while True:
            pass

    monkeypatch.setattr(engine, "RULE_SECONDS", 0.2)
    security = find_rule("TK901")
    monkeypatch.setattr(security, "check", spin)
    [finding] = run_rules(LintTarget("{{ messages }}"), [security()])
    assert finding.code == "TK901" and finding.severity == "error" and "treated as unsafe" in finding.message


def test_rules_after_an_interrupted_one_do_not_read_its_half_built_analysis(monkeypatch):
    from templatekit.lint import engine
    from templatekit.lint.engine import run_rules
    from templatekit.lint.registry import find_rule
    from templatekit.lint.target import LintTarget

    def builds_half_then_spins(self, target):
        target.shared("analysis", lambda _target: "half-built")
        while True:
            pass

    def reads(self, target):
        return [self.diagnostic(1, 1, target.shared("analysis", lambda _target: "complete"))]

    monkeypatch.setattr(engine, "RULE_SECONDS", 0.2)
    interrupted, reader = find_rule("TK201"), find_rule("TK207")
    monkeypatch.setattr(interrupted, "check", builds_half_then_spins)
    monkeypatch.setattr(reader, "check", reads)
    found = run_rules(LintTarget("{{ messages }}"), [interrupted(), reader()])
    assert [d.message for d in found if d.code == "TK207"] == ["complete"]
