"""Step-up verification of approvals: the policy's ``step_up`` and ``oidc_providers`` keys. Pure.

What an approval that needs it must carry: bot/domain/step_up_proof.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, SecretStr, model_validator

from bot.domain.durations import format_duration, parse_duration

_Duration = Annotated[
    timedelta,
    BeforeValidator(lambda v: parse_duration(v) if isinstance(v, str) else v),
    PlainSerializer(format_duration, return_type=str),
]


def _loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def secure_url(url: str) -> bool:
    """https, or http to this machine (a local test provider or a proxy on the same host)."""
    scheme = urlsplit(url).scheme
    return scheme == "https" or (scheme == "http" and _loopback(url))


class StepUp(BaseModel):
    """``step_up`` on an eligibility or an approval layer (the layer's wins)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approvers: bool = True  # approvals need a fresh sign-in; false turns an eligibility's off for a layer
    provider: str  # a key of ``oidc_providers``
    max_age: _Duration = timedelta(minutes=5)  # the sign-in may be at most this old (OIDC ``max_age``)
    amr: tuple[str, ...] = ()  # each must be in the ID token's ``amr`` (e.g. [mfa])
    acr: tuple[str, ...] = ()  # the ID token's ``acr`` must be one of these (asked for with ``acr_values``)
    link_ttl: _Duration = timedelta(minutes=5)  # how long the link in Slack stays usable

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: object) -> object:
        if isinstance(data, dict):
            data = {k: [v] if k in ("amr", "acr") and isinstance(v, str) else v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _coherent(self) -> StepUp:
        if not timedelta(minutes=1) <= self.max_age <= timedelta(hours=1):
            raise ValueError("step_up.max_age must be between 1m and 1h")
        if not timedelta(minutes=1) <= self.link_ttl <= timedelta(minutes=30):
            raise ValueError("step_up.link_ttl must be between 1m and 30m")
        return self


class OidcProvider(BaseModel):
    """An OpenID Connect provider for step-up sign-ins (Okta, Entra ID, Google, any certified one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str  # discovery at {issuer}/.well-known/openid-configuration; the ID token's ``iss``
    client_id: str
    client_secret: SecretStr = Field(repr=False)
    # the ID-token claim that holds the approver's email (Entra: preferred_username, the UPN)
    email_claim: Literal["email", "preferred_username", "upn"] = "email"
    scopes: tuple[str, ...] = ("openid", "email")
    ca_file: str | None = None
    timeout: _Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _coherent(self) -> OidcProvider:
        if not secure_url(self.issuer):
            raise ValueError("oidc issuer must be an https URL")
        if "openid" not in self.scopes:
            raise ValueError("oidc scopes must include openid")
        return self


def step_up_for(eligibility_step_up: StepUp | None, layer_step_up: StepUp | None) -> StepUp | None:
    """What an approval of a layer needs: the layer's ``step_up``, else the eligibility's; None if off."""
    chosen = layer_step_up if layer_step_up is not None else eligibility_step_up
    return chosen if chosen is not None and chosen.approvers else None
