"""The agent's configuration: a YAML file plus ``OTELBOT_AGENT_*`` environment variables.

Environment variables win over the file. Nested keys use ``__``:
``OTELBOT_AGENT_INTERVALS__FAST=10s``; lists take JSON:
``OTELBOT_AGENT_POSTGRESQL__DATABASES='[{"dsn_file": "/run/secrets/pg"}]'``.
Secrets come from files (``dsn_file``, ``password_file``, ``url_file``) so they stay out of
the YAML and the process list. A bad config raises ``ConfigError`` with one line per problem:
a file that is not UTF-8 YAML, a key that is not a name, an ``OTELBOT_AGENT_*`` variable
that names no setting (with the one probably meant) or holds broken JSON, and a value out
of its bounds (durations and top-N sizes have a floor and a ceiling: see docs/agent.md).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, get_origin
from urllib.parse import quote, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

ENV_PREFIX = "OTELBOT_AGENT_"
CONFIG_PATH_ENV = "OTELBOT_AGENT_CONFIG"
RUNTIME_DIR_ENV = "OTELBOT_RUNTIME_DIR"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """``15``, ``15s``, ``5m``, ``1h``, ``7d``, ``250ms`` -> seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError("expected a duration like 15s, 5m, 1h, 7d or a number of seconds")
        return float(match.group(1)) * _UNITS[match.group(2)]
    return value


def format_duration(seconds: float) -> str:
    """``0.25`` -> ``250ms``, ``90`` -> ``1.5m``, ``604800`` -> ``7d`` (the config's units)."""
    for unit in ("d", "h", "m", "s"):
        if abs(seconds) >= _UNITS[unit]:
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds * 1000:g}ms"


def _between(low: float, high: float, zero: bool = False) -> Callable[[float], float]:
    """A check that a duration lies in [low, high] (or is 0 when ``zero``), said in units."""
    allowed = f"between {format_duration(low)} and {format_duration(high)}"
    if zero:
        allowed += " (or 0)"

    def check(seconds: float) -> float:
        if zero and seconds == 0:
            return seconds
        if math.isnan(seconds) or not low <= seconds <= high:
            raise ValueError(f"must be {allowed}, not {format_duration(seconds)}")
        return seconds

    return check


_DAY = 86400.0
#: How often a target is polled: below 100 ms the agent would only load what it watches.
Interval = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_between(0.1, 7 * _DAY))
]
#: How long to wait for a server (PostgreSQL's timeouts are set in whole milliseconds).
Timeout = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_between(0.1, 3600))]
#: How often metrics are exported: faster than 1 s, exports overlap and the SDK times out.
ExportInterval = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_between(1, _DAY))
]
#: An age that makes a finding (a heartbeat, an idle transaction).
Age = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_between(0.1, _DAY))]
#: How long an index must go without a scan to be reported unused; 0 reports at once.
Window = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_between(1, 365 * _DAY, zero=True))
]
#: A top-N size: each kept name is a series per metric, so the ceiling bounds cardinality.
TOP_N_MAX = 1000
#: A threshold compared with PostgreSQL bigint counters.
BIGINT_MAX = 2**63 - 1

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: Any) -> Any:
    if isinstance(value, str) and value.strip().upper() in LOG_LEVELS:
        return value.strip().upper()
    raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, not {value!r}")


class ConfigError(Exception):
    """The configuration is invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _read_secret(path: str, what: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path!r}: {exc.strerror}") from None


class Intervals(_Section):
    fast: Interval = 15.0
    slow: Interval = 300.0
    advice: Interval = 3600.0


class ProcessConfig(_Section):
    enabled: bool = True
    pid: int | None = Field(default=None, gt=0, lt=2**31)
    pid_file: str | None = None
    pattern: str | None = None  # regular expression matched against the command line

    @model_validator(mode="after")
    def _one_way_to_find(self) -> ProcessConfig:
        if self.enabled and not (self.pid or self.pid_file or self.pattern):
            raise ValueError(
                "set one of pid, pid_file or pattern to find the bot process (or enabled: false)"
            )
        if self.pattern:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return self


class RuntimeConfig(_Section):
    enabled: bool = True
    dir: str | None = None  # default: $OTELBOT_RUNTIME_DIR
    frozen_after: Age = 10.0  # heartbeat age that makes a bot "frozen"

    def resolved_dir(self) -> str | None:
        return self.dir or os.environ.get(RUNTIME_DIR_ENV) or None


class PostgresDatabase(_Section):
    """One database. Either ``dsn`` / ``dsn_file``, or host/port/user/database + password."""

    name: str | None = None
    dsn: SecretStr | None = None
    dsn_file: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=5432, gt=0, lt=65536)
    user: str = "postgres"
    database: str = "postgres"
    password: SecretStr | None = None
    password_file: str | None = None

    @model_validator(mode="after")
    def _secrets(self) -> PostgresDatabase:
        if self.dsn and self.dsn_file:
            raise ValueError("set dsn or dsn_file, not both")
        if self.dsn_file:
            self.dsn = SecretStr(_read_secret(self.dsn_file, "dsn_file"))
        if self.password_file:
            self.password = SecretStr(_read_secret(self.password_file, "password_file"))
        if self.dsn is not None:
            parts = urlsplit(self.dsn.get_secret_value())
            if parts.scheme not in ("postgresql", "postgres"):
                raise ValueError("dsn must start with postgresql://")
            try:
                self.host = parts.hostname or self.host
                self.port = parts.port or self.port
            except ValueError:
                raise ValueError("dsn has an invalid port") from None
            self.user = parts.username or self.user
            self.database = parts.path.lstrip("/") or self.database
        return self

    def connect_dsn(self) -> str:
        if self.dsn is not None:
            return self.dsn.get_secret_value()
        return f"postgresql://{quote(self.user)}@{self.host}:{self.port}/{quote(self.database)}"

    def label(self) -> str:
        return self.name or f"{self.host}:{self.port}/{self.database}"


class PostgresConfig(_Section):
    enabled: bool = True
    databases: list[PostgresDatabase] = Field(default_factory=list)
    connect_timeout: Timeout = 5.0
    statement_timeout: Timeout = 5.0
    lock_timeout: Timeout = 1.0
    top_tables: int = Field(default=50, ge=1, le=TOP_N_MAX)
    top_indexes: int = Field(default=100, ge=1, le=TOP_N_MAX)
    top_statements: int = Field(default=20, ge=0, le=TOP_N_MAX)
    top_applications: int = Field(default=10, ge=1, le=TOP_N_MAX)
    unused_index_window: Window = 7 * _DAY  # 0: report never-used at once
    missing_index_min_seq_scans: int = Field(default=100, ge=1, le=BIGINT_MAX)
    missing_index_min_rows: int = Field(default=10_000, ge=1, le=BIGINT_MAX)
    idle_in_transaction_after: Age = 60.0


class RedisInstance(_Section):
    name: str | None = None
    url: SecretStr | None = None
    url_file: str | None = None
    password_file: str | None = None

    @model_validator(mode="after")
    def _secrets(self) -> RedisInstance:
        if self.url and self.url_file:
            raise ValueError("set url or url_file, not both")
        if self.url_file:
            self.url = SecretStr(_read_secret(self.url_file, "url_file"))
        if self.url is None:
            raise ValueError("url or url_file is required, e.g. redis://127.0.0.1:6379/0")
        parts = urlsplit(self.url.get_secret_value())
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        if self.password_file:
            _read_secret(self.password_file, "password_file")
        return self

    def password(self) -> str | None:
        return _read_secret(self.password_file, "password_file") if self.password_file else None

    def host_port(self) -> tuple[str, int]:
        assert self.url is not None
        parts = urlsplit(self.url.get_secret_value())
        return parts.hostname or "127.0.0.1", parts.port or 6379

    def label(self) -> str:
        host, port = self.host_port()
        return self.name or f"{host}:{port}"


class RedisConfig(_Section):
    enabled: bool = True
    instances: list[RedisInstance] = Field(default_factory=list)
    timeout: Timeout = 5.0


class HealthConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=13134, ge=0, lt=65536)  # 0: any free port


class AgentConfig(BaseSettings):
    """The whole configuration. See docs/agent.md for every key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    intervals: Intervals = Field(default_factory=Intervals)
    process: ProcessConfig = Field(default_factory=lambda: ProcessConfig(enabled=False))
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    postgresql: PostgresConfig = Field(default_factory=PostgresConfig)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    state_file: str | None = None  # where unused-index observations survive restarts
    export_interval: ExportInterval | None = None  # default: intervals.fast (at least 1 s)
    log_level: Annotated[str, BeforeValidator(_log_level)] = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: the environment over the YAML file (passed as init values).
        return (env_settings, init_settings)

    def resolved_state_file(self) -> Path:
        if self.state_file:
            return Path(self.state_file)
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(
            os.path.expanduser("~"), ".local", "state"
        )
        return Path(base) / "otelbot-agent" / "state.json"


def _format_error(err: Any, sources: Mapping[tuple[str, ...], str]) -> str:
    path = tuple(str(p) for p in err.get("loc", ()) if p not in ("function-after",))
    loc = ".".join(path)
    for length in range(len(path), 0, -1):  # the value came from a variable: name it
        variable = sources.get(path[:length])
        if variable is not None:
            loc = f"{loc} (from {variable})"
            break
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (see docs/agent.md for the keys)"
    return f"{loc}: {msg}" if loc else msg


def _section(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _variable(path: list[str]) -> str:
    return ENV_PREFIX + "__".join(path).upper()


def _check_environment(
    environ: Mapping[str, str],
) -> tuple[list[str], dict[tuple[str, ...], str]]:
    """Problems with the ``OTELBOT_AGENT_*`` variables, which pydantic-settings would ignore
    (a name that is no setting) or fail on with a traceback (broken JSON); and, per config
    path, the variable that sets it (to name it in validation errors)."""
    problems: list[str] = []
    sources: dict[tuple[str, ...], str] = {}
    for name, value in sorted(environ.items()):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() == CONFIG_PATH_ENV:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        model: type[BaseModel] = AgentConfig
        for depth, key in enumerate(path):
            fields = model.model_fields
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                if close:
                    meant = _variable([*path[:depth], close[0], *path[depth + 1 :]])
                    hint = f"did you mean {meant}?"
                else:
                    hint = "the keys here are " + ", ".join(fields)
                where = ".".join(path[:depth]) or "the top level"
                problems.append(f"{name}: {key!r} is not a key of {where}; {hint}")
                break
            annotation = fields[key].annotation
            section = _section(annotation)
            if depth < len(path) - 1:
                if section is None:
                    problems.append(
                        f"{name}: {'.'.join(path[: depth + 1])} has no keys under it; "
                        f"set {_variable(path[: depth + 1])} instead"
                    )
                    break
                model = section
                continue
            sources[tuple(path)] = name
            if section is not None or get_origin(annotation) is list:
                what, example = (
                    ("a section", '\'{"key": "value"}\'')
                    if section is not None
                    else ("a list", '\'[{"key": "value"}]\'')
                )
                try:
                    json.loads(value)
                except ValueError as exc:
                    problem = getattr(exc, "msg", str(exc))
                    problems.append(
                        f"{name}: {what} is written as JSON, e.g. {name}={example}; this is "
                        f"not JSON ({problem})"
                    )
    return problems, sources


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror}"]) from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError([f"{path}: the file is UTF-16; save it as UTF-8"])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [
                f"{path}: not a text file in UTF-8 (byte 0x{raw[exc.start]:02x} at offset "
                f"{exc.start}); save it as UTF-8 YAML"
            ]
        ) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        if problem is None and isinstance(exc, yaml.reader.ReaderError):
            problem = f"character #x{exc.character:04x} at offset {exc.position}: {exc.reason}"
        raise ConfigError([f"{path}:{where} {problem or 'invalid YAML'}"]) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of keys"])
    for key in loaded:
        if not isinstance(key, str):
            raise ConfigError(
                [
                    f"{path}: the top-level key {key!r} is not a name; the keys are "
                    + ", ".join(AgentConfig.model_fields)
                ]
            )
    return loaded


def load_config(path: str | os.PathLike[str] | None = None) -> AgentConfig:
    """Read the YAML file (optional) and the environment. Raises ``ConfigError``."""
    if path is None:
        path = os.environ.get(CONFIG_PATH_ENV) or None
    data = _read_yaml(path) if path is not None else {}
    problems, sources = _check_environment(os.environ)
    if problems:
        raise ConfigError(problems)
    try:
        return AgentConfig(**data)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        raise ConfigError([_format_error(e, sources) for e in errors]) from None
    except SettingsError as exc:  # what the checks above did not foresee, still one line
        raise ConfigError([f"environment: {exc}"]) from None
