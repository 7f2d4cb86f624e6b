"""The access review's numbers on a known data set, computed by hand (see the comments), and its formats."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.cli import main
from bot.policy_file import parse_policy
from bot.reports.chart import weekly_chart_png
from bot.services.review import build_review
from bot.services.review_render import as_csv, as_json, as_markdown
from storage.db import Database
from storage.tables import AccessRequest, ApprovalVote, Grant
from tests.conftest import POLICY, DbFactory

BASELINE = POLICY.replace("    require_ticket: true\n", "    require_ticket: true\n"
                          "    transition: {static_access_until: 2027-01-01, baseline_members: 2}\n")
SINCE, UNTIL = datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 12, tzinfo=UTC)  # Monday to Monday: 168 h


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


def req(rid: str, who: str, created: datetime, status: str, *, elig: str = "prod-admin", layers: int = 2,
        kind: str = "access", decided: datetime | None = None) -> AccessRequest:
    return AccessRequest(id=rid, eligibility=elig, kind=kind, requester=who, duration_s=3600, justification="x",
                         status=status, layers=layers, created_at=created, updated_at=created, decided_at=decided)


def grant(gid: str, rid: str, who: str, start: datetime, end: datetime, target: str = "prod-admins") -> Grant:
    return Grant(id=gid, request_id=rid, connector="demo", target_kind="group", target_id=target, user_email=who,
                 status="ended", granted_at=start, ended_at=end)


def vote(rid: str, layer: int, who: str, when: datetime, decision: str = "approve") -> ApprovalVote:
    return ApprovalVote(request_id=rid, layer=layer, approver=who, decision=decision, at=when)


async def seed(db: Database) -> None:
    await db.migrate()
    async with db.transaction() as s:
        s.add_all([
            # R1: L1 30 min, L2 60 min; approved after 1.5 h; granted 2 h.
            req("R1", "alice@example.com", at(5, 9), "expired", decided=at(5, 10, 30)),
            # R2: L1 2 h, L2 2 h; approved after 4 h; granted 4 h.
            req("R2", "alice@example.com", at(6, 9), "revoked", decided=at(6, 13)),
            # R3: denied at L1 after 1 h.
            req("R3", "alice@example.com", at(7, 9), "denied", decided=at(7, 10)),
            # R4: break-glass, no layers, 1 h.
            req("R4", "erin@example.com", at(8, 9), "expired", layers=0, kind="breakglass", decided=at(8, 9)),
            # R5: lapsed.
            req("R5", "bob@example.com", at(9, 9), "lapsed"),
            # R6: readonly, made the Sunday before the period; 2 of its 4 hours fall inside it.
            req("R6", "bob@example.com", datetime(2026, 1, 4, 22, tzinfo=UTC), "expired", elig="readonly", layers=0),
        ])
        await s.flush()
        s.add_all([
            vote("R1", 1, "bob@example.com", at(5, 9, 30)), vote("R1", 2, "dave@example.com", at(5, 10, 30)),
            vote("R2", 1, "bob@example.com", at(6, 11)), vote("R2", 2, "carol@example.com", at(6, 13)),
            vote("R3", 1, "bob@example.com", at(7, 10), "deny"),
            grant("G1", "R1", "alice@example.com", at(5, 10, 30), at(5, 12, 30)),
            grant("G2", "R2", "alice@example.com", at(6, 13), at(6, 17)),
            grant("G4", "R4", "erin@example.com", at(8, 9), at(8, 10)),
            grant("G6", "R6", "bob@example.com", datetime(2026, 1, 4, 22, tzinfo=UTC), at(5, 2), "readonly"),
        ])


async def test_review_numbers_match_the_hand_computed_ones(db_factory: DbFactory) -> None:
    db = db_factory()
    await seed(db)
    policy = parse_policy(BASELINE, env={}).policy
    r = await build_review(db, policy, since=SINCE, until=UNTIL, unused_days=5)
    prod, ro = r.eligibilities
    assert (prod.requests, prod.approved, prod.denied, prod.lapsed, prod.breakglass, prod.users) == (5, 3, 1, 1, 1, 3)
    assert prod.hours_granted == 7.0  # 2 + 4 + 1
    assert prod.median_duration_h == 2.0  # median of 2, 4, 1
    assert prod.median_approve_h == 2.75  # median of 1.5 and 4 (break-glass had no layers)
    assert (prod.baseline_members, prod.standing_hours) == (2, 336.0)  # 2 people × 168 h
    assert prod.reduction_pct == 97.9  # 1 − 7 / 336
    assert (ro.requests, ro.hours_granted, ro.median_duration_h, ro.reduction_pct) == (0, 2.0, None, None)
    assert r.total_hours == 9.0 and r.total_standing_hours == 336.0 and r.total_reduction_pct == 97.9
    assert r.unused == [("readonly", datetime(2026, 1, 4, 22, tzinfo=UTC))]  # nothing since 5 days before the end
    assert r.frequent == [("alice@example.com", 3, 5)]  # Mon, Tue, Wed of 5 working days
    layers = {(s.eligibility, s.layer): (s.median_h, s.decisions, s.slow) for s in r.layers}
    assert layers == {("prod-admin", 1): (1.0, 3, False),  # 0.5, 2, 1 h
                      ("prod-admin", 2): (1.5, 2, True)}  # 1, 2 h
    assert r.weekly == [(SINCE.date(), 9.0, 336.0)]


async def test_review_renders_as_markdown_csv_and_json(db_factory: DbFactory) -> None:
    db = db_factory()
    await seed(db)
    r = await build_review(db, parse_policy(BASELINE, env={}).policy, since=SINCE, until=UNTIL, unused_days=5)
    md = as_markdown(r)
    assert "7 h of privileged access granted" not in md
    assert "9 h of privileged access granted vs 336 h standing = 97.9 % less exposure" in md
    assert "| prod-admin | 5 | 3 | 1 | 1 | 1 | 3 | 7 | 2 h | 2.75 h | 2 | 97.9 % |" in md
    assert "- alice@example.com: 3 of 5 working days" in md and "prod-admin layer 2: 1.5 h" in md
    rows = list(csv.DictReader(io.StringIO(as_csv(r))))
    assert rows[0]["name"] == "prod-admin" and rows[0]["hours_granted"] == "7.0" and rows[1]["baseline_members"] == ""
    body = json.loads(as_json(r))
    assert body["total"]["reduction_pct"] == 97.9 and body["weekly"][0]["baseline_h"] == 336.0
    png = weekly_chart_png(r.weekly)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_report_commands_print_the_review_and_write_the_chart(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    path, policy = tmp_path / "jitbot.db", tmp_path / "policy.yml"
    policy.write_text(BASELINE)
    db = Database(f"sqlite+aiosqlite:///{path}")

    async def build() -> None:
        await seed(db)
        await db.dispose()

    asyncio.run(build())
    common = ["--policy", str(policy), "--database", f"sqlite+aiosqlite:///{path}", "--since", "2026-01-01"]
    assert main(["report", "review", *common, "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["eligibilities"][0]["hours_granted"] == 7.0
    chart = tmp_path / "chart.png"
    assert main(["report", "chart", *common, "--output", str(chart)]) == 0
    assert chart.read_bytes().startswith(b"\x89PNG")
