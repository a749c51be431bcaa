"""Engine renders spend budgets like templatekit's own: a bomb only the engines see (Jinja2 defines
``lipsum``, the engines do not) ends in seconds with a "budget-spent" outcome, and the template's
later renders are skipped, not paid again. Also: a continuation both sides refuse is "both-failed".
"""

from __future__ import annotations

import resource
import sys
import time
from datetime import datetime

import pytest

from templatekit.engines import (
    BUDGET_SPENT,
    OK,
    SKIPPED,
    EngineJob,
    EngineUnavailable,
    compare_engines,
    format_comparisons,
    get_engine,
)
from templatekit.engines.compare import EngineComparison
from templatekit.fixtures import load_fixture

NOW = datetime(2025, 1, 15, 10, 30)
GUARD = "{% for m in messages %}{{ m.content }}{% endfor %}{% if lipsum is not defined %}BOMB{% endif %}"


def _engine(name: str, **options):
    try:
        return get_engine(name, **options)
    except EngineUnavailable as exc:
        pytest.skip(str(exc))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child's memory limit needs Linux")
def test_minijinja_memory_bomb_is_stopped_outside_the_process() -> None:
    engine = _engine("minijinja", memory_megabytes=64)
    bomb = GUARD.replace("BOMB", "{{ ('%200000000s'|format(1))|length }}")
    before = _peak_mb()
    started = time.monotonic()
    results = engine.render_batch([EngineJob(bomb, {"messages": []}, NOW), EngineJob(bomb, {"messages": []}, NOW),
                                   EngineJob("{{ x }}", {"x": "c"}, NOW)])
    assert time.monotonic() - started < 5
    assert [r.status for r in results] == [BUDGET_SPENT, SKIPPED, OK]
    assert "64 MB memory budget" in results[0].message
    assert "an earlier render of this template ran out of the 64 MB memory budget" in results[1].message
    assert results[2].text == "c"
    assert _peak_mb() - before < 100  # the 200 MB string was never built in templatekit's process


def test_minijinja_skips_a_template_once_a_render_spends_the_time_budget() -> None:
    engine = _engine("minijinja", render_seconds=1e-9)
    results = engine.render_batch([EngineJob("{{ x }}", {"x": n}, NOW) for n in range(3)]
                                  + [EngineJob("{{ y }}", {"y": "other"}, NOW)])
    assert [r.status for r in results] == [OK, SKIPPED, SKIPPED, OK]
    assert "over the 0.0s render budget" in results[1].message and results[3].text == "other"


def test_minijinja_benign_renders_are_unchanged_by_the_child() -> None:
    isolated = _engine("minijinja")
    in_process = _engine("minijinja", isolate=False)
    jobs = [EngineJob("{{ raise_exception('no') if x == 2 else x ~ strftime_now('%Y') }}", {"x": n}, NOW)
            for n in range(4)] + [EngineJob("{% if %}", {}, NOW)]
    assert isolated.render_batch(jobs) == in_process.render_batch(jobs)


def test_hf_jinja_heap_bomb_ends_with_its_budget() -> None:
    engine = _engine("hf-jinja", heap_megabytes=64)
    bomb = GUARD.replace("BOMB", "{{ range(30000000)|length }}")
    started = time.monotonic()
    results = engine.render_batch([EngineJob(bomb, {"messages": []}, NOW), EngineJob(bomb, {"messages": []}, NOW),
                                   EngineJob("{{ x }}", {"x": "c"}, NOW)])
    assert time.monotonic() - started < 10
    assert [r.status for r in results] == [BUDGET_SPENT, SKIPPED, OK]
    assert "64 MB heap budget" in results[0].message and results[2].text == "c"


def test_hf_jinja_first_render_that_hangs_gets_only_the_job_timeout() -> None:
    # node's start-up has its own allowance; once node says it is ready, a hung first render is
    # stopped after the job timeout, not after start-up allowance plus job timeout.
    engine = _engine("hf-jinja", job_timeout=1.0, start_timeout=8.0)
    endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    [result] = engine.render_batch([EngineJob(endless, {}, NOW)])
    assert result.status == BUDGET_SPENT and result.message == "render timed out after 1s"
    assert time.monotonic() - started < 5


def test_hf_jinja_skips_a_template_once_a_render_spends_the_time_budget() -> None:
    engine = _engine("hf-jinja", render_seconds=1e-9)
    results = engine.render_batch([EngineJob("{{ x }}", {"x": n}, NOW) for n in range(3)]
                                  + [EngineJob("{{ y }}", {"y": "other"}, NOW)])
    assert [r.status for r in results] == [OK, SKIPPED, SKIPPED, OK]
    assert "render budget" in results[1].message and results[3].text == "other"


def test_lint_reports_an_engine_only_bomb_as_budget_spent(run, tmp_path) -> None:
    _engine("minijinja")
    template = tmp_path / "bomb.jinja"
    template.write_text(GUARD.replace("BOMB", "{{ ('%999999999s'|format(1))|length }}"), encoding="utf-8")
    started = time.monotonic()
    result = run("lint", "--no-cache", "--jobs", "1", "--fail-on", "never", "--engines", "minijinja", str(template))
    assert time.monotonic() - started < 30
    assert "1 budget-spent" in result.output and "memory budget" in result.output
    assert "portable" not in result.output


# -- a continuation both sides refuse (real6 F4) ---------------------------------------------------------------

# The replace collapses the prefill fixture's "1." so the continued message is not in the prompt.
CUT_BOTH_FAIL = ("{% for m in messages %}{{ m.role }}: {{ m.content | replace('1.', '1') }}\n"
                 "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")


@pytest.mark.parametrize("engine", ["minijinja", "hf-jinja"])
def test_a_continuation_both_sides_refuse_is_both_failed(engine) -> None:
    _engine(engine)
    [cell] = compare_engines(CUT_BOTH_FAIL, [load_fixture("prefill")], [engine])
    assert cell.outcome == "both-failed" and not cell.breaks
    assert cell.message.startswith("both refuse the continuation: continue_final_message is set")
    assert "different" not in format_comparisons([cell])


def _cell(outcome: str, reference: str | None) -> EngineComparison:
    return EngineComparison("hf-jinja", "0", "t.jinja", "f", outcome, "m", reference, None)


def test_portable_is_never_said_next_to_a_mismatch() -> None:
    # transformers failed on the second fixture, so the engine's parse error there breaks nothing,
    # but it is not the same behaviour: no "portable" verdict over it.
    report = format_comparisons([_cell("identical", "x"), _cell("parse-error", None)])
    assert "portable" not in report and "no rendered fixture breaks" in report


def test_a_skipped_render_is_not_a_break() -> None:
    cells = [_cell("budget-spent", "x"), _cell("not-run", "x")]
    assert [c.breaks for c in cells] == [True, False]
    assert "1 of 2 fixtures break (1 budget-spent, 1 not-run)" in format_comparisons(cells)


def test_minijinja_running_out_of_fuel_spends_the_budget_once() -> None:
    engine = _engine("minijinja")
    endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ x }}"
    results = engine.render_batch([EngineJob(endless, {"x": n}, NOW) for n in range(3)])
    assert [r.status for r in results] == [BUDGET_SPENT, SKIPPED, SKIPPED]
    assert "ran out of fuel" in results[0].message and "ran out of fuel" in results[1].message
