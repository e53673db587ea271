"""A stored result goes only to a request of the company it belongs to
(consumer/refresh_handler.py, ``check_owners``): pure, on plain data."""

from __future__ import annotations

import pytest

from consumer.refresh_handler import ForeignRequestId, check_owners
from shared import inbox
from shared.inbox import StoredResult
from shared.messages import MessageError, RefreshRequested


def stored(kind: str, company_id: int | None) -> StoredResult:
    return StoredResult(200, {"message": "..."}, [], True, kind, company_id)


def test_a_redelivery_of_the_same_companys_request_passes() -> None:
    check_owners([RefreshRequested("r1", 8, [21])], {"r1": stored(inbox.REFRESH_REQUEST, 8)})


@pytest.mark.parametrize(
    "found",
    [stored(inbox.REFRESH_REQUEST, 8), stored(inbox.QUESTION_DELETED, None), stored(inbox.REFRESH_REQUEST, None)],
    ids=["another-company", "another-kind-of-message", "owner-unknown"],
)
def test_a_request_reusing_an_id_that_is_not_its_companys_is_refused(found: StoredResult) -> None:
    with pytest.raises(ForeignRequestId, match="another company's request"):
        check_owners([RefreshRequested("r1", 7, None)], {"r1": found})


def test_within_one_run_the_first_request_of_an_id_owns_it() -> None:
    runs = [RefreshRequested("r1", 8, [21]), RefreshRequested("r1", 8, [21]), RefreshRequested("r1", 7, None)]
    with pytest.raises(ForeignRequestId):
        check_owners(runs, {})
    check_owners(runs[:2], {})


def test_the_refusal_is_a_bad_message_given_up_at_once() -> None:
    assert issubclass(ForeignRequestId, MessageError)
