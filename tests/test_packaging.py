"""The package ships everything it imports, and stays cheap to import."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "templatekit").rglob("__init__.py")}
    assert found - listed == set()


def test_import_and_static_lint_do_not_load_heavy_modules(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}", encoding="utf-8")
    code = (
        "import sys\n"
        "from templatekit.cli import main\n"
        "from templatekit.lint.runner import lint_paths\n"
        f"lint_paths([{str(template)!r}], use_cache=False)\n"
        "heavy = sorted(m for m in ('transformers', 'torch', 'hypothesis', 'numpy', 'gguf', 'tokenizers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == ""
