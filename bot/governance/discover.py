"""``jitbot discover``: the groups at each identity provider, which JIT covers, and candidates for JIT.

For every connector that can list its groups (the optional ``list_groups`` capability), each group is
shown with its member count, the eligibilities whose target it is, and whether its name looks
privileged (admin, owner, root, prod, superuser, priv…). Standing members are the members without an
active grant (for a group no eligibility covers: every member). A privileged-looking group that no
eligibility covers and that has standing members is a *candidate for JIT*; a covered group that still
has standing members and no ``transition:`` is worth a transition.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from bot.cli_support import CliError, configured_policy, database_url, table
from bot.domain.policy import Eligibility
from bot.services.runtime import Runtime
from bot.services.transition import TransitionService
from connectors.base import ConnectorError, GroupInfo, group_lister

PRIVILEGED = re.compile(r"admin|owner|root|prod|super.?user|priv|sudo|wheel", re.IGNORECASE)


@dataclass
class DiscoveredGroup:
    connector: str
    id: str
    name: str
    members: int
    standing: int
    covered_by: list[str]
    privileged: bool
    transition: bool = False  # a covering eligibility has a ``transition:``

    @property
    def candidate(self) -> bool:
        """Privileged-looking, not under JIT, and people hold it standing."""
        return self.privileged and not self.covered_by and self.standing > 0

    @property
    def note(self) -> str:
        if self.candidate:
            return "candidate for JIT"
        if self.covered_by and self.standing and not self.transition:
            return "standing members: plan a transition"
        return ""


@dataclass
class Discovery:
    groups: list[DiscoveredGroup] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # connectors that cannot list groups
    errors: dict[str, str] = field(default_factory=dict)  # connector → what went wrong


def _covering(eligibilities: Sequence[Eligibility], connector: str, group: GroupInfo) -> list[Eligibility]:
    return [e for e in eligibilities if e.connector == connector and e.target.kind == "group"
            and e.target.ref in (group.id, group.name)]


async def discover(rt: Runtime, connectors: list[str] | None = None) -> Discovery:
    out = Discovery()
    transition = TransitionService(rt)
    for name in connectors or list(rt.connectors):
        conn = rt.connector(name)
        lister = group_lister(conn)
        if lister is None:
            out.unsupported.append(name)
            continue
        try:
            for g in sorted(await lister.list_groups(), key=lambda g: g.name.lower()):
                covering = _covering(rt.policy.eligibilities, name, g)
                count = g.member_count if g.member_count is not None else len(await conn.list_members(g.id))
                # standing = members without an active grant (TransitionService's rule); uncovered: everyone
                standing = len(await transition.standing_members(covering[0])) if covering else count
                out.groups.append(DiscoveredGroup(
                    connector=name, id=g.id, name=g.name, members=count, standing=standing,
                    covered_by=[e.name for e in covering], privileged=bool(PRIVILEGED.search(g.name)),
                    transition=any(e.transition is not None for e in covering)))
        except ConnectorError as exc:
            out.errors[name] = str(exc)
    return out


def render_json(d: Discovery) -> str:
    groups = [asdict(g) | {"candidate": g.candidate, "note": g.note} for g in d.groups]
    return json.dumps({"groups": groups, "unsupported": d.unsupported, "errors": d.errors}, indent=2)


def render_table(d: Discovery, *, candidates_only: bool = False) -> str:
    shown = [g for g in d.groups if g.candidate or not candidates_only]
    shown.sort(key=lambda g: (g.connector, not g.candidate, g.name.lower()))
    rows = [[g.connector, g.name, str(g.members), str(g.standing), ", ".join(g.covered_by) or "-",
             "yes" if g.privileged else "", g.note] for g in shown]
    lines = [table(["CONNECTOR", "GROUP", "MEMBERS", "STANDING", "COVERED BY", "PRIVILEGED", "NOTE"], rows)
             if rows else "no groups"]
    covered = sum(1 for g in d.groups if g.covered_by)
    candidates = sum(1 for g in d.groups if g.candidate)
    lines.append(f"\n{len(d.groups)} group(s); {covered} covered by an eligibility; "
                 f"{candidates} privileged-looking with standing members (candidates for JIT)")
    for name in d.unsupported:
        lines.append(f"{name}: this connector cannot list groups (not scanned)")
    for name, error in d.errors.items():
        lines.append(f"{name}: error: {error}")
    return "\n".join(lines)


def cmd_discover(args: argparse.Namespace) -> int:
    from bot.bootstrap import build_runtime, close_runtime

    loaded = configured_policy(args)
    names = list(loaded.policy.connectors)
    if args.connector and args.connector not in names:
        raise CliError(f"jitbot: no connector {args.connector!r} in {loaded.path} (have: {', '.join(names)})", 2)

    async def run() -> Discovery:
        rt = await build_runtime(loaded, database_url(args))
        try:
            return await discover(rt, [args.connector] if args.connector else None)
        finally:
            await close_runtime(rt)

    result = asyncio.run(run())
    print(render_json(result) if args.json else render_table(result, candidates_only=args.candidates))
    return 1 if result.errors else 0
