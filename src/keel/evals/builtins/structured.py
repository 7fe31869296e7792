"""JSONValidation: the response parses as JSON and validates against a JSON Schema."""

from __future__ import annotations

import json
import re
from typing import Any

from keel.errors import InvalidInputError
from keel.evals.base import EvalResult, Evaluator

_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


def parse_json(value: Any, *, extract: bool = True) -> tuple[Any, str | None]:
    """``(parsed, None)`` or ``(None, error)``. Dicts and lists pass through as already parsed.

    With ``extract=True`` a response wrapped in a Markdown code fence, or with prose around one
    JSON object/array, is accepted (the first balanced ``{...}``/``[...]`` that parses).
    """
    if isinstance(value, dict | list):
        return value, None
    if not isinstance(value, str):
        return None, f"expected a JSON string, got {type(value).__name__}"
    text = value.strip()
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        first_error = f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
    if not extract:
        return None, first_error
    m = _FENCE.match(text)
    if m:
        try:
            return json.loads(m.group(1)), None
        except json.JSONDecodeError:
            pass
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                obj, _end = dec.raw_decode(text, i)
                return obj, None
            except json.JSONDecodeError:
                continue
    return None, first_error


class JSONValidation(Evaluator):
    """1.0 when the response is JSON (and valid under ``schema``, if given), else 0.0.

    ``extract`` (default True) accepts JSON inside a code fence or surrounded by prose; set it
    False to demand the bare document. Schema errors are listed in ``details["errors"]``.
    """

    name = "JSONValidation"
    aliases = ("JSONSchema", "ValidJSON")
    required_inputs = frozenset({"response"})
    default_threshold = 1.0

    def __init__(
        self,
        schema: dict[str, Any] | None = None,
        *,
        threshold: float | None = None,
        extract: bool = True,
    ) -> None:
        super().__init__(threshold=threshold, schema=schema, extract=extract)
        self.schema = schema
        self.extract = extract
        self._validator: Any = None
        if schema is not None:
            try:
                import jsonschema
            except ImportError as e:  # pragma: no cover - jsonschema ships with the server extra
                raise InvalidInputError(
                    "JSONValidation with a schema needs `pip install jsonschema`"
                ) from e
            cls = jsonschema.validators.validator_for(schema)
            try:
                cls.check_schema(schema)
            except jsonschema.SchemaError as e:
                raise InvalidInputError(f"invalid JSON Schema: {e.message}") from e
            self._validator = cls(schema, format_checker=cls.FORMAT_CHECKER)

    def _evaluate(self, *, response: Any, **_: Any) -> EvalResult:
        obj, err = parse_json(response, extract=self.extract)
        if err is not None:
            return EvalResult(0.0, err, {"parsed": False})
        if self._validator is None:
            return EvalResult(1.0, "valid JSON", {"parsed": True})
        errors = sorted(self._validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
        if errors:
            msgs = [
                f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in errors[:20]
            ]
            return EvalResult(
                0.0,
                f"{len(errors)} schema error(s); first: {msgs[0]}",
                {"parsed": True, "errors": msgs},
            )
        return EvalResult(1.0, "valid JSON matching the schema", {"parsed": True})


EVALUATORS = [JSONValidation]
