"""Any librdkafka property from the environment, for every Kafka client the service makes.

The convention is the one operators know from Confluent's and Apache Kafka's
container images: ``KAFKA_`` + the property name upper-cased, dots as
underscores (``KAFKA_SECURITY_PROTOCOL=SASL_SSL`` is ``security.protocol``);
a literal underscore is written ``__`` and a dash ``___``. A variable ending in
``_FILE`` names a file holding the value (``KAFKA_SASL_PASSWORD_FILE`` =
``sasl.password`` read from a Docker or Kubernetes secret), so a secret need
never be in the environment or on a command line.

The service's own settings that happen to start with ``KAFKA_``
(``KAFKA_BOOTSTRAP_SERVERS``, ...) are librdkafka properties of the same
meaning, set through Settings; the launcher variables of Kafka's own scripts
(``KAFKA_HEAP_OPTS``, ...) and the test suite's ``KAFKA_BROKER`` are not
properties and are left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

PREFIX = "KAFKA_"
FILE_SUFFIX = "_FILE"

# KAFKA_* variables that are not librdkafka properties.
NOT_PROPERTIES = frozenset({
    "KAFKA_BROKER",  # the test suite's choice of broker (tests/infra.py)
    "KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_JMX_OPTS", "KAFKA_LOG4J_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_DEBUG",
})

# Properties whose values are secrets: masked wherever configuration is shown.
_SECRET_WORDS = ("password", "secret", "jaas", "token", ".pem", "key.pem", "credentials")


def property_name(variable: str) -> str:
    """``KAFKA_SSL_CA_LOCATION`` -> ``ssl.ca.location`` (``___`` -> ``-``, ``__`` -> ``_``)."""
    body = variable[len(PREFIX):].lower()
    return body.replace("___", "\0dash\0").replace("__", "\0us\0").replace("_", ".").replace(
        "\0dash\0", "-").replace("\0us\0", "_")


def is_secret(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_WORDS)


class ConfigurationError(ValueError):
    """A setting that cannot be used; the message names the variable."""


def client_properties(environ: Mapping[str, str], settings_variables: set[str]) -> dict[str, str]:
    """The librdkafka properties the environment sets (``_FILE`` values read)."""
    found: dict[str, str] = {}
    for variable in sorted(environ):
        if not variable.startswith(PREFIX) or variable in NOT_PROPERTIES:
            continue
        if variable.endswith(FILE_SUFFIX):
            plain = variable[: -len(FILE_SUFFIX)]
            if plain in settings_variables or plain in NOT_PROPERTIES:
                continue  # a Settings field's *_FILE: read by Settings itself
            found[property_name(plain)] = read_secret_file(variable, environ[variable])
        elif variable not in settings_variables:
            found[property_name(variable)] = environ[variable]
    return found


def read_secret_file(variable: str, path: str) -> str:
    """A value from a mounted secret file; one trailing newline dropped, as editors add it."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigurationError(f"{variable}: cannot read {path}: {exc.strerror}") from exc
    return text[:-1] if text.endswith("\n") else text


def masked(properties: Mapping[str, object]) -> dict[str, object]:
    """For logs and error bodies: secret values replaced by ``***``."""
    return {name: ("***" if is_secret(name) else value) for name, value in properties.items()}
