"""A loopback HTTP server that records every request byte for byte, and two ways to call it.

`Recorder` runs `http.server` in a thread (so a sync test can drive both a
real `curl` process and `mirapi curl` in-process through click's runner),
keeps method, request-target, headers in order (repeated names kept) and
body bytes, and answers by path:

    /redirect/CODE?to=PATH   CODE with Location: PATH
    /status/CODE             CODE with a short text body
    /gzip                    a gzip-encoded body
    /slow                    waits 3 s before answering
    anything else            200, a JSON body and a repeated X-Multi header
"""

from __future__ import annotations

import gzip
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from typer.testing import CliRunner

from mirapi_cli.main import run

BODY = b'{"ok":true}'
GZIPPED = b"hello, compressed world\n" * 20


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads what was recorded."""

    def handle(self) -> None:
        # A client that gives up early (curl -o into a missing dir, -m) is no error here.
        try:
            super().handle()
        except ConnectionError:
            pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(Seen(self.command, self.path, tuple(self.headers.items()), body))
        parts = urlsplit(self.path)
        route = parts.path.strip("/").split("/")
        status, headers, payload = 200, [("Content-Type", "application/json")], BODY
        headers += [("X-Multi", "a"), ("X-Multi", "b")]
        if route[0] == "redirect":
            status = int(route[1])
            target = parse_qs(parts.query).get("to", ["/landed"])[0]
            headers, payload = [("Location", target)], b"moved"
        elif route[0] == "status":
            status, headers, payload = int(route[1]), [("Content-Type", "text/plain")], b"oops"
        elif route[0] == "gzip":
            headers = [("Content-Type", "text/plain"), ("Content-Encoding", "gzip")]
            payload = gzip.compress(GZIPPED)
        elif route[0] == "slow":
            time.sleep(3)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def __getattr__(self, name: str) -> object:
        # Any method, as typed (`-X patch`): http.server looks up do_<METHOD>.
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[Seen]


@contextmanager
def recorder(tls: Path | None = None) -> Iterator[_Server]:
    """A running recording server on 127.0.0.1 (port 0: bound, never guessed).

    With `tls` (a directory), it speaks https with a new self-signed certificate.
    """
    server = _Server(("127.0.0.1", 0), _Handler)
    server.seen = []
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self_signed(tls))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def base_url(server: _Server) -> str:
    """http(s)://127.0.0.1:PORT of `server`."""
    scheme = "https" if isinstance(server.socket, ssl.SSLSocket) else "http"
    return f"{scheme}://127.0.0.1:{server.server_address[1]}"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: (cert.pem, key.pem) in `directory`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass(frozen=True)
class Outcome:
    """What a run printed and how it ended."""

    code: int
    stdout: bytes
    stderr: str


def real_curl(args: list[str], *, stdin: bytes = b"", cwd: str | None = None) -> Outcome:
    """Run the real `curl` binary (no config file of the user's: -q)."""
    done = subprocess.run(
        ["curl", "-q", *args], input=stdin, capture_output=True, timeout=30, check=False, cwd=cwd
    )
    return Outcome(done.returncode, done.stdout, done.stderr.decode(errors="replace"))


def mirapi_curl(args: list[str], *, stdin: bytes = b"") -> Outcome:
    """Run `mirapi curl ARGS` in this process, through the real entry point (`main.run`)."""
    runner = CliRunner()
    code = 0
    with runner.isolation(input=stdin, env={"NO_COLOR": "1"}) as (out, err, _):
        try:
            run(["curl", *args])
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        finally:
            sys_stdout_flush()
        return Outcome(code, out.getvalue(), err.getvalue().decode(errors="replace"))


def sys_stdout_flush() -> None:
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
