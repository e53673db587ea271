"""Options beside their environment variables, the way the command line declares them.

Three kinds of option, and ``--help`` says which each one is:

- a *setting* (``api --port``): the Settings field of that name, read from its
  variable by Settings.from_env; the flag, when given, overrides it. Its help
  is the setting's declaration (shared/settings.py): its meaning, then
  "(env API_PORT, default 8000)".
- a command's *own* option (``dev --api-port``): read from its variable
  (``DEV_API_PORT``) when the flag is not given, else its default.
- *command line only* (``replay --topic``, ``keys create --company``): what a
  one-off operation acts on. A variable left exported in a shell would aim the
  next replay at the wrong topic, or the next key at the wrong company.

A malformed value, from a flag or a variable, is one line naming it and exit 2
(``Parser.error``, ``resolve_own_options``), never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NoReturn

from shared.kafka_properties import ConfigurationError
from shared.settings import Settings, declaration

OWN_OPTIONS = "_own_options"  # namespace attribute: the chosen subcommand's own options


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, as for a malformed variable (argparse's default adds the usage)."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def port_number(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0 to 65535): {value!r}")
    return port


def listening_port(value: str) -> int:
    """A port a server will listen on (no 0: the banner and the settings file say where)."""
    port = port_number(value)
    if port == 0:
        raise argparse.ArgumentTypeError("a port from 1 to 65535, not 0")
    return port


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


def boolean(value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected 1/true/yes/on or 0/false/no/off, not {value!r}")


def setting_help(name: str) -> str:
    """An option's help, from the declaration of the setting it overrides."""
    f = next(f for f in fields(Settings) if f.name == name)
    declared = declaration(f)
    meaning = declared.meaning.replace("`", "") if declared else name.replace("_", " ")
    return f"{meaning} (env {name.upper()}, default {f.default})"


def setting(parser: argparse.ArgumentParser, flag: str, name: str, **kwargs: Any) -> None:
    """An option that overrides the setting ``name`` (its variable: NAME)."""
    parser.add_argument(flag, dest=name, help=setting_help(name), **kwargs)


@dataclass(frozen=True)
class OwnOption:
    dest: str
    flag: str
    env: str
    convert: Callable[[str], Any]
    default: Any


def own(
    parser: argparse.ArgumentParser, flag: str, env: str, help: str, *,
    default: Any = None, convert: Callable[[str], Any] = str, flag_only: bool = False, **kwargs: Any,
) -> None:
    """A command's own option, also read from ``env`` (resolved after parsing,
    so that a malformed variable is reported only by the command that reads it)."""
    shown = "" if default in (None, False) else f", default {default}"
    if flag_only:  # store_true: the flag sets it, the variable takes 1/0
        action = parser.add_argument(flag, action="store_true", default=None, help=f"{help} (env {env}{shown})", **kwargs)
        convert = boolean
    else:
        action = parser.add_argument(flag, type=convert, help=f"{help} (env {env}{shown})", **kwargs)
    spec = OwnOption(action.dest, flag, env, convert, default)
    parser.set_defaults(**{OWN_OPTIONS: [*(parser.get_default(OWN_OPTIONS) or []), spec]})


def command_line_only(parser: argparse._ActionsContainer, *flags: str, help: str = "", **kwargs: Any) -> argparse.Action:
    return parser.add_argument(*flags, help=f"{help} (command line only)".lstrip(), **kwargs)


def resolve_own_options(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Fill the chosen command's own options that were not given from their
    variables, else their defaults; ConfigurationError names a malformed one."""
    for spec in getattr(args, OWN_OPTIONS, None) or []:
        if getattr(args, spec.dest) is not None:
            continue
        raw = environ.get(spec.env)
        if raw is None:
            setattr(args, spec.dest, spec.default)
            continue
        try:
            setattr(args, spec.dest, spec.convert(raw))
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigurationError(f"{spec.env} (for {spec.flag}): {exc}") from None
