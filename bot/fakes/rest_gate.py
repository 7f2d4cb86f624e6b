"""What the strict vendor fakes (PagerDuty, Jira) share: serving on a free local port, and the gate every
request passes before its operation runs — the credentials, the operation's documented query
parameters, the request log, and queued faults. Each vendor says how it refuses (its error shape) and
what its credentials are; the order of the checks is the same for both:

1. wrong or missing credentials → the vendor's 401 (nothing logged);
2. a vendor-specific header check (PagerDuty's API version), when the vendor has one;
3. a query parameter the operation does not document → the vendor's 400. Assumption (marked): the real
   APIs ignore unknown parameters; the fakes refuse them so that a misspelt filter is a test failure
   rather than a silently widened query;
4. the request is logged (``requests``: path and query string), then a queued fault, if any, answers;
5. the operation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.Response]]


class GatedFake:
    """Base of a strict fake. A subclass lists its operations (``operations``), and answers
    ``authorised``, ``unauthorised``, ``unknown_parameters`` and ``fault`` in its vendor's terms."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []  # (path, query string) of every authorised call
        self._faults: deque[tuple[int, dict[str, str]]] = deque()
        self._params: dict[str, set[str]] = {}  # route resource → documented query parameters
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---- the vendor's part -----------------------------------------------------------------------------
    def operations(self) -> list[tuple[str, Handler, set[str]]]:
        """(path template, handler, documented query parameters) of each GET operation."""
        raise NotImplementedError

    def authorised(self, request: web.Request) -> bool:
        raise NotImplementedError

    def unauthorised(self) -> web.Response:
        raise NotImplementedError

    def refused_header(self, request: web.Request) -> web.Response | None:
        return None

    def unknown_parameters(self, names: list[str]) -> web.Response:
        raise NotImplementedError

    def fault(self, status: int, headers: dict[str, str]) -> web.Response:
        raise NotImplementedError

    # ---- shared ------------------------------------------------------------------------------------------
    def queue_fault(self, status: int, times: int, headers: dict[str, str]) -> None:
        self._faults.extend([(status, headers)] * times)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        for path, handler, params in self.operations():
            app.router.add_get(path, handler)
            self._params[path] = params
        return app

    async def start(self) -> Any:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None

    @web.middleware
    async def _gate(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if not self.authorised(request):
            return self.unauthorised()
        refused = self.refused_header(request)
        if refused is not None:
            return refused
        resource = request.match_info.route.resource
        allowed = self._params.get(resource.canonical, set()) if resource is not None else set()
        unknown = sorted(set(request.query) - allowed)
        if unknown:
            return self.unknown_parameters(unknown)
        self.requests.append((request.path, request.query_string))
        if self._faults:
            return self.fault(*self._faults.popleft())
        return await handler(request)
