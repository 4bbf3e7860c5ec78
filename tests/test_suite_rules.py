"""Rules of the suite itself (#28): `make test` fails where a dependency the README promises
is missing, instead of skipping it quietly."""

from pathlib import Path

import pytest

from .engine import must_have, need_module

ROOT = Path(__file__).resolve().parent.parent


def test_make_test_fails_rather_than_skips_on_a_missing_dependency(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("PYSERVE_STRICT_DEPS", "1")
    assert must_have()
    with pytest.raises(pytest.fail.Exception, match="no_such_module_of_pyserve"):
        need_module("no_such_module_of_pyserve", "make setup installs it")
    monkeypatch.delenv("PYSERVE_STRICT_DEPS")
    assert not must_have()  # make unit, a bare pytest: a skip is allowed
    with pytest.raises(pytest.skip.Exception):
        need_module("no_such_module_of_pyserve", "make setup installs it")
    assert need_module("json", "stdlib") is __import__("json")


def test_make_test_runs_the_suite_strict():
    recipe = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "PYSERVE_STRICT_DEPS=1" in recipe and "pytest" in recipe
