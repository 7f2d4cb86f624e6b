"""``jitbot access revoke|retry``: the JIT administrators' ``/jit admin revoke|retry`` from the command
line, for when Slack is not there (an outage, an incident in which the workspace is the problem).

The same service and rules as in Slack (bot/services/admin.py): ``--as`` names the administrator, who
must be one of the policy's ``admins`` now, and each action is in the audit log under that name. The
name is a claim, not an authentication (whoever can run this command with the database's credentials
can claim any admin): the audit event also records the operating-system user and the host it ran on. A
revocation is carried out by the running worker (``serve`` or ``jitbot worker``), usually within a
second; ``--wait`` waits until the access has ended and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import socket

from sqlalchemy import select
from sqlmodel import col

from bot.bootstrap import build_runtime, close_runtime
from bot.cli_support import CliError, configured_policy, database_url, open_db
from bot.domain.requests import PolicyViolation
from bot.services.admin import AdminService
from bot.services.runtime import Runtime
from connectors.base import ConnectorError
from storage.tables import Grant


def cmd_access_revoke(args: argparse.Namespace) -> int:
    return _run(args, "revoke")


def cmd_access_retry(args: argparse.Namespace) -> int:
    return _run(args, "retry")


def _run(args: argparse.Namespace, action: str) -> int:
    if not args.as_admin:
        raise CliError("jitbot: say who you are: --as EMAIL (one of the policy's admins)", 2)
    loaded = configured_policy(args)
    request_id = args.request.strip().upper()
    url = database_url(args)

    async def run() -> int:
        await open_db(url).dispose()  # no database there: said, and no empty one created
        rt = await build_runtime(loaded, url)
        try:
            service = AdminService(rt)
            origin = command_origin()
            try:
                check = await service.check_admin(args.as_admin)
                if action == "revoke":
                    grant = await service.revoke(actor=args.as_admin, request_id=request_id, origin=origin)
                else:
                    grant = await service.retry(actor=args.as_admin, request_id=request_id, origin=origin)
            except PolicyViolation as exc:
                raise CliError(f"jitbot: {exc}", 1) from None
            except ConnectorError as exc:
                raise CliError(f"jitbot: the identity provider could not be asked: {exc.user_message}", 1) from None
            if check.note:
                print(f"note: {check.note}")
            if action == "retry":
                print(f"{request_id}: the grant will be tried again by the running worker")
                return 0
            print(f"{request_id}: {grant.user_email}'s access to {grant.target_kind}:{grant.target_id} at "
                  f"{grant.connector} is being revoked by the running worker")
            if args.wait <= 0:
                return 0
            if await _ended(rt, grant.id, args.wait):
                print(f"{request_id}: revoked")
                return 0
            raise CliError(f"jitbot: {request_id} was not revoked within {args.wait:g} s — is a worker running? "
                           "(it is marked for revocation: the next worker revokes it)", 1)
        finally:
            await close_runtime(rt)

    return asyncio.run(run())


def command_origin() -> dict[str, str]:
    """Where a command-line action came from, for its audit event: ``--as`` is only a claim."""
    try:
        os_user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid with no passwd entry (containers)
        os_user = f"uid {os.getuid()}"
    return {"via": "cli", "os_user": os_user, "host": socket.gethostname()}


async def _ended(rt: Runtime, grant_id: str, seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        async with rt.db.sessions() as session:
            status = (await session.execute(select(col(Grant.status)).where(col(Grant.id) == grant_id))).scalar()
        if status == "ended":
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.25)
