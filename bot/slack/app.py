"""Build the Bolt AsyncApp: one register() per surface, nothing else."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.services.runtime import Runtime
from bot.slack import early_ack, installation, listeners, people_events
from bot.slack.client import pooled_respond
from bot.slack.identity import Admission, SlackIdentity


def admission(rt: Runtime) -> Admission:
    """The Slack users the policy admits besides full members (read at each request: a reload changes it)."""
    settings = rt.policy.settings
    return Admission(guests=settings.allow_slack_guests, external=settings.allow_slack_external_users)


def build_app(rt: Runtime, *, client: AsyncWebClient, signing_secret: str,
              process_before_response: bool = False) -> AsyncApp:
    app = AsyncApp(client=client, signing_secret=signing_secret,
                   process_before_response=process_before_response)
    identity = SlackIdentity(admission=lambda: admission(rt))
    installation.install(app, identity)  # first: nothing runs for another workspace's requests
    if client.session is not None:  # the bot's one HTTP session (bot/slack/server.py)
        pooled_respond(app, client.session)
    if not process_before_response:  # Bolt answers once ack() is called, not after its next 10 ms poll
        early_ack.install(app, rt, identity)
    listeners.register(app, rt, identity)
    people_events.register(app, rt)
    return app
