"""Every Slack listener: ack first, parse, call a service, render. Authorisation happens in the services."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.policy import Eligibility
from bot.domain.requests import Decision, PolicyViolation
from bot.domain.step_up_proof import StepUpRequired
from bot.services import queries
from bot.services.access.grants import GrantService
from bot.services.admin import AdminService
from bot.services.breakglass import BreakGlassService
from bot.services.db_errors import database_unavailable
from bot.services.extensions import ExtensionService
from bot.services.requesting.approvals import ApprovalService
from bot.services.requesting.requests import RequestService
from bot.services.runtime import Runtime
from bot.slack import app_home, approve_for_less, blocks, breakglass, ids, modal_open, modals, multipick, request_form
from bot.slack.admin import admin_command
from bot.slack.breakglass import breakglass_command
from bot.slack.identity import NoEmail, SlackIdentity
from bot.slack.request_form import RequestForm, check_form_io, read_request_form, small_int
from bot.stepup import StepUpError
from bot.stepup.flow import link_for

log = logging.getLogger(__name__)

_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
NOT_A_REQUEST = "That button does not match any request."
UNAVAILABLE = ("jitbot could not reach its database, so nothing was changed. Please try again in a minute; "
               "if it keeps failing, tell the access team.")


def _request_id(raw: str) -> str | None:
    """A request id as jitbot writes them, or None (forged values: NUL bytes, markup, megabytes)."""
    return raw if _ID.fullmatch(raw) else None


def _value(action: dict[str, Any]) -> tuple[str | None, int]:
    request_id, _, layer = str(action.get("value", "")).partition(":")
    return _request_id(request_id), small_int(layer, 2) or 0



# Commands and clicks are acked before their listener runs (bot/slack/early_ack.py), but the answer is
# written when the request's own task next runs; heavy work started at once in the listener's task could
# go first. A listener with heavy work (a decision) waits ~one Bolt poll first: the answer goes out, the
# decision comes 11 ms later (measured: Approve acks p50 3 ms with it).
ACK_POLL = 0.011


async def ack_sent(ack: AsyncAck) -> None:
    await ack()
    await asyncio.sleep(ACK_POLL)


def register(app: AsyncApp, rt: Runtime, identity: SlackIdentity) -> None:
    requests, approvals, grants = RequestService(rt), ApprovalService(rt), GrantService(rt)
    admin, glass = AdminService(rt), BreakGlassService(rt)
    breakglass.register(app, rt, identity)
    approve_for_less.register(app, rt, identity)

    async def email_or_tell(client: AsyncWebClient, user_id: str, respond: AsyncRespond | None) -> str | None:
        try:
            return await identity.email(client, user_id)
        except NoEmail as exc:
            if respond is not None:
                try:
                    await respond(response_type="ephemeral", text=exc.message)
                except ValueError:  # an App Home click has no response_url: tell them in a DM instead
                    await client.chat_postMessage(channel=user_id, text=exc.message)
            return None

    async def answer(body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond, text: str) -> None:
        """Tell the clicker privately. A click in the App Home has no response_url (Bolt's ``respond``
        raises there): the answer goes to the clicker's DM with the bot instead."""
        if body.get("response_url"):
            await respond(response_type="ephemeral", replace_original=False, text=text)
        else:
            await client.chat_postMessage(channel=body["user"]["id"], text=text)

    async def modal_for(email: str, selected: str | None = None) -> dict[str, Any]:
        mine = await requests.requestable(email)
        for_others = [e for e in rt.policy.eligibilities if await requests.may_submit_for_others(email, e)]
        shown = mine + [e for e in for_others if e not in mine]
        also = multipick.also_block(rt.policy, mine, shown, selected)  # several items in one request
        return modals.request_modal(shown, selected, on_behalf=bool(for_others), also=also)

    async def open_modal(client: AsyncWebClient, trigger_id: str, email: str, user_id: str,
                         respond: AsyncRespond | None) -> None:
        async def tell(text: str, message: list[dict[str, Any]]) -> None:
            if respond is not None:
                await respond(response_type="ephemeral", replace_original=False, text=text, blocks=message)
            else:  # an App Home click has no response_url: the button goes to the person's DM
                await client.chat_postMessage(channel=user_id, text=text, blocks=message)

        await modal_open.open_view(client, trigger_id, lambda: modal_for(email), tell=tell,
                                   label="Request access", action_id=ids.OPEN_REQUEST, value="open")

    async def publish_home(client: AsyncWebClient, user_id: str, email: str, page: int = 1) -> None:
        active, pending = await queries.my_requests(rt, email)
        waiting = await queries.awaiting_me(rt, email)
        await client.views_publish(user_id=user_id, view=app_home.home_view(active=active, pending=pending,
                                                                          approvals=waiting, page=page))

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
                await open_modal(client, command["trigger_id"], email, command["user_id"], respond)
            elif sub == "list" and (len(words) == 1 or (len(words) == 2 and words[1].isdigit())):
                active, pending = await queries.my_requests(rt, email)
                page = int(words[1]) if len(words) == 2 else 1
                await respond(response_type="ephemeral", text=app_home.access_list(active, pending, page=page))
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
                await respond(response_type="ephemeral", text=app_home.HELP)
        except PolicyViolation as exc:
            await respond(response_type="ephemeral", text=blocks.esc(str(exc)))

    @app.view(ids.REQUEST_VIEW)
    async def request_submitted(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext,
                                client: AsyncWebClient) -> None:
        # Everything that needs no I/O was checked before the ack (bot/slack/request_form.py), so it
        # comes back as inline errors at once; the rest (identity, eligibility, the database) runs after.
        form: RequestForm | None = context.get(request_form.CONTEXT_KEY)  # read (and acked) before, or now:
        if form is None:
            form = await check_form_io(rt, read_request_form(rt, body), lambda u: identity.email(client, u))
        if form.errors:
            await ack(**form.ack_args())
            return
        if form.break_glass is not None:
            await ack()
            await break_glass_from_modal(client, form, form.break_glass)
            return
        await ack_sent(ack)
        try:
            email = await identity.email(client, form.user_id)
            beneficiary = await identity.email(client, form.on_behalf) if form.on_behalf else email
        except NoEmail as exc:
            await client.chat_postMessage(channel=form.user_id, text="Your request was not submitted: " + exc.message)
            return
        try:
            await requests.submit(requester=beneficiary, requester_slack=form.on_behalf or form.user_id,
                                  submitted_by=email if form.on_behalf else None,
                                  submitted_by_slack=form.user_id if form.on_behalf else None,
                                  eligibility=form.eligibility, duration=form.duration,
                                  justification=form.justification, ticket=form.ticket, starts_at=form.starts_at)
        except PolicyViolation as exc:
            await client.chat_postMessage(channel=form.user_id,
                                          text=f"Your request was not submitted: {blocks.esc(str(exc))}")

    async def break_glass_from_modal(client: AsyncWebClient, form: RequestForm, elig: Eligibility) -> None:
        """The modal's break-glass checkbox, its rules checked (``read_request_form``): invoke it."""
        try:
            email = await identity.email(client, form.user_id)
            await glass.invoke(requester=email, eligibility=elig.name, duration=form.duration,
                               justification=form.justification, requester_slack=form.user_id)
        except NoEmail as exc:
            await client.chat_postMessage(channel=form.user_id, text="Break-glass refused: " + exc.message)
        except PolicyViolation as exc:
            await client.chat_postMessage(channel=form.user_id, text=f"Break-glass refused: {blocks.esc(str(exc))}")

    @app.action(ids.A_ELIGIBILITY)
    async def eligibility_picked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                                 client: AsyncWebClient, respond: AsyncRespond) -> None:
        await ack()
        email = await email_or_tell(client, body["user"]["id"], respond)
        if email is None:
            return
        selected = (action.get("selected_option") or {}).get("value")
        view = body["view"]
        await client.views_update(view_id=view["id"], hash=view.get("hash"), view=await modal_for(email, selected))

    @app.action(ids.OPEN_REQUEST)
    async def open_from_home(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient,
                             respond: AsyncRespond) -> None:
        await ack()
        email = await email_or_tell(client, body["user"]["id"], respond)
        if email is None:
            return
        await open_modal(client, body["trigger_id"], email, body["user"]["id"],
                         respond if body.get("response_url") else None)

    @app.action(ids.matching(ids.APPROVE))
    async def approve_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                              respond: AsyncRespond) -> None:
        await ack_sent(ack)
        request_id, layer = _value(action)
        email = await email_or_tell(client, body["user"]["id"], respond)
        if email is None:
            return
        if request_id is None:
            await answer(body, client, respond, NOT_A_REQUEST)
            return
        try:
            result = await approvals.decide(request_id=request_id, layer=layer, approver=email,
                                            decision=Decision.APPROVE, approver_slack=body["user"]["id"])
            text = result.message
        except StepUpRequired as needed:  # a one-time sign-in link, to the clicker only (bot/stepup/)
            try:
                text = await link_for(rt, needed, approver=email, approver_slack=body["user"]["id"])
            except StepUpError as exc:
                text = blocks.esc(str(exc))
        except PolicyViolation as exc:
            text = blocks.esc(str(exc))  # it may quote a forged id: no mentions, no links
        await answer(body, client, respond, text)
        if body.get("view", {}).get("type") == "home":
            await publish_home(client, body["user"]["id"], email)

    @app.action(ids.matching(ids.DENY))
    async def deny_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                           client: AsyncWebClient, respond: AsyncRespond) -> None:
        await ack()
        request_id, layer = _value(action)
        if request_id is None:
            await answer(body, client, respond, NOT_A_REQUEST)
            return
        async def deny_view() -> dict[str, Any]:
            return modals.deny_modal(f"{request_id}:{layer}")

        async def tell(text: str, message: list[dict[str, Any]]) -> None:
            if body.get("response_url"):
                await respond(response_type="ephemeral", replace_original=False, text=text, blocks=message)
            else:
                await client.chat_postMessage(channel=body["user"]["id"], text=text, blocks=message)

        await modal_open.open_view(client, body["trigger_id"], deny_view, tell=tell, label="Deny…",
                                   action_id=ids.DENY, value=f"{request_id}:{layer}")

    @app.view(ids.DENY_VIEW)
    async def deny_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], client: AsyncWebClient) -> None:
        request_id, layer = _value({"value": view.get("private_metadata", "")})
        reason = (view["state"]["values"].get(ids.B_REASON, {}).get(ids.A_REASON, {}).get("value") or "")
        reason = reason.replace("\x00", "").strip()
        if not reason or request_id is None:
            await ack(response_action="errors", errors={ids.B_REASON: "Please give a reason." if request_id
                                                        else NOT_A_REQUEST})
            return
        try:
            email = await identity.email(client, body["user"]["id"])
            await approvals.decide(request_id=request_id, layer=layer, approver=email,
                                   decision=Decision.DENY, reason=reason[:500], approver_slack=body["user"]["id"])
        except (PolicyViolation, NoEmail) as exc:
            await ack(response_action="errors", errors={ids.B_REASON: (str(exc) if isinstance(exc, PolicyViolation)
                                                                      else exc.message)[:150]})
            return
        await ack()

    async def simple(body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond,
                     kind: str) -> None:
        email = await email_or_tell(client, body["user"]["id"], respond)
        if email is None:
            return
        request_id = _request_id(str(action.get("value", "")))
        if request_id is None:
            await answer(body, client, respond, NOT_A_REQUEST)
            return
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
            text = blocks.esc(str(exc))  # it may quote a forged id: no mentions, no links
        await answer(body, client, respond, text)
        if body.get("view", {}).get("type") == "home":
            await publish_home(client, body["user"]["id"], email)

    async def extend(request_id: str, email: str) -> str:  # beyond the maximum: approval again (extensions.py)
        return (await ExtensionService(rt).extend(request_id=request_id, actor=email)).message

    @app.action(ids.matching(ids.RELEASE))
    async def release_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                              respond: AsyncRespond) -> None:
        await ack()
        await simple(body, action, client, respond, "release")

    @app.action(ids.matching(ids.CANCEL))
    async def cancel_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                             respond: AsyncRespond) -> None:
        await ack()
        await simple(body, action, client, respond, "cancel")

    @app.action(ids.matching(ids.EXTEND))  # the expiry warning's, and App Home's numbered copies
    async def extend_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient,
                             respond: AsyncRespond) -> None:
        await ack()
        await simple(body, action, client, respond, "extend")

    @app.action(ids.matching(ids.HOME_PAGE))
    async def home_page_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                                client: AsyncWebClient) -> None:
        await ack()
        value = str(action.get("value", ""))
        try:
            email = await identity.email(client, body["user"]["id"])
        except NoEmail:
            return
        await publish_home(client, body["user"]["id"], email, page=int(value) if value.isdigit() else 1)

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
    async def on_error(error: Exception, body: dict[str, Any], client: AsyncWebClient) -> None:
        log.error("listener failed: %s (%s)", type(error).__name__, error, exc_info=error)
        if not database_unavailable(error):
            return
        # The database is unreachable: the transaction rolled back, so nothing changed. Say so, rather
        # than leave a click or a command without an answer.
        user = (body.get("user") or {}).get("id") or body.get("user_id")
        if not isinstance(user, str) or not _ID.fullmatch(user):
            return
        try:
            await client.chat_postMessage(channel=user, text=UNAVAILABLE)
        except Exception as exc:  # Slack unreachable as well: the log line above is all there is
            log.warning("could not tell %s about the failure: %s", user, type(exc).__name__)
