"""TK2xx portability: constructs transformers renders that other Jinja engines reject or render
differently.

A chat template written for transformers also runs in minijinja (TGI, mistral.rs, minijinja-py),
minijinja-js, @huggingface/jinja (transformers.js, the Hub) and minja (llama.cpp). Every engine
claim in this module was measured by rendering the construct in @huggingface/jinja 0.5.11,
minijinja-py 3.1 and minijinja-js 2.11 (the last two with pycompat on), or read in minja's
source (``include/minja/minja.hpp``); ``shared/research/engines.md`` has the corpus-wide numbers.
A construct that every one of these engines handles is not reported, even where the Python
spelling looks foreign (``True``/``None`` literals parse everywhere).

Most rules work on the token stream, because Jinja nodes carry a line but no column and a fix
must know exact offsets; the rest walk the AST and locate themselves with a needle on the line.
"""

from importlib import import_module

# One module per group of rules, imported in code order; importing one registers its rules.
_RULE_MODULES: tuple[str, ...] = (
    "methods", "statements", "formatting", "values", "syntax_edges", "filters", "message_fields", "schema", "operators",
)

for _module in _RULE_MODULES:
    import_module(f"{__name__}.{_module}")
