"""The simulation's policy, and an independent model of what it allows.

The model is written from the policy rules (docs/policy.md), not from the services: it reads the policy
as the plain dict below, counts approvals itself, and learns only from what the simulation did (its own
actions, the services' yes/no answers, and the calls that reached the IdP). It never reads a grant's
status or ``owns_membership``. Its verdicts:

- a membership is *allowed* while it is standing (held before jitbot's first grant of it), or while a
  request of that user for an eligibility on that target is *live*: its grant was carried out (the IdP
  answered the add), after the approvals its policy required and not before its start, and it has not
  ended (released, cancelled, revoked, denied) nor expired (granted time + duration + extensions);
- an add reaching the IdP for a request that the policy does not let be carried out at that moment
  (approvals missing, before its start, eligibility removed) is a violation at once;
- a removal of standing access, or an extension past ``max_duration``, is a violation at once.

What jitbot may lag on (a revocation waiting for the worker, a call in flight) is checked after a
*drain* — the worker has run and every IdP call has been answered — when held must be allowed exactly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

ADMIN = "root@example.com"
REQUESTERS = ("alice@example.com", "erin@example.com")
OUTSIDER = "bob@example.com"  # an approver, not a requestor
APPROVERS = ("bob@example.com", "carol@example.com")
USERS = (*REQUESTERS, *APPROVERS, ADMIN)
BUNDLE = "zw-bundle"

POLICY: dict[str, Any] = {
    "audit_channel": "#jit-audit",
    "admins": {"users": [ADMIN]},
    "connectors": {"demo": {
        "type": "memory",
        "users": [{"email": u} for u in USERS],
        "groups": {"engineers": list(REQUESTERS), "leads": list(APPROVERS), "x": [], "y": ["erin@example.com"],
                   "z": [], "w": []},
    }},
    "eligibilities": [
        {"name": "x-auto", "description": "x without approval", "connector": "demo", "target": {"group": "x"},
         "requestors": {"groups": ["engineers"]}, "max_duration": "4h", "default_duration": "1h"},
        {"name": "x-lead", "description": "x, one lead approves", "connector": "demo", "target": {"group": "x"},
         "requestors": {"groups": ["engineers"]}, "max_duration": "4h", "default_duration": "1h",
         "approvals": [{"approvers": {"groups": ["leads"]}, "timeout": "4h"}], "break_glass": {"max_duration": "1h"}},
        {"name": "y-two", "description": "y, two leads in turn", "connector": "demo", "target": {"group": "y"},
         "requestors": {"groups": ["engineers"]}, "max_duration": "4h", "default_duration": "1h",
         # layer 1 is asked in an approver channel (any vote may come from there: only the layer's
         # approvers' count), layer 2 by DM and in another channel
         "approvals": [{"approvers": {"groups": ["leads"], "channel": "#y-approvals"}, "timeout": "4h"},
                       {"approvers": {"groups": ["leads"], "channel": "#y-second", "notify": "both"},
                        "timeout": "4h"}]},
        # a bundle (the ``bundle`` step): requested and approved once, one grant per member, all or nothing
        {"name": "z-lead", "connector": "demo", "target": {"group": "z"}, "requestors": {"groups": ["engineers"]},
         "max_duration": "4h", "approvals": [{"approvers": {"groups": ["leads"]}, "timeout": "4h"}]},
        {"name": "w-auto", "connector": "demo", "target": {"group": "w"}, "requestors": {"groups": ["engineers"]},
         "max_duration": "4h"},
        {"name": BUNDLE, "description": "z and w together", "bundle": ["z-lead", "w-auto"], "max_duration": "4h"},
    ],
}
# What the ``submit`` and ``reload`` steps pick from (the bundle and its members have a step of their own).
ELIGIBILITIES = ("x-auto", "x-lead", "y-two")
TARGETS = ("group:x", "group:y", "group:z", "group:w")


def policy_without(removed: frozenset[str]) -> dict[str, Any]:
    doc = copy.deepcopy(POLICY)
    doc["eligibilities"] = [e for e in doc["eligibilities"] if e["name"] not in removed]
    return doc


def _hours(text: str) -> timedelta:
    assert text.endswith("h")
    return timedelta(hours=int(text[:-1]))


def standing() -> set[tuple[str, str]]:
    groups = POLICY["connectors"]["demo"]["groups"]
    return {(f"group:{g}", u) for g, members in groups.items() for u in members}


class Violation(AssertionError):
    """An invariant broke; the message says which and why, ``kind`` names the invariant (and, where the
    evidence points at one, the known hole of issue 26 it looks like)."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind or message.split(":")[0]


@dataclass
class Req:
    rid: str
    requester: str
    elig: str
    target: str
    submitted_at: datetime
    starts_at: datetime | None
    duration: timedelta
    allowed: bool  # the policy let this submission in at all
    layer: int = 1  # the layer open now (1-based); past the last one once approved
    layer_opened: datetime | None = None
    approvers: list[str] = field(default_factory=list)  # who passed each layer, in order
    approved_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str = ""
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    bundle: str | None = None  # the bundle request's id, on it and on its members' requests
    last_add_at: datetime | None = None  # when an IdP add for it was last made (its answer may be lost)
    breakglass: bool = False  # taken with break-glass: approved at once, never extended (docs/policy.md)

    def live(self, now: datetime) -> bool:
        return (self.granted_at is not None and self.ended_at is None and self.expires_at is not None
                and now < self.expires_at)


class Model:
    """``lenient``: known holes the model takes as policy, to measure the others on a build that still
    has them: ``"4"`` (issue 26 #4: an approved grant may be impossible to stop, and is carried out after
    its eligibility is removed), ``"late-vote"`` (an approval given after its layer's timeout counts
    while the lapse pass has not run yet)."""

    def __init__(self, lenient: frozenset[str] = frozenset()) -> None:
        self.lenient = lenient
        self.removed: frozenset[str] = frozenset()
        self.requests: dict[str, Req] = {}
        self.standing = standing()

    # ---- the policy, from the dict -------------------------------------------------------------------
    def _elig(self, name: str) -> dict[str, Any] | None:
        if name in self.removed:
            return None
        return next((e for e in POLICY["eligibilities"] if e["name"] == name), None)

    @staticmethod
    def _group(name: str) -> set[str]:
        return set(POLICY["connectors"]["demo"]["groups"][name])

    def _layers(self, elig: dict[str, Any]) -> list[dict[str, Any]]:
        if "bundle" not in elig:
            return list(elig.get("approvals", []))
        # docs/policy.md (bundles): layer i is every member's layer i, approvers united, the shortest timeout
        chains = [list(m.get("approvals", [])) for m in POLICY["eligibilities"] if m["name"] in elig["bundle"]]
        out = []
        for i in range(max(len(c) for c in chains)):
            layers = [c[i] for c in chains if len(c) > i]
            out.append({"approvers": {"groups": sorted({g for la in layers for g in la["approvers"]["groups"]})},
                        "timeout": f"{min(_hours(la['timeout']) for la in layers).seconds // 3600}h"})
        return out

    def _max(self, elig: dict[str, Any]) -> timedelta:
        members = [m for m in POLICY["eligibilities"] if m["name"] in elig.get("bundle", ())]
        return min(_hours(e["max_duration"]) for e in [elig, *members])

    # ---- what the simulation did ---------------------------------------------------------------------
    def submitted(self, rid: str, *, requester: str, elig: str, now: datetime, starts_at: datetime | None,
                  duration: timedelta, breakglass: bool = False) -> None:
        spec = self._elig(elig)
        rules = (spec or {}).get("break_glass", {}) if breakglass else (spec or {})
        cap = rules.get("max_duration")
        if spec is not None and "bundle" in spec and not breakglass:
            allowed_cap = self._max(spec)
        else:
            allowed_cap = _hours(cap) if cap is not None else None
        allowed = (spec is not None and allowed_cap is not None and requester in self._group("engineers")
                   and timedelta(0) < duration <= allowed_cap
                   and (starts_at is None or starts_at > now))
        target = self._target(spec)
        req = Req(rid, requester, elig, target, now, starts_at, duration, allowed, layer_opened=now,
                  bundle=rid if spec is not None and "bundle" in spec else None, breakglass=breakglass)
        if allowed and spec is not None and (breakglass or not self._layers(spec)):
            req.approved_at = now
        self.requests[rid] = req

    def _target(self, spec: dict[str, Any] | None) -> str:
        if spec is not None and "bundle" in spec:  # the bundle's own request carries its first member
            spec = self._elig(spec["bundle"][0])
        return f"group:{spec['target']['group']}" if spec else "?"

    def voted(self, rid: str, *, layer: int, approver: str, approve: bool, now: datetime,
              minutes: int | None = None) -> None:
        """A vote the service accepted: counted only if the policy counts it. ``minutes``: approved for
        that long; never longer than the duration as it stands (else jitbot accepted what it must refuse)."""
        req = self.requests.get(rid)
        if req is not None and minutes is not None and timedelta(minutes=minutes) > req.duration:
            raise Violation(f"{rid} approved by {approver} for {minutes}m, longer than its "
                            f"{req.duration} as it stands", "approved for longer than requested")
        spec = self._elig(req.elig) if req else None
        if req is None or spec is None or not req.allowed or req.ended_at or req.approved_at:
            return
        layers = self._layers(spec)
        if layer != req.layer or not 1 <= layer <= len(layers):
            return
        rule = layers[layer - 1]
        assert req.layer_opened is not None
        late = now >= req.layer_opened + _hours(rule["timeout"]) and "late-vote" not in self.lenient
        if (approver not in set().union(*(self._group(g) for g in rule["approvers"]["groups"]))
                or approver == req.requester
                or approver in req.approvers or late):
            return
        if not approve:
            req.ended_at, req.ended_by = now, "denied"
            return
        req.approvers.append(approver)
        if minutes is not None:  # the shortest duration any layer approved wins
            req.duration = min(req.duration, timedelta(minutes=minutes))
        req.layer, req.layer_opened = layer + 1, now
        if layer == len(layers):
            req.approved_at = now

    def must_end(self, rid: str, action: str, *, actor: str, now: datetime) -> bool:
        """Whether the policy says ``action`` by ``actor`` ends the request now (whatever the service said)."""
        req = self.requests.get(rid)
        if req is None or req.ended_at is not None or "4" in self.lenient:
            return False
        authorised = actor == ADMIN if action == "revoke" else actor == req.requester
        if not authorised:
            return False
        not_started = req.approved_at is not None and req.granted_at is None and (
            req.starts_at is not None and now < req.starts_at)
        if action == "cancel":  # the requester withdraws a request, approved or not, before it starts
            return req.approved_at is None or not_started
        if action == "revoke":  # an admin ends access, or an approved grant before it starts
            return req.live(now) or not_started
        return req.live(now)  # release: the requester ends their access (before a start: cancel is the way)

    def ended(self, rid: str, *, now: datetime, by: str) -> None:
        req = self.requests.get(rid)
        if req is not None and req.ended_at is None:
            req.ended_at, req.ended_by = now, by
        if req is not None and req.bundle is not None:  # a bundle ends together (released, revoked, cancelled)
            for sib in self.requests.values():
                if sib.bundle == req.bundle and sib.ended_at is None:
                    sib.ended_at, sib.ended_by = now, f"{by} of its bundle ({rid})"

    def bundle_member(self, rid: str, *, bundle: str, elig: str) -> None:
        """The service made ``rid`` for member ``elig`` of the bundle request ``bundle`` (at its approval)."""
        head = self.requests.get(bundle)
        if rid in self.requests or head is None:
            return
        self.requests[rid] = Req(rid, head.requester, elig, self._target(self._elig(elig)), head.submitted_at,
                                 head.starts_at, head.duration, head.allowed, layer=head.layer,
                                 approvers=list(head.approvers), approved_at=head.approved_at,
                                 ended_at=head.ended_at, ended_by=head.ended_by, bundle=bundle)

    def extended(self, rid: str, *, new_expiry: datetime) -> None:
        req = self.requests[rid]
        if req.breakglass:
            raise Violation(f"{rid}, a break-glass use, extended to {new_expiry:%H:%M}",
                            "break-glass access extended (issue 26 #3)")
        spec = next(e for e in POLICY["eligibilities"] if e["name"] == req.elig)
        if req.granted_at is None or new_expiry - req.granted_at > _hours(spec["max_duration"]):
            raise Violation(f"{rid} extended to {new_expiry:%H:%M} beyond {req.elig}'s max_duration "
                            f"(granted {req.granted_at})", "extended past max_duration")
        req.expires_at = new_expiry

    def reloaded(self, removed: frozenset[str]) -> None:
        self.removed = removed

    def add_issued(self, rid: str, *, now: datetime) -> None:
        """An add reached the IdP for ``rid``'s grant: the policy must let it be carried out now."""
        req = self.requests[rid]
        req.last_add_at = now
        why = None
        if not req.allowed or req.approved_at is None:
            why = "without the approvals the policy requires"
        elif req.starts_at is not None and now < req.starts_at:
            why = f"before its start ({req.starts_at:%m-%d %H:%M})"
        elif req.elig in self.removed and "4" not in self.lenient:
            why = f"after its eligibility {req.elig} was removed from the policy"
        if why:
            kind = ("grant carried out after its eligibility was removed (issue 26 #4)"
                    if "eligibility" in why else f"grant carried out {why.split(' (')[0]}")
            raise Violation(f"an IdP add for {rid} ({req.requester} {req.target}) was made {why}", kind)

    def add_answered(self, rid: str, *, now: datetime) -> None:
        req = self.requests[rid]
        if req.granted_at is None:
            req.granted_at, req.expires_at = now, now + req.duration
            if req.bundle is not None and req.approved_at is not None:
                # no member outlives its approval: the approved duration from approval (or the start)
                due = max(req.approved_at, req.starts_at or req.approved_at)
                req.expires_at = min(req.expires_at, due + req.duration)

    # ---- verdicts ----------------------------------------------------------------------------------
    def allowed(self, now: datetime) -> set[tuple[str, str]]:
        return self.standing | {(r.target, r.requester) for r in self.requests.values() if r.live(now)}

    def ever_approved(self) -> set[tuple[str, str]]:
        return self.standing | {(r.target, r.requester) for r in self.requests.values()
                                if r.allowed and r.approved_at is not None}

    def check_always(self, members: set[tuple[str, str]]) -> None:
        """At every step: nothing held without approvals, no standing access removed."""
        jit = {m for m in members if m[0] in TARGETS}
        lost = {m for m in self.standing if m[0] in TARGETS} - jit
        if lost:
            raise Violation(f"standing access removed: {sorted(lost)}", "standing access removed")
        unapproved = jit - self.ever_approved()
        if unapproved:
            raise Violation(f"held without the approvals the policy requires: {sorted(unapproved)}")

    def check_asks(self, asks: list[dict[str, Any]]) -> None:
        """Asks go where each layer says (the outbox's approval asks): a channel-only layer (y-two's first) is
        never asked by DM but by an escalation, and a channel ask names its layer's channel."""
        for ask in asks:
            snap, layer = ask["request"], int(ask["layer"])
            spec = self._elig(snap["eligibility"])
            if spec is None or not 1 <= layer <= len(self._layers(spec)):
                continue
            approvers = self._layers(spec)[layer - 1]["approvers"]
            channel, notify = approvers.get("channel"), approvers.get("notify") or (
                "channel" if approvers.get("channel") else "dm")
            if "channel" in ask and ask["channel"] != channel:
                raise Violation(f"{snap['id']} layer {layer} asked in {ask['channel']}, not {channel}",
                                "asked in the wrong channel")
            if "approver" in ask and notify == "channel" and "Escalated" not in str(ask.get("note")):
                raise Violation(f"{snap['id']} layer {layer} DMed {ask['approver']}: the layer is asked in "
                                f"{channel} only", "channel layer asked by DM")

    def check_drained(self, members: set[tuple[str, str]], now: datetime) -> None:
        """After a drain: held is exactly what is allowed (no more; the standing ones at least)."""
        self.check_always(members)
        extra = {m for m in members if m[0] in TARGETS} - self.allowed(now)
        if extra:
            why = []
            for target, user in sorted(extra):
                mine = [r for r in self.requests.values() if (r.target, r.requester) == (target, user)]
                why.append(f"{user} in {target}; their requests: " + "; ".join(
                    f"{r.rid} {r.elig} approved={r.approved_at is not None} starts={_t(r.starts_at)} "
                    f"granted={_t(r.granted_at)} expires={_t(r.expires_at)} ended={_t(r.ended_at)}"
                    f"{'(' + r.ended_by + ')' if r.ended_by else ''}" for r in mine))
            raise Violation("membership held with no live grant after the worker ran: " + " | ".join(why),
                            self._suspect(extra))
        self.check_bundles(members, now)

    def check_bundles(self, members: set[tuple[str, str]], now: datetime) -> None:
        """After a drain, all or nothing: an approved bundle that no step ended, within its approved window
        (``approved_at`` or its start, plus its duration: every member's expiry), is held in full or not at
        all. Checked for a requester with no other such bundle (two could hold each other's targets)."""
        spec = next(e for e in POLICY["eligibilities"] if e["name"] == BUNDLE)
        targets = [self._target(self._elig(m)) for m in spec["bundle"]]

        def open_(r: Req) -> bool:
            if r.bundle != r.rid or not r.allowed or r.approved_at is None or r.ended_at is not None:
                return False
            due = max(r.approved_at, r.starts_at or r.approved_at)
            return due <= now < due + r.duration

        heads = [r for r in self.requests.values() if open_(r)]
        for head in heads:
            if any(h is not head and h.requester == head.requester for h in heads):
                continue
            held = [t for t in targets if (t, head.requester) in members]
            if held and len(held) != len(targets):
                raise Violation(f"bundle {head.rid} of {head.requester} held in part after the worker ran: "
                                f"{held} of {targets}", "bundle held in part")

    def _idp_bound(self, m: tuple[str, str], now: datetime) -> datetime | None:
        """The latest end any approved grant of membership ``m`` may have: its expiry (extensions included)
        once granted, else the duration from its last IdP add (what the IdP was told when the answer was lost)."""
        ends = [r.expires_at if r.expires_at is not None else (r.last_add_at or now) + r.duration
                for r in self.requests.values()
                if (r.target, r.requester) == m and r.approved_at is not None]
        return max(ends) if ends else None

    def check_backstop(self, members: set[tuple[str, str]], expiries: dict[tuple[str, str], datetime],
                       now: datetime) -> None:
        """The expiry backstop, at every step: every membership jitbot added has an expiry at the IdP, never
        later than the approved end of the grants behind it; so access ends by the IdP's expiry at the latest,
        whether jitbot runs or not. Standing access has none."""
        for m in sorted(m for m in members if m[0] in TARGETS and m not in self.standing):
            at, bound = expiries.get(m), self._idp_bound(m, now)
            if at is None:
                raise Violation(f"backstop: {m} is held with no expiry at the IdP",
                                "backstop: a membership jitbot added has no expiry at the IdP")
            if bound is None or at > bound:
                raise Violation(f"backstop: {m} expires at the IdP at {_t(at)}, after its approved end {_t(bound)}",
                                "backstop: the IdP's expiry is later than the approved end")
        if any(m in self.standing for m in expiries):
            raise Violation("backstop: standing access was given an expiry at the IdP",
                            "backstop: standing access given an expiry")

    def check_outage(self, members: set[tuple[str, str]], now: datetime) -> None:
        """After jitbot was stopped while time passed: nothing jitbot added is held past its approved end."""
        late = sorted(m for m in members if m[0] in TARGETS and m not in self.standing
                      and (self._idp_bound(m, now) or now) <= now)
        if late:
            raise Violation(f"backstop: with jitbot stopped, {late} outlived their approved end",
                            "backstop: access outlived its end while jitbot was stopped")

    def _suspect(self, extra: set[tuple[str, str]]) -> str:
        """Which known hole the evidence points at (a guess from the requests, for the figures)."""
        mine = [r for r in self.requests.values() if (r.target, r.requester) in extra]
        if any("refused" in r.ended_by for r in mine):
            return "membership outlived its grants: an approved grant could not be stopped (issue 26 #4)"
        if any(r.starts_at is not None and r.approved_at is not None for r in mine):
            return "membership outlived its grants, a scheduled grant was involved (issue 26 #1)"
        return "membership outlived its grants (issue 26 #2: hand-off racing a completion)"


def _t(value: datetime | None) -> str:
    return f"{value:%d %H:%M}" if value else "-"
