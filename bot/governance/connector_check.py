"""``jitbot connectors check``: what would fail at each connector before the first request does.

Per connector, in the policy's order: its own ``check(usage)`` (credentials, reachability, and the
permissions the policy's uses of it need: granting, ending sessions, reading sign-ins; see each
connector), whether it can do what the policy asks of it at all, and whether the groups and roles the
policy names exist there: every eligibility's target at the eligibility's connector, and every group
named for people (admins, requestors, delegates, approvers, escalation, after-hours, keep-standing) at
the directory connector. Each result is one line, ``✓`` or ``✗``; a ``✗`` says what is missing and
where to grant or create it. For a connector that grants, a line says whether the IdP-side expiry backstop
is on (connectors/backstop.py: the provider ends a membership itself at the grant's expiry), off but
available, or not offered by the provider at all (Okta, OneLogin, PingOne).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from bot.domain.policy import Policy, Principals
from bot.governance.context_check import check_context_connector
from connectors.backstop import NONE as NO_BACKSTOP
from connectors.backstop import expiry_backstop
from connectors.base import (
    Check,
    Connector,
    ConnectorError,
    NotFound,
    Target,
    TargetKind,
    Usage,
    members_ref,
    named,
    session_terminator,
    sign_in_log,
)
from connectors.registry import build_connector

# Where an administrator creates a missing group or role, by connector type.
CREATE_AT = {
    "okta": "in the Okta Admin Console > Directory > Groups",
    "entra": "in the Microsoft Entra admin center > Groups > All groups",
    "google": "in the Google Admin console > Directory > Groups",
    "onelogin": "in OneLogin > Users > Roles",
    "pingone": "in the PingOne admin console > Directory > Groups",
    "memory": "in the connector's groups or roles in the policy",
}


@dataclass(frozen=True, slots=True)
class Report:
    """What ``check_connectors`` found: the lines to print and whether every check passed."""

    lines: list[str]
    ok: bool


def usage_of(policy: Policy, name: str) -> Usage:
    """What the policy uses connector ``name`` for."""
    mine = [e for e in policy.eligibilities if e.connector == name]
    return Usage(grants=tuple(e.name for e in mine),
                 sessions=tuple(e.name for e in mine if e.terminate_sessions),
                 sign_ins=tuple(a.email for a in policy.recovery_accounts if a.connector == name),
                 directory=policy.directory_connector == name)


def people_groups(policy: Policy) -> dict[str, list[str]]:
    """Every group the policy names for people (looked up at the directory), with where it is named."""
    found: dict[str, list[str]] = {}

    def add(where: str, who: Principals | None) -> None:
        for group in who.groups if who is not None else ():
            found.setdefault(group, []).append(where)

    add("admins", policy.admins)
    for e in policy.eligibilities:
        add(f"{e.name}: requestors", e.requestors)
        add(f"{e.name}: delegates", e.delegates)
        for i, layer in enumerate(e.approvals, start=1):
            add(f"{e.name}: approvals[{i}]", layer.approvers)
            add(f"{e.name}: approvals[{i}].escalation", layer.escalation)
            add(f"{e.name}: approvals[{i}].after_hours", layer.after_hours)
        if e.transition is not None:
            add(f"{e.name}: transition.keep_standing", e.transition.keep_standing)
    return found


def targets_at(policy: Policy, name: str) -> dict[Target, list[str]]:
    """The eligibility targets at connector ``name``, with the eligibilities that grant them."""
    found: dict[Target, list[str]] = {}
    for e in policy.eligibilities:
        if e.connector == name:
            found.setdefault(Target(TargetKind(e.target.kind), e.target.ref), []).append(f"{e.name}: target")
    return found


def _capabilities(connector: Connector, usage: Usage) -> list[Check]:
    """Uses the connector cannot serve at all, whatever its permissions."""
    checks = []
    if usage.sessions and session_terminator(connector) is None:
        checks.append(Check("sessions", False, f"terminate_sessions on {named(usage.sessions, 'eligibility')}: "
                                                "this connector type cannot end sessions; remove it there"))
    if usage.sign_ins and sign_in_log(connector) is None:
        checks.append(Check("sign-ins", False, f"watching {named(usage.sign_ins, 'recovery account')}: this "
                                                "connector type cannot read sign-ins; move it to an okta or "
                                                "entra connector, or remove it"))
    return checks


# The providers whose connector offers the backstop, and what turning it on needs.
BACKSTOP_NEEDS = {
    "google": "the Cloud Identity Groups API scope https://www.googleapis.com/auth/cloud-identity.groups and "
              "Google Workspace Enterprise Standard/Plus, Enterprise for Education or Cloud Identity Premium",
    "entra": "PIM for Groups (Microsoft Entra ID P2 or Entra ID Governance) and the application permission "
             "PrivilegedAssignmentSchedule.ReadWrite.AzureADGroup",
}


def _backstop(connector: Connector, kind: str, usage: Usage) -> list[Check]:
    """Whether access granted through the connector also ends at the provider without jitbot."""
    if not usage.grants or expiry_backstop(connector) is not None:
        return []  # on: the connector's own check says whether it works
    if kind in NO_BACKSTOP:
        return [Check("expiry backstop", True, f"none: {NO_BACKSTOP[kind]}")]
    if kind in BACKSTOP_NEEDS:
        return [Check("expiry backstop", True, "off: with expiry_backstop: true on the connector the provider "
                                               f"also ends each grant at its expiry (needs {BACKSTOP_NEEDS[kind]})")]
    return []


async def _names_exist(connector: Connector, kind: str, wanted: dict[str, list[str]], *,
                       prefix: str = "") -> list[Check]:
    """One check per group or role in ``wanted`` (reference → where the policy names it). A read error other
    than "not found" stops the checks with one line: the permission lines say why."""
    checks = []
    where = CREATE_AT.get(kind, "at the provider")
    for ref, places in wanted.items():
        noun = "role" if ref.startswith("role:") else "group"
        label = f"{prefix}{noun} {ref.removeprefix('role:').removeprefix('group:')!r}"
        try:
            await connector.list_members(ref)
        except NotFound:
            checks.append(Check(label, False, f"does not exist at {connector.name} (named by {named(places)}): "
                                              f"create it {where}, or correct the name in the policy"))
        except ConnectorError as exc:
            checks.append(Check(label, False, f"cannot be read at {connector.name} ({exc.user_message}); the "
                                              "remaining groups are not checked"))
            break
        else:
            checks.append(Check(label, True, "exists"))
    return checks


async def check_connector(policy: Policy, name: str, build: Callable[[str], Connector]) -> list[Check]:
    """Every check of connector ``name`` for ``policy``; ``build`` makes the connector (and may raise
    ``ConnectorError`` / ``ValidationError`` for bad settings)."""
    try:
        connector = build(name)
    except (ConnectorError, ValidationError) as exc:
        return [Check("configuration", False, " ".join(str(exc).split()))]
    try:
        usage = usage_of(policy, name)
        try:
            checks = await connector.check(usage)
        except ConnectorError as exc:
            return [Check("check", False, f"{exc.user_message} ({exc})")]
        kind = str(policy.connectors[name].get("type"))
        checks += _capabilities(connector, usage) + _backstop(connector, kind, usage)
        if not all(c.ok for c in checks):
            return [*checks, Check("groups", False, "not checked until the lines above pass")]
        wanted = {members_ref(t): places for t, places in targets_at(policy, name).items()}
        checks += await _names_exist(connector, kind, wanted, prefix="target ")
        if usage.directory:
            checks += await _names_exist(connector, kind, people_groups(policy))
        return checks
    finally:
        await connector.aclose()


async def check_connectors(policy: Policy, names: Sequence[str],
                           build: Callable[[str], Connector] | None = None) -> Report:
    """The lines of ``jitbot connectors check`` for ``names``: a heading per connector, then one line per
    check (``✓ name: detail`` or ``✗ name: what is missing and where to fix it``)."""
    make = build or (lambda n: build_connector(n, policy.connectors[n]))
    lines: list[str] = []
    ok = True
    for name in names:
        context = name in policy.context_connectors  # pagerduty, jira: bot/governance/context_check.py
        lines.append(f"{name} ({(policy.context_connectors if context else policy.connectors)[name].get('type')})")
        checks = await check_context_connector(policy, name) if context else await check_connector(policy, name, make)
        for c in checks:
            lines.append(f"  {'✓' if c.ok else '✗'} {c.name}" + (f": {c.message}" if c.message else ""))
            ok = ok and c.ok
    return Report(lines, ok)
