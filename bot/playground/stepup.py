"""The playground's step-up: the strict fake OpenID Connect provider (bot/fakes/oidc_provider.py) stands in
for each provider the policy's ``oidc_providers`` names, and the bot's own address is the ``public_url``.

Every persona can sign in there with the password ``PASSWORD`` and the one-time code ``OTP`` (a correct code
gives ``amr`` ``[pwd, mfa, otp]``). An approval on a layer with ``step_up`` answers privately with a link
to the bot's ``/step-up/…`` page; opening it in the browser walks the real flow (PKCE, ``prompt=login``, the
ID token checked) against the fake, and the vote is recorded when the browser comes back.
"""

from __future__ import annotations

import dataclasses

from bot.fakes.oidc_provider import FakeOidcProvider
from bot.policy_file import LoadedPolicy
from bot.services.clock import Clock

PASSWORD = "playground"
OTP = "123456"


class PlaygroundStepUp:
    def __init__(self, loaded: LoadedPolicy, clock: Clock, emails: list[str]) -> None:
        self.loaded, self.clock, self.emails = loaded, clock, emails
        self.providers: dict[str, FakeOidcProvider] = {}

    async def start(self) -> None:
        """A fake provider per ``oidc_providers`` entry, with the policy's client id and secret."""
        for name, conf in self.loaded.policy.oidc_providers.items():
            fake = FakeOidcProvider(client_id=conf.client_id, client_secret=conf.client_secret.get_secret_value(),
                                    redirect_uris=[], now=self.clock.now)
            for email in self.emails:
                fake.add_user(email, PASSWORD, OTP)
            self.providers[name] = await fake.start()

    def point(self, loaded: LoadedPolicy, public_url: str) -> LoadedPolicy:
        """``loaded`` with the bot's address as ``public_url`` and each provider's issuer at its fake."""
        policy = loaded.policy
        if not self.providers:
            return loaded
        for fake in self.providers.values():
            fake.redirect_uris = [f"{public_url}/step-up/callback"]
        providers = {name: conf.model_copy(update={"issuer": self.providers[name].issuer})
                     for name, conf in policy.oidc_providers.items()}
        pointed = policy.model_copy(update={"public_url": public_url, "oidc_providers": providers})
        return dataclasses.replace(loaded, policy=pointed)

    async def aclose(self) -> None:
        for fake in self.providers.values():
            await fake.stop()
