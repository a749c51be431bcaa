"""The rule families; importing this package registers every rule."""

from importlib import import_module

# One module per family (TK0xx syntax, TK1xx whitespace, ...), imported in code order.
FAMILY_MODULES: tuple[str, ...] = ("syntax", "whitespace", "portability", "structure", "tools", "tokenizer", "behaviour", "security")

for _module in FAMILY_MODULES:
    import_module(f"{__name__}.{_module}")
from . import declarations  # noqa: E402,F401 - capability declaration rules (TK092, TK615)
