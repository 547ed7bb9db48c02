"""The README's generated tables are current, and its commands are the CI's."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _update_readme():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_sections_are_current():
    text = (ROOT / "README.md").read_text()
    assert "<!-- begin:variants -->" in text
    assert _update_readme().render(text) == text, "run: python scripts/update_readme.py"


def test_readme_test_command_is_the_one_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"<!-- test-command -->\n```\w*\n(.+?)\n```", readme, re.S).group(1).strip()
    assert command in ci
