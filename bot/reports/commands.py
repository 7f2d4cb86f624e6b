"""``jitbot report review|chart``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from bot.cli_support import configured_policy, err, run_db
from bot.reports.chart import weekly_chart_png
from bot.services.review import Review, build_review
from bot.services.review_render import RENDERERS
from storage.db import Database


def _review(args: argparse.Namespace) -> Review:
    policy = configured_policy(args).policy
    now = datetime.now(UTC)
    since = args.since if args.since is not None else now - policy.reports.period

    def work(db: Database) -> object:
        return build_review(db, policy, since=since, until=now, unused_days=args.unused_days)

    review: Review = run_db(args, work)
    return review


def cmd_report_review(args: argparse.Namespace) -> int:
    text = RENDERERS[args.format](_review(args))
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8", newline="")
        err(f"wrote the review to {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_report_chart(args: argparse.Namespace) -> int:
    review = _review(args)
    Path(args.output).write_bytes(weekly_chart_png(review.weekly))
    err(f"wrote {len(review.weekly)} week(s) of granted vs standing hours to {args.output}")
    return 0
