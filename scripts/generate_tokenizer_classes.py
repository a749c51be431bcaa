"""Regenerate templatekit/data/tokenizer_classes.json from the installed transformers.

templatekit works out which tokenizer class ``AutoTokenizer.from_pretrained(directory)`` would
instantiate, and that class's special-token defaults, without importing transformers (lint must
stay fast). The facts it needs are transformers' own tables, copied here into a data file:

- ``model_type_tokenizer_class``: ``TOKENIZER_MAPPING_NAMES`` (config.json ``model_type`` -> class
  name, with the ``MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS`` entries transformers adds), which
  ``AutoTokenizer`` compares with the Hub's ``tokenizer_class``;
- ``config_class_tokenizer_class``: for every ``model_type`` whose config class is a key of
  ``TOKENIZER_MAPPING``, the class ``TOKENIZER_MAPPING[config class]`` loads (the fallback when no
  tokenizer_class is named, and what makes a local class exist next to ``auto_map``); a model type
  missing here has no config class, or one ``TOKENIZER_MAPPING`` lacks;
- ``incorrect_hub_class_model_types`` and ``generic_checkpoint_patterns``: the two override lists;
- ``class_names``: what ``tokenizer_class_from_name`` returns for every name a config may give
  (the mapping's names, each with "Fast", and the tokenizer classes transformers exports), by the
  returned class's ``__name__`` (null: transformers finds no class);
- ``class_defaults``: each of those classes' ``__init__`` defaults for the standard special tokens
  (read with ``inspect``), kept only where they change what a template receives: a string, or a
  ``pad_token`` of None (the class passes it, so tokenizer.json's padding token does not fill it).

Run after upgrading transformers, then run tests/test_tokenizer_class_table.py::

    python scripts/generate_tokenizer_classes.py            # rewrites the data file
    python scripts/generate_tokenizer_classes.py --check    # exit 1 when the file is stale
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import warnings
from pathlib import Path

DATA_FILE = Path(__file__).resolve().parent.parent / "templatekit" / "data" / "tokenizer_classes.json"
STANDARD_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def build() -> dict:
    warnings.simplefilter("ignore")
    import transformers
    from transformers.models.auto import tokenization_auto as auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES, CONFIG_MAPPING

    transformers.logging.set_verbosity_error()
    registered = dict(auto.TOKENIZER_MAPPING_NAMES)

    by_config: dict[str, str | None] = {}
    for model_type in CONFIG_MAPPING_NAMES:
        try:
            config_class = CONFIG_MAPPING[model_type]
        except Exception:  # noqa: BLE001 - a config class whose optional dependency is missing
            continue
        if config_class not in auto.TOKENIZER_MAPPING:
            continue
        try:
            found = auto.TOKENIZER_MAPPING[config_class]
        except Exception:  # noqa: BLE001 - the mapping names no importable class
            found = None
        by_config[model_type] = getattr(found, "__name__", None)

    candidates = {name for name in registered.values() if name}
    candidates |= {name + "Fast" for name in list(candidates)}
    candidates |= {name for name in dir(transformers) if name.endswith(("Tokenizer", "TokenizerFast", "Backend"))}
    candidates |= {"BloomTokenizer", "BloomTokenizerFast", "TokenizersBackend", "PreTrainedTokenizerFast",
                   "PreTrainedTokenizer", "PythonBackend"}
    class_names: dict[str, str | None] = {}
    classes: dict[str, type] = {}
    for name in sorted(candidates):
        try:
            found = auto.tokenizer_class_from_name(name)
        except Exception:  # noqa: BLE001 - a class whose optional dependency is missing
            found = None
        if not inspect.isclass(found):
            found = None
        class_names[name] = found.__name__ if found is not None else None
        if found is not None:
            classes[found.__name__] = found
    for model_type, name in by_config.items():
        if name is not None and name not in classes:
            classes[name] = auto.TOKENIZER_MAPPING[CONFIG_MAPPING[model_type]]

    defaults: dict[str, dict[str, str | None]] = {}
    for name, cls in sorted(classes.items()):
        found = _init_defaults(cls)
        if found:
            defaults[name] = found
    return {
        "transformers_version": transformers.__version__,
        "model_type_tokenizer_class": dict(sorted(registered.items())),
        "config_class_tokenizer_class": dict(sorted(by_config.items())),
        "incorrect_hub_class_model_types": sorted(auto.MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS),
        "generic_checkpoint_patterns": list(auto.MODEL_IDS_TO_TOKENIZERS_BACKEND),
        "class_names": class_names,
        "class_defaults": defaults,
    }


def _init_defaults(cls: type) -> dict[str, str | None]:
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    found: dict[str, str | None] = {}
    for key in STANDARD_SPECIAL_TOKENS:
        parameter = parameters.get(key)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            continue
        value = parameter.default
        if value is None:
            if key == "pad_token":
                found[key] = None
            continue
        content = getattr(value, "content", value)
        if isinstance(content, str):
            found[key] = content
    return found


def render(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the data file differs, write nothing")
    parser.add_argument("--output", type=Path, default=DATA_FILE)
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale: run python scripts/generate_tokenizer_classes.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
