"""The agent's configuration: a YAML file plus ``OTELBOT_AGENT_*`` environment variables.

Environment variables win over the file. Nested keys use ``__``:
``OTELBOT_AGENT_INTERVALS__FAST=10s``; lists take JSON:
``OTELBOT_AGENT_POSTGRESQL__DATABASES='[{"dsn_file": "/run/secrets/pg"}]'``.
Secrets come from files (``dsn_file``, ``password_file``, ``url_file``) so they stay out of
the YAML and the process list. A bad config raises ``ConfigError`` with one line per problem.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

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


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
NonNegativeDuration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


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
    fast: Duration = 15.0
    slow: Duration = 300.0
    advice: Duration = 3600.0


class ProcessConfig(_Section):
    enabled: bool = True
    pid: int | None = None
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
    frozen_after: Duration = 10.0  # heartbeat age that makes a bot "frozen"

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
    connect_timeout: Duration = 5.0
    statement_timeout: Duration = 5.0
    lock_timeout: Duration = 1.0
    top_tables: int = Field(default=50, ge=1)
    top_indexes: int = Field(default=100, ge=1)
    top_statements: int = Field(default=20, ge=0)
    top_applications: int = Field(default=10, ge=1)
    unused_index_window: NonNegativeDuration = 7 * 86400.0  # 0: report never-used at once
    missing_index_min_seq_scans: int = Field(default=100, ge=1)
    missing_index_min_rows: int = Field(default=10_000, ge=1)
    idle_in_transaction_after: Duration = 60.0


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
    timeout: Duration = 5.0


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
    export_interval: Duration | None = None  # default: intervals.fast
    log_level: str = "INFO"

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


def _format_error(err: Any) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("function-after",))
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (see docs/agent.md for the keys)"
    return f"{loc}: {msg}" if loc else msg


def load_config(path: str | os.PathLike[str] | None = None) -> AgentConfig:
    """Read the YAML file (optional) and the environment. Raises ``ConfigError``."""
    data: dict[str, Any] = {}
    if path is None:
        path = os.environ.get(CONFIG_PATH_ENV) or None
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read the config file: {exc.strerror}"]) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            raise ConfigError([f"{path}:{where}: {problem}"]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping of keys"])
        data = loaded
    try:
        return AgentConfig(**data)
    except ValidationError as exc:
        problems = [_format_error(e) for e in exc.errors(include_input=False, include_url=False)]
        raise ConfigError(problems) from None
