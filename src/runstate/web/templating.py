"""The one Jinja2 environment every page, fragment and feed is rendered with.

Autoescaping is on for HTML, XML and SVG templates (feeds and badges included), so that a
monitor's name or an incident's text can never become markup."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from runstate.web import TEMPLATES_DIR

environment = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(["html", "xml", "svg", "atom", "rss"]),
    undefined=StrictUndefined,  # a missing variable is an error in tests, not an empty string
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
    enable_async=False,
)


def render(template: str, **context: Any) -> str:
    """``template`` (a path under templates/) rendered with ``context``."""
    return environment.get_template(template).render(**context)
