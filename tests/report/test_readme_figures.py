"""The README's figures table comes from a study's figures.md, copied between markers by tools/readme_figures.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("readme_figures", REPO / "tools" / "readme_figures.py")
assert _spec and _spec.loader
readme_figures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_figures)


def test_the_readme_has_one_figures_block_and_fill_replaces_only_it():
    readme = (REPO / "README.md").read_text()
    assert readme.count(readme_figures.BEGIN) == 1 and readme.count(readme_figures.END) == 1
    filled = readme_figures.fill(readme, "12 of 13 published figures reproduced\n\n| job | a |\n")
    again = readme_figures.fill(filled, "13 of 13 published figures reproduced\n")
    before, _, after = readme.partition(readme_figures.BEGIN)
    assert again.startswith(before) and again.endswith(after.partition(readme_figures.END)[2])
    assert "13 of 13 published figures reproduced" in again and "12 of 13" not in again
