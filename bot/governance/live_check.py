"""``jitbot policy check --live``: everything the policy names exists at its identity provider.

Checked: each eligibility's target at its connector; every requestor, approver, escalation,
after-hours and delegate group and user, and the admins, at the directory connector; approval-layer
groups have at least ``settings.warn_min_approvers`` (default 2) members and at most
``settings.warn_max_approvers`` (default 100: each member is DMed for every request).
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.domain.policy import Policy, Principals
from connectors.base import Connector, NotFound, Target, TargetKind, members_ref


async def live_problems(policy: Policy, connectors: Mapping[str, Connector]) -> list[str]:
    """What is missing or too thin, one line each (empty: all good)."""
    directory = connectors[policy.directory_connector]
    problems: list[str] = []
    groups: dict[str, int | None] = {}
    users: dict[str, bool] = {}

    async def group_size(group: str) -> int | None:
        if group not in groups:
            try:
                groups[group] = len(await directory.list_members(group))
            except NotFound:
                groups[group] = None
        return groups[group]

    async def check(where: str, who: Principals, *, min_members: int = 0, max_members: int | None = None) -> None:
        for group in who.groups:
            size = await group_size(group)
            if size is None:
                problems.append(f"{where}: group {group!r} does not exist at {directory.name}")
            elif size < min_members:
                problems.append(f"{where}: group {group!r} has {size} member(s); approver groups need "
                                f"at least {min_members}")
            elif max_members is not None and size > max_members:
                problems.append(f"{where}: group {group!r} has {size} members, each asked by DM for every "
                                f"request (more than settings.warn_max_approvers, {max_members}); ask a "
                                "smaller group (an on-call rota) or post the ask to an approver channel "
                                "instead (approvers: {channel: ...})")
        for email in who.users:
            if email not in users:
                users[email] = await directory.find_user(email) is not None
            if not users[email]:
                problems.append(f"{where}: user {email} does not exist at {directory.name}")

    minimum, maximum = policy.settings.warn_min_approvers, policy.settings.warn_max_approvers
    await check("admins", policy.admins)
    for e in policy.eligibilities:
        conn = connectors[e.connector]
        try:
            await conn.list_members(members_ref(Target(TargetKind(e.target.kind), e.target.ref)))
        except NotFound:
            problems.append(f"{e.name}: target {e.target.kind} {e.target.ref!r} does not exist at {conn.name}")
        await check(f"{e.name}: requestors", e.requestors)
        await check(f"{e.name}: delegates", e.delegates)
        for i, layer in enumerate(e.approvals, start=1):
            await check(f"{e.name}: approvals[{i}]", layer.approvers, min_members=minimum, max_members=maximum)
            if layer.escalation is not None:
                await check(f"{e.name}: approvals[{i}].escalation", layer.escalation)
            if layer.after_hours is not None:
                await check(f"{e.name}: approvals[{i}].after_hours", layer.after_hours, min_members=minimum)
        if e.transition is not None:
            await check(f"{e.name}: transition.keep_standing", e.transition.keep_standing)
    return problems

