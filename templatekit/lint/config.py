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

A rule declares its options next to its code as ``options = RuleOptions({...})``, one spec per
option (``WholeNumber``, ``NameList``) giving the default and the values it accepts; the config
checks every value against that spec, so a rule never sees a value it cannot use.
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
from ..errors import InputError, clipped
from .model import SEVERITIES
from .registry import ENGINES, Rule, find_rule, is_known_selector, matches

FAIL_ON = ("error", "warning", "info", "never")
KEYS = ("select", "ignore", "fail-on", "engines", "per-file-ignores", "severity", "capabilities", "rules", "cache", "static-only", "jobs")


class ConfigError(InputError):
    """A configuration file or option that cannot be used (exit 2)."""


# ---------------------------------------------------------------------------------------------
# rule options: each rule declares its options' types and ranges; the config checks values here


class OptionValueError(ValueError):
    """A value an option spec refuses; the text (possibly empty) is a hint appended to the message."""


@dataclasses.dataclass(frozen=True)
class WholeNumber:
    """A count or limit: a whole number of at least ``minimum``; booleans are not numbers."""

    default: int
    minimum: int = 1

    @property
    def expects(self) -> str:
        return f"a whole number of at least {self.minimum:,}"

    def parse(self, value: Any) -> int:
        # TOML reads exponent notation (1e6) as a float; one with no fraction is that count.
        # inf and nan are not integral, so they are refused with the rest.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < self.minimum:
            raise OptionValueError("")
        return value


@dataclasses.dataclass(frozen=True)
class NameList:
    """Template variable names, as a list of strings (a name that is not an identifier could
    never be read by a template, so listing it would silently do nothing)."""

    default: list[str]

    expects = "a list of variable names (strings)"

    def parse(self, value: Any) -> list[str]:
        if isinstance(value, str):
            raise OptionValueError(f"; write a list, even for one name: [{json.dumps(value)}]")
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise OptionValueError("")
        for item in value:
            if not item.isidentifier():
                raise OptionValueError(f" ({clipped(item, 40)} is not a variable name)")
        return list(value)


OptionSpec = WholeNumber | NameList


class RuleOptions(dict):
    """A rule's ``options``: option name -> default, which is what ``Rule`` merges settings
    from and ``templatekit rule`` prints, and ``specs``, what the config checks values against."""

    def __init__(self, specs: Mapping[str, OptionSpec]) -> None:
        super().__init__({name: spec.default for name, spec in specs.items()})
        self.specs: dict[str, OptionSpec] = dict(specs)


def option_spec(rule: type[Rule], option: str) -> OptionSpec:
    """The spec of one of ``rule``'s options (every rule declares them with ``RuleOptions``;
    tests/test_config_options.py holds each rule to it)."""
    return rule.options.specs[option]


def _shown(value: Any) -> str:
    """A config value as the user wrote it, near enough: TOML's booleans, not Python's."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return clipped(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "…"


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


# A config is a few lines; reading stops past this so `--config /dev/zero` cannot fill memory.
MAX_CONFIG_BYTES = 1 << 20


def _load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(path, f"larger than {MAX_CONFIG_BYTES >> 20} MiB; not a config file")
    try:
        # The TOML spec allows a UTF-8 byte order mark (toml-lang/toml#437) though tomllib
        # refuses it; editors on Windows add one, so one leading mark is dropped.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(path, "not UTF-8 text") from None
    try:
        return tomllib.loads(text)
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
    explicit = path is not None
    if path is None:
        path = find_config(start or Path.cwd())
        if path is None:
            return LintConfig()
    elif path == Path("."):
        # Path("") is Path("."), so an empty --config value arrives here too; name both.
        raise ConfigError(path, "is the working directory, not a config file (an empty --config value names it too)")
    elif path.is_dir():
        raise ConfigError(path, "is a directory, not a config file")
    elif not path.exists():
        raise ConfigError(path, "no such config file")
    # Anything else that exists is read: /dev/null is an empty config (every default, whatever
    # config the directories hold) and a pipe (`--config <(...)`) a config made on the spot.
    data = _load_toml(path)
    if path.name == "pyproject.toml":
        tool = data.get("tool", {})
        if explicit and not (isinstance(tool, dict) and "templatekit" in tool):
            # Found by search, such a pyproject is skipped; named, it was meant to configure.
            raise ConfigError(path, "has no [tool.templatekit] table")
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


# The keys whose selectors choose the rules that run; an empty one would run none and pass
# every template, which is never meant (a CI variable that expanded to nothing, say).
_SELECTION_KEYS = ("select", "--select")


def _check_selectors(selectors: tuple[str, ...], key: str, where: Path | str) -> None:
    from .registry import all_rules

    if not selectors and key in _SELECTION_KEYS:
        raise ConfigError(where, f"{key} selects no rule (it is empty); leave it out to select every rule")
    for selector in selectors:
        if not is_known_selector(selector):
            names = [rule.code for rule in all_rules()] + [rule.name for rule in all_rules()]
            raise ConfigError(where, f"'{key}': unknown rule '{selector}'{_suggest(selector, names)}")


def _check_something_selected(config: LintConfig, where: Path | str) -> None:
    from .registry import iter_selected

    if next(iter_selected(config.select, config.ignore), None) is None:
        raise ConfigError(where, f"select selects no rule: ignore ({', '.join(config.ignore)}) removes every rule it names")


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
    if "select" in data or "ignore" in data:
        _check_something_selected(config, where)
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
        parsed: dict[str, Any] = {}
        for option, value in options.items():
            if option not in rule.options:
                known = ", ".join(rule.options) or "none"
                raise ConfigError(where, f"'rules.{selector}': {rule.code} has no option '{option}'{_suggest(option, rule.options)} (options: {known})")
            spec = option_spec(rule, option)
            try:
                parsed[option] = spec.parse(value)
            except OptionValueError as refusal:
                raise ConfigError(where, f"rules.{selector}.{option} must be {spec.expects}, got {_shown(value)}{refusal}") from None
        config.rule_options[rule.code] = parsed


def parse_jobs(value: Any, where: Path | str = "--jobs") -> int:
    """A process count: a whole number, 0 meaning one per CPU."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(where, f"'jobs' must be a whole number >= 0 (0: one per CPU), not {value!r}")
    return value


def parse_fail_on(value: Any, where: Path | str = "--fail-on") -> str:
    if value not in FAIL_ON:
        raise ConfigError(where, f"fail-on must be one of {', '.join(FAIL_ON)}, got '{value}'{_suggest(value, FAIL_ON)}")
    return value
