"""The JSON Schema parts of tool definitions, followed through the template (TK201, TK210, TK218)."""

from __future__ import annotations

from jinja2 import nodes

from ...target import LintTarget
from ._shared import _fact_key, _key


# ---------------------------------------------------------------------------------------------
# JSON Schema parts of tool definitions, followed through the template (TK201, TK210, TK218)

# What an expression may hold: a `properties` mapping (parameter name -> property schema), one
# property schema, or the value of a schema keyword that is a list or a mapping.
_PROPERTIES, _SCHEMA, _KEYWORD_VALUE = "properties", "schema", "keyword-value"
# Schema keywords whose value is a list or a mapping in ordinary tool definitions.
_CONTAINER_KEYWORDS = frozenset({"enum", "required", "items", "properties", "anyOf", "oneOf", "allOf", "examples",
                                 "prefixItems"})
# Attribute names that are dict methods in Jinja2 (the method wins over a key of that name there).
_MAPPING_METHODS = frozenset({"items", "keys", "values", "get"})
def _schema_flow(target: LintTarget) -> "_SchemaFlow":
    """The target's ``_SchemaFlow``, computed once per target (several rules ask)."""
    # Every schema part is reached through a literal `properties` key (``_SchemaFlow._member``):
    # a template without the word has none, and most templates are spared the walk.
    return target.shared("portability:schema-flow",
                         lambda target: _SchemaFlow(target.tree if "properties" in target.text else None))


def _items_of(node: nodes.Node) -> nodes.Node | None:
    """``x`` of ``x.items()``, ``x|items`` or ``x|dictsort`` (pairs of a mapping), else None."""
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr == "items" \
            and not node.args and not node.kwargs:
        return node.node.node
    if isinstance(node, nodes.Filter) and node.name in ("items", "dictsort") and node.node is not None:
        return node.node
    return None


class _SchemaFlow:
    """Which expressions hold parts of a tool's JSON Schema, followed through ``set``, loop
    targets and macro arguments (a recursive schema printer passes property schemas to itself).

    ``kinds`` maps ``id(expression)`` to ``_PROPERTIES``, ``_SCHEMA`` or ``_KEYWORD_VALUE``;
    ``schema_items_calls`` are the ``.items()`` calls made on a property schema. Names are tracked
    by scope (a loop's or macro's body sees its own bindings), conditions are ignored.
    """

    def __init__(self, tree: nodes.Template | None) -> None:
        self.kinds: dict[int, str] = {}
        self.schema_items_calls: list[nodes.Call] = []
        self._macros: dict[str, nodes.Macro] = {}
        self._schema_params: dict[str, set[str]] = {}
        if tree is None:
            return
        self._macros = {macro.name: macro for macro in tree.find_all(nodes.Macro)}
        try:
            # A macro learns that a parameter holds a schema from a call that may come after its
            # body (or inside it): walk again until no parameter is added.
            for _ in range(4):
                before = {name: set(params) for name, params in self._schema_params.items()}
                self.kinds, self.schema_items_calls = {}, []
                scope: dict[str, str] = {}
                for child in tree.body:
                    self._walk(child, scope)
                if before == self._schema_params:
                    break
        except RecursionError:  # a hostile nesting depth: no finding is better than a crash
            self.kinds, self.schema_items_calls = {}, []

    def kind(self, node: nodes.Node) -> str | None:
        return self.kinds.get(id(node))

    def _walk(self, node: nodes.Node, scope: dict[str, str]) -> None:
        if isinstance(node, nodes.For):
            self._walk(node.iter, scope)
            inner = dict(scope)
            for name in _bound_names(node.target):
                inner.pop(name, None)
            mapping = _items_of(node.iter)
            if mapping is not None and isinstance(node.target, nodes.Tuple) and len(node.target.items) == 2 \
                    and isinstance(node.target.items[1], nodes.Name):
                value_kind = {_PROPERTIES: _SCHEMA, _SCHEMA: _KEYWORD_VALUE}.get(self._kind(mapping, scope))
                if value_kind is not None and not _restricted_keys(node.test, node.target.items[0]):
                    inner[node.target.items[1].name] = value_kind
            for child in node.body:
                self._walk(child, inner)
            if node.test is not None:
                self._walk(node.test, inner)
            for child in node.else_:
                self._walk(child, scope)
            return
        if isinstance(node, nodes.Macro):
            inner = {name: kind for name, kind in scope.items() if name not in {arg.name for arg in node.args}}
            for name in self._schema_params.get(node.name, ()):
                inner[name] = _SCHEMA
            for default in node.defaults:
                self._walk(default, scope)
            for child in node.body:
                self._walk(child, inner)
            return
        if isinstance(node, nodes.Assign):
            self._walk(node.node, scope)
            if isinstance(node.target, nodes.Name):
                found = self._kind(node.node, scope)
                if found is None:
                    scope.pop(node.target.name, None)
                else:
                    scope[node.target.name] = found
            return
        if isinstance(node, nodes.AssignBlock) and isinstance(node.target, nodes.Name):
            scope.pop(node.target.name, None)
        if isinstance(node, nodes.Call):
            self._note_macro_call(node, scope)
            callee = node.node
            if isinstance(callee, nodes.Getattr) and callee.attr == "items" and not node.args and not node.kwargs \
                    and self._kind(callee.node, scope) == _SCHEMA:
                self.schema_items_calls.append(node)
        if isinstance(node, nodes.Expr):
            found = self._kind(node, scope)
            if found is not None:
                self.kinds[id(node)] = found
        for child in node.iter_child_nodes():
            self._walk(child, scope)

    def _note_macro_call(self, node: nodes.Call, scope: dict[str, str]) -> None:
        if not (isinstance(node.node, nodes.Name) and node.node.name in self._macros):
            return
        macro = self._macros[node.node.name]
        names = [arg.name for arg in macro.args]
        passed = list(zip(names, node.args)) + [(keyword.key, keyword.value) for keyword in node.kwargs]
        for name, value in passed:
            if name in names and self._kind(value, scope) == _SCHEMA:
                self._schema_params.setdefault(macro.name, set()).add(name)

    def _kind(self, node: nodes.Node, scope: dict[str, str]) -> str | None:
        if isinstance(node, nodes.Name):
            return scope.get(node.name)
        if isinstance(node, nodes.CondExpr):
            return self._kind(node.expr1, scope) or (self._kind(node.expr2, scope) if node.expr2 else None)
        if isinstance(node, nodes.Filter) and node.name in ("default", "d") and node.node is not None:
            return self._kind(node.node, scope)
        if isinstance(node, nodes.Getattr):
            if node.attr in _MAPPING_METHODS:
                return None  # Jinja2 gives the method here, not a key
            return self._member(self._kind(node.node, scope), node.attr)
        if isinstance(node, nodes.Getitem):
            if isinstance(node.arg, nodes.Slice):
                return None
            key = node.arg.value if isinstance(node.arg, nodes.Const) else None
            return self._member(self._kind(node.node, scope), key)
        if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr == "get" \
                and node.args and not node.kwargs:
            key = node.args[0].value if isinstance(node.args[0], nodes.Const) else None
            return self._member(self._kind(node.node.node, scope), key)
        return None

    @staticmethod
    def _member(owner: str | None, key) -> str | None:
        """What ``owner[key]`` holds (``key`` None: a key only known at render time)."""
        if key == "properties":
            return _PROPERTIES  # `parameters.properties`, `schema.get('properties', {})`
        if owner == _PROPERTIES:
            return _SCHEMA
        if owner == _SCHEMA:
            if key == "items":
                return _SCHEMA  # an array's item schema
            if key is None or key in _CONTAINER_KEYWORDS:
                return _KEYWORD_VALUE
        return None


def _bound_names(target: nodes.Node) -> list[str]:
    return [name.name for name in target.find_all(nodes.Name)] if not isinstance(target, nodes.Name) else [target.name]


def _restricted_keys(test: nodes.Expr | None, key: nodes.Node) -> bool:
    """Whether ``test`` keeps only some named keys (``if k in [...]``, ``if k == 'x'``): then the
    loop's values are those keywords' values, not whatever the schema holds."""
    if test is None or not isinstance(key, nodes.Name):
        return False
    for compare in [test] if isinstance(test, nodes.Compare) else list(test.find_all(nodes.Compare)):
        if _key(compare.expr) == key.name and len(compare.ops) == 1 and compare.ops[0].op in ("in", "eq"):
            return True
    return False


def _spelling(node: nodes.Node) -> str:
    """How an expression reads in a message (``schema[name]`` for a subscript by a variable)."""
    key = _key(node)
    if key is not None:
        return key
    if isinstance(node, nodes.Getitem):
        return f"{_spelling(node.node)}[{_spelling(node.arg)}]"
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.args:
        return f"{_spelling(node.node.node)}.{node.node.attr}({_spelling(node.args[0])})"
    if isinstance(node, nodes.Const):
        return repr(node.value)
    return "..."


def _needle(node: nodes.Node) -> str | None:
    """A code token of ``node`` to place a finding on (its last name)."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem):
        return _needle(node.node)
    if isinstance(node, nodes.Call):
        return _needle(node.node)
    return None


# Filters that read a value as a list of parts; with `for` over it or an index into it, a sign
# that the template expects message content to be a list (a type test alone may be a guard).
_PART_FILTERS = frozenset({"selectattr", "rejectattr", "select", "reject", "map", "first", "last"})


def _reads_content_parts(tree: nodes.Template | None) -> bool:
    if tree is None:
        return False
    for node in tree.find_all((nodes.For, nodes.Filter, nodes.Getitem)):
        subject = node.iter if isinstance(node, nodes.For) else node.node
        key = _fact_key(subject) if subject is not None else None
        if key is None or key.rsplit(".", 1)[-1] != "content":
            continue
        if isinstance(node, nodes.For):
            return True
        if isinstance(node, nodes.Filter) and node.name in _PART_FILTERS:
            return True
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, int):
            return True
    return False


# The roles whose turns clients fill with content parts; a condition on any other role is a
# tool result or a role the template defines for itself.
_PART_ROLES = frozenset({"user", "assistant", "system", "developer"})


def _single_sets(tree: nodes.Template) -> dict[str, nodes.Expr]:
    """Names set exactly once in the template (``{% set x = ... %}``) -> their value."""
    values: dict[str, list[nodes.Expr]] = {}
    for assign in tree.find_all((nodes.Assign, nodes.AssignBlock)):
        if isinstance(assign.target, nodes.Name):
            values.setdefault(assign.target.name, []).append(getattr(assign, "node", None))
    return {name: found[0] for name, found in values.items() if len(found) == 1 and found[0] is not None}


def _role_side(node: nodes.Node) -> bool:
    """Whether ``node`` is a message's role (``m.role``, ``m['role']|lower``, ``m.role.lower()``)."""
    if isinstance(node, nodes.Filter) and node.name in ("lower", "trim") and node.node is not None:
        node = node.node
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr) and node.node.attr in ("lower", "strip"):
        node = node.node.node
    key = _key(node)
    return key is not None and key.rsplit(".", 1)[-1] == "role"


def _names_tool_turn(test: nodes.Expr) -> bool:
    """Whether ``test`` holding means a turn of a role outside ``_PART_ROLES`` (``m.role ==
    'tool'``, ``m.role in ['tool', 'ipython']``) or a turn with tool calls (``m.tool_calls``, ``m.tool_calls is defined``, ``m.get('tool_calls')``)."""
    if isinstance(test, nodes.Test) and test.name in ("defined", "sequence", "iterable"):
        test = test.node
    key = _fact_key(test)
    if key is not None:
        return key.rsplit(".", 1)[-1] == "tool_calls"
    if isinstance(test, nodes.Compare) and len(test.ops) == 1 and test.ops[0].op in ("eq", "in"):
        sides = [test.expr, test.ops[0].expr]
        if not any(_role_side(side) for side in sides):
            return False
        for side in sides:
            values = [side] if isinstance(side, nodes.Const) else list(side.items) \
                if isinstance(side, (nodes.List, nodes.Tuple)) else []
            roles = [value.value for value in values if isinstance(value, nodes.Const)]
            if roles and all(isinstance(role, str) and role not in _PART_ROLES for role in roles):
                return True
    return False


# Filters that @huggingface/jinja applies to lists (and some to strings) but not to a mapping.
_MAPPING_FAILING_FILTERS = frozenset({"list", "first", "last", "join", "sort", "reverse", "unique", "map",
                                      "selectattr", "rejectattr"})
