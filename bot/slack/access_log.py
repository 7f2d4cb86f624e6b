"""The HTTP server's access log: every request, only the failed ones, or none (``JITBOT_ACCESS_LOG``).

Slack sends three requests for every access request (the command, the modal's submission, the click);
a line for each costs more than the rest of aiohttp's work on the request's response, and says nothing
the audit log does not. Requests answered 4xx / 5xx — a bad signature, a probe, a failure — are the
ones worth a line, and are still logged by default.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_log import AccessLogger


class FailuresAccessLogger(AccessLogger):
    """aiohttp's access log, for responses with a status of 400 or above only."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if response.status >= 400:
            super().log(request, response, time)


def runner_options(mode: str) -> dict[str, Any]:
    """``web.AppRunner`` keyword arguments for ``JITBOT_ACCESS_LOG`` = ``mode``."""
    if mode == "off":
        return {"access_log": None}
    if mode == "failures":
        return {"access_log_class": FailuresAccessLogger}
    return {}
