"""Typed settings: defaults < ``keel.toml`` < ``KEEL_*`` environment < explicit arguments.

Each setting is declared once here. Unknown keys are rejected with a message naming the key
and the file. Secrets are written as ``env:NAME`` and resolved only where they are used, so
they never sit in a config dump or a log line.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from keel.errors import ConfigError

DEFAULT_CONFIG_FILE = "keel.toml"
ENV_PREFIX = "KEEL_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ServerSettings(_Section):
    """The HTTP server."""

    host: str = "127.0.0.1"
    port: int = Field(7400, ge=1, le=65535)
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="cap on any request body, after decompression"
    )
    public_url: str | None = None
    allow_open: bool | None = Field(
        None,
        description="run without auth; only honoured on a loopback bind. None = open when no key exists",
    )


class StoreSettings(_Section):
    """Where Keel keeps its record."""

    url: str = "sqlite:///.keel/keel.db"
    pool_size: int = Field(10, ge=1)


class TracingSettings(_Section):
    """OTLP ingest."""

    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    queue_max_spans: int = Field(200_000, ge=1000)
    batch_max_spans: int = Field(5_000, ge=1)
    forward_endpoint: str | None = None
    forward_headers: dict[str, str] = Field(default_factory=dict)
    trace_idle_s: float = Field(30.0, gt=0)


class Settings(_Section):
    """All of Keel's settings."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    gateway: dict[str, Any] = Field(
        default_factory=dict, description="validated by keel.gateway.config"
    )
    evals: dict[str, Any] = Field(default_factory=dict)
    prompts: dict[str, Any] = Field(
        default_factory=dict, description="prompt registry: webhooks = [{url, secret, events}]"
    )
    source: str | None = Field(None, description="the file these settings were read from")


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    cur = data
    for p in path[:-1]:
        cur = cur.setdefault(p, {})
        if not isinstance(cur, dict):
            raise ConfigError(f"KEEL_{'__'.join(path).upper()} conflicts with a non-table value")
    cur[path[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        path = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
        _set_path(out, path, raw)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _format_errors(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}' in {where}")
        else:
            lines.append(f"'{loc}' in {where}: {err['msg']}")
    return "; ".join(lines)


def load_settings(
    path: str | Path | None = None,
    *,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Load settings from a TOML file (``keel.toml`` or ``$KEEL_CONFIG`` if present) and env.

    Raises :class:`ConfigError` naming the offending key and file.
    """
    env = dict(os.environ if environ is None else environ)
    file = Path(path) if path else Path(env.get("KEEL_CONFIG", DEFAULT_CONFIG_FILE))
    data: dict[str, Any] = {}
    where = "defaults"
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{file} is not valid TOML: {e}", hint="fix the syntax and retry")
        except UnicodeDecodeError:
            raise ConfigError(f"{file} is not UTF-8 text")
        where = str(file)
    elif path:
        raise ConfigError(
            f"config file {file} does not exist", hint="check the path or omit --config"
        )
    env_data = _env_overrides(env)
    merged = _merge(_merge(data, env_data), overrides or {})
    if where != "defaults":
        merged["source"] = str(file)
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        src = where if not env_data else f"{where} or KEEL_* environment"
        raise ConfigError(_format_errors(e, src), hint="see docs/configuration.md for every key")


def resolve_secret(value: str | None, *, environ: dict[str, str] | None = None) -> str | None:
    """Resolve ``env:NAME`` to the variable's value; other strings are returned as they are."""
    if value is None:
        return None
    if value.startswith("env:"):
        name = value[4:]
        env = os.environ if environ is None else environ
        if name not in env:
            raise ConfigError(
                f"secret refers to environment variable {name}, which is not set",
                hint=f"export {name}=... before starting Keel",
            )
        return env[name]
    return value
