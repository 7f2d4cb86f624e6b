"""The playground's web page: static files plus a few JSON endpoints that drive `Playground`.

GET  /                 the page (static/index.html)
GET  /api/state?user=  what that persona sees (DMs, ephemerals, modals, App Home, audit channel, clock)
POST /api/command      {user, text}                          a slash command typed in the composer
POST /api/click        {user, channel, ts, action_id, block_id, choice}    a click in a message
POST /api/view_action  {user, view_id, action_id, block_id, choice, values} a click/choice in a view
POST /api/submit       {user, view_id, values}               submit the top modal
POST /api/close        {user, view_id}                       close the top modal
POST /api/home         {user}                                open the App Home tab
POST /api/clock        {minutes}                             jump the bot's clock forward

The page can act as any persona, so only the person at this machine may use it. Every endpoint answers
requests whose ``Host`` is a loopback name (127.0.0.1, localhost, [::1], with any port): a page on
another site that rebinds its DNS name to 127.0.0.1 still sends its own name, and is refused. A request
whose ``Origin`` is not this page's own (``http://`` + a loopback name + the same port), or that the
browser marks cross-site or same-site (``Sec-Fetch-Site``), is refused too: another site's page, or
another local port, cannot drive it. Requests without those headers (curl, a test) are not from a page.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.playground.world import Playground

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
PLAYGROUND_KEY = web.AppKey("playground", Playground)

Handler = Callable[[Playground, dict[str, Any]], Awaitable[dict[str, Any]]]


_LOOPBACK = re.compile(r"(127\.0\.0\.1|localhost|\[::1\])(?::([0-9]{1,5}))?", re.IGNORECASE)


def _loopback_port(host: str) -> str | None:
    """The port of a loopback ``host[:port]`` ("" without one), or None when it is not a loopback name."""
    match = _LOOPBACK.fullmatch(host)
    return None if match is None else match.group(2) or ""


def refusal(headers: Any) -> str | None:
    """Why a request is not from this machine's own page (see the module docstring), or None."""
    port = _loopback_port(headers.get("Host", ""))
    if port is None:
        return "Host is not a loopback name"
    origin = headers.get("Origin")
    if origin is not None:
        if not origin.lower().startswith("http://") or _loopback_port(origin[len("http://"):]) != port:
            return "Origin is not this page"
    if headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return "the browser marks it as from another site"
    return None


@web.middleware
async def this_machine_only(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
    reason = refusal(request.headers)
    if reason is not None:
        log.warning("playground refused %s %s: %s", request.method, request.path, reason)
        raise web.HTTPForbidden(text=f"The playground answers its own page on this machine only ({reason}).")
    return await handler(request)


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise web.HTTPBadRequest(text=f"missing {key}")
    return value


def _opt(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    return value if isinstance(value, str) and value else None


def _values(body: dict[str, Any]) -> dict[str, Any]:
    values = body.get("values") or {}
    if not isinstance(values, dict):
        raise web.HTTPBadRequest(text="values must be an object")
    return values


async def _command(pg: Playground, b: dict[str, Any]) -> dict[str, Any]:
    return await pg.command(_str(b, "user"), str(b.get("text") or ""))


async def _click(pg: Playground, b: dict[str, Any]) -> dict[str, Any]:
    return await pg.click(_str(b, "user"), _str(b, "channel"), _str(b, "ts"), _str(b, "action_id"),
                          _opt(b, "block_id"), b.get("choice"))


async def _view_action(pg: Playground, b: dict[str, Any]) -> dict[str, Any]:
    return await pg.click_in_view(_str(b, "user"), _str(b, "view_id"), _str(b, "action_id"),
                                  _opt(b, "block_id"), b.get("choice"), _values(b))


async def _submit(pg: Playground, b: dict[str, Any]) -> dict[str, Any]:
    return await pg.submit(_str(b, "user"), _str(b, "view_id"), _values(b))


async def _close(pg: Playground, b: dict[str, Any]) -> dict[str, Any]:
    return await pg.close_view(_str(b, "user"), _str(b, "view_id"))


async def _home(pg: Playground, b: dict[str, Any]) -> dict[str, Any]:
    return await pg.open_home(_str(b, "user"))


async def _clock(pg: Playground, b: dict[str, Any]) -> dict[str, Any]:
    minutes = b.get("minutes")
    if not isinstance(minutes, int) or minutes <= 0:
        raise web.HTTPBadRequest(text="minutes must be a positive integer")
    return await pg.jump(minutes)


ACTIONS: dict[str, Handler] = {"command": _command, "click": _click, "view_action": _view_action,
                               "submit": _submit, "close": _close, "home": _home, "clock": _clock}


def web_page(pg: Playground) -> web.Application:
    app = web.Application(middlewares=[this_machine_only])
    app[PLAYGROUND_KEY] = pg

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def state(request: web.Request) -> web.Response:
        user = request.query.get("user") or pg.personas[0].id
        try:
            body = pg.state(user)
        except KeyError as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def action(request: web.Request) -> web.Response:
        handler = ACTIONS.get(request.match_info["name"])
        if handler is None:
            raise web.HTTPNotFound(text="no such action")
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="expected a JSON body") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="expected a JSON object")
        try:
            result = await handler(pg, body)
        except web.HTTPException:
            raise
        except (KeyError, ValueError) as exc:  # unknown persona / view / message / option
            result = {"ok": False, "error": str(exc)}
        except Exception as exc:  # keep the page alive; the log has the details
            log.exception("playground action %s failed", request.match_info["name"])
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return web.json_response(result)

    app.router.add_get("/", index)
    app.router.add_get("/api/state", state)
    app.router.add_post("/api/{name}", action)
    app.router.add_static("/static/", STATIC)
    return app
