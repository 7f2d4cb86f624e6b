"""A strict fake OpenID Connect provider, for the tests and the playground.

Follows the published specs it stands in for: OpenID Connect Core 1.0 (authorization code flow,
sections 3.1.2-3.1.3; ID token claims 2; ``prompt``, ``max_age``, ``login_hint``, ``acr_values``),
OpenID Connect Discovery 1.0 (``/.well-known/openid-configuration``), RFC 6749 (errors 4.1.2.1 and 5.2,
``client_secret_basic`` 2.3.1, single-use codes 4.1.2), RFC 7636 (PKCE; required here, S256 only, as
Okta requires for its PKCE clients) and RFC 7517 (JWKS). Okta's ``/v1/authorize`` documents the same
parameters (developer.okta.com, "OpenID Connect & OAuth 2.0 API").

Strict: an unregistered ``redirect_uri`` is refused without redirecting; a missing ``nonce``, PKCE or
``openid`` scope is an error; a code works once, for 60 seconds, with its verifier and redirect URI;
the token endpoint needs the client's credentials. Keys rotate with ``rotate()`` (the new key signs,
the old one stays in the JWKS unless dropped). Sign-in is a form (email, password, one-time code); a
correct code gives ``amr`` ``["pwd", "mfa", "otp"]``, none gives ``["pwd"]``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey


@dataclass
class FakeUser:
    email: str
    password: str
    otp: str = "123456"
    sub: str = field(default_factory=lambda: "00u" + secrets.token_hex(8))


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    user: FakeUser
    auth_time: datetime
    amr: list[str]
    acr: str
    expires: datetime
    used: bool = False


class FakeOidcProvider:
    def __init__(self, *, client_id: str, client_secret: str, redirect_uris: list[str],
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client_id, self.client_secret, self.redirect_uris = client_id, client_secret, redirect_uris
        self.now = now
        self.users: dict[str, FakeUser] = {}
        self._keys: list[RSAKey] = [self._new_key()]
        self._codes: dict[str, _Code] = {}
        self._pending: dict[str, dict[str, str]] = {}  # sign-in form id -> the authorization request
        self.issuer = ""
        self.runner: web.AppRunner | None = None
        self.calls: dict[str, int] = {"discovery": 0, "jwks": 0, "authorize": 0, "login": 0, "token": 0}
        self.claim_overrides: dict[str, Any] = {}  # tests: a misbehaving or hostile provider
        self.reuse_session_from: datetime | None = None  # tests: ignores prompt=login, reuses this sign-in
        self.sign_with_unlisted_key = False  # tests: a key not in the JWKS

    @staticmethod
    def _new_key() -> RSAKey:
        return RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256",
                                                     "kid": secrets.token_hex(8)})

    def add_user(self, email: str, password: str = "correct horse", otp: str = "123456") -> FakeUser:
        self.users[email.lower()] = FakeUser(email, password, otp)
        return self.users[email.lower()]

    def rotate(self, *, drop_old: bool = False) -> None:
        """A new signing key; the old ones stay published unless ``drop_old``."""
        self._keys = [self._new_key(), *([] if drop_old else self._keys)]

    def jwks(self) -> dict[str, Any]:
        return dict(KeySet(list(self._keys)).as_dict(private=False))

    # --- HTTP ------------------------------------------------------------------------------------------

    async def start(self) -> FakeOidcProvider:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/v1/keys", self._jwks)
        app.router.add_get("/v1/authorize", self._authorize)
        app.router.add_post("/v1/authorize", self._login)
        app.router.add_post("/v1/token", self._token)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.issuer = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _discovery(self, _: web.Request) -> web.Response:
        self.calls["discovery"] += 1
        return web.json_response({
            "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/v1/authorize",
            "token_endpoint": f"{self.issuer}/v1/token", "jwks_uri": f"{self.issuer}/v1/keys",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "scopes_supported": ["openid", "email", "profile"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "amr", "acr", "email",
                                 "email_verified"]})

    async def _jwks(self, _: web.Request) -> web.Response:
        self.calls["jwks"] += 1
        return web.json_response(self.jwks())

    def _error_redirect(self, query: dict[str, str], error: str, description: str) -> web.Response:
        params = {"error": error, "error_description": description}
        if "state" in query:
            params["state"] = query["state"]
        raise web.HTTPFound(f"{query['redirect_uri']}?{urlencode(params)}")

    async def _authorize(self, request: web.Request) -> web.Response:
        self.calls["authorize"] += 1
        query = dict(request.query)
        if query.get("client_id") != self.client_id or query.get("redirect_uri") not in self.redirect_uris:
            return web.Response(status=400, text="invalid client_id or redirect_uri")  # never redirected (4.1.2.1)
        if query.get("response_type") != "code":
            return self._error_redirect(query, "unsupported_response_type", "response_type must be code")
        if "openid" not in query.get("scope", "").split():
            return self._error_redirect(query, "invalid_scope", "the openid scope is required")
        if query.get("code_challenge_method") != "S256" or len(query.get("code_challenge", "")) < 43:
            return self._error_redirect(query, "invalid_request", "PKCE with S256 is required")
        if not query.get("nonce") or not query.get("state"):
            return self._error_redirect(query, "invalid_request", "nonce and state are required")
        if self.reuse_session_from is not None:  # a provider that ignores prompt=login
            user = self.users[next(iter(self.users))] if query.get("login_hint", "").lower() not in self.users \
                else self.users[query["login_hint"].lower()]
            return self._issue_code(query, user, self.reuse_session_from, ["pwd", "mfa", "otp"])
        form_id = secrets.token_urlsafe(16)
        self._pending[form_id] = query
        return self._form(form_id, query.get("login_hint", ""), "")

    def _form(self, form_id: str, hint: str, error: str) -> web.Response:
        message = f"<p id='error'>{html.escape(error)}</p>" if error else ""
        return web.Response(content_type="text/html", text=(
            "<!doctype html><html><head><title>Fake IdP sign-in</title></head><body><h1>Sign in</h1>"
            f"{message}<form method='post'><input type='hidden' name='form' value='{form_id}'>"
            f"<label>Email <input id='email' name='email' value='{html.escape(hint)}'></label><br>"
            "<label>Password <input id='password' name='password' type='password'></label><br>"
            "<label>One-time code <input id='otp' name='otp'></label><br>"
            "<button id='sign-in' type='submit'>Sign in</button></form></body></html>"))

    async def _login(self, request: web.Request) -> web.Response:
        self.calls["login"] += 1
        form = await request.post()
        form_id = str(form.get("form", ""))
        query = self._pending.get(form_id)
        if query is None:
            return web.Response(status=400, text="no sign-in in progress")
        user = self.users.get(str(form.get("email", "")).lower())
        if user is None or not secrets.compare_digest(str(form.get("password", "")), user.password):
            return self._form(form_id, str(form.get("email", "")), "Wrong email or password.")
        otp = str(form.get("otp", ""))
        if otp and not secrets.compare_digest(otp, user.otp):
            return self._form(form_id, user.email, "Wrong one-time code.")
        del self._pending[form_id]
        return self._issue_code(query, user, self.now(), ["pwd", "mfa", "otp"] if otp else ["pwd"])

    def _issue_code(self, query: dict[str, str], user: FakeUser, auth_time: datetime, amr: list[str]) -> web.Response:
        code = secrets.token_urlsafe(32)
        acr = "urn:fake:loa:2fa" if "mfa" in amr else "urn:fake:loa:1fa"
        self._codes[code] = _Code(self.client_id, query["redirect_uri"], query["code_challenge"], query["nonce"],
                                  user, auth_time, amr, acr, self.now() + timedelta(seconds=60))
        raise web.HTTPFound(f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}")

    async def _token(self, request: web.Request) -> web.Response:
        self.calls["token"] += 1
        auth = request.headers.get("Authorization", "")
        try:
            client_id, _, secret = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        except ValueError:
            client_id = secret = ""
        if not auth.startswith("Basic ") or client_id != self.client_id or \
                not secrets.compare_digest(secret, self.client_secret):
            return web.json_response({"error": "invalid_client"}, status=401)
        form = await request.post()
        code = self._codes.get(str(form.get("code", "")))
        if form.get("grant_type") != "authorization_code":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if code is None or code.used or code.expires <= self.now() or code.client_id != client_id \
                or form.get("redirect_uri") != code.redirect_uri:
            return web.json_response({"error": "invalid_grant"}, status=400)
        code.used = True  # once only, whatever follows
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not secrets.compare_digest(challenge, code.challenge):
            return web.json_response({"error": "invalid_grant", "error_description": "PKCE verification failed"},
                                     status=400)
        now = self.now()
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": code.user.sub, "aud": self.client_id, "iat": int(now.timestamp()),
            "exp": int((now + timedelta(minutes=5)).timestamp()), "auth_time": int(code.auth_time.timestamp()),
            "nonce": code.nonce, "amr": code.amr, "acr": code.acr, "email": code.user.email, "email_verified": True,
            **self.claim_overrides}
        claims = {k: v for k, v in claims.items() if v is not None}
        key = self._new_key() if self.sign_with_unlisted_key else self._keys[0]
        id_token = jwt.encode({"alg": "RS256", "kid": key.kid, "typ": "JWT"}, claims, key)
        return web.json_response({"access_token": secrets.token_urlsafe(24), "token_type": "Bearer",
                                  "expires_in": 3600, "scope": "openid email", "id_token": id_token},
                                 headers={"Cache-Control": "no-store"})
