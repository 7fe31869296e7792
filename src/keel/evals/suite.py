"""Eval suite files: what to run (target), on what (dataset), judged how (evaluators, gate).

A suite is YAML validated by the pydantic models below; ``docs/schemas/eval-suite.schema.json``
is generated from them (``python -m keel.evals.suite > docs/schemas/eval-suite.schema.json``),
so editors can complete and check suite files. Example::

    name: refund-agent
    target:
      prompt: refund-agent@canary      # a prompt version or label, rendered per row ...
      model: fake:echo                 # ... and sent to a model (or `route: support`)
    dataset: refund-cases@3            # name@version (or {path: rows.jsonl} / inline rows)
    evaluators:
      - exact_match
      - {name: contains, threshold: 1.0}
    gate:
      rules: ["exact_match.pass_rate>=0.8"]
      min_samples: 20
      regression: {margin: 0.02}
    baseline: production               # a run id, or the prompt label whose last passed run to use
    run: {concurrency: 16, repeat: 1, retries: 3}

A ``python: myapp.agent:answer`` target calls an app or agent per row; spans it emits during the
call are captured and given to evaluators as ``trace``.

Unknown keys are rejected; every error names the path inside the file.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from keel.core.datasets import Row
from keel.core.hashing import content_hash
from keel.errors import ConfigError
from keel.evals.gates import GateSpec, parse_rule

_REF_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-/]*)(@(?P<ref>[A-Za-z0-9_.\-]+))?$")
_PY_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def split_ref(text: str, what: str) -> tuple[str, str | None]:
    """``name@ref`` -> (name, ref); ref is a version number or a label (or None)."""
    m = _REF_RE.match(text.strip())
    if not m:
        raise ValueError(f"{what} must look like NAME or NAME@VERSION|LABEL, got {text!r}")
    return m.group("name"), m.group("ref")


class TargetSpec(_Model):
    """What answers each row: a prompt sent to a model or route, or a Python callable."""

    prompt: str | None = Field(None, description="NAME@VERSION or NAME@LABEL")
    model: str | None = Field(
        None, description="a model, e.g. fake:echo, local:smollm2, gpt-4o-mini"
    )
    route: str | None = Field(None, description="a gateway route name")
    python: str | None = Field(None, description="module.path:callable for an app or agent")
    base_url: str | None = Field(
        None,
        description="an OpenAI-compatible endpoint (…/v1) for model or route, e.g. a Keel gateway",
    )
    api_key: str | None = Field(None, description="key for base_url; write env:NAME")
    params: dict[str, Any] = Field(
        default_factory=dict, description="request fields that override the prompt's model config"
    )
    variables: dict[str, str] = Field(
        default_factory=dict,
        description="prompt variable -> row field (input.x, expected_output, context, metadata.x)",
    )
    capture_traces: bool = Field(True, description="python targets: capture emitted spans")

    @model_validator(mode="after")
    def _one_kind(self) -> TargetSpec:
        if self.python and (self.prompt or self.model or self.route):
            raise ValueError("a python target cannot also set prompt, model or route")
        if not self.python and not (self.model or self.route):
            raise ValueError("set python, or model/route (with an optional prompt)")
        if self.model and self.route:
            raise ValueError("set model or route, not both")
        if self.python and not _PY_RE.match(self.python):
            raise ValueError(f"python must be module.path:callable, got {self.python!r}")
        if self.prompt:
            split_ref(self.prompt, "prompt")
        return self

    @property
    def kind(self) -> Literal["prompt", "model", "python"]:
        """``prompt`` (rendered then sent), ``model`` (row messages sent as they are), ``python``."""
        if self.python:
            return "python"
        return "prompt" if self.prompt else "model"

    def label(self) -> str:
        """A short human name: ``prompt refund-agent@canary -> fake:echo``."""
        if self.python:
            return f"python {self.python}"
        dest = f"route {self.route}" if self.route else str(self.model)
        return f"prompt {self.prompt} -> {dest}" if self.prompt else dest


class DatasetSpec(_Model):
    """A stored dataset version, a file (JSONL/JSON/YAML rows), or rows written inline."""

    name: str | None = None
    version: int | None = Field(None, ge=1, description="None = the latest version")
    path: str | None = Field(
        None, description="a JSONL/JSON/YAML file of rows, relative to the suite"
    )
    rows: list[Row] | None = None
    split: str | None = Field(None, description="only rows of this split")
    limit: int | None = Field(None, ge=1, description="only the first N rows")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if sum(x is not None for x in (self.name, self.path, self.rows)) != 1:
            raise ValueError("a dataset is one of: name (name@version), path, rows")
        return self

    def label(self) -> str:
        """``name@version`` / the path / ``inline``."""
        if self.name:
            return f"{self.name}@{self.version}" if self.version else self.name
        return self.path or "inline"


class EvaluatorSpec(_Model):
    """An evaluator by registry name (or ``module:Class``), with threshold and config."""

    name: str = Field(description="registry name, e.g. groundedness, or module.path:Class")
    alias: str | None = Field(None, description="name in reports (default: the evaluator's name)")
    threshold: float | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="evaluator input -> source (output, input, input.x, expected_output, context, metadata.x, trace)",
    )
    short: Any = Field(None, description="the evaluator's short argument ({Contains: refund})")

    @model_validator(mode="before")
    @classmethod
    def _extra_into_config(cls, v: Any) -> Any:
        if isinstance(v, dict):
            known = {"name", "alias", "threshold", "config", "inputs", "short"}
            extra = {k: x for k, x in v.items() if k not in known}
            if extra:
                v = {k: x for k, x in v.items() if k in known}
                v["config"] = {**extra, **(v.get("config") or {})}
        return v


class RunSpec(_Model):
    """How the runner behaves."""

    concurrency: int = Field(8, ge=1, le=4096)
    repeat: int = Field(
        1, ge=1, le=100, description="run each row N times (nondeterministic targets)"
    )
    retries: int = Field(3, ge=0, le=20, description="retries of a retryable provider error")
    backoff_s: float = Field(0.5, ge=0, description="first retry delay; doubles with jitter")
    timeout_s: float = Field(120.0, gt=0, description="per-row target timeout")
    rate_limits: dict[str, float] = Field(
        default_factory=dict, description="requests per second per provider (prefix of the model)"
    )
    cache: bool = Field(True, description="reuse model outputs for identical requests")
    max_cost_usd: float | None = Field(None, ge=0, description="stop sending once spent")
    evaluator_threads: int = Field(
        0, ge=0, le=64, description="run evaluators in N threads (0 = inline in the event loop)"
    )


class Suite(_Model):
    """An eval suite file."""

    name: str = Field(description="suite name (runs are listed by it)")
    description: str | None = None
    target: TargetSpec
    dataset: DatasetSpec
    evaluators: list[EvaluatorSpec] = Field(min_length=1)
    gate: GateSpec = Field(default_factory=GateSpec)
    baseline: str | None = Field(None, description="a run id, or a prompt label (e.g. production)")
    run: RunSpec = Field(default_factory=RunSpec)
    links: str | None = Field(
        None, description="base URL of the Keel UI for report links (default: server.public_url)"
    )

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_short(cls, v: Any) -> Any:
        if isinstance(v, str):
            name, ref = split_ref(v, "dataset")
            if ref is not None and not ref.isdigit():
                raise ValueError(f"dataset version must be a number, got {ref!r}")
            return {"name": name, "version": int(ref) if ref else None}
        return v

    @field_validator("evaluators", mode="before")
    @classmethod
    def _evaluators_short(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        out = []
        for item in v:
            if isinstance(item, str):
                out.append({"name": item})
            elif isinstance(item, dict) and len(item) == 1 and "name" not in item:
                ((k, cfg),) = item.items()
                if isinstance(cfg, dict):
                    out.append({"name": k, **cfg})
                elif cfg is None:
                    out.append({"name": k})
                else:
                    out.append({"name": k, "short": cfg})
            else:
                out.append(item)
        return out

    @field_validator("gate", mode="before")
    @classmethod
    def _gate_short(cls, v: Any) -> Any:
        if isinstance(v, list):
            return {"rules": v}
        return v

    @model_validator(mode="after")
    def _unique_evaluators(self) -> Suite:
        names = [e.alias or e.name for e in self.evaluators]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"evaluator names must be unique (use alias): {sorted(dup)}")
        return self

    def config_hash(self) -> str:
        """Hash of everything that determines results (not concurrency, not output files)."""
        data = self.model_dump(
            mode="json",
            exclude={"run": {"concurrency", "rate_limits", "evaluator_threads"}, "links": True},
        )
        return content_hash(data)


def _format(e: ValidationError, where: str) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{where}: {loc}: {msg}")
    return "; ".join(parts)


def parse_suite(data: Any, *, where: str = "suite") -> Suite:
    """Validate a suite from parsed YAML/JSON; :class:`ConfigError` names each bad path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a suite is a mapping (name, target, dataset, evaluators)")
    try:
        return Suite.model_validate(data)
    except ValidationError as e:
        raise ConfigError(
            _format(e, where), hint="see docs/eval-ci.md and docs/schemas/eval-suite.schema.json"
        )
    except ConfigError as e:  # a gate rule that does not parse
        raise ConfigError(f"{where}: {e.message}", hint=e.hint)


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; relative dataset paths resolve against its folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"suite file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}")
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not UTF-8 text")
    suite = parse_suite(data, where=str(p))
    if suite.dataset.path and not Path(suite.dataset.path).is_absolute():
        suite.dataset.path = str((p.parent / suite.dataset.path).resolve())
    return suite


def apply_overrides(
    suite: Suite,
    *,
    target: list[str] | None = None,
    dataset: str | None = None,
    gates: list[str] | None = None,
    baseline: str | None = None,
    concurrency: int | None = None,
    max_cost: float | None = None,
    repeat: int | None = None,
) -> Suite:
    """Apply CLI flags on top of the file; the result is validated again.

    ``target`` items are ``prompt:NAME@REF``, ``model:NAME``, ``route:NAME``, ``python:mod:fn``
    or ``base_url:URL``. Flag gates are added to the file's rules (a rule on the same
    evaluator and metric replaces the file's).
    """
    data = suite.model_dump(mode="json", exclude_none=True)
    if target:
        t = dict(data["target"])
        for item in target:
            key, sep, value = item.partition(":")
            if not sep or key not in ("prompt", "model", "route", "python", "base_url"):
                raise ConfigError(
                    f"--target {item!r}: write prompt:NAME@REF, model:NAME, route:NAME, python:mod:fn or base_url:URL"
                )
            if key == "python":
                t = {k: v for k, v in t.items() if k not in ("prompt", "model", "route")}
            if key in ("model", "route"):
                t.pop("model", None)
                t.pop("route", None)
                t.pop("python", None)
            if key == "prompt":
                t.pop("python", None)
            t[key] = value
        data["target"] = t
    if dataset:
        data["dataset"] = dataset
    if gates:
        g = dict(data.get("gate") or {})
        rules = [parse_rule(x) for x in gates]
        keep = [
            r
            for r in g.get("rules", [])
            if not any(
                n.evaluator == r.get("evaluator") and n.metric == r.get("metric") for n in rules
            )
        ]
        g["rules"] = keep + [r.model_dump() for r in rules]
        data["gate"] = g
    if baseline:
        data["baseline"] = baseline
    run = dict(data.get("run") or {})
    if concurrency is not None:
        run["concurrency"] = concurrency
    if repeat is not None:
        run["repeat"] = repeat
    if max_cost is not None:
        run["max_cost_usd"] = max_cost
        g = dict(data.get("gate") or {})
        g["max_cost_usd"] = max_cost
        data["gate"] = g
    data["run"] = run
    return parse_suite(data, where="suite (with flags)")


def json_schema() -> dict[str, Any]:
    """The published JSON Schema of suite files."""
    schema = Suite.model_json_schema()
    # The short forms the validators accept, so editors do not flag them.
    props = schema["properties"]
    props["dataset"] = {
        "anyOf": [
            {"type": "string", "description": "NAME or NAME@VERSION"},
            props["dataset"],
        ]
    }
    ev_items = props["evaluators"]["items"]
    props["evaluators"]["items"] = {
        "anyOf": [
            {"type": "string", "description": "an evaluator name"},
            {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "description": "{Name: options or short argument}",
            },
            ev_items,
        ]
    }
    props["gate"] = {"anyOf": [{"type": "array", "items": {"type": "string"}}, props["gate"]]}
    schema["$defs"]["EvaluatorSpec"]["additionalProperties"] = True  # options go into config
    gate_def = schema["$defs"]["GateSpec"]["properties"]["rules"]
    gate_def["items"] = {
        "anyOf": [
            {
                "type": "string",
                "description": "EVALUATOR.METRIC>=VALUE, e.g. groundedness.mean>=0.8",
            },
            gate_def["items"],
        ]
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://keel.dev/schemas/eval-suite.schema.json"
    schema["title"] = "Keel eval suite"
    return schema


def main() -> None:
    """Print the JSON Schema (``python -m keel.evals.suite``)."""
    sys.stdout.write(
        orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        + "\n"
    )


if __name__ == "__main__":
    main()
