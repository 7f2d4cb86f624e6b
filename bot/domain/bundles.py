"""Bundles: an eligibility made of others (``bundle: [db-readonly, logs-viewer]``). Pure.

A bundle is requested and approved once, and carried out as one grant per member:

- **Policy.** A bundle entry names two or more ordinary eligibilities (never itself, never another
  bundle) and may set only ``name``, ``description``, ``bundle``, ``max_duration``, ``default_duration``,
  ``warn_before`` and ``extension``. Everything else comes from its members (``compose``): the
  connector, target and requestors of its first member (whose grant the bundle's own request carries),
  ``max_duration`` the shortest of the members' (and its own, when set), a ticket when any member needs
  one, the eligibility-level ``step_up`` of the first member that has one, and no break-glass, delegates,
  on-call approval, ``enforce`` or transition; extensions only when the first member allows them.
- **Approval layers: the union, layer by layer.** The bundle has as many layers as its longest member.
  Layer *i*'s approvers are the union of the groups and users of layer *i* of every member that has one;
  its ``min_approvals`` the largest of theirs, its ``timeout`` the shortest, its ``remind_every`` the
  shortest set, its ``step_up`` the fresh sign-in its members' layer *i* need (none when none does;
  members needing different ones are refused); its ``after_hours`` the union of who decides each
  member's layer *i* after hours; escalation approvers are dropped. Whoever approves sees every item
  (the description lists them by name). The requester, whoever submitted on their behalf, and an
  approver of an earlier layer are refused as for any request — one request, so per item as well.
  Union means an approver of any member may approve the whole bundle: put only eligibilities with the
  same approvers in a bundle when that matters.
- **Carrying out** (bot/services/requesting/bundles.py): each member is its own request with its own grant, linked
  by ``access_request.bundle_id`` (the bundle request's id), checked against its own eligibility at submit
  and again when its grant is carried out, with its own expiry and the ordinary durable revocation.
  All-or-nothing: when any member ends other than by expiry (its grant failed for good, was refused,
  released or revoked), every other member still approved or active is stopped or revoked, audited, and
  the requester told.
- **Ad hoc** (``adhoc``): the ``/jit`` modal lets a requester pick several eligibilities at once. They
  form the same bundle, named by its members joined with ``+`` (``db-readonly+logs-viewer``: ``+`` is
  never in an eligibility's name, so the name says what it holds), composed from the policy whenever it
  is read (``Policy.eligibility``), so everything above holds unchanged. ``adhoc_refusal`` says why a
  pick cannot form one: fewer than two, duplicates, more than ``bundles.max_items``, an unknown
  eligibility, a bundle, or an item that needs what the multi-pick form does not collect or decide (a
  ticket, on-call approval, break-glass, delegates).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from bot.domain.step_up import step_up_for

# Eligibility and ApprovalLayer (bot/domain/policy.py, which calls this module from its validators) are
# typed ``Any`` here and their classes taken from the values: no import circle.
Eligibility = Any
ApprovalLayer = Any

# The keys a bundle entry may set; the rest comes from its members.
BUNDLE_KEYS = frozenset({"name", "description", "bundle", "max_duration", "default_duration", "warn_before",
                         "extension"})
# Filled from the first member before validation, recomputed from all members by ``compose``.
_FROM_FIRST = ("connector", "target", "requestors", "max_duration")


def prepare(raw: Sequence[Any]) -> list[Any]:
    """The raw ``eligibilities:`` list with each bundle entry made a valid eligibility (its first member's
    connector, target, requestors and maximum), for ``compose`` to finish once all are validated.
    Raises ValueError for a bundle that names an unknown eligibility, itself or another bundle."""
    by_name = {e.get("name"): e for e in raw if isinstance(e, Mapping)}
    out: list[Any] = []
    for entry in raw:
        if not isinstance(entry, Mapping) or "bundle" not in entry:
            out.append(entry)
            continue
        name, members = entry.get("name"), entry.get("bundle")
        extra = sorted(set(entry) - BUNDLE_KEYS)
        if extra:
            raise ValueError(f"bundle {name!r} cannot set {', '.join(extra)}: a bundle takes them from its "
                             f"members (it may set {', '.join(sorted(BUNDLE_KEYS))})")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ValueError(f"bundle {name!r}: 'bundle' is a list of eligibility names")
        if len(set(members)) != len(members) or len(members) < 2:
            raise ValueError(f"bundle {name!r} needs at least two different eligibilities")
        for m in members:
            if m == name:
                raise ValueError(f"bundle {name!r} names itself")
            member = by_name.get(m)
            if member is None:
                raise ValueError(f"bundle {name!r} names unknown eligibility {m!r}")
            if "bundle" in member:
                raise ValueError(f"bundle {name!r} names {m!r}, which is a bundle: bundles do not nest")
        first = by_name[members[0]]
        filled = dict(entry)
        for key in _FROM_FIRST:
            if key not in filled and key in first:
                filled[key] = first[key]
        out.append(filled)
    return out


ADHOC_SEP = "+"
ADHOC_NAME_MAX = 64  # the length of a request's eligibility name (storage/tables.py)


def adhoc_name(names: Sequence[str]) -> str:
    """The name of the ad-hoc bundle of ``names``: the first (the modal's main pick) then the others in
    name order, so that the same pick is the same request (one pending at a time)."""
    return ADHOC_SEP.join([names[0], *sorted(names[1:])]) if names else ""


def adhoc_members(name: str) -> list[str] | None:
    """The member names of an ad-hoc bundle's name, None for any other name."""
    return name.split(ADHOC_SEP) if ADHOC_SEP in name else None


def adhoc_refusal(names: Sequence[str], known: Mapping[str, Eligibility], max_items: int) -> str | None:
    """Why ``names`` cannot be requested together (a sentence for the requester), or None."""
    if len(names) < 2:
        return "Pick at least two items to request them together."
    dupes = sorted({n for n in names if list(names).count(n) > 1})
    if dupes:
        return f"{', '.join(dupes)} is picked more than once."
    if len(names) > max_items:
        return f"At most {max_items} items can be requested together; you picked {len(names)}."
    for n in names:
        e = known.get(n)
        if e is None:
            return f"There is no eligibility called {n[:64]!r}."
        if e.bundle:
            return f"{n} is itself a bundle: request it on its own."
        if e.require_ticket:
            return f"{n} needs a ticket, which a request of several items does not take: request it on its own."
        if e.auto_approve_when is not None or any(la.auto_approve_when is not None for la in e.approvals):
            return (f"{n} may be approved by being on call, which a request of several items is not: "
                    "request it on its own.")
    if len(adhoc_name(names)) > ADHOC_NAME_MAX:
        return (f"These names are too long together ({ADHOC_NAME_MAX} characters with the + between them): "
                "pick fewer, or ask for a bundle in the policy.")
    return None


def adhoc(names: Sequence[str], known: Mapping[str, Eligibility], max_items: int) -> Eligibility | None:
    """The ad-hoc bundle of ``names`` (``adhoc_name``'s order), or None when ``adhoc_refusal`` refuses it."""
    if adhoc_refusal(names, known, max_items) is not None or adhoc_name(names) != ADHOC_SEP.join(names):
        return None
    members = [known[n] for n in names]
    first = members[0]
    base = first.model_copy(update={
        "name": adhoc_name(names), "description": "", "bundle": tuple(names),
        "max_duration": min(m.max_duration for m in members),
        "default_duration": min(m.default for m in members),
        "warn_before": min(m.warn_before for m in members),
        "extension": first.extension.model_copy(update={"allowed": all(m.extension.allowed for m in members)}),
        "auto_approve_when": None, "break_glass": None, "delegates": type(first.delegates)(),
        "enforce": False, "transition": None})
    return compose(base, members)


def compose(bundle: Eligibility, members: Sequence[Eligibility]) -> Eligibility:
    """``bundle`` (validated by ``prepare``'s filling) completed from its validated ``members``."""
    first = members[0]
    # the bundle's own maximum, when set, else its first member's (``prepare``): never past any member's
    max_duration = min(bundle.max_duration, *(m.max_duration for m in members))
    default = min(bundle.default, max_duration)
    ticket: Any = next((m.require_ticket for m in members if m.ticket_rule is not None),
                       any(bool(m.require_ticket) for m in members))
    # shown with the request to whoever approves it: every item, by name
    step_up = next((m.step_up for m in members if m.step_up is not None), None)
    approvals = tuple(la.model_copy(update={"step_up": _layer_step_up(bundle.name, members, i, step_up)})
                      for i, la in enumerate(union_layers([m.approvals for m in members])))
    items = " + ".join(m.name for m in members)
    description = f"{bundle.description} [{items}]" if bundle.description else f"bundle: {items}"
    return bundle.model_copy(update={
        "connector": first.connector, "target": first.target, "requestors": first.requestors,
        "max_duration": max_duration, "default_duration": default, "require_ticket": ticket,
        "approvals": approvals, "description": description, "step_up": step_up,
        "terminate_sessions": first.terminate_sessions,
        # the bundle request carries its first member's grant: extended only when that member allows it too
        "extension": bundle.extension if first.extension.allowed else first.extension})


def _layer_step_up(name: str, members: Sequence[Eligibility], i: int, step_up: Any) -> Any:
    """Layer *i*'s ``step_up``: the fresh sign-in its members' layer *i* need (their own, or their
    eligibility's that the layer does not turn off); when none needs one, the bundle's turned off.
    Raises ValueError when members need different ones: one approval carries one sign-in."""
    needs = {m.name: n for m in members if len(m.approvals) > i
             and (n := step_up_for(m.step_up, m.approvals[i].step_up)) is not None}
    if len(set(needs.values())) > 1:
        raise ValueError(f"bundle {name!r}: {', '.join(needs)} need different step_up sign-ins on approval "
                         f"layer {i + 1}; a bundle's layer asks for one, so make them the same")
    if needs:
        return next(iter(needs.values()))
    return step_up.model_copy(update={"approvers": False}) if step_up is not None else None


def _union(principals_type: Any, sets: Sequence[Any]) -> Any:
    return principals_type(groups=tuple(dict.fromkeys(g for p in sets for g in p.groups)),
                           users=tuple(dict.fromkeys(u for p in sets for u in p.users)))


def union_layers(chains: Sequence[Sequence[ApprovalLayer]]) -> tuple[ApprovalLayer, ...]:
    """Layer *i* of the union: every member's layer *i* approvers (see the module docstring)."""
    out: list[ApprovalLayer] = []
    for i in range(max((len(c) for c in chains), default=0)):
        layers = [c[i] for c in chains if len(c) > i]
        reminders = [la.remind_every for la in layers if la.remind_every is not None]
        layer_type, principals_type = type(layers[0]), type(layers[0].approvers)
        union = functools.partial(_union, principals_type)
        # outside business hours each member's layer goes to whoever decides it then (its after_hours set)
        night = any(la.approver_set(after_hours=True) is not la.approvers for la in layers)
        out.append(layer_type(
            approvers=union([la.approvers for la in layers]),
            after_hours=union([la.approver_set(after_hours=True) for la in layers]) if night else None,
            min_approvals=max(la.min_approvals for la in layers),
            timeout=min(la.timeout for la in layers),
            remind_every=min(reminders) if reminders else None,
            step_up=next((la.step_up for la in layers if la.step_up is not None), None)))
    return tuple(out)
