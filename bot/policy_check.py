"""A policy file checked as a whole before anything runs on it: the schema, the cross-references and each
connector's settings (built offline), every problem in one list.

``policy validate`` prints the list; ``serve``, ``worker`` and the other commands that load the policy
refuse to start with the same lines (exit 2) before they open or create a database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.policy_file import LoadedPolicy, PolicyError, YamlPath, load_policy
from connectors.base import ConnectorError
from connectors.registry import build_connector


async def connector_problems(source: str, connectors: Mapping[str, Any], lines: Mapping[YamlPath, int],
                             *, skip: frozenset[str] = frozenset()) -> list[str]:
    """Build each connector offline (no network), so that bad settings fail here, not at the first request.
    Connectors without a ``type`` (reported by the cross-reference check) and those in ``skip`` (with a
    problem reported already) are not built."""
    problems = []
    for name, settings in connectors.items():
        if name in skip or not isinstance(settings, dict) or "type" not in settings:
            continue
        line = lines.get(("connectors", str(name)))
        where = f"{source}{f':{line}' if line else ''}: connectors.{name}"
        pacing = _pacing_problems(settings)
        problems += [f"{where}.{problem}" for problem in pacing]
        if pacing:
            continue
        try:
            connector = build_connector(str(name), settings)
        except (ConnectorError, ValidationError) as exc:
            problems.append(f"{where}: {' '.join(str(exc).split())}")
        else:
            await connector.aclose()
    return problems


def _pacing_problems(settings: Mapping[str, Any]) -> list[str]:
    """The call wrapper's keys (bot/bootstrap.py reads them; the provider's settings model never sees them)."""
    out = []
    if "max_concurrency" in settings:
        value = settings["max_concurrency"]
        try:
            ok = not isinstance(value, bool) and int(str(value)) >= 1
        except ValueError:
            ok = False
        if not ok:
            out.append(f"max_concurrency: must be a whole number of at least 1, got {value!r}")
    if settings.get("rate_per_second") is not None:
        value = settings["rate_per_second"]
        try:
            ok = not isinstance(value, bool) and float(str(value)) > 0
        except ValueError:
            ok = False
        if not ok:
            out.append(f"rate_per_second: must be a number above 0, got {value!r}")
    return out


async def check_policy(path: str | Path, *, env: Mapping[str, str] | None = None) -> LoadedPolicy:
    """The policy at ``path`` when all of it is usable; otherwise ``PolicyError`` listing every problem:
    the file's schema and cross-references (bot/policy_file.py) and its connectors' settings."""
    try:
        loaded = load_policy(path, env=env)
    except PolicyError as exc:
        if exc.data is None or not isinstance(exc.data.get("connectors"), dict):
            raise
        reported = frozenset(str(p[1]) for p in exc.paths if len(p) > 1 and p[0] == "connectors")
        more = await connector_problems(str(path), exc.data["connectors"], exc.lines, skip=reported)
        raise PolicyError([*exc.problems, *more], data=exc.data, lines=exc.lines, paths=exc.paths) from None
    problems = await connector_problems(loaded.path, loaded.policy.connectors, loaded.lines)
    if problems:
        raise PolicyError(problems, data=loaded.raw, lines=loaded.lines)
    return loaded


def check_policy_now(path: str | Path) -> LoadedPolicy:
    """``check_policy`` from synchronous code. Called inside a running event loop (a command's own loop,
    before it opens anything), it runs in a thread of its own: the connectors it builds are discarded."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(check_policy(path))
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, check_policy(path)).result()
