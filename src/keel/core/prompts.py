"""Prompt versions (immutable, content-addressed, numbered per prompt) and movable labels."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from keel.core.hashing import content_hash

PROTECTED_BY_DEFAULT = frozenset({"production"})


class PromptMessage(BaseModel):
    """One message of a chat template."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class PromptContent(BaseModel):
    """What a prompt version *is*: the part that is hashed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["text", "chat"] = "chat"
    template: str | None = None
    messages: list[PromptMessage] = Field(default_factory=list)
    engine: Literal["mustache", "jinja"] = "mustache"
    model_config_: dict[str, Any] = Field(default_factory=dict, alias="model_config")
    variables_schema: dict[str, Any] = Field(default_factory=dict)

    def hash(self) -> str:
        """Content hash over template, model config and variables schema."""
        return content_hash(self.model_dump(mode="json", by_alias=True))


class PromptVersion(BaseModel):
    """An immutable prompt version."""

    model_config = ConfigDict(frozen=True)

    id: str
    project_id: str
    name: str
    version: int
    content: PromptContent
    content_hash: str
    message: str | None = None
    author: str | None = None
    created_at: datetime


class PromptLabel(BaseModel):
    """A named pointer (``production``, ``canary``, …) at one version of a prompt."""

    project_id: str
    prompt_name: str
    label: str
    version: int
    protected: bool = False
    updated_at: datetime
