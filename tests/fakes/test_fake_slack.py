"""The fake Slack is as strict as Slack, driven by the real slack_sdk client and a real Bolt app."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.fakes import FakeSlack, SlackSender, ViewInputError

TOKEN = "xoxb-test-token"
SECRET = "test-signing-secret"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def slack(clock: Clock) -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(token=TOKEN, clock=clock)
    fake.add_user("U1", "alice", real_name="Alice A", email="alice@example.com")
    fake.add_user("U2", "bob", real_name="Bob B", email="bob@example.com")
    fake.add_channel("C0AUDIT", "jit-audit", members=["U1"])
    async with fake:
        yield fake


@pytest.fixture
async def client(slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    web_client = AsyncWebClient(token=TOKEN, base_url=slack.url)
    yield web_client


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _modal(title: str = "Request access", **extra: Any) -> dict[str, Any]:
    title_text = {"type": "plain_text", "text": title}
    return {"type": "modal", "title": title_text, "blocks": [_section("hi")], **extra}


# --- Web API strictness --------------------------------------------------------------------------
async def test_wrong_token_is_invalid_auth_and_no_token_is_not_authed(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as wrong:
        await AsyncWebClient(token="xoxb-wrong", base_url=slack.url).auth_test()
    assert wrong.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as missing:
        await AsyncWebClient(base_url=slack.url).auth_test()
    assert missing.value.response["error"] == "not_authed"


async def test_auth_test_names_the_bot(client: AsyncWebClient, slack: FakeSlack) -> None:
    res = await client.auth_test()
    assert res["user_id"] == slack.state.bot_user_id and res["bot_id"] == slack.state.bot_id


async def test_unknown_channel_and_missing_channel_are_errors(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as unknown:
        await client.chat_postMessage(channel="C404", text="hi")
    assert unknown.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as missing:
        await client.api_call("chat.postMessage", json={"text": "hi"})
    assert missing.value.response["error"] == "invalid_arguments"


async def test_too_many_blocks_is_invalid_blocks_with_slack_explanation(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="U1", text="x", blocks=[_section("b")] * 51)
    body = err.value.response.data
    assert isinstance(body, dict) and body["error"] == "invalid_blocks"
    expected = "[ERROR] no more than 50 items allowed [json-pointer:/blocks]"
    assert body["response_metadata"]["messages"] == [expected]


async def test_block_limits_are_enforced(client: AsyncWebClient) -> None:
    too_long = [_section("x" * 3001)]
    header = [{"type": "header", "text": {"type": "mrkdwn", "text": "h"}}]
    button = {"type": "button", "text": {"type": "plain_text", "text": "b" * 76}, "action_id": "a"}
    dup = [{"type": "actions", "block_id": "x", "elements": [{**button, "text": {"type": "plain_text",
                                                                                "text": "ok"}}]}] * 2
    for blocks, pointer in ((too_long, "/blocks/0/text/text"), (header, "/blocks/0/text/type"),
                            ([{"type": "actions", "elements": [button]}], "/blocks/0/elements/0/text/text"),
                            (dup, "/blocks/1/block_id"), ([{"type": "carousel"}], "/blocks/0/type")):
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel="U1", text="x", blocks=blocks)
        assert err.value.response["error"] == "invalid_blocks"
        assert any(pointer in m for m in err.value.response["errors"]), err.value.response["errors"]


async def test_rate_limit_answers_429_with_retry_after_then_recovers(
        client: AsyncWebClient, slack: FakeSlack) -> None:
    slack.rate_limit(1, method="chat.postMessage", retry_after=7)
    await client.auth_test()  # other methods are not limited
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="U1", text="hi")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    assert err.value.response["error"] == "ratelimited"
    await client.chat_postMessage(channel="U1", text="hi")
    assert [c.status for c in slack.calls("chat.postMessage")] == [429, 200]


async def test_outage_answers_503_or_refuses_connections(client: AsyncWebClient, slack: FakeSlack) -> None:
    await slack.outage("503")
    with pytest.raises(SlackApiError) as err:
        await client.auth_test()
    assert err.value.response.status_code == 503
    await slack.outage("refused")
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.auth_test()
    await slack.end_outage()
    assert (await client.auth_test())["ok"]


async def test_trigger_id_expires_after_three_seconds_and_is_single_use(
        client: AsyncWebClient, slack: FakeSlack, clock: Clock) -> None:
    stale = slack.issue_trigger("U1")
    clock.now += 3.5
    with pytest.raises(SlackApiError) as expired:
        await client.views_open(trigger_id=stale, view=_modal())
    assert expired.value.response["error"] == "expired_trigger_id"
    fresh = slack.issue_trigger("U1")
    opened = await client.views_open(trigger_id=fresh, view=_modal())
    assert opened["view"]["id"].startswith("V") and opened["view"]["hash"]
    assert [v.id for v in slack.modal_stack("U1")] == [opened["view"]["id"]]
    with pytest.raises(SlackApiError) as reused:
        await client.views_open(trigger_id=fresh, view=_modal())
    assert reused.value.response["error"] == "exchanged_trigger_id"


async def test_modal_limits_answer_invalid_arguments(client: AsyncWebClient, slack: FakeSlack) -> None:
    for view in (_modal("t" * 25), _modal(private_metadata="m" * 3001),
                 {**_modal(), "blocks": [_section("b")] * 101}):
        with pytest.raises(SlackApiError) as err:
            await client.views_open(trigger_id=slack.issue_trigger("U1"), view=view)
        assert err.value.response["error"] == "invalid_arguments"
        assert err.value.response["response_metadata"]["messages"][0].startswith("[ERROR] ")


async def test_chat_update_needs_an_existing_message_of_the_bot(
        client: AsyncWebClient, slack: FakeSlack) -> None:
    posted = await client.chat_postMessage(channel="U1", text="v1")
    with pytest.raises(SlackApiError) as missing:
        await client.chat_update(channel=posted["channel"], ts="1.000001", text="v2")
    assert missing.value.response["error"] == "message_not_found"
    theirs = slack.post_as_user(posted["channel"], "U1", "mine")
    with pytest.raises(SlackApiError) as foreign:
        await client.chat_update(channel=posted["channel"], ts=theirs.ts, text="edited")
    assert foreign.value.response["error"] == "cant_update_message"
    updated = await client.chat_update(channel=posted["channel"], ts=posted["ts"], text="v2")
    assert updated["message"]["text"] == "v2"
    stored = slack.message(posted["channel"], posted["ts"])
    assert stored is not None and stored.text == "v2" and stored.edits[0]["text"] == "v1"


async def test_messages_threads_and_ts_order(client: AsyncWebClient, slack: FakeSlack) -> None:
    im = await client.conversations_open(users="U1")
    assert im["channel"]["id"].startswith("D")
    first = await client.chat_postMessage(channel="C0AUDIT", text="requested")
    assert first["message"]["text"] == "requested" and first["channel"] == "C0AUDIT"
    reply = await client.chat_postMessage(channel="C0AUDIT", text="approved", thread_ts=first["ts"])
    assert float(reply["ts"]) > float(first["ts"])  # strictly increasing with a frozen clock
    assert [m.text for m in slack.thread("C0AUDIT", first["ts"])] == ["approved"]
    await client.chat_postMessage(channel="U1", text="dm")
    assert [m.text for m in slack.dm_messages("U1")] == ["dm"]
    slack.add_channel("C0OTHER", "other", bot_is_member=False)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="C0OTHER", text="x")
    assert err.value.response["error"] == "not_in_channel"


async def test_users_info_is_a_get_and_email_lookup_works(client: AsyncWebClient, slack: FakeSlack) -> None:
    info = await client.users_info(user="U1")
    assert info["user"]["profile"]["email"] == "alice@example.com"
    assert slack.calls("users.info")[0].http_method == "GET"
    assert (await client.users_lookupByEmail(email="BOB@example.com"))["user"]["id"] == "U2"
    with pytest.raises(SlackApiError) as err:
        await client.users_info(user="U404")
    assert err.value.response["error"] == "user_not_found"


async def test_home_publish_and_ephemeral(client: AsyncWebClient, slack: FakeSlack) -> None:
    home = {"type": "home", "blocks": [_section("my access")]}
    res = await client.views_publish(user_id="U1", view=home)
    assert slack.home("U1") is not None and slack.home("U1").id == res["view"]["id"]  # type: ignore[union-attr]
    await client.chat_postEphemeral(channel="C0AUDIT", user="U1", text="only you")
    assert [e.text for e in slack.ephemerals("U1")] == ["only you"]
    with pytest.raises(SlackApiError) as err:
        await client.chat_postEphemeral(channel="C0AUDIT", user="U2", text="x")
    assert err.value.response["error"] == "user_not_in_channel"


async def test_file_upload_needs_files_write_scope(clock: Clock) -> None:
    async with FakeSlack(token=TOKEN, clock=clock) as narrow:
        with pytest.raises(SlackApiError) as err:
            await AsyncWebClient(token=TOKEN, base_url=narrow.url).files_getUploadURLExternal(
                filename="a.csv", length=1)
        assert err.value.response["error"] == "missing_scope"
    async with FakeSlack(token=TOKEN, clock=clock, scopes=["chat:write", "files:write"]) as wide:
        wide.add_channel("C0AUDIT", "audit")
        res = await AsyncWebClient(token=TOKEN, base_url=wide.url).files_upload_v2(
            channel="C0AUDIT", filename="export.csv", content="a,b\n1,2\n", title="Export")
        assert res["file"]["title"] == "Export"
        assert wide.files()[0].data == b"a,b\n1,2\n" and wide.messages("C0AUDIT")[0].files


# --- Slack's side, against a real Bolt app -------------------------------------------------------
@pytest.fixture
async def bolt(slack: FakeSlack) -> AsyncIterator[tuple[AsyncApp, str, list[Any]]]:
    app = AsyncApp(signing_secret=SECRET, client=AsyncWebClient(token=TOKEN, base_url=slack.url),
                   process_before_response=True)
    seen: list[Any] = []

    @app.command("/jit")
    async def jit(ack: Any, command: dict[str, Any], client: AsyncWebClient, respond: Any) -> None:
        await ack()
        seen.append(command["text"])
        if command["text"] == "help":
            await respond("Usage: /jit")
            return
        modal = {**_modal(submit={"type": "plain_text", "text": "Request"}, callback_id="request"),
                 "blocks": [
                     {"type": "input", "block_id": "why", "label": {"type": "plain_text", "text": "Why"},
                      "element": {"type": "plain_text_input", "action_id": "text", "max_length": 50}},
                     {"type": "input", "block_id": "dur", "label": {"type": "plain_text", "text": "For"},
                      "element": {"type": "static_select", "action_id": "pick", "options": [
                          {"text": {"type": "plain_text", "text": "1 hour"}, "value": "1h"},
                          {"text": {"type": "plain_text", "text": "4 hours"}, "value": "4h"}]}}]}
        await client.views_open(trigger_id=command["trigger_id"], view=modal)

    @app.view("request")
    async def submitted(ack: Any, view: dict[str, Any], body: dict[str, Any], client: AsyncWebClient) -> None:
        values = view["state"]["values"]
        if values["why"]["text"]["value"] == "bad":
            await ack(response_action="errors", errors={"why": "Say more"})
            return
        await ack()
        seen.append((values["why"]["text"]["value"], values["dur"]["pick"]["selected_option"]["value"]))
        await client.chat_postMessage(channel=body["user"]["id"], text="Approve?", blocks=[
            _section("Approve?"),
            {"type": "actions", "block_id": "decide", "elements": [
                {"type": "button", "action_id": "approve", "value": "req-1",
                 "text": {"type": "plain_text", "text": "Approve"}, "style": "primary"}]}])

    @app.action("approve")
    async def approve(ack: Any, action: dict[str, Any], respond: Any) -> None:
        await ack()
        seen.append(("approve", action["value"]))
        await respond(replace_original=True, text="Approved")

    @app.event("app_home_opened")
    async def home(event: dict[str, Any], client: AsyncWebClient) -> None:
        seen.append(("home", event["tab"]))
        await client.views_publish(user_id=event["user"], view={"type": "home", "blocks": [_section("Home")]})

    runner = web.AppRunner(app.web_app(path="/slack/events"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield app, f"http://127.0.0.1:{port}/slack/events", seen
    await runner.cleanup()


async def test_signed_command_reaches_bolt_and_wrong_secret_is_rejected(
        slack: FakeSlack, bolt: tuple[AsyncApp, str, list[Any]]) -> None:
    _app, url, seen = bolt
    async with SlackSender(slack, url, SECRET) as sender:
        assert (await sender.command("U1", "help")).status == 200
        assert seen == ["help"]
        assert [e.text for e in slack.ephemerals("U1")] == ["Usage: /jit"]  # respond() via response_url
    async with SlackSender(slack, url, "not-the-secret") as forger:
        assert (await forger.command("U1", "steal")).status == 401
    assert seen == ["help"]


async def test_command_modal_submit_and_button_click_round_trip(
        slack: FakeSlack, bolt: tuple[AsyncApp, str, list[Any]]) -> None:
    _app, url, seen = bolt
    async with SlackSender(slack, url, SECRET) as sender:
        await sender.command("U1", "")
        (modal,) = slack.modal_stack("U1")
        with pytest.raises(ViewInputError) as refused:
            await sender.submit_view("U1", modal.id, {"pick": "1h"})
        assert refused.value.errors == {"why": "This field is required."}
        rejected = await sender.submit_view("U1", modal.id, {"text": "bad", "pick": "1h"})
        assert rejected.ok and modal.errors == {"why": "Say more"} and slack.modal_stack("U1") == [modal]
        assert (await sender.submit_view("U1", modal.id, {"text": "on call", "pick": "4h"})).ok
        assert slack.modal_stack("U1") == [] and ("on call", "4h") in seen
        (dm,) = slack.dm_messages("U1")
        assert (await sender.click("U1", dm.channel, dm.ts, "approve")).status == 200
        assert ("approve", "req-1") in seen
        assert slack.message(dm.channel, dm.ts).text == "Approved"  # type: ignore[union-attr]


async def test_app_home_opened_event_publishes_home(
        slack: FakeSlack, bolt: tuple[AsyncApp, str, list[Any]]) -> None:
    _app, url, seen = bolt
    async with SlackSender(slack, url, SECRET) as sender:
        assert (await sender.open_home("U2")).status == 200
    assert ("home", "home") in seen
    home = slack.home("U2")
    assert home is not None and home.blocks[0]["text"]["text"] == "Home"


# --- more of Slack's behaviour -------------------------------------------------------------------
async def test_form_encoded_arguments_are_accepted_like_json(
        client: AsyncWebClient, slack: FakeSlack) -> None:
    blocks = json.dumps([_section("from a form")])
    res = await client.api_call("chat.postMessage", data={"channel": "U1", "text": "t", "blocks": blocks})
    assert slack.message(res["channel"], res["ts"]).blocks[0]["text"]["text"] == "from a form"  # type: ignore[union-attr]


async def test_views_push_update_and_hash_conflict(client: AsyncWebClient, slack: FakeSlack) -> None:
    root = (await client.views_open(trigger_id=slack.issue_trigger("U1"), view=_modal()))["view"]
    pushed = (await client.views_push(trigger_id=slack.issue_trigger("U1"), view=_modal("Second")))["view"]
    assert pushed["root_view_id"] == root["id"] and pushed["previous_view_id"] == root["id"]
    updated = await client.views_update(view_id=root["id"], hash=root["hash"], view=_modal("Renamed"))
    assert updated["view"]["title"]["text"] == "Renamed" and updated["view"]["hash"] != root["hash"]
    with pytest.raises(SlackApiError) as stale:
        await client.views_update(view_id=root["id"], hash=root["hash"], view=_modal("Again"))
    assert stale.value.response["error"] == "hash_conflict"
    assert [v.body["title"]["text"] for v in slack.modal_stack("U1")] == ["Renamed", "Second"]


async def test_response_url_serves_five_posts(slack: FakeSlack) -> None:
    url = slack.issue_response_url(channel="C0AUDIT", user="U1")
    async with aiohttp.ClientSession() as session:
        statuses = [(await session.post(url, json={"text": f"n{i}"})).status for i in range(6)]
    assert statuses == [200] * 5 + [404]
    assert len(slack.response_posts()) == 5 and len(slack.ephemerals("U1")) == 5


async def test_stale_signature_is_rejected(slack: FakeSlack, bolt: tuple[AsyncApp, str, list[Any]]) -> None:
    _app, url, seen = bolt
    async with SlackSender(slack, url, SECRET) as sender:
        assert (await sender.command("U1", "help", timestamp=time.time() - 600)).status == 401
    assert seen == []


async def test_ephemeral_buttons_and_home_buttons_can_be_clicked(slack: FakeSlack) -> None:
    received: list[dict[str, Any]] = []

    async def bot(request: web.Request) -> web.Response:
        form = await request.post()
        received.append(json.loads(str(form["payload"])))
        return web.Response()

    app = web.Application()
    app.router.add_post("/slack/events", bot)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    button = {"type": "actions", "elements": [{"type": "button", "action_id": "release", "value": "g1",
                                               "text": {"type": "plain_text", "text": "Release"}}]}
    client = AsyncWebClient(token=TOKEN, base_url=slack.url)
    eph = await client.chat_postEphemeral(channel="C0AUDIT", user="U1", text="x", blocks=[button])
    home = (await client.views_publish(user_id="U1", view={"type": "home", "blocks": [button]}))["view"]
    try:
        async with SlackSender(slack, url, SECRET) as sender:
            await sender.click("U1", "C0AUDIT", eph["message_ts"], "release")
            await sender.click_in_view("U1", home["id"], "release")
    finally:
        await runner.cleanup()
    assert received[0]["container"]["is_ephemeral"] is True and "message" not in received[0]
    assert received[0]["actions"][0]["value"] == "g1"
    assert received[1]["container"] == {"type": "view", "view_id": home["id"]}
    assert received[1]["view"]["type"] == "home"


async def test_view_submission_response_actions_drive_the_modal_stack(slack: FakeSlack) -> None:
    answers: list[Any] = [{"response_action": "update", "view": _modal("Updated", notify_on_close=True)},
                          {"response_action": "push", "view": _modal("Pushed")}, {}, {}]
    kinds: list[str] = []

    async def bot(request: web.Request) -> web.Response:
        kinds.append(json.loads(str((await request.post())["payload"]))["type"])
        answer = answers.pop(0)
        return web.json_response(answer) if answer else web.Response()

    app = web.Application()
    app.router.add_post("/slack/events", bot)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    client = AsyncWebClient(token=TOKEN, base_url=slack.url)
    root = (await client.views_open(trigger_id=slack.issue_trigger("U1"), view=_modal()))["view"]
    try:
        async with SlackSender(slack, url, SECRET) as sender:
            await sender.submit_view("U1", root["id"])
            assert [v.body["title"]["text"] for v in slack.modal_stack("U1")] == ["Updated"]
            await sender.submit_view("U1", root["id"])
            top = slack.modal_stack("U1")[-1]
            assert [v.body["title"]["text"] for v in slack.modal_stack("U1")] == ["Updated", "Pushed"]
            await sender.submit_view("U1", top.id)  # empty ack closes only the submitted view
            assert [v.id for v in slack.modal_stack("U1")] == [root["id"]]
            closed = await sender.close_view("U1", root["id"])  # notify_on_close -> view_closed
            assert closed is not None and slack.modal_stack("U1") == []
    finally:
        await runner.cleanup()
    assert kinds == ["view_submission", "view_submission", "view_submission", "view_closed"]
