"""Reading secret values and passphrases so they never reach argv, history or the screen.

    value       stdin when it is piped; a hidden prompt when it is a terminal
    passphrase  $MIRAPI_MASTER_KEY; else a hidden prompt (on the terminal,
                even when stdin is piped); else, where allowed, one line
                of stdin (how a detached sidecar receives it)

A hidden prompt needs a terminal: stdin itself, or stderr together with
/dev/tty (so `cat key | mirapi secrets add ...` still prompts for the
passphrase). Without one, and without the variable, the command stops and
says to set it. Nothing read here is ever echoed, logged or put in an error.
"""

from __future__ import annotations

import getpass
import os
import sys

from mirapi_cli.errors import CliError

MASTER_KEY_ENV = "MIRAPI_MASTER_KEY"
NEW_MASTER_KEY_ENV = "MIRAPI_NEW_MASTER_KEY"
#: A new passphrase shorter than this is refused (the KDF slows guessing; it cannot fix "1234").
MIN_PASSPHRASE_CHARS = 8


def can_prompt() -> bool:
    """Whether a hidden prompt can reach the user."""
    if sys.stdin.isatty():
        return True
    if not sys.stderr.isatty():
        return False
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def prompt_hidden(prompt: str) -> str:
    """Ask without echo (getpass talks to the terminal itself)."""
    try:
        return getpass.getpass(prompt, stream=sys.stderr)
    except EOFError:
        raise CliError("nothing was typed") from None


def read_value(what: str = "secret value") -> str:
    """A secret value: piped on stdin, or typed at a hidden prompt; surrounding blanks dropped."""
    if sys.stdin.isatty():
        value = prompt_hidden(f"{what.capitalize()}: ")
    else:
        value = sys.stdin.read()
    value = value.strip()
    if not value:
        raise CliError(f"no {what} given: pipe it on stdin, or type it at the prompt")
    return value


def read_passphrase(
    *,
    env: str = MASTER_KEY_ENV,
    label: str = "passphrase",
    confirm: bool = False,
    stdin_line: bool = False,
) -> str:
    """The passphrase from `env`, a hidden prompt (twice with `confirm`), or one stdin line."""
    value = os.environ.get(env)
    if value:
        return value
    if can_prompt():
        value = prompt_hidden(f"{label.capitalize()}: ")
        if confirm and value and prompt_hidden(f"{label.capitalize()} again: ") != value:
            raise CliError(f"the two {label}s typed differ; nothing was changed")
    elif stdin_line:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        raise CliError(f"no {label}: set ${env}, or run this on a terminal to be asked for it")
    if not value:
        raise CliError(f"the {label} is empty")
    return value


def check_new_passphrase(value: str, label: str = "passphrase") -> str:
    """A passphrase fit to encrypt with; refused (never quoted) otherwise."""
    if len(value) < MIN_PASSPHRASE_CHARS:
        raise CliError(f"the {label} is too short: use at least {MIN_PASSPHRASE_CHARS} characters")
    if value != value.strip():
        # HTTP drops blanks around header values: X-Proxy-Master-Key could never match.
        raise CliError(f"the {label} may not start or end with a space")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in value):
        raise CliError(f"the {label} may not hold control characters")
    return value
