"""Request headers parsed once, at the edge, into a typed frozen policy.

Stages read typed fields and never raw header strings. A bad value raises
`BadHeader(name, reason)` here, so the client learns exactly which header is
wrong and nothing is silently ignored (SPEC §2).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sidecar import bounded
from sidecar.durations import parse_duration
from sidecar.errors import BadHeader

MAX_RETRIES = 10
#: Each backoff delay, and each honoured Retry-After, is capped here (SPEC §2.6).
RETRY_DELAY_CAP = 10.0
DEFAULT_RETRY_DELAY = 0.2

#: Envoy's retry-on words that SPEC §2.6 names; bare status codes are allowed too.
RETRY_CONDITIONS = frozenset({"5xx", "gateway-error", "429", "connect-failure", "reset", "timeout"})
DEFAULT_RETRY_ON = RETRY_CONDITIONS


@dataclass(frozen=True, slots=True)
class RetryOn:
    """Which outcomes are worth another attempt."""

    conditions: frozenset[str] = DEFAULT_RETRY_ON
    statuses: frozenset[int] = frozenset()

    def status_is_retryable(self, status: int) -> bool:
        """True when `status` matches a condition: 5xx except 501, 429, or a listed code."""
        if status in self.statuses:
            return True
        if status == 429:
            return "429" in self.conditions
        if status in (502, 503, 504) and "gateway-error" in self.conditions:
            return True
        return 500 <= status <= 599 and status != 501 and "5xx" in self.conditions

    def failure_is_retryable(self, kind: str) -> bool:
        """`kind` is one of connect-failure, reset, timeout."""
        return kind in self.conditions


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """`X-Smart-Cache: TTL[; serve-fresh]`: keep 2xx answers to rescue failures."""

    ttl: float
    #: Answer from a fresh entry without calling the upstream at all.
    serve_fresh: bool = False


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """`X-Circuit-Breaker: on[; threshold=N][; cooldown=D]`, per upstream host."""

    threshold: int = 5
    cooldown: float = 30.0


#: How long an in-flight idempotency lock lives unless renewed (SPEC §2.3).
DEFAULT_IDEMPOTENCY_LOCK_TTL = 60.0


#: How long a background job's runs are retried unless told (SPEC §5).
DEFAULT_WEBHOOK_RETRY_FOR = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """Everything the proxy headers asked for, typed and validated."""

    target_url: str | None = None
    route_key: str | None = None
    retry_count: int = 0
    retry_delay: float = DEFAULT_RETRY_DELAY
    retry_on: RetryOn = field(default_factory=RetryOn)
    timeout: float = 30.0
    deadline: float | None = None
    failover_urls: tuple[str, ...] = ()
    idempotency_key: str | None = None
    #: X-Idempotency-TTL: the in-flight lock's lifetime when its holder dies.
    idempotency_lock_ttl: float = DEFAULT_IDEMPOTENCY_LOCK_TTL
    #: X-Idempotency-Wait: off answers a duplicate in flight with 409 at once.
    idempotency_wait: bool = True
    smart_cache: CachePolicy | None = None
    circuit_breaker: BreakerPolicy | None = None
    request_id: str | None = None
    extract: str | None = None
    debug: bool = False
    #: X-Proxy-Record: on/off records this request's body for replay; None: the config.
    record: bool | None = None
    #: X-Webhook-Callback: run in the background, POST the outcome here (SPEC §5).
    webhook_callback: str | None = None
    #: X-Webhook-Retry-For: how long a background job's runs are retried.
    webhook_retry_for: float = DEFAULT_WEBHOOK_RETRY_FOR
    #: X-LLM-Provider: the LLM API X-Target-URL (and X-Failover-URL) speak (SPEC §10).
    llm_provider: str | None = None
    #: X-LLM-First-Token-Timeout: a stream with no content by then is failed over.
    llm_first_token_timeout: float | None = None


def parse_target_url(header: str, value: str) -> str:
    """An absolute http(s) URL with a host name or IP literal, or BadHeader naming `header`.

    Checked before any name lookup, and strictly enough that every parser
    on the way (urllib's, httpx's, aiohttp's) reads the same host from it.
    """
    value = value.strip(" \t")
    problem = url_problem(value)
    if problem is not None:
        raise BadHeader(header, problem)
    return value


#: Characters no URL may hold anywhere: urllib silently drops TAB, CR and LF
#: (so a check of its parts passes) while httpx refuses them; a backslash is
#: a slash to browsers and not to urllib.
_NEVER_IN_URL = re.compile(r"[\x00-\x20\x7f\\]")
#: RFC 3986 userinfo: a second '@' or a '/' would let parsers disagree on the host.
_USERINFO = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:]*")
#: A host name: dot-separated labels of letters, digits, '-' and '_', with an
#: optional final dot. Dotted IPv4 (and its odd spellings, which the egress
#: policy reads as libc does) is a host name by this rule.
_HOST_NAME = re.compile(r"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?")
_PORT = re.compile(r"[0-9]{1,5}")


@bounded.memoize(bounded.text_cost(1))
def url_problem(url: str) -> str | None:
    """Why `url` is no usable absolute http(s) target URL, or None when it is.

    Cached: an app calls the same few URLs over and over, and a request's
    X-Target-URL is checked on every request.
    """
    bad = _NEVER_IN_URL.search(url)
    if bad is not None:
        return f"the URL holds {_shown_char(bad.group())}, which no URL may hold"
    if "#" in url:
        # It would swallow the request path and query joined after it.
        return "the URL must not have a #fragment"
    if not url.isascii():
        # A URL is ASCII (RFC 3986); it is shown in headers and logs as it is.
        return (
            "the URL is not ASCII: percent-encode the path and query, and write"
            " the host in its xn-- form with digits 0-9"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not url.partition(":")[2].startswith("//"):
        return "must be an absolute http:// or https:// URL"
    userinfo, _, host_port = parts.netloc.rpartition("@")
    if not _USERINFO.fullmatch(userinfo):
        return "the URL's user:password part holds characters a URL may not"
    host, port = _split_host_port(host_port)
    if not host:
        return "the URL has no host"
    host_problem = _host_problem(host)
    if host_problem is not None:
        return host_problem
    if port is not None and not (_PORT.fullmatch(port) and int(port) <= 65535):
        return "the URL's port is not a number from 0 to 65535"
    return None


def _split_host_port(host_port: str) -> tuple[str, str | None]:
    """`host[:port]` or `[v6][:port]` as (host, port or None); brackets kept."""
    if host_port.startswith("["):
        end = host_port.find("]")
        if end < 0:
            return host_port, None
        host, rest = host_port[: end + 1], host_port[end + 1 :]
        if not rest:
            return host, None
        return (host, rest[1:]) if rest.startswith(":") else (host_port, None)
    host, sep, port = host_port.partition(":")
    return host, (port if sep else None)


def _host_problem(host: str) -> str | None:
    """Why `host` is neither a host name nor an IP literal, or None."""
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1] if host.endswith("]") else "?")
        except ValueError:
            return "the URL's host is not a valid IPv6 literal in [brackets]"
        if "%" in host:
            return "the URL's host must not hold a zone id or percent-encoding"
        return None
    if len(host) > 254 or not _HOST_NAME.fullmatch(host):
        return (
            "the URL's host is not a valid host name or IP address"
            " (letters, digits, '-', '.'; no percent-encoding)"
        )
    return None


def _shown_char(char: str) -> str:
    names = {" ": "a space", "\t": "a TAB", "\\": "a backslash"}
    return names.get(char, f"the control character {char!r}")


def _duration(header: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise BadHeader(header, str(exc)) from None


def _positive_duration(header: str, value: str) -> float:
    seconds = _duration(header, value)
    if seconds <= 0:
        raise BadHeader(header, "must be longer than zero")
    return seconds


def _retry_count(header: str, value: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_RETRIES:
        raise BadHeader(header, f"{value!r} is not a whole number from 0 to {MAX_RETRIES}")
    return int(text)


def _retry_on(header: str, value: str) -> RetryOn:
    conditions: set[str] = set()
    statuses: set[int] = set()
    for word in (w.strip().lower() for w in value.split(",")):
        if word in RETRY_CONDITIONS:
            conditions.add(word)
        elif word.isascii() and word.isdigit() and 100 <= int(word) <= 599:
            statuses.add(int(word))
        else:
            known = ", ".join(sorted(RETRY_CONDITIONS))
            raise BadHeader(header, f"{word!r} is not one of {known} or a status code")
    return RetryOn(frozenset(conditions), frozenset(statuses))


def _failover(header: str, value: str) -> tuple[str, ...]:
    urls = tuple(parse_target_url(header, u) for u in value.split(",") if u.strip())
    if not urls:
        raise BadHeader(header, "give one URL or a comma-separated list")
    return urls


def _switch(header: str, value: str) -> bool:
    word = value.strip().lower()
    if word in ("on", "true", "1", "yes"):
        return True
    if word in ("off", "false", "0", "no"):
        return False
    raise BadHeader(header, f"{value!r} is not on or off")


def is_token(text: str) -> bool:
    """1 to 255 printable ASCII characters: an id the sidecar may echo and store."""
    return 0 < len(text) <= 255 and text.isascii() and text.isprintable()


def _token(header: str, value: str) -> str:
    text = value.strip()
    if not is_token(text):
        raise BadHeader(header, "must be 1 to 255 printable ASCII characters")
    return text


def _json_pointer(header: str, value: str) -> str:
    if value and not value.startswith("/"):
        raise BadHeader(header, "a JSON pointer (RFC 6901) starts with '/'")
    return value


def _parameters(header: str, value: str) -> tuple[str, dict[str, str]]:
    """`head; name=value; flag` split into the head and a parameter map."""
    head, *rest = (part.strip() for part in value.split(";"))
    params: dict[str, str] = {}
    for part in rest:
        if not part:
            continue
        name, sep, arg = part.partition("=")
        name = name.strip().lower()
        if name in params:
            raise BadHeader(header, f"{name!r} is given twice")
        params[name] = arg.strip() if sep else ""
    return head, params


def _smart_cache(header: str, value: str) -> CachePolicy | None:
    head, params = _parameters(header, value)
    if head.lower() == "off" and not params:
        return None
    ttl = _positive_duration(header, head)
    for name in params:
        if name != "serve-fresh":
            raise BadHeader(header, f"unknown parameter {name!r} (known: serve-fresh)")
    if params.get("serve-fresh", ""):
        raise BadHeader(header, "serve-fresh takes no value")
    return CachePolicy(ttl=ttl, serve_fresh="serve-fresh" in params)


def _circuit_breaker(header: str, value: str) -> BreakerPolicy | None:
    head, params = _parameters(header, value)
    if not _switch(header, head):
        if params:
            raise BadHeader(header, "parameters need the breaker on")
        return None
    threshold, cooldown = 5, 30.0
    for name, arg in params.items():
        if name == "threshold":
            if not (arg.isascii() and arg.isdigit()) or not 1 <= int(arg) <= 1000:
                raise BadHeader(header, f"threshold {arg!r} is not a whole number from 1 to 1000")
            threshold = int(arg)
        elif name == "cooldown":
            cooldown = _positive_duration(header, arg)
        else:
            raise BadHeader(header, f"unknown parameter {name!r} (known: threshold, cooldown)")
    return BreakerPolicy(threshold=threshold, cooldown=cooldown)


#: The LLM wire formats an upstream may speak (SPEC §10).
LLM_PROVIDERS = ("openai", "anthropic")


def _llm_provider(header: str, value: str) -> str:
    provider = value.strip().lower()
    if provider not in LLM_PROVIDERS:
        raise BadHeader(header, f"{value.strip()[:40]!r} is not one of {', '.join(LLM_PROVIDERS)}")
    return provider


#: Each header the policy reads, as it is spelled in messages, with its
#: policy field and parser. One line per header.
_HEADERS = (
    ("X-Target-URL", "target_url", parse_target_url),
    ("X-Route-Key", "route_key", _token),
    ("X-Retry-Count", "retry_count", _retry_count),
    ("X-Retry-Delay", "retry_delay", _duration),
    ("X-Retry-On", "retry_on", _retry_on),
    ("X-Timeout", "timeout", _positive_duration),
    ("X-Deadline", "deadline", _positive_duration),
    ("X-Failover-URL", "failover_urls", _failover),
    # The standard header (what Stripe's SDKs send) is an explicit key too;
    # X-Proxy-Idempotency-Key, read after it, wins when both are sent. It is
    # still forwarded upstream as it came.
    ("Idempotency-Key", "idempotency_key", _token),
    ("X-Proxy-Idempotency-Key", "idempotency_key", _token),
    ("X-Idempotency-TTL", "idempotency_lock_ttl", _positive_duration),
    ("X-Idempotency-Wait", "idempotency_wait", _switch),
    ("X-Smart-Cache", "smart_cache", _smart_cache),
    ("X-Circuit-Breaker", "circuit_breaker", _circuit_breaker),
    ("X-Request-ID", "request_id", _token),
    ("X-Extract", "extract", _json_pointer),
    ("X-Proxy-Debug", "debug", _switch),
    ("X-Proxy-Record", "record", _switch),
    ("X-Webhook-Callback", "webhook_callback", parse_target_url),
    ("X-Webhook-Retry-For", "webhook_retry_for", _positive_duration),
    ("X-LLM-Provider", "llm_provider", _llm_provider),
    ("X-LLM-First-Token-Timeout", "llm_first_token_timeout", _positive_duration),
)
_PARSERS = {display.lower(): (display, field, parse) for display, field, parse in _HEADERS}


def parse_policy(headers: dict[str, str], default_timeout: float = 30.0) -> RequestPolicy:
    """Build the policy from `headers` (lower-case names, first value wins).

    Only headers the policy knows are read; the rest are left to the stages
    that forward them. Raises BadHeader on the first bad value. Values are
    text (the door decoded them as UTF-8); ids and keys must be ASCII, numbers
    ASCII digits, and a URL's host ASCII.
    """
    values: dict[str, object] = {"timeout": default_timeout}
    for name, (display, field_name, parser) in _PARSERS.items():
        raw = headers.get(name)
        if raw is not None:
            values[field_name] = parser(display, raw)
    return RequestPolicy(**values)  # type: ignore[arg-type]
