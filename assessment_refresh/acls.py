"""`assessment-refresh acls`: the Kafka ACLs that make the topics the trust boundary.

A request on the request topic is trusted (its company id, its reply topic)
because only the API's principal may write there; the consumer's principal
reads it and writes the replies, refresh events and dead letters; the question
bank's principal writes only question events. Each binding is one
(principal, operation, resource) allowed from any host:

- API: WRITE the request topic; READ the reply topic, and READ groups whose
  id starts with ``<consumer_group>-api-`` (the reply reader's ``assign()``
  names a group of that prefix, producer_api/replies.py, though it joins none).
- consumer: READ the request and question-event topics and its group
  (``consumer_group``, literal); WRITE the reply, refresh-event and both DLQ
  topics; CREATE on each of those exact topic names, as it creates missing
  ones at start-up (``--no-create-topics`` leaves that to the operator).
- question bank: WRITE question.events.

WRITE and READ imply DESCRIBE in Kafka, which is all the clients' metadata
and watermark requests need. The bindings are created through the admin API,
with the client settings of the environment (``KAFKA_*``, as every client of
the service), so the principal running it needs ALTER on the cluster (a super
user, typically). Creating a binding that exists is a no-op at the broker:
running it again is safe.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from consumer.dead_letters import dlq_topic
from consumer.topics import consumed_topics, service_topics, work_topics
from shared.kafka import admin_config
from shared.settings import Settings


@dataclass(frozen=True)
class Principals:
    api: str = "User:api"
    consumer: str = "User:consumer"
    bank: str = "User:bank"


def api_group_prefix(settings: Settings) -> str:
    """The prefix of the reply reader's group id (producer_api/replies.py)."""
    return f"{settings.consumer_group}-api-"


def _binding(
    principal: str, operation: AclOperation, kind: ResourceType, name: str,
    pattern: ResourcePatternType = ResourcePatternType.LITERAL,
) -> AclBinding:
    return AclBinding(kind, name, pattern, principal, "*", operation, AclPermissionType.ALLOW)


def bindings(settings: Settings, principals: Principals, *, create_topics: bool = True) -> list[AclBinding]:
    """Every ACL the service needs, for these topic names and principals."""
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    read, write = AclOperation.READ, AclOperation.WRITE
    api, consumer, bank = principals.api, principals.consumer, principals.bank
    out = [
        _binding(api, write, topic, settings.request_topic),
        _binding(api, read, topic, settings.reply_topic),
        _binding(api, read, group, api_group_prefix(settings), ResourcePatternType.PREFIXED),
        *(_binding(consumer, read, topic, name) for name in [*consumed_topics(settings), *work_topics(settings)]),
        _binding(consumer, read, group, settings.consumer_group),
        _binding(consumer, read, group, settings.work_group),
        # The work topic is the consumer's own: it writes the chunks it reads.
        *(_binding(consumer, write, topic, name)
          for name in [settings.reply_topic, settings.refresh_events_topic, *work_topics(settings),
                       *map(dlq_topic, [*consumed_topics(settings), *work_topics(settings)])]),
        _binding(bank, write, topic, settings.question_events_topic),
    ]
    if create_topics:
        out += [_binding(consumer, AclOperation.CREATE, topic, name) for name in service_topics(settings)]
    return out


def describe(binding: AclBinding) -> str:
    """One line per binding: ``User:api WRITE TOPIC assessment.refresh.requests (LITERAL)``."""
    operation, kind = AclOperation(binding.operation), ResourceType(binding.restype)
    pattern = ResourcePatternType(binding.resource_pattern_type)
    return f"{binding.principal} {operation.name} {kind.name} {binding.name} ({pattern.name})"


def apply(settings: Settings, acl_bindings: list[AclBinding], timeout: float = 15.0) -> None:
    """Create the bindings; raises the broker's first refusal (KafkaException)."""
    admin = AdminClient(admin_config(settings))
    futures = admin.create_acls(acl_bindings, request_timeout=timeout)
    for future in futures.values():
        future.result()
