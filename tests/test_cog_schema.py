"""The image builds: predict.py holds nothing Cog's static parser cannot read, and the schema it carries is right.

`cog build` (Cog 0.19 and later) reads predict.py without importing it and writes .cog/openapi_schema.json from
what it resolves; the image's server checks every request against that file. scripts/cog_schema.py reads
predict.py by the rules of replicate/cog's pkg/schema/python/ (inputs.go parseInputCall, module_scope.go
resolveDefaultExpr / resolveStringExpr / resolveChoicesExpr, literals.go parseStringLiteral, annotations.go
decoratorCogConcurrentMax) and writes the document as pkg/schema/openapi_spec.go buildInputSchema does. These
tests hold predict.py to those rules, prove each rule fires, tie the committed schema to that reading and to
the predictor as Cog's runtime sees it, and check cog.yaml against pkg/config (validate.go, env.go).
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from pathlib import Path

import pytest

from scripts import cog_schema
from e5.instructions import DEFAULT_TASK, INPUT_TYPES, PRESETS
from e5.validation import ENCODING_FORMATS, OUTPUT_FILE_FORMATS
from e5.windows import LONG_TEXTS

ROOT = Path(__file__).resolve().parent.parent
SOURCE = (ROOT / "predict.py").read_text(encoding="utf-8")
SCHEMA = json.loads((ROOT / ".cog" / "openapi_schema.json").read_text(encoding="utf-8"))
INPUT = SCHEMA["components"]["schemas"]["Input"]


def test_predict_py_holds_nothing_the_static_parser_cannot_read():
    assert cog_schema.read_predictor(SOURCE).problems == []


def test_the_committed_schema_is_what_cog_build_writes_from_predict_py():
    # All but info.version: `cog build` rewrites the file with its own CLI version (README, "Building").
    assert cog_schema.comparable(SCHEMA) == cog_schema.comparable(
        cog_schema.openapi_document(cog_schema.read_predictor(SOURCE))), (
        "run `python scripts/cog_schema.py --write` after changing predict.py")


def test_a_schema_written_by_another_cog_version_still_matches(tmp_path, monkeypatch, capsys):
    rewritten = {**SCHEMA, "info": {**SCHEMA["info"], "version": "0.99.0"}}
    written = tmp_path / "openapi_schema.json"
    written.write_text(json.dumps(rewritten))
    monkeypatch.setattr(cog_schema, "SCHEMA", written)
    monkeypatch.setattr(cog_schema, "ROOT", tmp_path)
    assert cog_schema.main([]) == 0
    written.write_text(json.dumps({**rewritten, "paths": {}}))  # anything else that differs still fails
    assert cog_schema.main([]) == 1


def test_concurrency_comes_from_the_decorator_literal():
    assert cog_schema.read_predictor(SOURCE).concurrency_max == 32


# --- each rule fires: a predictor that breaks it is caught, naming the input and the rule ------------------

PREDICTOR = '''
from typing import Optional
from cog import BasePredictor, Input, concurrent
from e5 import DEFAULT_TASK, FORMATS
NAME = "a plain string"
CHOICES = ["a", "b"]
PAIRS = {"a": 1, "b": 2}
MINIMUM = 1

class Predictor(BasePredictor):
    DECORATOR
    async def predict(self, PARAMETER) -> str:
        return ""
'''


def predictor_source(parameter: str, decorator: str = "@concurrent(max=4)") -> str:
    return PREDICTOR.replace("PARAMETER", parameter).replace("DECORATOR", decorator)


def problems(parameter: str, decorator: str = "@concurrent(max=4)") -> list[str]:
    return cog_schema.read_predictor(predictor_source(parameter, decorator)).problems


@pytest.mark.parametrize(
    "parameter, fragment",
    [
        ('x: str = Input(default=DEFAULT_TASK)', "`default`: `DEFAULT_TASK` is not a module-level name"),
        ('x: str = Input(default=DEFAULT_TASK)', "default None on a non-Optional input makes it required"),
        ('x: str = Input(default=None)', "default None on a non-Optional input makes it required"),
        ('x: str = Input(choices=list(FORMATS))', "choices `list(FORMATS)` cannot be resolved"),
        ('x: str = Input(choices=sorted(CHOICES))', "cannot be resolved"),
        ('x: str = Input(description=f"one {NAME}")', "f-strings are not read; it would be dropped"),
        ('x: str = Input(description="one " "two")', "`description`: implicitly concatenated strings"),
        ('x: str = Input(description="one\\ntwo")', "`description`: its escapes or line breaks"),
        ('x: str = Input(description=("one"))', "`description` is parenthesized"),
        ('x: str = Input(description=u"one")', "the string prefix of `u\"o...` (f-string, bytes, u or R)"),
        ('x: int = Input(default=1, ge=MINIMUM)', "`ge`: `MINIMUM` is not a number literal"),
        ('x: str = Input("a")', "positional arguments to Input() are ignored"),
        ('x: set = Input(default="a")', "input type `set` is not supported"),
        ('x = Input(default="a")', "no type annotation"),
    ],
)
def test_each_rule_names_the_input_and_what_cog_would_do(parameter, fragment):
    found = problems(parameter)
    assert any(p.startswith("input `x`: ") and fragment in p for p in found), found


@pytest.mark.parametrize(
    "parameter",
    [
        'x: str = Input(default=NAME, description=NAME, choices=CHOICES)',
        'x: str = Input(default="a", choices=CHOICES + ["c"])',
        'x: int = Input(default=1, choices=list(PAIRS.values()), ge=-1, le=2.5)',
        "x: str = Input(description='single quotes', default=r'raw \\d')",
        'x: Optional[list[str]] = Input(default=None)',
    ],
)
def test_literals_and_module_level_literal_names_are_read(parameter):
    assert problems(parameter) == []


@pytest.mark.parametrize(
    "decorator, fragment",
    [
        ("@concurrent(max=MAX_CONCURRENCY)", "@concurrent max must be an integer literal"),
        ("@concurrent(max=0)", "@concurrent max must be at least 1"),
        ("@concurrent(4)", "@concurrent only supports one literal integer max=... argument"),
    ],
)
def test_the_concurrency_decorator_must_be_an_integer_literal(decorator, fragment):
    assert any(fragment in p for p in problems('x: str = Input(default="a")', decorator))


def test_concurrency_above_one_needs_an_async_predict():
    source = predictor_source("x: str").replace("async def", "def")
    assert any("needs an async predict()" in p for p in cog_schema.read_predictor(source).problems)


def test_a_module_constant_built_by_code_is_not_in_scope():
    source = predictor_source("x: str = Input(description=LISTED)").replace("MINIMUM = 1", 'LISTED = ", ".join(CHOICES)')
    assert any("`LISTED` is not a module-level name" in p for p in cog_schema.read_predictor(source).problems)


# --- the schema against the predictor as Cog's runtime reads it -------------------------------------------


def runtime_inputs() -> dict:
    """cog's own reading of predict()'s parameters: types from the annotations, the rest from Input()."""
    from cog._inspector import _create_input_field, _unwrap

    from predict import Predictor

    fn = _unwrap(Predictor.predict)
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters.values())[1:]
    return {p.name: _create_input_field(i, p.name, hints[p.name], p.default) for i, p in enumerate(params)}


def enum_of(prop: dict) -> list | None:
    refs = [item["$ref"] for item in prop.get("allOf", [])]
    return SCHEMA["components"]["schemas"][refs[0].rsplit("/", 1)[1]]["enum"] if refs else None


@pytest.mark.parametrize("name", list(runtime_inputs()))
def test_every_input_in_the_schema_is_the_one_the_runtime_reads(name):
    field = runtime_inputs()[name]
    prop = INPUT["properties"][name]
    assert prop["x-order"] == field.order
    assert prop.get("description") == field.description
    assert enum_of(prop) == field.choices
    assert prop.get("minimum") == field.ge and prop.get("maximum") == field.le
    json_type = field.type.json_type()
    assert prop.get("type", json_type.get("type")) == json_type["type"]
    assert prop.get("items") == json_type.get("items")
    optional = field.type.repetition.name.startswith("OPTIONAL")
    assert prop.get("nullable", False) == optional
    declared = inspect.signature(_unwrap_predict()).parameters[name].default  # Input(...): its accept=
    # coglet calls predict() with Input()'s own default for an omitted input (it patches __defaults__ with
    # FieldInfo.default, crates/coglet-python predictor.rs); cog's InputField holds it normalized (a Path's "" as
    # Path(".")), which no request sees.
    assert prop.get("default") == declared.default and field.default == field.type.normalize(declared.default)
    assert (name in INPUT.get("required", [])) == (field.default is None and not optional)
    assert prop.get("x-cog-accept") == getattr(declared, "accept", None)


def _unwrap_predict():
    from cog._inspector import _unwrap

    from predict import Predictor

    return _unwrap(Predictor.predict)


def test_the_schema_has_no_input_the_predictor_lacks():
    assert list(INPUT["properties"]) == list(runtime_inputs())
    assert "required" not in INPUT  # every input has a default, `texts` included (texts_file can replace it)


def test_the_schema_says_what_the_engine_accepts():
    props = INPUT["properties"]
    assert enum_of(props["input_type"]) == list(INPUT_TYPES)
    assert enum_of(props["encoding_format"]) == list(ENCODING_FORMATS)
    assert enum_of(props["output_file_format"]) == list(OUTPUT_FILE_FORMATS)
    assert enum_of(props["long_texts"]) == list(LONG_TEXTS) and props["long_texts"]["default"] == LONG_TEXTS[0]
    assert props["task"]["default"] == DEFAULT_TASK
    listed = re.search(r"a preset name: ([a-z0-9_, ]+) \(", props["task"]["description"]).group(1).split(", ")
    assert listed == list(PRESETS)


def test_the_output_is_an_object_so_the_server_does_not_stream_it():
    # coglet treats an output whose schema type is "array" as a stream of items.
    output = SCHEMA["components"]["schemas"]["Output"]
    assert output["type"] == "object"
    from predict import Output

    assert list(output["properties"]) == list(typing.get_type_hints(Output))


def test_the_output_schema_is_the_output_class_as_the_runtime_reads_it():
    import dataclasses

    from cog import _adt

    from predict import Output

    output = SCHEMA["components"]["schemas"]["Output"]
    hints = typing.get_type_hints(Output)
    defaulted = {f.name for f in dataclasses.fields(Output) if f.default is not dataclasses.MISSING}
    assert output["required"] == [name for name in hints if name not in defaulted]
    untyped = []
    for name, hint in hints.items():
        prop = output["properties"][name]
        assert prop.get("nullable", False) == (type(None) in typing.get_args(hint)), name
        try:
            field = _adt.FieldType.from_type(hint)
        except ValueError:
            untyped.append(name)
            continue
        assert {k: v for k, v in prop.items() if k not in ("title", "nullable")} == field.json_type(), name
    # cog 0.23.1's Python SDK types no nested list and no BaseModel field; coglet never asks it (it encodes the value
    # as returned), and the static parser, which writes the schema, types them: tests/test_output_schema.py
    # checks real responses against what it wrote.
    assert untyped == ["embeddings", "usage", "document_embeddings", "scores", "ranking", "windows"]
    assert output["properties"]["scores"]["items"] == {"type": "array", "items": {"type": "number"}}
    assert output["properties"]["ranking"]["items"]["items"]["required"] == ["index", "score"]
    assert output["properties"]["windows"]["items"]["required"] == ["text", "start", "end", "tokens"]


# --- cog.yaml, as pkg/config reads it -----------------------------------------------------------------------

# pkg/config/env.go environmentVariableDenyList: names Cog reserves for itself.
RESERVED_ENV = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "R8_*", "REPLICATE_*",
                "LIBRARY_PATH", "CUDA_*", "NVIDIA_*", "NV_*", "PGET_*", "HF_ENDPOINT", "HF_HUB_ENABLE_HF_TRANSFER",
                "KUBERNETES_*")


def cog_yaml() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "cog.yaml").read_text())


def test_cog_yaml_sets_no_reserved_environment_variable():
    names = [entry.split("=", 1)[0] for entry in cog_yaml().get("environment", [])]
    assert names
    for name in names:
        assert not any(name == r or (r.endswith("*") and name.startswith(r[:-1])) for r in RESERVED_ENV), name


def test_cog_yaml_builds_this_predictor_on_a_python_cog_supports():
    config = cog_yaml()
    assert config["predict"] == "predict.py:Predictor"
    major, minor = map(int, config["build"]["python_version"].split("."))
    assert (major, 11) <= (major, minor) <= (3, 13)  # 3.10 is Cog's floor, 3.11 its floor for concurrency
    # The decorator is the one place concurrency is declared: a `concurrency.max` in cog.yaml would override it.
    assert "concurrency" not in config
    requirements = (ROOT / config["build"]["python_requirements"]).read_text().splitlines()
    pins = [line.split("#")[0].strip() for line in requirements if line.split("#")[0].strip()]
    assert pins and all("==" in pin for pin in pins)


def pins(name: str) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return dict(line.split("==", 1) for line in lines if "==" in line)


def test_the_image_runs_the_sdk_the_tests_run():
    # Cog strips cog and coglet from requirements.txt and installs build.sdk_version (else the newest release);
    # cog allows any coglet below 1.0, so coglet is pinned to the same release wherever cog is installed.
    from importlib.metadata import version

    sdk = cog_yaml()["build"]["sdk_version"]
    assert sdk == version("cog") == version("coglet") == cog_schema.COG_VERSION
    for name in ("requirements.txt", "requirements-dev.txt"):
        assert pins(name)["cog"] == pins(name)["coglet"] == sdk, name


def test_the_cuda_is_chosen_not_left_to_the_torch_pin():
    # Without `cuda:`, torch 2.11.0 gives CUDA 13.0, which needs an NVIDIA driver >= 580 (docs/design.md).
    build = cog_yaml()["build"]
    assert build["gpu"] is True and build["cuda"].split(".")[0] == "12"
    assert pins("requirements.txt")["torch"] == "2.11.0"  # the matrix lists 2.11.0 for cu126, cu128, cu129, cu130


# --- how a schema-driven form renders the inputs (Replicate's web UI, Cog's playground) ----------------------


def test_a_person_can_type_texts_and_documents_without_json():
    # A `str` input renders as a plain text box; with a default of "" it needs no null and no JSON.
    props = INPUT["properties"]
    for name, lead in (("text", "Type the texts to embed, one per line"),
                       ("document", "Type the documents to rank against the texts (the queries), one per line")):
        assert props[name]["type"] == "string" and props[name]["default"] == "" and "nullable" not in props[name]
        assert props[name]["description"].startswith(lead) and "an error names its line" in props[name]["description"].lower()
    assert props["text"]["x-order"] == 0 and props["document"]["x-order"] == props["documents"]["x-order"] - 1


def test_json_editors_give_an_example_to_copy():
    props = INPUT["properties"]
    for name in ("texts", "documents"):
        assert props[name]["description"].startswith("A JSON list of ") and "e.g. [" in props[name]["description"]
        json.loads(re.search(r"e\.g\. (\[.*?\])", props[name]["description"]).group(1))  # the example is valid JSON


@pytest.mark.parametrize("schema", [SCHEMA, json.loads(cog_schema.BULK_SCHEMA.read_text(encoding="utf-8"))],
                         ids=["main", "bulk"])
def test_no_input_defaults_to_null(schema):
    # A form's ticked box sends the default as it shows it; Cog's server answers null with a 422 (coglet ignores
    # `nullable`), so every optional input's default is a value (tests/test_web_form.py sends each one).
    for name, prop in schema["components"]["schemas"]["Input"]["properties"].items():
        assert "default" not in prop or prop["default"] is not None, name


def test_the_vectors_can_be_left_out():
    include = INPUT["properties"]["include_vectors"]
    assert include["type"] == "boolean" and include["default"] is True
    assert "false: leave them out" in include["description"]


def test_the_file_picker_offers_the_formats_the_engine_reads():
    from e5.files import SUFFIX_FORMATS

    accept = INPUT["properties"]["texts_file"]["x-cog-accept"].split(",")
    assert sorted(accept) == sorted([*SUFFIX_FORMATS, ".gz"])


@pytest.mark.parametrize(
    "parameter, fragment",
    [
        ('x: str = Input(default="a", accept=".txt")', "accept is only valid on Path or File inputs"),
        ('x: Optional[Path] = Input(default=None, accept=ACCEPT)', "accept= is read only as a string literal"),
    ],
)
def test_accept_is_read_as_cog_reads_it(parameter, fragment):
    source = predictor_source(parameter).replace("MINIMUM = 1", 'ACCEPT = ".txt"')
    found = cog_schema.read_predictor(source).problems
    assert any(fragment in p for p in found), found
    fine = predictor_source('x: Optional[Path] = Input(default=None, accept=".txt,.csv")')
    reading = cog_schema.read_predictor(fine)
    assert reading.problems == [] and reading.inputs["x"]["accept"] == ".txt,.csv"


# --- the bulk model (cog.bulk.yaml, predict_bulk.py): the same rules, its own schema ------------------------

BULK_SOURCE = (ROOT / "predict_bulk.py").read_text(encoding="utf-8")
BULK_SCHEMA = json.loads((ROOT / ".cog" / "openapi_schema.bulk.json").read_text(encoding="utf-8"))


def test_the_bulk_predictor_holds_nothing_the_static_parser_cannot_read_and_its_schema_is_committed():
    reading = cog_schema.read_predictor(BULK_SOURCE)
    assert reading.problems == []
    assert cog_schema.comparable(BULK_SCHEMA) == cog_schema.comparable(cog_schema.openapi_document(reading)), (
        "run `python scripts/cog_schema.py --model bulk --write` after changing predict_bulk.py")
    assert cog_schema.main(["--model", "bulk"]) == 0


def test_the_bulk_model_streams_files_one_prediction_at_a_time():
    # A plain generator of Paths: coglet uploads each file as it is yielded (an async generator is collected
    # whole first), and a plain predict() cannot run with more than one slot.
    output = BULK_SCHEMA["components"]["schemas"]["Output"]
    assert output == {"title": "Output", "type": "array", "items": {"type": "string", "format": "uri"},
                      "x-cog-array-type": "iterator"}
    assert cog_schema.read_predictor(BULK_SOURCE).concurrency_max is None
    assert "async def predict" not in BULK_SOURCE and "yield Path(" in BULK_SOURCE


def test_the_bulk_inputs_are_the_engine_s_and_the_file_is_required():
    inputs = BULK_SCHEMA["components"]["schemas"]["Input"]
    assert inputs["required"] == ["texts_file"]
    assert list(inputs["properties"]) == ["texts_file", "task", "input_type", "normalize", "truncate", "long_texts",
                                          "output_format"]
    enum = lambda name: BULK_SCHEMA["components"]["schemas"][  # noqa: E731
        inputs["properties"][name]["allOf"][0]["$ref"].rsplit("/", 1)[1]]["enum"]
    assert enum("output_format") == list(OUTPUT_FILE_FORMATS) and enum("input_type") == list(INPUT_TYPES)
    assert enum("long_texts") == [mode for mode in LONG_TEXTS if mode != "windows"]  # a file keeps a row per text
    assert inputs["properties"]["task"]["default"] == DEFAULT_TASK
    assert inputs["properties"]["texts_file"]["x-cog-accept"] == INPUT["properties"]["texts_file"]["x-cog-accept"]


def test_cog_bulk_yaml_is_cog_yaml_but_the_predictor():
    import yaml

    main, bulk = cog_yaml(), yaml.safe_load((ROOT / "cog.bulk.yaml").read_text())
    assert bulk["predict"] == "predict_bulk.py:Predictor"
    assert {k: v for k, v in bulk.items() if k != "predict"} == {k: v for k, v in main.items() if k != "predict"}
    strip = lambda text: text.split("\nbuild:", 1)[1].replace("predict_bulk.py", "predict.py")  # noqa: E731
    assert strip((ROOT / "cog.bulk.yaml").read_text()) == strip((ROOT / "cog.yaml").read_text())
