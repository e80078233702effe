"""Access tokens (JWT, HS256) and refresh tokens (opaque, stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ISSUER = "runstate"
AUDIENCE = "runstate-api"
ACCESS_TOKEN_TYPE = "access"
# The only algorithm accepted: a token naming any other (`none`, RS256 with the HMAC key as
# a public key, …) is refused before its signature is looked at.
ALGORITHMS = ["HS256"]
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "typ"]


class InvalidToken(Exception):
    """The token is missing, forged, expired or of the wrong kind."""


@dataclass(frozen=True)
class AccessTokenIssuer:
    secret: str
    ttl_seconds: int

    def issue(self, user_id: uuid.UUID, *, now: datetime | None = None) -> str:
        issued = now or datetime.now(UTC)
        claims = {
            "sub": str(user_id),
            "iat": issued,
            "exp": issued + timedelta(seconds=self.ttl_seconds),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "typ": ACCESS_TOKEN_TYPE,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHMS[0])

    def user_id(self, token: str) -> uuid.UUID:
        """The user an access token was issued to; InvalidToken for anything else."""
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=ALGORITHMS,
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": REQUIRED_CLAIMS},
            )
            if claims["typ"] != ACCESS_TOKEN_TYPE:
                raise InvalidToken("not an access token")
            return uuid.UUID(str(claims["sub"]))
        except (jwt.PyJWTError, ValueError) as exc:
            raise InvalidToken(str(exc)) from exc


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def refresh_token_hash(token: str) -> str:
    # A fast hash is enough: the token has 256 bits of entropy, there is nothing to guess.
    return hashlib.sha256(token.encode()).hexdigest()
