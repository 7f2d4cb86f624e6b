"""The request state machine and the rules that guard it, with plain values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.domain.policy import Eligibility
from bot.domain.requests import (
    TERMINAL,
    TRANSITIONS,
    Decision,
    LayerOutcome,
    PolicyViolation,
    Status,
    Submission,
    Vote,
    check_transition,
    decide,
    eligible_approvers,
    plan_extension,
    validate_submission,
)

ALICE, BOB, CAROL, DAVE = "alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"
TICKETS = r"^[A-Za-z0-9][A-Za-z0-9_\-#/.:]{1,63}$"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def elig(**kw: Any) -> Eligibility:
    base: dict[str, Any] = {"name": "prod-admin", "connector": "demo", "target": {"group": "prod-admins"},
                            "requestors": {"groups": ["engineers"]}, "max_duration": "8h"}
    return Eligibility.model_validate({**base, **kw})


def submit(sub: Submission | None = None, e: Eligibility | None = None, *, eligible: bool = True,
           justification_max: int = 100) -> Submission:
    return validate_submission(sub or Submission("prod-admin", ALICE, timedelta(hours=1), "fix the outage"),
                               e or elig(), requester_eligible=eligible, justification_max=justification_max,
                               ticket_pattern=TICKETS)


def vote(*, votes: Sequence[Vote] = (), who: str = BOB, layer: int = 1, decision: Decision = Decision.APPROVE,
         status: Status = Status.PENDING, current: int = 1, layers: int = 2, min_approvals: int = 1,
         in_layer: bool = True) -> LayerOutcome:
    return decide(status=status, current_layer=current, layers=layers, min_approvals=min_approvals,
                  requester=ALICE, votes=votes, vote=Vote(layer, who, decision), approver_in_layer=in_layer)


# --- submission ----------------------------------------------------------------------------------


def test_an_eligible_requestor_may_submit_and_gets_normalised_values() -> None:
    sub = submit(Submission("prod-admin", " Alice@Example.com ", timedelta(hours=8), "  fix it  ", " OPS-1 "))
    assert sub == Submission("prod-admin", ALICE, timedelta(hours=8), "fix it", "OPS-1")


def test_only_eligible_requestors_may_submit() -> None:
    with pytest.raises(PolicyViolation, match="not eligible to request prod-admin") as exc:
        submit(eligible=False)
    assert exc.value.field == "eligibility"


@pytest.mark.parametrize("duration", [timedelta(0), timedelta(seconds=-1)])
def test_duration_must_be_longer_than_zero(duration: timedelta) -> None:
    with pytest.raises(PolicyViolation, match="longer than zero") as exc:
        submit(Submission("prod-admin", ALICE, duration, "fix"))
    assert exc.value.field == "duration"


def test_duration_may_not_exceed_the_eligibility_max() -> None:
    with pytest.raises(PolicyViolation, match="allows at most 8h") as exc:
        submit(Submission("prod-admin", ALICE, timedelta(hours=8, seconds=1), "fix"))
    assert exc.value.field == "duration"


@pytest.mark.parametrize("text", ["", "   ", "ok"])
def test_justification_is_required(text: str) -> None:
    with pytest.raises(PolicyViolation, match="say why") as exc:
        submit(Submission("prod-admin", ALICE, timedelta(hours=1), text))
    assert exc.value.field == "justification"


def test_justification_is_length_bounded() -> None:
    assert submit(Submission("prod-admin", ALICE, timedelta(hours=1), "x" * 100)).justification == "x" * 100
    with pytest.raises(PolicyViolation, match="too long .101 characters; at most 100") as exc:
        submit(Submission("prod-admin", ALICE, timedelta(hours=1), "x" * 101))
    assert exc.value.field == "justification"


@pytest.mark.parametrize("ticket", [None, "", "  "])
def test_a_ticket_is_required_when_the_eligibility_says_so(ticket: str | None) -> None:
    with pytest.raises(PolicyViolation, match="requires a ticket") as exc:
        submit(Submission("prod-admin", ALICE, timedelta(hours=1), "fix", ticket), elig(require_ticket=True))
    assert exc.value.field == "ticket"
    assert submit(Submission("prod-admin", ALICE, timedelta(hours=1), "fix"), elig()).ticket is None


def test_a_ticket_must_look_like_a_ticket_reference() -> None:
    with pytest.raises(PolicyViolation, match="ticket reference") as exc:
        submit(Submission("prod-admin", ALICE, timedelta(hours=1), "fix", "no spaces allowed"))
    assert exc.value.field == "ticket"


# --- decisions -----------------------------------------------------------------------------------


def test_requester_cannot_approve_own_request() -> None:
    with pytest.raises(PolicyViolation, match="your own request"):
        vote(who="ALICE@example.com")


def test_requester_cannot_deny_own_request_either() -> None:
    with pytest.raises(PolicyViolation, match="your own request"):
        vote(who=ALICE, decision=Decision.DENY)


def test_only_members_of_the_layer_may_decide() -> None:
    with pytest.raises(PolicyViolation, match="not an approver for layer 1"):
        vote(in_layer=False)


def test_same_person_cannot_approve_two_layers_of_one_request() -> None:
    earlier = [Vote(1, BOB, Decision.APPROVE)]
    with pytest.raises(PolicyViolation, match="already approved an earlier layer"):
        vote(votes=earlier, who=BOB, layer=2, current=2)
    assert vote(votes=earlier, who=CAROL, layer=2, current=2).status is Status.APPROVED


def test_same_person_cannot_vote_twice_on_one_layer() -> None:
    with pytest.raises(PolicyViolation, match="already decided on this layer"):
        vote(votes=[Vote(1, BOB, Decision.APPROVE)], who="Bob@Example.com", min_approvals=2)


def test_a_layer_passes_at_min_approvals_distinct_approvers() -> None:
    first = vote(who=BOB, min_approvals=2)
    assert first == LayerOutcome(Status.PENDING, 1, layer_passed=False)
    second = vote(votes=[Vote(1, BOB, Decision.APPROVE)], who=CAROL, min_approvals=2)
    assert second == LayerOutcome(Status.PENDING, 2, layer_passed=True)


def test_a_single_approval_passes_a_one_approval_layer_and_moves_to_the_next() -> None:
    assert vote(who=BOB) == LayerOutcome(Status.PENDING, 2, layer_passed=True)


def test_passing_the_last_layer_approves_the_request() -> None:
    assert vote(who=BOB, layers=1) == LayerOutcome(Status.APPROVED, 1, layer_passed=True)


def test_approvals_at_other_layers_do_not_count_towards_this_one() -> None:
    votes = [Vote(1, BOB, Decision.APPROVE)]
    outcome = vote(votes=votes, who=CAROL, layer=2, current=2, layers=2, min_approvals=2)
    assert outcome.status is Status.PENDING


def test_one_deny_ends_the_request() -> None:
    votes = [Vote(1, BOB, Decision.APPROVE)]
    assert vote(votes=votes, who=CAROL, decision=Decision.DENY, min_approvals=3) == LayerOutcome(
        Status.DENIED, 1, layer_passed=False)


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.PENDING])
def test_decisions_on_a_request_that_is_not_pending_are_refused(status: Status) -> None:
    with pytest.raises(PolicyViolation, match=f"already {status.value}"):
        vote(status=status)


def test_decisions_on_a_past_layer_are_refused_with_the_current_layer() -> None:
    with pytest.raises(PolicyViolation, match="Layer 1 is no longer open; the request is at layer 2"):
        vote(layer=1, current=2)


def test_decisions_on_a_future_layer_are_refused() -> None:
    with pytest.raises(PolicyViolation, match="Layer 3 is not open yet"):
        vote(layer=3, current=2, layers=3)


def test_eligible_approvers_exclude_the_requester_and_earlier_approvers() -> None:
    got = eligible_approvers([ALICE, "Bob@example.com", CAROL, DAVE], requester="Alice@Example.com",
                             earlier_approvers=[CAROL.upper()])
    assert got == {BOB, DAVE}


# --- transitions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), [(Status.PENDING, Status.APPROVED), (Status.APPROVED, Status.ACTIVE),
                                      (Status.ACTIVE, Status.EXPIRED), (Status.ACTIVE, Status.REVOKED),
                                      (Status.PENDING, Status.DENIED), (Status.PENDING, Status.CANCELLED),
                                      (Status.PENDING, Status.LAPSED), (Status.APPROVED, Status.FAILED)])
def test_the_designed_transitions_are_allowed(a: Status, b: Status) -> None:
    check_transition(a, b)


@pytest.mark.parametrize(("a", "b"), [(Status.PENDING, Status.ACTIVE), (Status.DENIED, Status.APPROVED),
                                      (Status.EXPIRED, Status.ACTIVE), (Status.ACTIVE, Status.PENDING)])
def test_transitions_outside_the_design_are_refused(a: Status, b: Status) -> None:
    with pytest.raises(PolicyViolation, match=f"a {a.value} request cannot become {b.value}"):
        check_transition(a, b)


@given(st.sampled_from(sorted(TERMINAL)), st.sampled_from(list(Status)))
def test_terminal_states_have_no_outgoing_transitions(terminal: Status, target: Status) -> None:
    assert not TRANSITIONS.get(terminal)
    with pytest.raises(PolicyViolation):
        check_transition(terminal, target)


@given(st.lists(st.sampled_from(list(Status)), max_size=20))
def test_a_walk_of_allowed_transitions_never_leaves_a_terminal_state(steps: list[Status]) -> None:
    current = Status.PENDING
    for nxt in steps:
        try:
            check_transition(current, nxt)
        except PolicyViolation:
            assert nxt not in TRANSITIONS.get(current, frozenset())
            continue
        assert current not in TERMINAL
        current = nxt


# --- the approval state machine, property-based ---------------------------------------------------

PEOPLE = [ALICE, BOB, CAROL, DAVE, "erin@example.com", "frank@example.com"]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[int], list[set[str]], list[Vote]]:
    layers = draw(st.integers(min_value=1, max_value=3))
    mins = [draw(st.integers(min_value=1, max_value=3)) for _ in range(layers)]
    members = [set(draw(st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=6))) for _ in range(layers)]
    one = st.builds(Vote, st.integers(min_value=0, max_value=layers + 1), st.sampled_from(PEOPLE),
                    st.sampled_from(list(Decision)))
    votes = draw(st.lists(one, max_size=25))
    return mins, members, votes


@settings(max_examples=300)
@given(scenarios())
def test_random_votes_never_approve_without_enough_distinct_non_requester_approvers(
        scenario: tuple[list[int], list[set[str]], list[Vote]]) -> None:
    mins, members, attempts = scenario
    status, layer, accepted = Status.PENDING, 1, []
    for v in attempts:
        before = status
        try:
            out = decide(status=status, current_layer=layer, layers=len(mins), min_approvals=mins[layer - 1],
                         requester=ALICE, votes=accepted, vote=v,
                         approver_in_layer=v.approver in members[layer - 1])
        except PolicyViolation:
            continue
        # an accepted vote came from a current member of the open layer, never the requester
        assert before is Status.PENDING and v.layer == layer
        assert v.approver != ALICE and v.approver in members[layer - 1]
        accepted.append(v)
        assert out.status is Status.DENIED if v.decision is Decision.DENY else out.status is not Status.DENIED
        status, layer = out.status, out.layer
    approvers_by_layer = [{v.approver for v in accepted if v.layer == n and v.decision is Decision.APPROVE}
                          for n in range(1, len(mins) + 1)]
    everyone = [v.approver for v in accepted]
    assert len(everyone) == len(set(everyone)), "nobody votes twice on one request"
    if status is Status.APPROVED:
        for n, need in enumerate(mins):
            assert len(approvers_by_layer[n]) >= need
            assert ALICE not in approvers_by_layer[n]
    elif status is Status.PENDING:
        assert all(len(approvers_by_layer[n]) >= mins[n] for n in range(layer - 1))
        assert len(approvers_by_layer[layer - 1]) < mins[layer - 1]
    else:
        assert status is Status.DENIED and accepted[-1].decision is Decision.DENY


# --- extension -----------------------------------------------------------------------------------


def extend(e: Eligibility, *, by: timedelta, held: timedelta = timedelta(hours=2),
           status: Status = Status.ACTIVE, elapsed: timedelta = timedelta(hours=1)) -> Any:
    return plan_extension(elig=e, status=status, granted_at=T0, expires_at=T0 + held, now=T0 + elapsed, by=by)


def test_an_extension_within_the_max_needs_no_approval() -> None:
    plan = extend(elig(), by=timedelta(hours=6))
    assert plan.new_expires_at == T0 + timedelta(hours=8)


def test_an_extension_beyond_the_max_is_refused_with_the_room_left() -> None:
    with pytest.raises(PolicyViolation, match="at most 8h in total; you can extend by 6h"):
        extend(elig(), by=timedelta(hours=6, minutes=1))


def test_an_extension_of_access_already_at_the_max_says_nothing_more() -> None:
    with pytest.raises(PolicyViolation, match="extend by nothing more"):
        extend(elig(), by=timedelta(minutes=1), held=timedelta(hours=8))


def test_reapproval_true_is_accepted_with_approval_layers_and_refused_without() -> None:
    with_layers = elig(extension={"reapproval": True}, approvals=[{"approvers": {"groups": ["leads"]}}])
    assert with_layers.extension.reapproval is True  # used: bot/services/extensions.py
    with pytest.raises(ValidationError, match="reapproval: true needs approval layers"):
        elig(extension={"reapproval": True}, approvals=[])
    assert elig(extension={"reapproval": False}).extension.reapproval is False  # the default, spelt out


def test_eligibilities_may_forbid_extensions() -> None:
    with pytest.raises(PolicyViolation, match="does not allow extensions"):
        extend(elig(extension={"allowed": False}), by=timedelta(minutes=5))


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.ACTIVE])
def test_only_active_access_can_be_extended(status: Status) -> None:
    with pytest.raises(PolicyViolation, match=f"can be extended; this request is {status.value}"):
        extend(elig(), by=timedelta(hours=1), status=status)


def test_an_extension_must_be_longer_than_zero() -> None:
    with pytest.raises(PolicyViolation, match="longer than zero"):
        extend(elig(), by=timedelta(0))


def test_expired_access_cannot_be_extended() -> None:
    with pytest.raises(PolicyViolation, match="already expired"):
        extend(elig(), by=timedelta(hours=1), elapsed=timedelta(hours=2))


@given(st.integers(min_value=1, max_value=16 * 3600), st.integers(min_value=60, max_value=8 * 3600))
def test_an_extension_without_approval_never_exceeds_the_max(by_s: int, held_s: int) -> None:
    e = elig(approvals=[{"approvers": {"users": [BOB]}}])
    try:
        plan = extend(e, by=timedelta(seconds=by_s), held=timedelta(seconds=held_s), elapsed=timedelta(0))
    except PolicyViolation:
        assert held_s + by_s > 8 * 3600
        return
    assert plan.new_expires_at - T0 <= e.max_duration
