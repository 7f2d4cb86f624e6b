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
