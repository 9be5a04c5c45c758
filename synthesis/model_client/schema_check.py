"""Validation of model replies against a JSON schema, for the subset structured-output engines use.

Why not the `jsonschema` package: it is not in the environment, and the schemas a reply can be
constrained to are a documented subset anyway (OpenAI's strict mode, vLLM's xgrammar/guidance):
types, properties/required/additionalProperties, items/prefixItems, enum/const, anyOf/oneOf/allOf/not,
local $ref into $defs, and the string/number/array bounds. `check_schema` refuses any other keyword
when the client is built, so a schema is never silently validated only in part.
"""

from __future__ import annotations

import math
import re
from typing import Any

# Keywords that constrain a value; each is checked by `_violation`.
CHECKED = {
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "$ref",
    "minProperties",
    "maxProperties",
}
# Keywords that annotate and never constrain (format is an annotation by default in JSON Schema).
ANNOTATIONS = {
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
}
TYPES = {"string", "number", "integer", "boolean", "null", "object", "array"}
SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
MAX_DEPTH = 64  # $ref cycles in a value-driven walk end at the value's depth; this bounds the rest


class SchemaError(ValueError):
    """A response schema the client cannot validate (an unknown keyword, a malformed part)."""


def check_schema(schema: Any, path: str = "#", root: Any = None) -> None:
    root = schema if root is None else root
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"{path}: a schema must be an object or a boolean, got {type(schema).__name__}")
    unknown = sorted(set(schema) - CHECKED - ANNOTATIONS)
    if unknown:
        raise SchemaError(f"{path}: keyword(s) {', '.join(unknown)} are not validated by the model client")
    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else ([kinds] if kinds is not None else []):
        if kind not in TYPES:
            raise SchemaError(f"{path}/type: unknown type {kind!r}")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except re.error as exc:
            raise SchemaError(f"{path}/pattern: {exc}") from None
    if "$ref" in schema:
        _resolve(root, schema["$ref"], path)
    for key in ("$defs", "definitions", "properties"):
        for name, sub in (schema.get(key) or {}).items():
            check_schema(sub, f"{path}/{key}/{name}", root)
    for key in ("additionalProperties", "items", "not"):
        if key in schema:
            check_schema(schema[key], f"{path}/{key}", root)
    for key in SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key) or []):
            check_schema(sub, f"{path}/{key}/{i}", root)


def first_violation(value: Any, schema: Any) -> str | None:
    """None when `value` satisfies `schema`, else a short reason naming where it fails."""
    return _violation(value, schema, schema, "$", 0)


def _resolve(root: Any, ref: str, path: str = "#") -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise SchemaError(f"{path}/$ref: only local references (#/...) are supported, got {ref!r}")
    node = root
    for token in [t for t in ref[1:].split("/") if t]:
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or token not in node:
            raise SchemaError(f"{path}/$ref: {ref!r} does not resolve")
        node = node[token]
    return node


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        )
    if kind == "number":
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    return isinstance(value, dict)


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: 1 == 1.0, but True is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _violation(value: Any, schema: Any, root: Any, where: str, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        return f"{where}: nested deeper than {MAX_DEPTH}"
    if schema is True:
        return None
    if schema is False:
        return f"{where}: no value is allowed here"
    if "$ref" in schema:
        found = _violation(value, _resolve(root, schema["$ref"]), root, where, depth + 1)
        if found:
            return found
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_type_ok(value, k) for k in kinds):
            return f"{where}: expected {'/'.join(kinds)}, got {_json_type(value)}"
    if "const" in schema and not _equal(value, schema["const"]):
        return f"{where}: must be {schema['const']!r}"
    if "enum" in schema and not any(_equal(value, e) for e in schema["enum"]):
        return f"{where}: {_short(value)} is not one of {schema['enum']!r}"
    for check in (_string, _number, _array, _object, _combined):
        found = check(value, schema, root, where, depth)
        if found:
            return found
    return None


def _string(value: Any, schema: dict, root: Any, where: str, depth: int) -> str | None:
    if not isinstance(value, str):
        return None
    if "minLength" in schema and len(value) < schema["minLength"]:
        return f"{where}: shorter than {schema['minLength']} characters"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        return f"{where}: longer than {schema['maxLength']} characters"
    if "pattern" in schema and not re.search(schema["pattern"], value):
        return f"{where}: does not match {schema['pattern']!r}"
    return None


def _number(value: Any, schema: dict, root: Any, where: str, depth: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if "minimum" in schema and value < schema["minimum"]:
        return f"{where}: {value} < minimum {schema['minimum']}"
    if "maximum" in schema and value > schema["maximum"]:
        return f"{where}: {value} > maximum {schema['maximum']}"
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return f"{where}: {value} <= exclusiveMinimum {schema['exclusiveMinimum']}"
    if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
        return f"{where}: {value} >= exclusiveMaximum {schema['exclusiveMaximum']}"
    if "multipleOf" in schema:
        ratio = value / schema["multipleOf"]
        if not math.isclose(ratio, round(ratio), rel_tol=1e-9, abs_tol=1e-9):
            return f"{where}: not a multiple of {schema['multipleOf']}"
    return None


def _array(value: Any, schema: dict, root: Any, where: str, depth: int) -> str | None:
    if not isinstance(value, list):
        return None
    if "minItems" in schema and len(value) < schema["minItems"]:
        return f"{where}: fewer than {schema['minItems']} items"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return f"{where}: more than {schema['maxItems']} items"
    if schema.get("uniqueItems") and any(_equal(a, b) for i, a in enumerate(value) for b in value[i + 1 :]):
        return f"{where}: items are not unique"
    prefix = schema.get("prefixItems") or []
    for i, item in enumerate(value):
        sub = prefix[i] if i < len(prefix) else schema.get("items", True)
        found = _violation(item, sub, root, f"{where}[{i}]", depth + 1)
        if found:
            return found
    return None


def _object(value: Any, schema: dict, root: Any, where: str, depth: int) -> str | None:
    if not isinstance(value, dict):
        return None
    missing = [k for k in schema.get("required", []) if k not in value]
    if missing:
        return f"{where}: missing required {', '.join(map(repr, missing))}"
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        return f"{where}: fewer than {schema['minProperties']} properties"
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        return f"{where}: more than {schema['maxProperties']} properties"
    properties = schema.get("properties") or {}
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            found = _violation(item, properties[key], root, f"{where}.{key}", depth + 1)
        elif extra is False:
            found = f"{where}: unexpected property {key!r}"
        else:
            found = _violation(item, extra, root, f"{where}.{key}", depth + 1)
        if found:
            return found
    return None


def _combined(value: Any, schema: dict, root: Any, where: str, depth: int) -> str | None:
    for sub in schema.get("allOf") or []:
        found = _violation(value, sub, root, where, depth + 1)
        if found:
            return found
    if "anyOf" in schema and all(_violation(value, s, root, where, depth + 1) for s in schema["anyOf"]):
        return f"{where}: matches none of anyOf"
    if "oneOf" in schema:
        matched = sum(_violation(value, s, root, where, depth + 1) is None for s in schema["oneOf"])
        if matched != 1:
            return f"{where}: matches {matched} of oneOf, not exactly one"
    if "not" in schema and _violation(value, schema["not"], root, where, depth + 1) is None:
        return f"{where}: matches a schema it must not"
    return None


def _json_type(value: Any) -> str:
    for kind in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _type_ok(value, kind):
            return kind
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
