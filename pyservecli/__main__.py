"""``python -m pyservecli`` is the ``pyserve`` command (used where no console script is on PATH,
e.g. the launcher's own children and the tests)."""

from pyservecli.cli import main

main(prog_name="pyserve")
