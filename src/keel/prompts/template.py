"""Rendering prompt templates: ``{{variable}}`` substitution, and a sandboxed Jinja mode.

The default engine (``mustache``) evaluates nothing: it substitutes ``{{name}}`` (or a dotted
path through mappings, ``{{user.name}}``) and includes other prompts with ``{{> name@label}}``.
Any other ``{{ … }}`` is refused at parse time, so a payload such as
``{{ ''.__class__.__mro__ }}`` is a clear error, never code.

The ``jinja`` engine runs in :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` with no
loader (so ``{% include %}``/``{% import %}``/``{% extends %}`` are refused before rendering),
strict undefined variables, a minimal set of globals, and capped ``*``/``**`` so a template
cannot allocate unbounded memory. Template injection (CVE-2026-42203 in a peer) relies on
attribute access to Python internals; the sandbox refuses it and we report a clear error.

Missing and extra variables are errors in both engines: a render either uses exactly the
variables it was given, or fails before producing text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInputError

if TYPE_CHECKING:
    from keel.core.prompts import PromptContent

MAX_INCLUDE_DEPTH = 8
MAX_OUTPUT_CHARS = 1_000_000

_TAG = re.compile(r"\{\{(.*?)\}\}", re.S)
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*$")
_REF = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._/-]{0,127}?)(?:@([A-Za-z0-9][A-Za-z0-9._-]{0,127}))?$")
_INCLUDE_VAR = "keel_include_{}"


@dataclass(frozen=True)
class PromptRef:
    """A reference to a prompt: ``name``, ``name@label`` or ``name@3``."""

    name: str
    label: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        return f"{self.name}@{self.label or 'production'}"


def parse_ref(text: str, *, default_label: str = "production") -> PromptRef:
    """Parse ``name``, ``name@label`` or ``name@N`` (a bare name means ``default_label``)."""
    m = _REF.match(text.strip())
    if not m or ".." in text:
        raise InvalidInputError(
            f"invalid prompt reference {text!r}",
            hint="write name, name@label or name@version, e.g. refund-agent@production",
        )
    name, tail = m.group(1), m.group(2)
    if tail is None:
        return PromptRef(name, label=default_label)
    if tail.isdigit():
        return PromptRef(name, version=int(tail))
    return PromptRef(name, label=tail)


Resolver = Callable[[PromptRef], "PromptContent"]


# -- mustache -------------------------------------------------------------------------------


def _tags(text: str) -> Iterable[tuple[re.Match[str], str, str]]:
    """Yield (match, kind, value): kind is 'var' or 'include'."""
    for m in _TAG.finditer(text):
        inner = m.group(1).strip()
        if inner.startswith(">"):
            yield m, "include", inner[1:].strip()
        elif _VAR.match(inner):
            yield m, "var", inner
        else:
            shown = m.group(0) if len(m.group(0)) <= 60 else m.group(0)[:57] + "…"
            raise InvalidInputError(
                f"unsupported template tag {shown!r}",
                hint="templates substitute {{name}} and include {{> prompt@label}}; expressions "
                "are not evaluated (use engine: jinja for logic, which runs sandboxed)",
            )


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def _lookup(variables: Mapping[str, Any], path: str) -> Any:
    head, *rest = path.split(".")
    value: Any = variables[head]
    for i, part in enumerate(rest):
        if not isinstance(value, Mapping) or part not in value:
            raise InvalidInputError(
                f"variable {'.'.join([head, *rest[: i + 1]])!r} is missing",
                hint="dotted names look up keys of mappings only",
            )
        value = value[part]
    return value


def mustache_variables(text: str) -> set[str]:
    """Root variable names a mustache template uses."""
    return {v.split(".")[0] for _, kind, v in _tags(text) if kind == "var"}


def includes(text: str) -> list[PromptRef]:
    """Prompts a template includes with ``{{> ref}}``, in order of appearance."""
    return [parse_ref(v) for _, kind, v in _tags(text) if kind == "include"]


def _render_mustache(text: str, variables: Mapping[str, Any], included: Mapping[str, str]) -> str:
    out: list[str] = []
    pos = 0
    for m, kind, value in _tags(text):
        out.append(text[pos : m.start()])
        if kind == "include":
            out.append(included[str(parse_ref(value))])
        else:
            out.append(_format(_lookup(variables, value)))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


# -- jinja ---------------------------------------------------------------------------------

_jinja_env: Any = None


def _jinja() -> Any:
    global _jinja_env
    if _jinja_env is None:
        _jinja_env = _make_jinja_env()
    return _jinja_env


def _make_jinja_env() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.exceptions import SecurityError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _PromptSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**":
                if isinstance(right, int | float) and abs(right) > 64:
                    raise SecurityError("exponent too large in a prompt template")
                if isinstance(left, int) and left.bit_length() * abs(right) > 65_536:
                    raise SecurityError("power too large in a prompt template")
                return left**right
            for seq, n in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(n, int)
                    and len(seq) * n > MAX_OUTPUT_CHARS
                ):
                    raise SecurityError("repetition too large in a prompt template")
            return left * right

    env = _PromptSandbox(
        loader=None,
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        extensions=(),
    )
    env.globals = {"range": env.globals["range"], "dict": dict}
    return env


_FORBIDDEN_NODES = ("Include", "Import", "FromImport", "Extends")


def _jinja_parse(text: str) -> Any:
    from jinja2 import TemplateSyntaxError, nodes

    try:
        ast = _jinja().parse(text)
    except TemplateSyntaxError as e:
        raise InvalidInputError(f"Jinja syntax error on line {e.lineno}: {e.message}")
    for kind in _FORBIDDEN_NODES:
        if any(True for _ in ast.find_all(getattr(nodes, kind))):
            raise InvalidInputError(
                f"{{% {kind.lower()} %}} is not allowed in prompt templates",
                hint="templates cannot read files; include another prompt with {{> name@label}}",
            )
    return ast


def _jinja_split(text: str) -> tuple[str, list[PromptRef]]:
    """Replace ``{{> ref}}`` with placeholder variables (Jinja has no such syntax)."""
    refs: list[PromptRef] = []

    def sub(m: re.Match[str]) -> str:
        refs.append(parse_ref(m.group(1).strip()))
        return "{{ " + _INCLUDE_VAR.format(len(refs) - 1) + " }}"

    return re.sub(r"\{\{\s*>\s*(.*?)\}\}", sub, text), refs


def jinja_variables(text: str) -> set[str]:
    """Root variable names a Jinja template uses."""
    from jinja2 import meta

    src, _ = _jinja_split(text)
    names = meta.find_undeclared_variables(_jinja_parse(src))
    return {n for n in names if not n.startswith("keel_include_")} - set(_jinja().globals)


def _render_jinja(text: str, variables: Mapping[str, Any], included: Mapping[str, str]) -> str:
    from jinja2.exceptions import SecurityError, TemplateError, UndefinedError

    src, refs = _jinja_split(text)
    ast = _jinja_parse(src)
    inc = {_INCLUDE_VAR.format(i): included[str(r)] for i, r in enumerate(refs)}
    try:
        out: str = _jinja().from_string(ast).render({**variables, **inc})
    except SecurityError as e:
        raise InvalidInputError(
            f"template blocked by the sandbox: {e}",
            hint="prompt templates may not reach Python internals, files or the network",
        )
    except UndefinedError as e:
        raise InvalidInputError(f"template error: {e}")
    except TemplateError as e:
        raise InvalidInputError(f"template error: {e}")
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError) as e:
        raise InvalidInputError(f"template failed to render: {type(e).__name__}: {e}")
    if len(out) > MAX_OUTPUT_CHARS:
        raise InvalidInputError("rendered prompt is too large (over 1,000,000 characters)")
    return out


# -- content level ---------------------------------------------------------------------------


def texts(content: PromptContent) -> list[str]:
    """Every template text of a prompt (the template, or each message's content)."""
    if content.type == "text":
        return [content.template or ""]
    return [m.content for m in content.messages]


def own_variables(content: PromptContent) -> set[str]:
    """Variables the prompt's own texts use (not counting includes)."""
    fn = jinja_variables if content.engine == "jinja" else mustache_variables
    out: set[str] = set()
    for t in texts(content):
        out |= fn(t)
    return out


def content_includes(content: PromptContent) -> list[PromptRef]:
    """Prompts this prompt includes, deduplicated, in order."""
    seen: dict[str, PromptRef] = {}
    for t in texts(content):
        for r in includes(t) if content.engine == "mustache" else _jinja_split(t)[1]:
            seen.setdefault(str(r), r)
    return list(seen.values())


def _resolve(ref: PromptRef, resolver: Resolver | None, stack: tuple[str, ...]) -> PromptContent:
    if resolver is None:
        raise InvalidInputError(f"prompt includes {ref} but no registry is available to resolve it")
    if ref.name in stack:
        raise InvalidInputError(f"include cycle: {' -> '.join([*stack, ref.name])}")
    if len(stack) >= MAX_INCLUDE_DEPTH:
        raise InvalidInputError(f"includes nest deeper than {MAX_INCLUDE_DEPTH} levels")
    inc = resolver(ref)
    if inc.type != "text":
        raise InvalidInputError(f"included prompt {ref} must be a text prompt, not {inc.type}")
    return inc


def required_variables(
    content: PromptContent, resolver: Resolver | None = None, _stack: tuple[str, ...] = ()
) -> set[str]:
    """Every variable a render needs, includes' variables included."""
    out = own_variables(content)
    for ref in content_includes(content):
        out |= required_variables(_resolve(ref, resolver, _stack), resolver, (*_stack, ref.name))
    return out


def check_variables(required: set[str], given: Iterable[str]) -> None:
    """Raise a clear error when variables are missing or unexpected."""
    given_set = set(given)
    missing = sorted(required - given_set)
    extra = sorted(given_set - required)
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if extra:
            parts.append("unexpected " + ", ".join(extra))
        raise InvalidInputError(
            "template variables do not match: " + "; ".join(parts),
            hint="expected exactly: " + (", ".join(sorted(required)) or "(none)"),
        )


def _render_text(
    content: PromptContent,
    text: str,
    variables: Mapping[str, Any],
    resolver: Resolver | None,
    stack: tuple[str, ...],
) -> str:
    refs = includes(text) if content.engine == "mustache" else _jinja_split(text)[1]
    included: dict[str, str] = {}
    for ref in refs:
        inc = _resolve(ref, resolver, stack)
        needed = required_variables(inc, resolver, (*stack, ref.name))
        sub = {k: v for k, v in variables.items() if k in needed}
        included[str(ref)] = _render_text(
            inc, inc.template or "", sub, resolver, (*stack, ref.name)
        )
    if content.engine == "jinja":
        return _render_jinja(text, variables, included)
    return _render_mustache(text, variables, included)


def render(
    content: PromptContent,
    variables: Mapping[str, Any] | None = None,
    resolver: Resolver | None = None,
    *,
    name: str | None = None,
) -> str | list[dict[str, str]]:
    """Render a prompt: a string for text prompts, a list of ``{role, content}`` for chat.

    ``resolver`` turns a :class:`PromptRef` into the included prompt's content.
    """
    variables = dict(variables or {})
    stack = (name,) if name else ()
    check_variables(required_variables(content, resolver, stack), variables)
    if content.type == "text":
        return _render_text(content, content.template or "", variables, resolver, stack)
    return [
        {"role": m.role, "content": _render_text(content, m.content, variables, resolver, stack)}
        for m in content.messages
    ]


def validate(content: PromptContent) -> None:
    """Check a prompt's syntax (raises :class:`InvalidInputError`); used before storing it."""
    if content.type == "text" and content.template is None:
        raise InvalidInputError("a text prompt needs a template")
    if content.type == "chat" and not content.messages:
        raise InvalidInputError("a chat prompt needs at least one message")
    if content.type == "text" and content.messages:
        raise InvalidInputError("a text prompt has a template, not messages")
    if content.type == "chat" and content.template is not None:
        raise InvalidInputError("a chat prompt has messages, not a template")
    own_variables(content)
    content_includes(content)
