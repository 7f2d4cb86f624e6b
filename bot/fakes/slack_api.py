"""A strict fake of the Slack Web API on 127.0.0.1, for tests and the playground.

``FakeSlack().url`` is a ``base_url`` for slack_sdk's ``AsyncWebClient``. It checks the bearer token
and the bot's scopes, required arguments and Block Kit limits, answers Slack's error codes, and keeps
the workspace in memory (`SlackState`) so that tests can query messages, views and every call.
Switches: `rate_limit` (429 + Retry-After), `limit_channel_posts` (Slack's per-channel posting limit,
429 + Retry-After) and `outage` (503, or connection refused). The methods are ``slack_methods.py``; what
Slack does with a response URL post, ``slack_response_url.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from bot.fakes import slack_response_url
from bot.fakes.slack_args import ApiFailure
from bot.fakes.slack_limits import ChannelPostLimiter
from bot.fakes.slack_methods import METHOD_SCOPES, METHODS
from bot.fakes.slack_socket import SocketMode, SocketModeRefused
from bot.fakes.slack_state import (
    Call,
    Channel,
    Ephemeral,
    Message,
    ResponseUrlPost,
    SlackState,
    SlackUser,
    UploadedFile,
    View,
    clone,
)
from bot.fakes.slack_tiers import TierLimiter

DEFAULT_BOT_SCOPES = ("commands", "chat:write", "im:write", "users:read", "users:read.email", "channels:read",
                      "groups:read")
OutageKind = Literal["503", "refused"]


@dataclass
class _RateLimit:
    remaining: int
    method: str | None
    retry_after: int
    every: int = 0  # > 0: every ``every``-th call (of ``method``) answers 429, for as long as the fake runs
    seen: int = 0


class _Throttled(ApiFailure):
    def __init__(self, retry_after: int) -> None:
        super().__init__("ratelimited")
        self.retry_after = retry_after


class FakeSlack:
    """The fake workspace and its Web API server. Use ``async with FakeSlack() as slack:`` or start/stop.

    ``clock`` (wall time) stamps messages and expires triggers; ``channel_post_limit=(rate, burst)``
    turns on `limit_channel_posts`, whose buckets refill by the monotonic clock ``now``.
    """

    def __init__(self, *, token: str = "xoxb-fake-bot-token", team_id: str = "T0FAKE0001",
                 team_domain: str = "jitbot-fake", bot_user_id: str = "U0BOT00001",
                 bot_id: str = "B0BOT00001", app_id: str = "A0JITBOT01",
                 scopes: Iterable[str] = DEFAULT_BOT_SCOPES, clock: Callable[[], float] = time.time,
                 host: str = "127.0.0.1", port: int = 0,
                 channel_post_limit: tuple[float, int] | None = None,
                 now: Callable[[], float] = time.monotonic, app_token: str | None = None) -> None:
        self.token, self.team_domain, self.host, self._port = token, team_domain, host, port
        # Socket Mode (bot/fakes/slack_socket.py) for an app-level token, when one is given
        self.socket_mode = SocketMode(app_token, app_id) if app_token is not None else None
        self.state = SlackState(team_id=team_id, bot_user_id=bot_user_id, bot_id=bot_id, app_id=app_id,
                                clock=clock)
        self.state.scopes = set(scopes)
        self._rate_limits: list[_RateLimit] = []
        self._outage: OutageKind | None = None
        self._post_limiter: ChannelPostLimiter | None = None
        self.tiers: TierLimiter | None = None  # Slack's per-method tiers, once ``enforce_tiers`` is called
        if channel_post_limit is not None:
            self.limit_channel_posts(*channel_post_limit, now=now)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.listeners: list[Callable[[Call], None]] = []
        self.state.users[bot_user_id] = SlackUser(bot_user_id, "jitbot", "jitbot", None, "UTC", team_id,
                                                  is_bot=True)

    # lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> FakeSlack:
        """Listen on ``host:port`` (port 0 picks a free one). Returns self."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/v1/{file_id}", self._upload)
        app.router.add_post("/response/{team}/{url_id}", self._response_url)
        app.router.add_get("/link/", self._link)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._listen()
        return self

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self._port)
        await self._site.start()
        if self._port == 0:
            self._port = int(self._runner.addresses[0][1])
        self.state.root_url = self.root_url

    async def stop(self) -> None:
        """Stop listening and release the port."""
        if self.socket_mode is not None:
            await self.socket_mode.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = self._site = None

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT/``: the upload and response URLs hang off it."""
        return f"http://{self.host}:{self._port}/"

    @property
    def url(self) -> str:
        """The Web API base URL (``http://127.0.0.1:PORT/api/``) for ``AsyncWebClient(base_url=...)``."""
        return f"{self.root_url}api/"

    # workspace set-up ------------------------------------------------------------------------------
    def add_user(self, id: str, name: str, *, real_name: str | None = None, email: str | None = None,
                 tz: str = "Europe/London", is_bot: bool = False, deleted: bool = False,
                 team_id: str | None = None, guest: str | None = None, is_stranger: bool = False,
                 enterprise_user: dict[str, Any] | None = None) -> SlackUser:
        """Register a workspace member (visible to users.info, users.lookupByEmail, conversations.open).
        ``team_id``: a user of another workspace; ``guest``: "multi" or "single" channel guest."""
        user = SlackUser(id, name, real_name or name, email, tz, team_id or self.state.team_id, is_bot, deleted,
                         is_restricted=guest is not None, is_ultra_restricted=guest == "single",
                         is_stranger=is_stranger, enterprise_user=enterprise_user)
        self.state.users[id] = user
        return user

    def add_channel(self, id: str, name: str, *, is_private: bool = False, members: Iterable[str] = (),
                    bot_is_member: bool = True) -> Channel:
        """Register a channel. Without ``bot_is_member`` chat.postMessage answers ``not_in_channel``."""
        people = set(members) | ({self.state.bot_user_id} if bot_is_member else set())
        channel = Channel(id=id, name=name, is_private=is_private, members=people)
        self.state.channels[id] = channel
        self.state.messages.setdefault(id, [])
        return channel

    def post_as_user(self, channel: str, user_id: str, text: str, *, thread_ts: str | None = None) -> Message:
        """A message written by a person (the bot may not chat.update it)."""
        if channel not in self.state.channels:
            raise KeyError(f"unknown channel {channel!r}: add it with add_channel")
        return self.state.add_message(channel, text=text, blocks=[], user=user_id, bot=False,
                                      thread_ts=thread_ts)

    def issue_trigger(self, user_id: str) -> str:
        """A fresh trigger_id (3 s of the injected clock, single use), as Slack sends with interactions."""
        return self.state.issue_trigger(user_id)

    def issue_response_url(self, **context: Any) -> str:
        """A response_url on this fake; ``context`` (channel, user, message_ts) decides what posts do."""
        return self.state.issue_response_url(self.root_url, context)

    # switches --------------------------------------------------------------------------------------
    def rate_limit(self, count: int = 1, *, method: str | None = None, retry_after: int = 1, every: int = 0) -> None:
        """The next ``count`` calls (of ``method``, or of any method) answer 429 + Retry-After; with
        ``every``, each ``every``-th call from now on does (Slack's limits are per method: a busy
        method keeps drawing 429s)."""
        self._rate_limits.append(_RateLimit(count, method, retry_after, every))

    def limit_channel_posts(self, rate: float = 1.0, burst: int = 3, *,
                            now: Callable[[], float] = time.monotonic) -> None:
        """Slack's per-channel limit on chat.postMessage (thread replies included): ``rate`` posts a
        second per channel with bursts of ``burst``. Over it: 429 + Retry-After, nothing stored."""
        self._post_limiter = ChannelPostLimiter(rate, burst, now=now)

    def enforce_tiers(self, *, now: Callable[[], float] = time.monotonic, speedup: float = 1.0) -> TierLimiter:
        """Every method at its documented tier per workspace (bot/fakes/slack_tiers.py, sources there),
        chat.postMessage also under a workspace limit; over it: 429 + Retry-After, nothing done.
        With ``limit_channel_posts`` as well, that is Slack's whole posting policy."""
        self.tiers = TierLimiter(now=now, speedup=speedup)
        return self.tiers

    async def outage(self, kind: OutageKind = "503") -> None:
        """Every call answers 503 (``"503"``) or the port stops listening (``"refused"``)."""
        self._outage = kind
        if kind == "refused" and self._site is not None:
            await self._site.stop()
            self._site = None

    async def end_outage(self) -> None:
        """Back to normal service on the same port."""
        if self._outage == "refused" and self._runner is not None and self._site is None:
            await self._listen()
        self._outage = None

    # queries ---------------------------------------------------------------------------------------
    def calls(self, method: str | None = None) -> list[Call]:
        """Every Web API call received (including rejected ones), optionally of one method."""
        return [c for c in self.state.calls if method is None or c.method == method]

    def rejected_posts(self, channel: str | None = None) -> int:
        """chat.postMessage calls refused by `limit_channel_posts` (to ``channel``, or in all)."""
        if self._post_limiter is None:
            return 0
        rejected = self._post_limiter.rejected
        if channel is None:
            return rejected.total()
        return rejected[(self.im_channel(channel) or "") if channel in self.state.users else channel]

    def messages(self, channel: str, *, include_replies: bool = True) -> list[Message]:
        """Messages in a channel in ts order, with updates applied (``edits`` keeps older versions)."""
        msgs = self.state.messages.get(channel, [])
        return [m for m in msgs if include_replies or not m.thread_ts]

    def message(self, channel: str, ts: str) -> Message | None:
        return self.state.find_message(channel, ts)

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The replies under ``thread_ts`` in order (the parent excluded)."""
        return [m for m in self.state.messages.get(channel, []) if m.thread_ts == thread_ts]

    def im_channel(self, user_id: str) -> str | None:
        """The id of the bot's IM with ``user_id`` if it has been opened."""
        found = [c.id for c in self.state.channels.values() if c.is_im and c.user == user_id]
        return found[0] if found else None

    def dm_messages(self, user_id: str) -> list[Message]:
        """What the bot posted to (or received in) its DM with ``user_id``."""
        channel = self.im_channel(user_id)
        return self.messages(channel) if channel else []

    def ephemerals(self, user_id: str | None = None) -> list[Ephemeral]:
        """Ephemeral messages (chat.postEphemeral, command ack bodies, response_url posts)."""
        return [e for e in self.state.ephemerals if user_id is None or e.user == user_id]

    def find_ephemeral(self, user_id: str, message_ts: str) -> Ephemeral | None:
        """Newest first (each has its own ``message_ts``): a long run's lookups do not read every ephemeral
        ever posted — a list of a thousand flows' command acks cost the load generator 5 % of its time."""
        if not message_ts:  # every ephemeral has one: a context without it names none (read nothing)
            return None
        return next((e for e in reversed(self.state.ephemerals) if e.message_ts == message_ts and e.user == user_id),
                    None)

    def modal_stack(self, user_id: str) -> list[View]:
        """The modals open for ``user_id``, root first (empty when none is open)."""
        return list(self.state.modal_stacks.get(user_id, []))

    def view(self, view_id: str) -> View | None:
        return self.state.find_view(view_id)

    def home(self, user_id: str) -> View | None:
        """The App Home view last published for ``user_id``."""
        return self.state.homes.get(user_id)

    def response_posts(self) -> list[ResponseUrlPost]:
        return list(self.state.response_posts)

    def files(self) -> list[UploadedFile]:
        return list(self.state.files.values())

    # HTTP ------------------------------------------------------------------------------------------
    @staticmethod
    async def _args(request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise ApiFailure("invalid_json") from None
                if not isinstance(body, dict):
                    raise ApiFailure("invalid_json")
                args.update(body)
            else:
                args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        return args

    @staticmethod
    def _token(request: web.Request, args: dict[str, Any]) -> str | None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else args.get("token")
        return str(token) if token else None

    def _authorised(self, request: web.Request, args: dict[str, Any]) -> None:
        token = self._token(request, args)
        if not token:
            raise ApiFailure("not_authed")
        if token.startswith("xapp-"):  # an app-level token opens Socket Mode connections, nothing else
            raise ApiFailure("not_allowed_token_type")
        if token != self.token:
            raise ApiFailure("invalid_auth")

    def _take_rate_limit(self, method: str) -> _RateLimit | None:
        for rule in self._rate_limits:
            if rule.method not in (None, method):
                continue
            if rule.every > 0:
                rule.seen += 1
                if rule.seen % rule.every == 0:
                    return rule
                continue
            if rule.remaining > 0:
                rule.remaining -= 1
                return rule
        return None

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        status, headers = 200, {"X-OAuth-Scopes": ",".join(sorted(self.state.scopes))}
        args: dict[str, Any] = {}
        try:
            args = await self._args(request)
            if self._outage == "503":
                status, body = 503, {"ok": False, "error": "service_unavailable"}
            elif (rule := self._take_rate_limit(method)) is not None:
                status, body = 429, {"ok": False, "error": "ratelimited"}
                headers["Retry-After"] = str(rule.retry_after)
            else:
                body = self._dispatch(request, method, args)
        except _Throttled as throttled:
            status, body = 429, throttled.body()
            headers["Retry-After"] = str(throttled.retry_after)
        except ApiFailure as failure:
            body = failure.body()
        recorded = {k: v for k, v in args.items() if k != "token"}
        call = Call(method, clone(recorded), request.method, status, body)
        self.state.calls.append(call)
        for listener in list(self.listeners):
            listener(call)
        return web.json_response(body, status=status, headers=headers)

    def _dispatch(self, request: web.Request, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "apps.connections.open":  # the one method for the app-level token
            if self.socket_mode is None:
                raise ApiFailure("not_allowed_token_type" if self._token(request, args) == self.token
                                 else "invalid_auth")
            try:
                return {"ok": True, **self.socket_mode.open(self._token(request, args), self.root_url)}
            except SocketModeRefused as refused:
                raise ApiFailure(refused.error) from None
        handler = METHODS.get(method)
        if handler is None:
            raise ApiFailure("unknown_method")
        self._authorised(request, args)
        needed = METHOD_SCOPES.get(method)
        if needed and needed not in self.state.scopes:
            raise ApiFailure("missing_scope", needed=needed, provided=",".join(sorted(self.state.scopes)))
        if self.tiers is not None and (retry_after := self.tiers.take(method)) is not None:
            raise _Throttled(retry_after)
        if method == "chat.postMessage" and self._post_limiter is not None and args.get("channel"):
            retry_after = self._post_limiter.take(self._post_channel(str(args["channel"])))
            if retry_after is not None:
                raise _Throttled(retry_after)
        return {"ok": True, **handler(self.state, args)}

    def _post_channel(self, channel: str) -> str:
        """The channel a post lands in: a user id means the bot's IM with them (as chat.postMessage)."""
        return self.state.im_for(channel).id if channel in self.state.users else channel

    async def _link(self, request: web.Request) -> web.StreamResponse:
        """Socket Mode's WebSocket (bot/fakes/slack_socket.py)."""
        if self.socket_mode is None or self._outage is not None:
            return web.Response(status=503 if self.socket_mode else 404)
        return await self.socket_mode.serve(request)

    async def _upload(self, request: web.Request) -> web.Response:
        if self._outage == "503":
            return web.Response(status=503, text="service unavailable")
        upload = self.state.files.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404, text="file not found")
        data = await request.read()
        if len(data) != upload.length:
            return web.Response(status=400, text=f"length mismatch: expected {upload.length}")
        upload.data = data
        return web.Response(text=f"OK - {len(data)}")

    async def _response_url(self, request: web.Request) -> web.Response:
        return await slack_response_url.serve(self, request)

    def apply_response(self, context: dict[str, Any], body: dict[str, Any], blocks: list[Any],
                       *, source: str = "response_url") -> None:
        """Do what Slack does with a response_url post or a command's ack body (``slack_response_url.py``)."""
        slack_response_url.apply_response(self, context, body, blocks, source=source)
