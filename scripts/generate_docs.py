"""Generate shell completions, man pages and the command reference from the CLI.

    python scripts/generate_docs.py          # rewrite completions/, man/, docs/commands.md
    python scripts/generate_docs.py --check  # change nothing; exit 1 naming stale files

Run it from anywhere after changing a command, an option or a help text, and
commit what it writes: tests/test_generated.py regenerates everything in
memory and fails while a committed file differs.

What comes from where:

- completions/mirapi.bash, completions/_mirapi, completions/mirapi.fish:
  the scripts in `mirapi_cli.commands.completion.SCRIPTS`, byte for byte (the
  one source; `mirapi completion show` prints the same text from the package).
  They call back into `mirapi` on every TAB, so they hold no command list.
- man/mirapi.1 and man/mirapi-NAME.1, one per top-level command or group:
  roff built by walking the Click command tree Typer builds
  (`typer.main.get_command(app)`), every option of every command. Typer 0.29
  bundles its own copy of Click, so tools such as click-man see nothing.
  EXAMPLES, the extra DESCRIPTION paragraphs and the shared ENVIRONMENT,
  FILES and EXIT STATUS text are written by hand below, as data.
- docs/commands.md: the same tree as Markdown.

Output is deterministic (no dates; the version comes from `sidecar.__version__`),
so running the script twice changes nothing. A man page whose command is gone
is deleted; nothing outside completions/, man/ and docs/commands.md is touched.
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    # Run as `python scripts/generate_docs.py`: sys.path[0] is scripts/.
    sys.path.insert(0, str(REPO))

import typer  # noqa: E402

from mirapi_cli.commands.completion import FILE_NAMES, SCRIPTS  # noqa: E402
from mirapi_cli.commands.curl import CurlExit  # noqa: E402
from mirapi_cli.errors import ExitCode  # noqa: E402
from mirapi_cli.main import app  # noqa: E402
from sidecar import __version__  # noqa: E402
from sidecar.config import KEYS, env_var  # noqa: E402

PROG = "mirapi"
MAN_DIR = "man"
COMPLETIONS_DIR = "completions"
COMMANDS_MD = "docs/commands.md"


# --- the command tree, as plain data ---


@dataclass(frozen=True)
class Param:
    """One argument or option, as the pages show it."""

    is_option: bool
    opts: tuple[str, ...]  # ("-X", "--request"); an argument: ()
    secondary: tuple[str, ...]  # the off switch of an --x/--no-x flag
    value: str | None  # the placeholder: "URL", "N"; None for a flag
    help: str
    notes: tuple[str, ...]  # "required", "default: 20", "at least 0", "env: ..."
    required: bool
    repeatable: bool


@dataclass(frozen=True)
class Command:
    """A command or group: its words after `mirapi`, help, parameters and subcommands."""

    path: tuple[str, ...]  # ("mirapi", "routes", "add")
    help: str
    params: tuple[Param, ...]
    subcommands: tuple[Command, ...] = field(default=())

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def is_group(self) -> bool:
        return bool(self.subcommands)

    @property
    def summary(self) -> str:
        """The first paragraph of the help, on one line."""
        paragraphs = help_paragraphs(self.help)
        return paragraphs[0][1] if paragraphs else ""

    @property
    def arguments(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if not p.is_option)

    @property
    def options(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.is_option)

    def synopsis(self) -> list[str]:
        """Usage words after the path: `NAME --endpoint URL... [OPTIONS]` (as SPEC §9 writes)."""
        words = [_usage(p) for p in self.arguments]
        words += [_usage(p) for p in self.options if p.required]
        if any(not p.required and not _is_help(p) for p in self.options):
            words.append("[OPTIONS]")
        if self.is_group:
            words.append("COMMAND [ARGS]...")
        return words

    def walk(self) -> Iterable[Command]:
        """This command, then every command below it, in help order."""
        yield self
        for sub in self.subcommands:
            yield from sub.walk()


def _usage(param: Param) -> str:
    if param.is_option:
        text = param.opts[-1] + (f" {param.value}" if param.value else "")
        return text + ("..." if param.repeatable else "")
    text = param.value or ""
    if text.startswith("[") or text.endswith("..."):
        return text  # the metavar already says it is optional or repeated
    text += "..." if param.repeatable else ""
    return text if param.required else f"[{text}]"


def command_tree() -> Command:
    """`mirapi`'s commands, read from the Click tree Typer builds for `app`."""
    root = typer.main.get_command(app)
    return _read(root, (PROG,), root.context_class(root, info_name=PROG))


def _read(command: Any, path: tuple[str, ...], ctx: Any) -> Command:
    params = tuple(_param(p, ctx) for p in command.get_params(ctx) if not p.hidden)
    subs: list[Command] = []
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = sub.context_class(sub, info_name=name, parent=ctx)
            subs.append(_read(sub, (*path, name), sub_ctx))
    return Command(path, _clean_help(command.help or ""), params, tuple(subs))


def _param(param: Any, ctx: Any) -> Param:
    is_option = param.param_type_name == "option"
    is_flag = is_option and (param.is_flag or param.count)
    repeatable = bool(param.multiple or param.nargs == -1 or (is_option and param.count))
    help_text = _clean_help(param.help or "")
    notes: list[str] = []
    if param.required:
        notes.append("required")
    if repeatable and is_option and "repeat" not in help_text.lower():
        notes.append("repeatable")
    default = _default_text(param, ctx)
    if default:
        notes.append(f"default: {default}")
    bounds = _range_text(getattr(param, "min", None), getattr(param, "max", None))
    if bounds:
        notes.append(bounds)
    if param.envvar:
        names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
        notes.append("env: " + ", ".join(names))
    return Param(
        is_option=is_option,
        opts=_short_first(param.opts) if is_option else (),
        secondary=tuple(param.secondary_opts),
        value=None if is_flag else _value_name(param),
        help=help_text,
        notes=tuple(notes),
        required=bool(param.required),
        repeatable=repeatable,
    )


def _short_first(opts: Sequence[str]) -> tuple[str, ...]:
    # `-n, --lines` as every man page writes it, whatever order the code used.
    return tuple(sorted(opts, key=lambda opt: (opt.startswith("--"), opts.index(opt))))


def _value_name(param: Any) -> str:
    if param.metavar:
        return str(param.metavar)
    descriptor = param.type_descriptor
    if descriptor.is_choice and descriptor.choices:
        return "{" + "|".join(_choice(c) for c in descriptor.choices) + "}"
    base = getattr(descriptor.annotation, "__args__", (descriptor.annotation,))[0]
    if base in (int, float):
        return "N"
    if base is Path:
        return "PATH"
    return str(param.name).upper()


def _choice(value: object) -> str:
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


def _default_text(param: Any, ctx: Any) -> str:
    shown = param.show_default
    if isinstance(shown, str):
        return shown
    default = param.default
    if not shown or callable(default) or default in (None, False, (), []):
        return ""
    if isinstance(default, list | tuple):
        return ", ".join(_choice(d) for d in default)
    return _choice(default)


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"at least {low}"
    if high is not None:
        return f"at most {high}"
    return ""


def _clean_help(text: str) -> str:
    # Click's convention: text after \f is for the code, not the user.
    return text.split("\f", 1)[0].strip()


def help_paragraphs(text: str) -> list[tuple[bool, str]]:
    """(preformatted, text) paragraphs: Click's `\\b` marks one not to rewrap."""
    out: list[tuple[bool, str]] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        if not block.strip():
            continue
        if block.startswith("\b"):
            out.append((True, block[1:].strip("\n")))
        else:
            out.append((False, " ".join(line.strip() for line in block.splitlines())))
    return out


# --- what the tree cannot tell: written by hand ---


@dataclass(frozen=True)
class Example:
    """A command line (or a few) and what it does."""

    what: str
    lines: tuple[str, ...]


def ex(what: str, *lines: str) -> Example:
    return Example(what, lines)


@dataclass(frozen=True)
class PageText:
    """Hand-written parts of one man page."""

    description: tuple[str, ...] = ()
    examples: tuple[Example, ...] = ()
    exit_status: tuple[tuple[str, str], ...] = ()  # codes of this command only
    environment: tuple[tuple[str, str], ...] = ()  # extra variables, after the common ones
    files: tuple[tuple[str, str], ...] = ()  # extra files, after the common ones
    see_also: tuple[str, ...] = ()  # pages outside mirapi's own


PAGES: Mapping[str, PageText] = {
    PROG: PageText(
        description=(
            "MirApi runs a sidecar beside each app, on localhost. The app changes only its "
            "base URL and adds headers (`X-Target-URL`, `X-Retry-Count`, `X-Timeout`, ...); "
            "the sidecar retries, fails over, answers from its smart cache, opens a circuit "
            "breaker and keeps idempotency keys, then forwards the call to the upstream.",
            "`mirapi` starts and stops the sidecar, defines routes, secrets and client keys, "
            "shows events, jobs and stats, and makes one-off resilient calls with "
            "`mirapi curl`. Every command finds its sidecar and store through `--data-dir` "
            "and `--config` (or `MIRAPI_DATA_DIR` and `MIRAPI_CONFIG`); commands that read "
            "the store also take `--redis URL` for sidecars that share state through Redis.",
            "Each command is described in its own page, listed under SEE ALSO; "
            "`mirapi COMMAND --help` shows its options.",
        ),
        examples=(
            ex(
                "Start the sidecar, then call an API through it with up to 3 retries:",
                "mirapi sidecar start",
                "curl -i http://127.0.0.1:8742/v1/items \\",
                "  -H 'X-Target-URL: https://api.example.com' -H 'X-Retry-Count: 3'",
            ),
            ex(
                "A one-off resilient call, no sidecar needed:",
                "mirapi curl https://api.example.com/health --retry 3 --timeout 5s -v",
            ),
            ex("Watch what the sidecar rescues:", "mirapi events tail -f"),
        ),
        see_also=("curl(1)",),
    ),
    "sidecar": PageText(
        description=(
            "`start` runs the sidecar detached, writing its pid and address to `sidecar.json` "
            "and its log to `sidecar.log` in the data dir, so that `status`, `stop`, `logs`, "
            "`mirapi replay` and `mirapi curl --via running` need no address. With "
            "`--foreground` it serves in this process and logs to stderr, as a service "
            "manager or a container expects.",
            "`stop` sends SIGTERM, lets requests in flight finish for the grace period, then "
            "sends SIGKILL; stopping a sidecar that does not run is not an error. `status` "
            "exits 0 when the sidecar runs and 3 when it does not.",
        ),
        examples=(
            ex("Start on the default address, 127.0.0.1:8742:", "mirapi sidecar start"),
            ex(
                "Serve in the foreground, sharing state with other sidecars through Redis:",
                "mirapi sidecar start --foreground --listen 0.0.0.0:8742 \\",
                "  --redis redis://redis:6379/0",
            ),
            ex(
                "Keep the secrets' passphrase in the sidecar's memory:",
                "mirapi sidecar start --unlock",
            ),
            ex(
                "Is it running? Follow its log; stop it:",
                "mirapi sidecar status --json",
                "mirapi sidecar logs -f",
                "mirapi sidecar stop",
            ),
        ),
        exit_status=((str(int(ExitCode.NOT_RUNNING)), "`status`: no sidecar runs."),),
    ),
    "curl": PageText(
        description=(
            "Takes curl's everyday flags with curl's meaning and exit codes (docs/curl.md). "
            "Runs the sidecar's pipeline in this process (no sidecar and no egress policy "
            "needed: you typed the URL; a `-L` hop to another host goes through the "
            "config's policy), or through a running sidecar with `--via`. With "
            "`--route NAME` the call goes to a stored route and URL is the path and query to "
            "append to its endpoints.",
            "The body goes to stdout (or the `-o` file) as it arrives; notes, `-v` attempt "
            "lines and the retry spinner go to stderr. Exit codes follow curl's where curl "
            "has one.",
        ),
        examples=(
            ex(
                "Retry a flaky endpoint with backoff, showing each attempt:",
                "mirapi curl https://api.example.com/health \\",
                "  --retry 3 --retry-delay 200ms --timeout 5s -v",
            ),
            ex(
                "A POST that is safe to retry:",
                "mirapi curl https://api.example.com/items -X POST -d @item.json \\",
                "  --idempotency-key item-42",
            ),
            ex(
                "Fall back to a backup URL, and to the last good answer:",
                "mirapi curl https://api.example.com/v1/prices \\",
                "  --failover https://backup.example.com/v1/prices --smart-cache 5m",
            ),
            ex("Call a stored route:", "mirapi curl --route stripe /v1/balance"),
            ex(
                "Send through the sidecar running on this data dir:",
                "mirapi curl https://api.example.com/health --via running",
            ),
        ),
        exit_status=(
            (str(int(CurlExit.BAD_URL)), "The URL is malformed."),
            (str(int(CurlExit.RESOLVE)), "The upstream host could not be resolved."),
            (str(int(CurlExit.CONNECT)), "The upstream could not be reached."),
            (str(int(CurlExit.HTTP_ERROR)), "With `-f`: the answer had an HTTP error status."),
            (str(int(CurlExit.WRITE_ERROR)), "The body could not be written."),
            (str(int(CurlExit.READ_ERROR)), "A -F file could not be read."),
            (str(int(CurlExit.TIMEOUT)), "A time limit ran out (-m, --deadline, ...)."),
            (str(int(CurlExit.TOO_MANY_REDIRECTS)), "With -L: more redirects than --max-redirs."),
            (str(int(CurlExit.TLS_VERIFY)), "The TLS certificate did not verify (see -k)."),
        ),
        see_also=("curl(1)",),
    ),
    "replay": PageText(
        description=(
            "Reads the record of a request the sidecar served (by its `X-Request-ID`) from "
            "the store and sends it again through the running sidecar, so the replay gets "
            "the whole pipeline. `-H 'Name: value'` replaces every recorded header of that "
            "name (`-H 'Name:'` removes it). A record holds no credentials: add them with "
            "`-H`; a note on stderr names each one the original carried.",
        ),
        examples=(
            ex(
                "Look at a record without sending it:",
                "mirapi replay 9f2c4e1a7b3d5f60 --show",
            ),
            ex(
                "Send it again with more retries, to a staging upstream:",
                "mirapi replay 9f2c4e1a7b3d5f60 -H 'X-Retry-Count: 3' \\",
                "  --target https://staging.example.com",
            ),
        ),
    ),
    "dashboard": PageText(
        description=(
            "Finds the sidecar running on the data dir (its state file) and opens its live "
            "dashboard, `/_mirapi/ui`, with the system's browser (`$BROWSER` is honoured); "
            "where none can be opened, and with `--print`, prints the URL instead. Once "
            "client keys exist the page asks for one (docs/dashboard.md).",
        ),
        examples=(
            ex("Open the dashboard:", "mirapi dashboard"),
            ex("Print its URL, to open elsewhere:", "mirapi dashboard --print"),
        ),
        exit_status=((str(int(ExitCode.NOT_RUNNING)), "No sidecar runs on the data dir."),),
    ),
    "stats": PageText(
        description=(
            "Counts live in the store in hourly buckets, so `--since` is rounded to the "
            "hour; without it, every bucket the store keeps is counted. Rescued capital is "
            "summed per currency, in minor units.",
        ),
        examples=(
            ex("Everything kept, as a table:", "mirapi stats"),
            ex("The last day, for a script:", "mirapi stats --since 24h --json"),
        ),
    ),
    "routes": PageText(
        description=(
            "A route names an upstream: its endpoints, in order, and the default policy for "
            "calls to it. Apps use it with `X-Route-Key: NAME` or the path "
            "`/r/NAME/...`. Routes live in the store, so these commands work whether or not "
            "a sidecar runs, and running sidecars pick changes up by themselves. A definition "
            "is checked whole before anything is written.",
        ),
        examples=(
            ex(
                "A route with a backup endpoint and default retries:",
                "mirapi routes add stripe --endpoint https://api.stripe.com \\",
                "  --endpoint https://stripe-backup.example.com --retry 2 --timeout 10s",
            ),
            ex(
                "Race two providers, with a secret injected upstream:",
                "mirapi routes add llm --endpoint https://api.example-llm.com \\",
                "  --endpoint https://llm-backup.example.com --strategy race \\",
                "  --secret llm",
            ),
            ex("List them for a script:", "mirapi routes list --json"),
            ex(
                "Copy every route to another store:",
                "mirapi routes export > routes.toml",
                "mirapi routes import routes.toml --replace \\",
                "  --redis redis://127.0.0.1:6379/0",
            ),
        ),
    ),
    "secrets": PageText(
        description=(
            "The sidecar injects a stored secret into calls to its host, as the header and "
            "format given. Secrets are encrypted under one passphrase per install. A value "
            "is read from stdin (a hidden prompt on a terminal) and the passphrase from "
            "`MIRAPI_MASTER_KEY` or a hidden prompt: neither is ever a command-line argument, "
            "and no command prints a stored value.",
        ),
        examples=(
            ex(
                "Store an API key for api.stripe.com, sent as 'Authorization: Bearer ...':",
                "mirapi secrets add stripe --host api.stripe.com",
            ),
            ex(
                "A key sent in a header of its own, read from a file:",
                "mirapi secrets add llm --host api.example-llm.com \\",
                "  --header X-Api-Key --format '{}' < llm.key",
            ),
            ex("What is stored (never a value):", "mirapi secrets list"),
            ex("Re-encrypt everything under a new passphrase:", "mirapi secrets rotate-passphrase"),
        ),
    ),
    "keys": PageText(
        description=(
            "When keys exist, a sidecar serves only requests that carry one in "
            "`X-MirApi-Key`. Only a hash of each key is stored: a key is shown once, when it "
            "is created, and a lost one is revoked and replaced.",
        ),
        examples=(
            ex("Create a key for an app:", "mirapi keys create --name billing-app"),
            ex("List them; revoke one by its id:", "mirapi keys list", "mirapi keys revoke ID"),
        ),
    ),
    "llm": PageText(
        description=(
            "A budget caps what LLM calls cost in USD per UTC day, for a scope: `all`, "
            "`route:NAME` or `key:ID` (a client key's id). Sidecars reserve each call's worst "
            "case against every budget that applies before the call and settle it to the real "
            "cost after, so concurrent calls cannot overspend. Budgets live in the store and "
            "are read at every call: a change holds from the next call, on every sidecar.",
        ),
        examples=(
            ex(
                "At most 5 USD a day through the route chat:",
                "mirapi llm budget set route:chat --usd-per-day 5",
            ),
            ex(
                "The budgets; remove one:",
                "mirapi llm budget list",
                "mirapi llm budget rm route:chat",
            ),
            ex(
                "Today's spend per scope, for a script:",
                "mirapi llm spend --day $(date -u +%F) --json",
            ),
        ),
    ),
    "events": PageText(
        description=(
            "Events are what the sidecar rescued (`rescue`, with the reason: retry, cache, "
            "failover, cascade_fallback), breaker changes, blocked card numbers "
            "(`pci_block`), jobs and upstream errors. They live in the store, so with "
            "`--redis` this shows the events of every sidecar sharing it. On a terminal "
            "they print as a table; piped or with `--json`, one JSON object a line.",
        ),
        examples=(
            ex("The last 20 events:", "mirapi events tail"),
            ex("Follow rescues as they happen:", "mirapi events tail -f --kind rescue"),
            ex("Feed them to jq:", "mirapi events tail -f --json | jq 'select(.status >= 500)'"),
        ),
    ),
    "jobs": PageText(
        description=(
            "A request with `X-Webhook-Callback: URL` is answered 202 at once and run as a "
            "background job; its outcome is POSTed to the URL, signed (see "
            "`mirapi webhooks secret`). Jobs live in the store, so these commands work "
            "whether or not a sidecar runs.",
        ),
        examples=(
            ex("The jobs that failed:", "mirapi jobs list --status failed"),
            ex("One job, for a script:", "mirapi jobs show ID --json"),
            ex(
                "Run it again; or cancel a queued one:",
                "mirapi jobs retry ID",
                "mirapi jobs cancel ID",
            ),
        ),
    ),
    "webhooks": PageText(
        description=(
            "Job callbacks are signed as Standard Webhooks with one secret per install, "
            "created on first use by this command or by a sidecar's first delivery.",
        ),
        examples=(
            ex("Print the secret a receiver verifies callbacks with:", "mirapi webhooks secret"),
        ),
    ),
    "completion": PageText(
        description=(
            "The scripts ask `mirapi` itself for candidates on every TAB, so the commands, "
            "options and choices of the installed version complete. Installed from a wheel, "
            "they are also in the system-wide directories (share/bash-completion/completions, "
            "share/zsh/site-functions, share/fish/vendor_completions.d).",
            "`install` writes one file and edits no shell start-up file: bash loads it through "
            "the bash-completion package, zsh needs its directory in `fpath` before `compinit` "
            "runs (the command prints the lines to add), fish loads it by itself.",
        ),
        examples=(
            ex("Install for the shell in $SHELL:", "mirapi completion install"),
            ex("Use it in this bash session only:", "source <(mirapi completion show bash)"),
            ex(
                "Install for zsh, then in ~/.zshrc:",
                "mirapi completion install zsh",
                "fpath=(~/.zfunc $fpath)",
                "autoload -Uz compinit && compinit",
            ),
        ),
        environment=(
            ("SHELL", "`install` without SHELL installs for the shell this names."),
            ("XDG_DATA_HOME", "Where `install` puts the bash script, if set."),
            ("XDG_CONFIG_HOME", "Where `install` puts the fish script, if set."),
        ),
        files=(
            (
                "${XDG_DATA_HOME:-~/.local/share}/bash-completion/completions/mirapi",
                "Where `install` puts the bash script.",
            ),
            ("~/.zfunc/_mirapi", "Where `install` puts the zsh script."),
            (
                "${XDG_CONFIG_HOME:-~/.config}/fish/completions/mirapi.fish",
                "Where `install` puts the fish script.",
            ),
        ),
        see_also=("bash(1)", "zsh(1)", "fish(1)"),
    ),
}

EXIT_STATUS: tuple[tuple[str, str], ...] = (
    (str(int(ExitCode.OK)), "Success."),
    (str(int(ExitCode.ERROR)), "The command failed; one line on stderr says why."),
    (str(int(ExitCode.USAGE)), "Bad arguments: the usage and the problem are printed."),
    (str(int(ExitCode.INTERRUPTED)), "Interrupted (Ctrl-C)."),
)

ENVIRONMENT: tuple[tuple[str, str], ...] = (
    ("MIRAPI_DATA_DIR", "The data dir, as `--data-dir`."),
    ("MIRAPI_CONFIG", "The config file, as `--config`; it must exist."),
    ("MIRAPI_REDIS", "The Redis URL that sidecars share state through, as `--redis`."),
    (
        "MIRAPI_MASTER_KEY",
        "The secrets' passphrase; without it, commands that need it ask on the terminal.",
    ),
    ("MIRAPI_NEW_MASTER_KEY", "The new passphrase for `mirapi secrets rotate-passphrase`."),
    (
        "MIRAPI_KEY",
        "A client key that `mirapi curl --via` and `mirapi replay` send as X-MirApi-Key "
        "when the call sets none.",
    ),
    (
        "MIRAPI_<KEY>",
        "Any key of the config file, in upper case: "
        + ", ".join(env_var(key) for key in KEYS)
        + ". Flags win over the environment, which wins over the file. "
        "An empty variable counts as unset.",
    ),
    ("NO_COLOR", "Set: no colour in any output (colour is also off when not on a terminal)."),
    ("FORCE_COLOR", "Set: colour even when the output is not a terminal."),
)

FILES: tuple[tuple[str, str], ...] = (
    (
        "~/.config/mirapi/config.toml",
        "The config file (TOML) when neither `--config` nor `MIRAPI_CONFIG` names one; "
        "the platform's user config dir (on macOS ~/Library/Application Support/mirapi). "
        "It may be absent.",
    ),
    (
        "~/.local/share/mirapi/",
        "The data dir when neither `--data-dir` nor `MIRAPI_DATA_DIR` names one; the "
        "platform's user data dir (on macOS ~/Library/Application Support/mirapi).",
    ),
    ("DATA_DIR/sidecar.json", "The running sidecar's pid, address and version."),
    ("DATA_DIR/sidecar.log", "The detached sidecar's log, JSON lines."),
    ("DATA_DIR/mirapi.db", "The embedded store (SQLite) when no Redis is used."),
)


# --- roff ---

_OPTION_WORD = re.compile(r"(?<![\w\\-])--?[A-Za-z][\w-]*")


def _escape(text: str) -> str:
    """Plain text for roff: backslashes, and non-ASCII as \\[uXXXX] (no preconv needed)."""
    text = text.replace("\\", "\\e")
    return "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)


def _literal(text: str) -> str:
    """Text typed as is (commands, options): every hyphen a real minus sign."""
    return _escape(text).replace("-", "\\-")


def roff_text(text: str) -> str:
    """Prose: `code` in bold, option-like words with \\- hyphens, other hyphens as typed."""
    out: list[str] = []
    for i, part in enumerate(re.split(r"`([^`]*)`", text)):
        if i % 2:
            out.append(f"\\fB{_literal(part)}\\fR")
        else:
            out.append(_OPTION_WORD.sub(lambda m: m.group().replace("-", "\\-"), _escape(part)))
    return "".join(out)


def _line(text: str) -> str:
    # A line starting with . or ' would be read as a request.
    return f"\\&{text}" if text[:1] in (".", "'") else text


def _bold(text: str) -> str:
    return f"\\fB{_literal(text)}\\fR"


def _italic(text: str) -> str:
    return f"\\fI{_literal(text)}\\fR"


def _usage_roff(command: Command, skip: int = 0) -> str:
    """A synopsis line: the command's words bold, placeholders italic, brackets plain."""
    out = [_bold(" ".join(command.path[skip:]))]
    for word in command.synopsis():
        if word.startswith("-"):
            opt, _, value = word.partition(" ")
            out.append(_bold(opt) + (" " + _placeholder(value) if value else ""))
        else:
            out.append(_placeholder(word))
    return " ".join(out)


def _placeholder(word: str) -> str:
    """`[NAME]...` as [\\fINAME\\fR]...: only the names in italics."""
    return re.sub(r"[^\s\[\].|{}]+", lambda m: _italic(m.group()), word)


def _param_tag(param: Param) -> str:
    if not param.is_option:
        return _italic(param.value or "")
    tags = [
        ", ".join(_bold(opt) for opt in param.opts)
        + (" " + _italic(param.value) if param.value else "")
    ]
    if param.secondary:
        tags.append(", ".join(_bold(opt) for opt in param.secondary))
    return " | ".join(tags)


def _param_help(param: Param) -> str:
    help_text = param.help
    if param.notes:
        help_text += f" [{'; '.join(param.notes)}]"
    return roff_text(help_text.strip())


def _paragraphs_roff(text: str) -> list[str]:
    lines: list[str] = []
    for index, (preformatted, paragraph) in enumerate(help_paragraphs(text)):
        if index:
            lines.append(".PP")
        if preformatted:
            lines += [".nf", *(_line(_escape(row)) for row in paragraph.splitlines()), ".fi"]
        else:
            lines.append(_line(roff_text(paragraph)))
    return lines


def _params_roff(params: Iterable[Param]) -> list[str]:
    lines: list[str] = []
    for param in params:
        lines += [".TP", _line(_param_tag(param)), _line(_param_help(param))]
    return lines


def _definitions(items: Iterable[tuple[str, str]], *, tag: Callable[[str], str]) -> list[str]:
    lines: list[str] = []
    for term, text in items:
        lines += [".TP", _line(tag(term)), _line(roff_text(text))]
    return lines


def _page_name(command: Command) -> str:
    return "-".join(command.path)


def man_page(command: Command, root: Command) -> str:
    """The man page of `mirapi` (root) or of one top-level command or group."""
    page = _page_name(command)
    text = PAGES.get(command.path[-1], PageText())
    lines = [
        '.\\" Generated by scripts/generate_docs.py from the mirapi CLI: do not edit.',
        f'.TH {_literal(page.upper())} 1 "" "mirapi {_escape(__version__)}" "MirApi Manual"',
        # No hyphenation, ragged right: option and variable names stay whole.
        ".nh",
        ".ad l",
        ".SH NAME",
        _line(f"{_literal(page)} \\- {roff_text(_sentence(command.summary))}"),
        ".SH SYNOPSIS",
    ]
    synopses = [command] if command is root else [c for c in command.walk() if not c.is_group]
    for index, item in enumerate(synopses):
        if index:
            lines.append(".br")
        lines.append(_line(_usage_roff(item)))
    lines += [".SH DESCRIPTION", *_paragraphs_roff(command.help)]
    for paragraph in text.description:
        lines += [".PP", _line(roff_text(paragraph))]
    if command is root:
        lines.append(".SH COMMANDS")
        for sub in root.subcommands:
            see = f"See \\fB{_literal(_page_name(sub))}\\fR(1)."
            lines += [".TP", _line(_bold(sub.path[-1])), _line(f"{roff_text(sub.summary)} {see}")]
    elif command.is_group:
        lines.append(".SH COMMANDS")
        for sub in command.walk():
            if sub is not command:
                tag = _usage_roff(sub, skip=len(command.path))
                lines += [".TP", _line(tag), *_paragraphs_roff(sub.help)]
    lines.append(".SH OPTIONS")
    if command.is_group and command is not root:
        # One subsection per command; --help is said once, not once each.
        for sub in command.walk():
            params = [p for p in sub.params if not _is_help(p)]
            if params:
                lines += [f'.SS "{_literal(sub.name)}"', *_params_roff(params)]
        lines += [".PP", _line(roff_text("Every command also takes `--help`."))]
    else:
        lines += _params_roff(command.params)
    codes = sorted((*EXIT_STATUS, *text.exit_status), key=lambda item: int(item[0]))
    lines += [".SH EXIT STATUS", *_definitions(codes, tag=_bold)]
    lines += [".SH ENVIRONMENT", *_definitions((*ENVIRONMENT, *text.environment), tag=_bold)]
    lines += [".SH FILES", *_definitions((*FILES, *text.files), tag=_italic)]
    if text.examples:
        lines.append(".SH EXAMPLES")
        for example in text.examples:
            lines += [".PP", _line(roff_text(example.what)), ".PP", ".RS 4", ".nf"]
            lines += [_line(_literal(row)) for row in example.lines]
            lines += [".fi", ".RE"]
    others = [c for c in (root, *root.subcommands) if c is not command]
    refs = [f"\\fB{_literal(_page_name(c))}\\fR(1)" for c in others]
    refs += [f"\\fB{_literal(name)}\\fR({section})" for name, section in _refs(text.see_also)]
    lines += [".SH SEE ALSO", _line(",\n".join(refs))]
    return "\n".join(lines) + "\n"


def _is_help(param: Param) -> bool:
    return param.opts == ("--help",)


def _refs(names: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for name in names:
        match = re.fullmatch(r"(.+)\((\w+)\)", name)
        if match:
            out.append((match.group(1), match.group(2)))
    return out


def _sentence(text: str) -> str:
    # NAME lines read best without the final period, as in most man pages.
    return text[:-1] if text.endswith(".") else text


# --- Markdown ---


def _md(text: str) -> str:
    """Help text in Markdown: `<` would start HTML."""
    return text.replace("<", "&lt;")


def commands_md(root: Command) -> str:
    """docs/commands.md: every command with its synopsis, help and parameters."""
    out = [
        "# Command reference",
        "",
        "<!-- Generated by scripts/generate_docs.py from the mirapi CLI: do not edit. -->",
        "",
        "Every `mirapi` command, generated from the CLI itself "
        "(`python scripts/generate_docs.py`). `mirapi COMMAND --help` prints the same; "
        "`man mirapi-COMMAND` adds examples, the environment and the files each command uses. "
        "Every command also takes `--help`.",
        "",
    ]
    for command in root.walk():
        indent = "  " * max(len(command.path) - 2, 0)
        out.append(f"{indent}- [`{command.name}`](#{_anchor(command)})")
    out.append("")
    for command in root.walk():
        level = "##" if len(command.path) <= 2 else "###"
        usage = " ".join((*command.path, *command.synopsis()))
        out += [f"{level} `{command.name}`", "", "```text", usage, "```", ""]
        for preformatted, paragraph in help_paragraphs(command.help):
            out += (["```text", paragraph, "```"] if preformatted else [_md(paragraph)]) + [""]
        params = [p for p in command.params if not _is_help(p)]
        if params:
            out += [_md_param(p) for p in params] + [""]
        if command.is_group:
            out += ["Commands:", ""]
            out += [
                f"- [`{sub.name}`](#{_anchor(sub)}): {_md(sub.summary)}"
                for sub in command.subcommands
            ]
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _anchor(command: Command) -> str:
    # GitHub's anchor for the heading "`mirapi routes add`".
    return "-".join(command.path)


def _md_param(param: Param) -> str:
    if param.is_option:
        name = ", ".join(param.opts) + (f" {param.value}" if param.value else "")
        if param.secondary:
            name += " / " + ", ".join(param.secondary)
    else:
        name = param.value or ""
    notes = f" ({'; '.join(param.notes)})" if param.notes else ""
    return f"- `{name}`{notes}: {_md(param.help)}".rstrip(": ")


# --- the whole set ---


def generate() -> dict[str, str]:
    """Every generated file: path relative to the repository -> content."""
    root = command_tree()
    files: dict[str, str] = {
        f"{COMPLETIONS_DIR}/{FILE_NAMES[shell]}": SCRIPTS[shell] for shell in SCRIPTS
    }
    for command in (root, *root.subcommands):
        files[f"{MAN_DIR}/{_page_name(command)}.1"] = man_page(command, root)
    files[COMMANDS_MD] = commands_md(root)
    return files


def stale(files: Mapping[str, str], repo: Path = REPO) -> list[str]:
    """The generated files that differ on disk, and man pages no command has any more."""
    out = [name for name, text in files.items() if _read_text(repo / name) != text]
    out += [
        f"{MAN_DIR}/{path.name}"
        for path in sorted((repo / MAN_DIR).glob("*.1"))
        if f"{MAN_DIR}/{path.name}" not in files
    ]
    return out


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write(files: Mapping[str, str], repo: Path = REPO) -> list[str]:
    """Write what changed, delete man pages of commands that are gone; return the names."""
    changed = stale(files, repo)
    for name in changed:
        path = repo / name
        if name in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(files[name], encoding="utf-8")
        else:
            path.unlink()
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        names = stale(files)
        for name in names:
            print(f"stale: {name}")
        if names:
            print("run: python scripts/generate_docs.py")
        return 1 if names else 0
    for name in write(files):
        print(f"wrote {name}" if name in files else f"deleted {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
