"""TK3xx: structure and roles — how a template walks the conversation.

Most of these rules ask a question about *data* rather than syntax: "is this expression a
message?", "is this the content of a message?", "is this test guarding that index?". Templates
rarely use ``messages`` directly; they write ``{% set loop_messages = messages[1:] %}``, loop
``{% for message in loop_messages %}``, pass ``message.content`` to a macro parameter, or keep a
value on a ``namespace``. ``TemplateFacts`` below is a small, flow-insensitive alias analysis in
the spirit of vLLM's content-format detector (transformers-spec.md §7): it follows assignments,
loop targets, macro parameters, namespace attributes and the filters that keep a list a list,
and labels every expression with the kinds of value it may hold. The TK4xx rules in
``tools.py`` use the same analysis.

The analysis over-approximates (a name gets every kind any of its assignments gives it), which
is why the rules built on it only fire when the *absence* of a guard is also established: a
missing ``else``, no length test anywhere above an index, no ``is string`` test anywhere in the
template. Precision matters more than recall here; a linter that cries wolf gets switched off.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

from jinja2 import nodes

from ..model import Fix
from ..registry import AstRule, register
from ..target import LintTarget

# ---------------------------------------------------------------------------------------------
# Kinds of value the analysis tracks

MESSAGES = "messages"  # the conversation, or a slice/filter of it
MESSAGE = "message"  # one message
ROLE = "role"  # a message's role string
CONTENT = "content"  # a message's content (a string, a list of parts, or none)
TOOL_CALLS = "tool_calls"  # a message's tool_calls list
TOOL_CALL = "tool_call"  # one entry of tool_calls
FUNCTION = "function"  # tool_call.function
ARGUMENTS = "arguments"  # tool_call.function.arguments (a mapping or a JSON string)
TOOLS = "tools"  # the tools argument (None when absent)
TOOL = "tool"  # one tool definition
DOCUMENTS = "documents"  # the documents argument (None when absent)
DOCUMENT = "document"  # one document
DEFAULT_TEXT = "default_text"  # a literal that reads like prose (a built-in system prompt)

# What iterating, indexing with a number, or |first / |last on a list kind yields.
ELEMENT = {MESSAGES: MESSAGE, TOOL_CALLS: TOOL_CALL, TOOLS: TOOL, DOCUMENTS: DOCUMENT}

# Attribute (or string key) lookups that turn one kind into another. A template that flattens
# calls with ``{% set tool_call = tool_call.function %}`` reads ``tool_call.arguments``, so the
# arguments are reachable from a tool call directly as well as through ``function``.
FIELDS = {
    (MESSAGE, "content"): CONTENT,
    (MESSAGE, "role"): ROLE,
    (MESSAGE, "tool_calls"): TOOL_CALLS,
    (TOOL_CALL, "function"): FUNCTION,
    (TOOL_CALL, "arguments"): ARGUMENTS,
    (FUNCTION, "arguments"): ARGUMENTS,
}

# The names transformers passes that the analysis starts from (transformers-spec.md §2).
ROOTS = {"messages": MESSAGES, "tools": TOOLS, "documents": DOCUMENTS}

# Filters that return the same list (possibly shorter or reordered) and ones that pick an element.
SAME_LIST_FILTERS = {"list", "reverse", "selectattr", "rejectattr", "sort", "unique"}
ELEMENT_FILTERS = {"first", "last"}
# A role stays a role through case or whitespace normalisation (``message.role|lower``).
ROLE_FILTERS = {"lower", "upper", "trim", "string", "title", "capitalize"}

# A literal "reads like prose" when, with special-token-looking pieces removed, it still has
# this many words: "You are a helpful assistant." qualifies, "<|im_start|>system\n" does not.
_TOKENISH = re.compile(r"<[^<>\s]{1,40}>|\[/?[A-Z_]{2,30}\]|<<\s*/?SYS\s*>>")
# A word is a whitespace-separated run of letters (any script), optionally ending in punctuation;
# ``function_response=functions`` or ``{"name":`` are markup, not words.
_WORD = re.compile(r"^[^\W\d_][^\W\d_'’-]*(?:['’-][^\W\d_]+)*[.,;:!?)]?$")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
PROSE_WORDS = 4
PROSE_CJK = 8


def prose(text: str) -> bool:
    """Whether a literal is natural-language text rather than markup and role headers."""
    text = _TOKENISH.sub(" ", text)
    if len(_CJK.findall(text)) >= PROSE_CJK:
        return True  # Chinese, Japanese and Korean sentences have no spaces to count words by
    return sum(1 for piece in text.split() if _WORD.match(piece)) >= PROSE_WORDS


def literal_strings(expr: nodes.Node) -> Iterator[str]:
    """Every string constant and template text inside ``expr`` (for prose detection)."""
    for node in [expr, *expr.find_all((nodes.Const, nodes.TemplateData))]:
        if isinstance(node, nodes.TemplateData):
            yield node.data
        elif isinstance(node, nodes.Const) and isinstance(node.value, str):
            yield node.value


def is_raise(node: nodes.Node) -> bool:
    """A call of transformers' ``raise_exception`` global."""
    return isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "raise_exception"


def is_loop_attr(node: nodes.Node, *attrs: str) -> bool:
    """``loop.<attr>`` for one of ``attrs``."""
    return (
        isinstance(node, nodes.Getattr)
        and isinstance(node.node, nodes.Name)
        and node.node.name == "loop"
        and node.attr in attrs
    )


def key_of(node: nodes.Node) -> str | None:
    """The field name a lookup reads: ``x.k``, ``x['k']`` and ``x.get('k')`` all give ``k``."""
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
        return node.arg.value
    if (
        isinstance(node, nodes.Call)
        and isinstance(node.node, nodes.Getattr)
        and node.node.attr == "get"
        and node.args
        and isinstance(node.args[0], nodes.Const)
        and isinstance(node.args[0].value, str)
    ):
        return node.args[0].value
    return None


def lookup_base(node: nodes.Node) -> nodes.Node | None:
    """The object a ``key_of`` lookup reads from."""
    if isinstance(node, (nodes.Getattr, nodes.Getitem)):
        return node.node
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        return node.node.node
    return None


def constant_index(node: nodes.Node) -> int | None:
    """The integer of ``x[0]`` / ``x[-1]`` (Jinja parses ``-1`` as ``Neg(Const(1))``)."""
    if not isinstance(node, nodes.Getitem):
        return None
    arg = node.arg
    if isinstance(arg, nodes.Const) and type(arg.value) is int:
        return arg.value
    if isinstance(arg, nodes.Neg) and isinstance(arg.node, nodes.Const) and type(arg.node.value) is int:
        return -arg.node.value
    return None


# ---------------------------------------------------------------------------------------------
# Expressions back to source text (Jinja nodes keep no source spans; messages quote conditions)

_COMPARE_OPS = {
    "eq": "==", "ne": "!=", "gt": ">", "gteq": ">=", "lt": "<", "lteq": "<=", "in": "in", "notin": "not in",
}  # fmt: skip
_NEGATED_OPS = {
    "eq": "ne", "ne": "eq", "gt": "lteq", "gteq": "lt", "lt": "gteq", "lteq": "gt", "in": "notin", "notin": "in",
}  # fmt: skip
_BINARY_OPS = {
    nodes.Add: "+",
    nodes.Sub: "-",
    nodes.Mul: "*",
    nodes.Div: "/",
    nodes.FloorDiv: "//",
    nodes.Mod: "%",
    nodes.Pow: "**",
}
_COMPOUND = (nodes.And, nodes.Or, nodes.Not, nodes.Compare, nodes.BinExpr, nodes.Concat, nodes.CondExpr)


def _const(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _call_args(node: nodes.Node) -> str:
    parts = [source(arg) for arg in node.args]
    parts += [f"{kw.key}={source(kw.value)}" for kw in node.kwargs]
    return ", ".join(parts)


def _atom(node: nodes.Node) -> str:
    text = source(node)
    return f"({text})" if isinstance(node, _COMPOUND) else text


def _operand(node: nodes.Node) -> str:
    # Arithmetic and ``~`` bind tighter than comparisons, so ``loop.index0 % 2 == 0`` needs no
    # parentheses; boolean operators and nested comparisons do.
    if isinstance(node, (nodes.BinExpr, nodes.Concat)):
        return source(node)
    return _atom(node)


def _left_operand(node: nodes.Node, parent: nodes.BinExpr) -> str:
    # ``'a' + b + 'c'`` parses as ``('a' + b) + 'c'``; left-nested same operators need no
    # parentheses (raise messages are built that way and would otherwise read ((('Only ' + ...
    if type(node) is type(parent):
        return source(node)
    return _atom(node)


def _bool_operand(node: nodes.Node, parent: type) -> str:
    # ``a and b and c`` reads better without parentheses; mixed and/or keeps them.
    if isinstance(node, (nodes.And, nodes.Or)) and not isinstance(node, parent):
        return f"({source(node)})"
    if isinstance(node, nodes.CondExpr):
        return f"({source(node)})"
    return source(node)


def source(node: nodes.Node | None) -> str:
    """A Jinja expression written back as compact source (quotes and spacing normalised)."""
    if node is None:
        return ""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Const):
        return _const(node.value)
    if isinstance(node, nodes.TemplateData):
        return repr(node.data)
    if isinstance(node, nodes.NSRef):
        return f"{node.name}.{node.attr}"
    if isinstance(node, nodes.Getattr):
        return f"{_atom(node.node)}.{node.attr}"
    if isinstance(node, nodes.Getitem):
        return f"{_atom(node.node)}[{source(node.arg)}]"
    if isinstance(node, nodes.Slice):
        text = f"{source(node.start)}:{source(node.stop)}"
        return text + (f":{source(node.step)}" if node.step is not None else "")
    if isinstance(node, nodes.Filter):
        args = _call_args(node)
        return f"{_atom(node.node)}|{node.name}" + (f"({args})" if args else "")
    if isinstance(node, nodes.Test):
        args = _call_args(node)
        return f"{_atom(node.node)} is {node.name}" + (f"({args})" if args else "")
    if isinstance(node, nodes.Not):
        if isinstance(node.node, nodes.Test):
            test = node.node
            args = _call_args(test)
            return f"{_atom(test.node)} is not {test.name}" + (f"({args})" if args else "")
        return f"not {_atom(node.node)}"
    if isinstance(node, nodes.Neg):
        return f"-{_atom(node.node)}"
    if isinstance(node, nodes.Pos):
        return f"+{_atom(node.node)}"
    if isinstance(node, nodes.Compare):
        text = _operand(node.expr)
        for operand in node.ops:
            text += f" {_COMPARE_OPS.get(operand.op, operand.op)} {_operand(operand.expr)}"
        return text
    if isinstance(node, nodes.And):
        return f"{_bool_operand(node.left, nodes.And)} and {_bool_operand(node.right, nodes.And)}"
    if isinstance(node, nodes.Or):
        return f"{_bool_operand(node.left, nodes.Or)} or {_bool_operand(node.right, nodes.Or)}"
    if isinstance(node, nodes.BinExpr):
        return f"{_left_operand(node.left, node)} {_BINARY_OPS.get(type(node), node.operator)} {_atom(node.right)}"
    if isinstance(node, nodes.Concat):
        return " ~ ".join(_atom(part) for part in node.nodes)
    if isinstance(node, nodes.CondExpr):
        text = f"{source(node.expr1)} if {source(node.test)}"
        return text + (f" else {source(node.expr2)}" if node.expr2 is not None else "")
    if isinstance(node, nodes.Call):
        return f"{_atom(node.node)}({_call_args(node)})"
    if isinstance(node, nodes.List):
        return "[" + ", ".join(source(item) for item in node.items) + "]"
    if isinstance(node, nodes.Tuple):
        return "(" + ", ".join(source(item) for item in node.items) + ("," if len(node.items) == 1 else "") + ")"
    if isinstance(node, nodes.Dict):
        return "{" + ", ".join(f"{source(pair.key)}: {source(pair.value)}" for pair in node.items) + "}"
    if isinstance(node, nodes.Keyword):
        return f"{node.key}={source(node.value)}"
    return f"<{type(node).__name__}>"


def negated_source(node: nodes.Node) -> str:
    """Source of ``not node``, written the way a person would (``!=`` rather than ``not ==``)."""
    if isinstance(node, nodes.Not):
        return source(node.node)
    if isinstance(node, nodes.Compare) and len(node.ops) == 1 and node.ops[0].op in _NEGATED_OPS:
        op = _COMPARE_OPS[_NEGATED_OPS[node.ops[0].op]]
        return f"{_operand(node.expr)} {op} {_operand(node.ops[0].expr)}"
    if isinstance(node, nodes.Test):
        return source(nodes.Not(node))
    return f"not {_atom(node)}"


def shorten(text: str, limit: int = 140) -> str:
    """Keep messages readable: long conditions and literals are cut with an ellipsis."""
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# The analysis


class Condition(NamedTuple):
    """A test known to have a given truth value wherever a node runs."""

    test: nodes.Node
    truth: bool

    def describe(self) -> str:
        """The condition as source; a disjunction is parenthesised so that joining several
        conditions with ``and`` keeps its meaning."""
        effective = self.test if self.truth else (self.test.node if isinstance(self.test, nodes.Not) else None)
        text = source(self.test) if self.truth else negated_source(self.test)
        return f"({text})" if isinstance(effective, (nodes.Or, nodes.CondExpr)) else text


# A frame of variables: (id of the statement that opens it, which of its bodies), None for the
# template's own. A loop's target is seen by its ``if`` filter and its body ("loop"); what its
# body sets is not seen by the filter, which runs first ("body"); its ``else`` is a frame apart.
Frame = tuple[int, str] | None
_FRAME_FIELDS: dict[tuple[type, str], str] = {
    (nodes.For, "body"): "body",
    (nodes.For, "test"): "loop",
    (nodes.For, "else_"): "else_",
    (nodes.Macro, "body"): "body",
    (nodes.CallBlock, "body"): "body",
    (nodes.FilterBlock, "body"): "body",
    (nodes.With, "body"): "body",
    (nodes.Scope, "body"): "body",
    (nodes.Block, "body"): "body",
}
# What ``reaching`` gives for a value it cannot state, and for the caller's variable.
UNKNOWN = type("Unknown", (), {"__repr__": lambda self: "UNKNOWN"})()
CALLER = type("Caller", (), {"__repr__": lambda self: "CALLER"})()
_PYTHON_COMPARE: dict[str, Callable[[object, object], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,  # type: ignore[operator]
    "lteq": lambda a, b: a <= b,  # type: ignore[operator]
    "gt": lambda a, b: a > b,  # type: ignore[operator]
    "gteq": lambda a, b: a >= b,  # type: ignore[operator]
}


class Definer(NamedTuple):
    """A place a name gets a value: the statement, the value expression (None when the analysis
    cannot state it: loop targets, parameters, tuple targets), its frame, and whether it runs
    every time its frame does."""

    node: nodes.Node
    value: nodes.Node | None
    frame: Frame
    certain: bool


class TemplateFacts:
    """Parent links, scopes, and the kinds of value every expression may hold, for one tree."""

    def __init__(self, tree: nodes.Template) -> None:
        self.tree = tree
        # id(child) -> (parent, field name, index in the field's list or None)
        self._links: dict[int, tuple[nodes.Node, str, int | None]] = {}
        # Pre-order position of every node: statements come out in source order, which is how
        # several findings on one line are told apart (Jinja nodes carry a line, no column).
        self.nodes: list[nodes.Node] = self._link(tree)
        self._macro_cache: dict[int, nodes.Macro | None] = {}
        # Filled once the kinds have reached their fixed point (before that they still grow).
        self._kinds_cache: dict[int, set[str]] | None = None
        self.macros: dict[str, nodes.Macro] = {m.name: m for m in self.nodes if isinstance(m, nodes.Macro)}
        # Names a macro owns (parameters, and anything it sets or loops over): lookups of these
        # inside the macro body do not see the template-level variable of the same name.
        self._macro_locals: dict[int, set[str]] = {}
        for macro in self.macros.values():
            owned = {arg.name for arg in macro.args}
            for node in macro.find_all((nodes.Assign, nodes.For)):
                owned.update(target.name for target in self._target_names(node.target))
            self._macro_locals[id(macro)] = owned
        self.order: dict[int, int] = {id(n): i for i, n in enumerate(self.nodes)}
        self._by_line: dict[int, list[nodes.Node]] = {}
        for node in self.nodes:
            self._by_line.setdefault(node.lineno, []).append(node)
        self._found: dict[object, list[nodes.Node]] = {}
        self.env: dict[tuple[int | None, str], set[str]] = {}
        self._definers: dict[str, list[Definer]] | None = None
        self._consensus_cache: dict[tuple[int, str], object] = {}
        self.bindings = self._bindings()
        self._solve()

    # -- structure -------------------------------------------------------------------------------
    def _link(self, root: nodes.Node) -> list[nodes.Node]:
        """Record every node's parent link; returns the nodes below ``root`` in pre-order (the
        order of ``root.find_all(nodes.Node)``), from the same single walk."""
        links = self._links
        node_class = nodes.Node
        found: list[nodes.Node] = []
        stack = [root]
        while stack:
            node = stack.pop()
            if node is not root:
                found.append(node)
            children: list[nodes.Node] = []
            for field, value in node.iter_fields():
                if isinstance(value, node_class):
                    links[id(value)] = (node, field, None)
                    children.append(value)
                elif isinstance(value, list):
                    for index, item in enumerate(value):
                        if isinstance(item, node_class):
                            links[id(item)] = (node, field, index)
                            children.append(item)
            children.reverse()
            stack.extend(children)
        return found

    def link(self, node: nodes.Node) -> tuple[nodes.Node, str, int | None] | None:
        """(parent, field, index) of a node, or None for the root."""
        return self._links.get(id(node))

    def parent(self, node: nodes.Node) -> nodes.Node | None:
        link = self._links.get(id(node))
        return link[0] if link else None

    def ancestors(self, node: nodes.Node) -> Iterator[tuple[nodes.Node, str, int | None]]:
        """Every (parent, field, index) from the node's parent up to the template."""
        link = self._links.get(id(node))
        while link is not None:
            yield link
            link = self._links.get(id(link[0]))

    def macro_of(self, node: nodes.Node) -> nodes.Macro | None:
        if id(node) in self._macro_cache:
            return self._macro_cache[id(node)]
        found = next((parent for parent, _, _ in self.ancestors(node) if isinstance(parent, nodes.Macro)), None)
        self._macro_cache[id(node)] = found
        return found

    def loops(self, node: nodes.Node) -> list[nodes.For]:
        """The for loops whose body runs the node, innermost first."""
        return [
            parent for parent, field, _ in self.ancestors(node) if isinstance(parent, nodes.For) and field == "body"
        ]

    def message_loops(self, node: nodes.Node) -> list[nodes.For]:
        """Enclosing loops over the conversation (``for message in messages``, aliases too)."""
        return [loop for loop in self.loops(node) if MESSAGES in self.kinds(loop.iter)]

    @staticmethod
    def _target_names(target: nodes.Node) -> list[nodes.Name]:
        if isinstance(target, nodes.Name):
            return [target]
        if isinstance(target, nodes.Tuple):
            return [item for item in target.items if isinstance(item, nodes.Name)]
        return []

    def _scope_key(self, name: str, at: nodes.Node) -> tuple[int | None, str]:
        macro = self.macro_of(at)
        if macro is not None and name in self._macro_locals.get(id(macro), ()):
            return id(macro), name
        return None, name

    # -- kinds -----------------------------------------------------------------------------------
    def _bindings(self) -> list[tuple[tuple[int | None, str], nodes.Node, str]]:
        """(variable, expression, how) for every place a name gets a value.

        ``how`` is "value" for ``set``/macro arguments and "element" for loop targets.
        """
        found: list[tuple[tuple[int | None, str], nodes.Node, str]] = []
        for node in self.find((nodes.Assign, nodes.For, nodes.Call)):
            if isinstance(node, nodes.Assign):
                if isinstance(node.target, nodes.Name):
                    found.append((self._scope_key(node.target.name, node), node.node, "value"))
                elif isinstance(node.target, nodes.NSRef):
                    # Namespaces are shared objects; key their attributes at template level.
                    found.append(((None, f"{node.target.name}.{node.target.attr}"), node.node, "value"))
            elif isinstance(node, nodes.For):
                if isinstance(node.target, nodes.Name):
                    found.append((self._scope_key(node.target.name, node), node.iter, "element"))
            elif isinstance(node.node, nodes.Name) and node.node.name in self.macros:
                macro = self.macros[node.node.name]
                params = [arg.name for arg in macro.args]
                for param, arg in zip(params, node.args):
                    found.append(((id(macro), param), arg, "value"))
                for keyword in node.kwargs:
                    if keyword.key in params:
                        found.append(((id(macro), keyword.key), keyword.value, "value"))
        return found

    def _solve(self) -> None:
        bindings = self.bindings
        # Kinds only grow, so this reaches a fixed point; the bound guards against pathological
        # templates (each round can add at most one step to an alias chain).
        for _ in range(len(bindings) + 2):
            changed = False
            for key, expr, how in bindings:
                kinds = self.kinds(expr)
                if how == "element":
                    kinds = {ELEMENT[k] for k in kinds if k in ELEMENT}
                known = self.env.setdefault(key, set())
                if not kinds <= known:
                    known |= kinds
                    changed = True
            if not changed:
                break
        self._kinds_cache = {}

    def kinds(self, expr: nodes.Node | None) -> set[str]:
        """The kinds of value ``expr`` may hold (empty when it is none of the tracked ones)."""
        if expr is None:
            return set()
        if self._kinds_cache is None:
            return self._kinds(expr)
        found = self._kinds_cache.get(id(expr))
        if found is None:
            found = self._kinds_cache[id(expr)] = self._kinds(expr)
        return set(found)

    def _kinds(self, expr: nodes.Node) -> set[str]:
        if isinstance(expr, nodes.Name):
            key = self._scope_key(expr.name, expr)
            found = set(self.env.get(key, ()))
            if key[0] is None and expr.name in ROOTS:
                found.add(ROOTS[expr.name])
            return found
        if isinstance(expr, nodes.Const):
            return {DEFAULT_TEXT} if isinstance(expr.value, str) and prose(expr.value) else set()
        if isinstance(expr, (nodes.Add, nodes.Concat)):
            # Only prose survives concatenation: '<s>' + content is text, not content.
            parts = [expr.left, expr.right] if isinstance(expr, nodes.Add) else expr.nodes
            return {DEFAULT_TEXT} if any(DEFAULT_TEXT in self.kinds(part) for part in parts) else set()
        if isinstance(expr, nodes.Getattr) and isinstance(expr.node, nodes.Name):
            if expr.node.name == "loop" and expr.attr in ("previtem", "nextitem"):
                loops = self.loops(expr)
                if loops:
                    return {ELEMENT[k] for k in self.kinds(loops[0].iter) if k in ELEMENT}
            namespaced = self.env.get((None, f"{expr.node.name}.{expr.attr}"))
            if namespaced:
                return set(namespaced)
        key = key_of(expr)
        if key is not None:
            base = self.kinds(lookup_base(expr))
            return {FIELDS[(kind, key)] for kind in base if (kind, key) in FIELDS}
        if isinstance(expr, nodes.Getitem):
            base = self.kinds(expr.node)
            if isinstance(expr.arg, nodes.Slice):
                return {k for k in base if k in ELEMENT}
            return {ELEMENT[k] for k in base if k in ELEMENT}
        if isinstance(expr, nodes.Filter) and expr.node is not None:
            base = self.kinds(expr.node)
            if expr.name in SAME_LIST_FILTERS:
                return {k for k in base if k in ELEMENT}
            if expr.name in ELEMENT_FILTERS:
                return {ELEMENT[k] for k in base if k in ELEMENT}
            if expr.name in ("default", "d"):
                return base | (self.kinds(expr.args[0]) if expr.args else set())
            if expr.name in ROLE_FILTERS:
                return base & {ROLE}
            return set()
        if isinstance(expr, nodes.CondExpr):
            return self.kinds(expr.expr1) | self.kinds(expr.expr2)
        if isinstance(expr, nodes.Or):
            return self.kinds(expr.left) | self.kinds(expr.right)
        return set()

    def has(self, expr: nodes.Node | None, kind: str) -> bool:
        return kind in self.kinds(expr)

    def drops_messages(self, expr: nodes.Node, _seen: frozenset[str] = frozenset()) -> bool:
        """Whether a list of messages may lack some of the conversation (a slice, a filter, or
        a variable ever assigned one): ``loop_messages = messages[1:]`` when a system message
        is handled before the loop."""
        if isinstance(expr, nodes.Getitem) and isinstance(expr.arg, nodes.Slice):
            return True
        if isinstance(expr, nodes.Filter) and expr.node is not None:
            return expr.name in ("selectattr", "rejectattr", "unique") or self.drops_messages(expr.node, _seen)
        if isinstance(expr, nodes.CondExpr):
            return self.drops_messages(expr.expr1, _seen) or (
                expr.expr2 is not None and self.drops_messages(expr.expr2, _seen)
            )
        if isinstance(expr, nodes.Name) and expr.name not in _seen:
            # The assignments that reach this read, where scoping says which (a list re-set
            # to the whole conversation before the loop no longer lacks anything).
            values = self.reaching(expr)
            if values is not None and UNKNOWN not in values:
                return any(
                    self.drops_messages(value, _seen | {expr.name})
                    for value in values if isinstance(value, nodes.Node)
                )  # fmt: skip
            key = self._scope_key(expr.name, expr)
            return any(
                bound == key and how == "value" and self.drops_messages(value, _seen | {expr.name})
                for bound, value, how in self.bindings
            )
        return False

    def find(self, types: type | tuple[type, ...]) -> list[nodes.Node]:
        """Every node of the given types, in source order (cached: rules ask for the same
        kinds of node again and again, and walking a large template is the expensive part)."""
        found = self._found.get(types)
        if found is None:
            found = [node for node in self.nodes if isinstance(node, types)]
            self._found[types] = found
        return found

    def rank_on_line(self, node: nodes.Node, same: Callable[[nodes.Node], bool]) -> int:
        """How many nodes matching ``same`` start earlier on the node's line (0 for the first)."""
        mine = self.order.get(id(node), 0)
        return sum(
            1 for other in self._by_line.get(node.lineno, ()) if same(other) and self.order.get(id(other), 0) < mine
        )

    # -- control flow ----------------------------------------------------------------------------
    def conditions(self, node: nodes.Node, *, asserts: bool = True) -> list[Condition]:
        """Tests whose truth value is fixed wherever ``node`` runs, outermost first.

        Includes the ``if``/``elif``/``else`` branches above the node, the left side of
        ``and``/``or`` and of inline ``if``, a loop's ``if`` filter, and — with ``asserts`` —
        earlier sibling ``{% if c %}{{ raise_exception(...) }}{% endif %}`` statements, after
        which ``not c`` holds (Llama 3.1 checks ``tool_calls|length != 1`` that way before it
        reads ``tool_calls[0]``).
        """
        found: list[Condition] = []
        for parent, field, index in self.ancestors(node):
            level: list[Condition] = []
            if isinstance(parent, nodes.If):
                if field == "body":
                    level.append(Condition(parent.test, True))
                elif field == "else_":
                    level.append(Condition(parent.test, False))
                    level += [Condition(branch.test, False) for branch in parent.elif_]
                elif field == "elif_" and index is not None:
                    level.append(Condition(parent.test, False))
                    level += [Condition(branch.test, False) for branch in parent.elif_[:index]]
            elif isinstance(parent, nodes.CondExpr) and field in ("expr1", "expr2"):
                level.append(Condition(parent.test, field == "expr1"))
            elif isinstance(parent, nodes.And) and field == "right":
                level.append(Condition(parent.left, True))
            elif isinstance(parent, nodes.Or) and field == "right":
                level.append(Condition(parent.left, False))
            elif isinstance(parent, nodes.For) and field == "body" and parent.test is not None:
                level.append(Condition(parent.test, True))
            if asserts and index is not None and field in ("body", "else_"):
                for sibling in getattr(parent, field)[:index]:
                    if isinstance(sibling, nodes.If) and not sibling.elif_:
                        if always_raises(sibling.body):
                            level.append(Condition(sibling.test, False))
                        elif always_raises(sibling.else_):
                            level.append(Condition(sibling.test, True))
            found.extend(reversed(level))
        found.reverse()
        return found

    def raises(self) -> list[nodes.Call]:
        """Every ``raise_exception(...)`` call, in source order."""
        return [call for call in self.find(nodes.Call) if is_raise(call)]

    def live_raises(self) -> list[nodes.Call]:
        """The ``raise_exception(...)`` calls that some input can reach (see ``may_run``)."""
        return [call for call in self.raises() if self.may_run(call)]

    # -- scopes and reaching assignments ----------------------------------------------------------
    def frames(self, node: nodes.Node) -> list[Frame]:
        """The frames whose variables ``node`` sees, innermost first (the template's is None)."""
        found: list[Frame] = []
        for parent, field, _ in self.ancestors(node):
            key = _FRAME_FIELDS.get((type(parent), field))
            if key is not None:
                found.append((id(parent), key))
                if key == "body" and isinstance(parent, nodes.For):
                    found.append((id(parent), "loop"))
        found.append(None)
        return found

    @property
    def definers(self) -> dict[str, list[Definer]]:
        """Every place each name gets a value, in source order, with the frame it belongs to."""
        if self._definers is None:
            self._definers = {}
            statements = (nodes.Assign, nodes.AssignBlock, nodes.For, nodes.Macro, nodes.CallBlock, nodes.With)
            for node in self.find(statements):
                for name, value in self._defined_by(node):
                    link = self._links.get(id(node))
                    if isinstance(node, (nodes.Assign, nodes.AssignBlock)):
                        frame = self.frames(node)[0]
                        # Certain when it sits directly in its frame's body, under no ``if``.
                        certain = link is not None and (
                            (frame is None and isinstance(link[0], nodes.Template))
                            or (frame is not None and frame[0] == id(link[0]) and
                                _FRAME_FIELDS.get((type(link[0]), link[1])) == frame[1])
                        )
                    else:  # a loop target, macro or call-block parameter, ``with`` target
                        frame, certain = (id(node), "loop" if isinstance(node, nodes.For) else "body"), True
                    self._definers.setdefault(name, []).append(Definer(node, value, frame, certain))
        return self._definers

    @classmethod
    def _defined_by(cls, node: nodes.Node) -> Iterator[tuple[str, nodes.Node | None]]:
        """(name, value expression or None when unknown) for each name ``node`` assigns."""
        if isinstance(node, nodes.Assign):
            if isinstance(node.target, nodes.Name):
                yield node.target.name, node.node
            else:
                yield from ((name.name, None) for name in cls._target_names(node.target))
        elif isinstance(node, nodes.AssignBlock):
            yield from ((name.name, None) for name in cls._target_names(node.target))
        elif isinstance(node, nodes.For):
            yield from ((name.name, None) for name in cls._target_names(node.target))
        elif isinstance(node, (nodes.Macro, nodes.CallBlock)):
            yield from ((arg.name, None) for arg in node.args)
        elif isinstance(node, nodes.With):
            for target in node.targets:
                yield from ((name.name, None) for name in cls._target_names(target))

    def reaching(self, name: nodes.Name) -> list[nodes.Node | object] | None:
        """What a read of a variable may see: the value expressions of the assignments Jinja's
        scoping lets reach it (``UNKNOWN`` for a value the analysis cannot state, ``CALLER``
        for whatever the caller passed), or None when the template never assigns the name.

        An assignment reaches a read that comes after it in a frame it belongs to: a ``set``
        inside a loop body, macro, call block, filter block or ``with`` is gone once that body
        ends (and a loop's next iteration starts again from the outer value); an ``if`` has no
        frame of its own. The last certain assignment hides everything before it.
        """
        definers = self.definers.get(name.name)
        if not definers:
            return None
        visible = set(self.frames(name))
        above = {id(parent) for parent, _, _ in self.ancestors(name)}
        order = self.order.get(id(name), 0)
        candidates = [
            definer for definer in definers
            if definer.frame in visible
            and self.order.get(id(definer.node), 0) < order
            # ``{% set x = x + 1 %}`` reads x before it assigns it.
            and not (isinstance(definer.node, (nodes.Assign, nodes.AssignBlock)) and id(definer.node) in above)
        ]  # fmt: skip
        certain = max((i for i, definer in enumerate(candidates) if definer.certain), default=None)
        # A macro or call block runs when it is called: a read of a name it does not own itself
        # sees whatever the template holds at that time.
        function = next(
            (parent for parent, field, _ in self.ancestors(name)
             if isinstance(parent, (nodes.Macro, nodes.CallBlock)) and field == "body"), None,
        )  # fmt: skip
        if function is not None and (certain is None or not self._within(candidates[certain].frame, function)):
            return [UNKNOWN]
        if certain is None:
            return [CALLER] + [UNKNOWN if definer.value is None else definer.value for definer in candidates]
        return [UNKNOWN if definer.value is None else definer.value for definer in candidates[certain:]]

    def _within(self, frame: Frame, function: nodes.Node) -> bool:
        """Whether a frame is the function's own or one inside it."""
        if frame is None:
            return False
        opener = self.nodes[self.order[frame[0]]] if frame[0] in self.order else None
        return frame[0] == id(function) or (
            opener is not None and any(parent is function for parent, _, _ in self.ancestors(opener))
        )

    def _consensus(self, name: nodes.Name, measure: Callable[[nodes.Node], object]) -> object:
        """``measure`` of every value the variable may hold when they all agree, else ``UNKNOWN``."""
        key = (id(name), measure.__name__)
        if key in self._consensus_cache:
            return self._consensus_cache[key]
        self._consensus_cache[key] = UNKNOWN  # a cycle (reads only look back, so none) knows nothing
        values = self.reaching(name)
        found: object = UNKNOWN
        if values and CALLER not in values and UNKNOWN not in values:
            measured = [measure(value) for value in values]  # type: ignore[arg-type]
            if all(type(m) is type(measured[0]) and m == measured[0] for m in measured):
                found = measured[0]
        self._consensus_cache[key] = found
        return found

    def truth(self, expr: nodes.Node) -> bool | None:
        """Whether a test is known to be true or false wherever it runs (None when unknown)."""
        if isinstance(expr, nodes.Not):
            inner = self.truth(expr.node)
            return None if inner is None else not inner
        if isinstance(expr, (nodes.And, nodes.Or)):
            stop = isinstance(expr, nodes.Or)  # the value that decides the whole test
            left, right = self.truth(expr.left), self.truth(expr.right)
            if stop in (left, right):
                return stop
            return None if left is None or right is None else not stop
        if isinstance(expr, nodes.CondExpr):
            test = self.truth(expr.test)
            if test is None:
                return None
            branch = expr.expr1 if test else expr.expr2
            return False if branch is None else self.truth(branch)
        if isinstance(expr, nodes.Name):
            found = self._consensus(expr, self.truth)
            return found if isinstance(found, bool) else None
        size = self.size(expr)
        if size is not None:
            return size > 0
        value = self.value(expr)
        return None if value is UNKNOWN else bool(value)

    def size(self, expr: nodes.Node) -> int | None:
        """The length of a list, tuple, dict or string known from the source (None when unknown)."""
        if isinstance(expr, (nodes.List, nodes.Tuple, nodes.Dict)):
            return len(expr.items)
        if isinstance(expr, nodes.Const) and isinstance(expr.value, (str, list, tuple, dict)):
            return len(expr.value)
        if isinstance(expr, nodes.Filter) and expr.name == "list" and expr.node is not None:
            return self.size(expr.node)
        if isinstance(expr, nodes.Name):
            found = self._consensus(expr, self.size)
            return found if isinstance(found, int) else None
        return None

    def value(self, expr: nodes.Node) -> object:
        """The number, string, boolean or none an expression is known to have (else ``UNKNOWN``)."""
        if isinstance(expr, nodes.Const) and isinstance(expr.value, (int, float, str, bool, type(None))):
            return expr.value
        if isinstance(expr, nodes.Neg) and isinstance(expr.node, nodes.Const) and type(expr.node.value) is int:
            return -expr.node.value
        if isinstance(expr, nodes.Filter) and expr.name in ("length", "count") and expr.node is not None:
            size = self.size(expr.node)
            return UNKNOWN if size is None else size
        if isinstance(expr, nodes.Name):
            return self._consensus(expr, self.value)
        if isinstance(expr, nodes.Compare):
            left = self.value(expr.expr)
            for operand in expr.ops:
                right = self.value(operand.expr)
                compare = _PYTHON_COMPARE.get(operand.op)
                if left is UNKNOWN or right is UNKNOWN or compare is None:
                    return UNKNOWN
                try:
                    if not compare(left, right):
                        return False
                except TypeError:
                    return UNKNOWN
                left = right
            return True
        return UNKNOWN

    def may_run(self, node: nodes.Node) -> bool:
        """False when no input reaches ``node``: a test above it is known to have the other truth
        value, or a loop above it walks a list known to be empty, given the assignments Jinja's
        scoping lets reach them (``filtered = []`` before a loop that extends ``filtered`` in
        its body stays empty after it)."""
        for condition in self.conditions(node, asserts=False):
            if self.truth(condition.test) is (not condition.truth):
                return False
        return not any(self.size(loop.iter) == 0 for loop in self.loops(node))


def always_raises(body: list[nodes.Node]) -> bool:
    """A statement list that raises before it can finish (a raise at its top level)."""
    return any(isinstance(stmt, nodes.Output) and any(is_raise(part) for part in stmt.nodes) for stmt in body)


def facts_for(target: LintTarget) -> TemplateFacts:
    """The analysis of one target, computed once and shared by every rule that asks (its lazy
    parts are filled in as rules ask; see ``LintTarget.discard_shared``)."""
    assert target.tree is not None  # rules run only on templates that parse (needs_tree)
    return target.shared("structure:facts", lambda shared_target: TemplateFacts(shared_target.tree))


IF_KEYWORD = r"\{%[-+]?\s*(if)\b"


def nth_column(target: LintTarget, line: int, pattern: str, n: int) -> int:
    """Column of the ``n``-th match of ``pattern`` on ``line`` (group 1 if it has one).

    Falls back to the last match, then to column 1, so a finding is never lost to an odd layout
    (a tag split across lines, say).
    """
    if not 1 <= line <= len(target.lines):
        return 1
    matches = list(re.finditer(pattern, target.lines[line - 1]))
    if not matches:
        return 1
    match = matches[min(n, len(matches) - 1)]
    group = next((g for g in range(1, match.re.groups + 1) if match.group(g) is not None), 0)
    return match.start(group) + 1


def expr_pattern(node: nodes.Node) -> str:
    """A regex that finds an expression as people write it: either quote, optional spaces
    around ``[``, ``]``, ``.`` and ``|`` (``message['content']`` matches ``message["content"]``)."""
    text = re.escape(source(node))
    text = text.replace("'", "['\"]")
    for token in (r"\[", r"\]", r"\.", r"\|"):
        text = text.replace(token, rf"\s*{token}\s*")
    return text


class FactsRule(AstRule):
    """An AST rule that reads the shared analysis and reports at a precise column."""

    @property
    def facts(self) -> TemplateFacts:
        return facts_for(self.target)

    def report_nth(
        self,
        node: nodes.Node,
        message: str,
        pattern: str,
        same: Callable[[nodes.Node], bool],
        *,
        fix: Fix | None = None,
    ) -> None:
        """Report at the occurrence of ``pattern`` that belongs to ``node``: the n-th on its line,
        where n is the node's rank among the line's nodes that satisfy ``same``."""
        column = nth_column(self.target, node.lineno, pattern, self.facts.rank_on_line(node, same))
        self.report(node, message, line=node.lineno, column=column, fix=fix)

    def is_statement_if(self, node: nodes.Node) -> bool:
        """An ``{% if %}`` (not an ``{% elif %}``, which Jinja also parses as an If)."""
        if not isinstance(node, nodes.If):
            return False
        link = self.facts.link(node)
        return link is None or link[1] != "elif_"

    def report_if(self, node: nodes.If, message: str, *, fix: Fix | None = None) -> None:
        self.report_nth(node, message, IF_KEYWORD, self.is_statement_if, fix=fix)

    def report_raise(self, call: nodes.Call, message: str) -> None:
        self.report_nth(call, message, r"raise_exception", is_raise)


# ---------------------------------------------------------------------------------------------
# Helpers over conditions


def walk_polarity(expr: nodes.Node, truth: bool = True) -> Iterator[tuple[nodes.Node, bool]]:
    """The operands in boolean position of a test, each with the truth value it must have when
    the test has ``truth``.

    Only ``not`` flips polarity; ``and``/``or`` keep it (an approximation that is exact for the
    conjunctions templates write, and merely loose for disjunctions). Operands of a comparison
    are not in boolean position: in ``(role == 'user') != (loop.index0 % 2 == 0)`` neither side
    is known to hold.
    """
    yield expr, truth
    if isinstance(expr, nodes.Not):
        yield from walk_polarity(expr.node, not truth)
    elif isinstance(expr, (nodes.And, nodes.Or)):
        yield from walk_polarity(expr.left, truth)
        yield from walk_polarity(expr.right, truth)


def role_literals(
    facts: TemplateFacts, expr: nodes.Node, truth: bool = True
) -> Iterator[tuple[bool, set[str], nodes.Compare]]:
    """(positive, roles, compare) for each test of a message role against string literals.

    ``positive`` is whether the test asserts the role *is* one of ``roles`` (``==``/``in``
    holding, or ``!=``/``not in`` failing).
    """
    for node, holds in walk_polarity(expr, truth):
        if not isinstance(node, nodes.Compare) or len(node.ops) != 1:
            continue
        operand = node.ops[0]
        left, right = node.expr, operand.expr
        if not facts.has(left, ROLE) and facts.has(right, ROLE):
            left, right = right, left
        if not facts.has(left, ROLE):
            continue
        if isinstance(right, nodes.Const) and isinstance(right.value, str):
            values = {right.value}
        elif isinstance(right, (nodes.List, nodes.Tuple)) and all(
            isinstance(item, nodes.Const) and isinstance(item.value, str) for item in right.items
        ):
            values = {item.value for item in right.items}
        else:
            continue
        if operand.op in ("eq", "in"):
            yield holds, values, node
        elif operand.op in ("ne", "notin"):
            yield not holds, values, node


def boolean_atoms(expr: nodes.Node) -> list[nodes.Node]:
    """The operands of a test once ``and``, ``or`` and ``not`` are taken apart."""
    if isinstance(expr, (nodes.And, nodes.Or)):
        return boolean_atoms(expr.left) + boolean_atoms(expr.right)
    if isinstance(expr, nodes.Not):
        return boolean_atoms(expr.node)
    return [expr]


def is_role_compare(facts: TemplateFacts, expr: nodes.Node) -> bool:
    return (
        isinstance(expr, nodes.Compare)
        and len(expr.ops) == 1
        and (facts.has(expr.expr, ROLE) or facts.has(expr.ops[0].expr, ROLE))
    )


def mentions(expr: nodes.Node, predicate: Callable[[nodes.Node], bool]) -> bool:
    return predicate(expr) or any(predicate(node) for node in expr.find_all(nodes.Node))


def checks_nonempty(expr: nodes.Node, predicate: Callable[[nodes.Node], bool]) -> bool:
    """Whether ``expr`` tests that a value matching ``predicate`` is non-empty.

    Counts ``x``/``not x`` in a boolean position, ``x|length`` or ``x|count`` anywhere, and
    ``x[i] is defined``. ``x is defined`` and ``x is not none`` do not count: an empty list
    passes both.
    """
    def boolean_operands(node: nodes.Node) -> Iterator[nodes.Node]:
        yield node
        if isinstance(node, nodes.Not):
            yield from boolean_operands(node.node)
        elif isinstance(node, (nodes.And, nodes.Or)):
            yield from boolean_operands(node.left)
            yield from boolean_operands(node.right)
        elif isinstance(node, nodes.CondExpr):
            yield from boolean_operands(node.test)

    if any(predicate(node) for node in boolean_operands(expr)):
        return True
    for node in [expr, *expr.find_all(nodes.Node)]:
        if isinstance(node, nodes.Filter) and node.name in ("length", "count") and node.node is not None:
            if predicate(node.node):
                return True
        if isinstance(node, nodes.Test) and node.name == "defined" and isinstance(node.node, nodes.Getitem):
            if predicate(node.node.node):
                return True
    return False


def reads_from(link: tuple[nodes.Node, str, int | None] | None) -> bool:
    """Whether an item (``x[0]``, linked to its parent by ``link``) is read from or stored.

    Printing ``messages[0]`` of an empty list prints ""; a lookup on it (``messages[0].role``)
    raises, and so, later, does a lookup on a variable it was stored in
    (``{% set tool_call = message.tool_calls[0] %}``).
    """
    if link is None:
        return False
    parent, field, _ = link
    return (isinstance(parent, (nodes.Getattr, nodes.Getitem)) and field == "node") or (
        isinstance(parent, nodes.Assign) and field == "node"
    )


def example_role(handled: set[str]) -> str:
    """A real role the template does not handle, to make a message concrete."""
    for role in ("developer", "tool", "system", "ipython"):
        if role not in handled:
            return role
    return "function"


def quoted_roles(roles: set[str]) -> str:
    return ", ".join(repr(role) for role in sorted(roles))


def has_output(statements: list[nodes.Node], facts: TemplateFacts | None = None) -> bool:
    """Whether statements print anything (output nodes, macro calls, call blocks). Given the
    analysis, a ``raise_exception`` no input reaches (see ``may_run``) does not count: it
    neither renders a message nor rejects it."""
    for stmt in statements:
        for node in [stmt, *stmt.find_all(nodes.Node)]:
            if isinstance(node, nodes.Output):
                for part in node.nodes:
                    if isinstance(part, nodes.TemplateData) and not part.data.strip():
                        continue
                    if facts is not None and is_raise(part) and not facts.may_run(part):
                        continue
                    return True
            if isinstance(node, nodes.CallBlock):
                return True
    return False


# Statements that only steer control flow: what they run decides what they do.
_CONTROL = (nodes.If, nodes.For, nodes.Output, nodes.Scope, nodes.ScopedEvalContextModifier)


def only_dead_raises(facts: TemplateFacts, statements: list[nodes.Node]) -> bool:
    """Whether statements do nothing but call ``raise_exception`` where no input reaches it
    (``{% if strict %}`` after ``{% set strict = false %}``): no output, no assignment, and at
    least one raise, none of them live."""
    raises = [call for stmt in statements for call in [stmt, *stmt.find_all(nodes.Call)] if is_raise(call)]
    if not raises or any(facts.may_run(call) for call in raises):
        return False
    return not has_output(statements, facts) and all(
        isinstance(node, _CONTROL) for stmt in statements for node in [stmt, *stmt.find_all(nodes.Stmt)]
    )


# ---------------------------------------------------------------------------------------------
# Rules


def branch_roles(facts: TemplateFacts, test: nodes.Node) -> set[str]:
    """The roles a branch test accepts positively (``role == 'user' or role == 'tool'``)."""
    return {role for positive, roles, _ in role_literals(facts, test) if positive for role in roles}


def allowed_roles(facts: TemplateFacts, call: nodes.Call) -> set[str] | None:
    """For a raise guarded only by "role is none of these" tests, the roles it lets through."""
    allowed: set[str] = set()
    for condition in facts.conditions(call, asserts=False):
        for positive, roles, _ in role_literals(facts, condition.test, condition.truth):
            if positive:
                return None
            allowed |= roles
    return allowed or None


@register
class RoleDispatchWithoutElse(FactsRule):
    """Role dispatch has no else branch: messages with other roles are silently dropped.

    Why: a message loop that renders roles with ``if``/``elif`` on ``message.role`` and no
    ``else`` drops every message whose role is not listed, without an error. OpenAI clients
    send ``developer``, agents send ``tool``, some send ``system`` mid-conversation; the model
    never sees them and nobody notices. End the chain with an ``else`` that renders the message
    generically or calls ``raise_exception`` naming the role. A ``raise_exception`` no input
    reaches (see TK305) neither validates nor rejects roles: an ``else`` that raises only under
    ``{% if strict %}`` after ``{% set strict = false %}`` still drops the message.

    Bad:
        {% for message in messages %}
        {% if message.role == 'user' %}{{ '<|user|>' + message.content }}
        {% elif message.role == 'assistant' %}{{ '<|assistant|>' + message.content }}
        {% endif %}
        {% endfor %}

    Good:
        {% for message in messages %}
        {% if message.role == 'user' %}{{ '<|user|>' + message.content }}
        {% elif message.role == 'assistant' %}{{ '<|assistant|>' + message.content }}
        {% else %}{{ raise_exception('Unsupported role: ' + message.role) }}
        {% endif %}
        {% endfor %}
    """

    code = "TK301"
    name = "role-dispatch-without-else"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        if self._validates_roles(facts):
            return
        candidates: list[nodes.If] = []
        handled: set[str] = set()
        for chain in facts.find(nodes.If):
            if not self.is_statement_if(chain) or not self._renders_messages(facts, chain):
                continue
            branches = [chain, *chain.elif_]
            if not any(has_output(branch.body, facts) for branch in branches):
                continue  # a pre-scan that only sets variables, not the renderer
            accepted = [branch_roles(facts, branch.test) for branch in branches]
            if not any(accepted):
                continue
            outer_roles = any(
                True for c in facts.conditions(chain, asserts=False) for _ in role_literals(facts, c.test, c.truth)
            )
            if chain.else_ and has_output(chain.else_, facts) and all(accepted) and not outer_roles:
                # Some loop renders every other role (multi-pass templates pick roles per
                # pass, e.g. a judge template printing the conversation, then the responses).
                return
            handled |= set().union(*accepted)
            # A branch that tests something other than the role (``elif message.content``)
            # catches the roles the others miss; two role branches make it a dispatch.
            no_else = not chain.else_ or only_dead_raises(facts, chain.else_)
            if no_else and all(accepted) and len(accepted) >= 2:
                if not self._content_rendered_for_any_role(facts, chain):
                    candidates.append(chain)
        if candidates:
            # One finding per template, naming every role any pass renders: that is what is
            # true of the template as a whole.
            self.report_if(
                candidates[0],
                f"role dispatch has no else: a message whose role is none of {quoted_roles(handled)} "
                f"(e.g. {example_role(handled)!r}) renders nothing and raises no error",
            )

    @staticmethod
    def _content_rendered_for_any_role(facts: TemplateFacts, chain: nodes.If) -> bool:
        """Whether the loop around a chain prints message content outside every role branch
        (``{% if role == 'user' %}<user>{% elif ... %}{% endif %}{{ message.content }}``): an
        unlisted role then loses its header, not its text, which this rule does not claim."""
        loops = facts.message_loops(chain)
        if not loops:
            return False
        outer = {id(c.test) for c in facts.conditions(loops[0], asserts=False)}
        for output in loops[0].find_all(nodes.Output):
            pieces = [piece for expr in output.nodes for piece in _flatten_output(expr)]
            if not any(
                _prints_content(facts, piece)
                or (isinstance(piece, nodes.Call) and any(facts.has(arg, MESSAGE) for arg in piece.args))
                for piece in pieces
            ):
                continue
            inner = [c for c in facts.conditions(output, asserts=False) if id(c.test) not in outer]
            if not any(ok for c in inner for ok, _, _ in role_literals(facts, c.test, c.truth)):
                return True
        return False

    @staticmethod
    def _renders_messages(facts: TemplateFacts, chain: nodes.If) -> bool:
        # Dispatch over *each* message: inside a loop over the conversation, or inside a macro
        # that is handed a message. A chain on messages[0] alone is the system-prompt check.
        if facts.message_loops(chain):
            return True
        macro = facts.macro_of(chain)
        return macro is not None and any(MESSAGE in facts.env.get((id(macro), arg.name), ()) for arg in macro.args)

    @staticmethod
    def _validates_roles(facts: TemplateFacts) -> bool:
        # ``{% if message.role not in [...] %}{{ raise_exception(...) }}`` (or a chain of ``!=``)
        # elsewhere already rejects the roles a chain does not handle, unless no input reaches
        # it (a check inside a loop over a list that Jinja's scoping leaves empty).
        return any(len(allowed_roles(facts, call) or ()) > 1 for call in facts.live_raises())


def _flatten_output(expr: nodes.Node) -> list[nodes.Node]:
    """The pieces an output expression prints, in order (``a + b ~ c`` gives a, b, c)."""
    if isinstance(expr, nodes.Add):
        return _flatten_output(expr.left) + _flatten_output(expr.right)
    if isinstance(expr, nodes.Concat):
        return [piece for part in expr.nodes for piece in _flatten_output(part)]
    return [expr]


def _prints_content(facts: TemplateFacts, part: nodes.Node) -> bool:
    """An output piece that is the message content: directly, filtered (``content|trim``),
    through a string method (``content.strip()``), or handed to a macro that renders it."""
    if isinstance(part, nodes.Filter) and part.node is not None:
        part = part.node
    if facts.has(part, CONTENT):
        return True
    if isinstance(part, nodes.Call):
        if isinstance(part.node, nodes.Getattr) and facts.has(part.node.node, CONTENT):
            return True
        return any(facts.has(arg, CONTENT) for arg in part.args)
    return False


def _literal_text(part: nodes.Node) -> str | None:
    if isinstance(part, nodes.TemplateData):
        return part.data
    if isinstance(part, nodes.Const) and isinstance(part.value, str):
        return part.value
    return None


def _content_without_header(facts: TemplateFacts, output: nodes.Output) -> bool:
    """Whether an output prints message content with only whitespace in front of it, counting
    the outputs just before it in the same block (``{{ '<|a|>' }}{{ content }}`` has a header)."""
    pieces = [piece for expr in output.nodes for piece in _flatten_output(expr) if not is_raise(piece)]
    prefix = ""
    for piece in pieces:
        if _prints_content(facts, piece):
            break
        text = _literal_text(piece)
        if text is None:
            return False
        prefix += text
    else:
        return False
    link = facts.link(output)
    if link is not None and link[2] is not None:
        for sibling in getattr(link[0], link[1])[: link[2]]:
            if isinstance(sibling, nodes.Output):
                prefix += "".join(_literal_text(p) or "x" for e in sibling.nodes for p in _flatten_output(e))
            elif has_output([sibling]):
                prefix += "x"  # ``{% if role == 'user' %}User: {% endif %}{{ content }}`` prints a header
    return not prefix.strip()


def assistant_turns_have_no_header(facts: TemplateFacts) -> bool:
    """Whether assistant messages are printed with nothing but whitespace before their content.

    Mistral-style formats (``[INST] ... [/INST]`` then the answer) and formats whose user turn
    ends with the assistant cue (``<user>...<AI>``) have no assistant header of their own, so
    there is nothing for ``add_generation_prompt`` to add.
    """
    for branch in facts.find(nodes.If):
        candidates = []
        if branch_roles(facts, branch.test) == {"assistant"}:
            candidates.append(branch.body)
        if branch.else_ and facts.link(branch) and facts.link(branch)[1] != "elif_":
            handled = [branch_roles(facts, b.test) for b in [branch, *branch.elif_]]
            # The else of a user/system dispatch is where assistant messages go.
            if all(handled) and "assistant" not in set().union(*handled):
                candidates.append(branch.else_)
        for statements in candidates:
            for stmt in statements:
                for output in [stmt, *stmt.find_all(nodes.Output)]:
                    if isinstance(output, nodes.Output) and _content_without_header(facts, output):
                        return True
    # Formats with no roles at all (``{% for m in messages %}{{ m.content }}{{ eos_token }}``):
    # content printed bare in the message loop, outside any branch that rules out assistants.
    for output in facts.find(nodes.Output):
        if not facts.message_loops(output) or not _content_without_header(facts, output):
            continue
        accepted = [
            roles
            for condition in facts.conditions(output, asserts=False)
            for positive, roles, _ in role_literals(facts, condition.test, condition.truth)
            if positive
        ]
        if all("assistant" in roles for roles in accepted):
            return True
    return False


@register
class GenerationPromptIgnored(FactsRule):
    """The template never reads add_generation_prompt.

    Why: callers ask for the assistant header with ``add_generation_prompt=True`` before
    generating. A template that ignores the flag either never emits the header (the model keeps
    writing the user's turn) or always emits it (training data and prefix caches get a dangling
    assistant header). Emit the header under ``{% if add_generation_prompt %}`` after the loop.
    Formats without an assistant header (Mistral's ``[INST]``) are not reported.

    Bad:
        {% for message in messages %}{{ '<|' + message.role + '|>' + message.content }}{% endfor %}

    Good:
        {% for message in messages %}{{ '<|' + message.role + '|>' + message.content }}{% endfor %}
        {% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}
    """

    code = "TK302"
    name = "generation-prompt-ignored"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        names = {n.name for n in self.facts.find(nodes.Name)}
        # A template that never looks at the conversation is not a chat template (embedding
        # prompts, fragments); whether it wants a generation prompt is not ours to say.
        if "add_generation_prompt" in names or "messages" not in names:
            return
        if assistant_turns_have_no_header(self.facts):
            return
        self.report(
            node,
            "add_generation_prompt is never read: the template cannot emit the assistant header on "
            "request, so the model either continues the user's turn or always gets a header",
        )


def implied(expr: nodes.Node, truth: bool = True) -> Iterator[tuple[nodes.Node, bool]]:
    """The operands whose truth value a test having ``truth`` forces, each with that value.

    Unlike ``walk_polarity`` this is exact: ``a and b`` being true forces both, ``a or b``
    being false forces both false, and nothing is forced by a true disjunction or a false
    conjunction (the operand itself is then given, undecided parts and all).
    """
    if isinstance(expr, nodes.Not):
        yield from implied(expr.node, not truth)
    elif isinstance(expr, nodes.And) and truth or isinstance(expr, nodes.Or) and not truth:
        yield from implied(expr.left, truth)
        yield from implied(expr.right, truth)
    else:
        yield expr, truth


def is_generation_flag(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "add_generation_prompt"


def flag_forced_true(atom: nodes.Node, truth: bool) -> nodes.Name | None:
    """The add_generation_prompt read in a test that, having ``truth``, means the flag is true:
    ``add_generation_prompt``, ``add_generation_prompt == true``, ``add_generation_prompt is true``."""
    if not truth:
        return None
    if is_generation_flag(atom):
        return atom  # type: ignore[return-value]
    if isinstance(atom, nodes.Compare) and len(atom.ops) == 1 and atom.ops[0].op == "eq":
        sides = (atom.expr, atom.ops[0].expr)
    elif isinstance(atom, nodes.Test) and atom.name in ("true", "sameas"):
        sides = (atom.node, atom.args[0] if atom.args else nodes.Const(True))
    else:
        return None
    flags = [side for side in sides if is_generation_flag(side)]
    others = [side for side in sides if not is_generation_flag(side)]
    if flags and others and isinstance(others[0], nodes.Const) and others[0].value is True:
        return flags[0]  # type: ignore[return-value]
    return None


def _printed(node: nodes.Node) -> Iterator[nodes.Node]:
    """What one part of ``{{ ... }}`` may print, with inline ``if`` branches taken apart (so
    each carries its own condition); blank text prints nothing worth a finding."""
    if isinstance(node, nodes.CondExpr):
        yield from _printed(node.expr1)
        if node.expr2 is not None:
            yield from _printed(node.expr2)
    elif isinstance(node, nodes.TemplateData):
        if node.data.strip():
            yield node
    elif isinstance(node, nodes.Const):
        if isinstance(node.value, str) and node.value.strip():
            yield node
    else:
        yield node


class Emission(NamedTuple):
    """Printed text that only appears when add_generation_prompt is true, with what it takes."""

    node: nodes.Node
    flag: nodes.Name  # the add_generation_prompt read that guards it
    loop: nodes.For | None  # the outermost loop over the conversation around it
    accepted: list[tuple[bool, set[str]]]  # (positive, roles) the last message's role must meet


def _reads_last_role(facts: TemplateFacts, compare: nodes.Compare, loop: nodes.For | None, at_last: bool) -> bool:
    """Whether a role test reads the last message: ``messages[-1].role``, or the role of the
    innermost loop's item where ``loop.last`` is also required."""
    for side in (compare.expr, compare.ops[0].expr):
        if not facts.has(side, ROLE):
            continue
        base = lookup_base(side)
        if isinstance(base, nodes.Getitem) and constant_index(base) == -1:
            return True
        if at_last and loop is not None and isinstance(base, nodes.Name) and isinstance(loop.target, nodes.Name):
            return base.name == loop.target.name
    return False


def generation_prompt_emissions(facts: TemplateFacts) -> list[Emission]:
    """Every printed piece guarded by a true add_generation_prompt that some input reaches."""
    found: list[Emission] = []
    # Only output under a test of the flag, or holding one inline, can depend on it.
    guarded: dict[int, nodes.Output] = {}
    collected: set[int] = set()  # ifs whose outputs are in: each elif test names the same if
    for read in facts.find(nodes.Name):
        if not is_generation_flag(read):
            continue
        for parent, field, _ in facts.ancestors(read):
            if isinstance(parent, nodes.Output):
                guarded[id(parent)] = parent
            elif isinstance(parent, nodes.If) and field in ("test", "elif_"):
                # An ``elif`` test also decides the later branches of the ``if`` it belongs to.
                if id(parent) not in collected:
                    collected.add(id(parent))
                    guarded.update((id(output), output) for output in parent.find_all(nodes.Output))
                continue
            if isinstance(parent, nodes.Stmt):
                break
    for output in sorted(guarded.values(), key=lambda output: facts.order[id(output)]):
        for part in output.nodes:
            for node in _printed(part):
                forced = [
                    (atom, truth)
                    for condition in facts.conditions(node, asserts=False)
                    for atom, truth in implied(condition.test, condition.truth)
                ]
                flag = next((read for atom, truth in forced if (read := flag_forced_true(atom, truth))), None)
                if flag is None or not facts.may_run(node):
                    continue
                loops = facts.loops(node)
                # ``loop`` always names the innermost loop.
                at_last = any(truth and is_loop_attr(atom, "last") for atom, truth in forced)
                accepted = [
                    (positive, roles)
                    for atom, truth in forced
                    if isinstance(atom, nodes.Compare) and len(atom.ops) == 1
                    and _reads_last_role(facts, atom, loops[0] if loops else None, at_last)
                    for positive, roles, _ in role_literals(facts, atom, truth)
                ]  # fmt: skip
                conversation_loops = facts.message_loops(node)
                found.append(Emission(node, flag, conversation_loops[-1] if conversation_loops else None, accepted))
    return found


def accepts(emission: Emission, role: str) -> bool:
    return all((role in roles) == positive for positive, roles in emission.accepted)


def describe_accepted(emission: Emission) -> str:
    """The role tests of one emission as words, with their polarity."""
    parts = []
    for positive, roles in emission.accepted:
        listed = quoted_roles(roles)
        if positive:
            parts.append(listed if len(roles) == 1 else f"one of {listed}")
        else:
            parts.append(f"not {listed}" if len(roles) == 1 else f"none of {listed}")
    return " and ".join(parts)


def skips_a_system_only_conversation(facts: TemplateFacts, loop: nodes.For) -> bool:
    """Whether a loop may walk none of a conversation that is one system message: it has an
    ``if`` filter, or walks a slice or filter of the conversation (``messages[1:]`` once the
    system message is taken out), directly or through a variable."""
    return loop.test is not None or facts.drops_messages(loop.iter)


def loop_subject(facts: TemplateFacts, loop: nodes.For) -> str:
    """How a message names a loop's list: ``loop_messages``, or ``messages (set to
    messages[1:])`` when the name is re-assigned to part of the conversation."""
    text = source(loop.iter)
    if isinstance(loop.iter, nodes.Name):
        values = facts.reaching(loop.iter) or ()
        for value in values:
            if isinstance(value, nodes.Node) and facts.drops_messages(value):
                return f"{text} (set to {shorten(source(value), 60)})"
    return text


# Roles a conversation that asks for an answer may end with, most telling first.
ANSWERED_ROLES = ("tool", "user", "developer", "system")


def flag_escapes(facts: TemplateFacts) -> bool:
    """Whether add_generation_prompt reaches output other than through tests the analysis
    reads: copied to a variable that is true when it is (``{% set gp = add_generation_prompt %}``)
    or passed to a macro, which may print the header anywhere."""
    for read in facts.find(nodes.Name):
        if not is_generation_flag(read):
            continue
        child: nodes.Node = read
        for parent, field, _ in facts.ancestors(read):
            if isinstance(parent, nodes.Call) and child is not parent.node:
                return True
            if isinstance(parent, nodes.Stmt):
                if isinstance(parent, nodes.Assign) and field == "node":
                    # ``x and not add_generation_prompt`` is false whenever the flag is true.
                    if not any(is_generation_flag(atom) and not truth for atom, truth in implied(child, True)):
                        return True
                elif not isinstance(parent, (nodes.If, nodes.Output)):
                    return True
                break
            child = parent
    return False


def generation_prompt_gap(facts: TemplateFacts) -> tuple[nodes.Name, str, dict] | None:
    """(where, what, example) when the generation prompt is emitted only inside the message
    loop and some conversation gets none: ``example`` is that conversation's shape, ``{"ends
    with": role}`` or ``{"system only": True}``."""
    if flag_escapes(facts):
        return None
    emissions = generation_prompt_emissions(facts)
    if not emissions or any(e.loop is None or facts.macro_of(e.node) is not None for e in emissions):
        return None
    first = emissions[0]
    mentioned = {
        role for compare in facts.find(nodes.Compare) for _, roles, _ in role_literals(facts, compare) for role in roles
    }
    candidates = sorted(ANSWERED_ROLES, key=lambda role: (role not in mentioned, ANSWERED_ROLES.index(role)))
    missing = next((role for role in candidates if not any(accepts(e, role) for e in emissions)), None)
    descriptions = list(dict.fromkeys(describe_accepted(e) for e in emissions if e.accepted))
    when = (
        f", when the last message is {' or '.join(descriptions)}"
        if descriptions and all(e.accepted for e in emissions) else ""
    )
    if missing is not None:
        return first.flag, (
            f"the generation prompt is emitted only inside the message loop{when}: a conversation ending "
            f"with a {missing!r} message gets no generation prompt"
        ), {"ends with": missing}
    loops = [e.loop for e in emissions if e.loop is not None]
    if all(skips_a_system_only_conversation(facts, loop) for loop in loops):
        return first.flag, (
            f"the generation prompt is emitted only inside the loop over {loop_subject(facts, loops[0])}"
            f"{when}: a conversation the loop skips entirely (a system message only) gets no generation prompt"
        ), {"system only": True}
    return None


@register
class GenerationPromptInLoop(FactsRule):
    """The generation prompt is emitted only inside the message loop.

    Why: a header written under ``{% if loop.last and add_generation_prompt %}`` inside the loop
    appears only when the last message reaches that point: inside one role's branch (or under a
    test of the last message's role), a conversation ending with a tool result gets no
    generation prompt; in a loop over ``messages[1:]`` (system handled first), a system-only
    conversation gets none. The rule looks at the output that prints the header (the one under
    a true ``add_generation_prompt``), not at other reads of the flag. Emit it after the loop.
    (A loop over all of ``messages`` with no other condition is not reported: it only differs
    for an empty conversation.)

    Bad:
        {% for message in messages %}
        {% if message.role == 'user' %}{{ '<|user|>' + message.content }}
        {% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}
        {% else %}{{ '<|' + message.role + '|>' + message.content }}{% endif %}
        {% endfor %}

    Good:
        {% for message in messages %}{{ '<|' + message.role + '|>' + message.content }}{% endfor %}
        {% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}
    """

    code = "TK303"
    name = "generation-prompt-in-loop"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        gap = generation_prompt_gap(self.facts)
        if gap is not None:
            flag, message, _ = gap
            self.report_nth(flag, message, r"\badd_generation_prompt\b", is_generation_flag)


@register
class UnguardedMessageIndex(FactsRule):
    """messages[0] / messages[-1] is read without checking that the list is non-empty.

    Why: ``messages[0]`` on an empty list is undefined, and reading ``.role`` from it raises
    ``UndefinedError``. transformers refuses empty conversations, but engines render templates
    with ``messages=[]`` to extract stop strings, probe capabilities or reset history, and
    ``messages[1:]`` aliases are empty for a system-only conversation. Guard the read with
    ``messages|length > 0 and ...`` or ``if messages``.

    Bad:
        {% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}

    Good:
        {% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% endif %}
    """

    code = "TK304"
    name = "unguarded-message-index"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        reported: set[str] = set()
        for item in facts.find(nodes.Getitem):
            if not self._indexes_messages(item):
                continue
            link = facts.link(item)
            if not reads_from(link):
                continue
            text = source(item)
            # The first unguarded read is the one that raises; later reads of the same item
            # are the same fix.
            if text in reported or self._guarded(facts, item, text):
                continue
            reported.add(text)
            index = constant_index(item) or 0
            needed = index + 1 if index >= 0 else -index
            check = "is non-empty" if needed == 1 else f"has at least {needed} messages"
            self.report_nth(
                item,
                f"{text} is read without a check that {source(item.node)} {check}: rendering a "
                "shorter conversation (engines render [] to probe templates and extract stop "
                "strings) raises UndefinedError",
                re.escape(source(item.node)) + r"\s*\[",
                self._indexes_messages,
            )

    def _indexes_messages(self, node: nodes.Node) -> bool:
        return (
            isinstance(node, nodes.Getitem)
            and constant_index(node) is not None
            and self.facts.has(node.node, MESSAGES)
        )

    @staticmethod
    def _guarded(facts: TemplateFacts, item: nodes.Getitem, text: str) -> bool:
        def is_list(candidate: nodes.Node) -> bool:
            return facts.has(candidate, MESSAGES)

        def same_read(candidate: nodes.Node) -> bool:
            return isinstance(candidate, nodes.Getitem) and source(candidate) == text

        for condition in facts.conditions(item):
            if checks_nonempty(condition.test, is_list):
                return True
            # An enclosing test that already read the same item would have raised first (and
            # is where this rule reports); reporting every later read adds nothing.
            if mentions(condition.test, same_read):
                return True
        # Inside a loop over the list the list is not empty.
        return any(source(loop.iter) == source(item.node) for loop in facts.loops(item))


def raise_message(call: nodes.Call) -> str:
    if call.args and isinstance(call.args[0], nodes.Const) and isinstance(call.args[0].value, str):
        return repr(shorten(call.args[0].value, 100))
    return shorten(source(call.args[0]), 100) if call.args else "''"


def guard_description(facts: TemplateFacts, call: nodes.Call) -> str:
    """Where and when a raise fires, for people: its conditions and enclosing loops."""
    parts = [condition.describe() for condition in facts.conditions(call, asserts=False)]
    text = " and ".join(parts) if parts else "always"
    context = [f"for {source(loop.target)} in {source(loop.iter)}" for loop in reversed(facts.loops(call))]
    macro = facts.macro_of(call)
    if macro is not None:
        context.insert(0, f"in macro {macro.name}")
    return shorten(text, 160) + (f" ({', '.join(context)})" if context else "")


@register
class RaiseInventory(FactsRule):
    """The template raises an exception under a condition (inventory of its input constraints).

    Why: every ``raise_exception`` is an input the template refuses, and engines, agents and
    trainers find out only when a request fails. This info-level rule lists each one with the
    condition that triggers it, so a model card or a server can document what the template
    accepts. See TK306 for the constraints that reject ordinary conversations. A raise no input
    reaches is left out: one under a test of a variable that Jinja's scoping leaves unchanged
    (a ``set`` inside a loop body is gone after the loop, so ``filtered = []`` extended in a loop
    is still empty when a later loop over it would raise).

    Bad:
        {% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}

    Good:
        {% for message in messages %}{{ message.role + ': ' + message.content }}{% endfor %}
    """

    code = "TK305"
    name = "raise-inventory"
    severity = "info"

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        for call in facts.live_raises():
            self.report_raise(call, f"raises {raise_message(call)} when: {guard_description(facts, call)}")


def is_position_test(node: nodes.Node) -> bool:
    """``loop.first``, ``loop.index0 != 0`` and the like: a test of where a message sits."""
    if is_loop_attr(node, "first", "index0", "index", "revindex", "revindex0", "last"):
        return True
    return isinstance(node, nodes.Name) and node.name.endswith("index")


def _tool_id_length(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Filter)
        and node.name == "length"
        and node.node is not None
        and key_of(node.node) in ("id", "tool_call_id")
    )


def _parity(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Mod) and isinstance(node.right, nodes.Const) and node.right.value == 2


ALTERNATION = (
    "when roles do not strictly alternate user/assistant: conversations with two user messages "
    "in a row, which agents and clients send, are rejected"
)
SYSTEM_NOT_FIRST = "on a system message that is not first: clients and agents add system messages mid-conversation"
SYSTEM_REJECTED = "on any system message: OpenAI-style clients send one; merge it into the first user turn instead"
# Tool-call ids as clients and servers write them: (how a message names one, its length).
TOOL_ID_EXAMPLES = (
    ("'call_1'", 6),
    ("OpenAI's 'call_…' ids", 29),
    ("UUIDs", 36),
)
_MIRRORED_OPS = {"eq": "eq", "ne": "ne", "lt": "gt", "gt": "lt", "lteq": "gteq", "gteq": "lteq"}


def _id_length_truth(facts: TemplateFacts, expr: nodes.Node, length: int) -> bool | None:
    """The truth of a test for a tool call whose id is a string of ``length`` characters: the
    id's own tests (``is defined``, ``is string``, ``|length < 9``) are decided, anything else is
    unknown, and ``and``/``or``/``not`` combine them as Jinja does (None when undecided)."""
    if isinstance(expr, nodes.Not):
        inner = _id_length_truth(facts, expr.node, length)
        return None if inner is None else not inner
    if isinstance(expr, (nodes.And, nodes.Or)):
        stop = isinstance(expr, nodes.Or)
        left, right = _id_length_truth(facts, expr.left, length), _id_length_truth(facts, expr.right, length)
        if stop in (left, right):
            return stop
        return None if left is None or right is None else not stop
    if isinstance(expr, nodes.Test) and key_of(expr.node) in ("id", "tool_call_id"):
        return {"defined": True, "undefined": False, "string": True, "none": False}.get(expr.name)
    if isinstance(expr, nodes.Compare) and len(expr.ops) == 1:
        left, op, right = expr.expr, expr.ops[0].op, expr.ops[0].expr
        if _tool_id_length(right) and not _tool_id_length(left):
            left, right, op = right, left, _MIRRORED_OPS.get(op, "")
        bound = facts.value(right)
        if _tool_id_length(left) and op in _PYTHON_COMPARE and type(bound) is int:
            return _PYTHON_COMPARE[op](length, bound)
    return None


def tool_id_length_reason(facts: TemplateFacts, conditions: list[Condition]) -> str | None:
    """What a raise guarded by a tool-call id length test rejects, derived from that test: the
    example ids it refuses, or only the test itself when it cannot be decided; None when it
    accepts every id clients and servers write."""
    checks = [c for c in conditions if mentions(c.test, _tool_id_length)]
    if not checks:
        return None
    when = " and ".join(c.describe() for c in checks)
    verdicts = [
        (name, length, [_id_length_truth(facts, c.test, length) for c in checks])
        for name, length in TOOL_ID_EXAMPLES
    ]
    if any(None in found for _, _, found in verdicts):
        return f"on the length of a tool-call id: it raises when {shorten(when, 120)}"
    rejected = [
        f"{name} ({length} characters)"
        for name, length, found in verdicts
        if all(value is c.truth for value, c in zip(found, checks))
    ]
    if not rejected:
        return None
    listed = rejected[0] if len(rejected) == 1 else ", ".join(rejected[:-1]) + " and " + rejected[-1]
    return (
        f"on the length of a tool-call id, when {shorten(when, 120)}: ids such as {listed}, which clients "
        "and servers send, are rejected"
    )


@register
class OverStrictAssertion(FactsRule):
    """An assertion rejects conversations that ordinary clients send.

    Why: role alternation checked by index parity (``loop.index0 % 2``) rejects consecutive
    user turns, tool results and mid-conversation system messages; "system must be first" and
    "system role not supported" reject what every OpenAI-style client sends; tool-call id
    length checks reject ids clients and servers write (``length != 9`` rejects UUIDs and
    OpenAI's ``call_`` ids, ``length < 9`` short ones such as ``call_1``). Requests fail with a
    template error (HTTP 500 in most servers), and engines that probe templates with synthetic
    conversations (llama.cpp, minja) misdetect capabilities. Prefer rendering the input
    (merge a system message into the first user turn, accept any id). Raises no input reaches
    are not reported (see TK305).

    Bad:
        {% for message in messages %}
        {% if (message.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Roles must alternate') }}{% endif %}
        {{ message.role + ': ' + message.content }}
        {% endfor %}

    Good:
        {% for message in messages %}
        {% if message.role not in ['system', 'user', 'assistant', 'tool'] %}{{ raise_exception('Unknown role') }}{% endif %}
        {{ message.role + ': ' + message.content }}
        {% endfor %}
    """

    code = "TK306"
    name = "over-strict-assertion"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        for call in facts.live_raises():
            reason = self.classify(facts, call)
            if reason:
                self.report_raise(call, f"over-strict: raises {raise_message(call)} {reason}")

    @staticmethod
    def classify(facts: TemplateFacts, call: nodes.Call) -> str | None:
        conditions = facts.conditions(call, asserts=False)
        if not conditions:
            return None
        tests = [condition.test for condition in conditions]
        roles = [item for c in conditions for item in role_literals(facts, c.test, c.truth)]
        stated = call.args[0].value if call.args and isinstance(call.args[0], nodes.Const) else ""
        # ``(role == 'user') != (loop.index0 % 2 == 0)`` compares a role test with a parity
        # test, so the role comparison sits inside another comparison: look anywhere.
        if any(mentions(test, lambda n: is_role_compare(facts, n)) for test in tests) and (
            any(mentions(test, _parity) for test in tests) or "alternate" in str(stated).lower()
        ):
            return ALTERNATION
        if any(mentions(test, _tool_id_length) for test in tests):
            return tool_id_length_reason(facts, conditions)
        # Every condition must be about roles or positions: "system content must be text"
        # style checks also mention the system role but do not reject it.
        if not all(
            is_role_compare(facts, atom) or mentions(atom, is_position_test)
            for test in tests
            for atom in boolean_atoms(test)
        ):
            return None
        loops = facts.message_loops(call)
        after_first = any(mentions(test, is_position_test) for test in tests) or (
            loops and facts.drops_messages(loops[0].iter)
        )
        if any(positive and found == {"system"} for positive, found, _ in roles):
            return SYSTEM_NOT_FIRST if after_first else SYSTEM_REJECTED
        # "Only user and assistant roles are supported": a list of allowed roles without system.
        allowed = allowed_roles(facts, call)
        if loops and allowed and "system" not in allowed and {"user", "assistant"} & allowed:
            return SYSTEM_NOT_FIRST if after_first else SYSTEM_REJECTED
        return None


def _system_presence(facts: TemplateFacts, test: nodes.Node) -> bool | None:
    """Whether ``test`` being true means the conversation has a system message (True), has
    none (False), or says nothing about it (None)."""
    verdicts = [positive for positive, roles, _ in role_literals(facts, test) if roles == {"system"}]
    for node, holds in walk_polarity(test):
        name = node.node if isinstance(node, nodes.Test) else node
        if not (isinstance(name, nodes.Name) and "system" in name.name.lower()):
            continue
        if isinstance(node, nodes.Test):
            if node.name == "defined":
                verdicts.append(holds)
            elif node.name in ("none", "undefined"):
                verdicts.append(not holds)
        else:
            verdicts.append(holds)  # a bare name in a boolean position: ``{% if system_message %}``
    if verdicts and all(verdicts):
        return True
    if verdicts and not any(verdicts):
        return False
    return None


def _prose_outputs(statements: list[nodes.Node]) -> Iterator[tuple[nodes.Node, str]]:
    """Prose literals a branch prints or assigns, outside loops (a loop renders the conversation)
    and outside ``raise_exception`` messages."""
    stack = list(statements)
    while stack:
        stmt = stack.pop(0)
        if isinstance(stmt, (nodes.For, nodes.Macro)):
            continue
        if isinstance(stmt, nodes.Output):
            for part in stmt.nodes:
                if isinstance(part, nodes.Call) and is_raise(part):
                    continue
                for text in literal_strings(part):
                    if prose(text):
                        yield part, text
                        break
        elif isinstance(stmt, nodes.Assign):
            for text in literal_strings(stmt.node):
                if prose(text):
                    yield stmt, text
                    break
        elif isinstance(stmt, nodes.If):
            stack[0:0] = [*stmt.body, *[s for branch in stmt.elif_ for s in branch.body], *stmt.else_]


@register
class DefaultSystemPrompt(FactsRule):
    """The template inserts its own system prompt when the conversation has none.

    Why: literal text in the no-system branch ("You are a helpful assistant...") is added to
    every conversation that does not bring a system message. It leaks into SFT and preference
    data built with the template, differs between model versions, and surprises callers who sent
    no system prompt on purpose. This is info: some models were trained with it, in which case
    document it on the model card.

    Bad:
        {% if messages[0]['role'] == 'system' %}{{ '<|system|>' + messages[0]['content'] }}
        {% else %}{{ '<|system|>You are a helpful assistant.' }}{% endif %}

    Good:
        {% if messages[0]['role'] == 'system' %}{{ '<|system|>' + messages[0]['content'] }}{% endif %}
    """

    code = "TK307"
    name = "default-system-prompt"
    severity = "info"

    @staticmethod
    def _prose_of(facts: TemplateFacts, expr: nodes.Node, seen: frozenset[str] = frozenset()) -> str | None:
        """The prose literal an expression holds, following variables it was assigned from."""
        for text in literal_strings(expr):
            if prose(text):
                return text
        for name in [expr, *expr.find_all(nodes.Name)]:
            if isinstance(name, nodes.Name) and name.name not in seen:
                for (_, bound), value, how in facts.bindings:
                    if bound == name.name and how == "value" and DEFAULT_TEXT in facts.kinds(value):
                        found = DefaultSystemPrompt._prose_of(facts, value, seen | {name.name})
                        if found:
                            return found
        return None

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        found: dict[int, tuple[nodes.Node, str]] = {}
        for branch_if in facts.find(nodes.If):
            # Per-message dispatch (``if message.role == 'system'`` in the loop) is not the
            # conversation-level "is there a system prompt" question.
            if not self.is_statement_if(branch_if) or facts.message_loops(branch_if):
                continue
            presence = _system_presence(facts, branch_if.test)
            if presence is True:
                absent = [s for branch in branch_if.elif_ for s in branch.body] + branch_if.else_
            elif presence is False:
                absent = branch_if.body
            else:
                continue
            for where, text in _prose_outputs(absent):
                found.setdefault(id(where), (where, text))
        # ``{% set system_message = 'You are ...' %}`` (or ``= default_system_message``, a
        # variable holding such a literal) that the conversation's own system content replaces
        # elsewhere: the literal is a default.
        for assign in facts.find(nodes.Assign):
            if not isinstance(assign.target, nodes.Name) or "system" not in assign.target.name.lower():
                continue
            if facts.message_loops(assign) or CONTENT not in facts.env.get((None, assign.target.name), set()):
                continue
            if DEFAULT_TEXT in facts.kinds(assign.node):
                text = self._prose_of(facts, assign.node)
                if text:
                    found.setdefault(id(assign), (assign, text))
        if not found:
            return
        # One finding per template: "inserts its own system prompt" is a property of the
        # template; Granite-style templates assemble the default from a dozen literals.
        where, text = min(found.values(), key=lambda pair: facts.order[id(pair[0])])
        others = len(found) - 1
        # Quote the prose, not the markup around it: drop special tokens and a leading role
        # header (``<|im_start|>system\n``, ``<role>SYSTEM</role>``) before the words.
        words = re.sub(r"(?i)^\s*(?:system|user|assistant)\b", "", _TOKENISH.sub(" ", text)).split()
        message = (
            "when the conversation has no system message the template inserts its own: "
            f"{shorten(' '.join(words), 60)!r}"
            + (f" (and {others} more default text{'s' if others > 1 else ''})" if others else "")
        )
        if isinstance(where, nodes.Assign):
            self.report_nth(where, message, r"\{%[-+]?\s*(set)\b", lambda n: isinstance(n, nodes.Assign))
        else:
            # Point at the first words of the prompt, which appear verbatim in the source; a
            # literal that starts with a role header line has them on a later line.
            # (One word is distinctive enough when long, and a second word may sit behind an
            # escaped ``\n`` in the source.)
            pattern = r"\s+".join(re.escape(w) for w in words[: 1 if words and len(words[0]) >= 8 else 2]) or "$^"
            for line in range(where.lineno, min(where.lineno + text.count("\n") + 1, len(self.target.lines)) + 1):
                match = re.search(pattern, self.target.lines[line - 1])
                if match:
                    self.report(where, message, line=line, column=match.start() + 1)
                    return
            self.report(where, message)


CONTENT_MUTATING_FILTERS = {"trim", "replace", "striptags", "truncate", "wordwrap"}
CONTENT_MUTATING_METHODS = {"strip", "lstrip", "rstrip", "replace", "split", "rsplit", "partition", "rpartition"}


def content_kept_verbatim(facts: TemplateFacts, node: nodes.Node) -> bool:
    """Whether a rewrite of content leaves the rendered content alone: its value only feeds a
    test (``{% if content|trim %}``, ``x|trim|length > 0``), or it extracts the reasoning part
    (``{% set reasoning = content.split('</think>')[0] %}``; the line that rewrites the content
    itself is reported on its own)."""
    for parent, field, _ in facts.ancestors(node):
        if isinstance(parent, (nodes.Compare, nodes.Test, nodes.Not, nodes.Operand)):
            return True
        if isinstance(parent, (nodes.If, nodes.CondExpr, nodes.For)) and field == "test":
            return True
        if isinstance(parent, nodes.Filter) and parent.name in ("length", "count", "wordcount"):
            return True
        if isinstance(parent, nodes.Assign):
            target = parent.target
            name = target.name if isinstance(target, nodes.Name) else getattr(target, "attr", "")
            return any(word in name.lower() for word in ("reason", "think", "thought"))
        if isinstance(parent, (nodes.Stmt, nodes.Template)):
            return False
    return False


@register
class ContentMutated(FactsRule):
    """Message content is rewritten (trim, strip, replace, split) before it is rendered.

    Why: trimming or splitting content changes the user's data — code indentation, trailing
    newlines, text around a ``</think>`` tag — so the rendered prompt is not what was sent. It
    breaks ``continue_final_message`` (the final text no longer appears verbatim), renderer
    parity with servers that do not trim, and prefix caching across turns. Info: some models
    were trained on trimmed content; render content as given where you can.

    Bad:
        {% for message in messages %}{{ message.role + '\\n' + message.content|trim + '\\n' }}{% endfor %}

    Good:
        {% for message in messages %}{{ message.role + '\\n' + message.content + '\\n' }}{% endfor %}
    """

    code = "TK308"
    name = "content-mutated"
    severity = "info"

    def _mutation(self, node: nodes.Node) -> str | None:
        """``|trim`` / ``.strip()`` if ``node`` rewrites message content, else None."""
        if isinstance(node, nodes.Filter) and node.name in CONTENT_MUTATING_FILTERS:
            if self.facts.has(node.node, CONTENT):
                return f"|{node.name}"
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            if node.node.attr in CONTENT_MUTATING_METHODS and self.facts.has(node.node.node, CONTENT):
                return f".{node.node.attr}()"
        return None

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        found = []
        for candidate in facts.find((nodes.Filter, nodes.Call)):
            how = self._mutation(candidate)
            if how is None or content_kept_verbatim(facts, candidate):
                continue
            subject = candidate.node if isinstance(candidate, nodes.Filter) else candidate.node.node
            operator = r"\s*\|\s*" if how.startswith("|") else r"\s*\.\s*"
            found.append((candidate, how, f"{expr_pattern(subject)}{operator}({re.escape(how.strip('|.()'))})\\b"))
        for candidate, how, pattern in found:
            subject = candidate.node if isinstance(candidate, nodes.Filter) else candidate.node.node
            self.report_nth(
                candidate,
                f"message content is changed with {how} before it is rendered: "
                f"{source(subject)} no longer appears verbatim",
                pattern,
                lambda other, pattern=pattern: any(other is c and p == pattern for c, _, p in found),
            )
