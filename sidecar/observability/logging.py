"""The sidecar's log: one JSON object per line, credentials masked as a last guard.

    {"time": "2026-11-23T10:00:00.123Z", "level": "info", "logger": "mirapi",
     "message": "listening on http://127.0.0.1:8742"}
    {"time": "...", "level": "info", "logger": "mirapi.access",
     "request_id": "...", "method": "POST", "host": "api.stripe.com", "status": 200, ...}

A message that is itself a JSON object (the access log's is) is merged into
the line rather than encoded twice; `time`, `level` and `logger` win over
fields of the same name. An exception's traceback goes into `exc`.

Code must never log a body or a credential in the first place (SPEC §8).
`RedactionFilter` is the net under that rule: it masks the values of
credential headers (`Authorization`, `X-MirApi-Key`, `Cookie`, ...) however
they are spelled (`Name: value`, JSON, a dict's or a header tuple's repr)
and runs of 12-19 digits that could be card numbers, in messages and
tracebacks alike. It sits on the handler, not on a logger, so records from
every library that propagates to the root pass through it.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

MASK = "[redacted]"

# Header (and field) names whose values are credentials. Compared
# case-insensitively; `_` and `-` spellings both count.
SENSITIVE_NAMES = (
    "proxy-authorization",
    "authorization",
    "x-mirapi-key",
    "x-proxy-master-key",
    "x-identity-key",
    "set-cookie",
    "cookie",
    "x-api-key",
    "api-key",
)

_NAME = "|".join(re.escape(name).replace("\\-", "[-_]") for name in SENSITIVE_NAMES)
_CREDENTIAL = re.compile(
    rf"""
    (?P<key>
        (?P<quote>["']?)(?<![\w-])(?:{_NAME})(?![\w-])(?P=quote)
        \s*(?:[:=]|(?<=["'])\s*,)\s*      # `: ` or `=`; `, ` only after a quoted name
        (?:b(?=["']))?                   # the repr of bytes: b'...'
    )
    (?P<value>
        "(?:[^"\\]|\\.)*"                  # a double-quoted string, escapes allowed
      | '(?:[^'\\]|\\.)*'                  # a single-quoted one
      | \[[^\]]*\]                         # a list of values
      | [^\r\n"'}}\],]+                    # a bare value, up to the end of the field
    )
    """,
    re.IGNORECASE | re.VERBOSE,
)
# 12-19 digits, optionally grouped by single spaces or dashes (the PCI guard's
# shape), not part of a longer word: a UUID's last group or a hex id is left be.
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-])")

_EXCEPTION_FORMATTER = logging.Formatter()


def redact(text: str) -> str:
    """`text` with credential values and possible card numbers masked."""
    text = _CREDENTIAL.sub(_mask_credential, text)
    return _CARD.sub(MASK, text)


def _mask_credential(match: re.Match[str]) -> str:
    value = match["value"]
    # Keep the quoting so a masked JSON message is still JSON.
    if value[0] in "\"'":
        return f"{match['key']}{value[0]}{MASK}{value[0]}"
    if value[0] == "[":
        return f'{match["key"]}"{MASK}"'
    return f"{match['key']}{MASK}"


class RedactionFilter(logging.Filter):
    """Masks credentials and card-like numbers in every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Format once here, so the formatter and every handler see the result.
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, then the message's fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = _json_object(message)
        if fields is None:
            entry["message"] = message
        else:
            entry.update((key, value) for key, value in fields.items() if key not in entry)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry).decode()


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_object(message: str) -> dict[str, Any] | None:
    if not message.startswith("{"):
        return None
    try:
        value = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def setup_logging(level: str | int = "info", stream: TextIO | None = None) -> logging.Handler:
    """Send every log record to `stream` (default stderr) as redacted JSON lines.

    Replaces the root logger's handlers, so calling it twice does not log
    twice. Returns the handler (tests read from it, or remove it).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactionFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # warnings.warn() from libraries becomes a JSON line too, not free text.
    logging.captureWarnings(True)
    return handler


class AccessLog:
    """The per-request JSON line, written straight to the log stream.

    The hot path cannot afford the logging module's records, filters and the
    redaction regexes (about 140 µs a request, measured): the fields are built
    from safe values by the caller, and the one field a client chooses (the
    request id) is checked for card-like digits here. Falls back to the
    `mirapi.access` logger when no stream handler is set up.
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._logger = logging.getLogger("mirapi.access")

    @classmethod
    def from_root(cls) -> AccessLog:
        """Write where the root logger's first stream handler writes."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.formatter is not None:
                return cls(handler.stream)
        return cls(None)

    def write(self, fields: dict[str, Any]) -> None:
        """One line for one request; `fields` must hold no body or credential."""
        request_id = fields.get("request_id")
        if isinstance(request_id, str) and _CARD.search(request_id):
            fields["request_id"] = MASK
        if self._stream is None:
            if self._logger.isEnabledFor(logging.INFO):
                self._logger.info(orjson.dumps(fields).decode())
            return
        line = {"time": _timestamp(time.time()), "level": "info", "logger": "mirapi.access"}
        line.update(fields)
        try:
            self._stream.write(orjson.dumps(line).decode() + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full log must never fail a request
