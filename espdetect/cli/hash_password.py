"""``espdetect hash-password``: the hashes that turn on the server's authentication.

Prints a line to paste into the TOML config (or to export as an environment variable); the
password or token itself is never stored anywhere by espdetect.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from espdetect.cli._command import Command
from espdetect.exceptions import ConfigurationError

__all__ = ["COMMAND", "run"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scheme",
        choices=("pbkdf2_sha256", "scrypt"),
        default="pbkdf2_sha256",
        help="password hash (default pbkdf2_sha256, 600000 iterations)",
    )
    parser.add_argument("--stdin", action="store_true", help="read the password from the first line of stdin")
    parser.add_argument(
        "--token", action="store_true", help="generate a bearer token instead of hashing a password"
    )


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat: "):
            raise ConfigurationError(
                "expected the same password twice, got two that differ", field="password"
            )
    if not password:
        raise ConfigurationError("expected a non-empty password, got an empty one", field="password")
    return password


def run(args: argparse.Namespace) -> int:
    """Print the hash (and the token, for --token).

    Raises:
        ConfigurationError: the password is empty, or typed differently the second time.
    """
    from espdetect.server.passwords import hash_password, hash_token, new_token

    if args.token:
        token = new_token()
        print(f"token (give to clients as 'Authorization: Bearer ...'): {token}")
        print(f'auth_token_hash = "{hash_token(token)}"')
        return 0
    print(f'auth_password_hash = "{hash_password(_read_password(args.stdin), args.scheme)}"')
    return 0


COMMAND = Command(
    name="hash-password",
    help="hash a password (auth_password_hash) or make a bearer token (auth_token_hash)",
    description=(
        "Print auth_password_hash for a password typed at the prompt (or read from stdin with "
        "--stdin), or with --token generate a random bearer token and print it with its "
        "auth_token_hash. Put the hash in the server's TOML file or in ESPDETECT_AUTH_PASSWORD_HASH / "
        "ESPDETECT_AUTH_TOKEN_HASH."
    ),
    add_arguments=_add_arguments,
    run=run,
)
