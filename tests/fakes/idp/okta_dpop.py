"""DPoP (RFC 9449) as Okta's org authorization server demands it of a service app that requires it.

Okta's guide "Configure OAuth 2.0 Demonstrating Proof-of-Possession" and RFC 9449: a token request
carries a ``DPoP`` header, a JWT with header ``typ: dpop+jwt``, an asymmetric ``alg`` and the public
``jwk``, and claims ``htm`` (the method), ``htu`` (the URL without query), ``iat`` and a unique ``jti``.
Without it Okta answers 400 ``invalid_dpop_proof``; the first proof without a ``nonce`` claim gets
400 ``use_dpop_nonce`` and a ``DPoP-Nonce`` header, and the retry must carry that nonce. The token is
``token_type: DPoP`` and bound to the key (its RFC 7638 thumbprint); each API call then sends
``Authorization: DPoP <token>`` and a fresh proof with ``ath`` = base64url(SHA-256(token)).

Assumptions (not documented): the fake accepts a proof ``iat`` up to 60 s off its clock and a nonce
for as long as it runs, and API calls need no nonce.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt

IAT_LEEWAY = 60


class DPoPError(Exception):
    """A refused proof: ``error`` is Okta's error code, ``str()`` its description."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (RSA: e, kty, n; EC: crv, kty, x, y)."""
    members = ("e", "kty", "n") if jwk.get("kty") == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def access_token_hash(token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()


class DPoPVerifier:
    """Checks proofs; keeps the nonce it hands out and the ``jti`` values it has seen."""

    def __init__(self) -> None:
        self.nonce = secrets.token_urlsafe(16)
        self.proofs: list[dict[str, Any]] = []  # verified claims, for tests
        self._seen_jti: set[str] = set()

    def verify(self, proof: str | None, *, method: str, url: str, nonce_required: bool,
               access_token: str | None = None) -> str:
        """The proof's key thumbprint, or ``DPoPError``."""
        if not proof:
            raise DPoPError("invalid_dpop_proof", "The DPoP proof JWT header is missing.")
        try:
            header = jwt.get_unverified_header(proof)
            jwk = header.get("jwk")
            if header.get("typ") != "dpop+jwt" or not isinstance(jwk, dict) or "d" in jwk:
                raise DPoPError("invalid_dpop_proof", "The DPoP proof JWT header is invalid.")
            key = jwt.PyJWK(jwk, algorithm=header.get("alg"))
            claims = jwt.decode(proof, key.key, algorithms=["RS256", "ES256"],
                                options={"require": ["htm", "htu", "iat", "jti"], "verify_aud": False})
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            if isinstance(exc, DPoPError):
                raise
            raise DPoPError("invalid_dpop_proof", f"The DPoP proof JWT is invalid: {exc}") from None
        parts = urlsplit(url)
        if claims["htm"] != method or claims["htu"] != urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")):
            raise DPoPError("invalid_dpop_proof", "The DPoP proof htm or htu does not match the request.")
        if abs(time.time() - float(claims["iat"])) > IAT_LEEWAY:
            raise DPoPError("invalid_dpop_proof", "The DPoP proof JWT was issued outside the acceptable window.")
        if claims["jti"] in self._seen_jti:
            raise DPoPError("invalid_dpop_proof", "The DPoP proof jti was already used.")
        if nonce_required and claims.get("nonce") != self.nonce:
            raise DPoPError("use_dpop_nonce", "Authorization server requires nonce in DPoP proof.")
        if access_token is not None and claims.get("ath") != access_token_hash(access_token):
            raise DPoPError("invalid_dpop_proof", "The DPoP proof ath does not match the access token.")
        self._seen_jti.add(claims["jti"])
        self.proofs.append(claims)
        return thumbprint(jwk)
