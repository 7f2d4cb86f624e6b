"""The review as Markdown (the weekly audit-channel post), CSV (one row per eligibility) or JSON."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, fields
from typing import Any

from bot.services.review import EligibilityStats, Review


def _n(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:g}{suffix}"


def as_json(review: Review) -> str:
    def plain(value: Any) -> Any:
        return value.isoformat() if hasattr(value, "isoformat") else value

    body = {
        "since": review.since.isoformat(), "until": review.until.isoformat(),
        "eligibilities": [asdict(s) for s in review.eligibilities],
        "unused": [{"eligibility": n, "last_request": plain(at)} for n, at in review.unused],
        "unused_days": review.unused_days,
        "frequent_requesters": [{"requester": w, "days": d, "working_days": t} for w, d, t in review.frequent],
        "approval_layers": [asdict(s) for s in review.layers],
        "total": {"hours_granted": review.total_hours, "standing_hours": review.total_standing_hours,
                  "reduction_pct": review.total_reduction_pct},
        "weekly": [{"week": w.isoformat(), "granted_h": g, "baseline_h": b} for w, g, b in review.weekly],
    }
    return json.dumps(body, indent=2, default=plain) + "\n"


def as_csv(review: Review) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([f.name for f in fields(EligibilityStats)])
    for s in review.eligibilities:
        writer.writerow(["" if v is None else v for v in asdict(s).values()])
    return out.getvalue()


def as_markdown(review: Review) -> str:
    period = f"{review.since:%Y-%m-%d %H:%M} → {review.until:%Y-%m-%d %H:%M} UTC"
    lines = [f"# Access review, {period}", ""]
    if review.total_reduction_pct is not None:
        lines += [f"**Risk reduction: {review.total_hours:g} h of privileged access granted vs "
                  f"{review.total_standing_hours:g} h standing = {review.total_reduction_pct:g} % less exposure.**", ""]
    else:
        lines += [f"{review.total_hours:g} h of privileged access granted (no standing baseline recorded).", ""]
    lines += ["| eligibility | requests | approved | denied | lapsed | break-glass | users | hours | median duration "
              "| median to approve | baseline | less exposure |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in review.eligibilities:
        lines.append(f"| {s.name} | {s.requests} | {s.approved} | {s.denied} | {s.lapsed} | {s.breakglass} | {s.users} "
                     f"| {s.hours_granted:g} | {_n(s.median_duration_h, ' h')} | {_n(s.median_approve_h, ' h')} "
                     f"| {_n(s.baseline_members)} | {_n(s.reduction_pct, ' %')} |")
    lines += ["", f"## Unused for {review.unused_days} days (candidates to remove)"]
    lines += [f"- {n} (last request {at:%Y-%m-%d})" if at else f"- {n} (never requested)"
              for n, at in review.unused] or ["- none"]
    lines += ["", "## Requested on most working days (candidates for a standing role)"]
    lines += [f"- {who}: {d} of {t} working days" for who, d, t in review.frequent] or ["- none"]
    lines += ["", "## Approval layers (median wait)"]
    lines += [f"- {s.eligibility} layer {s.layer}: {s.median_h:g} h over {s.decisions} decision(s)"
              + (" — slow" if s.slow else "") for s in review.layers] or ["- no decisions"]
    return "\n".join(lines) + "\n"


RENDERERS = {"md": as_markdown, "csv": as_csv, "json": as_json}
