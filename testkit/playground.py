"""The web form Cog's playground draws from an OpenAPI schema, as rules: what each field shows and what Run sends.

Read in replicate/cog's source (`playground/src`, commit 6110c912, the UI behind `cog playground`), the
nearest runnable stand-in for Replicate's web form:
- lib/input/openapi.ts `defaultInput`: the form's first state. An optional input with a `default` key starts
  unticked and is left out of the request (so the predictor's default applies); an optional input without
  one starts ticked, holding `initialInputValue`; a required one holds its default, its first choice or, for
  a boolean, false.
- components/input-view.ts `renderField`: ticking a box sets the field to `initialInputValue`: the schema's
  default when it has one (`schema.default ?? null`: a default of null sends null), else the first choice,
  else the type's empty value (input.ts `emptyInputValue`: [] for an array, {} for an object, false for a
  boolean, "" otherwise). Unticking deletes it.
- input-view.ts `renderControl`: what a field shows. A choice is a select ("Select a value" when nothing is
  chosen); a boolean a true/false select showing `String(value ?? false)`, so "false" while unticked; a
  string a text box (a file picker and a URL box for `format: uri`); a number a number box; an array or an
  object a JSON editor showing `JSON.stringify(value ?? emptyInputValue(schema))`, so `[]` for a null.
- lib/input/validation.ts: before Run sends, the input is checked with ajv (draft 4) against the schema with
  OpenAPI's `nullable` turned into a JSON type `null`, formats checked (`uri` by `validateURI`); a failure
  shows "Input does not match the OpenAPI schema." under the field and nothing is sent.
- Cog's server (coglet, crates/coglet/src/input_validation.rs) then checks the request against the same
  schema with `nullable` ignored: a null for an optional input is a 422.
"""

from __future__ import annotations

import copy
import json
import re

import jsonschema

REF = "#/components/schemas/"
UNSENT = object()  # an unticked field: left out of the request


def resolve(document: dict, schema: dict) -> dict:
    """openapi.ts resolveRef."""
    ref = schema.get("$ref", "")
    return document["components"]["schemas"].get(ref[len(REF):], schema) if ref.startswith(REF) else schema


def effective(document: dict, schema: dict) -> dict:
    """openapi.ts effectiveSchema: a ref resolved; an anyOf of one type and null becomes that type."""
    schema = resolve(document, schema)
    if "anyOf" not in schema:
        return schema
    others = [resolve(document, s) for s in schema["anyOf"] if s.get("type") not in ("null", ["null"])]
    if len(others) != 1:
        return schema
    merged = {**schema, **others[0]}
    del merged["anyOf"]
    return merged


def choices(document: dict, schema: dict) -> list | None:
    """openapi.ts enumValues: an enum, or the enum of a ref under allOf (how Cog writes `choices=`)."""
    schema = effective(document, schema)
    if "enum" in schema:
        return schema["enum"]
    for item in schema.get("allOf", []):
        if "enum" in resolve(document, item):
            return resolve(document, item)["enum"]
    return None


def empty_value(schema: dict):
    """input.ts emptyInputValue."""
    if schema.get("type") == "array":
        return []
    if schema.get("type") == "object" or "properties" in schema:
        return {}
    if schema.get("type") == "boolean":
        return False
    return ""


def initial_value(document: dict, schema: dict):
    """openapi.ts initialInputValue: what ticking a field puts in it."""
    if "default" in schema:
        return schema["default"]  # `schema.default ?? null`: JSON null stays None
    found = choices(document, schema)
    return found[0] if found else empty_value(schema)


def fields(document: dict) -> dict[str, dict]:
    """The Input schema's properties in the form's order (x-order), each as the form reads it."""
    properties = document["components"]["schemas"]["Input"]["properties"]
    ordered = sorted(properties.items(), key=lambda item: item[1].get("x-order", 999))
    return {name: effective(document, schema) for name, schema in ordered}


def required(document: dict) -> set[str]:
    return set(document["components"]["schemas"]["Input"].get("required", []))


def left_as_shown(document: dict) -> dict:
    """openapi.ts defaultInput: the request Run sends for the form as it first appears."""
    form, needed = {}, required(document)
    for name, schema in fields(document).items():
        if name not in needed:
            if "default" not in schema:
                form[name] = initial_value(document, schema)
            continue
        if schema.get("default") is not None:
            form[name] = schema["default"]
        elif choices(document, schema):
            form[name] = choices(document, schema)[0]
        elif schema.get("type") == "boolean":
            form[name] = False
    return form


def ticked_as_shown(document: dict, name: str, form: dict | None = None) -> dict:
    """The request after ticking `name` and touching nothing else (input-view.ts renderField)."""
    form = dict(left_as_shown(document) if form is None else form)
    form[name] = initial_value(document, fields(document)[name])
    return form


def ticked(document: dict, form: dict, name: str) -> bool:
    return name in required(document) or name in form


def shown(document: dict, name: str, form: dict) -> str:
    """What the field's control reads (input-view.ts renderControl), greyed when unticked."""
    schema = fields(document)[name]
    value = form.get(name)  # undefined and null read alike below, as `??` does
    options = choices(document, schema)
    if options is not None:
        return next((str(option) for option in options if option == value and type(option) is type(value)),
                    "Select a value")
    if schema.get("type") == "boolean":
        return "false" if value is None else str(value).lower()
    if schema.get("type") == "string":
        if schema.get("format") == "uri":  # the URL box; a chosen file's data URL is not shown in it
            return value if isinstance(value, str) and not re.match(r"^data:[^,]*,", value, re.I) else ""
        return "" if value is None else str(value)
    if schema.get("type") in ("integer", "number"):
        return "" if value is None else str(value)
    return as_json(empty_value(schema) if value is None else value)


def as_json(value) -> str:
    """JSON.stringify(value, null, 2), as a JSON editor shows a value."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def description(document: dict, name: str) -> str:
    """What the form prints under a field's name: its description, then input-view.ts constraintText."""
    schema = fields(document)[name]
    parts = []
    if "default" in schema:
        value = schema["default"]
        parts.append(f"default {value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}")
    for key, text in (("minimum", "min {}"), ("maximum", "max {}"), ("minLength", "min {} chars"),
                      ("maxLength", "max {} chars"), ("pattern", "pattern: {}")):
        if key in schema:
            parts.append(text.format(schema[key]))
    return " · ".join(part for part in (schema.get("description"), " · ".join(parts)) if part)


# --- validation.ts: the check before Run sends ----------------------------------------------------------------

URI = re.compile(r"^[a-z][a-z0-9+\-.]*:", re.I)  # the start of validation.ts's RFC 3986 pattern: a scheme
BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
INVALID_URI_TEXT = re.compile(r"[\x00-\x1f\x7f\s]|%(?![0-9a-fA-F]{2})")


def valid_uri(value: object) -> bool:
    """validation.ts validateURI, for the values a form sends: a data URL checked as such, else a URI with a
    scheme and no spaces (the full RFC 3986 pattern there also refuses a few rarer characters)."""
    if not isinstance(value, str):
        return True
    if value[:5].lower() != "data:":
        return bool(URI.match(value)) and not re.search(r"\s", value)
    separator = value.find(",", 5)
    if separator < 0:
        return False
    metadata, data = value[5:separator], value[separator + 1:]
    if INVALID_URI_TEXT.search(metadata):
        return False
    if not metadata.lower().endswith(";base64"):
        return not INVALID_URI_TEXT.search(data)
    return len(data) % 4 == 0 and bool(BASE64.match(data))


def with_nullable(schema):
    """validation.ts normalizeOpenAPISchema: `nullable: true` as a JSON type null."""
    if isinstance(schema, list):
        return [with_nullable(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: with_nullable(value) for key, value in schema.items()}
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif isinstance(out.get("type"), list):
            out["type"] = out["type"] + ([] if "null" in out["type"] else ["null"])
        else:
            return {"anyOf": [out, {"type": "null"}]}
    return out


def _validator(document: dict, nullable: bool) -> jsonschema.Validator:
    root = copy.deepcopy(document["components"]["schemas"]["Input"])
    root["components"] = document["components"]
    if nullable:
        root = with_nullable(root)
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("uri")(valid_uri)
    return jsonschema.Draft4Validator(root, format_checker=checker)


def form_issues(document: dict, request: dict) -> list[tuple[str, str]]:
    """(field, message) for each thing the playground's own check refuses; [] and Run sends the request."""
    issues = [(".".join(str(p) for p in error.absolute_path) or "input", error.message)
              for error in _validator(document, nullable=True).iter_errors(request)]
    for name in required(document):  # withRequiredEmptyIssues: a required field left blank
        value = request.get(name)
        if (isinstance(value, str) and not value.strip()) or value == []:
            issues.append((name, "This field is required."))
    return issues


def server_issues(document: dict, request: dict) -> list[tuple[str, str]]:
    """(field, message) for each thing Cog's server answers with a 422 (formats unchecked, nullable ignored)."""
    root = copy.deepcopy(document["components"]["schemas"]["Input"])
    root["components"] = document["components"]
    return [(".".join(str(p) for p in error.absolute_path) or "input", error.message)
            for error in jsonschema.Draft202012Validator(root).iter_errors(request)]
