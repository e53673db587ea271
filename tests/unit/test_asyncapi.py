"""The AsyncAPI document (shared/asyncapi.py): valid AsyncAPI 3.0, every topic
of the service, examples that conform, served by the API, and committed as
docs/asyncapi.json exactly as generated."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator
from starlette.testclient import TestClient

from consumer.topics import service_topics
from producer_api.app import create_app
from shared.asyncapi import document, render
from shared.dlq import HEADERS as DLQ_HEADERS
from shared.messages import HEADER_CONTENT_TYPE, HEADER_CORRELATION_ID, HEADER_REPLY_TO, HEADER_TRACEPARENT
from shared.settings import Settings
from shared.version import __version__
from tests.asyncapi_tools import VENDOR, asyncapi_meta_schema, errors, resolve

COMMITTED = Path(__file__).parents[2] / "docs" / "asyncapi.json"
SETTINGS = Settings()


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return document(SETTINGS)


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["$ref"]] if isinstance(node.get("$ref"), str) else []) + [
            r for v in node.values() for r in references(v)]
    if isinstance(node, list):
        return [r for v in node for r in references(v)]
    return []


def test_the_vendored_schema_is_the_official_file() -> None:
    digest = hashlib.sha256((VENDOR / "3.0.0.json").read_bytes()).hexdigest()
    assert digest in (VENDOR / "README.md").read_text(), "update the README's checksum with the schema"


def test_the_document_is_valid_asyncapi_3(doc: dict[str, Any]) -> None:
    problems = [f"{list(e.absolute_path)}: {e.message[:200]}"
                for e in Draft7Validator(asyncapi_meta_schema()).iter_errors(doc)]
    assert problems == []
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["version"] == __version__


def test_the_meta_schema_catches_a_broken_document(doc: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(doc))
    broken["operations"]["requestRefresh"]["action"] = "publish"  # AsyncAPI 2's word
    assert not Draft7Validator(asyncapi_meta_schema()).is_valid(broken)


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    found = references(doc)
    assert len(found) > 40
    for reference in found:
        assert reference.startswith("#/"), reference
        resolve(doc, reference)  # KeyError names the dangling one


def test_operations_use_only_their_channels_messages(doc: dict[str, Any]) -> None:
    """AsyncAPI 3: an operation's (and its reply's) messages MUST be among its channel's."""
    for name, operation in doc["operations"].items():
        for part in (operation, operation.get("reply")):
            if part is None:
                continue
            channel = part["channel"]["$ref"]
            for message in part["messages"]:
                assert message["$ref"].startswith(channel + "/messages/"), (name, message)
                resolve(doc, message["$ref"])
            if "address" in part:
                assert resolve(doc, channel)["address"] is None, "a dynamic reply address needs an address-less channel"


def test_every_topic_of_the_service_is_a_channel(doc: dict[str, Any]) -> None:
    addresses = {ch["address"] for ch in doc["channels"].values() if ch["address"] is not None}
    assert addresses == set(service_topics(SETTINGS))
    assert addresses == {"assessment.refresh.requests", "assessment.refresh.replies", "question.events",
                         "assessment.refresh.events", "assessment.refresh.work", "assessment.refresh.requests.dlq",
                         "question.events.dlq", "assessment.refresh.work.dlq"}


def test_roles_and_request_reply(doc: dict[str, Any]) -> None:
    ops = doc["operations"]
    by_role = {(op["action"], op["channel"]["$ref"].rsplit("/", 1)[-1], op["tags"][0]["$ref"].rsplit("/", 1)[-1])
               for op in ops.values()}
    assert {("send", "refreshRequests", "producer_api"), ("receive", "refreshRequests", "consumer"),
            ("send", "questionEvents", "question_bank"), ("receive", "questionEvents", "consumer"),
            ("send", "refreshEvents", "consumer"), ("send", "refreshRequestsDlq", "consumer"),
            ("send", "questionEventsDlq", "consumer"), ("send", "refreshWork", "consumer"),
            ("receive", "refreshWork", "consumer"), ("send", "refreshWorkDlq", "consumer")} == by_role
    assert ops["requestRefresh"]["reply"]["channel"] == {"$ref": "#/channels/refreshReplies"}
    assert ops["answerRefreshRequest"]["reply"]["address"]["location"] == f"$message.header#/{HEADER_REPLY_TO}"
    group = ops["answerRefreshRequest"]["bindings"]["kafka"]["groupId"]
    assert group["enum"] == [SETTINGS.consumer_group]
    assert ops["refreshChunk"]["bindings"]["kafka"]["groupId"]["enum"] == [SETTINGS.work_group]


def test_headers_the_contract_names(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    request = messages["refreshRequested"]["headers"]["properties"]
    assert {HEADER_CORRELATION_ID, HEADER_REPLY_TO, HEADER_CONTENT_TYPE} <= set(request)
    for name in ("refreshReply", "assessmentRefreshed", "refreshCompleted"):
        assert set(messages[name]["headers"]["required"]) == {HEADER_CORRELATION_ID, HEADER_CONTENT_TYPE}
    for name in ("deadLetteredRequest", "deadLetteredQuestionEvent", "deadLetteredChunk"):
        headers = messages[name]["headers"]
        assert set(headers["properties"]) >= set(DLQ_HEADERS)
        assert set(headers["required"]) == {"dlq.original.topic", "dlq.original.partition", "dlq.original.offset",
                                            "dlq.error.type", "dlq.error.message", "dlq.attempts"}
    assert messages["refreshReply"]["correlationId"] == {"$ref": "#/components/correlationIds/correlationId"}
    assert all(HEADER_TRACEPARENT in m["headers"]["properties"] for m in messages.values()), "W3C trace context"


def test_every_message_has_examples_that_conform(doc: dict[str, Any]) -> None:
    for name, message in doc["components"]["messages"].items():
        assert message["examples"], name
        for example in message["examples"]:
            pointer = f"/components/messages/{name}"
            assert errors(doc, pointer + "/headers", example["headers"]) == [], (name, example["name"])
            assert errors(doc, pointer + "/payload", example["payload"]) == [], (name, example["name"])


def test_a_payload_schema_refuses_what_breaks_the_contract(doc: dict[str, Any]) -> None:
    """The schemas are not vacuous: a wrong type, a missing field, an unknown event type fail."""
    example = doc["components"]["messages"]["refreshRequested"]["examples"][0]["payload"]
    assert errors(doc, "/components/messages/refreshRequested/payload", {**example, "company_id": "7"})
    assert errors(doc, "/components/messages/refreshRequested/payload", {**example, "schema_version": 2})
    reply = doc["components"]["messages"]["refreshReply"]["examples"][0]["payload"]
    assert errors(doc, "/components/messages/refreshReply/payload", {**reply, "body": {"error": "x"}})
    claim_check = doc["components"]["messages"]["refreshReply"]["examples"][2]["payload"]
    assert claim_check["result_location"] and "details" not in claim_check["body"]
    assert errors(doc, "/components/messages/refreshReply/payload", {**claim_check, "body": reply["body"]}), \
        "a claim check carries the summary, not the details"
    deleted = doc["components"]["messages"]["questionDeleted"]["examples"][0]["payload"]
    assert errors(doc, "/components/messages/questionDeleted/payload", {**deleted, "type": "question.moved"})
    assert errors(doc, "/components/messages/questionDeleted/payload", {**deleted, "occurred_at": "yesterday"})


def test_the_committed_copy_is_the_generated_document() -> None:
    assert COMMITTED.read_text() == render(SETTINGS), (
        "docs/asyncapi.json is stale: run `python -m shared.asyncapi > docs/asyncapi.json`")


def test_the_api_serves_its_own_settings_document_without_a_key() -> None:
    settings = Settings(request_topic="acme.requests", reply_topic="acme.replies", consumer_group="acme-group",
                        topic_partitions=12)
    response = TestClient(create_app(settings)).get("/asyncapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    served = response.json()
    assert served == json.loads(json.dumps(document(settings)))
    channels = served["channels"]
    assert channels["refreshRequests"]["address"] == "acme.requests"
    assert channels["refreshRequestsDlq"]["address"] == "acme.requests.dlq"
    assert channels["refreshReplies"]["bindings"]["kafka"]["partitions"] == 12
    example = served["components"]["messages"]["refreshRequested"]["examples"][0]
    assert example["headers"][HEADER_REPLY_TO] == "acme.replies"
    assert Draft7Validator(asyncapi_meta_schema()).is_valid(served)
