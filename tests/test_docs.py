"""The docs render without warnings, and the README starts with the two newcomer commands."""

import subprocess
import sys
from pathlib import Path

import pytest

from .engine import need_module

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("doc", ["README.rst", "docs/benchmarks.rst"])
def test_rst_renders_cleanly(doc):
    docutils_core = need_module("docutils.core", "the docs extra of `make setup`")
    docutils_core.publish_string((ROOT / doc).read_text(), writer="null",
                                 settings_overrides={"report_level": 2, "halt_level": 2})


def test_readme_opens_with_demo_and_test_commands():
    head = (ROOT / "README.rst").read_text().splitlines()[:8]
    assert any(line.strip().startswith("make demo") for line in head)
    assert any(line.strip().startswith("make test") for line in head)


def test_benchmark_images_exist():
    text = (ROOT / "docs" / "benchmarks.rst").read_text()
    images = [line.split("::", 1)[1].strip() for line in text.splitlines()
              if line.startswith(".. image::")]
    assert images
    for image in images:
        assert (ROOT / "docs" / image).stat().st_size > 10_000


def test_generated_tables_match_their_raw_results():
    """#29: the tables scripts/docs_tables.py writes from docs/results are what the document
    shows; a hand edit or a changed raw file fails here."""
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_tables.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_test_the_readme_names_exists():
    """The README's guarantees name their tests (#28): a renamed or removed test fails here."""
    import re

    text = (ROOT / "README.rst").read_text()
    last_file = None
    checked = 0
    for match in re.finditer(r"``(test_\w+\.py)?::(test_\w+)``", text):
        path, name = match.group(1) or last_file, match.group(2)
        last_file = path
        assert path is not None, f"{name}: no file before it"
        source = (ROOT / "tests" / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{path}::{name} does not exist"
        checked += 1
    assert checked >= 15
