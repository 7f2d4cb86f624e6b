"""An OpenID Connect relying party for step-up sign-ins, on joserfc for everything JOSE.

- Discovery (OpenID Connect Discovery 1.0): ``{issuer}/.well-known/openid-configuration``; its ``issuer``
  must be exactly the configured one (section 4.3).
- Authorization code flow (OpenID Connect Core 1.0, 3.1) with PKCE S256 (RFC 7636), ``prompt=login``,
  ``max_age``, ``nonce``, ``acr_values`` when the policy asks for an ``acr``, ``login_hint``.
- Token request authenticated with ``client_secret_basic`` (RFC 6749, 2.3.1).
- ID token validation (Core 3.1.3.7): signature against the provider's JWKS with an asymmetric algorithm
  it announces (never ``none`` or HMAC), a key id not in the cached JWKS fetches it again once (key
  rotation); ``iss``, ``aud`` (and ``azp`` when several audiences), ``exp``, ``iat``, ``nonce``,
  ``auth_time`` (Core 3.1.2.1: required with ``max_age``), then ``amr`` / ``acr`` as the policy requires.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from bot.domain.step_up import OidcProvider, StepUp
from bot.stepup import StepUpError

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
LEEWAY = 30  # seconds of clock difference tolerated with the provider


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge), RFC 7636 4.1-4.2."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass(frozen=True)
class Discovery:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    algorithms: tuple[str, ...]


@dataclass(frozen=True)
class SignIn:
    """What a verified ID token says."""

    subject: str
    email: str
    auth_time: datetime
    amr: tuple[str, ...]
    acr: str | None


class OidcClient:
    def __init__(self, config: OidcProvider, http: aiohttp.ClientSession) -> None:
        self.config, self.http = config, http
        self._discovery: Discovery | None = None
        self._keys: KeySet | None = None
        self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=config.ca_file) \
            if config.ca_file else True
        self._timeout = aiohttp.ClientTimeout(total=config.timeout.total_seconds())

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self.http.get(url, ssl=self._ssl, timeout=self._timeout) as res:
                if res.status != 200:
                    raise StepUpError(f"The identity provider answered HTTP {res.status}; try again shortly.")
                data = json.loads(await res.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise StepUpError(f"The identity provider cannot be reached ({type(exc).__name__}); "
                              "try again shortly.") from None
        if not isinstance(data, dict):
            raise StepUpError("The identity provider sent something unexpected; try again shortly.")
        return data

    async def discovery(self) -> Discovery:
        if self._discovery is None:
            issuer = self.config.issuer.rstrip("/")
            doc = await self._get_json(f"{issuer}/.well-known/openid-configuration")
            if doc.get("issuer") != self.config.issuer:
                raise StepUpError("The identity provider's discovery document names another issuer; "
                                  "ask an administrator to check oidc_providers.")
            algs = tuple(a for a in doc.get("id_token_signing_alg_values_supported", ["RS256"]) if a in ALGORITHMS)
            try:
                self._discovery = Discovery(doc["issuer"], doc["authorization_endpoint"], doc["token_endpoint"],
                                            doc["jwks_uri"], algs or ("RS256",))
            except KeyError as exc:
                raise StepUpError(f"The identity provider's discovery document has no {exc.args[0]}.") from None
        return self._discovery

    async def _key_set(self, *, refresh: bool) -> KeySet:
        if self._keys is None or refresh:
            disc = await self.discovery()
            try:
                self._keys = KeySet.import_key_set(await self._get_json(disc.jwks_uri))  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError):
                raise StepUpError("The identity provider's signing keys cannot be read.") from None
        return self._keys

    async def authorization_url(self, *, redirect_uri: str, state: str, nonce: str, challenge: str,
                                step_up: StepUp, login_hint: str) -> str:
        disc = await self.discovery()
        params = {"response_type": "code", "client_id": self.config.client_id, "redirect_uri": redirect_uri,
                  "scope": " ".join(self.config.scopes), "state": state, "nonce": nonce,
                  "code_challenge": challenge, "code_challenge_method": "S256", "prompt": "login",
                  "max_age": str(int(step_up.max_age.total_seconds())), "login_hint": login_hint}
        if step_up.acr:
            params["acr_values"] = " ".join(step_up.acr)
        sep = "&" if "?" in disc.authorization_endpoint else "?"
        return disc.authorization_endpoint + sep + urlencode(params, quote_via=quote)

    async def exchange(self, *, code: str, verifier: str, redirect_uri: str) -> str:
        """The ID token for an authorization code (the token endpoint, client_secret_basic)."""
        disc = await self.discovery()
        pair = f"{quote(self.config.client_id, safe='')}:{quote(self.config.client_secret.get_secret_value(), safe='')}"
        auth = "Basic " + base64.b64encode(pair.encode()).decode()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "code_verifier": verifier}
        try:
            async with self.http.post(disc.token_endpoint, data=form, ssl=self._ssl, timeout=self._timeout,
                                      headers={"Accept": "application/json", "Authorization": auth}) as res:
                body = json.loads(await res.read() or b"{}")
                status = res.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise StepUpError(f"The identity provider cannot be reached ({type(exc).__name__}); "
                              "start again from Slack.") from None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("id_token"), str):
            error = body.get("error", f"HTTP {status}") if isinstance(body, dict) else f"HTTP {status}"
            raise StepUpError(f"The identity provider refused the sign-in ({str(error)[:60]}); "
                              "start again from Slack.")
        token: str = body["id_token"]
        return token

    async def verify(self, id_token: str, *, nonce: str, step_up: StepUp, now: datetime,
                     not_before: datetime) -> SignIn:
        """Validate ``id_token`` for this client and sign-in: see the module docstring. ``not_before``: the
        sign-in must have happened after it (the click), give or take the leeway."""
        disc = await self.discovery()
        try:
            try:
                token = jwt.decode(id_token, await self._key_set(refresh=False), algorithms=disc.algorithms)
            except InvalidKeyIdError:  # the provider rotated its keys since they were fetched
                token = jwt.decode(id_token, await self._key_set(refresh=True), algorithms=disc.algorithms)
        except StepUpError:
            raise
        except (JoseError, ValueError) as exc:
            raise StepUpError(f"The sign-in could not be verified (its signature: {_code(exc)}).") from None
        claims = token.claims
        registry = JWTClaimsRegistry(
            now=int(now.timestamp()), leeway=LEEWAY,
            iss={"essential": True, "value": disc.issuer}, sub={"essential": True},
            aud={"essential": True, "value": self.config.client_id}, exp={"essential": True},
            iat={"essential": True}, nonce={"essential": True, "value": nonce}, auth_time={"essential": True})
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise StepUpError(f"The sign-in could not be verified ({_code(exc)}).") from None
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.config.client_id:
            raise StepUpError("The sign-in could not be verified (it was issued to another application).")
        if not isinstance(claims["auth_time"], int | float):
            raise StepUpError("The sign-in could not be verified (auth_time is not a time).")
        auth_time = datetime.fromtimestamp(claims["auth_time"], UTC)
        if now - auth_time > step_up.max_age + timedelta(seconds=LEEWAY):
            raise StepUpError("The sign-in was not fresh enough; sign in again (the link from Slack).")
        if auth_time < not_before - timedelta(seconds=LEEWAY):
            raise StepUpError("The identity provider reused an earlier sign-in instead of asking again; "
                              "sign out there and start again from Slack.")
        amr = claims.get("amr") or []
        amr = tuple(str(a) for a in amr) if isinstance(amr, list) else ()
        missing = [m for m in step_up.amr if m not in amr]
        if missing:
            raise StepUpError(f"The sign-in did not use {', '.join(missing)}; this approval needs it.")
        acr = claims.get("acr")
        if step_up.acr and acr not in step_up.acr:
            raise StepUpError("The sign-in was not at the assurance level this approval needs.")
        email = claims.get(self.config.email_claim)
        if not isinstance(email, str) or not email:
            raise StepUpError(f"The sign-in carries no {self.config.email_claim}; ask an administrator to check "
                              "the provider's scopes.")
        if self.config.email_claim == "email" and claims.get("email_verified") is False:
            raise StepUpError("The identity provider has not verified that account's email address.")
        return SignIn(str(claims["sub"]), email.strip().lower(), auth_time, amr, acr if isinstance(acr, str) else None)


def _code(exc: Exception) -> str:
    """The error's short code (e.g. ``invalid_claim: Invalid claim: 'nonce'``), never token content."""
    return str(exc)[:120]
