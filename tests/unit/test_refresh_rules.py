"""Pure tests of the refresh rules (docs/design.md#rest-contract and #replacement-rule): no database, no Kafka."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from consumer.refresh_rules import (
    NO_ALTERNATIVE,
    Assessment,
    BankQuestion,
    RefreshPlan,
    Slot,
    plan_refresh,
)

COMPANY = 7
OTHER_COMPANY = 8
PY = ("mcq", "python", "medium")


def q(qid, kind=PY, company=None, version=1, deleted=False):
    return BankQuestion(qid, company, *kind, version=version, deleted=deleted)


def assessment(sections, oid=11, company=COMPANY, name="Backend L2"):
    """sections: list of lists of (qid, snapshot_version)."""
    slots = tuple(
        Slot(s_idx, q_idx, qid, version)
        for s_idx, section in enumerate(sections)
        for q_idx, (qid, version) in enumerate(section)
    )
    return Assessment(oid, company, name, slots)


def by_kind(questions):
    out = defaultdict(list)
    for question in questions:
        out[question.kind].append(question)
    return dict(out)


def plan(a, questions, candidates=None):
    """Plan with every bank question (deleted ones included) offered as a candidate."""
    bank = {question.qid: question for question in questions}
    return plan_refresh(a, bank, by_kind(candidates if candidates is not None else questions))


def apply(a, p, questions):
    """What the store does with a plan: new qid and the bank's current version."""
    bank = {question.qid: question for question in questions}
    changes = {(u.section_idx, u.question_idx): u.new_qid for u in p.updates}
    slots = tuple(
        Slot(s.section_idx, s.question_idx, changes[(s.section_idx, s.question_idx)],
             bank[changes[(s.section_idx, s.question_idx)]].version)
        if (s.section_idx, s.question_idx) in changes else s
        for s in a.slots
    )
    return Assessment(a.oid, a.company_id, a.name, slots)


# --- active questions: refreshed or unchanged -------------------------------------------------


@pytest.mark.parametrize(
    ("bank_version", "snapshot_version", "refreshed"),
    [
        pytest.param(2, 1, [101], id="newer-bank-version-refreshed"),
        pytest.param(1, 2, [101], id="any-differing-version-refreshed"),
        pytest.param(3, 3, [], id="same-version-unchanged"),
    ],
)
def test_active_question_refreshed_only_when_version_differs(bank_version, snapshot_version, refreshed):
    questions = [q(101, version=bank_version), q(102, version=1)]
    p = plan(assessment([[(101, snapshot_version), (102, 1)]]), questions)
    report = p.report()
    assert report["refreshed_qids"] == refreshed
    assert report["questions_refreshed"] == len(refreshed)
    assert report["replacements"] == [] and report["replacement_failures"] == []
    assert report["status"] == ("updated" if refreshed else "unchanged")
    assert [(u.old_qid, u.new_qid) for u in p.updates] == [(qid, qid) for qid in refreshed]


# --- deleted questions: which alternative is valid --------------------------------------------

VALID_CASES = [
    pytest.param([q(201)], {201}, id="public-same-kind-active"),
    pytest.param([q(201, company=COMPANY)], {201}, id="own-company-private-allowed"),
    pytest.param([q(201, company=OTHER_COMPANY)], None, id="other-company-private-never"),
    pytest.param([q(201, deleted=True)], None, id="deleted-candidate-never"),
    pytest.param([q(201, kind=("coding", "python", "medium"))], None, id="different-type-never"),
    pytest.param([q(201, kind=("mcq", "java", "medium"))], None, id="different-skill-never"),
    pytest.param([q(201, kind=("mcq", "python", "hard"))], None, id="different-difficulty-never"),
    pytest.param([q(102)], None, id="already-used-in-assessment-never"),
    pytest.param([q(102), q(201, company=OTHER_COMPANY), q(202, deleted=True), q(203)], {203},
                 id="only-valid-one-among-invalid"),
    pytest.param([], None, id="no-candidates-at-all"),
]


@pytest.mark.parametrize(("extra", "allowed"), VALID_CASES)
def test_deleted_question_replacement_respects_rule(extra, allowed):
    # Section 0 holds 102 (active, same kind); section 1 slot 1 holds deleted 150.
    questions = [q(102), q(100, kind=("essay", "go", "easy")), q(150, deleted=True), *extra]
    a = assessment([[(102, 1)], [(100, 1), (150, 1)]])
    p = plan(a, questions)
    report = p.report()
    assert report["refreshed_qids"] == []
    if allowed is None:
        assert report["replacements"] == []
        assert report["replacement_failures"] == [
            {"qid": 150, "section_idx": 1, "question_idx": 1, "reason": NO_ALTERNATIVE}
        ]
        assert report["deleted_questions_not_replaced"] == 1
        assert report["status"] == "unchanged"
        assert p.updates == []
    else:
        [replacement] = report["replacements"]
        assert replacement["old_qid"] == 150 and replacement["new_qid"] in allowed
        assert report["deleted_questions_replaced"] == 1
        assert report["replacement_failures"] == []
        assert report["status"] == "updated"
        [update] = p.updates
        assert (update.section_idx, update.question_idx, update.old_qid) == (1, 1, 150)


def test_candidates_filed_under_the_wrong_kind_are_still_rejected():
    deleted = q(150, deleted=True)
    wrong = q(201, kind=("mcq", "python", "hard"))  # a store bug files it under PY
    p = plan_refresh(assessment([[(150, 1)]]), {150: deleted}, {PY: [wrong]})
    assert p.replacements == [] and [f["qid"] for f in p.failures] == [150]


def test_no_alternative_reason_text_is_the_documented_one():
    assert NO_ALTERNATIVE == "no active alternative with the same type, skill and difficulty"


# --- determinism and spread -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_choice_is_independent_of_candidate_order(seed):
    questions = [q(150, deleted=True)] + [q(300 + i) for i in range(10)]
    a = assessment([[(150, 1)]], oid=42)
    baseline = plan(a, questions).replacements
    shuffled = questions[1:]
    random.Random(seed).shuffle(shuffled)
    assert plan(a, questions, candidates=shuffled).replacements == baseline
    assert plan(a, questions).report() == plan(a, questions).report()


def test_different_assessments_spread_over_candidates():
    questions = [q(150, deleted=True)] + [q(300 + i) for i in range(10)]
    chosen = {plan(assessment([[(150, 1)]], oid=oid), questions).replacements[0]["new_qid"]
              for oid in range(1, 51)}
    assert chosen <= {300 + i for i in range(10)}
    assert len(chosen) > 1, "every assessment got the same replacement"


def test_two_deleted_of_same_kind_get_different_replacements():
    questions = [q(150, deleted=True), q(151, deleted=True), q(301), q(302), q(303)]
    p = plan(assessment([[(150, 1)], [(151, 1)]]), questions)
    new = [r["new_qid"] for r in p.replacements]
    assert [r["old_qid"] for r in p.replacements] == [150, 151]
    assert len(set(new)) == 2 and set(new) <= {301, 302, 303}


def test_second_deleted_fails_when_only_one_alternative():
    questions = [q(150, deleted=True), q(151, deleted=True), q(301)]
    report = plan(assessment([[(150, 1), (151, 1)]]), questions).report()
    assert report["replacements"] == [{"old_qid": 150, "new_qid": 301}]
    assert report["replacement_failures"] == [
        {"qid": 151, "section_idx": 0, "question_idx": 1, "reason": NO_ALTERNATIVE}
    ]


# --- idempotence ------------------------------------------------------------------------------


def test_second_refresh_after_applying_plan_reports_nothing_new():
    questions = [
        q(101, version=3), q(102, version=1),
        q(150, deleted=True), q(301),  # replaceable
        q(160, kind=("sql", "joins", "hard"), deleted=True),  # no alternative
    ]
    a = assessment([[(101, 1), (102, 1)], [(150, 1), (160, 1)]])
    first = plan(a, questions)
    assert first.report()["status"] == "updated"
    assert first.refreshed_qids == [101] and first.replacements == [{"old_qid": 150, "new_qid": 301}]

    refreshed = apply(a, first, questions)
    assert [s.qid for s in refreshed.slots] == [101, 102, 301, 160]
    second = plan(refreshed, questions).report()
    assert second["questions_refreshed"] == 0 and second["refreshed_qids"] == []
    assert second["deleted_questions_replaced"] == 0 and second["replacements"] == []
    assert second["status"] == "unchanged"
    assert second["replacement_failures"] == first.failures == [
        {"qid": 160, "section_idx": 1, "question_idx": 1, "reason": NO_ALTERNATIVE}
    ]


# --- report shape -----------------------------------------------------------------------------

REPORT_KEYS = {
    "oid", "name", "total_questions", "questions_refreshed", "refreshed_qids",
    "deleted_questions_replaced", "replacements", "deleted_questions_not_replaced",
    "replacement_failures", "status",
}


def test_report_matches_design_example_shape():
    questions = [q(101, version=2), q(102, version=2), q(140, version=5), q(103),
                 q(150, deleted=True), q(233),
                 q(151, kind=("sql", "joins", "hard"), deleted=True)]
    a = assessment([[(101, 1), (102, 1), (103, 1)], [(140, 4), (150, 1), (151, 1)]],
                   oid=11, name="Backend L2")
    report = plan(a, questions).report()
    assert set(report) == REPORT_KEYS
    assert report == {
        "oid": 11, "name": "Backend L2", "total_questions": 6,
        "questions_refreshed": 3, "refreshed_qids": [101, 102, 140],
        "deleted_questions_replaced": 1, "replacements": [{"old_qid": 150, "new_qid": 233}],
        "deleted_questions_not_replaced": 1,
        "replacement_failures": [{"qid": 151, "section_idx": 1, "question_idx": 2,
                                  "reason": NO_ALTERNATIVE}],
        "status": "updated",
    }


@pytest.mark.parametrize(
    ("p", "status"),
    [
        pytest.param(RefreshPlan(1, "x", 0), "unchanged", id="empty-plan-unchanged"),
        pytest.param(RefreshPlan(1, "x", 1, failures=[{"qid": 1}]), "unchanged",
                     id="only-failures-unchanged"),
    ],
)
def test_status_unchanged_without_updates(p, status):
    assert p.report()["status"] == status
    assert p.changed is False


def test_empty_assessment_reports_zero_everything():
    report = plan(assessment([]), []).report()
    assert report["total_questions"] == 0 and report["status"] == "unchanged"
    assert report["questions_refreshed"] == report["deleted_questions_replaced"] == 0
    assert report["deleted_questions_not_replaced"] == 0
