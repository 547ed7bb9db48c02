"""The generated sections of README.md and docs/ are current, and the README's
test command is the one CI runs."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _update_docs():
    spec = importlib.util.spec_from_file_location("update_docs", ROOT / "scripts" / "update_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # builds every variant for its params and MACs
def test_generated_sections_are_current():
    update = _update_docs()
    checked = 0
    for path in update.documents():
        text = path.read_text()
        checked += text.count("<!-- begin:")
        assert update.render(text, path) == text, f"{path}: run python scripts/update_docs.py"
    assert checked >= 5  # the variant, weights, recipe and speed tables at least


def test_readme_test_command_is_the_one_ci_runs():
    """.ci/run reads the command from the README (readme_block test-command)."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"<!-- test-command -->\n```\w*\n(.+?)\n```", readme, re.S).group(1).strip()
    assert command.startswith("python -m pytest -q")
    assert 'test_command="$(readme_block test-command)"' in ci
    assert 'bash -euo pipefail -c "$test_command"' in ci
