"""SARIF 2.1.0, for GitHub code scanning and other static-analysis dashboards."""

from __future__ import annotations

from pathlib import Path

from .. import __version__
from . import clip_message, json_text

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVELS = {"error": "error", "warning": "warning", "info": "note"}


def _uri(path: str) -> str:
    candidate = Path(path)
    try:
        return candidate.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return candidate.resolve().as_uri()


def format_sarif(reports: list) -> str:
    from ..lint.registry import all_rules

    # Describe the rules that have results (as ruff does), so the log stays small and stable.
    reported = {d.code for report in reports for d in report.diagnostics}
    rules = [rule for rule in all_rules() if rule.code in reported]
    index = {rule.code: position for position, rule in enumerate(rules)}
    descriptors = []
    for rule in rules:
        doc = rule.doc()
        descriptors.append({
            "id": rule.code,
            "name": rule.name,
            "shortDescription": {"text": doc.summary},
            "fullDescription": {"text": doc.why},
            "help": {
                "text": f"{doc.why}\n\nBad:\n{doc.bad}\n\nGood:\n{doc.good}",
                "markdown": f"{doc.why}\n\n**Bad**\n```jinja\n{doc.bad}\n```\n\n**Good**\n```jinja\n{doc.good}\n```",
            },
            "defaultConfiguration": {"level": _LEVELS[rule.severity]},
            "properties": {"tags": [rule.code[:3] + "xx", *rule.engines]},
        })
    results = []
    for report in reports:
        for d in report.diagnostics:
            message = clip_message(d.message) + (f" (template {d.template_name}, line {d.line})" if d.template_name else "")
            results.append({
                "ruleId": d.code,
                "ruleIndex": index[d.code],
                "level": _LEVELS[d.severity],
                "message": {"text": message},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": _uri(d.path)},
                        "region": {"startLine": max(d.file_line or d.line, 1), "startColumn": max(d.file_column or d.column, 1)},
                    }
                }],
            })
    notifications = [
        {"level": "error", "message": {"text": clip_message(report.error)},
         "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(report.path)}}}]}
        for report in reports if report.error
    ]
    run = {
        # No informationUri: templatekit has no published home yet ("templatekit" on PyPI is
        # another project), and the field is optional.
        "tool": {"driver": {"name": "templatekit", "version": __version__, "rules": descriptors}},
        "results": results,
        "invocations": [{"executionSuccessful": not notifications, "toolExecutionNotifications": notifications}],
    }
    return json_text({"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]})
