"""TK5xx: special tokens — what the template emits, checked against the model's tokenizer.

These rules run only when the source comes with a tokenizer (a model directory with
tokenizer.json or tokenizer_config.json, a config file inside one, or a GGUF file): the runner
puts a ``templatekit.vocabulary.Vocabulary`` on the lint target, and without one they find
nothing. They render the template through ``templatekit.behaviour`` (sharing the renders with
the TK6xx rules), so they are ``behavioural`` and ``static-only`` skips them.

What counts as a special-token reference. Only some literals are meant as single tokens:

- the named tokens the tokenizer config declares (``bos_token``, ``eos_token``, ...);
- the conventional names ``<s>``, ``</s>``, ``<unk>``, ``<pad>``, ``<bos>``, ``<eos>``,
  ``<start_of_turn>``, ``<end_of_turn>``;
- ``<|...|>``, ``<｜...｜>`` and ``[UPPER_CASE]`` literals, but only when the vocabulary itself
  has added (whole-matched) tokens spelled that way. Zephyr's ``<|user|>`` on a Mistral vocabulary, or
  Llama 2's ``[INST]``, are plain text by design: those vocabularies have no such tokens, and
  the models were trained on the pieces.

The word between Llama 3's ``<|start_header_id|>`` and ``<|end_header_id|>`` (and the role word
after ``<|im_start|>``) is plain text by design and is never a marker here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from jinja2 import nodes

from ...behaviour import Behaviour, behaviour_of, common_prefix_length, input_strings
from ...conversation import Conversation
from ..engine import run_rules
from ..model import Diagnostic
from ..registry import Rule, register
from ..target import LintTarget

# Delimiters that mark a literal as a special token wherever the vocabulary uses them.
MARKER_FAMILIES = {
    "<|...|>": re.compile(r"<\|[^<>|\s]{1,80}\|>"),
    "<｜...｜>": re.compile(r"<｜[^<>｜\n]{1,80}｜>"),
    "[UPPER]": re.compile(r"\[/?[A-Z][A-Z0-9_]*\]"),
}
CONVENTIONAL_TOKENS = frozenset({"<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"})
_MARKER = re.compile("|".join(
    [pattern.pattern for pattern in MARKER_FAMILIES.values()]
    + [re.escape(token) for token in sorted(CONVENTIONAL_TOKENS, key=len, reverse=True)]
))
_WHITESPACE = " \t\r\n"
_MISSING = object()

# Replies whose surroundings show what ends an assistant turn (unique text no template rewrites).
REPLY, FIRST_QUESTION, NEXT_QUESTION, SYSTEM = "SentinelA1Qx7", "SentinelU1Qx7", "SentinelU2Qx7", "SentinelS1Qx7"


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _reply() -> dict:
    return {"role": "assistant", "content": REPLY}


# Conversations that show what ends an assistant turn: the user's question alone (rendered with
# the generation prompt), the reply as the last message (what a model generates to finish, and
# what training data ends with) and the reply in history (how a turn closes when the final one is
# left open). The second set serves templates that need a system message.
REPLY_VARIANTS = (
    ("", []),
    ("+system", [{"role": "system", "content": SYSTEM}]),
)
# How far the prompt with the generation prompt may differ from the start of the conversation with
# the reply and still have the reply where the model generates it (``<think>\n`` and the like).
PROMPT_TAIL_ALLOWANCE = 32
# Beyond this many characters after a reply, no end-of-turn token is being looked for any more.
ENDING_SCAN_LIMIT = 2000


class TokenizerRule(Rule):
    """A rule that needs the model's tokenizer: finds nothing without one."""

    behavioural: ClassVar[bool] = True
    needs_vocabulary: ClassVar[bool] = True
    # The tokenizer the docstring's examples are checked with (vocabulary_from_mapping's format);
    # "good" falls back to "bad".
    example_tokenizers: ClassVar[dict[str, dict[str, Any]]] = {}

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        vocabulary = getattr(target, "vocabulary", None)
        if vocabulary is None:
            return []
        return list(self.findings(target, vocabulary))

    def findings(self, target: LintTarget, vocabulary: Any) -> Iterator[Diagnostic]:
        return iter(())

    @classmethod
    def example_target(cls, example: str) -> LintTarget:
        mapping = cls.example_tokenizers.get(example) or cls.example_tokenizers["bad"]
        return target_with_tokenizer(getattr(cls.doc(), example), mapping)


def target_with_tokenizer(text: str, mapping: dict[str, Any], **options: Any) -> LintTarget:
    """A lint target whose tokenizer is described by ``mapping`` (see ``vocabulary_from_mapping``)."""
    from ...vocabulary import vocabulary_from_mapping

    vocabulary = vocabulary_from_mapping(mapping)
    return LintTarget(text, special_tokens=vocabulary.special_tokens, vocabulary=vocabulary, **options)


def tokenizer_rules() -> list[type[Rule]]:
    """Every rule of this family, by code."""
    return [rule for code, rule in sorted(_FAMILY.items())]


def tokenizer_findings(template_text: str, special_tokens: dict[str, str] | None, vocabulary: Any,
                       *, config: Any = None) -> list[Diagnostic]:
    """The TK5xx findings for one template and tokenizer, through the lint engine (so
    ``{# templatekit: disable=TK502 #}`` comments apply). ``special_tokens`` are the named tokens
    the template is rendered with (``tokenizer.special_tokens_map``); ``vocabulary`` comes from
    ``load_vocabulary`` or ``vocabulary_from_tokenizer``. Each Diagnostic's line and column point
    into ``template_text``."""
    target = LintTarget(template_text, special_tokens=special_tokens, vocabulary=vocabulary, config=config)
    return run_rules(target, [rule() for rule in tokenizer_rules()])


# ---------------------------------------------------------------------------------------------
# what the template emits


class Emitted:
    """What a template emits, as the special-token rules see it.

    ``literals`` lists the special-token-like literals it emits (in its text, in string constants
    that reach the output, or in any render, but not copied from the messages) that are meant as
    single tokens (see the module docstring); the methods give the text after an assistant reply
    and the start of every prompt.
    """

    def __init__(self, target: LintTarget, vocabulary: Any) -> None:
        self.vocabulary = vocabulary
        self.behaviour: Behaviour = behaviour_of(target)
        self.declared = {value: name for name, value in target.special_tokens.items() if isinstance(value, str) and value}
        # Tokens the renders fill in for names the tokenizer does not declare; transformers would
        # leave those names undefined, so text equal to them says nothing about this tokenizer.
        self.phantoms = {value for name, value in self.behaviour.special_tokens.items()
                         if name not in target.special_tokens and value not in self.declared}
        # The delimiter styles this vocabulary spells its own whole-matched tokens in.
        self.families = {name for name, pattern in MARKER_FAMILIES.items()
                         if any(pattern.fullmatch(token) for token in vocabulary.atomic)}
        found: dict[str, None] = {}
        for text in _static_output_strings(target):
            for match in _MARKER.finditer(text):
                found.setdefault(match.group(), None)
        for text, inputs in self.renders():
            for match in _MARKER.finditer(text):
                literal = match.group()
                if literal not in self.phantoms and not any(literal in item for item in inputs):
                    found.setdefault(literal, None)
            for value in self.declared:
                if value in text and not any(value in item for item in inputs):
                    found.setdefault(value, None)
        self.literals = [literal for literal in found if self.meant_as_token(literal)]

    def renders(self) -> Iterator[tuple[str, list[str]]]:
        """(text, the strings it was rendered from) for every render that succeeded."""
        for fixture in self.behaviour.evaluated():
            rendering = self.behaviour.fixture_render(fixture)
            if rendering.ok:
                yield rendering.text, input_strings(fixture, {})
        for _kind, texts in self.reply_renders():
            yield texts

    def meant_as_token(self, literal: str) -> bool:
        if literal in self.declared or literal in CONVENTIONAL_TOKENS:
            return True
        return any(MARKER_FAMILIES[name].fullmatch(literal) for name in self.families)

    def reply_renders(self) -> Iterator[tuple[str, tuple[str, list[str]]]]:
        """("prompt" | "final" | "history", (text, input strings)) for the first variant of the reply
        conversations that renders."""
        for suffix, lead in REPLY_VARIANTS:
            question = [*lead, _user(FIRST_QUESTION)]
            conversations = {
                "prompt": (question, True),
                "final": ([*question, _reply()], False),
                "history": ([*question, _reply(), _user(NEXT_QUESTION)], False),
            }
            renders = {kind: self.behaviour.render(f"tokens:{kind}{suffix}", Conversation(messages), prompt)
                       for kind, (messages, prompt) in conversations.items()}
            if all(rendering.ok for rendering in renders.values()):
                for kind, rendering in renders.items():
                    yield kind, (rendering.text, [message["content"] for message in conversations[kind][0]])
                return

    def reply_endings(self) -> list[str] | None:
        """The text after the assistant's reply, in the final message and then in history; None
        when the reply is not where the model generates it (a classifier template that quotes a
        conversation and asks about it, say), or nothing rendered."""
        texts = {kind: text for kind, (text, _inputs) in self.reply_renders()}
        if not texts or REPLY not in texts["final"]:
            return None
        prompt, final = texts["prompt"], texts["final"]
        if len(prompt) - common_prefix_length(prompt, final) > PROMPT_TAIL_ALLOWANCE:
            return None
        endings = []
        for kind in ("final", "history"):
            text = texts[kind]
            if REPLY not in text:
                continue
            after = text[text.index(REPLY) + len(REPLY):]
            if kind == "history" and NEXT_QUESTION in after:
                after = after[:after.index(NEXT_QUESTION)]
            endings.append(self.without_phantoms(after)[:ENDING_SCAN_LIMIT])
        return endings

    def first_token(self, text: str) -> str | None | object:
        """The first token of ``text`` a tokenizer matches whole (plain text before it is skipped:
        closing tags like ``</answer>`` come before the end-of-turn token); ``_MISSING`` when a
        marker meant as a token but unknown to, or split by, this vocabulary comes first; None
        when there is none."""
        position = 0
        while position < len(text):
            token = self.vocabulary.atomic_at(text, position)
            if token is not None:
                return token
            marker = _MARKER.match(text, position)
            if marker is not None and self.meant_as_token(marker.group()):
                matched = self.vocabulary.token_for(marker.group())
                return matched if matched is not None else _MISSING
            position += 1
        return None

    def touched_single_word(self, literal: str) -> str | None:
        """Where a render has ``literal``, a single_word added token, touching a word character
        (so the tokenizer does not match it there), as a short excerpt; None when nowhere."""
        if literal not in self.vocabulary.single_word:
            return None
        for text, _inputs in self.renders():
            at = text.find(literal)
            while at >= 0:
                if self.vocabulary.atomic_at(text, at) != literal:
                    return text[max(0, at - 8): at + len(literal) + 8]
                at = text.find(literal, at + 1)
        return None

    def without_phantoms(self, text: str) -> str:
        for phantom in self.phantoms:
            text = text.replace(phantom, "")
        return text

    def prompt_starts(self, keep_leading: bool = False) -> Iterator[tuple[str, str]]:
        """(fixture name, rendered prompt without leading whitespace, unless ``keep_leading``) for
        each fixture, without the stand-ins for tokens the tokenizer does not declare
        (transformers renders those names as nothing)."""
        for fixture in self.behaviour.evaluated():
            rendering = self.behaviour.fixture_render(fixture)
            if rendering.ok:
                text = self.without_phantoms(rendering.text)
                yield fixture.name or "fixture", text if keep_leading else text.lstrip(_WHITESPACE)


def emitted(target: LintTarget) -> Emitted:
    return target.shared("tokens:emitted", lambda target: Emitted(target, target.vocabulary))


def _static_output_strings(target: LintTarget) -> list[str]:
    """Template text and string constants that can reach the output (not those only compared,
    tested, indexed with or passed as arguments: ``content.split('</think>')`` emits nothing)."""
    found: list[str] = []

    def walk(node: nodes.Node, emitted: bool) -> None:
        if isinstance(node, nodes.TemplateData):
            found.append(node.data)
        elif isinstance(node, nodes.Const) and isinstance(node.value, str) and emitted:
            found.append(node.value)
        for field, value in node.iter_fields():
            inner_emitted = emitted and not _argument_field(node, field)
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, nodes.Node):
                    walk(child, inner_emitted)
                elif isinstance(child, tuple):  # dict items and similar pairs
                    for item in child:
                        if isinstance(item, nodes.Node):
                            walk(item, inner_emitted)

    if target.tree is not None:
        walk(target.tree, True)
    return found


def _argument_field(node: nodes.Node, field: str) -> bool:
    if isinstance(node, (nodes.Compare, nodes.Test)):
        return True
    if isinstance(node, (nodes.Call, nodes.Filter)) and field in ("args", "kwargs", "dyn_args", "dyn_kwargs"):
        return True
    if isinstance(node, nodes.Getitem) and field == "arg":
        return True
    return isinstance(node, (nodes.If, nodes.CondExpr)) and field == "test"


def _locate(target: LintTarget, *needles: str) -> tuple[int, int]:
    """Where the first of ``needles`` first appears in the template (1:1 when none does)."""
    for needle in needles:
        if needle:
            at = target.text.find(needle)
            if at >= 0:
                return target.position(at)
    return 1, 1


def _fixture_phrase(name: str) -> str:
    return f"fixture '{name}'"


# ---------------------------------------------------------------------------------------------
# the rules


@register
class DoubledBos(TokenizerRule):
    """The prompt starts with BOS and the tokenizer's default encoding adds another.

    Why: ``apply_chat_template(tokenize=True)`` encodes with ``add_special_tokens=False``, but
    code that renders the prompt as text and then tokenizes it with the defaults (servers,
    training scripts, ``tokenizer(prompt)``) gets the tokenizer's BOS in front of the template's:
    ``[BOS, BOS, ...]``, a sequence the model never saw in training, which measurably degrades
    answers. Many official templates do this by design, so this is information for the people
    who feed the prompt onward: tokenize it with ``add_special_tokens=False``. When every caller
    goes through the template, the tokenizer can stop adding one instead (tokenizer.json's
    ``post_processor``, which transformers 5 follows; ``add_bos_token`` in tokenizer_config.json
    without a tokenizer.json; ``tokenizer.ggml.add_bos_token`` in GGUF). In the examples the
    tokenizer's BOS is ``<s>``; for the bad one the tokenizer adds it by default, for the good
    one it does not.

    Bad:
        {{ bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}

    Good:
        {# the tokenizer adds no BOS of its own (no BOS in tokenizer.json's post_processor) #}
        {{- bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}
    """

    code = "TK501"
    name = "doubled-bos"
    severity = "info"
    example_tokenizers = {
        "bad": {"special": ["<s>", "</s>"], "bos": "<s>", "eos": "</s>", "add_bos": True},
        "good": {"special": ["<s>", "</s>"], "bos": "<s>", "eos": "</s>", "add_bos": False},
    }

    def findings(self, target: LintTarget, vocabulary: Any) -> Iterator[Diagnostic]:
        if not vocabulary.prepended:
            return
        for fixture, raw in emitted(target).prompt_starts(keep_leading=True):
            prompt = raw.lstrip(_WHITESPACE)
            # A token the tokenizer does not match whole in text (split_special_tokens) is not a
            # BOS in the prompt: only the added one is.
            added = next((token for token in vocabulary.prepended
                          if prompt.startswith(token) and not vocabulary.split_in_text(token)), None)
            if added is None:
                continue
            lead = raw[:len(raw) - len(prompt)]
            start = f"starts with {lead!r} and then {added!r}" if lead else f"already starts with {added!r}"
            front = " in front of the whitespace" if lead else " in front"
            line, column = _locate(target, *_names_for(target, added), added)
            if vocabulary.gguf:
                other = vocabulary.transformers_prepended
                also = "" if other is None else (
                    " (transformers with gguf_file= does too)" if added in other
                    else " (transformers with gguf_file= adds none: this is llama.cpp's behaviour)")
                yield self.diagnostic(line, column, (
                    f"{_fixture_phrase(fixture)}: the prompt {start}, and llama.cpp, tokenizing it with its default "
                    f"of adding special tokens, puts another {added!r}{front}{also}, so the model sees it twice; "
                    "callers that tokenize the rendered prompt must not add BOS"))
                return
            yield self.diagnostic(line, column, (
                f"{_fixture_phrase(fixture)}: the prompt {start}, and tokenizing it with "
                f"add_special_tokens=True (the default) puts another {added!r}{front}, so the model sees it twice; "
                "apply_chat_template(tokenize=True) is unaffected, text callers must pass add_special_tokens=False"))
            return


@register
class TurnEndNotEos(TokenizerRule):
    """The token that ends an assistant turn is not an end-of-generation id.

    Why: a model learns to emit whatever the template puts after its reply. Generation stops
    only on the ids in ``generation_config.eos_token_id`` (and the tokenizer's ``eos_token``;
    for GGUF, llama.cpp's end-of-generation set), so when the turn ends with another token, say
    ``<|im_end|>`` while the eos is ``</s>``, the model closes its turn and keeps going: it
    writes the next user turn itself until the length limit. Add the end-of-turn token to
    ``eos_token_id`` in generation_config.json (a list is allowed), or end the turn with
    ``eos_token``. In the examples ``<|im_end|>`` is a special token and the eos is ``</s>``.

    Bad:
        {% for m in messages %}<|im_start|>{{ m.role }}
        {{ m.content }}<|im_end|>
        {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
        {% endif %}

    Good:
        {% for m in messages %}<|im_start|>{{ m.role }}
        {{ m.content }}{{ eos_token }}
        {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
        {% endif %}
    """

    code = "TK502"
    name = "turn-end-not-eos"
    severity = "warning"
    example_tokenizers = {"bad": {"special": ["<s>", "</s>", "<|im_start|>", "<|im_end|>"], "bos": "<s>", "eos": "</s>"}}

    def findings(self, target: LintTarget, vocabulary: Any) -> Iterator[Diagnostic]:
        analysis = emitted(target)
        endings = analysis.reply_endings()
        if endings is None:
            return
        plain = None
        for ending in endings:
            token = analysis.first_token(ending)
            if token is _MISSING:
                return  # a marker this vocabulary lacks or splits: TK503/TK504 report it
            if token is not None:
                break
            plain = plain or ending.strip(_WHITESPACE)
        else:
            line, column = _locate(target, (plain or "").split("\n", 1)[0].strip())
            if plain:
                yield self.diagnostic(line, column, (
                    f"an assistant reply is followed only by plain text ({plain[:32]!r}), never by a special token: "
                    f"nothing makes generation stop after the reply (end-of-generation ids: {vocabulary.eos_description()})"))
            else:
                yield self.diagnostic(line, column, (
                    "nothing follows an assistant reply, in the final message or in history: no end-of-turn token "
                    f"teaches the model to stop (end-of-generation ids: {vocabulary.eos_description()})"))
            return
        token_id = vocabulary.atomic[token]
        if token_id in vocabulary.eos_ids:
            return
        line, column = _locate(target, token, *_names_for(target, token))
        where = "llama.cpp's end-of-generation set for this GGUF" if vocabulary.gguf else "eos ids"
        yield self.diagnostic(line, column, (
            f"assistant turns end with {vocabulary.describe(token_id)}, which is not an end-of-generation id "
            f"({where}: {vocabulary.eos_description()}): generation will not stop after the reply; "
            + (f"set tokenizer.ggml.eot_token_id to {token_id} in the GGUF metadata" if vocabulary.gguf
               else f"add {token_id} to eos_token_id in generation_config.json")))


@register
class MarkerNotSingleToken(TokenizerRule):
    """A special-token marker the template emits is split into several tokens.

    Why: role markers and turn delimiters (``<|im_start|>``, ``<start_of_turn>``,
    ``<|start_header_id|>``) work because each is one special token that user text cannot
    imitate and that a model was trained to see whole. When the vocabulary holds the marker only
    as an ordinary entry (a GGUF whose token type says "normal", a tokenizer.json whose
    ``added_tokens`` lacks it), tokenizers do not match it whole: the rendered prompt is cut into
    ``<``, ``|``, ``im``, ... pieces the model never saw as a marker. Register the marker as a
    special (added/control) token. In the examples ``<|im_end|>`` is special but ``<|im_start|>``
    is an ordinary vocabulary entry.

    Bad:
        {% for m in messages %}<|im_start|>{{ m.role }}
        {{ m.content }}<|im_end|>
        {% endfor %}

    Good:
        {# tokenizer.json: <|im_start|> is an added special token #}
        {% for m in messages %}<|im_start|>{{ m.role }}
        {{ m.content }}<|im_end|>
        {% endfor %}
    """

    code = "TK503"
    name = "marker-not-single-token"
    severity = "warning"
    example_tokenizers = {
        "bad": {"special": ["<|im_end|>"], "plain": ["<|im_start|>"], "eos": "<|im_end|>"},
        "good": {"special": ["<|im_end|>", "<|im_start|>"], "eos": "<|im_end|>"},
    }

    def findings(self, target: LintTarget, vocabulary: Any) -> Iterator[Diagnostic]:
        analysis = emitted(target)
        for literal in analysis.literals:
            token_id = vocabulary.id_of(literal)
            if token_id is None:
                continue
            if not vocabulary.splits(literal):
                touched = analysis.touched_single_word(literal)
                if touched is not None:
                    line, column = _locate(target, literal, *_names_for(target, literal))
                    yield self.diagnostic(line, column, (
                        f"{literal!r} (id {token_id}) is an added token marked single_word, which the tokenizer "
                        f"matches only where no letter, digit or '_' touches it; the prompt has {touched!r}, "
                        "so there it is split into pieces: drop single_word from the token, or keep the marker "
                        "apart from words"))
                continue
            ids = vocabulary.encode(literal)
            if ids and len(ids) == 1:
                split = f"turns it into {vocabulary.describe(ids[0])}"  # a normalizer changed it
            else:
                split = f"splits it into {len(ids)} tokens" if ids else "splits it into pieces"
            line, column = _locate(target, literal, *_names_for(target, literal))
            if vocabulary.split_in_text(literal):
                yield self.diagnostic(line, column, (
                    f"{literal!r} (id {token_id}) is a special token, but tokenizer_config.json sets "
                    f"split_special_tokens: true, so transformers matches no special token in text: tokenizing the "
                    f"rendered prompt (apply_chat_template(tokenize=True) included) {split}, so the model never "
                    "sees the marker; remove split_special_tokens"))
                continue
            if vocabulary.gguf:
                named = [name for name, value in vocabulary.special_tokens.items() if value == literal]
                also = (f" (transformers with gguf_file= adds it as a special token, as the GGUF names it "
                        f"{named[0]}, and keeps it whole)") if named else ""
                yield self.diagnostic(line, column, (
                    f"{literal!r} (id {token_id}) is only an ordinary (normal) token in this GGUF, not a control or "
                    f"user-defined one: llama.cpp {split} when it tokenizes the rendered prompt{also}, so the model "
                    "never sees the marker; set its token type to control"))
                continue
            yield self.diagnostic(line, column, (
                f"{literal!r} (id {token_id}) is only an ordinary vocabulary entry, not a special "
                f"or added token: tokenizing the rendered prompt {split}, so the model never sees the marker"))


@register
class UnknownSpecialToken(TokenizerRule):
    """The template emits a special token that the tokenizer does not have.

    Why: a marker copied from another model's format (Llama 3's ``<|eot_id|>`` in a ChatML
    model, Gemma's ``<start_of_turn>`` elsewhere), or a config naming an eos token its
    vocabulary lacks, is tokenized as a handful of text pieces: the model sees noise where its
    training put a control token, and nothing it generates can match the marker. A declared
    special token that is missing is added by transformers as a new token whose embedding was
    never trained. Use the markers of this model's own format. In the examples the vocabulary
    has the ChatML tokens and its special tokens are spelled ``<|...|>``.

    Bad:
        {% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>

        {{ m.content }}<|eot_id|>{% endfor %}

    Good:
        {% for m in messages %}<|im_start|>{{ m.role }}
        {{ m.content }}<|im_end|>
        {% endfor %}
    """

    code = "TK504"
    name = "unknown-special-token"
    severity = "warning"
    example_tokenizers = {"bad": {"special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "eos": "<|im_end|>"}}

    def findings(self, target: LintTarget, vocabulary: Any) -> Iterator[Diagnostic]:
        analysis = emitted(target)
        for literal in analysis.literals:
            if vocabulary.id_of(literal) is not None or vocabulary.token_for(literal) is not None:
                continue
            where = "a token of this tokenizer" if vocabulary.complete else \
                "among this tokenizer's added tokens (there is no tokenizer.json to say more)"
            declared = analysis.declared.get(literal)
            if declared:
                note = f"; the tokenizer config names it as {declared}, so transformers adds it as a new, untrained token"
            elif literal in vocabulary.added_on_load:
                note = ("; the tokenizer config lists it among its special tokens, so transformers adds it as a new, "
                        "untrained token")
            elif _encodes_to_unknown(vocabulary, literal):
                note = f": it is tokenized as the unknown token {vocabulary.describe(vocabulary.unknown_id)}"
            else:
                note = ": it is tokenized as plain text pieces"
            # A marker built from pieces ('<|' + role + '|>') is shown where its opening delimiter is.
            line, column = _locate(target, literal, *_names_for(target, literal), literal[:2])
            yield self.diagnostic(line, column, f"the template emits {literal!r}, which is not {where}{note}")


def _encodes_to_unknown(vocabulary: Any, literal: str) -> bool:
    """Whether the real tokenizer turns ``literal`` into nothing but its unknown token."""
    unknown = getattr(vocabulary, "unknown_id", None)
    return unknown is not None and vocabulary.encode(literal) == [unknown]


@register
class RepeatedBos(TokenizerRule):
    """The rendered prompt itself starts with BOS twice.

    Why: unlike a BOS the tokenizer adds (TK501), a BOS the template emits twice reaches the
    model on every path, ``apply_chat_template(tokenize=True)`` included: typically a template
    writes ``bos_token`` at the top and again in its system or first-turn branch. The model
    never saw two BOS in training. Emit ``bos_token`` once, before the loop. In the examples the
    tokenizer's BOS is ``<s>`` and it adds none itself.

    Bad:
        {{ bos_token }}{% for m in messages %}{% if loop.first %}{{ bos_token }}{% endif %}[INST] {{ m.content }} [/INST]{% endfor %}

    Good:
        {{ bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}
    """

    code = "TK505"
    name = "repeated-bos"
    severity = "warning"
    example_tokenizers = {"bad": {"special": ["<s>", "</s>"], "bos": "<s>", "eos": "</s>"}}

    def findings(self, target: LintTarget, vocabulary: Any) -> Iterator[Diagnostic]:
        bos = vocabulary.bos_token
        if not bos or target.special_tokens.get("bos_token") != bos:
            return
        for fixture, prompt in emitted(target).prompt_starts():
            if prompt.startswith(bos) and prompt[len(bos):].lstrip(_WHITESPACE).startswith(bos):
                # The second place the template writes BOS is the one to remove.
                places = sorted(match.start() for needle in ("bos_token", bos)
                                for match in re.finditer(re.escape(needle), target.text))
                line, column = target.position(places[1]) if len(places) > 1 else _locate(target, "bos_token", bos)
                yield self.diagnostic(line, column, (
                    f"{_fixture_phrase(fixture)}: the prompt starts with {bos!r} twice; every tokenization of it, "
                    "apply_chat_template(tokenize=True) included, gives the model two BOS tokens"))
                return


def _names_for(target: LintTarget, literal: str) -> list[str]:
    """The special-token variables whose value is ``literal`` (where a template writes it)."""
    return [name for name, value in target.special_tokens.items() if value == literal]


_FAMILY = {rule.code: rule for rule in (DoubledBos, TurnEndNotEos, MarkerNotSingleToken, UnknownSpecialToken, RepeatedBos)}
