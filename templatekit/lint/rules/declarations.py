"""Capability declarations (``{# templatekit: capabilities tools=false #}``) kept honest.

A declaration tells the behavioural checks (TK6xx) which fixtures to skip; ``templatekit
.capabilities`` reads it from the template's real comment tokens. Two things can go wrong, and
each is reported where the comment opens:

- TK092: the comment cannot be (wholly) understood — a misspelled or unknown capability, a value
  other than true/false, no setting at all, a misspelled ``capabilities`` keyword, one name
  declared both true and false. Whatever is not understood is ignored, so the author believes a
  gap is declared when it is not. Found from the text alone.
- TK615: the probe contradicts the declaration — declared unsupported, yet the probe renders it.
  The declaration then skips checks the template could run and hides what they would find.
  Found by rendering, so it is a behaviour rule (``static-only`` skips it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from ...behaviour import behaviour_of
from ...capabilities import DESCRIPTIONS, Declarations, read_declarations
from ..model import Diagnostic
from ..registry import Rule, register
from ..target import LintTarget
from .behaviour import not_checkable


def declarations_of(target: LintTarget) -> Declarations:
    """The target's capability comments, read once for every rule that asks."""
    return target.shared("capabilities:declarations", read_declarations)


@register
class InvalidCapabilityDeclaration(Rule):
    """A capability declaration comment that cannot be understood.

    Why: ``{# templatekit: capabilities ... #}`` tells the behavioural checks which fixtures the
    template does not support. A setting that cannot be understood (a misspelled or unknown
    capability such as ``tols``, a value other than true or false such as ``tools=0``, a comment
    with no setting, a misspelled ``capabilities`` keyword) is ignored, so the checks the author
    meant to skip still run and the declaration silently means nothing; a name declared both
    true and false keeps only the last. Settings are ``name=true|false``, separated by spaces or
    commas. A misspelled keyword such as ``capability`` is reported here, not as an unknown
    suppression (TK091).

    Bad:
        {# templatekit: capabilities tols=false #}
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}

    Good:
        {# templatekit: capabilities tools=false #}
        {% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}
    """

    code, name, severity = "TK092", "invalid-capability-declaration", "warning"
    needs_tree = False

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        # The suppression parser leaves declarations, and comments that look like a misspelled
        # one, to this rule: one finding per comment.
        return [self.diagnostic(problem.line, problem.column, problem.message)
                for problem in declarations_of(target).problems]


@register
class StaleCapabilityDeclaration(Rule):
    """A capability is declared unsupported, but the template renders it.

    Why: a declared gap makes the behavioural checks (TK6xx) skip every fixture that needs it,
    on the author's word. When probing finds the capability's needle in the output (the template
    prints the tool definitions it was declared not to support), the declaration is stale: it
    hides whatever those checks would find, and "no findings" no longer means they passed. A
    probe's "yes" cannot be a false alarm, since the needle is in the rendered text. This is its
    own rule rather than part of TK614 (an info that lists undeclared gaps): the template is
    fine, the declaration is wrong, as an unused suppression is (TK090), and it warns. Reported
    where the comment that counts opens, or on line 1 when the config's ``capabilities`` table
    declares it. Remove the setting, or set it to true; if the template renders it on purpose
    but the model was never trained for it, keep the setting and silence this finding with
    ``{# templatekit: disable-next-line=TK615 #}`` above the declaration.

    Bad:
        {# templatekit: capabilities tools=false #}
        {% if tools %}{{ tools|tojson }}{% endif %}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}

    Good:
        {# templatekit: capabilities documents=false #}
        {% if tools %}{{ tools|tojson }}{% endif %}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}
    """

    code, name, severity = "TK615", "stale-capability-declaration", "warning"
    behavioural: ClassVar[bool] = True

    def check(self, target: LintTarget) -> Iterable[Diagnostic]:
        behaviour = behaviour_of(target)
        if not_checkable(behaviour):
            return []  # nothing was checked: TK614 says so
        capabilities = behaviour.capabilities
        stale = capabilities.contradicted()
        if not stale:
            return []
        commented = capabilities.declarations.effective()
        # One finding per place that declares: the comment whose setting counts, or line 1 for
        # the config's table.
        by_place: dict[tuple[int, int], list[str]] = {}
        for name in stale:
            if capabilities.sources.get(name) == "comment":
                place = (commented[name].line, commented[name].column)
            else:
                place = (1, 1)
            by_place.setdefault(place, []).append(name)
        skipped = behaviour.not_evaluated()
        found = []
        for (line, column), names in sorted(by_place.items()):
            origin = "declares" if capabilities.sources.get(names[0]) == "comment" else \
                "the config's capabilities table declares"
            settings = ", ".join(f"{name}=false" for name in names)
            rendered = ", ".join(DESCRIPTIONS[name] for name in names)
            fixtures = [fixture for fixture, missing in skipped if set(missing) & set(names)]
            if fixtures:
                consequence = f"not evaluated because of it: {', '.join(fixtures)}"
            else:
                consequence = "the checks that need it are skipped"
            found.append(self.diagnostic(line, column, (
                f"{origin} {settings}, but probing shows the template renders {rendered}; "
                f"{consequence}; remove the setting or set it to true")))
        return found
