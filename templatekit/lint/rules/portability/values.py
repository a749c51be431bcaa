"""TK210-TK212: values, scoping and tests: lists and dicts printed without tojson, variables a loop
reads before setting them, and iterable tests on what may be None."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from jinja2 import nodes

from ...registry import AstRule, register
from ...target import LintTarget
from ...walk import find_all
from ._shared import (
    _FactWalkingRule, _TYPE_TESTS, _and_chain, _at, _code, _finding, _implies, _is, _key, _target_names,
    _through_logic,
)
from .message_fields import _CLIENT_ROLES, _constant_strings
from .schema import (
    _names_tool_turn, _needle, _reads_content_parts, _restricted_keys, _schema_flow, _single_sets, _spelling,
)


# ---------------------------------------------------------------------------------------------
# TK210-TK212: values, scoping, tests


# Filters that keep the items of a list (so a loop over `tools|selectattr(...)` yields tools).
_ORDER_FILTERS = frozenset({"selectattr", "rejectattr", "list", "reverse", "sort"})
# Inputs transformers passes as lists or dicts (and the fields inside them that are dicts).
_OBJECT_NAMES = frozenset({"tools", "documents", "tool_calls", "functions"})
_OBJECT_FIELDS = frozenset({"tools", "tool_calls", "arguments", "parameters", "properties", "function", "functions"})


@register
class ObjectPrintedWithoutTojson(_FactWalkingRule):
    """A list or dict (tools, tool calls, arguments, documents) is printed without ``|tojson``.

    Why: printing a container renders Python's repr in transformers (``{'a': True, 'b': None}``),
    JSON in @huggingface/jinja and minijinja-js (``{"a": true, "b": null}``, keys sorted in
    minijinja-js), and ``null`` for None in minja; concatenating a dict with ``~`` gives
    ``[object Map]`` in @huggingface/jinja, and ``|string`` of a dict is a render error there.
    The model sees a different prompt in every runtime. ``|tojson`` is the one spelling all
    engines agree on (up to whitespace). The same holds for a tool parameter's schema values
    printed by key (``schema[key]`` over every key prints ``enum`` lists), and for a message's
    ``content`` printed as it is in a template that reads content as a list of parts elsewhere
    (a user, assistant or system turn sent as parts prints the list).

    Bad:
        <tools>{{ tools }}</tools>

    Good:
        <tools>{{ tools|tojson }}</tools>
    """

    code = "TK210"
    name = "object-printed-without-tojson"
    engines = ("minijinja-js", "hf-jinja", "minja")
    severity = "warning"

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.object_loops: list[str] = []
        self.message_loops: list[str] = []

    def _is_object(self, node: nodes.Node) -> str | None:
        key = _key(node)
        if key is not None:
            last = key.rsplit(".", 1)[-1]
            is_object = key in _OBJECT_NAMES or key in self.object_loops or ("." in key and last in _OBJECT_FIELDS)
            if is_object and not self.type_tested(key):
                return key
            if "." in key and last == "content" and self._message_content(key) and self._reads_content_parts() \
                    and not self.type_tested(key) and not self._in_tool_turn():
                return key
        # A conditional's branches have their own conditions: `x if x is string else x|tojson`.
        if not isinstance(node, nodes.CondExpr) and _schema_flow(self.target).kind(node) is not None \
                and not self._type_tested_node(node) and not self._keyword_restricted(node):
            return _spelling(node)
        return None

    def _message_content(self, key: str) -> bool:
        """Whether ``key`` is a chat message's content (not a content part's own ``content``)."""
        owner = key.rsplit(".", 1)[0]
        return owner.split(".")[0].split("[")[0] in ("messages", "loop_messages") or owner in self.message_loops

    def _in_tool_turn(self) -> bool:
        """Whether the conditions put this in a tool-call turn or a turn of a role other than
        user, assistant and system (a tool result, a template's own role): clients send that
        content as a string even where user turns carry parts. A condition that is a variable
        set once is read through its value (``set has_tools = m.role == 'tool'``)."""
        sets = self.__dict__.get("_single_sets")
        if sets is None or sets[0] is not self.target:
            sets = self._single_sets = (self.target, _single_sets(self.target.tree))
        for test, positive in self.facts:
            if not positive:
                continue
            parts = _and_chain(test)
            parts += [part for found in parts if isinstance(found, nodes.Name) and found.name in sets[1]
                      for part in _and_chain(sets[1][found.name])]
            if any(_names_tool_turn(part) for part in parts):
                return True
        return False

    def _flag_subscript(self, node: nodes.Getitem, message: str) -> None:
        """Flag ``name[...]`` at its name token (the name alone may appear earlier on the line)."""
        line, name = node.lineno, node.node.name
        tokens = [token for token in _code(self.target) if token.line == line]
        starts = [first.column for first, second in zip(tokens, tokens[1:])
                  if first.value == name and second.value == "["]
        index = self._seen.get((line, name + "["), 0)
        self._seen[(line, name + "[")] = index + 1
        column = starts[min(index, len(starts) - 1)] if starts else self.target.node_position(node, name)[1]
        self.found.append(_finding(self, line, column, message, self.engines))

    def _reads_content_parts(self) -> bool:
        """Whether the template treats some message content as a list of parts (iterates it, tests
        its type, indexes or filters it): then content may be a list wherever it is printed."""
        cached = self.__dict__.get("_content_parts")
        if cached is None or cached[0] is not self.target:
            cached = self._content_parts = (self.target, _reads_content_parts(self.target.tree))
        return cached[1]

    def _type_tested_node(self, node: nodes.Node) -> bool:
        """``type_tested`` for an expression without a key (``schema[name]``)."""
        spelled = repr(node)
        for test, _positive in self.facts:
            for found in [test] if isinstance(test, nodes.Test) else list(test.find_all(nodes.Test)):
                if found.name in _TYPE_TESTS and repr(found.node) == spelled:
                    return True
        return False

    def _keyword_restricted(self, node: nodes.Node) -> bool:
        """Whether ``schema[name]`` is printed only for named keywords (``if name in [...]``)."""
        if not isinstance(node, nodes.Getitem) or isinstance(node.arg, nodes.Const):
            return False
        return any(positive and _restricted_keys(test, node.arg) for test, positive in self.facts)

    def visit_Call(self, node: nodes.Call) -> None:
        # An error message is no prompt: how raise_exception's text spells a dict does not matter.
        if isinstance(node.node, nodes.Name) and node.node.name == "raise_exception":
            return
        self.generic_visit(node)

    def visit_For(self, node: nodes.For) -> None:
        self.visit(node.iter)
        if node.test is not None:
            # `for k in d if k in [...]`: the body runs only where the filter holds.
            self.facts = self.facts + [(node.test, True)]
            try:
                self._visit_loop(node)
            finally:
                self.facts = self.facts[:-1]
        else:
            self._visit_loop(node)

    def _visit_loop(self, node: nodes.For) -> None:
        iterable = node.iter
        # `tools|selectattr(...)|list` still yields the tools themselves.
        while isinstance(iterable, nodes.Filter) and iterable.name in _ORDER_FILTERS:
            iterable = iterable.node
        names = []
        key = _key(iterable)
        if key is not None and (key in _OBJECT_NAMES or key.rsplit(".", 1)[-1] in ("tools", "tool_calls", "documents")):
            # `for tool in tools`: each item is a dict; tuple targets (`for k, v in ...`) are not.
            names = [node.target.name] if isinstance(node.target, nodes.Name) else []
        # `for message in messages` (or `loop_messages`, `messages[1:]`): items are chat messages.
        source = node.iter
        while isinstance(source, nodes.Filter) and source.node is not None or (
                isinstance(source, nodes.Getitem) and isinstance(source.arg, nodes.Slice)):
            source = source.node
        messages = [node.target.name] if isinstance(node.target, nodes.Name) and isinstance(source, nodes.Name) \
            and "messages" in source.name else []
        saved, saved_messages = self.object_loops, self.message_loops
        self.object_loops = saved + names
        self.message_loops = saved_messages + messages
        try:
            for child in node.body:
                self.visit(child)
        finally:
            self.object_loops, self.message_loops = saved, saved_messages
        for child in node.else_:
            self.visit(child)
        if node.test is not None:
            self.visit(node.test)

    def _flag_objects(self, children: list, describe) -> None:
        """Flag each child that is a list/dict turned into text (message from ``describe(key)``)."""
        for child in children:
            key = self._is_object(child)
            if key is not None:
                if key.rsplit(".", 1)[-1] == "content":
                    message = (f"`{key}` is printed as it is, but the template reads content as a list of parts "
                               f"elsewhere: a turn whose content is a list prints Python repr in transformers and "
                               f"JSON in hf-jinja and minijinja-js; print the parts' text")
                else:
                    message = describe(key)
                if isinstance(child, nodes.Getitem) and isinstance(child.node, nodes.Name):
                    self._flag_subscript(child, message)
                else:
                    self.flag(child, message, self.engines, needle=_needle(child))
            self.visit(child)

    def visit_Output(self, node: nodes.Output) -> None:
        self._flag_objects(node.nodes, lambda key: (
            f"`{{{{ {key} }}}}` prints a list/dict: transformers prints Python repr, hf-jinja and minijinja-js "
            f"print JSON, minja prints None as null; use `|tojson`"))

    def visit_Concat(self, node: nodes.Concat) -> None:
        self._flag_objects(node.nodes, lambda key: (
            f"`~ {key}` concatenates a list/dict: Python repr in transformers, JSON in minijinja-js and "
            f"hf-jinja (`[object Map]` for a dict); use `|tojson`"))

    def visit_Filter(self, node: nodes.Filter) -> None:
        key = self._is_object(node.node) if node.name == "string" and node.node is not None else None
        if key is not None:
            self.flag(
                node,
                f"`{key}|string` gives Python repr in transformers; hf-jinja raises on a dict and prints JSON for a "
                f"list, minijinja-js prints JSON; use `|tojson`",
                ("minijinja-js", "hf-jinja"),
                needle="string",
            )
        self.generic_visit(node)


@register
class LoopSetCarriedOver(AstRule):
    """A variable set inside a loop is read before it is set in the same iteration.

    Why: in Jinja2 every iteration of a ``for`` loop starts from the variables outside the loop:
    a ``{% set %}`` in one iteration is gone in the next. @huggingface/jinja, minijinja-js and
    minja keep the previous iteration's value, so a conditionally set variable (a system message
    remembered, a counter incremented) carries over there and the prompts differ (GLM-5.2 leaked
    ``reasoning_content`` from one turn into the next this way). A read that raises in Jinja2
    when the name is unset (``x.name``, ``x + '...'``) is not reported for a name bound nowhere
    outside the loop: there, the iterations that differ are ones transformers cannot render. It is
    info when an ``if``/``elif`` chain on the message role sets the name for every client role
    the template names (LlamaGuard's user and assistant): only a message of another role keeps
    the previous value. A set no later iteration sees is not reported: one made only in the last
    iteration (under ``loop.last``) or followed by ``break``; nor is the read inside a default
    that recomputes what the previous iteration left (``{% set x = x if x is defined else false
    %}``, ``x|default('')``, the same constant in every set of ``x``). To carry state across
    iterations use ``namespace()``; to keep it per iteration, set it unconditionally first.

    Bad:
        {% for m in messages %}{% if m.role == 'system' %}{% set sys = m.content %}{% endif %}{{ sys }}{% endfor %}

    Good:
        {% set ns = namespace(sys='') %}{% for m in messages %}
        {% if m.role == 'system' %}{% set ns.sys = m.content %}{% endif %}{{ ns.sys }}
        {% endfor %}
    """

    code = "TK211"
    name = "loop-set-carried-over"
    engines = ("minijinja-js", "hf-jinja", "minja")
    severity = "warning"

    def visit_For(self, node: nodes.For) -> None:
        # Only a set a later iteration can see makes the engines differ: not one in the last
        # iteration, nor one the iteration leaves by `break` or a raise.
        carrying = list(_carrying_sets(node.body))
        assigned = _assigned_names(node.body) - _target_names(node.target)
        assigned &= {name for statement in carrying for name in _target_names(statement.target)}
        if assigned:
            reported: set[str] = set()
            outside = _names_bound_outside(self.target, node)
            same_either_way = _idempotent_default_reads(node, carrying)
            for read in _reads_before_set(node.body, assigned, set()):
                if read.name in reported or id(read) in same_either_way:
                    continue
                if read.name not in outside and id(read) in _failing_when_undefined(node):
                    # Unset, the read raises in transformers (`x.name`, `x + '...'`): the iterations
                    # where engines differ are ones transformers cannot render at all.
                    continue
                reported.add(read.name)
                line = read.lineno
                column = _load_column(self.target, line, read.name) or self.target.column_of(line, read.name)
                finding = self.diagnostic(
                    line,
                    column,
                    f"`{read.name}` is set inside this loop but read here before it is set in every iteration: "
                    f"transformers starts each iteration without it, hf-jinja, minijinja-js and minja keep the "
                    f"previous iteration's value; use namespace()",
                )
                covered = _set_for_every_named_role(self.target, node, read.name)
                if covered:
                    # Unset only for a message of a role the template never names: not its input.
                    finding = dataclasses.replace(finding, severity="info", message=(
                        f"{finding.message}; reached only by a message whose role is none of those the "
                        f"template handles ({', '.join(sorted(covered))})"))
                self.found.append(finding)
        self.generic_visit(node)


def _carrying_sets(body: list[nodes.Node], last: bool = False, ends: bool = False) -> Iterator[nodes.Node]:
    """The ``set`` statements of a loop body (at the loop's own scope, as ``_assigned_names``)
    after which another iteration can run: not under a condition that holds only in the last
    iteration (``loop.last``), and not followed on every path by ``break`` or a raise.

    ``last``: the enclosing conditions hold only in the last iteration; ``ends``: what follows
    the enclosing statement ends the iteration for good."""
    for index, statement in enumerate(body):
        ended = ends or any(_ends_loop(later) for later in body[index + 1:])
        if isinstance(statement, (nodes.Assign, nodes.AssignBlock)):
            if not (last or ended):
                yield statement
        elif isinstance(statement, nodes.If):
            facts: list[tuple[nodes.Expr, bool]] = []
            for test, branch in [(statement.test, statement.body)] + [(elif_.test, elif_.body)
                                                                      for elif_ in statement.elif_]:
                yield from _carrying_sets(branch, last or _only_last(facts + [(test, True)]), ended)
                facts.append((test, False))
            yield from _carrying_sets(statement.else_, last or _only_last(facts), ended)
        elif isinstance(statement, (nodes.FilterBlock, nodes.Scope, nodes.ScopedEvalContextModifier)):
            yield from _carrying_sets(statement.body, last, ended)


def _ends_loop(statement: nodes.Node) -> bool:
    """Whether a statement leaves the loop for good on every path (``break``, a raise, or an
    ``if`` whose every branch does)."""
    if isinstance(statement, nodes.Break) or _raises(statement):
        return True
    if isinstance(statement, nodes.If) and statement.else_:
        branches = [statement.body, statement.else_] + [elif_.body for elif_ in statement.elif_]
        return all(any(_ends_loop(inner) for inner in branch) for branch in branches)
    return False


def _only_last(facts: list[tuple[nodes.Expr, bool]]) -> bool:
    return any(_last_iteration(test, positive) for test, positive in facts)


@_through_logic
def _last_iteration(test: nodes.Expr, positive: bool) -> bool:
    """Whether ``test`` having the truth value ``positive`` means this is the loop's last
    iteration (``loop.last``, ``loop.revindex == 1``, ``loop.index == loop.length``)."""
    if _key(test) == "loop.last":
        return positive
    if isinstance(test, nodes.Compare) and len(test.ops) == 1 and test.ops[0].op in ("eq", "ne") \
            and (test.ops[0].op == "eq") == positive:
        sides = {_loop_value(test.expr), _loop_value(test.ops[0].expr)}
        return sides in ({"loop.index", "loop.length"}, {"loop.revindex", 1}, {"loop.revindex0", 0})
    return False


def _loop_value(node: nodes.Expr) -> object:
    if isinstance(node, nodes.Const) and type(node.value) is int:
        return node.value
    return _key(node)


def _idempotent_default_reads(loop: nodes.For, carrying: list[nodes.Node]) -> set[int]:
    """Ids of the reads inside ``{% set x = x if x is defined else D %}`` (or ``x|default(D)``)
    for a name whose every set a later iteration sees is that default, with one ``D`` that is the
    same in every iteration: the value carried over is the one the default recomputes, so those
    reads give the same result in every engine."""
    varying = _target_names(loop.target) | {"loop"}
    for found in loop.find_all((nodes.Assign, nodes.AssignBlock, nodes.For)):
        varying |= _target_names(found.target)
    defaults: dict[str, set[str]] = {}
    for statement in carrying:
        names = _target_names(statement.target)
        default = _self_default(statement) if isinstance(statement, nodes.Assign) else None
        spelled = repr(default) if default is not None and _invariant(default, varying) else None
        for name in names:
            defaults.setdefault(name, set()).add(spelled or "")
    safe = {name for name, spellings in defaults.items() if len(spellings) == 1 and "" not in spellings}
    reads: set[int] = set()
    for statement in loop.find_all(nodes.Assign):
        names = _target_names(statement.target)
        default = _self_default(statement)
        if names <= safe and default is not None and defaults[statement.target.name] == {repr(default)}:
            reads |= {id(name) for name in statement.node.find_all(nodes.Name) if name.name in names}
    return reads


def _self_default(statement: nodes.Assign) -> nodes.Expr | None:
    """``D`` when the statement is ``set x = x if x is defined else D``, ``x if x is not
    undefined ...``, ``D if x is not defined else x`` or ``x|default(D)``; None otherwise."""
    if not isinstance(statement.target, nodes.Name):
        return None
    name, value = statement.target.name, statement.node
    if isinstance(value, nodes.Filter) and value.name in ("default", "d") and _key(value.node) == name \
            and len(value.args) == 1:
        return value.args[0]
    if isinstance(value, nodes.CondExpr) and value.expr2 is not None:
        defined = _definedness(value.test, name)
        if defined is True and _key(value.expr1) == name:
            return value.expr2
        if defined is False and _key(value.expr2) == name:
            return value.expr1
    return None


def _definedness(test: nodes.Expr, name: str) -> bool | None:
    """True for ``name is defined``, False for ``name is not defined`` (``is undefined``, ``not
    ... is defined``), None for any other test."""
    if isinstance(test, nodes.Not):
        inner = _definedness(test.node, name)
        return None if inner is None else not inner
    if isinstance(test, nodes.Test) and _key(test.node) == name and not test.args and test.name in ("defined",
                                                                                                     "undefined"):
        return test.name == "defined"
    return None


def _invariant(node: nodes.Expr, varying: set[str]) -> bool:
    """Whether an expression has one value in every iteration: it reads no name the loop sets or
    iterates over and calls nothing (``namespace()`` gives a new object each time)."""
    parts = [node, *node.find_all(nodes.Node)]
    return not any(isinstance(part, nodes.Call) or isinstance(part, nodes.Name) and part.name in varying
                   for part in parts)


def _role_values(test: nodes.Expr) -> set[str] | None:
    """The roles ``m.role == 'user'`` (or ``in [...]``, or an ``or`` of such) holds for; None for
    any other test."""
    if isinstance(test, nodes.Or):
        left, right = _role_values(test.left), _role_values(test.right)
        return left | right if left is not None and right is not None else None
    if isinstance(test, nodes.Compare) and len(test.ops) == 1 and test.ops[0].op in ("eq", "in"):
        key = _key(test.expr)
        if key is not None and (key == "role" or key.endswith(".role")):
            return _constant_strings(test.ops[0].expr)
    return None


def _set_for_every_named_role(target: LintTarget, loop: nodes.For, name: str) -> set[str]:
    """The roles of an ``if``/``elif`` chain on the message role in ``loop`` whose every branch
    sets ``name``, when those are all the client roles the template names anywhere (LlamaGuard's
    ``user`` -> 'User', ``assistant`` -> 'Agent'); empty otherwise."""
    named = set()
    for compare in find_all(target, target.tree, nodes.Compare):
        named |= (_role_values(compare) or set()) & _CLIENT_ROLES
    for statement in loop.body:
        if not isinstance(statement, nodes.If) or statement.else_:
            continue
        branches = [(statement.test, statement.body)] + [(branch.test, branch.body) for branch in statement.elif_]
        roles: set[str] = set()
        for test, body in branches:
            values = _role_values(test)
            if values is None or name not in _assigned_names(body):
                break
            roles |= values
        else:
            if named and named <= roles:
                return roles
    return set()


def _names_bound_outside(target: LintTarget, loop: nodes.For) -> set[str]:
    """Names the template binds anywhere but inside ``loop`` (a value the loop's reads could see
    before its own set: an earlier ``set``, an enclosing loop's variable, a macro argument)."""
    inside = {id(found) for found in find_all(target, loop, nodes.Node)}
    bound: set[str] = set()
    for found in find_all(target, target.tree, (nodes.Assign, nodes.AssignBlock, nodes.For, nodes.Macro)):
        if id(found) in inside:
            continue
        if isinstance(found, nodes.Macro):
            bound |= {argument.name for argument in found.args}
        else:
            bound |= _target_names(found.target)
    return bound


def _failing_when_undefined(loop: nodes.For) -> set[int]:
    """Ids of the names in ``loop`` whose read raises in Jinja2 when the name is undefined: the
    base of an attribute or item access, an arithmetic operand, a called name."""
    found: set[int] = set()
    for node in loop.find_all((nodes.Getattr, nodes.Getitem, nodes.BinExpr, nodes.Call)):
        if isinstance(node, (nodes.Getattr, nodes.Getitem, nodes.Call)):
            operands = [node.node]
        elif isinstance(node, (nodes.And, nodes.Or)):
            continue  # truth tests take an undefined value
        else:
            operands = [node.left, node.right]
        found |= {id(operand) for operand in operands if isinstance(operand, nodes.Name)}
    return found


def _load_column(target: LintTarget, line: int, name: str) -> int | None:
    """Column of the first use of ``name`` on ``line`` that is not an assignment or loop target."""
    tokens = _code(target)
    for index, token in enumerate(tokens):
        if token.line != line or token.type != "name" or token.value != name:
            continue
        if _is(_at(tokens, index + 1), "=", ",") or _is(_at(tokens, index - 1), "set", "for", ".", ","):
            continue
        return token.column
    return None


def _assigned_names(body: list[nodes.Node]) -> set[str]:
    """Names set by ``{% set %}`` in a loop body at that loop's own scope (not in inner loops,
    macros or call blocks, which scope their own assignments)."""
    found: set[str] = set()
    for statement in body:
        if isinstance(statement, (nodes.Assign, nodes.AssignBlock)):
            found |= _target_names(statement.target)
        elif isinstance(statement, nodes.If):
            found |= _assigned_names(statement.body) | _assigned_names(statement.else_)
            for branch in statement.elif_:
                found |= _assigned_names(branch.body)
        elif isinstance(statement, (nodes.FilterBlock, nodes.Scope, nodes.ScopedEvalContextModifier)):
            found |= _assigned_names(statement.body)
    return found


def _reads_before_set(body: list[nodes.Node], watched: set[str], done: set[str]) -> Iterator[nodes.Name]:
    """Reads of watched names not preceded, on every path through this iteration, by their set.

    ``done`` (updated in place) holds the names certainly set so far in the iteration.
    """
    for statement in body:
        if isinstance(statement, nodes.Assign):
            yield from _expression_reads(statement.node, watched, done)
            done |= _target_names(statement.target) & watched
        elif isinstance(statement, nodes.AssignBlock):
            yield from _reads_before_set(statement.body, watched, set(done))
            done |= _target_names(statement.target) & watched
        elif isinstance(statement, nodes.If):
            yield from _expression_reads(statement.test, watched, done)
            branches = [statement.body] + [branch.body for branch in statement.elif_] + [statement.else_]
            for branch in statement.elif_:
                yield from _expression_reads(branch.test, watched, done)
            outcomes = []
            for branch in branches:
                state = set(done)
                yield from _reads_before_set(branch, watched, state)
                outcomes.append(state)
            done |= set.intersection(*outcomes)
        elif isinstance(statement, nodes.For):
            yield from _expression_reads(statement.iter, watched, done)
            shadowed = _target_names(statement.target)
            inner = watched - shadowed
            yield from _reads_before_set(statement.body, inner, set(done))
            yield from _reads_before_set(statement.else_, inner, set(done))
        elif isinstance(statement, (nodes.Macro, nodes.CallBlock)):
            # A macro body runs with its own scope wherever it is called; skip its locals.
            if isinstance(statement, nodes.CallBlock):
                yield from _expression_reads(statement.call, watched, done)
        elif isinstance(statement, (nodes.FilterBlock, nodes.Scope, nodes.ScopedEvalContextModifier)):
            yield from _reads_before_set(statement.body, watched, done)
        else:
            yield from _expression_reads(statement, watched, done)
            if _raises(statement):
                done |= watched  # the render stops here, so no later read happens on this path


def _raises(statement: nodes.Node) -> bool:
    """Whether a statement is ``{{ raise_exception(...) }}``, which ends the render."""
    return isinstance(statement, nodes.Output) and any(
        isinstance(child, nodes.Call) and isinstance(child.node, nodes.Name) and child.node.name == "raise_exception"
        for child in statement.nodes
    )


def _expression_reads(node: nodes.Node, watched: set[str], done: set[str]) -> Iterator[nodes.Name]:
    names = [node] if isinstance(node, nodes.Name) else node.find_all(nodes.Name)
    for name in names:
        if name.ctx == "load" and name.name in watched and name.name not in done:
            yield name


@register
class IterableTestOnNone(_FactWalkingRule):
    """``tools is iterable`` (or ``documents``) is tested while the value may be None.

    Why: minijinja (and minijinja-js) treat ``none`` as iterable, Jinja2 does not, and
    transformers passes ``tools=None`` and ``documents=None`` when the caller has none. A guard
    like ``tools is iterable and tools|length > 0`` is false in transformers but true in
    minijinja, which then fails on ``none|length`` (Qwen3-Coder, Nemotron-3-Nano). Test
    ``tools is not none`` (or just ``tools``) first. Message fields are not reported:
    transformers drops None-valued message keys, and an undefined value is iterable everywhere.
    Nor is a test after the template itself replaced None (``{% if tools is none %}{% set tools
    = [] %}{% endif %}``, ``{% set tools = tools or [] %}``), within the reach of that ``set``:
    a ``set`` in an ``if`` lasts after it, one in a loop only to the end of its iteration.
    Replacing only an undefined value (``if tools is not defined``, ``tools|default([])``) is
    not enough: transformers passes None, which is defined.

    Bad:
        {% if tools is iterable and tools|length > 0 %}{{ tools|tojson }}{% endif %}

    Good:
        {% if tools is not none and tools is iterable and tools|length > 0 %}{{ tools|tojson }}{% endif %}
    """

    code = "TK212"
    name = "iterable-test-on-none"
    engines = ("minijinja", "minijinja-js")
    severity = "warning"

    def __init__(self, options=None) -> None:
        super().__init__(options)
        # The inputs a `set` earlier in the current scope made sure are not None.
        self.assured: frozenset[str] = frozenset()

    def check(self, target: LintTarget):
        self.assured = frozenset()
        return super().check(target)

    def visit_Test(self, node: nodes.Test) -> None:
        key = _key(node.node)
        if node.name == "iterable" and key in _NONE_INPUTS and key not in self.assured \
                and not self.known(key, "not-none"):
            self.flag(
                node,
                f"`{key} is iterable` is true for none in minijinja and minijinja-js but false in transformers "
                f"(which passes {key}=None when there are none); test `{key} is not none` first",
                self.engines,
                needle="iterable",
            )
        self.generic_visit(node)

    def visit_Assign(self, node: nodes.Assign) -> None:
        self.visit(node.node)
        names = _target_names(node.target) & _NONE_INPUTS
        if isinstance(node.target, nodes.Name) and self._never_none(node.node, self.facts):
            self.assured |= names
        else:
            self.assured -= names

    def visit_AssignBlock(self, node: nodes.AssignBlock) -> None:
        self.generic_visit(node)
        self.assured |= _target_names(node.target) & _NONE_INPUTS  # a block set is a string

    def visit_If(self, node: nodes.If) -> None:
        # A `set` in a branch stays after the `if` (Jinja2's `if` has no scope of its own), so an
        # input is assured after it when every branch assures it: by a `set`, by the branch's
        # own conditions (the implicit `else` of `if tools is none`), or by raising.
        before = self.assured
        self.visit(node.test)
        outcomes = []
        previous: list[tuple[nodes.Expr, bool]] = []
        for test, body in [(node.test, node.body)] + [(branch.test, branch.body) for branch in node.elif_]:
            if previous:
                self._under(previous, test)
            outcomes.append(self._branch_outcome(previous + [(test, True)], body, before))
            previous = previous + [(test, False)]
        outcomes.append(self._branch_outcome(previous, node.else_, before))
        self.assured = frozenset.intersection(*outcomes)

    def _branch_outcome(self, facts: list[tuple[nodes.Expr, bool]], body: list[nodes.Node],
                        before: frozenset[str]) -> frozenset[str]:
        self.assured = before
        self._under(facts, body)
        if any(_raises(statement) for statement in body):
            return _NONE_INPUTS  # the render ends in this branch: nothing after it runs
        untouched = _NONE_INPUTS - _assigned_names(body)
        return self.assured | {key for key in untouched if any(_implies(test, positive, key, "not-none")
                                                                for test, positive in facts)}

    def visit_For(self, node: nodes.For) -> None:
        # A `set` in a loop body lasts until the end of its iteration; the next one starts from
        # the values before the loop, and none of it reaches the code after the loop.
        before = self.assured
        self.visit(node.iter)
        self.assured = before - _target_names(node.target)
        for child in node.body:
            self.visit(child)
        self.assured = before
        for child in node.else_:
            self.visit(child)
        if node.test is not None:
            self.visit(node.test)
        self.assured = before

    def visit_Macro(self, node: nodes.Macro) -> None:
        # A macro runs wherever it is called, with the caller's value or its own argument.
        before, self.assured = self.assured, frozenset()
        try:
            self.generic_visit(node)
        finally:
            self.assured = before

    def visit_CallBlock(self, node: nodes.CallBlock) -> None:
        self.visit(node.call)
        self.visit_Macro(node)  # the body is the `caller()` macro

    def visit_Scope(self, node: nodes.Scope) -> None:
        before = self.assured
        self.generic_visit(node)
        self.assured = before

    def _never_none(self, node: nodes.Expr, facts: list[tuple[nodes.Expr, bool]]) -> bool:
        """Whether ``node``'s value cannot be None where the conditions ``facts`` hold (a literal,
        ``tools or []``, ``tools if tools is not none else []``, ``tools|default([], true)``)."""
        if isinstance(node, nodes.Const):
            return node.value is not None
        if isinstance(node, (nodes.List, nodes.Tuple, nodes.Dict, nodes.Concat)):
            return True
        key = _key(node)
        if key is not None:
            return key in self.assured or any(_implies(test, positive, key, "not-none") for test, positive in facts)
        if isinstance(node, nodes.Or):
            # A true left side is not None; a false one gives the right side.
            return self._never_none(node.right, facts + [(node.left, False)])
        if isinstance(node, nodes.And):
            return self._never_none(node.left, facts) and self._never_none(node.right, facts + [(node.left, True)])
        if isinstance(node, nodes.CondExpr):
            return node.expr2 is not None and self._never_none(node.expr1, facts + [(node.test, True)]) \
                and self._never_none(node.expr2, facts + [(node.test, False)])
        if isinstance(node, nodes.Filter) and node.name in ("list", "string", "tojson"):
            return True  # a list or a string (Jinja2's `none|list` raises)
        if isinstance(node, nodes.Filter) and node.name in ("default", "d") and node.node is not None:
            # Without `boolean=true`, default replaces only an undefined value: None stays None.
            replacement = node.args[0] if node.args else nodes.Const("")
            flags = node.args[1:2] + [keyword.value for keyword in node.kwargs if keyword.key == "boolean"]
            replaces_none = any(isinstance(flag, nodes.Const) and bool(flag.value) for flag in flags)
            return self._never_none(replacement, facts) and (replaces_none or self._never_none(node.node, facts))
        return False


# The inputs transformers passes as None rather than leaving undefined.
_NONE_INPUTS = frozenset({"tools", "documents"})
