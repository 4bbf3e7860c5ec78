"""Render the package's Jinja templates (node entrypoints, sbatch script). Templates are data."""

from __future__ import annotations

import shlex
from functools import cache

import jinja2

from pyservecli import __version__


def shjoin(argv) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pyservecli.run", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # shell, not HTML: every value goes through shquote/shjoin instead
    )
    env.filters["shquote"] = lambda value: shlex.quote(str(value))
    env.filters["shjoin"] = shjoin
    # For text inside a '#' comment: printable characters only, so a value can never end the
    # comment (values are validated upstream too; this keeps a template safe on its own).
    env.filters["comment"] = lambda value: "".join(c if c.isprintable() else "?"
                                                   for c in str(value))
    return env


def render(template: str, **context) -> str:
    return _environment().get_template(template).render(version=__version__, **context)
