"""Each setting is declared once (shared/settings.py), and the start-up
checks, the options' --help and the table of docs/configuration.md all agree
with that declaration."""

from __future__ import annotations

import argparse
import re
from dataclasses import fields

import pytest

from assessment_refresh.cli import build_parser
from shared import settings_reference
from shared.kafka_properties import ConfigurationError
from shared.setting_checks import check_settings
from shared.settings import Settings, declaration, declared_rules, undeclared_settings


def test_every_setting_is_declared() -> None:
    missing = undeclared_settings()
    assert not missing, (
        f"Settings fields without a declaration: {missing}. Declare each as "
        "`name: T = setting(default, 'one line of meaning', rule.<check>)` in shared/settings.py "
        "(the rule from shared/setting_checks.py), then run `python -m shared.settings_reference --write`.")
    for f in fields(Settings):
        declared = declaration(f)
        assert declared is not None and declared.meaning.strip(), f.name
        assert "\n" not in declared.meaning, f"{f.name}: the meaning is one line"


def test_the_configuration_page_shows_the_declared_table() -> None:
    page = settings_reference.PAGE.read_text()
    assert settings_reference.with_table(page) == page, (
        "docs/configuration.md's settings table differs from the declarations: "
        "run `python -m shared.settings_reference --write`")
    # One row per setting read from a variable of its own, none missing.
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \|", settings_reference.table(), flags=re.M)
    assert rows == [f.name.upper() for f in fields(Settings) if declaration(f) and declaration(f).from_one_variable]  # type: ignore[union-attr]


def _setting_options() -> list[tuple[str, argparse.Action]]:
    found = []
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    names = {f.name for f in fields(Settings)}
    for command, subparser in sub.choices.items():
        for action in subparser._actions:
            # A setting's option names its variable; a command's own option of the same
            # dest (dev --api-port, env DEV_API_PORT) is not the setting's.
            if action.dest in names and f"(env {action.dest.upper()}," in (action.help or ""):
                found.append((command, action))
    return found


def test_help_of_each_setting_option_is_its_declaration() -> None:
    options = _setting_options()
    assert {action.dest for _, action in options} >= {"api_host", "api_port", "consumer_metrics_host",
                                                       "consumer_metrics_port"}
    by_name = {f.name: f for f in fields(Settings)}
    for command, action in options:
        f = by_name[action.dest]
        declared = declaration(f)
        assert declared is not None
        assert action.help == f"{declared.meaning.replace('`', '')} (env {f.name.upper()}, default {f.default})", \
            f"{command} {action.option_strings[0]}"


def test_start_up_checks_are_the_declared_rules() -> None:
    """check_settings applies each declared rule, and the rule's text is the error's."""
    rules = declared_rules()
    assert set(rules) == {f.name for f in fields(Settings) if (d := declaration(f)) and d.rule is not None}
    for name, rule in rules.items():
        if rule.text.startswith("must be a number"):
            bad: object = -(10 ** 9)
        elif rule.text.startswith("must be a port"):
            bad = 70000
        elif rule.text.startswith("must not be empty"):
            bad = " "
        elif rule.text.startswith("must be a Kafka topic name"):
            bad = ".."
        elif rule.text.startswith("must be one of"):
            bad = "no-such-choice"
        elif rule.text.startswith("must be a PostgreSQL URL"):
            bad = "mysql://db/x"
        elif rule.text.startswith("must be IP addresses"):
            bad = "nginx"
        elif rule.text.startswith("must be empty or 1 to 249"):
            bad = "pod name with spaces"
        else:
            pytest.fail(f"{name}: no bad value known for the rule {rule.text!r}: add one here")
        with pytest.raises(ConfigurationError) as raised:
            check_settings({name: bad})
        assert str(raised.value).startswith(f"{name.upper()} {rule.text}"), str(raised.value)
        # The default passes its own rule.
        check_settings({name: next(f.default for f in fields(Settings) if f.name == name)})
