"""The at-scale world of issue 13, at full size or a fraction of it.

Full size: 10,000 companies with 200,000 assessments of 20 questions (half of
them hold the one popular public question the fan-out deletes), plus one big
company with 20,000 assessments of 50 questions. The public bank has 60
kinds x 50 questions at every size, so a replacement has the same number of
candidates whatever the scale: cost per assessment can be compared.
Generated with a fixed seed, loaded through the product's loader.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from bench.world import LEVELS, SKILLS, TYPES, question

SEED = 20261201
POPULAR_QID = 1  # used by half of the small companies' assessments; the fan-out deletes it
PUBLIC_PER_KIND = 50
BIG_COMPANY = 1
BIG_OID_BASE, SMALL_OID_BASE = 1_000_000, 2_000_000
OWN_QID_BASE = 100_000  # two questions owned by each company
KEYED_COMPANIES = 200  # companies with an API key: the small REST requests' callers


def api_key(company_id: int) -> str:
    return f"scale-key-{company_id:06d}-0123456789"


@dataclass(frozen=True)
class ScaleSizes:
    fraction: float

    @property
    def companies(self) -> int:
        return max(10, round(10_000 * self.fraction))

    @property
    def assessments(self) -> int:
        return round(200_000 * self.fraction)

    @property
    def big_assessments(self) -> int:
        return round(20_000 * self.fraction)

    @property
    def fan_out(self) -> int:
        return self.assessments // 2


def kinds() -> list[tuple[str, str, str]]:
    return [(t, f"x-{s}", lv) for t in TYPES for s in SKILLS for lv in LEVELS]


def public_bank() -> list[dict[str, Any]]:
    """qid 1 is the popular question, of the first kind; 2.. the rest of the bank."""
    out, qid = [], 1
    for kind in kinds():
        for _ in range(PUBLIC_PER_KIND):
            out.append(question(qid, kind))
            qid += 1
    return out


def build(sizes: ScaleSizes) -> dict[str, Any]:
    rng = random.Random(SEED)
    companies = [BIG_COMPANY, *range(2, 2 + sizes.companies)]
    bank = public_bank()
    others = [q["qid"] for q in bank if q["qid"] != POPULAR_QID]
    doc: dict[str, Any] = {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [api_key(c)] if c <= KEYED_COMPANIES else []}
                      for c in companies],
        "questions": bank,
        "assessments": [],
    }
    all_kinds = kinds()
    for i, company in enumerate(companies[1:]):
        doc["questions"] += [question(OWN_QID_BASE + 2 * i + j, rng.choice(all_kinds), company_id=company)
                             for j in range(2)]
    small_companies = companies[1:]
    for i in range(sizes.assessments):
        company = small_companies[i % len(small_companies)]
        qids = rng.sample(others, 19 if i % 2 == 0 else 20)
        if i % 2 == 0:
            qids.insert(rng.randrange(20), POPULAR_QID)
        doc["assessments"].append(_assessment(SMALL_OID_BASE + i, company, qids))
    for i in range(sizes.big_assessments):
        doc["assessments"].append(_assessment(BIG_OID_BASE + i, BIG_COMPANY, rng.sample(others, 50)))
    return doc


def _assessment(oid: int, company_id: int, qids: list[int]) -> dict[str, Any]:
    sections = [{"name": f"Section {j + 1}", "qids": qids[i : i + 10]} for j, i in enumerate(range(0, len(qids), 10))]
    return {"oid": oid, "company_id": company_id, "name": f"Assessment {oid}", "sections": sections}
