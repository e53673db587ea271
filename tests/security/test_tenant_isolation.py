"""Tenant isolation under randomized traffic (issue 4, "security").

Five companies, each with a few assessments built from public questions and
its own private ones. Rounds of random requests (sent together, a few per
round) use one company's key and name a random mix of its own, other
companies' and nonexistent assessment ids; between rounds the bank changes
(rewordings, deletions) so that refreshes have something to do. Asserted:

- a 200 is for the caller's company, holds only the caller's assessments, and
  replaces deleted questions only with questions the caller may see (public or
  its own) of the same kind;
- a 403 names exactly the offending ids the caller sent, never another id;
- after every round, an assessment changed only if a 200 of its owner named it,
  and no slot anywhere holds a question private to another company;
- the refresh events published for REST refreshes carry the caller's company
  and only the assessments its 200 reported as updated; the inbox row of every
  request records the caller's company.

Seeded: the same run every time (change SEED to explore).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from shared.settings import Settings
from tests.kafka_tools import json_values, read_topic
from tests.processes import ServiceProcess
from tests.security.conftest import PATH, record_status
from tests.security.oracle import FORBIDDEN_PREFIX, INT64_MAX, forbidden_ids
from tests.worlds import load, question

pytestmark = pytest.mark.e2e

SEED = 20261128
COMPANIES = [1, 2, 3, 4, 5]
KINDS = [("mcq", "python", "easy"), ("mcq", "python", "hard"), ("coding", "go", "medium")]
ROUNDS, PER_ROUND = 22, 8
NONEXISTENT = [0, -1, -77, 9, 99, 60, 1000, 123456789, INT64_MAX, -(2**63)]


@dataclass
class Bank:
    """What the test knows about each question."""

    kind: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    owner: dict[int, int | None] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    edits: int = 0

    def as_load(self, qid: int, deleted: bool = False) -> dict[str, Any]:
        return question(qid, self.kind[qid], company_id=self.owner[qid], deleted=deleted,
                        text_=f"question {qid}, edit {self.edits}")


@dataclass
class Tenants:
    keys: dict[int, str]
    oids: dict[int, list[int]]
    bank: Bank

    def owner_of(self, oid: int) -> int | None:
        return next((c for c, oids in self.oids.items() if oid in oids), None)


def build_world(rng: random.Random) -> tuple[dict[str, Any], Tenants]:
    bank = Bank()
    for k, kind in enumerate(KINDS):
        for j in range(8):
            qid = 1000 + k * 100 + j
            bank.kind[qid], bank.owner[qid] = kind, None
        for company in COMPANIES:
            for j in range(3):
                qid = 10_000 * company + k * 100 + j
                bank.kind[qid], bank.owner[qid] = kind, company
    keys = {c: f"tenant-{c}-key-{rng.getrandbits(64):016x}" for c in COMPANIES}
    oids: dict[int, list[int]] = {c: [c * 10 + a for a in range(1, 4)] for c in COMPANIES}
    assessments = []
    for company, owned in oids.items():
        visible = [q for q, o in bank.owner.items() if o in (None, company)]
        for oid in owned:
            chosen = rng.sample(visible, 6)
            assessments.append({"oid": oid, "company_id": company, "name": f"assessment {oid}",
                                "sections": [{"name": "one", "qids": chosen[:3]}, {"name": "two", "qids": chosen[3:]}]})
    document = {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [keys[c]]} for c in COMPANIES],
        "questions": [bank.as_load(q) for q in bank.kind],
        "assessments": assessments,
    }
    return document, Tenants(keys, oids, bank)


def change_the_bank(engine: Engine, rng: random.Random, tenants: Tenants) -> None:
    """Reword three questions and delete one that some assessment uses."""
    bank = tenants.bank
    bank.edits += 1
    active = sorted(set(bank.kind) - bank.deleted)
    with engine.connect() as conn:
        used = sorted(set(conn.execute(text("SELECT qid FROM assessment_slots")).scalars()) - bank.deleted)
    doomed = rng.choice(used)
    bank.deleted.add(doomed)
    changes = [bank.as_load(q) for q in rng.sample([q for q in active if q != doomed], 3)]
    load(engine, {"questions": [*changes, bank.as_load(doomed, deleted=True)]})


def random_request(rng: random.Random, tenants: Tenants) -> tuple[int, dict[str, str], bytes, list[int] | None]:
    caller = rng.choice(COMPANIES)
    key = tenants.keys[caller]
    roll = rng.random()
    if roll < 0.1:
        headers = {"X-API-Key": key}
    elif roll < 0.2:  # apiKey is the one that counts; X-API-Key of another company changes nothing
        headers = {"apiKey": key, "X-API-Key": tenants.keys[rng.choice([c for c in COMPANIES if c != caller])]}
    else:
        headers = {"apiKey": key}
    if rng.random() < 0.12:
        body = rng.choice([{}, {"assessment_ids": None}, {"assessment_ids": []}])
        return caller, headers, json.dumps(body).encode(), None
    own = rng.sample(tenants.oids[caller], rng.randint(0, 3))
    others = [oid for c, oids in tenants.oids.items() if c != caller for oid in oids]
    ids = own + rng.sample(others, rng.choice([0, 0, 0, 0, 1, 2])) + rng.sample(NONEXISTENT, rng.choice([0, 0, 0, 0, 1, 2]))
    if not ids:
        ids = [rng.choice(tenants.oids[caller])]
    if rng.random() < 0.2:
        ids += rng.sample(ids, 1)  # a duplicate
    rng.shuffle(ids)
    return caller, headers, json.dumps({"assessment_ids": ids}).encode(), ids


def slots_by_oid(engine: Engine) -> dict[int, list[tuple[Any, ...]]]:
    out: dict[int, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for row in conn.execute(text(
                "SELECT oid, section_idx, question_idx, qid, snapshot_version, snapshot::text FROM assessment_slots "
                "ORDER BY oid, section_idx, question_idx")):
            out.setdefault(row.oid, []).append(tuple(row))
        for row in conn.execute(text("SELECT oid, company_id, name FROM assessments")):
            out.setdefault(row.oid, []).append(("assessment", row.company_id, row.name))
    return out


def foreign_private_slots(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT s.oid, a.company_id, s.qid, q.company_id FROM assessment_slots s "
            "JOIN assessments a ON a.oid = s.oid JOIN questions q ON q.qid = s.qid "
            "WHERE q.company_id IS NOT NULL AND q.company_id <> a.company_id"))]


@pytest.fixture(scope="module")
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as c:
        yield c


def test_random_traffic_never_crosses_tenants(
    client: httpx.Client, engine: Engine, service_settings: Settings
) -> None:
    rng = random.Random(SEED)
    document, tenants = build_world(rng)
    load(engine, document)
    bank = tenants.bank
    succeeded: dict[str, tuple[int, set[int]]] = {}  # request id -> (caller, oids reported "updated")
    refused: dict[str, int] = {}  # request id -> caller, for 403s
    statuses: list[int] = []
    replacements = 0

    with ThreadPoolExecutor(max_workers=PER_ROUND) as pool:
        for _round in range(ROUNDS):
            change_the_bank(engine, rng, tenants)
            before = slots_by_oid(engine)
            batch = [random_request(rng, tenants) for _ in range(PER_ROUND)]
            responses = list(pool.map(lambda r: client.post(PATH, headers=r[1], content=r[2]), batch))
            named_by_owner: set[int] = set()
            for (caller, _headers, body, ids), response in zip(batch, responses, strict=True):
                statuses.append(response.status_code)
                record_status("tenant isolation", response.status_code)
                what = f"company {caller} sent {body!r}: {response.status_code} {response.text[:400]}"
                own = set(tenants.oids[caller])
                request_id = response.headers.get("x-request-id")
                assert request_id, what
                bad = sorted(set(ids or []) - own)
                if bad:
                    assert response.status_code == 403, what
                    named = forbidden_ids(response.json()["error"])
                    assert set(named) <= set(ids or []), "a 403 names only ids the caller sent: " + what
                    assert named == bad, what
                    assert response.json() == {"error": FORBIDDEN_PREFIX + json.dumps(bad)}
                    refused[request_id] = caller
                    continue
                assert response.status_code == 200, what
                payload = response.json()
                assert payload["company_id"] == caller, what
                oids = [d["oid"] for d in payload["details"]]
                assert oids == sorted(set(ids) if ids else own), what
                for detail in payload["details"]:
                    replacements += len(detail["replacements"])
                    for replacement in detail["replacements"]:
                        new, old = replacement["new_qid"], replacement["old_qid"]
                        assert bank.owner[new] in (None, caller), f"replacement {new} is private to another company: {what}"
                        assert bank.kind[new] == bank.kind[old] and new not in bank.deleted, what
                named_by_owner |= set(oids)
                succeeded[request_id] = (caller, {d["oid"] for d in payload["details"] if d["status"] == "updated"})

            after = slots_by_oid(engine)
            changed = {oid for oid in set(before) | set(after) if before.get(oid) != after.get(oid)}
            assert changed <= named_by_owner, f"changed without a 200 of their owner naming them: {changed - named_by_owner}"
            assert foreign_private_slots(engine) == [], "a slot holds another company's private question"

    # Every request went through the inbox under the caller's company.
    with engine.connect() as conn:
        inbox = dict(conn.execute(text("SELECT message_id, company_id FROM processed_messages WHERE message_id = ANY(:ids)"),
                                  {"ids": [*succeeded, *refused]}).all())
    assert inbox == {**{r: c for r, (c, _) in succeeded.items()}, **refused}

    # Refresh events of REST refreshes: the caller's company, the updated assessments, nothing for a 403.
    expected_events = sum(len(updated) for _, updated in succeeded.values())
    # The topic is shared with the other modules of the package: this test's events are those of its requests.
    mine = set(succeeded) | set(refused)
    events = [e for e in json_values(read_topic(service_settings.kafka_bootstrap_servers,
                                                service_settings.refresh_events_topic, at_least=expected_events))
              if e["trigger"].get("type") == "request" and e["trigger"].get("request_id") in mine]
    seen: dict[str, set[int]] = {}
    for event in events:
        request_id = event["trigger"]["request_id"]
        assert request_id not in refused, "a refused request published an event"
        assert request_id in succeeded, event
        caller, updated = succeeded[request_id]
        assert event["company_id"] == caller and tenants.owner_of(event["oid"]) == caller, event
        assert event["oid"] in updated and event["detail"]["oid"] == event["oid"], event
        seen.setdefault(request_id, set()).add(event["oid"])
    assert seen == {r: updated for r, (_, updated) in succeeded.items() if updated}
    assert len(events) == expected_events, "one event per updated assessment"
    print(f"\n[tenant isolation] {len(statuses)} requests: {len(succeeded)} x 200 "
          f"({expected_events} assessments updated, {replacements} replacements), {len(refused)} x 403")
    assert replacements > 10 and len(refused) > 10 and len(succeeded) > 10, "the traffic exercised every path"
