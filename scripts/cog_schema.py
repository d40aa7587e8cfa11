"""Read predict.py the way `cog build` does, without importing it, and write the OpenAPI schema it would.

    python scripts/cog_schema.py           # list what Cog's static parser could not resolve or would mangle
    python scripts/cog_schema.py --write   # and (re)write .cog/openapi_schema.json, the schema the image carries
    python scripts/cog_schema.py --model bulk [--write]   # the bulk model: predict_bulk.py, .cog/openapi_schema.bulk.json

Since Cog 0.19, `cog build` never imports predict.py to learn its inputs: a tree-sitter parser reads the
source, and the OpenAPI schema is built from what it can resolve. Coglet then checks every request against
that schema before Python sees it (422 for a type, choice or bound violation; unknown fields dropped). The
rules below are those of replicate/cog's source, read in pkg/schema/python/: inputs.go (parseInputCall: only
keyword arguments count), module_scope.go (resolveDefaultExpr, resolveStringExpr, resolveChoicesExpr: a literal
or a module-level name bound to one; choices also list(D.keys()) / list(D.values()) of a module-level dict
literal, and `+` of those), literals.go (parseStringLiteral: a string is the raw source between its outer
quotes, so escapes stay as typed and `"a " "b"` reads as `a " "b`; parseDefaultValue), annotations.go
(decoratorCogConcurrentMax: an integer literal), and pkg/schema/types.go, schema_type.go and openapi_spec.go
(buildInputSchema, the output schema, the document). What Cog would silently drop or change is an error here:
an unresolvable default becomes None (and None on a non-Optional input makes it required), a description that
is not one plain literal is dropped, an unresolvable `choices` or decorator argument fails the build.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREDICT = ROOT / "predict.py"
SCHEMA = ROOT / ".cog" / "openapi_schema.json"
# The bulk model (cog.bulk.yaml): its own predictor, and its schema beside the main one. `cog build -f
# cog.bulk.yaml` writes that schema to .cog/openapi_schema.json in the image, where coglet reads it.
BULK_PREDICT = ROOT / "predict_bulk.py"
BULK_SCHEMA = ROOT / ".cog" / "openapi_schema.bulk.json"
COG_VERSION = "0.23.1"  # the version pinned in requirements.txt; the document's info.version

PRIMITIVES = {
    "bool": {"type": "boolean"},
    "float": {"type": "number"},
    "int": {"type": "integer"},
    "str": {"type": "string"},
    "Path": {"type": "string", "format": "uri"},
    "File": {"type": "string", "format": "uri"},
    "Secret": {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True},
}
NO_VALUE = object()


class Unresolvable(Exception):
    """Cog's static parser cannot read this expression."""


class Mangled(Unresolvable):
    """Cog's static parser reads this string, but not as Python does."""


@dataclass
class Reading:
    """What the static parser makes of predict.py: the inputs in order, the output, and the problems."""

    inputs: dict = field(default_factory=dict)  # name -> {"type": ..., "nullable": bool, "default": ..., ...}
    output: dict | None = None
    concurrency_max: int | None = None
    problems: list[str] = field(default_factory=list)


# --- literals, as literals.go and module_scope.go read them ----------------------------------------------


def raw_text(source: str, node: ast.AST) -> str:
    return ast.get_source_segment(source, node, padded=False) or ""


def string_literal(source: str, node: ast.AST) -> str:
    """parseStringLiteral: the raw text between the outer quotes, for "...", '...', triple quotes and r"..."."""
    text = raw_text(source, node)
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        raise Unresolvable(f"`{text}` is not a string literal")
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
              if t.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.COMMENT)]
    if len(tokens) != 1:
        raise Mangled("implicitly concatenated strings reach the schema as one raw text, quotes included")
    for opening in ('"""', "'''", '"', "'", 'r"', "r'"):
        if text.startswith(opening):
            content = text[len(opening):-3 if len(opening) == 3 else -1]
            if content != node.value:
                raise Mangled("its escapes or line breaks reach the schema as typed, not as Python reads them")
            return content
    raise Unresolvable(f"the string prefix of `{text[:3]}...` (f-string, bytes, u or R) is not read")


def literal_value(source: str, node: ast.AST):
    """parseDefaultValue: None, booleans, numbers, strings, and lists, tuples, dicts and sets of them."""
    if isinstance(node, ast.JoinedStr):
        raise Unresolvable(f"`{raw_text(source, node)}`: f-strings are not read")
    if isinstance(node, ast.Constant):
        if node.value is None or isinstance(node.value, (bool, int, float)):
            return node.value
        if isinstance(node.value, str):
            return string_literal(source, node)
        raise Unresolvable(f"`{raw_text(source, node)}` is not a literal Cog reads")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and type(node.operand.value) in (int, float):
        return -node.operand.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [literal_value(source, item) for item in node.elts]
    if isinstance(node, ast.Dict):
        return {literal_value(source, k): literal_value(source, v) for k, v in zip(node.keys, node.values)}
    raise Unresolvable(f"`{raw_text(source, node)}` is not a literal")


def module_scope(source: str, tree: ast.Module) -> dict:
    """collectModuleScope: top-level `NAME = literal` bindings. Imported names are never followed."""
    scope = {}
    for stmt in tree.body:
        target, value = None, None
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target, value = stmt.targets[0].id, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            target, value = stmt.target.id, stmt.value
        if target is None:
            continue
        try:
            scope[target] = literal_value(source, value)
        except Unresolvable:
            scope.pop(target, None)
    return scope


def resolve(source: str, node: ast.AST, scope: dict, kinds: tuple[type, ...]):
    """resolveDefaultExpr / resolveStringExpr: a literal, or a module-level name bound to one."""
    if isinstance(node, ast.Name):
        if node.id not in scope:
            raise Unresolvable(f"`{node.id}` is not a module-level name bound to a literal in predict.py")
        value = scope[node.id]
    else:
        value = literal_value(source, node)
    if kinds and not isinstance(value, kinds):
        raise Unresolvable(f"`{raw_text(source, node)}` is a {type(value).__name__}")
    return value


def resolve_choices(source: str, node: ast.AST, scope: dict) -> list:
    """resolveChoicesExpr: a list literal, a name bound to one, list(D.keys()/D.values()), or `+` of those."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return resolve_choices(source, node.left, scope) + resolve_choices(source, node.right, scope)
    if isinstance(node, ast.List):
        return literal_value(source, node)
    if isinstance(node, ast.Name) and isinstance(scope.get(node.id), list):
        return scope[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "list" and node.args:
        inner = node.args[0]
        if isinstance(inner, ast.Call) and isinstance(inner.func, ast.Attribute) \
                and isinstance(inner.func.value, ast.Name) and isinstance(scope.get(inner.func.value.id), dict) \
                and inner.func.attr in ("keys", "values"):
            mapping = scope[inner.func.value.id]
            return list(mapping.keys() if inner.func.attr == "keys" else mapping.values())
    raise Unresolvable(f"choices `{raw_text(source, node)}` cannot be resolved (the build fails)")


def number_literal(source: str, node: ast.AST) -> int | float:
    """parseNumberLiteral: the raw text parsed as a number; a name is dropped silently."""
    text = raw_text(source, node)
    try:
        number = float(text.replace(" ", ""))
    except ValueError:
        raise Unresolvable(f"`{text}` is not a number literal (the bound would be dropped)") from None
    return int(number) if number.is_integer() else number  # Go writes a whole float64 without ".0"


# --- types, as types.go resolves them ----------------------------------------------------------------------


def annotation(node: ast.AST) -> tuple:
    """A type annotation as (name, args): `Optional[list[str]]` -> ("Optional", (("list", (("str", ()),)),))."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return annotation(ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.Name):
        return node.id, ()
    if isinstance(node, ast.Attribute):
        return node.attr, ()
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return "Union", (annotation(node.left), annotation(node.right))
    if isinstance(node, ast.Subscript):
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        return annotation(node.value)[0], tuple(annotation(a) for a in args)
    raise Unresolvable(f"annotation `{ast.unparse(node)}` is not a type Cog reads")


def optional_inner(ann: tuple) -> tuple | None:
    name, args = ann
    if name == "Optional" and len(args) == 1:
        return args[0]
    if name == "Union" and ("None", ()) in args and len(args) == 2:
        return next(a for a in args if a != ("None", ()))
    return None


def input_type(ann: tuple) -> tuple[dict, bool]:
    """ResolveInputType: the JSON type of an input and whether it is nullable."""
    inner = optional_inner(ann)
    if inner is not None:
        schema, _ = input_type(inner)
        return schema, True
    name, args = ann
    if name in ("list", "List") and len(args) == 1:
        item, nullable = input_type(args[0])
        if nullable or item.get("type") == "array":
            raise Unresolvable("nested generics like list[Optional[X]] are not supported")
        return {"type": "array", "items": item}, False
    if name in ("dict", "Dict", "Any"):
        return {"type": "object"}, False
    if name in PRIMITIVES and not args:
        return dict(PRIMITIVES[name]), False
    raise Unresolvable(f"input type `{name}` is not supported")


def output_type(ann: tuple, models: dict) -> dict:
    """ResolveSchemaType for an output or a model field's type (Optional handled by the caller)."""
    name, args = ann
    if name in models:
        return object_schema(models[name], models)
    if name in ("dict", "Dict", "Any"):
        return {"type": "object"}
    if name in ("list", "List"):
        item = output_type(args[0], models) if args else {"type": "object"}
        return {"type": "array", "items": item}
    if name in ("Iterator", "AsyncIterator"):  # schema_type.go SchemaIterator: an array the server streams
        item = output_type(args[0], models) if args else {"type": "object"}
        return {"type": "array", "items": item, "x-cog-array-type": "iterator"}
    if name in PRIMITIVES:
        return dict(PRIMITIVES[name])
    raise Unresolvable(f"output type `{name}` is not supported")


def object_schema(fields: list[tuple[str, tuple, bool]], models: dict) -> dict:
    """A BaseModel's fields: titled properties; required unless Optional or given a default."""
    properties, required = {}, []
    for name, ann, has_default in fields:
        inner = optional_inner(ann)
        prop = output_type(inner if inner is not None else ann, models)
        if inner is not None:
            prop["nullable"] = True
        prop["title"] = title_case(name)
        properties[name] = prop
        if inner is None and not has_default:
            required.append(name)
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def title_case(name: str) -> str:
    return " ".join(p[:1].upper() + p[1:] for p in name.split("_"))


# --- the predictor -----------------------------------------------------------------------------------------


def read_predictor(source: str, class_name: str = "Predictor", method: str = "predict") -> Reading:
    """Everything `cog build` reads from predict.py, and each thing it would not read as Python does."""
    tree = ast.parse(source)
    scope = module_scope(source, tree)
    reading = Reading()
    models = {
        node.name: [(s.target.id, annotation(s.annotation), s.value is not None)
                    for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
        for node in tree.body
        if isinstance(node, ast.ClassDef) and any(isinstance(b, ast.Name) and b.id == "BaseModel" for b in node.bases)
    }
    predictor = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    fn = predictor and next((n for n in predictor.body
                             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == method), None)
    if fn is None:
        reading.problems.append(f"no {class_name}.{method} in predict.py")
        return reading
    read_decorators(source, fn, reading)
    params = fn.args.args[1:]  # self
    defaults = [None] * (len(params) - len(fn.args.defaults)) + list(fn.args.defaults)
    for order, (param, default) in enumerate(zip(params, defaults)):
        try:
            reading.inputs[param.arg] = read_input(source, param, default, scope, order)
        except Unresolvable as err:
            reading.problems.append(f"input `{param.arg}`: {err}")
            continue
        reading.problems += [f"input `{param.arg}`: {p}" for p in reading.inputs[param.arg].pop("problems")]
    try:
        ann = annotation(fn.returns) if fn.returns is not None else None
        if ann is None:
            raise Unresolvable("predict() has no return annotation")
        if optional_inner(ann) is not None:
            raise Unresolvable("an Optional output is not supported")
        reading.output = output_type(ann, models)
    except Unresolvable as err:
        reading.problems.append(f"output: {err}")
    return reading


def read_decorators(source: str, fn: ast.AST, reading: Reading) -> None:
    for decorator in fn.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
        if name != "concurrent":
            continue
        if call is None or not (call.args or call.keywords):
            reading.concurrency_max = 1
            continue
        if call.args or len(call.keywords) != 1 or call.keywords[0].arg != "max":
            reading.problems.append("@concurrent only supports one literal integer max=... argument (the build fails)")
            continue
        value = call.keywords[0].value
        if not (isinstance(value, ast.Constant) and type(value.value) is int):
            reading.problems.append(f"@concurrent max must be an integer literal, not `{raw_text(source, value)}` "
                                    "(the build fails)")
        elif value.value < 1:
            reading.problems.append("@concurrent max must be at least 1")
        else:
            reading.concurrency_max = value.value
            if value.value > 1 and not isinstance(fn, ast.AsyncFunctionDef):
                reading.problems.append("@concurrent(max > 1) needs an async predict()")


def read_input(source: str, param: ast.arg, default: ast.AST | None, scope: dict, order: int) -> dict:
    """parseTypedDefaultParameter + parseInputCall for one parameter."""
    if param.annotation is None:
        raise Unresolvable("no type annotation")
    schema, nullable = input_type(annotation(param.annotation))
    spec = {"order": order, "schema": schema, "nullable": nullable, "default": NO_VALUE, "problems": []}
    if default is None:
        return spec
    is_input = isinstance(default, ast.Call) and getattr(default.func, "id", getattr(default.func, "attr", "")) == "Input"
    if not is_input:
        spec["default"] = resolve(source, default, scope, ())  # a plain default must resolve, or the build fails
        return spec
    if default.args:
        spec["problems"].append("positional arguments to Input() are ignored: name them (default=...)")
    for keyword in default.keywords:
        spec.update(read_input_keyword(source, keyword, scope, spec["problems"]))
    if spec["default"] is None and not nullable:
        spec["problems"].append("default None on a non-Optional input makes it required in the schema")
    if "accept" in spec and spec["schema"].get("format") != "uri":  # ErrAcceptOnNonFileType: the build fails
        spec["problems"].append("accept is only valid on Path or File inputs (the build fails)")
    return spec


def read_input_keyword(source: str, keyword: ast.keyword, scope: dict, problems: list[str]) -> dict:
    name, value = keyword.arg, keyword.value
    if (raw_text(source, keyword).split("=", 1)[1].strip() != raw_text(source, value)):
        problems.append(f"`{name}` is parenthesized: Cog reads only a bare literal or name")
        return {}
    try:
        if name == "default":
            return {"default": resolve(source, value, scope, ())}
        if name in ("description", "regex"):
            return {name: resolve(source, value, scope, (str,))}
        if name in ("ge", "le", "min_length", "max_length"):
            return {name: number_literal(source, value)}
        if name == "choices":
            return {"choices": resolve_choices(source, value, scope)}
        if name == "deprecated":
            return {"deprecated": literal_value(source, value)}
        if name == "accept":  # parseStringLiteral only: a name is dropped silently (inputs.go, "accept")
            if isinstance(value, ast.Name):
                raise Unresolvable(f"`{value.id}`: accept= is read only as a string literal; it would be dropped")
            return {"accept": string_literal(source, value)}
    except Unresolvable as err:
        consequence = "" if isinstance(err, Mangled) else \
            {"default": "it would become None", "description": "it would be dropped"}.get(name, "")
        problems.append(f"`{name}`: {err}" + (f"; {consequence}" if consequence else ""))
        return {"default": None} if name == "default" else {}  # what parseInputCall makes of it
    problems.append(f"`{name}` is not an Input() argument Cog reads")
    return {}


# --- the document (openapi_spec.go) ------------------------------------------------------------------------


def input_component(reading: Reading) -> tuple[dict, dict]:
    """buildInputSchema: the Input object, and one enum component per input with choices."""
    properties, required, enums = {}, [], {}
    for name, spec in reading.inputs.items():
        prop = {"x-order": spec["order"]}
        if spec.get("choices"):
            enums[name] = {"title": name, "description": "An enumeration.", "enum": spec["choices"],
                           "type": spec["schema"].get("type", "string")}
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["title"] = title_case(name)
            prop.update(spec["schema"])
        has_default = spec["default"] is not NO_VALUE and (spec["default"] is not None or spec["nullable"])
        if not has_default:
            required.append(name)
        else:
            prop["default"] = spec["default"]
        if spec["nullable"]:
            prop["nullable"] = True
        for key, target in (("description", "description"), ("ge", "minimum"), ("le", "maximum"),
                            ("min_length", "minLength"), ("max_length", "maxLength"), ("regex", "pattern")):
            if key in spec:
                prop[target] = int(spec[key]) if key in ("min_length", "max_length") else spec[key]
        if spec.get("deprecated"):
            prop["deprecated"] = True
        if "accept" in spec:  # Cog 0.22+: the file picker's filter, as HTML's accept attribute
            prop["x-cog-accept"] = spec["accept"]
        properties[name] = prop
    component = {"title": "Input", "type": "object", "properties": properties}
    if required:
        component["required"] = required
    return component, enums


def openapi_document(reading: Reading) -> dict:
    """The whole document `cog build` writes to .cog/openapi_schema.json (prediction mode)."""
    ok = {"description": "Successful Response", "content": {"application/json": {"schema": {}}}}
    invalid = {"description": "Validation Error",
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}}}
    inputs, enums = input_component(reading)
    string = {"type": "string"}
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": COG_VERSION},
        "paths": {
            "/": {"get": {"summary": "Root", "operationId": "root__get", "responses": {"200": ok}}},
            "/health-check": {"get": {"summary": "Healthcheck", "operationId": "healthcheck_health_check_get",
                                      "responses": {"200": ok}}},
            "/predictions": {"post": {
                "summary": "Predict", "description": "Run a single prediction on the model",
                "operationId": "predict_predictions_post",
                "requestBody": {"content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictionRequest"}}}},
                "responses": {"200": {"description": "Successful Response", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PredictionResponse"}}}}, "422": invalid}}},
            "/predictions/{prediction_id}/cancel": {"post": {
                "summary": "Cancel", "operationId": "cancel_predictions__prediction_id__cancel_post",
                "parameters": [{"required": True, "schema": {"title": "Prediction Id", "type": "string"},
                                "name": "prediction_id", "in": "path"}],
                "responses": {"200": ok, "422": invalid}}},
        },
        "components": {"schemas": {
            "Input": inputs,
            "Output": {"title": "Output", **(reading.output or {})},
            **enums,
            "PredictionRequest": {"title": "PredictionRequest", "type": "object", "properties": {
                "id": {"title": "Id", **string}, "input": {"$ref": "#/components/schemas/Input"}}},
            "PredictionResponse": {"title": "PredictionResponse", "type": "object", "properties": {
                "input": {"$ref": "#/components/schemas/Input"},
                "output": {"$ref": "#/components/schemas/Output"},
                "id": {"title": "Id", **string},
                "version": {"title": "Version", **string},
                "created_at": {"title": "Created At", **string, "format": "date-time"},
                "started_at": {"title": "Started At", **string, "format": "date-time"},
                "completed_at": {"title": "Completed At", **string, "format": "date-time"},
                "status": {"title": "Status", **string},
                "error": {"title": "Error", **string},
                "logs": {"title": "Logs", **string},
                "metrics": {"title": "Metrics", "type": "object"}}},
            "Status": {"title": "Status", "description": "An enumeration.",
                       "enum": ["starting", "processing", "succeeded", "canceled", "failed"], "type": "string"},
            "HTTPValidationError": {"title": "HTTPValidationError", "type": "object", "properties": {
                "detail": {"title": "Detail", "type": "array",
                           "items": {"$ref": "#/components/schemas/ValidationError"}}}},
            "ValidationError": {"title": "ValidationError", "required": ["loc", "msg", "type"], "type": "object",
                                "properties": {
                                    "loc": {"title": "Location", "type": "array",
                                            "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                                    "msg": {"title": "Message", "type": "string"},
                                    "type": {"title": "Error Type", "type": "string"}}},
        }},
    }


def comparable(document: dict) -> dict:
    """The document without `info.version`, which is the version of whichever Cog CLI wrote it: `cog build`
    rewrites .cog/openapi_schema.json in place, so after a build with another CLI only the version differs."""
    return {**document, "info": {k: v for k, v in document.get("info", {}).items() if k != "version"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="write the model's schema under .cog/")
    parser.add_argument("--model", choices=["main", "bulk"], default="main",
                        help="main: predict.py (cog.yaml); bulk: predict_bulk.py (cog.bulk.yaml)")
    args = parser.parse_args(argv)
    predict, schema = (PREDICT, SCHEMA) if args.model == "main" else (BULK_PREDICT, BULK_SCHEMA)
    reading = read_predictor(predict.read_text(encoding="utf-8"))
    for problem in reading.problems:
        print(f"{predict.name}: {problem}", file=sys.stderr)
    if reading.problems:
        return 1
    document = openapi_document(reading)
    if args.write:
        schema.parent.mkdir(exist_ok=True)
        schema.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {schema.relative_to(ROOT)}: {len(reading.inputs)} inputs, concurrency {reading.concurrency_max}")
    elif comparable(json.loads(schema.read_text(encoding="utf-8"))) != comparable(document):
        print(f"{schema.relative_to(ROOT)} is not what {predict.name} gives: run with --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
