"""A throwaway Synapse on 127.0.0.1 with delayed events enabled, for tests and local development.

    with DevServer() as server:
        bot = server.register_user("bot")
        client = DelayedAsyncClient(server.url, bot.user_id)
        client.restore_login(bot.user_id, bot.device_id, bot.access_token)

The server lives in a temporary directory (SQLite, a fresh signing key, shared-secret
registration) and is stopped by its PID. Synapse may be installed in another virtualenv: pass that
virtualenv's interpreter as ``python`` (the older 1.142 generation needs its own, see the README).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .limits import RateLimit, ServerLimits
from .validation import seconds_of

__all__ = ["DevServer", "DevServerError", "DevUser"]

# Generous on purpose: rate limits are tested on their own, with `default_rate_limits=True`.
_RELAXED = {"per_second": 10_000, "burst_count": 10_000}
_RELAXED_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _RELAXED,
    "rc_delayed_event_mgmt": _RELAXED,
    "rc_registration": _RELAXED,
    "rc_login": {"address": _RELAXED, "account": _RELAXED, "failed_attempts": _RELAXED},
    "rc_joins": {"local": _RELAXED, "remote": _RELAXED},
    "rc_joins_per_room": _RELAXED,
    "rc_invites": {"per_room": _RELAXED, "per_user": _RELAXED, "per_sender": _RELAXED},
    "rc_room_creation": _RELAXED,
    "rc_admin_redaction": _RELAXED,
}


class DevServerError(RuntimeError):
    """Synapse could not be started, or an admin call to it failed."""


@dataclass(frozen=True)
class DevUser:
    """A registered account. ``repr`` leaves the access token out."""

    user_id: str
    device_id: str
    access_token: str
    password: str

    def __repr__(self) -> str:
        return f"DevUser(user_id={self.user_id!r}, device_id={self.device_id!r})"


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in: mappings key by key, anything else replaced."""
    merged = dict(base)
    for key, value in extra.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = _merged(below, value)
        else:
            merged[key] = value
    return merged


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DevServer:
    """Start, stop, restart and kill a local Synapse; register users on it.

    ``delayed_events=False`` starts a Synapse with the feature off (for testing refusals);
    ``default_rate_limits=True`` keeps Synapse's own rate limits instead of relaxed ones;
    ``max_delay`` (a Synapse duration such as ``"24h"``) and ``max_scheduled`` set the limits.
    ``sticky_events=True`` turns on sticky events (MSC4354, Synapse 1.148 and later).
    ``startup_timeout`` (a ``timedelta``): how long Synapse may take to answer once started.
    ``extra_config`` is merged into the configuration: a section given as a mapping is merged
    key by key with the one set here (``experimental_features`` keeps its other keys); any
    other value replaces it.
    """

    def __init__(  # noqa: PLR0913  # the public signature: one keyword per option
        self,
        *,
        python: str | os.PathLike[str] | None = None,
        delayed_events: bool = True,
        max_delay: str = "24h",
        max_scheduled: int = 100,
        default_rate_limits: bool = False,
        server_name: str = "localhost",
        extra_config: dict[str, Any] | None = None,
        startup_timeout: timedelta | float = timedelta(seconds=90),
        sticky_events: bool = False,
    ) -> None:
        # Synapse runs in its own directory, so a relative interpreter path is resolved now.
        python = str(python) if python is not None else sys.executable
        self.python = os.path.abspath(python) if os.sep in python else python
        self.server_name = server_name
        # A bare number is still seconds (deprecated, warned).
        self.startup_timeout = seconds_of(startup_timeout, "startup_timeout")
        self._delayed_events = delayed_events
        self._max_delay = max_delay
        self._max_scheduled = max_scheduled
        self._default_rate_limits = default_rate_limits
        self._extra_config = extra_config or {}
        self._sticky_events = sticky_events
        self._shared_secret = secrets.token_hex(16)
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self.port = 0
        self.version = ""

    @property
    def limits(self) -> ServerLimits:
        """Its rate limits, as a client should be told them (``delayed_events_limits``)."""
        defaults = ServerLimits()

        def limit(name: str, default: RateLimit | None) -> RateLimit | None:
            configured = self._extra_config.get(name)
            if isinstance(configured, dict):
                return RateLimit(configured["per_second"], configured["burst_count"])
            return default if self._default_rate_limits else None  # relaxed: no limit to speak of

        return ServerLimits(
            management=limit("rc_delayed_event_mgmt", defaults.management),
            scheduling=limit("rc_message", defaults.scheduling),
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise DevServerError("the server has not been started")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.directory / "homeserver.log"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> DevServer:
        """Write the configuration (first start only), start Synapse and wait until it answers."""
        if self._process is not None:
            raise DevServerError("the server is already running")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="nio-delayed-synapse-"))
            self.port = _free_port()
            self._write_config()
        self._stderr = open(self._dir / "stderr.log", "ab")  # noqa: SIM115 - closed in _reap()
        self._process = subprocess.Popen(
            [self.python, "-m", "synapse.app.homeserver", "--config-path", str(self._config_path)],
            cwd=self._dir,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,  # a Ctrl-C in the terminal is for us, not for Synapse
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: timedelta | float = timedelta(seconds=15)) -> None:
        """Stop Synapse (SIGTERM, then SIGKILL after ``timeout``, a ``timedelta``). The data
        stays for restart()."""
        seconds = seconds_of(timeout, "timeout")
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._reap()

    def kill(self) -> None:
        """Kill Synapse with SIGKILL, as a crash would. Scheduled events stay in its database."""
        process = self._process
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        self._reap()

    def _reap(self) -> None:
        self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same database."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop Synapse and delete its directory."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> DevServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- accounts --------------------------------------------------------------------------

    def register_user(
        self, localpart: str, password: str | None = None, *, admin: bool = False
    ) -> DevUser:
        """Register ``@localpart:server_name`` through shared-secret registration."""
        password = password or secrets.token_urlsafe(12)
        nonce = self._request("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(self._shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), localpart.encode(), password.encode()]))
        mac.update(b"\x00admin" if admin else b"\x00notadmin")
        answer = self._request(
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        return DevUser(answer["user_id"], answer["device_id"], answer["access_token"], password)

    # -- internals -------------------------------------------------------------------------

    @property
    def _config_path(self) -> Path:
        return self.directory / "homeserver.json"

    def _write_config(self) -> None:
        directory = self.directory
        log_config = {
            "version": 1,
            "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "filename": str(directory / "homeserver.log"),
                    "formatter": "plain",
                }
            },
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }
        (directory / "log_config.json").write_text(json.dumps(log_config))
        seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        (directory / "signing.key").write_text(f"ed25519 a_dev {seed}\n")
        config: dict[str, Any] = {
            "server_name": self.server_name,
            "pid_file": str(directory / "homeserver.pid"),
            "listeners": [
                {
                    "port": self.port,
                    "bind_addresses": ["127.0.0.1"],
                    "type": "http",
                    "tls": False,
                    "x_forwarded": False,
                    "resources": [{"names": ["client"], "compress": False}],
                }
            ],
            "database": {"name": "sqlite3", "args": {"database": str(directory / "homeserver.db")}},
            "log_config": str(directory / "log_config.json"),
            "media_store_path": str(directory / "media_store"),
            "signing_key_path": str(directory / "signing.key"),
            "registration_shared_secret": self._shared_secret,
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "report_stats": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_metrics": False,
            "presence": {"enabled": False},
            "experimental_features": {
                "msc4140_max_delayed_events_per_user": self._max_scheduled,
            },
        }
        if self._delayed_events:
            config["max_event_delay_duration"] = self._max_delay
        if self._sticky_events:
            config["experimental_features"]["msc4354_enabled"] = True
        if not self._default_rate_limits:
            config.update(_RELAXED_RATE_LIMITS)
        config = _merged(config, self._extra_config)
        # JSON is YAML, so Synapse reads it as is and we need no YAML writer.
        self._config_path.write_text(json.dumps(config, indent=2))

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DevServerError(
                    f"Synapse exited with code {self._process.returncode} during start-up.\n"
                    + self._log_tail()
                )
            try:
                with urllib.request.urlopen(f"{self.url}/_matrix/client/versions", timeout=2) as r:
                    # "Synapse/1.163.2", possibly followed by " (b=branch,commit)".
                    server = r.headers.get("Server", "").partition("/")[2]
                    self.version = server.split(" ", 1)[0]
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise DevServerError(
            f"Synapse did not answer within {self.startup_timeout:.0f} s.\n" + self._log_tail()
        )

    def _log_tail(self, lines: int = 30) -> str:
        parts = []
        for name in ("stderr.log", "homeserver.log"):
            with contextlib.suppress(OSError):
                text = (self.directory / name).read_text(errors="replace").splitlines()
                parts.append(f"--- last lines of {name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise DevServerError(
                f"{method} {path} failed: {exc.code} {exc.read().decode(errors='replace')}"
            ) from exc
