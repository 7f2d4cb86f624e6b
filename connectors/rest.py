"""What the REST connectors share: settings validation, one HTTP exchange, and status → typed error."""

from __future__ import annotations

from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from connectors.base import ConfigError, ConnectorError, NotFound, PermissionDenied, RateLimited, Transient

M = TypeVar("M", bound=BaseModel)


def validate_settings(model: type[M], settings: dict[str, Any], *, label: str) -> M:
    """``settings`` as ``model``; a ConfigError naming ``label`` and every bad field otherwise."""
    try:
        return model.model_validate(settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{label}: {problems}") from None


async def exchange(session: aiohttp.ClientSession, method: str, url: Any, *, name: str, path: str,
                   **kwargs: Any) -> tuple[int, Any, Any]:
    """One request; returns (status, JSON body or None, headers). Network failures are ``Transient``."""
    try:
        async with session.request(method, url, **kwargs) as resp:
            status, headers = resp.status, resp.headers
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Transient(f"{name}: {method} {path} failed ({type(exc).__name__}: {exc})") from None
    return status, data, headers


def error_for_status(status: int, detail: str, *, provider: str, subject: str, retry_after: float,
                     rate_limited: bool = False) -> ConnectorError:
    """The typed error for an unsuccessful HTTP status (``rate_limited`` forces RateLimited)."""
    if status == 429 or rate_limited:
        return RateLimited(detail, retry_after=retry_after)
    if status in (401, 403):
        return PermissionDenied(detail, user_message=f"The access bot is not allowed to do that in {provider}.")
    if status == 404:
        return NotFound(detail, user_message=f"{provider} does not know that {subject}.")
    if status >= 500 or status == 408:
        return Transient(detail)
    return ConnectorError(detail)
