"""Checking documents and records against the AsyncAPI document (shared/asyncapi.py).

The official AsyncAPI 3.0.0 JSON Schema is vendored in tests/vendor/asyncapi/
(see its README): no PyPI package ships it, and a test that downloads it
would need the network CI may not have.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

VENDOR = Path(__file__).parent / "vendor" / "asyncapi"
DOCUMENT_URI = "urn:assessment-refresh:asyncapi"


@cache
def asyncapi_meta_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((VENDOR / "3.0.0.json").read_text())
    return schema


def validator(document: dict[str, Any], pointer: str) -> Draft7Validator:
    """A validator for the schema at ``pointer`` (``/components/...``) of the
    document, its ``#/components/schemas/...`` references resolved in it."""
    registry: Registry[Any] = Registry().with_resource(DOCUMENT_URI, Resource(contents=document, specification=DRAFT7))
    return Draft7Validator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=registry, format_checker=FormatChecker())


def resolve(document: dict[str, Any], reference: str) -> Any:
    """What a local ``#/a/b`` reference points at (KeyError when nothing)."""
    node: Any = document
    for part in reference.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def inlined(schema: Any, document: dict[str, Any]) -> Any:
    """``schema`` with every reference replaced by its target (the schemas are
    not recursive), for generators that resolve no references of their own."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return inlined(resolve(document, schema["$ref"]), document)
        return {k: inlined(v, document) for k, v in schema.items()}
    if isinstance(schema, list):
        return [inlined(v, document) for v in schema]
    return schema


def errors(document: dict[str, Any], pointer: str, instance: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message[:300]}"
            for e in validator(document, pointer).iter_errors(instance)]


def channel_of(document: dict[str, Any], topic: str) -> str:
    names = [name for name, ch in document["channels"].items() if ch["address"] == topic]
    assert len(names) == 1, f"no single channel for topic {topic}: {names}"
    return names[0]


def matching_messages(document: dict[str, Any], channel: str, key: bytes | None, value: bytes | None,
                      headers: dict[str, str]) -> dict[str, list[str]]:
    """For each message of the channel, what is wrong with this record as that
    message (an empty list: it is one)."""
    found: dict[str, list[str]] = {}
    for message_ref in document["channels"][channel]["messages"].values():
        name = message_ref["$ref"].rsplit("/", 1)[-1]
        pointer = message_ref["$ref"].removeprefix("#")
        message = resolve(document, message_ref["$ref"])
        problems = errors(document, pointer + "/headers", headers)
        if key is not None:
            problems += [f"key: {p}" for p in errors(document, pointer + "/bindings/kafka/key", key.decode())]
        if message["contentType"] == "application/json":
            try:
                payload = json.loads((value or b"").decode("utf-8"))
            except ValueError as exc:
                problems.append(f"value is not UTF-8 JSON: {exc}")
            else:
                problems += [f"payload: {p}" for p in errors(document, pointer + "/payload", payload)]
        found[name] = problems
    return found


def conforming_message(document: dict[str, Any], channel: str, key: bytes | None, value: bytes | None,
                       headers: dict[str, str]) -> str:
    """The one message of the channel this record is (AsyncAPI: one and only
    one); fails, saying why, otherwise."""
    found = matching_messages(document, channel, key, value, headers)
    matches = [name for name, problems in found.items() if not problems]
    assert len(matches) == 1, f"record on {channel} ({value!r:.300}, headers {headers}) matches {matches}: {found}"
    return matches[0]
