"""Publishing a refresh request to the consumers: the same message in sync and async mode."""

from __future__ import annotations

from producer_api.publisher import RequestPublisher
from shared.messages import RefreshRequested, record_headers
from shared.settings import Settings


async def publish_request(settings: Settings, publisher: RequestPublisher, command: RefreshRequested) -> None:
    """Deliver the request, or raise BrokerUnavailable (certainly not written)
    or DeliveryUnconfirmed (perhaps written): producer_api/delivery.py.

    Keyed by company: one company's requests stay in order on one partition.
    """
    await publisher.publish(
        settings.request_topic,
        str(command.company_id).encode(),
        command.to_json(),
        record_headers(command.request_id, reply_to=settings.reply_topic),
    )
