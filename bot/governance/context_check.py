"""``jitbot connectors check`` for the context connectors (PagerDuty, Jira): the credentials, and the access
the policy's features need of them. One line per check, ``✓`` or ``✗`` as for the identity providers
(bot/governance/connector_check.py); any ``✗`` makes the exit status 1.

PagerDuty (on-call approval reads ``GET /oncalls`` filtered by the named schedules and escalation
policies): the token reads on-calls at all (``credentials``), then each named schedule and escalation
policy exists (``GET /schedules/{id}``, ``GET /escalation_policies/{id}``) and its on-calls can be read
(``GET /oncalls`` filtered by it).

Jira (``require_ticket`` reads issues): the email and API token sign in (``GET /rest/api/3/myself``),
then each named project exists and the account may browse it (``GET /rest/api/3/project/{key}``: Jira
answers 404 for both "no such project" and "may not browse it") and has each status the policy names
for it (``GET /rest/api/3/project/{key}/statuses``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import ValidationError

from bot.domain.policy import Policy
from connectors import jira, pagerduty
from connectors.base import Check, ConnectorError, NotFound, PermissionDenied, named

PD_KEYS = "PagerDuty > Integrations > API Access Keys (a read-only key)"
PD_SCOPES = {"schedule": "schedules.read", "escalation policy": "escalation_policies.read"}
JIRA_TOKENS = "https://id.atlassian.com/manage-profile/security/api-tokens"


@dataclass
class PagerDutyUse:
    schedules: dict[str, list[str]] = field(default_factory=dict)  # id → eligibilities naming it
    escalation_policies: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class JiraUse:
    projects: dict[str, list[str]] = field(default_factory=dict)  # key → eligibilities naming it
    statuses: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # key → status → eligibilities


def pagerduty_use(policy: Policy, name: str) -> PagerDutyUse:
    use = PagerDutyUse()
    for e in policy.eligibilities:
        for rule in (e.auto_approve_when, *(layer.auto_approve_when for layer in e.approvals)):
            pd = rule.on_call.pagerduty if rule is not None else None
            if pd is None or pd.connector != name:
                continue
            for sid in pd.schedules:
                _add(use.schedules, sid, e.name)
            for pid in pd.escalation_policies:
                _add(use.escalation_policies, pid, e.name)
    return use


def jira_use(policy: Policy, name: str) -> JiraUse:
    use = JiraUse()
    for e in policy.eligibilities:
        rule = e.ticket_rule.jira if e.ticket_rule is not None else None
        if rule is None or rule.connector != name:
            continue
        for key in rule.projects:
            _add(use.projects, key, e.name)
            for status in rule.statuses:
                _add(use.statuses.setdefault(key, {}), status, e.name)
    return use


def _add(found: dict[str, list[str]], key: str, where: str) -> None:
    places = found.setdefault(key, [])
    if where not in places:
        places.append(where)


async def check_pagerduty(name: str, client: pagerduty.PagerDutyClient, use: PagerDutyUse) -> list[Check]:
    try:
        await client.read_oncalls()
    except PermissionDenied as exc:
        return [Check("credentials", False, f"PagerDuty refused the token ({_status(exc)}): use an API key from "
                                            f"{PD_KEYS}, or give the OAuth app oncalls.read")]
    except ConnectorError as exc:
        return [Check("credentials", False, f"PagerDuty could not be asked ({exc})")]
    checks = [Check("credentials", True, "the token reads on-calls")]
    if not use.schedules and not use.escalation_policies:
        checks.append(Check("on-call rules", True, "no eligibility uses this connector"))
    for noun, ids in (("schedule", use.schedules), ("escalation policy", use.escalation_policies)):
        for rid, places in ids.items():
            checks.append(await _pd_named(name, client, noun, rid, places))
    return checks


async def _pd_named(name: str, client: pagerduty.PagerDutyClient, noun: str, rid: str,
                    places: list[str]) -> Check:
    label = f"{noun} {rid!r}"
    try:
        if noun == "schedule":
            title = await client.schedule_name(rid)
            await client.read_oncalls(schedules=(rid,))
        else:
            title = await client.escalation_policy_name(rid)
            await client.read_oncalls(escalation_policies=(rid,))
    except NotFound:
        return Check(label, False, f"does not exist at {name} (named by {named(places, 'eligibility')}): correct "
                                   f"the id in the policy (it is the last part of the {noun}'s URL in PagerDuty)")
    except PermissionDenied as exc:
        return Check(label, False, f"the token may not read it or its on-calls ({_status(exc)}): use a read-only "
                                   f"API key, or give the OAuth app {PD_SCOPES[noun]} and oncalls.read")
    except ConnectorError as exc:
        return Check(label, False, f"could not be read ({exc})")
    return Check(label, True, f"{title!r}, its on-calls readable")


async def check_jira(name: str, client: jira.JiraClient, use: JiraUse) -> list[Check]:
    try:
        who = await client.myself()
    except PermissionDenied as exc:
        return [Check("credentials", False, f"Jira refused the email and API token ({_status(exc)}): create a "
                                            f"token for that account at {JIRA_TOKENS}")]
    except ConnectorError as exc:
        return [Check("credentials", False, f"Jira could not be asked ({exc})")]
    checks = [Check("credentials", True, f"signed in as {who!r}")]
    if not use.projects:
        checks.append(Check("ticket rules", True, "no eligibility uses this connector"))
    for key, places in use.projects.items():
        checks.append(await _jira_project(name, client, key, places, use.statuses.get(key, {})))
    return checks


async def _jira_project(name: str, client: jira.JiraClient, key: str, places: list[str],
                        wanted: dict[str, list[str]]) -> Check:
    label = f"project {key!r}"
    try:
        title = await client.project(key)
        statuses = await client.project_statuses(key) if title is not None else None
    except ConnectorError as exc:
        return Check(label, False, f"could not be read ({exc})")
    if title is None or statuses is None:
        return Check(label, False, f"does not exist at {name}, or its account may not browse it (named by "
                                   f"{named(places, 'eligibility')}): give the account Browse projects in the "
                                   "project's permission scheme, or correct the key in the policy")
    have = {s.casefold() for s in statuses}
    missing = [s for s in wanted if s.strip().casefold() not in have]
    if missing:
        users = sorted({p for s in missing for p in wanted[s]})
        return Check(label, False, f"has no status {', '.join(repr(s) for s in missing)} (named by "
                                   f"{named(users, 'eligibility')}; its statuses: {', '.join(sorted(statuses))}): "
                                   "correct the name in the policy")
    return Check(label, True, f"{title!r}, browsable, with {named([repr(s) for s in wanted], limit=5)}")


def _status(exc: ConnectorError) -> str:
    """The HTTP status in a connector error's text (``… -> 401 …``), for the line."""
    text = str(exc)
    return text.split("-> ", 1)[1].split(" ", 1)[0] if "-> " in text else "refused"


async def check_context_connector(policy: Policy, name: str) -> list[Check]:
    """Every check of context connector ``name`` (type pagerduty or jira) for ``policy``."""
    conf = policy.context_connectors[name]
    client: pagerduty.PagerDutyClient | jira.JiraClient
    try:
        if conf.get("type") == "pagerduty":
            client = pagerduty.from_settings(name, conf)
        else:
            client = jira.from_settings(name, conf)
    except (ConnectorError, ValidationError) as exc:
        return [Check("configuration", False, " ".join(str(exc).split()))]
    try:
        if isinstance(client, pagerduty.PagerDutyClient):
            return await check_pagerduty(name, client, pagerduty_use(policy, name))
        return await check_jira(name, client, jira_use(policy, name))
    finally:
        await client.aclose()
