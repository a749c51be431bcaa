"""Machine output: one JSON document with a schema version, stable for tools to parse."""

from __future__ import annotations

from .. import __version__
from . import clip_message, json_text

SCHEMA_VERSION = 1


def diagnostic_json(diagnostic) -> dict:
    fix = None
    if diagnostic.fix is not None:
        fix = {
            "description": diagnostic.fix.description,
            "safe": diagnostic.fix.safe,
            "edits": [{"start": e.start, "end": e.end, "replacement": e.replacement} for e in diagnostic.fix.edits],
        }
    return {
        "code": diagnostic.code,
        "name": diagnostic.name,
        "severity": diagnostic.severity,
        "message": clip_message(diagnostic.message),
        "path": diagnostic.path,
        "template": diagnostic.template_name or None,
        "location": diagnostic.location,
        "line": diagnostic.line,
        "column": diagnostic.column,
        "end_line": diagnostic.end_line,
        "end_column": diagnostic.end_column,
        "engines": list(diagnostic.engines),
        "fix": fix,
    }


def _file_json(report) -> dict:
    entry = {"path": report.path, "templates": report.templates, "error": clip_message(report.error),
             "fixed": report.fixed, "notes": [clip_message(note) for note in report.notes]}
    if report.engine_renders is not None:  # only when --engines asked for real-engine renders
        entry["engine_renders"] = [comparison.to_dict() for comparison in report.engine_renders]
    return entry


def format_json(reports: list) -> str:
    diagnostics = [d for report in reports for d in report.diagnostics]
    payload = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "templatekit", "version": __version__},
        "files": [_file_json(r) for r in reports],
        "diagnostics": [diagnostic_json(d) for d in diagnostics],
        "summary": {
            "sources": len(reports),
            "templates": sum(r.templates for r in reports),
            "errors": sum(d.severity == "error" for d in diagnostics),
            "warnings": sum(d.severity == "warning" for d in diagnostics),
            "infos": sum(d.severity == "info" for d in diagnostics),
            "unreadable": sum(1 for r in reports if r.error),
        },
    }
    return json_text(payload)
