"""Rules, their documentation, and the registry that finds them by code or name.

A rule is a small class registered with ``@register``. Its docstring is its documentation and
is parsed here; ``templatekit rule CODE``, the generated rule table and the doc tests all read
the same parsed text. The format::

    Summary: what is wrong, one sentence (also the default message); it may wrap over
    several lines, up to the first blank line.

    Why: why it matters, for whom (may span lines and paragraphs).

    Bad:
        {{ message.content.strip() }}

    Good:
        {{ message.content|trim }}

    Fix: what --fix does (optional).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from jinja2 import nodes
from jinja2.visitor import NodeVisitor

from .model import Diagnostic, Fix, Severity
from .target import LintTarget

CODE_PATTERN = re.compile(r"^TK\d{3}$")
NAME_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

# The non-Python engines portability rules speak of (see shared research: engines.md).
ENGINES = {
    "minijinja": "minijinja (Rust; Python and other bindings)",
    "minijinja-js": "minijinja-js (WASM)",
    "hf-jinja": "@huggingface/jinja (transformers.js, the Hub's playground)",
    "minja": "minja / llama.cpp",
}

FAMILIES = {
    "TK0": "syntax and loading",
    "TK1": "whitespace",
    "TK2": "portability",
    "TK3": "structure and roles",
    "TK4": "tools, documents and reasoning",
    "TK5": "special tokens",
    "TK6": "behaviour",
    "TK9": "security",
}


_SECTION = re.compile(r"^(Why|Bad|Good|Fix):\s*(.*)$")


@dataclasses.dataclass(frozen=True)
class RuleDoc:
    summary: str
    why: str
    bad: str
    good: str
    fix: str = ""


def parse_rule_doc(docstring: str | None, owner: str = "rule") -> RuleDoc:
    """Split a rule docstring into its sections; ValueError names what is missing."""
    text = inspect.cleandoc(docstring or "")
    if not text:
        raise ValueError(f"{owner} has no docstring")
    lines = text.split("\n")
    # The summary is the whole first paragraph: a sentence wrapped to the docstring's width must
    # not lose its end in `templatekit rules`, the README table or SARIF.
    summary_lines = []
    for line in lines:
        if not line.strip() or _SECTION.match(line):
            break
        summary_lines.append(line)
    # Lines are joined with one space; spaces inside a line stay (``'  ' * depth`` is code).
    summary = " ".join(line.strip() for line in summary_lines)
    sections: dict[str, list[str]] = {}
    current = None
    for line in lines[len(summary_lines):]:
        heading = _SECTION.match(line)
        if heading:
            current = heading.group(1).lower()
            sections[current] = [heading.group(2)] if heading.group(2) else []
        elif current is not None:
            sections[current].append(line)
    missing = [name for name in ("why", "bad", "good") if name not in sections]
    if missing:
        raise ValueError(f"{owner} docstring lacks {', '.join(s.title() + ':' for s in missing)}")

    def prose(name: str) -> str:
        return " ".join(" ".join(sections.get(name, [])).split())

    def code(name: str) -> str:
        return inspect.cleandoc("\n".join(sections[name])).strip("\n")

    return RuleDoc(summary=summary, why=prose("why"), bad=code("bad"), good=code("good"), fix=prose("fix"))


class Rule:
    """Base of every rule: identity, defaults and a ``check`` that yields diagnostics.

    Rules are pure: they read the ``LintTarget`` and return diagnostics; no I/O, no printing.
    ``options`` declares each option with its default; users override them in config.
    """

    code: ClassVar[str] = ""
    name: ClassVar[str] = ""
    severity: ClassVar[Severity] = "warning"
    engines: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[dict[str, Any]] = {}
    # Whether the rule can run on a template that does not parse (token and text rules can).
    needs_tree: ClassVar[bool] = True

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.settings = {**self.options, **(options or {})}

    @classmethod
    def doc(cls) -> RuleDoc:
        return parse_rule_doc(cls.__doc__, cls.code or cls.__name__)

    @classmethod
    def example_target(cls, example: str) -> LintTarget:
        """The target the docstring's ``"bad"`` or ``"good"`` example is checked on (rules that
        need more than the template text, a tokenizer say, supply it here)."""
        return LintTarget(getattr(cls.doc(), example))

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        """Yield this rule's diagnostics for ``target`` (subclasses implement it)."""
        return ()

    def diagnostic(
        self,
        line: int,
        column: int = 1,
        message: str | None = None,
        *,
        end_line: int | None = None,
        end_column: int | None = None,
        fix: Fix | None = None,
    ) -> Diagnostic:
        return Diagnostic(
            code=self.code,
            name=self.name,
            severity=self.severity,
            message=message or self.doc().summary,
            line=line,
            column=column,
            end_line=end_line,
            end_column=end_column,
            fix=fix,
            engines=self.engines,
        )


class AstRule(Rule, NodeVisitor):
    """A rule that walks the Jinja AST. ``visit_<NodeType>`` methods call ``report``; call
    ``self.generic_visit(node)`` to keep walking below a node you handled."""

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        if target.tree is None:
            return []
        self.target = target
        self.found: list[Diagnostic] = []
        self.visit(target.tree)
        return self.found

    # Handlers are looked up once per node type, and walks skip subtrees without a node this rule
    # handles (see walk.py): the same handlers run on the same nodes, at a fraction of the cost.
    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        handlers = self.__dict__.get("_handlers")
        if handlers is None:
            handlers = self._handlers = {}
        kind = type(node)
        try:
            handler = handlers[kind]
        except KeyError:
            handler = handlers[kind] = getattr(self, f"visit_{kind.__name__}", None)
        if handler is not None:
            return handler(node, *args, **kwargs)
        return self.generic_visit(node, *args, **kwargs)

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        from .walk import tree_index

        target = getattr(self, "target", None)
        walk = self.__dict__.get("_walk")
        if walk is None or walk[0] is not target:
            index = tree_index(target)
            walk = self._walk = (target, index, index.handled_mask(self) if index is not None else -1)
        index, handled = walk[1], walk[2]
        children = index.children.get(id(node)) if index is not None else None
        if children is None:  # a node from outside the target's tree
            for child in node.iter_child_nodes():
                self.visit(child, *args, **kwargs)
            return
        masks = index.masks
        for child in children:
            if masks[id(child)] & handled:
                self.visit(child, *args, **kwargs)

    def report(
        self,
        node: nodes.Node,
        message: str | None = None,
        *,
        needle: str | None = None,
        line: int | None = None,
        column: int | None = None,
        fix: Fix | None = None,
    ) -> None:
        """Record a finding at ``node``'s line, at the column of ``needle`` on that line."""
        node_line, node_column = self.target.node_position(node, needle)
        self.found.append(self.diagnostic(line or node_line, column or node_column, message, fix=fix))


_REGISTRY: dict[str, type[Rule]] = {}


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: add a rule to the registry (checks its code, name and docstring)."""
    if not CODE_PATTERN.match(cls.code):
        raise ValueError(f"{cls.__name__}: rule code {cls.code!r} is not TK + three digits")
    if not NAME_PATTERN.match(cls.name):
        raise ValueError(f"{cls.code}: rule name {cls.name!r} is not kebab-case")
    if cls.code[:3] not in FAMILIES:
        raise ValueError(f"{cls.code}: no rule family {cls.code[:3]}xx")
    for other in _REGISTRY.values():
        if other.code == cls.code or other.name == cls.name:
            raise ValueError(f"{cls.code} {cls.name}: code or name already used by {other.code} {other.name}")
    unknown = set(cls.engines) - set(ENGINES)
    if unknown:
        raise ValueError(f"{cls.code}: unknown engines {sorted(unknown)}")
    cls.doc()  # fails loudly at import when the documentation is incomplete
    _REGISTRY[cls.code] = cls
    return cls


def all_rules() -> list[type[Rule]]:
    """Every registered rule, by code."""
    from . import rules, suppressions  # noqa: F401 - importing them registers their rules

    return [_REGISTRY[code] for code in sorted(_REGISTRY)]


def find_rule(code_or_name: str) -> type[Rule] | None:
    all_rules()
    key = code_or_name.strip()
    if key.upper() in _REGISTRY:
        return _REGISTRY[key.upper()]
    for rule in _REGISTRY.values():
        if rule.name == key.lower():
            return rule
    return None


def matches(rule: type[Rule], selector: str) -> bool:
    """A selector is ALL, a code, a code prefix (TK2, TK20) or a rule name."""
    selector = selector.strip()
    if selector.upper() == "ALL":
        return True
    if selector.upper().startswith("TK") and rule.code.startswith(selector.upper()):
        return True
    return rule.name == selector.lower()


def is_known_selector(selector: str) -> bool:
    return any(matches(rule, selector) for rule in all_rules())


def iter_selected(select: Iterable[str], ignore: Iterable[str]) -> Iterator[type[Rule]]:
    select, ignore = list(select), list(ignore)
    for rule in all_rules():
        if any(matches(rule, s) for s in select) and not any(matches(rule, s) for s in ignore):
            yield rule
