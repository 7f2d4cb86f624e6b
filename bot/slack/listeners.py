"""Every Slack listener: ack first, parse, call a service, render. Authorisation happens in the services."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.requests import Decision, PolicyViolation
from bot.services import queries
from bot.services.admin import AdminService
from bot.services.approvals import ApprovalService
from bot.services.breakglass import BreakGlassService
from bot.services.grants import GrantService
from bot.services.requests import RequestService
from bot.services.runtime import Runtime
from bot.slack import blocks, breakglass, ids
from bot.slack.admin import admin_command
from bot.slack.breakglass import breakglass_command
from bot.slack.identity import NoEmail, SlackIdentity

log = logging.getLogger(__name__)

NO_EMAIL = ("jitbot cannot see an email address for your Slack account, so it cannot match you to an "
            "identity-provider account.")


def _value(action: dict[str, Any]) -> tuple[str, int]:
    request_id, _, layer = str(action.get("value", "")).partition(":")
    return request_id, int(layer) if layer.isdigit() else 0


def register(app: AsyncApp, rt: Runtime) -> None:
    identity = SlackIdentity()
    requests, approvals, grants = RequestService(rt), ApprovalService(rt), GrantService(rt)
    admin, glass = AdminService(rt), BreakGlassService(rt)
    breakglass.register(app, rt, identity)

    async def email_or_tell(client: AsyncWebClient, user_id: str, respond: AsyncRespond | None) -> str | None:
        try:
            return await identity.email(client, user_id)
        except NoEmail:
            if respond is not None:
                await respond(response_type="ephemeral", text=NO_EMAIL)
            return None

    async def modal_for(email: str, selected: str | None = None) -> dict[str, Any]:
        mine = await requests.requestable(email)
        for_others = [e for e in rt.policy.eligibilities if await requests.may_submit_for_others(email, e)]
        shown = mine + [e for e in for_others if e not in mine]
        return blocks.request_modal(shown, selected, on_behalf=bool(for_others))

    async def open_modal(client: AsyncWebClient, trigger_id: str, email: str) -> None:
        await client.views_open(trigger_id=trigger_id, view=await modal_for(email))

    async def publish_home(client: AsyncWebClient, user_id: str, email: str) -> None:
        active, pending = await queries.my_requests(rt, email)
        waiting = await queries.awaiting_me(rt, email)
        await client.views_publish(user_id=user_id, view=blocks.home_view(active=active, pending=pending,
                                                                          approvals=waiting))

    @app.command(ids.COMMAND)
    async def jit_command(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient,
                          respond: AsyncRespond) -> None:
        await ack()
        words = str(command.get("text", "")).split()
        sub = words[0].lower() if words else ""
        email = await email_or_tell(client, command["user_id"], respond)
        if email is None:
            return
        try:
            if sub in ("", "request"):
                await open_modal(client, command["trigger_id"], email)
            elif sub == "list":
                active, pending = await queries.my_requests(rt, email)
                lines = [f"• *{blocks.esc(s['eligibility'])}* ({s['id']}) active until {blocks.when(s['expires_at'])}"
                         for s in active]
                lines += [f"• *{blocks.esc(s['eligibility'])}* ({s['id']}) {s['status']}, layer {s['layer']} of "
                          f"{s['layers']}" for s in pending]
                await respond(response_type="ephemeral", text="\n".join(lines) or "You have no access or requests.")
            elif sub == "release" and len(words) == 2:
                await grants.end_early(request_id=words[1].upper(), actor=email, reason="released")
                await respond(response_type="ephemeral", text=f"Releasing {words[1].upper()} now.")
            elif sub == "cancel" and len(words) == 2:
                await requests.cancel(request_id=words[1].upper(), by=email)
                await respond(response_type="ephemeral", text=f"Cancelled {words[1].upper()}.")
            elif sub == "breakglass":
                await respond(response_type="ephemeral",
                              text=await breakglass_command(glass, email, command["user_id"], words[1:]))
            elif sub == "admin":
                await respond(response_type="ephemeral", text=await admin_command(admin, email, words[1:]))
            else:
                await respond(response_type="ephemeral", text=blocks.HELP)
        except PolicyViolation as exc:
            await respond(response_type="ephemeral", text=str(exc))

    @app.view(ids.REQUEST_VIEW)
    async def request_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                                client: AsyncWebClient) -> None:
        values = view["state"]["values"]

        def pick(block: str, action: str) -> str | None:
            v = values.get(block, {}).get(action, {})
            kind = v.get("type")
            raw = ((v.get("selected_option") or {}).get("value") if kind == "static_select"
                   else v.get("selected_user") if kind == "users_select"
                   else v.get("selected_date_time") if kind == "datetimepicker" else v.get("value"))
            return None if raw in (None, "") else str(raw)

        user_id = body["user"]["id"]
        try:
            email = await identity.email(client, user_id)
        except NoEmail:
            await ack(response_action="errors", errors={ids.B_ELIGIBILITY: NO_EMAIL[:150]})
            return
        duration_raw = pick(ids.B_DURATION, ids.A_DURATION) or ""
        if not duration_raw.isdigit():
            await ack(response_action="errors", errors={ids.B_DURATION: "Pick a duration."})
            return
        starts_raw = pick(ids.B_STARTS, ids.A_STARTS)
        starts_at = datetime.fromtimestamp(int(starts_raw), UTC) if starts_raw and starts_raw.isdigit() else None
        beneficiary_slack = pick(ids.B_ON_BEHALF, ids.A_ON_BEHALF)
        try:
            beneficiary = await identity.email(client, beneficiary_slack) if beneficiary_slack else email
        except NoEmail:
            await ack(response_action="errors", errors={ids.B_ON_BEHALF: "jitbot cannot see that person's email."})
            return
        try:
            await requests.submit(requester=beneficiary, requester_slack=beneficiary_slack or user_id,
                                  submitted_by=email if beneficiary_slack else None,
                                  submitted_by_slack=user_id if beneficiary_slack else None,
                                  eligibility=pick(ids.B_ELIGIBILITY, ids.A_ELIGIBILITY) or "",
                                  duration=timedelta(seconds=int(duration_raw)),
                                  justification=pick(ids.B_JUSTIFICATION, ids.A_JUSTIFICATION) or "",
                                  ticket=pick(ids.B_TICKET, ids.A_TICKET), starts_at=starts_at)
        except PolicyViolation as exc:
            fields = {"eligibility": ids.B_ELIGIBILITY, "duration": ids.B_DURATION,
                      "justification": ids.B_JUSTIFICATION, "ticket": ids.B_TICKET, "starts_at": ids.B_STARTS}
            block = fields.get(exc.field or "", ids.B_ELIGIBILITY)
            if block == ids.B_TICKET and ids.B_TICKET not in values:
                block = ids.B_ELIGIBILITY
            await ack(response_action="errors", errors={block: str(exc)[:150]})
            return
        await ack()

    @app.action(ids.A_ELIGIBILITY)
    async def eligibility_picked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                                 client: AsyncWebClient) -> None:
        await ack()
        email = await identity.email(client, body["user"]["id"])
        selected = (action.get("selected_option") or {}).get("value")
        view = body["view"]
        await client.views_update(view_id=view["id"], hash=view.get("hash"), view=await modal_for(email, selected))

    @app.action(ids.OPEN_REQUEST)
    async def open_from_home(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        email = await identity.email(client, body["user"]["id"])
        await open_modal(client, body["trigger_id"], email)

    @app.action(ids.APPROVE)
    async def approve_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                              respond: AsyncRespond) -> None:
        await ack()
        request_id, layer = _value(action)
        email = await email_or_tell(client, body["user"]["id"], respond)
        if email is None:
            return
        try:
            result = await approvals.decide(request_id=request_id, layer=layer, approver=email,
                                            decision=Decision.APPROVE, approver_slack=body["user"]["id"])
            text = result.message
        except PolicyViolation as exc:
            text = str(exc)
        await respond(response_type="ephemeral", replace_original=False, text=text)
        if body.get("view", {}).get("type") == "home":
            await publish_home(client, body["user"]["id"], email)

    @app.action(ids.DENY)
    async def deny_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                           client: AsyncWebClient) -> None:
        await ack()
        await client.views_open(trigger_id=body["trigger_id"], view=blocks.deny_modal(str(action.get("value", ""))))

    @app.view(ids.DENY_VIEW)
    async def deny_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient) -> None:
        request_id, _, layer = str(view.get("private_metadata", "")).partition(":")
        reason = (view["state"]["values"].get(ids.B_REASON, {}).get(ids.A_REASON, {}).get("value") or "").strip()
        if not reason:
            await ack(response_action="errors", errors={ids.B_REASON: "Please give a reason."})
            return
        try:
            email = await identity.email(client, body["user"]["id"])
            await approvals.decide(request_id=request_id, layer=int(layer or 0), approver=email,
                                   decision=Decision.DENY, reason=reason[:500], approver_slack=body["user"]["id"])
        except (PolicyViolation, NoEmail) as exc:
            await ack(response_action="errors", errors={ids.B_REASON: (str(exc) if isinstance(exc, PolicyViolation)
                                                                      else NO_EMAIL)[:150]})
            return
        await ack()

    async def simple(body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond,
                     kind: str) -> None:
        email = await email_or_tell(client, body["user"]["id"], respond)
        if email is None:
            return
        request_id = str(action.get("value", ""))
        try:
            if kind == "release":
                await grants.end_early(request_id=request_id, actor=email, reason="released")
                text = f"Releasing {request_id} now."
            elif kind == "cancel":
                await requests.cancel(request_id=request_id, by=email)
                text = f"Cancelled {request_id}."
            else:
                text = await extend(request_id, email)
        except PolicyViolation as exc:
            text = str(exc)
        await respond(response_type="ephemeral", replace_original=False, text=text)
        if body.get("view", {}).get("type") == "home":
            await publish_home(client, body["user"]["id"], email)

    async def extend(request_id: str, email: str) -> str:
        async with rt.db.sessions() as session:
            from bot.services.requests import load_request

            req = await load_request(session, request_id)
        elig = rt.eligibility(req.eligibility)
        if elig is None:
            raise PolicyViolation("This access is no longer in the policy.")
        new_expiry = await grants.extend(request_id=request_id, actor=email, by=elig.default)
        return f"Extended {request_id} until {new_expiry:%Y-%m-%d %H:%M} UTC."

    @app.action(ids.RELEASE)
    async def release_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                              respond: AsyncRespond) -> None:
        await ack()
        await simple(body, action, client, respond, "release")

    @app.action(ids.CANCEL)
    async def cancel_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                             respond: AsyncRespond) -> None:
        await ack()
        await simple(body, action, client, respond, "cancel")

    @app.action(ids.EXTEND)
    async def extend_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                             respond: AsyncRespond) -> None:
        await ack()
        await simple(body, action, client, respond, "extend")

    @app.event("app_home_opened")
    async def home_opened(event: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("tab", "home") != "home":
            return
        try:
            email = await identity.email(client, event["user"])
        except NoEmail:
            return
        await publish_home(client, event["user"], email)

    @app.error
    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("listener failed: %s (%s)", type(error).__name__, error, exc_info=error)
