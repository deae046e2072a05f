"""Every ```python block of docs/agents.md runs, each on its own, so the examples cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "agents.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[tuple[int, str]]:
    """``(line number, code)`` of every python block."""
    text = DOC.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_the_guide_has_examples() -> None:
    assert len(python_blocks()) >= 5


@pytest.mark.parametrize(
    ("line", "code"), [pytest.param(n, c, id=f"line-{n}") for n, c in python_blocks()]
)
def test_example_runs(line: int, code: str) -> None:
    # Pad with blank lines so a traceback points at the line of docs/agents.md.
    compiled = compile("\n" * line + code, str(DOC), "exec")
    exec(compiled, {"__name__": f"docs_agents_line_{line}"})
