"""axe-core, the copy vendored under runstate's static files, run in the page under test."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

from tests.web.browser.harness import AXE

BLOCKING_IMPACTS = ("serious", "critical")


def serious_violations(page: Page) -> list[dict[str, Any]]:
    """The serious and critical violations axe-core finds in ``page`` as it is now. The page's
    context must bypass CSP (the public status page allows no script of its own)."""
    assert AXE.is_file(), f"axe-core is not vendored at {AXE}"
    page.add_script_tag(path=AXE)
    results: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    return [v for v in results["violations"] if v.get("impact") in BLOCKING_IMPACTS]


def described(violations: list[dict[str, Any]]) -> str:
    """One paragraph per violation: rule, impact, help and where (what a report needs)."""
    lines = []
    for violation in violations:
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']}")
        for node in violation["nodes"][:5]:
            lines.append(f"    at {' '.join(node['target'])}: {node.get('failureSummary', '')}")
    return "\n".join(lines)


def assert_no_serious_violations(page: Page, what: str) -> None:
    violations = serious_violations(page)
    assert not violations, f"axe-core on {what}:\n{described(violations)}"
