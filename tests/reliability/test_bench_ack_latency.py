"""A short run of ``bench.ack_latency``: jitbot and the bare Bolt app answer each of ``/jit``, the
modal's submission and an Approve click (HTTP 200, signed requests through the fake Slack), and what
jitbot does after its acks happened — each submission granted, each click's approval recorded. The
latencies are the benchmark's figures, not asserted here."""

from __future__ import annotations

from bench.ack_latency import run


async def test_a_short_ack_latency_run_answers_every_request_and_does_the_work_behind_the_acks() -> None:
    n = 4
    out, problems = await run(n)
    assert problems == []
    assert set(out) == {"command", "view_submission", "approve"}
    for kind, apps in out.items():
        assert len(apps["jitbot"]) == len(apps["floor"]) == n, kind
        assert all(t > 0 for t in apps["jitbot"] + apps["floor"]), kind
