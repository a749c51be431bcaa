"""TK0xx: templates that do not load, and names that nothing defines.

transformers compiles a chat template the first time ``apply_chat_template`` runs, so everything
here fails at a user's first request rather than when the model is published: a syntax error, a
tag that needs a template loader, a filter or test the environment lacks, a ``{% break %}`` the
Python compiler rejects. The variable rules read the template's inputs (what it reads but never
sets) against what callers pass, because an unknown name is not an error in Jinja: it is silently
undefined, which is how a typo ships.
"""

from __future__ import annotations

import difflib
import re
import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache

import jinja2
from jinja2 import nodes
from jinja2.lexer import TokenStream, describe_token
from jinja2.parser import Parser

from ...conversation import (
    APPLY_CHAT_TEMPLATE_KEYWORDS,
    APPLY_CHAT_TEMPLATE_TOKENIZING,
    RENDER_JINJA_TEMPLATE_KEYWORDS,
)
from ...environment import environment
from ..config import NameList, RuleOptions
from ..model import Diagnostic, Edit, Fix
from ..registry import AstRule, Rule, register
from ..target import LintTarget, Token

# ---------------------------------------------------------------------------------------------
# tokens

_SKIPPED = frozenset(
    {"whitespace", "comment_begin", "comment", "comment_end", "linecomment_begin", "linecomment", "linecomment_end"}
)


def _significant(target: LintTarget) -> list[Token]:
    return [token for token in target.tokens if token.type not in _SKIPPED]


def _references(target: LintTarget, names: set[str]) -> dict[str, list[Token]]:
    """The tokens where each of ``names`` is read as a variable: not an attribute (``.name``), a
    filter or test name (``|name``, ``is name``), a keyword argument (``f(name=...)``) or a tag
    name."""
    tokens = _significant(target)
    found: dict[str, list[Token]] = {}
    for index, token in enumerate(tokens):
        if token.type != "name" or token.value not in names:
            continue
        before = tokens[index - 1] if index else None
        after = tokens[index + 1] if index + 1 < len(tokens) else None
        if before is not None and (before.value in (".", "|", "is") or before.type in ("block_begin", "raw_begin")):
            continue
        if before is not None and before.value == "not" and index >= 2 and tokens[index - 2].value == "is":
            continue
        if after is not None and after.value == "=":
            continue
        found.setdefault(token.value, []).append(token)
    return found


class _TokenAnchoredRule(AstRule):
    """An AST rule that reports at the source token a node came from.

    Nodes carry a line but no column, and the same word may occur earlier on that line inside a
    string or a longer name, so the token is looked up by what must stand around it; each token
    is handed out once, so repeated findings on one line land on successive tokens.
    """

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        self.claimed: set[int] = set()
        return super().check(target)

    def claim(self, node: nodes.Node, matches: Callable[[list[Token], int], bool]) -> Token | None:
        line = getattr(node, "lineno", 1) or 1
        tokens = _significant(self.target)
        for index, token in enumerate(tokens):
            if token.line >= line and token.offset not in self.claimed and matches(tokens, index):
                self.claimed.add(token.offset)
                return token
        return None


class _TagRule(_TokenAnchoredRule):
    """Reports at a statement's keyword (``{% include``, ``{% break``)."""

    def report_tag(self, node: nodes.Node, tag: str, message: str) -> None:
        def is_keyword(tokens: list[Token], index: int) -> bool:
            token = tokens[index]
            return token.type == "name" and token.value == tag and index > 0 and tokens[index - 1].type == "block_begin"

        token = self.claim(node, is_keyword)
        if token is None:
            self.report(node, message, needle=tag)
        else:
            self.found.append(self.diagnostic(token.line, token.column, message))


# ---------------------------------------------------------------------------------------------
# TK001


# The tags of Jinja extensions transformers does not load; "encountered unknown tag" alone does
# not tell a template author that the tag exists elsewhere but not here.
_EXTENSION_TAGS = {
    "do": "jinja2.ext.do",
    "trans": "jinja2.ext.i18n",
    "pluralize": "jinja2.ext.i18n",
    "debug": "jinja2.ext.debug",
}

# Tags that open a block closed by end<tag>; a plain ``{% set x = ... %}`` is not one of them.
_BLOCK_TAGS = frozenset({"for", "if", "macro", "call", "filter", "block", "with", "autoescape", "generation", "set"})

_AT_OFFSET = re.compile(r" at (\d+)$")
_NAMED_TOKEN = re.compile(r"(?:unexpected|got) '(.+)'$")
_INNERMOST = re.compile(r"innermost block that needs to be closed is '(\w+)'")


def _lexer_error(text: str) -> jinja2.TemplateSyntaxError | None:
    try:
        for _ in environment().lexer.tokeniter(text, None):
            pass
    except jinja2.TemplateSyntaxError as error:
        return error
    return None


_Seen = list[tuple[jinja2.lexer.Token, int]]


def _replay_parse(target: LintTarget) -> tuple[jinja2.TemplateSyntaxError | None, _Seen, object]:
    """Parse the template from ``target.tokens`` so that every token the parser sees is tied to
    the raw token (and so the column) it came from; returns the error, the parser's tokens with
    their raw indexes, and the token the parser stopped at."""
    env = environment()
    raw = target.tokens
    reading = [0]

    def replay() -> Iterator[tuple[int, str, str]]:
        for index, token in enumerate(raw):
            reading[0] = index
            yield token.line, token.type, token.value

    seen: _Seen = []

    def produced() -> Iterator[jinja2.lexer.Token]:
        # wrap() yields as soon as it has read the raw token a parser token comes from.
        for token in env.lexer.wrap(replay()):
            seen.append((token, reading[0]))
            yield token

    # The parser is built on empty source (its own stream would lex the text a second time) and
    # then reads the replayed stream instead.
    parser = Parser(env, "")
    parser.stream = TokenStream(produced(), None, None)
    try:
        parser.parse()
    except jinja2.TemplateSyntaxError as error:
        return error, seen, parser.stream.current
    return None, seen, None


def _open_blocks(seen: _Seen, stop: int) -> list[tuple[str, int]]:
    """Blocks still open before parser token ``stop``: (tag, raw index of its ``{%``)."""
    stack: list[tuple[str, int]] = []
    # The tag at ``stop`` is the one the parser rejected, so it neither opens nor closes anything.
    for position in range(min(stop, len(seen)) - 1):
        token, raw_index = seen[position]
        if token.type != "block_begin":
            continue
        tag = seen[position + 1][0]
        if tag.type != "name":
            continue
        if tag.value in _BLOCK_TAGS:
            if tag.value == "set" and _is_inline_set(seen, position + 2):
                continue
            stack.append((tag.value, raw_index))
        elif tag.value.startswith("end") and stack:
            stack.pop()
    return stack


def _is_inline_set(seen: _Seen, start: int) -> bool:
    for token, _raw in seen[start:]:
        if token.type == "assign":
            return True
        if token.type == "block_end":
            return False
    return False


# Tree depth, and depth of nested loops and other statements Jinja compiles to Python blocks
# (Python allows 20), from which TK001 also compiles the template (see _compile_problem).
_DEPTH_WORTH_COMPILING = 40
_BLOCKS_WORTH_COMPILING = 12
_PYTHON_BLOCK_NODES = (nodes.For, nodes.With, nodes.CallBlock, nodes.FilterBlock, nodes.Macro, nodes.Scope)


def _block_depth(index) -> int:
    """The most statements compiled to Python blocks (loops, ``with``, call blocks...) nested in
    one another anywhere in the indexed tree."""
    deepest = 0
    pending = [(index.root, 0)]
    while pending:  # iterative: the tree may be deeper than Python recursion
        node, depth = pending.pop()
        if isinstance(node, _PYTHON_BLOCK_NODES):
            depth += 1
            deepest = max(deepest, depth)
        pending.extend((child, depth) for child in index.children.get(id(node), ()))
    return deepest


@register
class TemplateSyntaxError(Rule):
    """Template does not parse, so every render fails.

    Why: transformers compiles the template on the first ``apply_chat_template`` call, so a syntax
    error ships silently and surfaces as a ``TemplateSyntaxError`` in every user's first request.
    Jinja reports only a line; this rule points at the token the parser stopped at, at the tag
    an unexpected end of template leaves open, and names the extension an unknown tag needs.

    Bad:
        {% for message in messages %}{{ message['content'] }}

    Good:
        {% for message in messages %}{{ message['content'] }}{% endfor %}
    """

    code, name, severity = "TK001", "template-syntax-error", "error"
    needs_tree = False

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        problem = target.syntax_problem
        if problem is None:
            return self._compile_problem(target)
        try:
            line, column, message = self._locate(target, problem.message)
        except RecursionError:
            line, column, message = problem.line, problem.column, problem.message
        return [self.diagnostic(line, column, message + _runaway_string(target, target.offset(line, column)))]

    def _compile_problem(self, target: LintTarget) -> list[Diagnostic]:
        """A template that parses can still be too deep for Jinja's compiler (a chain of thousands of
        `and`s, two dozen nested loops): transformers then fails on every call just the same.
        Compiling costs more than every other static check together, so it is tried only on
        trees deeper than any real template's (the 786 corpus templates stay under 33 levels;
        compiling starts failing near 50)."""
        from ..walk import tree_index

        index = tree_index(target)
        if index is None or (index.depth < _DEPTH_WORTH_COMPILING and _block_depth(index) < _BLOCKS_WORTH_COMPILING):
            return []
        from ...rendering import compile_failure

        failure = compile_failure(target.text)
        # Only what transformers hits as well: not templatekit's own size budget.
        if failure is None or failure.exception_type not in ("RecursionError", "SyntaxError", "MemoryError"):
            return []
        return [self.diagnostic(failure.line or 1, 1, f"template does not compile: {failure.message}")]

    def _locate(self, target: LintTarget, message: str) -> tuple[int, int, str]:
        problem = target.syntax_problem
        # The parser pulls tokens lazily, so a parse error before a lexing error is what Jinja
        # raises; each locating method is used only when its error is the one Jinja reported.
        lexing = _lexer_error(target.text)
        if lexing is not None and lexing.message == message and lexing.lineno == problem.line:
            return self._locate_lexer_error(target, lexing)
        error, seen, current = _replay_parse(target)
        if error is None or error.message != message:
            return problem.line, problem.column, message
        message = error.message or message
        where = next((i for i, (token, _raw) in enumerate(seen) if token is current), len(seen))
        named = _NAMED_TOKEN.search(message)
        if named is not None:
            for candidate in range(where, min(where + 4, len(seen))):
                if describe_token(seen[candidate][0]) == named.group(1):
                    where = candidate
                    break
        innermost = _INNERMOST.search(message)
        open_blocks = _open_blocks(seen, where)
        opener = next((raw for tag, raw in reversed(open_blocks) if innermost and tag == innermost.group(1)), None)
        if where >= len(seen):
            # The parser ran off the end: the useful place is the block that is still open.
            if opener is not None:
                token = target.tokens[opener]
                return token.line, token.column, f"{{% {innermost.group(1)} %}} is never closed: {message}"
            line, column = target.position(len(target.text))
            return line, column, message
        token = target.tokens[seen[where][1]]
        tag = seen[where][0]
        if message.startswith("Encountered unknown tag") and tag.value in _EXTENSION_TAGS:
            message = (
                f"{{% {tag.value} %}} needs the {_EXTENSION_TAGS[tag.value]} extension, which transformers does not "
                "load (it enables only loopcontrols and {% generation %})"
            )
        elif opener is not None:
            opened = target.tokens[opener]
            message = f"{message} (the {{% {innermost.group(1)} %}} at {opened.line}:{opened.column} is still open)"
        return token.line, token.column, message

    def _locate_lexer_error(self, target: LintTarget, error: jinja2.TemplateSyntaxError) -> tuple[int, int, str]:
        message = error.message or str(error)
        offset = _AT_OFFSET.search(message)
        if offset is not None and "\r" not in target.text:
            # The lexer counts offsets in newline-normalised text; without CRs that is the text.
            line, column = target.position(int(offset.group(1)))
            message = _AT_OFFSET.sub("", message)
            if target.text[int(offset.group(1))] in "'\"":
                message = f"string literal is never closed ({message})"
            return line, column, message
        tokens = target.tokens
        if not tokens:
            return 1, 1, message
        # Lexing stops where it failed; an unterminated comment or {% raw %} fails after its
        # opening delimiter, which is the place to show.
        last = tokens[-1]
        if last.type in ("comment_begin", "raw_begin"):
            return last.line, last.column, message
        line, column = target.position(last.end)
        return line, column, message


def _runaway_string(target: LintTarget, offset: int) -> str:
    """A hint when the nearest string before the error spans lines: a missing closing quote makes
    Jinja read on to the next quote, and the error then shows up far from the mistake."""
    before = [token for token in target.tokens if token.type == "string" and token.offset < offset]
    if not before or "\n" not in before[-1].value:
        return ""
    string = before[-1]
    end_line = target.position(string.end)[0]
    return (
        f" (the string starting at {string.line}:{string.column} runs on to line {end_line}: "
        "is its closing quote missing?)"
    )


# ---------------------------------------------------------------------------------------------
# TK002


@register
class JsonEncodedTemplate(Rule):
    """The file holds the template JSON-encoded (a pasted ``"chat_template": "..."`` line), not the template.

    Why: copying a template out of tokenizer_config.json by hand easily takes the JSON with it:
    the key, the quotes, ``\\n`` for every line break and ``\\"`` for every quote. Jinja still
    parses it, so every prompt starts with ``"chat_template": "``, has backslashes where line
    breaks belong and ends with ``",``; a chat_template.jinja must hold the decoded text.

    Bad:
        "chat_template": "{% for m in messages %}<|{{ m.role }}|>\\n{{ m.content }}{% endfor %}",

    Good:
        {% for m in messages %}<|{{ m.role }}|>
        {{ m.content }}{% endfor %}

    Fix: replaces the file's text with the decoded template (unsafe: review it).
    """

    code, name, severity = "TK009", "json-encoded-template", "error"
    needs_tree = False

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        found = _json_encoded_template(target.text)
        if found is None:
            return []
        what, decoded = found
        start = len(target.text) - len(target.text.lstrip())
        line, column = target.position(start)
        message = (f"the file holds {what}, not the template itself: every render prints the JSON around it and "
                   f"its escapes (\\n, \\\") as they are; save the decoded template")
        fix = None
        if _fits_a_template_file(decoded):
            fix = Fix("replace the text with the decoded template", (Edit(0, len(target.text), decoded),), safe=False)
        else:
            message += (" (no fix: it decodes to a carriage return, a NUL or a lone surrogate, which a .jinja file "
                        "read as transformers reads it cannot hold; keep it in tokenizer_config.json)")
        return [self.diagnostic(line, column, message, fix=fix)]


# A pasted config line: the key, then the JSON string, then perhaps the comma before the next key.
_PASTED_KEY = re.compile(r'"chat_template"\s*:\s*(".*")\s*,?', re.DOTALL)


def _fits_a_template_file(text: str) -> bool:
    """Whether ``text`` survives being written to a .jinja file and read back as transformers reads
    one (UTF-8, universal newlines): no carriage return, NUL or lone surrogate."""
    return "\r" not in text and "\x00" not in text and not any("\ud800" <= char <= "\udfff" for char in text)


def _json_encoded_template(text: str) -> tuple[str, str] | None:
    """(what the text is, the template it encodes) when ``text`` is a template JSON-encoded: a
    pasted ``"chat_template": "..."`` line, or one JSON string literal; None otherwise. Only a
    decoded string with Jinja syntax counts: a template may well print a quoted string."""
    import json

    body = text.strip()
    pasted = _PASTED_KEY.fullmatch(body)
    candidates = [("a pasted \"chat_template\": \"...\" line of a JSON config", pasted.group(1))] if pasted else []
    literal = body.removesuffix(",").rstrip()
    # Quotes alone may be the template's own text ("{{ content }}"): an escape shows the encoding.
    if literal.startswith('"') and "\\" in literal:
        candidates.append(("the template as a JSON string literal", literal))
    for what, literal in candidates:
        try:
            decoded = json.loads(literal)
        except ValueError:
            continue
        if isinstance(decoded, str) and ("{%" in decoded or "{{" in decoded):
            return what, decoded
    return None


@register
class LoaderTag(_TagRule):
    """Tag loads another template, but chat templates have no loader.

    Why: ``{% include %}``, ``{% extends %}``, ``{% import %}`` and ``{% from ... import %}`` parse,
    but rendering them asks the environment for a loader, and transformers' chat-template
    environment has none: every render fails with "no loader for this environment specified".
    A chat template is one self-contained string; macros must be defined in it.

    Bad:
        {% import 'tools.jinja' as tools_macros %}{{ tools_macros.render(tools) }}

    Good:
        {% macro render(tools) %}{{ tools|tojson }}{% endmacro %}{{ render(tools) }}
    """

    code, name, severity = "TK002", "loader-tag", "error"

    def _loader(self, node: nodes.Node, tag: str) -> None:
        self.report_tag(
            node,
            tag,
            f"{{% {tag} %}} needs a template loader, and transformers' chat-template environment has none: "
            "every render fails; define the macros in this template instead",
        )

    def visit_Include(self, node: nodes.Include) -> None:
        self._loader(node, "include")

    def visit_Extends(self, node: nodes.Extends) -> None:
        self._loader(node, "extends")

    def visit_Import(self, node: nodes.Import) -> None:
        self._loader(node, "import")

    def visit_FromImport(self, node: nodes.FromImport) -> None:
        self._loader(node, "from")


# ---------------------------------------------------------------------------------------------
# TK003 / TK004


# Names people reach for from Python or other template languages, and the filter that does it.
_FILTER_ALIASES = {
    "json": "tojson",
    "to_json": "tojson",
    "strip": "trim",
    "len": "length",
    "str": "string",
    "lowercase": "lower",
    "uppercase": "upper",
    "titlecase": "title",
    "sorted": "sort",
    "reversed": "reverse",
}
_TEST_ALIASES = {"null": "none", "None": "none", "True": "true", "False": "false"}


def _suggest(name: str, known: Iterable[str], aliases: dict[str, str]) -> str | None:
    if name in aliases:
        return aliases[name]
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
    return close[0] if close else None


def _rename_fix(tokens: list[Token], old: str, new: str, what: str) -> Fix:
    edits = tuple(Edit(token.offset, token.offset + len(old), new) for token in tokens)
    # Renaming turns a failing (or undefined) reference into a working one: behaviour changes.
    return Fix(f"rename {what} {old!r} to {new!r}", edits, safe=False)


@lru_cache(maxsize=1)
def _filter_names() -> frozenset[str]:
    return frozenset(environment().filters)


@lru_cache(maxsize=1)
def _test_names() -> frozenset[str]:
    return frozenset(environment().tests)


class _NameCheck(_TokenAnchoredRule):
    """Shared check for filter and test names, which Jinja resolves against the environment.

    Subclasses set ``kind``, ``aliases``, ``known_names`` (a callable returning the defined
    names) and ``introducers``: the tokens that can stand right before the name in source.
    """

    kind = ""
    aliases: dict[str, str] = {}
    introducers: tuple[str, ...] = ()

    def _check_name(self, node: nodes.Node, name: str, quoted: bool) -> None:
        known = type(self).known_names()
        if name in known:
            return
        suggestion = _suggest(name, known, self.aliases)

        def spells_name(tokens: list[Token], index: int) -> bool:
            token = tokens[index]
            if quoted:
                return token.type == "string" and token.value[1:-1] == name
            before = tokens[index - 1].value if index else ""
            return token.type == "name" and token.value == name and before in self.introducers

        token = self.claim(node, spells_name)
        fix = None
        if suggestion is not None and token is not None:
            start = token.offset + (1 if quoted else 0)
            fix = Fix(f"use the {suggestion!r} {self.kind}", (Edit(start, start + len(name), suggestion),), safe=False)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        message = f"no {self.kind} named {name!r} in transformers' environment: rendering fails where it is used{hint}"
        line, column = (token.line, token.column) if token is not None else self.target.node_position(node, name)
        self.found.append(self.diagnostic(line, column, message, fix=fix))


@register
class UnknownFilter(_NameCheck):
    """Filter that transformers' Jinja environment does not define.

    Why: Jinja resolves filters when it compiles the template (or, inside an ``{% if %}``, when
    the branch runs), so ``|to_json`` or ``|strip`` makes the template fail to load in
    transformers and every engine that follows it. Names passed to ``map`` are filters too.

    Bad:
        {{ tools|to_json }}

    Good:
        {{ tools|tojson }}

    Fix: renames the filter to the closest defined one (unsafe: the template starts rendering
    output it never produced, so review it).
    """

    code, name, severity = "TK003", "unknown-filter", "error"
    kind = "filter"
    aliases = _FILTER_ALIASES
    introducers = ("|", "filter")
    known_names = staticmethod(_filter_names)

    def visit_Filter(self, node: nodes.Filter) -> None:
        self._check_name(node, node.name, quoted=False)
        if node.name == "map" and node.args and not node.kwargs:
            first = node.args[0]
            if isinstance(first, nodes.Const) and isinstance(first.value, str):
                self._check_name(first, first.value, quoted=True)
        self.generic_visit(node)


@register
class UnknownTest(_NameCheck):
    """Test that transformers' Jinja environment does not define.

    Why: ``x is empty`` or ``x is null`` look plausible but name no Jinja test: the template
    fails to compile in transformers ("No test named"), or, inside an ``{% if %}``, fails when
    that branch runs. Test names given to ``select``, ``reject``, ``selectattr`` and
    ``rejectattr`` are looked up the same way.

    Bad:
        {% if message['content'] is null %}{% endif %}

    Good:
        {% if message['content'] is none %}{% endif %}

    Fix: renames the test to the closest defined one (unsafe: review the new condition).
    """

    code, name, severity = "TK004", "unknown-test", "error"
    kind = "test"
    aliases = _TEST_ALIASES
    introducers = ("is", "not")
    known_names = staticmethod(_test_names)

    def visit_Test(self, node: nodes.Test) -> None:
        self._check_name(node, node.name, quoted=False)
        self.generic_visit(node)

    def visit_Filter(self, node: nodes.Filter) -> None:
        position = {"select": 0, "reject": 0, "selectattr": 1, "rejectattr": 1}.get(node.name)
        if position is not None and len(node.args) > position:
            argument = node.args[position]
            if isinstance(argument, nodes.Const) and isinstance(argument.value, str):
                self._check_name(argument, argument.value, quoted=True)
        self.generic_visit(node)


# ---------------------------------------------------------------------------------------------
# TK005


@register
class LoopControlOutsideLoop(_TagRule):
    """``{% break %}`` or ``{% continue %}`` that is not directly inside a loop body.

    Why: Jinja compiles loop controls to Python ``break``/``continue``. Inside a macro, a
    ``{% call %}`` or ``{% generation %}`` block, or a loop's ``{% else %}``, the enclosing Python
    code is a function or runs after the loop, so compiling the template fails with "'break'
    outside loop" even though the template parses.

    Bad:
        {% for message in messages %}{% generation %}
            {%- if message['role'] == 'tool' %}{% break %}{% endif %}{{ message['content'] }}
        {%- endgeneration %}{% endfor %}

    Good:
        {% for message in messages %}{% if message['role'] == 'tool' %}{% break %}{% endif %}
            {%- generation %}{{ message['content'] }}{% endgeneration %}
        {%- endfor %}
    """

    code, name, severity = "TK005", "loop-control-outside-loop", "error"

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        self.in_loop = False
        self.barrier = ""
        return super().check(target)

    def _inside(self, body: list[nodes.Node], in_loop: bool, barrier: str) -> None:
        saved = self.in_loop, self.barrier
        self.in_loop, self.barrier = in_loop, barrier
        for child in body:
            self.visit(child)
        self.in_loop, self.barrier = saved

    def visit_For(self, node: nodes.For) -> None:
        for part in (node.target, node.iter, node.test):
            if part is not None:
                self.visit(part)
        self._inside(node.body, True, "")
        after_loop = self.barrier if self.in_loop else "the loop's {% else %} runs after the loop"
        self._inside(node.else_, self.in_loop, after_loop)

    def visit_Macro(self, node: nodes.Macro) -> None:
        self._inside(node.body, False, "a {% macro %} body is a separate function")

    def visit_CallBlock(self, node: nodes.CallBlock) -> None:
        self.visit(node.call)
        generation = isinstance(node.call, nodes.ExtensionAttribute) or (
            isinstance(node.call, nodes.Call) and isinstance(node.call.node, nodes.ExtensionAttribute)
        )
        what = "{% generation %}" if generation else "{% call %}"
        self._inside(node.body, False, f"a {what} body is a separate function")

    def visit_Block(self, node: nodes.Block) -> None:
        self._inside(node.body, False, "a {% block %} body is a separate function")

    def _control(self, node: nodes.Node, word: str) -> None:
        if self.in_loop:
            return
        why = f" ({self.barrier})" if self.barrier else ""
        self.report_tag(node, word, f"{{% {word} %}} is not inside a loop body{why}: the template fails to compile")

    def visit_Break(self, node: nodes.Break) -> None:
        self._control(node, "break")

    def visit_Continue(self, node: nodes.Continue) -> None:
        self._control(node, "continue")


# ---------------------------------------------------------------------------------------------
# the template's inputs (TK006, TK007, TK008)

# What transformers' apply_chat_template passes by name on every render.
RENDER_ARGUMENTS = ("messages", "tools", "documents", "add_generation_prompt")
# Named special tokens (special_tokens_map): passed when the tokenizer defines them.
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# Template kwargs that published chat templates read and callers (vLLM, SGLang, transformers
# serve, llama.cpp) know to pass; templates reading each, of 786 on the Hub: enable_thinking 156,
# add_vision_id 48, reasoning_effort 28 (gpt-oss, GLM, Cohere), preserve_thinking 21,
# builtin_tools 19 and custom_tools 17 (Llama 3.1+), date_string 18, model_identity 17 (gpt-oss),
# tools_in_user_message 15, thinking 15 (DeepSeek V3.1, Granite), clear_thinking 6 (GLM),
# continue_final_message 6, response_format 6, keep_past_thinking 5, tool_choice 4,
# add_audio_id 2 (Qwen Omni); query and document are the inputs SGLang's reranker templates
# (Qwen3-VL-Reranker) read as kwargs, where document is no misspelling of documents.
KNOWN_KWARGS = (
    "enable_thinking",
    "add_vision_id",
    "add_audio_id",
    "builtin_tools",
    "custom_tools",
    "tools_in_user_message",
    "date_string",
    "reasoning_effort",
    "model_identity",
    "thinking",
    "preserve_thinking",
    "clear_thinking",
    "keep_past_thinking",
    "continue_final_message",
    "response_format",
    "tool_choice",
    "query",
    "document",
)

# Names apply_chat_template takes as its own arguments and never hands to the template: a caller
# passing one sets transformers' option (continue_final_message, tokenize, ...), not a variable.
NEVER_PASSED = frozenset(
    (*APPLY_CHAT_TEMPLATE_KEYWORDS, *APPLY_CHAT_TEMPLATE_TOKENIZING, *RENDER_JINJA_TEMPLATE_KEYWORDS)
) - set(RENDER_ARGUMENTS)

# Names that mean something in Python or JavaScript but are undefined in Jinja, and what to use.
_FOREIGN_NAMES = {
    "null": "the literal none",
    "nil": "the literal none",
    "undefined": "the test `is undefined`",
    "str": "the |string filter",
    "int": "the |int filter",
    "float": "the |float filter",
    "len": "the |length filter",
    "list": "the |list filter",
    "bool": "a comparison or the `is true` test",
    "isinstance": "a test such as `is string` or `is mapping`",
    "type": "a test such as `is string` or `is mapping`",
    "print": "an expression tag {{ ... }}",
    "json": "the |tojson filter",
    "datetime": "strftime_now(...)",
    "enumerate": "loop.index0 inside the loop",
    "zip": "loop.index0 to index the other sequence",
    "sorted": "the |sort filter",
}

# Names Jinja provides inside particular blocks: loop (for), caller/varargs/kwargs (macro).
_IMPLICIT = frozenset({"loop", "caller", "varargs", "kwargs"})


def _name_events(node: nodes.Node, macros: list[nodes.Macro]) -> Iterator[tuple[str, str, int]]:
    """Every (name, ctx, line) of ``node`` in the order Jinja evaluates them: an assignment's
    value before its target, a loop's iterable before its variable. Macro bodies run when called,
    not where written, so they are queued on ``macros`` instead."""
    if isinstance(node, nodes.Name):
        yield node.name, node.ctx, node.lineno
    elif isinstance(node, nodes.Macro):
        yield node.name, "store", node.lineno
        macros.append(node)
    elif isinstance(node, nodes.Assign):
        yield from _name_events(node.node, macros)
        yield from _name_events(node.target, macros)
    elif isinstance(node, nodes.AssignBlock):
        for child in (*node.body, *([node.filter] if node.filter else []), node.target):
            yield from _name_events(child, macros)
    elif isinstance(node, nodes.For):
        for child in (node.iter, node.target, *([node.test] if node.test else []), *node.body, *node.else_):
            yield from _name_events(child, macros)
    else:
        for child in node.iter_child_nodes():
            yield from _name_events(child, macros)


def template_inputs(tree: nodes.Template) -> dict[str, tuple[bool, frozenset[int]]]:
    """Names whose value can only come from the caller: what the template reads before (or
    without ever) setting it, each mapped to whether the template also assigns it (a default)
    and the lines where it is read as that outer variable (not as a macro's own parameter).

    ``jinja2.meta.find_undeclared_variables`` counts a variable assigned in an ``{% if %}`` branch
    as undeclared, so subtracting every assigned name is needed; but that alone would hide the
    kwargs with a default (``{% set x = x if x is defined else 1 %}``, ``{% if x is not defined
    %}{% set x = ... %}``), which are inputs too. So the name's first use in evaluation order
    decides: read first, it is an input; assigned first, it is the template's own. Macro bodies
    are walked after the top level, since they run when called.
    """
    first: dict[str, str] = {}
    assigned: set[str] = set()
    read_on: dict[str, set[int]] = {}

    def see(name: str, ctx: str, line: int) -> None:
        first.setdefault(name, ctx)
        if ctx == "store":
            assigned.add(name)
        elif ctx == "load":
            read_on.setdefault(name, set()).add(line)

    macros: list[nodes.Macro] = []
    for name, ctx, line in _name_events(tree, macros):
        see(name, ctx, line)
    while macros:
        macro = macros.pop(0)
        local = {argument.name for argument in macro.args}
        for child in (*macro.defaults, *macro.body):
            for name, ctx, line in _name_events(child, macros):
                if ctx != "param" and not (ctx == "load" and name in local):
                    see(name, ctx, line)
    ignored = _IMPLICIT | set(environment().globals)
    return {name: (name in assigned, frozenset(read_on.get(name, ()))) for name, ctx in first.items()
            if ctx == "load" and name not in ignored}


def known_inputs(target: LintTarget, extra: Iterable[str] = ()) -> frozenset[str]:
    """Every name some caller passes: render arguments, special tokens, environment globals."""
    return frozenset(
        (*RENDER_ARGUMENTS, *SPECIAL_TOKEN_NAMES, *environment().globals, *target.special_tokens, *extra)
    )


def _misspelling_of(name: str, candidates: Iterable[str]) -> str | None:
    """The known name ``name`` is a typo of: at most two edits apart and similar overall.

    Both bounds matter: similarity alone pairs real kwargs such as ``thinking_mode`` and
    ``thinking``; edit distance alone pairs short unrelated names.
    """
    best = None
    for candidate in candidates:
        if candidate == name:
            return None
        if name.lower() == candidate.lower():
            return candidate
        limit = 1 if min(len(name), len(candidate)) <= 5 else 2
        if _edit_distance(name, candidate, limit) > limit:
            continue
        ratio = difflib.SequenceMatcher(None, name, candidate).ratio()
        if ratio >= 0.8 and (best is None or ratio > best[0]):
            best = (ratio, candidate)
    return best[1] if best else None


def _edit_distance(first: str, second: str, limit: int) -> int:
    """Damerau-Levenshtein distance (adjacent swaps count once), cut off above ``limit``."""
    if abs(len(first) - len(second)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(second) + 1))
    for i, a in enumerate(first, 1):
        current = [i] + [0] * len(second)
        for j, b in enumerate(second, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b))
            if i > 1 and j > 1 and a == second[j - 2] and first[i - 2] == b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


# Three rules read the same inputs of one target; computing them once per target keeps lint
# cost flat, and weak keys let each target's entry go with it.
_INPUTS: weakref.WeakKeyDictionary[LintTarget, list[tuple[str, list[Token], bool]]] = weakref.WeakKeyDictionary()


class _InputRule(Rule):
    """A rule over the template's inputs: (name, its reads, whether the template assigns a
    default); each finding sits at the first read of the name."""

    def inputs(self, target: LintTarget) -> list[tuple[str, list[Token], bool]]:
        if target not in _INPUTS:
            inputs = template_inputs(target.tree)
            references = _references(target, set(inputs))
            found = []
            for name, tokens in references.items():
                has_default, lines = inputs[name]
                # The same word as a macro's parameter, or a local of one, is not this input.
                reads = [token for token in tokens if token.line in lines] or tokens
                found.append((name, reads, has_default))
            _INPUTS[target] = sorted(found, key=lambda item: item[1][0].offset)
        return _INPUTS[target]


@register
class MisspelledVariable(_InputRule):
    """Variable that no caller passes, spelled like one they do.

    Why: Jinja renders an unknown name as empty and treats it as false, so ``add_generation_promt``
    or ``eos_tokn`` never raises: the generation prompt or the end-of-turn token just disappears
    from every prompt. The names checked are what transformers passes (messages, tools,
    documents, add_generation_prompt, the special tokens), the environment's globals, and the
    template kwargs callers commonly set (enable_thinking, reasoning_effort, ...).

    Bad:
        {% for message in messages %}{{ message['content'] + eos_tokn }}{% endfor %}

    Good:
        {% for message in messages %}{{ message['content'] + eos_token }}{% endfor %}

    Fix: renames every read of the variable (unsafe: the output changes, which is the point).
    """

    code, name, severity = "TK006", "misspelled-variable", "warning"
    options = RuleOptions({"kwargs": NameList(list(KNOWN_KWARGS)), "extra-inputs": NameList([])})

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        known = known_inputs(target, self.settings["extra-inputs"])
        candidates = known | set(self.settings["kwargs"])
        for name, references, has_default in self.inputs(target):
            if has_default or name in candidates or name in _FOREIGN_NAMES:
                continue  # a name the template gives a default is a deliberate kwarg, not a typo
            intended = _misspelling_of(name, candidates)
            if intended is None:
                continue
            first = references[0]
            if intended == name + "s":
                # ``message`` for ``messages`` is a loop variable read outside its loop, not a
                # typo: renaming it would index the list, so there is no mechanical fix.
                message = (
                    f"{name!r} is never set and no caller passes it, so it is always undefined here; "
                    f"is this meant to be inside a loop over {intended!r}?"
                )
                fix = None
            else:
                message = (
                    f"{name!r} is never set and no caller passes it, so it is always undefined; did you mean {intended!r}?"
                )
                fix = _rename_fix(references, name, intended, "variable")
            yield self.diagnostic(first.line, first.column, message, end_column=first.column + len(name), fix=fix)


@register
class ForeignBuiltinName(_InputRule):
    """Python or JavaScript name that Jinja does not define.

    Why: ``null``, ``str(x)``, ``len(x)`` or ``datetime`` read like built-ins but are plain
    undefined variables in Jinja: ``x == null`` is never true for a real value, and calling
    ``str(x)`` fails at render time with "'str' is undefined".

    Bad:
        {% if message['content'] == null %}{{ message['content'] }}{% endif %}

    Good:
        {% if message['content'] is none %}{{ message['content'] }}{% endif %}
    """

    code, name, severity = "TK007", "foreign-builtin-name", "warning"
    options = RuleOptions({"extra-inputs": NameList([])})

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        known = known_inputs(target, self.settings["extra-inputs"])
        for name, references, has_default in self.inputs(target):
            if has_default or name in known or name not in _FOREIGN_NAMES:
                continue
            first = references[0]
            yield self.diagnostic(
                first.line,
                first.column,
                f"{name!r} is not defined in Jinja (it is not a built-in there, and nothing passes it); "
                f"use {_FOREIGN_NAMES[name]}",
                end_column=first.column + len(name),
            )


@register
class TemplateKwarg(_InputRule):
    """Template reads a variable that only a caller's chat-template kwarg can set.

    Why: besides messages, tools, documents, add_generation_prompt and the special tokens,
    transformers passes nothing unless the caller adds it (``apply_chat_template(...,
    enable_thinking=False)``, vLLM's ``chat_template_kwargs``). Such inputs are invisible to
    users: unset, they are undefined (or take the default the template gives them), and a caller
    who sets a differently named one changes nothing. Each finding names one input, so the list
    is the template's kwargs surface for its model card.

    Bad:
        {% if enable_thinking is defined and enable_thinking is false %}<think>

        </think>{% endif %}

    Good:
        {% if add_generation_prompt %}<|im_start|>assistant
        {% endif %}
    """

    code, name, severity = "TK008", "template-kwarg", "info"
    options = RuleOptions({"kwargs": NameList(list(KNOWN_KWARGS)), "extra-inputs": NameList([])})

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        known = known_inputs(target, self.settings["extra-inputs"])
        candidates = known | set(self.settings["kwargs"])
        for name, references, has_default in self.inputs(target):
            if name in known or (name in _FOREIGN_NAMES and not has_default):
                continue  # TK007's finding
            if not has_default and name not in self.settings["kwargs"] and _misspelling_of(name, candidates):
                continue  # TK006's finding
            first = references[0]
            common = " (a widely used kwarg)" if name in self.settings["kwargs"] else ""
            if name in NEVER_PASSED:
                outcome = "its default always applies" if has_default else "it is always undefined here"
                message = (
                    f"reads {name!r}, which transformers never passes to a template: apply_chat_template takes "
                    f"{name!r} as its own argument, so {outcome} under transformers; only a renderer that passes a "
                    "variable of that name changes it"
                )
            elif has_default:
                message = (
                    f"reads {name!r}{common}, a chat-template kwarg the template gives a default: callers who pass it "
                    "change the prompt"
                )
            elif name.endswith("_token"):
                message = (
                    f"reads {name!r}, which is set only when the tokenizer config defines that special token or the "
                    "caller passes it; otherwise it is undefined"
                )
            else:
                message = (
                    f"reads {name!r}{common}, which is set only when the caller passes it as a chat-template kwarg; "
                    "otherwise it is undefined"
                )
            yield self.diagnostic(
                first.line,
                first.column,
                message,
                end_column=first.column + len(name),
            )
