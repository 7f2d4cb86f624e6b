"""A short run of ``bench.mass_expiry`` at a throttled IdP, both kinds: the in-process IdP and the real
Okta connector (okta SDK over TLS) against the fake Okta org enforcing a standing budget with Okta's
headers. Real time (a few seconds each), counts only: every grant revoked at the IdP exactly once,
none left a member, every grant ended, each audited exactly once, and few 429s — pacing fed by the
provider (its stated budget, or its 429s), not a retry storm. The rate achieved is the benchmark's
figure, not asserted here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.mass_expiry import run


@pytest.mark.parametrize("idp", ["memory", "okta"])
async def test_a_short_mass_expiry_at_a_throttled_idp_loses_nothing(idp: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):  # the okta SDK reads OKTA_* variables and ./okta.yaml
        if name.startswith("OKTA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    n, rate, concurrency = 120, 40, 16
    r = await run(n, rate, None, 1.0, idp_kind=idp, window=1, lead=0.5)
    assert r["revoked"] == n and r["revoked_twice"] == 0
    assert r["still_member"] == 0 and r["not_ended"] == 0
    assert r["audited"] == n and r["audited_once"] == n
    if idp == "okta":
        # Okta states its budget in every answer: a spent budget is waited out, not run into. (Lookups
        # and revocations are paced apart, so the two could share the last call of a window: a few.)
        assert r["throttled"] <= 3, r["throttled"]
    else:
        # This IdP says nothing until a 429: the calls in flight when the first one comes back meet it
        # too (at most the concurrency bound), then the learned pace keeps to the budget with a 429 now
        # and then from probing upwards.
        assert 1 <= r["throttled"] <= 1 + concurrency + n // 10, r["throttled"]
