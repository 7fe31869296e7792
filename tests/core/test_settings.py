"""Settings: file, env, unknown keys, secrets."""

from __future__ import annotations

import pytest

from keel.errors import ConfigError
from keel.settings import load_settings, resolve_secret


def test_defaults(tmp_path):
    s = load_settings(environ={"KEEL_CONFIG": str(tmp_path / "none.toml")})
    assert s.server.port == 7400 and s.server.host == "127.0.0.1"
    assert s.store.url == "sqlite:///.keel/keel.db"


def test_file_and_env_override(tmp_path):
    f = tmp_path / "keel.toml"
    f.write_text('[server]\nport = 7500\n[store]\nurl = "memory://"\n')
    s = load_settings(f, environ={"KEEL_SERVER__PORT": "7600"})
    assert s.server.port == 7600 and s.store.url == "memory://" and s.source == str(f)


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "keel.toml"
    f.write_text("[server]\nprot = 1\n")
    with pytest.raises(ConfigError) as e:
        load_settings(f, environ={})
    assert "server.prot" in e.value.message and str(f) in e.value.message


def test_bad_toml(tmp_path):
    f = tmp_path / "keel.toml"
    f.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(f, environ={})


def test_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_secrets():
    assert resolve_secret("env:K", environ={"K": "v"}) == "v"
    with pytest.raises(ConfigError, match="MISSING"):
        resolve_secret("env:MISSING", environ={})
