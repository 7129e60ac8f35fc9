"""The Python examples in the README and docs/ run as written.

Blocks fenced as ```python run here; ```py marks a snippet that needs a run directory.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_python_example_runs(capsys):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert "True" in capsys.readouterr().out


@pytest.mark.slow
def test_docs_python_examples_run():
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S):
            exec(compile(block, str(doc), "exec"), {})
