"""Lint configuration: ``[tool.templatekit]`` in pyproject.toml or a ``templatekit.toml``.

Every key and every rule selector is validated; a mistake is a ``ConfigError`` (exit 2) naming
the file, the key and the closest valid spelling.

    [tool.templatekit]
    select = ["ALL"]                      # codes, prefixes (TK2, TK20) or rule names
    ignore = ["TK105"]
    fail-on = "warning"                   # error | warning | info | never
    engines = ["minijinja", "hf-jinja"]   # portability rules report only these engines
    per-file-ignores = { "legacy/*.jinja" = ["TK2"] }
    severity = { TK301 = "error" }
    capabilities = { tools = false }      # what the template declares it does not support
    cache = true
    static-only = false                   # true: skip behavioural rules (TK6xx), which render
    jobs = 0                              # processes for many files; 0 = one per CPU, 1 = none

    [tool.templatekit.rules.TK006]        # options of one rule (`templatekit rule CODE` lists them)
    extra-inputs = ["system_date"]
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..capabilities import CAPABILITY_NAMES as CAPABILITIES
from ..errors import InputError
from .model import SEVERITIES
from .registry import ENGINES, Rule, find_rule, is_known_selector, matches

FAIL_ON = ("error", "warning", "info", "never")
KEYS = ("select", "ignore", "fail-on", "engines", "per-file-ignores", "severity", "capabilities", "rules", "cache", "static-only", "jobs")


class ConfigError(InputError):
    """A configuration file or option that cannot be used (exit 2)."""


@dataclasses.dataclass
class LintConfig:
    select: tuple[str, ...] = ("ALL",)
    ignore: tuple[str, ...] = ()
    fail_on: str = "warning"
    engines: tuple[str, ...] = tuple(ENGINES)
    per_file_ignores: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    severity: dict[str, str] = dataclasses.field(default_factory=dict)
    capabilities: dict[str, bool] = dataclasses.field(default_factory=dict)
    rule_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    cache: bool = True
    # Skip behavioural rules (they render the template dozens of times; static rules only parse).
    static_only: bool = False
    # Worker processes when linting several files: 0 means one per CPU, 1 lints in this process.
    jobs: int = 0
    path: Path | None = None  # the file it came from
    root: Path = dataclasses.field(default_factory=Path.cwd)

    def is_selected(self, rule: type[Rule], file: Path | None = None) -> bool:
        if not any(matches(rule, s) for s in self.select) or any(matches(rule, s) for s in self.ignore):
            return False
        if file is not None:
            for pattern, selectors in self.per_file_ignores.items():
                if _path_matches(file, pattern, self.root) and any(matches(rule, s) for s in selectors):
                    return False
        if rule.engines and not set(rule.engines) & set(self.engines):
            return False
        if self.static_only and getattr(rule, "behavioural", False):
            return False
        return True

    def severity_of(self, rule_code: str, default: str) -> str:
        rule = find_rule(rule_code)
        for selector, level in self.severity.items():
            if rule is not None and matches(rule, selector):
                return level
        return default

    def options_for(self, rule: type[Rule]) -> dict[str, Any]:
        options: dict[str, Any] = {}
        for selector, values in self.rule_options.items():
            if matches(rule, selector):
                options.update(values)
        return options

    def fingerprint(self) -> str:
        """A hash of everything that changes lint results (for the result cache)."""
        data = dataclasses.asdict(self)
        data.pop("path", None)
        data.pop("root", None)
        data.pop("cache", None)
        data.pop("jobs", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _path_matches(file: Path, pattern: str, root: Path) -> bool:
    try:
        relative = file.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        relative = file.as_posix()
    return fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(file.name, pattern)


def _load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(path, "not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"invalid TOML: {exc}") from None


def find_config(start: Path) -> Path | None:
    """The nearest templatekit.toml, or pyproject.toml with [tool.templatekit], from ``start`` up."""
    directory = start.resolve()
    if directory.is_file():
        directory = directory.parent
    for folder in (directory, *directory.parents):
        candidate = folder / "templatekit.toml"
        if candidate.is_file():
            return candidate
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            tool = _load_toml(pyproject).get("tool")
            if isinstance(tool, dict) and "templatekit" in tool:
                return pyproject
    return None


def load_config(path: Path | None = None, *, start: Path | None = None) -> LintConfig:
    """The config in ``path``, or the one found from ``start`` (default: the working directory)."""
    if path is None:
        path = find_config(start or Path.cwd())
        if path is None:
            return LintConfig()
    elif path.is_dir():
        raise ConfigError(path, "is a directory, not a config file")
    elif not path.is_file():
        raise ConfigError(path, "no such config file")
    data = _load_toml(path)
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        data = tool.get("templatekit", {}) if isinstance(tool, dict) else {}
        if not isinstance(data, dict):
            raise ConfigError(path, "[tool.templatekit] must be a table")
    return config_from_mapping(data, path)


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(choice) for choice in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _string_list(value: Any, key: str, where: Path | str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(where, f"'{key}' must be a list of strings")
    return tuple(value)


def _check_selectors(selectors: tuple[str, ...], key: str, where: Path | str) -> None:
    from .registry import all_rules

    for selector in selectors:
        if not is_known_selector(selector):
            names = [rule.code for rule in all_rules()] + [rule.name for rule in all_rules()]
            raise ConfigError(where, f"'{key}': unknown rule '{selector}'{_suggest(selector, names)}")


def config_from_mapping(data: Mapping[str, Any], path: Path | None = None) -> LintConfig:
    """Validate a parsed config table and build a ``LintConfig``."""
    where: Path | str = path or "configuration"
    if not isinstance(data, Mapping):
        raise ConfigError(where, "[tool.templatekit] must be a table")
    for key in data:
        if key not in KEYS:
            raise ConfigError(where, f"unknown option '{key}'{_suggest(key, KEYS)}")
    config = LintConfig(path=path, root=path.parent if path else Path.cwd())
    if "select" in data:
        config.select = _string_list(data["select"], "select", where)
        _check_selectors(config.select, "select", where)
    if "ignore" in data:
        config.ignore = _string_list(data["ignore"], "ignore", where)
        _check_selectors(config.ignore, "ignore", where)
    if "fail-on" in data:
        config.fail_on = parse_fail_on(data["fail-on"], where)
    if "engines" in data:
        config.engines = _string_list(data["engines"], "engines", where)
        for engine in config.engines:
            if engine not in ENGINES:
                raise ConfigError(where, f"'engines': unknown engine '{engine}'{_suggest(engine, ENGINES)}; known: {', '.join(ENGINES)}")
    if "per-file-ignores" in data:
        table = data["per-file-ignores"]
        if not isinstance(table, Mapping):
            raise ConfigError(where, "'per-file-ignores' must be a table of glob = [rules]")
        for pattern, selectors in table.items():
            config.per_file_ignores[pattern] = _string_list(selectors, f"per-file-ignores.{pattern}", where)
            _check_selectors(config.per_file_ignores[pattern], f"per-file-ignores.{pattern}", where)
    if "severity" in data:
        table = data["severity"]
        if not isinstance(table, Mapping):
            raise ConfigError(where, "'severity' must be a table of rule = level")
        for selector, level in table.items():
            _check_selectors((selector,), "severity", where)
            if level not in SEVERITIES:
                raise ConfigError(where, f"'severity.{selector}': unknown level '{level}'{_suggest(level, SEVERITIES)}; "
                                        f"levels: {', '.join(SEVERITIES)}")
            config.severity[selector] = level
    if "capabilities" in data:
        table = data["capabilities"]
        if not isinstance(table, Mapping):
            raise ConfigError(where, "'capabilities' must be a table of capability = true/false")
        for name, value in table.items():
            if name not in CAPABILITIES:
                raise ConfigError(where, f"'capabilities': unknown capability '{name}'{_suggest(name, CAPABILITIES)}")
            if not isinstance(value, bool):
                raise ConfigError(where, f"'capabilities.{name}' must be true or false")
            config.capabilities[name] = value
    if "rules" in data:
        _load_rule_options(data["rules"], config, where)
    if "cache" in data:
        if not isinstance(data["cache"], bool):
            raise ConfigError(where, "'cache' must be true or false")
        config.cache = data["cache"]
    if "static-only" in data:
        if not isinstance(data["static-only"], bool):
            raise ConfigError(where, "'static-only' must be true or false")
        config.static_only = data["static-only"]
    if "jobs" in data:
        config.jobs = parse_jobs(data["jobs"], where)
    return config


def _load_rule_options(table: Any, config: LintConfig, where: Path | str) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(where, "'rules' must be a table of [rules.CODE] tables")
    for selector, options in table.items():
        rule = find_rule(selector)
        if rule is None:
            from .registry import all_rules

            raise ConfigError(where, f"'rules': unknown rule '{selector}'{_suggest(selector, [r.code for r in all_rules()])}")
        if not isinstance(options, Mapping):
            raise ConfigError(where, f"'rules.{selector}' must be a table of options")
        for option in options:
            if option not in rule.options:
                known = ", ".join(rule.options) or "none"
                raise ConfigError(where, f"'rules.{selector}': {rule.code} has no option '{option}'{_suggest(option, rule.options)} (options: {known})")
        config.rule_options[rule.code] = dict(options)


def parse_jobs(value: Any, where: Path | str = "--jobs") -> int:
    """A process count: a whole number, 0 meaning one per CPU."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(where, f"'jobs' must be a whole number >= 0 (0: one per CPU), not {value!r}")
    return value


def parse_fail_on(value: Any, where: Path | str = "--fail-on") -> str:
    if value not in FAIL_ON:
        raise ConfigError(where, f"fail-on must be one of {', '.join(FAIL_ON)}, got '{value}'{_suggest(value, FAIL_ON)}")
    return value
