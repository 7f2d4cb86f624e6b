"""A short run of ``bench.throughput`` (the real ``jitbot serve`` process against the fake Slack) and of
its ``--floor`` variant: every flow completes, every message is delivered, with the calls a flow makes."""

from __future__ import annotations

import pytest

from bench.throughput import run


@pytest.mark.parametrize("floor", [False, True], ids=["jitbot", "floor"])
async def test_a_short_throughput_run_completes_every_flow(floor: bool, capsys: pytest.CaptureFixture[str]) -> None:
    result = await run(flows=6, concurrency=3, replicas=1, database="sqlite", floor=floor)
    out = capsys.readouterr().out
    # command → modal → submit → approve → grant, each flow waited for its "You now have" DM
    assert result["flows_per_s"] > 0 and result["p50"] > 0
    calls = dict(part.rsplit(" ", 1) for part in out.split("Slack calls per flow: ", 1)[1].splitlines()[0].split(", "))
    assert float(calls["views.open"]) == 1.0
    assert float(calls["chat.postMessage"]) >= 5.0  # the requester's three DMs, the two approvers' (+ audit posts)
    assert float(calls["chat.update"]) == 2.0  # both approvers' copies


async def test_a_short_throughput_run_grants_through_the_fake_okta_org(capsys: pytest.CaptureFixture[str]) -> None:
    """``--idp okta``: the replicas' Okta connector (okta SDK over TLS) against the fake org's process."""
    result = await run(flows=6, concurrency=3, replicas=1, database="sqlite", idp="okta")
    out = capsys.readouterr().out
    assert result["flows_per_s"] > 0  # every flow saw its "You now have" DM: the grant reached Okta
    okta_calls = float(out.split("Okta API calls per flow: ", 1)[1].split()[0])
    assert okta_calls >= 1.0  # at least each flow's membership PUT


async def test_warm_up_flows_run_before_the_clock_and_are_not_counted(capsys: pytest.CaptureFixture[str]) -> None:
    result = await run(flows=4, concurrency=2, replicas=1, database="sqlite", warmup=3)
    out = capsys.readouterr().out
    calls = dict(part.rsplit(" ", 1) for part in out.split("Slack calls per flow: ", 1)[1].splitlines()[0].split(", "))
    assert float(calls["views.open"]) == 1.0  # the 4 measured flows' modals, not the 3 warm-up ones' (7/4)
    assert float(calls["chat.update"]) == 2.0
    assert result["flows_per_s"] > 0 and result["p50"] > 0
