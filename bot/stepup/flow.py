"""A step-up from the click to the vote.

1. Approve on a layer with ``step_up``: the approval service raises ``StepUpRequired``; ``link_for``
   issues a one-time link for that click (request, layer, approver, Slack user) and says so, privately.
2. ``GET /step-up/<secret>``: a page saying what is being approved, with a button (link previewers and
   scanners fetch with GET: a GET uses nothing up).
3. ``POST /step-up/<secret>``: the link is used up (issued -> started), the browser gets a cookie holding
   the OIDC ``state`` and goes to the provider (PKCE, ``prompt=login``, ``max_age``, ``nonce``).
4. ``GET /step-up/callback``: the ``state`` must match the cookie (the same browser) and a started link
   (-> verifying, once); the code is exchanged, the ID token verified (oidc.py) and its email must be the
   approver's who clicked. Only then the vote goes through ``ApprovalService.decide`` with the proof,
   which checks everything it always checks. Any failure: the link is failed, nothing recorded.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass

import aiohttp

from bot.domain.policy import Policy
from bot.domain.requests import Decision, PolicyViolation
from bot.domain.step_up import StepUp, step_up_for
from bot.domain.step_up_proof import StepUpProof, StepUpRequired
from bot.services.requesting.approvals import ApprovalService
from bot.services.runtime import Runtime
from bot.stepup import StepUpError, links
from bot.stepup.oidc import OidcClient, pkce_pair
from storage.tables import StepUpLink

CALLBACK = "/step-up/callback"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Begun:
    redirect: str  # the provider's authorization URL
    state: str  # for the browser's cookie
    max_age: int  # seconds the cookie lives


async def link_for(rt: Runtime, needed: StepUpRequired, *, approver: str, approver_slack: str | None) -> str:
    """Issue a one-time link for this click; the text for the approver (Slack mrkdwn, to show privately)."""
    step_up = needed.step_up
    if rt.policy.public_url is None:
        raise StepUpError("Step-up is not configured (public_url); ask an administrator.")
    issued = await links.issue(rt.db, now=rt.clock.now(), ttl=step_up.link_ttl, request_id=needed.request_id,
                               layer=needed.layer, approver=approver, approver_slack=approver_slack,
                               provider=step_up.provider)
    minutes = max(1, int(step_up.link_ttl.total_seconds() // 60))
    return (f"Approving {needed.request_id} needs a fresh sign-in at your identity provider. "
            f"<{rt.policy.public_url.rstrip('/')}{links.PATH}{issued.secret}|Sign in and approve> — for you only, "
            f"once, within {minutes} minute{'s' if minutes != 1 else ''}. Nothing is approved until you do.")


class StepUpFlow:
    def __init__(self, rt: Runtime, http: aiohttp.ClientSession) -> None:
        self.rt, self.http = rt, http
        self._clients: dict[str, OidcClient] = {}

    @property
    def policy(self) -> Policy:
        return self.rt.policy

    def _base(self) -> str:
        if self.policy.public_url is None:
            raise StepUpError("Step-up is not configured (public_url); ask an administrator.")
        return self.policy.public_url.rstrip("/")

    def _client(self, provider: str) -> OidcClient:
        config = self.policy.oidc_providers.get(provider)
        if config is None:
            raise StepUpError("This approval's identity provider is no longer in the policy; start again from Slack.")
        client = self._clients.get(provider)
        if client is None or client.config != config:  # a reloaded policy may change it
            client = self._clients[provider] = OidcClient(config, self.http)
        return client

    async def _usable(self, secret: str) -> StepUpLink:
        link = await links.find(self.rt.db, secret) if secret else None
        if link is None:
            raise StepUpError("This step-up link is not valid. Click Approve in Slack again for a new one.")
        if link.status != "issued":
            raise StepUpError("This step-up link has already been used. Click Approve in Slack again for a new one.")
        if link.expires_at <= self.rt.clock.now():
            raise StepUpError("This step-up link has expired. Click Approve in Slack again for a new one.")
        return link

    async def describe(self, secret: str) -> str:
        """What the link approves (the page before the provider), or StepUpError."""
        link = await self._usable(secret)
        layer = f" (layer {link.layer})" if link.layer > 1 else ""
        return f"Approve {link.request_id}{layer} as {link.approver}"

    async def begin(self, secret: str) -> Begun:
        """Use the link up and send the browser to the provider."""
        link = await self._usable(secret)
        step_up = await self._step_up_of(link)
        client = self._client(link.provider)
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier, challenge = pkce_pair()
        url = await client.authorization_url(redirect_uri=self._base() + CALLBACK, state=state, nonce=nonce,
                                             challenge=challenge, step_up=step_up, login_hint=link.approver)
        now = self.rt.clock.now()
        if not await links.move(self.rt.db, link.id, from_status="issued", to_status="started", now=now,
                                state_hash=links.digest(state), nonce=nonce, verifier=verifier):
            raise StepUpError("This step-up link has already been used. Click Approve in Slack again for a new one.")
        return Begun(url, state, max(60, int((link.expires_at - now).total_seconds())))

    async def _step_up_of(self, link: StepUpLink) -> StepUp:
        elig = self.rt.eligibility(await links.eligibility_of(self.rt.db, link.request_id) or "")
        if elig is None or not 1 <= link.layer <= len(elig.approvals):
            raise StepUpError("This request's access is no longer in the policy; nothing was approved.")
        step_up = step_up_for(elig.step_up, elig.approvals[link.layer - 1].step_up)
        if step_up is None or step_up.provider != link.provider:
            raise StepUpError("The policy for this approval changed; click Approve in Slack again.")
        return step_up

    async def callback(self, *, state: str, code: str, error: str, cookie: str) -> str:
        """Finish the sign-in and record the vote; the message for the page. StepUpError otherwise."""
        link = await links.find_by_state(self.rt.db, state) if state else None
        if link is None or link.status != "started":
            raise StepUpError("This sign-in does not belong to a step-up in progress (or was already used). "
                              "Click Approve in Slack again.")
        if not cookie or not hmac.compare_digest(cookie, state):
            raise StepUpError("This sign-in was finished in another browser than the one that started it; "
                              "click Approve in Slack again and finish in the same browser.")
        now = self.rt.clock.now()
        if not await links.move(self.rt.db, link.id, from_status="started", to_status="verifying", now=now):
            raise StepUpError("This step-up link has expired or was already used. Click Approve in Slack again.")
        try:
            if error:
                raise StepUpError(f"The identity provider did not sign you in ({error[:60]}). "
                                  "Click Approve in Slack again.")
            if not code:
                raise StepUpError("The identity provider sent no authorization code. Click Approve in Slack again.")
            step_up = await self._step_up_of(link)
            client = self._client(link.provider)
            assert link.verifier is not None and link.nonce is not None
            id_token = await client.exchange(code=code, verifier=link.verifier, redirect_uri=self._base() + CALLBACK)
            sign_in = await client.verify(id_token, nonce=link.nonce, step_up=step_up, now=self.rt.clock.now(),
                                          not_before=link.created_at)
            if sign_in.email != link.approver:
                raise StepUpError(f"You signed in as {sign_in.email}, but the approval was clicked by "
                                  f"{link.approver}. Nothing was approved.")
            proof = StepUpProof(link.request_id, link.layer, link.approver, sign_in.subject, sign_in.auth_time,
                                link.id[:16])
            try:
                result = await ApprovalService(self.rt).decide(
                    request_id=link.request_id, layer=link.layer, approver=link.approver, decision=Decision.APPROVE,
                    approver_slack=link.approver_slack, step_up=proof)
            except PolicyViolation as exc:
                raise StepUpError(str(exc)) from None
        except Exception as exc:
            if not isinstance(exc, StepUpError):
                log.exception("step-up callback for %s failed", link.request_id)
                exc = StepUpError("Something went wrong on jitbot's side; nothing was approved. "
                                  "Click Approve in Slack again.")
            await links.move(self.rt.db, link.id, from_status="verifying", to_status="failed",
                             now=self.rt.clock.now(), error=str(exc)[:200], verifier=None)
            raise exc from None
        await links.move(self.rt.db, link.id, from_status="verifying", to_status="used", now=self.rt.clock.now(),
                         verifier=None)
        return result.message
