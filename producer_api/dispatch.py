"""Publishing a refresh request to the consumers: the same message in sync and async mode."""

from __future__ import annotations

from producer_api.publisher import RequestPublisher
from shared.messages import (
    CONTENT_TYPE_JSON,
    HEADER_CONTENT_TYPE,
    HEADER_CORRELATION_ID,
    HEADER_REPLY_TO,
    RefreshRequested,
)
from shared.settings import Settings


async def publish_request(settings: Settings, publisher: RequestPublisher, command: RefreshRequested) -> None:
    """Deliver the request or raise BrokerUnavailable.

    Keyed by company: one company's requests stay in order on one partition.
    """
    await publisher.publish(
        settings.request_topic,
        str(command.company_id).encode(),
        command.to_json(),
        [
            (HEADER_CORRELATION_ID, command.request_id.encode()),
            (HEADER_REPLY_TO, settings.reply_topic.encode()),
            (HEADER_CONTENT_TYPE, CONTENT_TYPE_JSON.encode()),
        ],
    )
