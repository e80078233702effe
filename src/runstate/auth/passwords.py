"""Password hashing (argon2id) and the password policy."""

from __future__ import annotations

import asyncio
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane. Raising these makes sign-in
# rehash stored passwords (see `verify_and_rehash`).
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 256
SYMBOLS = set(string.punctuation) | {" "}

# Verified against when the e-mail is unknown, so both failures cost the same time.
_DUMMY_HASH = HASHER.hash("runstate dummy password, never a real one")


def password_policy_violation(password: str) -> str | None:
    """Why ``password`` is too weak, or None when it meets the policy."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"must be at least {PASSWORD_MIN_LENGTH} characters"
    missing = [
        what
        for what, present in (
            ("an upper-case letter", any(c.isupper() for c in password)),
            ("a lower-case letter", any(c.islower() for c in password)),
            ("a digit", any(c.isdigit() for c in password)),
            ("a symbol", any(c in SYMBOLS or not c.isalnum() for c in password)),
        )
        if not present
    ]
    if missing:
        return "must contain " + ", ".join(missing)
    return None


async def hash_password(password: str) -> str:
    # argon2 releases the GIL: hashing in a thread keeps the event loop serving.
    return await asyncio.to_thread(HASHER.hash, password)


def _verify(stored_hash: str | None, password: str) -> tuple[bool, str | None]:
    try:
        HASHER.verify(stored_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False, None
    if stored_hash is None:
        return False, None
    if HASHER.check_needs_rehash(stored_hash):
        return True, HASHER.hash(password)
    return True, None


async def verify_and_rehash(stored_hash: str | None, password: str) -> tuple[bool, str | None]:
    """Check ``password`` against ``stored_hash`` (None: unknown account, still costs a hash).

    Returns (matches, new_hash): new_hash is set when the stored hash used weaker
    parameters than today's and should be replaced.
    """
    return await asyncio.to_thread(_verify, stored_hash, password)
