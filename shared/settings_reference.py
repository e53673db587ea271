"""The configuration table of docs/configuration.md, made from the settings' declarations.

``python -m shared.settings_reference`` prints it; the page holds it between
two markers, and tests/unit/test_settings_reference.py fails while the page's
copy differs from what the declarations give (after adding or changing a
setting: ``python -m shared.settings_reference --write``). Pure, but for the
command line at the bottom.
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, fields
from pathlib import Path

from shared.settings import Settings, declaration

BEGIN = "<!-- settings table: generated from shared/settings.py by `python -m shared.settings_reference --write` -->"
END = "<!-- end of settings table -->"
PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table() -> str:
    rows = ["| variable | type | default | must | meaning |", "|---|---|---|---|---|"]
    for f in fields(Settings):
        declared = declaration(f)
        if declared is None or not declared.from_one_variable:
            continue
        default = "" if f.default is MISSING else f"`{f.default}`"
        must = declared.rule.text.removeprefix("must ") if declared.rule else ""
        rows.append(f"| `{f.name.upper()}` | {f.type} | {default} | {_cell(must)} | {_cell(declared.meaning)} |")
    return "\n".join(rows)


def with_table(page: str) -> str:
    """The page with the table between its markers replaced by the declared one."""
    head, found, rest = page.partition(BEGIN)
    if not found or END not in rest:
        raise ValueError(f"{PAGE.name} has no settings table markers ({BEGIN} ... {END})")
    return f"{head}{BEGIN}\n{table()}\n{END}{rest.partition(END)[2]}"


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        PAGE.write_text(with_table(PAGE.read_text()))
        return 0
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
