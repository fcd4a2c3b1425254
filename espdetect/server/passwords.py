"""Password and token hashes for the server's optional authentication.

Only hashes are ever configured. A password hash is a self-describing string, so the cost
parameters can be raised later without breaking existing hashes:

* ``pbkdf2_sha256$<iterations>$<salt, base64>$<hash, base64>`` (the default, 600 000 iterations);
* ``scrypt$<n>$<r>$<p>$<salt, base64>$<hash, base64>``.

A bearer token is configured as the SHA-256 of the token in hex: the token itself is random and
long, so a slow hash adds nothing. All comparisons use `hmac.compare_digest`.

Example:
    >>> h = hash_password("correct horse", iterations=1000)
    >>> verify_password("correct horse", h), verify_password("wrong", h)
    (True, False)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Literal

__all__ = [
    "DEFAULT_PBKDF2_ITERATIONS",
    "PasswordScheme",
    "check_password_hash_format",
    "hash_password",
    "hash_token",
    "new_token",
    "verify_password",
    "verify_token",
]

PasswordScheme = Literal["pbkdf2_sha256", "scrypt"]

#: OWASP's 2023 figure for PBKDF2-HMAC-SHA256 (about 0.3 s on one core of a laptop CPU).
DEFAULT_PBKDF2_ITERATIONS = 600_000
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32
# Upper bounds keep a hostile or mistyped configuration from making each check take minutes.
_MAX_ITERATIONS = 10_000_000
_MAX_SCRYPT_N = 2**20
_SCRYPT_MAXMEM = 256 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(
    password: str, scheme: PasswordScheme = "pbkdf2_sha256", *, iterations: int = DEFAULT_PBKDF2_ITERATIONS
) -> str:
    """A salted hash of ``password`` for ``auth_password_hash``.

    Example:
        >>> hash_password("pw", iterations=1000).startswith("pbkdf2_sha256$1000$")
        True
    """
    if not password:
        raise ValueError("expected a non-empty password, got an empty one")
    salt = secrets.token_bytes(_SALT_BYTES)
    secret = password.encode("utf-8")
    if scheme == "pbkdf2_sha256":
        if not 1 <= iterations <= _MAX_ITERATIONS:
            raise ValueError(f"expected 1..{_MAX_ITERATIONS} iterations, got {iterations}")
        digest = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations, _HASH_BYTES)
        return f"pbkdf2_sha256${iterations}${_b64(salt)}${_b64(digest)}"
    if scheme == "scrypt":
        digest = hashlib.scrypt(
            secret, salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=_SCRYPT_MAXMEM, dklen=_HASH_BYTES
        )
        return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"
    raise ValueError(f"expected scheme 'pbkdf2_sha256' or 'scrypt', got {scheme!r}")


def _parse(encoded: str) -> tuple[str, tuple[int, ...], bytes, bytes]:
    """(scheme, cost parameters, salt, digest); ValueError with the expected format otherwise."""
    fields = encoded.strip().split("$")
    try:
        if fields[0] == "pbkdf2_sha256" and len(fields) == 4:
            iterations = int(fields[1])
            if not 1 <= iterations <= _MAX_ITERATIONS:
                raise ValueError(f"expected 1..{_MAX_ITERATIONS} iterations, got {iterations}")
            return fields[0], (iterations,), _unb64(fields[2]), _unb64(fields[3])
        if fields[0] == "scrypt" and len(fields) == 6:
            n, r, p = int(fields[1]), int(fields[2]), int(fields[3])
            fits = 128 * r * (n + p + 2) <= _SCRYPT_MAXMEM
            if not (2 <= n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16 and fits):
                raise ValueError(
                    "expected scrypt n a power of two up to 2**20, r 1..32, p 1..16 within 256 MiB, "
                    f"got {n}/{r}/{p}"
                )
            return fields[0], (n, r, p), _unb64(fields[4]), _unb64(fields[5])
    except (binascii.Error, ValueError) as exc:
        if "expected" in str(exc):
            raise
        raise ValueError(
            f"expected a password hash from 'espdetect hash-password', got a malformed one ({exc})"
        ) from None
    raise ValueError(
        "expected a password hash 'pbkdf2_sha256$ITERATIONS$SALT$HASH' or 'scrypt$N$R$P$SALT$HASH' "
        f"(espdetect hash-password), got one starting with {fields[0][:20]!r}"
    )


def check_password_hash_format(encoded: str) -> None:
    """Raise ValueError (saying what is expected) unless ``encoded`` is a hash `verify_password` reads."""
    _, _, salt, digest = _parse(encoded)
    if not salt or len(digest) < 16:
        raise ValueError("expected a salt and a hash of at least 16 bytes in the password hash, got less")


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded`` (blocking: up to a second of CPU by design).

    A malformed ``encoded`` never matches.
    """
    try:
        scheme, params, salt, expected = _parse(encoded)
    except ValueError:
        return False
    secret = password.encode("utf-8", errors="surrogatepass")
    if scheme == "pbkdf2_sha256":
        actual = hashlib.pbkdf2_hmac("sha256", secret, salt, params[0], len(expected))
    else:
        n, r, p = params
        try:
            actual = hashlib.scrypt(
                secret, salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=len(expected)
            )
        except (ValueError, MemoryError):  # parameters beyond what this machine allows
            return False
    return hmac.compare_digest(actual, expected)


def new_token() -> str:
    """A random bearer token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The SHA-256 of ``token`` in hex: what ``auth_token_hash`` holds.

    Example:
        >>> hash_token("abc")[:16]
        'ba7816bf8f01cfea'
    """
    return hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).hexdigest()


def verify_token(token: str, token_hash: str) -> bool:
    """Whether ``token`` hashes to ``token_hash`` (constant-time comparison)."""
    return hmac.compare_digest(hash_token(token).encode("ascii"), token_hash.strip().lower().encode("ascii"))
