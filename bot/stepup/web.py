"""``/step-up/…`` in ``jitbot serve`` (flow.py walks it): small HTML pages, no script, nothing cached,
no Referer sent on (the link's secret is in its URL)."""

from __future__ import annotations

import html

import aiohttp
from aiohttp import web

from bot.services.runtime import Runtime
from bot.stepup import StepUpError
from bot.stepup.flow import CALLBACK, StepUpFlow

COOKIE = "jitbot_step_up"
HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
           "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https: http:"}


def _page(title: str, body: str, *, status: int = 200) -> web.Response:
    text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<meta name='viewport' content='width=device-width'>"
            "<style>body{font-family:sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}"
            "button{font-size:1rem;padding:.5rem 1rem}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


def _failed(exc: StepUpError) -> web.Response:
    return _page("Not approved", f"<p id='message'>{html.escape(str(exc))}</p>", status=400)


def add_routes(app: web.Application, rt: Runtime) -> None:
    """Serve the step-up pages on ``app`` (its own HTTP session for the provider, closed with the app)."""
    state: dict[str, StepUpFlow] = {}

    def flow() -> StepUpFlow:
        if "flow" not in state:
            state["flow"] = StepUpFlow(rt, aiohttp.ClientSession())
        return state["flow"]

    async def close(_: web.Application) -> None:
        if "flow" in state:
            await state["flow"].http.close()

    async def show(request: web.Request) -> web.Response:
        secret = request.match_info["secret"]
        try:
            what = await flow().describe(secret)
        except StepUpError as exc:
            return _failed(exc)
        return _page("Confirm your approval",
                     f"<p id='what'>{html.escape(what)}.</p><p>You will be asked to sign in again at your "
                     "identity provider; the approval is recorded only after that.</p>"
                     f"<form method='post' action='{html.escape(request.path)}'>"
                     "<button id='continue' type='submit'>Sign in and approve</button></form>")

    async def begin(request: web.Request) -> web.Response:
        try:
            begun = await flow().begin(request.match_info["secret"])
        except StepUpError as exc:
            return _failed(exc)
        response = web.HTTPFound(begun.redirect, headers=HEADERS)
        secure = (rt.policy.public_url or "").startswith("https://")
        response.set_cookie(COOKIE, begun.state, max_age=begun.max_age, path="/step-up/", httponly=True,
                            secure=secure, samesite="Lax")
        raise response

    async def callback(request: web.Request) -> web.Response:
        query = request.query
        try:
            message = await flow().callback(state=query.get("state", ""), code=query.get("code", ""),
                                            error=query.get("error", ""), cookie=request.cookies.get(COOKIE, ""))
        except StepUpError as exc:
            response = _failed(exc)
        else:
            response = _page("Approved", f"<p id='message'>{html.escape(message)}</p>"
                                         "<p>You can close this tab and go back to Slack.</p>")
        response.del_cookie(COOKIE, path="/step-up/")
        return response

    app.router.add_get(CALLBACK, callback)
    app.router.add_get("/step-up/{secret}", show)
    app.router.add_post("/step-up/{secret}", begin)
    app.on_cleanup.append(close)
