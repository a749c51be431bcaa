"""TK4xx: tools, documents and reasoning — the optional inputs whose shape varies by caller.

transformers passes ``tools`` and ``documents`` as given (``None`` when absent, ``[]`` when a
client sends an empty list), tool-call ``arguments`` as a mapping or as the OpenAI JSON string,
message content as a string or as a list of typed parts, and reasoning under whichever key the
client used (transformers 5 aliases ``reasoning_content``/``thinking``/``reasoning``; other
renderers do not). Every rule here finds a place where a template assumes one shape.

The rules reuse the alias analysis of ``structure.py`` (``TemplateFacts``), so
``{% set tool_call = tool_call.function %}`` or a macro handed ``message.content`` is followed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from jinja2 import nodes

from ..model import Edit, Fix
from ..registry import register
from .structure import (
    ARGUMENTS,
    CONTENT,
    DOCUMENT,
    DOCUMENTS,
    MESSAGE,
    SAME_LIST_FILTERS,
    TOOL_CALLS,
    TOOLS,
    FactsRule,
    TemplateFacts,
    checks_nonempty,
    constant_index,
    expr_pattern,
    implied,
    is_raise,
    key_of,
    lookup_base,
    reads_from,
    source,
    walk_polarity,
)

# Tests that tell a string from a mapping or a list: a template that applies one of these to a
# value has a branch for its other shape.
TYPE_TESTS = {"string", "mapping", "sequence", "iterable"}


def type_tested(facts: TemplateFacts, kind: str) -> bool:
    """Whether the template anywhere tests the type of a value of ``kind``."""
    return any(
        test.name in TYPE_TESTS and facts.has(test.node, kind) for test in facts.find(nodes.Test)
    )


def operand_pattern(node: nodes.Node, operator: str) -> str:
    """Find ``node`` where it is an operand of ``operator`` (on either side)."""
    expr = expr_pattern(node)
    return rf"({expr})(?=\s*{operator})|{operator}\s*\(?\s*({expr})"


# ---------------------------------------------------------------------------------------------


JSON_STRING = "arguments sent as a JSON string (the OpenAI format)"


def _argument_uses(facts: TemplateFacts) -> list[tuple[nodes.Node, str, str]]:
    """(node, pattern, what goes wrong) for each use of tool-call arguments that works for only
    one of the two shapes callers send."""
    uses: list[tuple[nodes.Node, str, str]] = []
    for node in facts.nodes:
        if isinstance(node, nodes.Filter) and node.node is not None and facts.has(node.node, ARGUMENTS):
            if node.name == "tojson":
                uses.append((node, r"\|\s*tojson", f"|tojson on {JSON_STRING} double-encodes it"))
            elif node.name in ("items", "dictsort"):
                uses.append((node, rf"\|\s*{node.name}", f"|{node.name} on {JSON_STRING} raises"))
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            if node.node.attr in ("items", "keys", "values") and facts.has(node.node.node, ARGUMENTS):
                uses.append((node, rf"\.{node.node.attr}\(", f".{node.node.attr}() on {JSON_STRING} fails"))
        elif isinstance(node, nodes.Add):
            for side in (node.left, node.right):
                if facts.has(side, ARGUMENTS):
                    problem = "'+' on arguments sent as a mapping (the transformers format) raises TypeError"
                    uses.append((side, operand_pattern(side, r"\+"), problem))
        elif isinstance(node, nodes.Output):
            for part in node.nodes:
                if facts.has(part, ARGUMENTS):
                    problem = "printing arguments sent as a mapping renders a Python repr, not JSON"
                    uses.append((part, expr_pattern(part), problem))
    return uses


@register
class ToolArgumentsShapeAssumed(FactsRule):
    """Tool-call arguments are used as only one of a mapping or a JSON string.

    Why: transformers' convention is ``arguments`` as a mapping; the OpenAI wire format (and
    most servers relaying it) sends a JSON string. ``|tojson`` on the string double-encodes it
    silently (``"{\\"city\\": ...}"``), ``|items`` on it raises, ``'...' + arguments`` on a
    mapping raises, and printing a mapping gives a Python repr. Branch on ``arguments is
    string`` and handle both.

    Bad:
        {% for message in messages %}{% for tool_call in message.tool_calls %}
        {{ tool_call.function.arguments|tojson }}
        {% endfor %}{% endfor %}

    Good:
        {% for message in messages %}{% for tool_call in message.tool_calls %}
        {% set arguments = tool_call.function.arguments %}
        {{ arguments if arguments is string else arguments|tojson }}
        {% endfor %}{% endfor %}
    """

    code = "TK401"
    name = "tool-arguments-shape-assumed"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        if type_tested(facts, ARGUMENTS):
            return
        uses = _argument_uses(facts)
        reported: set[tuple[int, str]] = set()
        for use, pattern, problem in sorted(uses, key=lambda u: facts.order.get(id(u[0]), 0)):
            if (use.lineno, problem) in reported:
                continue
            reported.add((use.lineno, problem))
            self.report_nth(
                use,
                f"tool-call arguments have no string/mapping branch: {problem}",
                pattern,
                lambda other, problem=problem: any(u is other and p == problem for u, _, p in uses),
            )


# ---------------------------------------------------------------------------------------------


def _tools_guard_polarity(facts: TemplateFacts, test: nodes.Node) -> bool | None:
    """For a test that guards on ``tools is defined`` / ``tools is not none`` only: True if the
    body is the has-tools branch, False if the else is, None if the test also checks
    emptiness (or says nothing about tools)."""
    if checks_nonempty(test, lambda n: facts.has(n, TOOLS)):
        return None
    verdicts = []
    for node, holds in walk_polarity(test):
        if isinstance(node, nodes.Test) and facts.has(node.node, TOOLS) and isinstance(node.node, nodes.Name):
            if node.name == "defined":
                verdicts.append(holds)
            elif node.name in ("none", "undefined"):
                verdicts.append(not holds)
    if verdicts and all(verdicts):
        return True
    if verdicts and not any(verdicts):
        return False
    return None


def _prints_outside_tool_loops(facts: TemplateFacts, statements: list[nodes.Node]) -> bool:
    """Whether a branch prints something that does not come from iterating the tools (a
    preamble, a header, ``tools|tojson``): text an empty list would still produce."""
    for stmt in statements:
        for output in [stmt, *stmt.find_all(nodes.Output)]:
            if not isinstance(output, nodes.Output):
                continue
            if any(facts.has(loop.iter, TOOLS) for loop in facts.loops(output)):
                continue
            for part in output.nodes:
                if isinstance(part, nodes.TemplateData) and not part.data.strip():
                    continue
                if isinstance(part, nodes.Call) and is_raise(part):
                    continue
                return True
    return False


GUARD_NEEDLES = ("tools is defined", "tools is not none")


@register
class ToolsGuardWithoutEmptiness(FactsRule):
    """A tools section is guarded by "is defined" / "is not none" but not by emptiness.

    Why: servers and clients often pass ``tools=[]`` (and transformers keeps ``[]`` as is),
    which passes ``tools is defined`` and ``tools is not none``. The template then prints a
    tools preamble with no tools ("You have access to the following functions:" and an empty
    list), which changes the model's behaviour on plain chat requests. Test truthiness:
    ``{% if tools %}`` is false for undefined, none and ``[]`` alike.

    Bad:
        {% if tools is not none %}{{ 'You can call these tools:\\n' }}{% for tool in tools %}{{ tool|tojson }}{% endfor %}{% endif %}

    Good:
        {% if tools %}{{ 'You can call these tools:\\n' }}{% for tool in tools %}{{ tool|tojson }}{% endfor %}{% endif %}

    Fix: replaces a test that is exactly ``tools is defined`` or ``tools is not none`` with
    ``tools`` (unsafe: an empty tools list no longer prints the preamble, which is the point).
    """

    code = "TK402"
    name = "tools-guard-without-emptiness"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        for guard in facts.find(nodes.If):
            if not self.is_statement_if(guard):
                continue
            polarity = _tools_guard_polarity(facts, guard.test)
            if polarity is None:
                continue
            branch = guard.body if polarity else [*[s for b in guard.elif_ for s in b.body], *guard.else_]
            if not _prints_outside_tool_loops(facts, branch):
                continue
            if polarity:
                what = f"'{source(guard.test)}' lets tools=[] through: the tools section"
            else:
                what = f"'{source(guard.test)}' is false for tools=[]: its else branch, the tools section,"
            self.report_if(
                guard,
                f"{what} is printed with no tools; test 'tools' (or 'tools|length > 0') instead",
                fix=self._fix(guard),
            )

    def _fix(self, guard: nodes.If) -> Fix | None:
        # Only a test that is exactly ``tools is defined`` or ``tools is not none``.
        test = guard.test
        if isinstance(test, nodes.Test) and test.name == "defined":
            subject = test.node
        elif isinstance(test, nodes.Not) and isinstance(test.node, nodes.Test) and test.node.name == "none":
            subject = test.node.node
        else:
            return None
        if not (isinstance(subject, nodes.Name) and subject.name == "tools"):
            return None
        line = self.target.lines[guard.lineno - 1]
        hits = [(line.find(needle), needle) for needle in GUARD_NEEDLES if line.count(needle) == 1]
        # Only an unambiguous spot on the line: one guard of this exact spelling.
        if len(hits) != 1 or len(re.findall(r"\{%[-+]?\s*if\b", line)) != 1:
            return None
        column, needle = hits[0]
        start = self.target.offset(guard.lineno, column + 1)
        return Fix(
            description=f"test 'tools' instead of '{needle}'",
            edits=(Edit(start, start + len(needle), "tools"),),
            safe=False,
        )


# ---------------------------------------------------------------------------------------------

BODY_KEYS = ("text", "contents")


def _keys_read(facts: TemplateFacts, kind: str) -> dict[str, nodes.Node]:
    """Every field read from a value of ``kind`` (``d.title``, ``d['text']``, ``d.get('x')``,
    ``'x' in d``), with the first node that reads it; ``*`` when the value is used whole
    (serialized, iterated, printed)."""
    found: dict[str, nodes.Node] = {}
    for node in facts.nodes:
        key = key_of(node)
        if key is not None and facts.has(lookup_base(node), kind):
            if isinstance(node, nodes.Getattr) and key == "get":
                continue  # ``d.get('x')``: the call around it names the key
            if isinstance(node, nodes.Getattr) and key in ("items", "keys", "values"):
                found.setdefault("*", node)  # iterating every field
            else:
                found.setdefault(key, node)
        elif isinstance(node, nodes.Compare) and len(node.ops) == 1 and node.ops[0].op in ("in", "notin"):
            if isinstance(node.expr, nodes.Const) and facts.has(node.ops[0].expr, kind):
                found.setdefault(str(node.expr.value), node)
        elif isinstance(node, nodes.Filter) and node.node is not None and facts.has(node.node, kind):
            if node.name in ("tojson", "items", "dictsort", "string", "pprint"):
                found.setdefault("*", node)
        elif isinstance(node, nodes.Output):
            if any(facts.has(part, kind) for part in node.nodes):
                found.setdefault("*", node)
    return found


@register
class DocumentBodyKey(FactsRule):
    """Documents are read with only one of the body keys 'text' and 'contents'.

    Why: the RAG convention is itself split: transformers' documentation describes documents
    as dicts with ``title`` and ``contents``, while its own example (and most pipelines) pass
    ``title`` and ``text``. A template that reads one spelling renders an empty body for
    callers using the other, silently. Read both (``doc.text if doc.text is defined else
    doc.contents``) or document the one you expect.

    Bad:
        {% for doc in documents %}{{ doc.title + '\\n' + doc.contents + '\\n' }}{% endfor %}

    Good:
        {% for doc in documents %}{{ doc.title + '\\n' + (doc.text if doc.text is defined else doc.contents) + '\\n' }}{% endfor %}
    """

    code = "TK403"
    name = "document-body-key"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        keys = _keys_read(facts, DOCUMENT)
        if "*" in keys:
            return  # the whole document is serialized: every key reaches the prompt
        body = [key for key in BODY_KEYS if key in keys]
        if len(body) != 1:
            return
        read, other = body[0], next(key for key in BODY_KEYS if key != body[0])
        where = keys[read]
        listed = ", ".join(repr(key) for key in sorted(keys))
        self.report(
            where,
            f"documents are read with keys {listed}: a document whose body is under {other!r} "
            f"(the other common spelling) renders with an empty body",
            needle=read,
        )


# ---------------------------------------------------------------------------------------------

REASONING_ALIASES = ("thinking", "reasoning")


@register
class ReasoningFieldAlias(FactsRule):
    """Reasoning is read from 'thinking' or 'reasoning' but not from 'reasoning_content'.

    Why: ``reasoning_content`` is the field OpenAI-compatible servers and clients use for a
    message's reasoning. transformers 5 copies it into ``thinking`` and ``reasoning`` before
    rendering, but transformers 4 and renderers that forward a request's messages as sent do
    not, so a template that reads only ``message.thinking`` drops the reasoning of every
    message that carries ``reasoning_content``. Read ``reasoning_content`` (and fall back to
    the alias if you must).

    Bad:
        {% for message in messages %}{% if message.thinking %}{{ '<think>' + message.thinking + '</think>' }}{% endif %}{{ message.content }}{% endfor %}

    Good:
        {% for message in messages %}{% if message.reasoning_content %}{{ '<think>' + message.reasoning_content + '</think>' }}{% endif %}{{ message.content }}{% endfor %}

    Fix: renames every read of the field to ``reasoning_content``, when each one can be told
    apart from other uses of the word on its line (unsafe: a message that sets both fields to
    different values renders the other one).
    """

    code = "TK404"
    name = "reasoning-field-alias"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        keys = _keys_read(facts, MESSAGE)
        if "reasoning_content" in keys:
            return
        # A template can also name the field in a string (``message[field]``, a mapping of
        # names): if 'reasoning_content' appears as a literal anywhere, it is handled.
        if any(isinstance(c.value, str) and c.value == "reasoning_content" for c in facts.find(nodes.Const)):
            return
        for alias in REASONING_ALIASES:
            if alias not in keys:
                continue
            where = keys[alias]
            self.report(
                where,
                f"message reasoning is read as {alias!r} only: renderers that pass messages as sent "
                "(transformers 4, many servers) drop reasoning sent as 'reasoning_content'",
                needle=alias,
                fix=self._fix(facts, alias),
            )

    def _fix(self, facts: TemplateFacts, alias: str) -> Fix | None:
        """Rename every read of the alias at once: renaming only the first would make the rule
        fall silent while the other reads still use the old name."""
        reads = [
            n
            for n in facts.nodes
            if (key_of(n) == alias and facts.has(lookup_base(n), MESSAGE))
            or (
                isinstance(n, nodes.Compare)
                and isinstance(n.expr, nodes.Const)
                and n.expr.value == alias
                and facts.has(n.ops[0].expr, MESSAGE)
            )
        ]
        per_line: dict[int, int] = {}
        for read in reads:
            per_line[read.lineno] = per_line.get(read.lineno, 0) + 1
        edits = []
        for line, count in per_line.items():
            # ``.thinking`` or ``['thinking']`` / ``"thinking" in``: the spellings of a field read.
            spots = list(re.finditer(rf"(?<=\.){alias}\b|(?<=['\"]){alias}(?=['\"])", self.target.lines[line - 1]))
            if len(spots) != count:
                return None  # the line also mentions the word elsewhere; leave it to a person
            for spot in spots:
                start = self.target.offset(line, spot.start() + 1)
                edits.append(Edit(start, start + len(alias), "reasoning_content"))
        if not edits:
            return None
        return Fix(description=f"read 'reasoning_content' instead of {alias!r}", edits=tuple(edits), safe=False)


# ---------------------------------------------------------------------------------------------

STRING_METHODS = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "replace",
    "lower", "upper", "title", "capitalize", "find", "rfind", "partition", "rpartition",
    "splitlines", "format",
}  # fmt: skip
STRING_FILTERS = {
    "trim", "replace", "lower", "upper", "title", "capitalize", "striptags", "truncate",
    "wordwrap", "indent", "center",
}  # fmt: skip


def _string_uses(facts: TemplateFacts) -> list[tuple[nodes.Node, str, str]]:
    """(content expression, how, pattern) for each place message content is used as a string."""
    uses: list[tuple[nodes.Node, str, str]] = []
    for node in facts.nodes:
        if isinstance(node, nodes.Add):
            for side in (node.left, node.right):
                if facts.has(side, CONTENT):
                    uses.append((side, "concatenated with '+'", operand_pattern(side, r"\+")))
        elif isinstance(node, nodes.Concat):
            for part in node.nodes:
                if facts.has(part, CONTENT):
                    uses.append((part, "joined with '~'", operand_pattern(part, "~")))
        elif isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
            subject, method = node.node.node, node.node.attr
            if method in STRING_METHODS and facts.has(subject, CONTENT):
                uses.append((subject, f"given to .{method}()", rf"({expr_pattern(subject)})\s*\.\s*{method}\s*\("))
        elif isinstance(node, nodes.Filter) and node.name in STRING_FILTERS and node.node is not None:
            if facts.has(node.node, CONTENT):
                pattern = rf"({expr_pattern(node.node)})\s*\|\s*{node.name}\b"
                uses.append((node.node, f"given to |{node.name}", pattern))
    return uses


# Keys of an OpenAI-style content part (text, image, audio, video and file parts).
PART_KEYS = {
    "type", "text", "image", "image_url", "video", "video_url", "audio", "audio_url", "input_audio",
    "file", "url",
}  # fmt: skip
# Filters under which a loop still walks the content list (picked, reordered or mapped items).
PICKING_FILTERS = SAME_LIST_FILTERS | {"map"}


def _unfiltered(iterable: nodes.Node) -> nodes.Node:
    """The list under filters that pick or map its items: ``content|selectattr('type', ...)``
    and ``content|map(attribute='text')`` still iterate content, but the kinds analysis carries
    only the tracked list kinds through filters."""
    while isinstance(iterable, nodes.Filter) and iterable.node is not None and iterable.name in PICKING_FILTERS:
        iterable = iterable.node
    return iterable


def _selects_parts(iterable: nodes.Node) -> bool:
    """``content|selectattr('type', ...)`` or ``content|map(attribute='text')``: the filter
    itself picks items by a part key."""
    while isinstance(iterable, nodes.Filter) and iterable.node is not None:
        if iterable.name in ("selectattr", "rejectattr") and iterable.args:
            first = iterable.args[0]
            if isinstance(first, nodes.Const) and first.value in PART_KEYS:
                return True
        if iterable.name == "map":
            for keyword in iterable.kwargs:
                if keyword.key == "attribute" and isinstance(keyword.value, nodes.Const):
                    if keyword.value.value in PART_KEYS:
                        return True
        iterable = iterable.node
    return False


Scope = tuple[str, nodes.Node, list[nodes.Node]]  # a name, the node that binds it, where it is visible


def _used_as_part(facts: TemplateFacts, use: nodes.Name, follow: list[Scope]) -> bool:
    """Whether one use of a loop item treats it as a content part: reads a part key from it,
    tests a part key in it, or prints it as text. An alias (``set part = item``) or a macro
    handed the item is queued on ``follow`` to be judged by its own uses."""
    node, parent = use, facts.parent(use)
    # ``item if item is string else item.text``: the branch taken is printed like the item.
    while isinstance(parent, nodes.CondExpr) and node is not parent.test:
        node, parent = parent, facts.parent(parent)
    if parent is None:
        return False
    if lookup_base(parent) is node:
        key = key_of(parent)
        if isinstance(parent, nodes.Getattr) and key == "get":
            call = facts.parent(parent)
            key = key_of(call) if isinstance(call, nodes.Call) and call.node is parent else None
        if key in PART_KEYS:
            return True
        if isinstance(parent, nodes.Getattr) and key in STRING_METHODS:
            call = facts.parent(parent)
            return isinstance(call, nodes.Call) and call.node is parent
        return False
    if isinstance(parent, (nodes.Output, nodes.Concat, nodes.Add)):
        return True  # printed, joined or concatenated as text
    if isinstance(parent, nodes.Filter) and parent.node is node:
        return parent.name in STRING_FILTERS
    if isinstance(parent, nodes.Operand) and parent.op in ("in", "notin"):
        compare = facts.parent(parent)
        subject = compare.expr if isinstance(compare, nodes.Compare) else None
        return isinstance(subject, nodes.Const) and subject.value in PART_KEYS
    if isinstance(parent, nodes.Assign) and parent.node is node and isinstance(parent.target, nodes.Name):
        # ``set`` inside a loop body lasts for that iteration; outside, for the template.
        loops = facts.loops(parent)
        owner = loops[0] if loops else facts.tree
        follow.append((parent.target.name, owner, loops[0].body if loops else [facts.tree]))
    elif isinstance(parent, nodes.Call) and isinstance(parent.node, nodes.Name) and parent.node.name in facts.macros:
        macro = facts.macros[parent.node.name]
        params = [arg.name for arg in macro.args]
        passed = list(zip(params, parent.args))
        passed += [(keyword.key, keyword.value) for keyword in parent.kwargs if keyword.key in params]
        follow.extend((name, macro, macro.body) for name, arg in passed if arg is node)
    return False


def _iterates_parts(facts: TemplateFacts, loop: nodes.For) -> bool:
    """Whether a loop over content treats its items as content parts (see ``_used_as_part``).

    Not every loop over a value that may hold content does: a template that keeps a legacy
    "tool_calls" role does ``{% set tool_calls = message.content %}`` and loops over calls,
    reading ``tool_call.function``; that says nothing about callers sending lists of parts."""
    if _selects_parts(loop.iter):
        return True
    if not isinstance(loop.target, nodes.Name):
        return False
    roots: list[nodes.Node] = list(loop.body) + ([loop.test] if loop.test is not None else [])
    follow: list[Scope] = [(loop.target.name, loop, roots)]
    seen: set[tuple[str, int]] = set()
    while follow:
        name, owner, scope = follow.pop()
        if (name, id(owner)) in seen:
            continue
        seen.add((name, id(owner)))
        for root in scope:
            uses = [root] if isinstance(root, nodes.Name) else []
            uses += list(root.find_all(nodes.Name))
            for use in uses:
                if use.name == name and use.ctx == "load" and _used_as_part(facts, use, follow):
                    return True
    return False


@register
class ContentAssumedString(FactsRule):
    """Message content is used as a string, but it can be a list of content parts.

    Why: in the OpenAI format (and for every multimodal model) ``content`` is a list of parts
    (``[{"type": "text", "text": "..."}]``); transformers passes it to the template unchanged,
    and vLLM passes lists to templates that iterate content anywhere. ``'...' + content`` then
    raises TypeError, ``.strip()`` raises, and ``|trim`` or ``~`` print the Python repr of the
    list. Branch on ``content is string`` and render the parts otherwise. Reported once per
    template, at the first use.

    Bad:
        {% for message in messages %}{{ '<|' + message.role + '|>' + message.content }}{% endfor %}

    Good:
        {% for message in messages %}{{ '<|' + message.role + '|>' }}
        {% if message.content is string %}{{ message.content }}
        {% else %}{% for part in message.content if part.type == 'text' %}{{ part.text }}{% endfor %}{% endif %}
        {% endfor %}
    """

    code = "TK405"
    name = "content-assumed-string"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        if type_tested(facts, CONTENT):
            return
        uses = sorted(_string_uses(facts), key=lambda u: facts.order.get(id(u[0]), 0))
        if not uses:
            return
        first, how, pattern = uses[0]
        more = len({use.lineno for use, _, _ in uses} - {first.lineno})
        iterated = [
            loop
            for loop in facts.find(nodes.For)
            if facts.has(_unfiltered(loop.iter), CONTENT) and _iterates_parts(facts, loop)
        ]
        context = (
            f"; the template iterates content as parts on line {iterated[0].lineno}, so callers do send lists"
            if iterated
            else ""
        )
        also = f" (and on {more} other line{'s' if more != 1 else ''})" if more else ""
        self.report_nth(
            first,
            f"message content is {how}{also} with no 'is string' branch: a list of content parts "
            f"raises or renders as a Python repr{context}",
            pattern,
            lambda other: any(other is use and p == pattern for use, _, p in uses),
        )


# ---------------------------------------------------------------------------------------------


@register
class UnguardedToolCallIndex(FactsRule):
    """tool_calls[0] is read without checking that the list is non-empty.

    Why: servers send ``tool_calls: []`` on ordinary assistant messages, and a guard like
    ``message.tool_calls is defined`` (or ``is not none``) lets an empty list through;
    ``tool_calls[0].function`` then raises ``UndefinedError`` and the request fails. Guard the
    read with ``message.tool_calls`` (truthiness) or ``|length``.

    Bad:
        {% for message in messages %}{% if message.tool_calls is defined %}{{ message.tool_calls[0].function.name }}{% endif %}{% endfor %}

    Good:
        {% for message in messages %}{% if message.tool_calls %}{{ message.tool_calls[0].function.name }}{% endif %}{% endfor %}
    """

    code = "TK406"
    name = "unguarded-tool-call-index"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts

        def indexes(candidate: nodes.Node) -> bool:
            return (
                isinstance(candidate, nodes.Getitem)
                and constant_index(candidate) is not None
                and facts.has(candidate.node, TOOL_CALLS)
            )

        for item in facts.find(nodes.Getitem):
            if not indexes(item):
                continue
            link = facts.link(item)
            if not reads_from(link):
                continue
            if self._guarded(facts, item):
                continue
            text = source(item)
            self.report_nth(
                item,
                f"{text} is read without a check that {source(item.node)} is non-empty: an assistant "
                "message with tool_calls=[] raises UndefinedError",
                rf"({expr_pattern(item.node)})\s*\[",
                lambda other, text=text: indexes(other) and source(other) == text,
            )

    @staticmethod
    def _guarded(facts: TemplateFacts, item: nodes.Getitem) -> bool:
        def is_calls(candidate: nodes.Node) -> bool:
            return facts.has(candidate, TOOL_CALLS)

        conditions = facts.conditions(item)
        if any(checks_nonempty(c.test, is_calls) for c in conditions):
            return True
        return any(facts.has(loop.iter, TOOL_CALLS) for loop in facts.loops(item))


# ---------------------------------------------------------------------------------------------

# Filters that iterate their input (and so raise TypeError on None).
ITERATING_FILTERS = {
    "length", "count", "map", "selectattr", "rejectattr", "join", "list", "first", "last",
    "sort", "unique", "sum", "batch", "groupby", "reverse", "min", "max",
}  # fmt: skip


def _excludes_none(
    facts: TemplateFacts,
    test: nodes.Node,
    holds: bool,
    is_value: Callable[[nodes.Node], bool],
    _seen: frozenset[str] = frozenset(),
) -> bool:
    """Whether a condition with truth ``holds`` rules out the value being None.

    Follows flags: ``{% set has_tools = tools and tools is iterable %}`` then
    ``{% if has_tools %}`` guards as well as the test itself, and so does a flag (a variable or a
    namespace attribute, ``ns.has_tools``) set to a true value only under such a test.
    """
    # Only what the test forces: ``tools or force`` being true says nothing about tools.
    for node, truth in implied(test, holds):
        if isinstance(node, nodes.Test) and is_value(node.node):
            if node.name == "none" and not truth:
                return True
            if node.name in ("iterable", "sequence", "mapping", "string") and truth:
                return True
        if isinstance(node, nodes.Name) and truth and not is_value(node) and node.name not in _seen:
            seen = _seen | {node.name}
            values = [value for (_scope, name), value, how in facts.bindings if name == node.name and how == "value"]
            if any(_excludes_none(facts, value, True, is_value, seen) for value in values):
                return True
            constants = _variable_flag_values(facts, node.name)
            if constants is not None and _true_only_where_none_is_excluded(
                    facts, constants, _starts_false(facts, constants), is_value, seen):
                return True
        if (isinstance(node, nodes.Getattr) and truth and isinstance(node.node, nodes.Name)
                and f"{node.node.name}.{node.attr}" not in _seen):
            found = _namespace_attribute_values(facts, node.node.name, node.attr)
            if found is not None and _true_only_where_none_is_excluded(
                    facts, *found, is_value, _seen | {f"{node.node.name}.{node.attr}"}):
                return True
    # Truthiness (``if tools``, ``tools and ...``) or a length check rules out None, and a
    # ``|length`` on None would itself be reported where it stands; a true disjunction forces
    # none of its sides.
    return any(truth and not isinstance(atom, (nodes.And, nodes.Or)) and checks_nonempty(atom, is_value)
               for atom, truth in implied(test, holds))


def _true_only_where_none_is_excluded(facts: TemplateFacts, values: list[nodes.Node], starts_false: bool,
                                      is_value: Callable[[nodes.Node], bool], seen: frozenset[str]) -> bool:
    """Whether a flag that ``starts_false`` (set false where no condition applies; else a
    caller's kwarg may have set it) and is given only the constants ``values`` is set true only
    under a test that rules out None (``{% if tools %}{% set ns.has_tools = true %}{% endif %}``).
    Constants only: a flag set from another expression (``a or force``) is not followed."""
    if not starts_false or not all(isinstance(value, nodes.Const) for value in values):
        return False
    return all(not value.value or any(_excludes_none(facts, condition.test, condition.truth, is_value, seen)
                                      for condition in facts.conditions(value))
               for value in values)


def _starts_false(facts: TemplateFacts, values: list[nodes.Node]) -> bool:
    return any(isinstance(value, nodes.Const) and not value.value and not facts.conditions(value) for value in values)


def _variable_flag_values(facts: TemplateFacts, name: str) -> list[nodes.Node] | None:
    """Every value the variable ``name`` is given, when each is a plain ``{% set name = ... %}``;
    None when it is also bound some other way (a loop target, a tuple, a block ``set``, a macro
    parameter), which this does not follow."""
    direct = {id(assign.target): assign.node for assign in facts.find(nodes.Assign)
              if isinstance(assign.target, nodes.Name) and assign.target.name == name}
    stores = [node for node in facts.find(nodes.Name) if node.name == name and node.ctx in ("store", "param")]
    if any(id(node) not in direct for node in stores):
        return None
    return [direct[id(node)] for node in stores]


def _namespace_attribute_values(facts: TemplateFacts, namespace: str,
                                attribute: str) -> tuple[list[nodes.Node], bool] | None:
    """Every value ``namespace.attribute`` is given (its keyword in the one ``namespace(...)``
    call that makes it, and each ``{% set namespace.attribute = ... %}``), and whether it starts
    false (that call is made where no condition applies, without the keyword or with a false
    one); None when the namespace could be changed out of sight: made otherwise or more than
    once, used as a value (an alias, a macro argument), or set with a block ``set``."""
    values: list[nodes.Node] = []
    made = 0
    starts_false = False
    read_through = {id(getattr_node.node) for getattr_node in facts.find(nodes.Getattr)}
    stores = []
    for node in facts.find(nodes.Name):
        if node.name != namespace:
            continue
        if node.ctx == "load" and id(node) not in read_through:
            return None
        if node.ctx in ("store", "param"):
            stores.append(node)
    for assign in facts.find((nodes.Assign, nodes.AssignBlock)):
        target = assign.target
        if isinstance(target, nodes.NSRef) and target.name == namespace and target.attr == attribute:
            if isinstance(assign, nodes.AssignBlock):
                return None
            values.append(assign.node)
        elif isinstance(assign, nodes.Assign) and isinstance(target, nodes.Name) and target.name == namespace:
            value = assign.node
            if not (isinstance(value, nodes.Call) and isinstance(value.node, nodes.Name)
                    and value.node.name == "namespace" and not value.args and value.dyn_args is None
                    and value.dyn_kwargs is None):
                return None
            made += 1
            initial = [keyword.value for keyword in value.kwargs if keyword.key == attribute]
            values += initial
            # Undefined until set is as false as an explicit false.
            starts_false = not facts.conditions(value) and all(
                isinstance(first, nodes.Const) and not first.value for first in initial)
    if made != 1 or len(stores) != 1:
        return None
    return values, starts_false


@register
class ToolsIteratedWithoutNoneGuard(FactsRule):
    """tools or documents is iterated without a guard against None.

    Why: transformers passes ``tools=None`` and ``documents=None`` when the caller gives none,
    and ``tools is defined`` is true for None. ``{% for tool in tools %}`` (or ``tools|length``,
    ``tools|map(...)``) then raises ``TypeError: 'NoneType' object is not iterable`` on every
    request without tools. Guard with ``{% if tools %}`` or ``tools is not none``.

    Bad:
        {% if tools is defined %}{% for tool in tools %}{{ tool|tojson }}{% endfor %}{% endif %}

    Good:
        {% if tools %}{% for tool in tools %}{{ tool|tojson }}{% endfor %}{% endif %}
    """

    code = "TK407"
    name = "tools-iterated-without-none-guard"
    severity = "warning"

    def visit_Template(self, node: nodes.Template) -> None:
        facts = self.facts
        for name, kind in (("tools", TOOLS), ("documents", DOCUMENTS)):
            if self._normalised(facts, name):
                continue

            def is_value(candidate: nodes.Node, name: str = name) -> bool:
                return isinstance(candidate, nodes.Name) and candidate.name == name

            for use, how in self._iterations(facts, is_value):
                macro = facts.macro_of(use)
                if macro is not None and name in {arg.name for arg in macro.args}:
                    continue  # a macro parameter: the guard, if any, is at the call site
                conditions = facts.conditions(use)
                if any(_excludes_none(facts, c.test, c.truth, is_value) for c in conditions):
                    continue
                if isinstance(use, nodes.Filter):
                    pattern = rf"\b({name})\s*\|\s*{use.name}\b"

                    def same(other: nodes.Node, filter_name: str = use.name) -> bool:
                        return isinstance(other, nodes.Filter) and other.name == filter_name
                else:
                    pattern = rf"\bin\s+({name})\b"
                    iterables = [loop.iter for loop in facts.find(nodes.For)]

                    def same(other: nodes.Node, iterables: list[nodes.Node] = iterables) -> bool:
                        return any(other is iterable for iterable in iterables)
                self.report_nth(
                    use,
                    f"{name} is {how} without a none check: transformers passes {name}=None when "
                    f"none are given, which raises TypeError",
                    pattern,
                    same,
                )

    @staticmethod
    def _normalised(facts: TemplateFacts, name: str) -> bool:
        """``{% set tools = tools or [] %}`` (or any non-None value) makes None impossible later."""
        for assign in facts.find(nodes.Assign):
            if isinstance(assign.target, nodes.Name) and assign.target.name == name:
                value = assign.node
                if not (isinstance(value, nodes.Const) and value.value is None):
                    return True
        return False

    @staticmethod
    def _iterations(facts: TemplateFacts, is_value: Callable[[nodes.Node], bool]) -> list[tuple[nodes.Node, str]]:
        found: list[tuple[nodes.Node, str]] = []
        for node in facts.find((nodes.For, nodes.Filter)):
            if isinstance(node, nodes.For) and is_value(node.iter):
                found.append((node.iter, "iterated"))
            elif isinstance(node, nodes.Filter) and node.name in ITERATING_FILTERS and node.node is not None:
                if is_value(node.node):
                    found.append((node, f"given to |{node.name}"))
        return sorted(found, key=lambda pair: facts.order.get(id(pair[0]), 0))

