"""The OpenAI-compatible face: `POST /v1/embeddings`, `POST /rerank`, `GET /v1/models`, `GET /health`; and the
routes of the servers self-hosters already run (TEI, Cohere v2, Infinity: peer_api.py), and `GET /metrics`.

    python -m openai_api --host 0.0.0.0 --port 8000

For self-hosters whose tools speak OpenAI's embeddings API (the `openai` SDKs, LangChain, LlamaIndex, vector
databases' "OpenAI" vectorizers). Like predict.py it is declarations around `EmbeddingService.run`: the
engine is built by `e5.startup.load_service` (the same weights, `E5_*` settings and refusals as the Cog face),
and every request goes through the same validation, formatting, batching and encoding. What is here is the
HTTP shape: each API's request and response bodies and error object, bearer auth, a body-size gate, a bound on
requests in flight, and cancelling the work of a client that went away. docs/openai.md lists every route
and error.
"""

from __future__ import annotations

import argparse
import asyncio
import email.message
import hmac
import json
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from json.decoder import scanstring
from json.scanner import NUMBER_RE
from typing import Literal, Optional, Union

import h11
from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response as HttpResponse, PlainTextResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError
from uvicorn.protocols.http.h11_impl import H11Protocol

import peer_api as peer
from api_metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, ApiMetrics
from e5.errors import BusyError, E5Error, InputError
from e5.instructions import DEFAULT_TASK
from e5.service import EmbeddingService, Response
from e5.startup import ApiSettings, load_service
from e5.encodings import as_list
from e5.validation import Options, Request, validate_dimensions
from peer_api import WholeInt

EMBEDDINGS_PATHS = ("/v1/embeddings", "/embeddings")  # OpenAI's, and the same without /v1 (Infinity's clients)
RERANK_PATHS = ("/rerank", "/v1/rerank")  # Jina's, Cohere v1's and Infinity's body, or TEI's (with `texts`)
TEI_PATHS = {"/embed", "/", "/tokenize", "/info"}  # text-embeddings-inference's routes: its error shape
COHERE_PATHS = {"/v2/rerank"}
OPEN_PATHS = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}  # no key needed
STYLE = "e5.style"  # the scope key that marks a /rerank body as TEI's, so its errors take TEI's shape

# --- request and response bodies (the OpenAPI document is built from these) -----------------------------


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request, plus E5's options as extra fields (the `openai` SDK's `extra_body`)."""

    model_config = ConfigDict(extra="forbid")  # as OpenAI: a misspelt option is an error, not a silent default

    input: Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]] = Field(
        description="A text or a list of texts; vectors come back in this order. Token-id arrays are refused (400)."
    )
    model: Optional[StrictStr] = Field(None, description="Any name is accepted; this server has one model.")
    encoding_format: Literal["float", "base64", "int8", "binary"] = Field(
        "float", description="float and base64 as OpenAI; int8 and binary are E5's compact encodings."
    )
    dimensions: Optional[WholeInt] = Field(
        None, description="Only the model's width is accepted (1024 for multilingual-e5-large-instruct; /v1/models names the model).")
    user: Optional[StrictStr] = Field(None, description="Accepted and ignored.")
    input_type: Literal["query", "document"] = Field(
        "query", description="query: the task's instruction goes before each text. document: the text as it is."
    )
    task: Optional[StrictStr] = Field(
        None, description="For queries: an instruction, or a preset name (web_search, nq, sts, ...). Default web_search's."
    )
    truncate: StrictBool = Field(True, description="Cut texts past 512 tokens; false: such a text is a 400.")
    normalize: StrictBool = Field(True, description="L2-normalize each vector.")
    long_texts: Literal["truncate", "mean", "windows"] = Field(
        "truncate", description="Past 512 tokens: truncate (the first 512), mean (the token-weighted mean of "
                                "overlapping 512-token windows: one vector per text), windows (each window's vector, "
                                "with `index` its text and `start`/`end` the characters it covers).")


class EmbeddingData(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: Union[list[float], str, list[int]]
    start: Optional[int] = Field(None, description="long_texts windows: the first character of the text it covers.")
    end: Optional[int] = Field(None, description="long_texts windows: the character after the last one it covers.")


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingData]
    model: str
    usage: Usage


class RerankRequest(BaseModel):
    """The rerank body of Jina, Cohere v1 and Infinity (`documents`), or TEI's (`texts`): one of the two.
    The answer takes the shape of the body's API."""

    model_config = ConfigDict(extra="forbid")

    query: StrictStr
    documents: Optional[list[StrictStr]] = Field(None, description="The texts to rank (Jina, Cohere v1, Infinity).")
    texts: Optional[list[StrictStr]] = Field(None, description="The texts to rank, as TEI names them: TEI's answer.")
    top_n: Optional[WholeInt] = Field(None, ge=1, description="Keep the best top_n results.")
    return_documents: StrictBool = Field(False, description="Add each document's text to its result.")
    return_text: StrictBool = Field(False, description="TEI's return_documents.")
    raw_scores: StrictBool = Field(False, description="Infinity's and TEI's; the score is a cosine either way.")
    model: Optional[StrictStr] = Field(None, description="Any name is accepted; this server has one model.")
    task: Optional[StrictStr] = Field(None, description="The query's instruction or preset name. Default web_search's.")
    truncate: StrictBool = Field(True, description="Cut texts past 512 tokens; false: such a text is a 400.")
    long_texts: Literal["truncate", "mean"] = Field(
        "truncate", description="Past 512 tokens: truncate (the first 512), or mean (rank by the token-weighted "
                                "mean of overlapping 512-token windows).")
    truncation_direction: Optional[Literal["left", "right", "Left", "Right"]] = Field(
        None, description="TEI's; only right: a text's first 512 tokens are kept.")


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: Optional[RerankDocument] = None


class RerankResponse(BaseModel):
    object: Literal["rerank"]
    id: str
    created: int
    model: str
    results: list[RerankResult]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class MemoryHealth(BaseModel):
    budget_mb: Optional[int] = Field(description="The container's memory budget (E5_MEMORY_BUDGET_MB or its default).")
    in_use_mb: float = Field(description="Reserved now by requests running or whose responses are being sent.")
    peak_mb: float = Field(description="The most reserved at once since start.")
    waiting: int = Field(description="Requests waiting for room in the budget, in arrival order.")
    refused_busy: int = Field(description="Requests refused (503 memory_busy) after waiting E5_MEMORY_WAIT_S.")


class Health(BaseModel):
    status: Literal["loading", "ready", "unhealthy"]
    model: Optional[str] = Field(description="The model the weights folder holds; null until it has loaded.")
    requests_in_flight: int
    max_requests: int = Field(description="E5_API_MAX_REQUESTS: past it, embedding and rerank requests get 429.")
    saturated: bool = Field(description="requests_in_flight has reached max_requests: the next request gets 429.")
    memory: Optional[MemoryHealth] = Field(description="The memory budget all requests share; null until loaded.")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str]
    code: Optional[str]


class ErrorResponse(BaseModel):
    error: ErrorDetail


STATUSES = (400, 401, 408, 413, 422, 429, 500, 503)
ERRORS = {status: {"model": ErrorResponse} for status in STATUSES}
TEI_ERRORS = {status: {"model": peer.TeiError} for status in STATUSES}
COHERE_ERRORS = {status: {"model": peer.CohereError} for status in STATUSES}
RERANK_ERRORS = {status: {"model": Union[ErrorResponse, peer.TeiError]} for status in STATUSES}

# --- errors, in the shape of the API a route belongs to ---------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def response(self, style: str = "openai") -> JSONResponse:
        return JSONResponse(self.body(style), status_code=self.status, headers=self.headers)

    def body(self, style: str) -> dict:
        """OpenAI's error object; TEI's `{error, error_type}`; Cohere's `{message}`: what each client parses."""
        if style == "tei":
            return {"error": self.message, "error_type": self.tei_type()}
        if style == "cohere":
            return {"message": self.message}
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def tei_type(self) -> str:
        if self.status == 429 or self.code in ("memory_busy", "model_loading"):
            return "Overloaded"
        if self.status == 503:
            return "Unhealthy"
        return "Backend" if self.status >= 500 else "Validation"


def style_of(scope) -> str:
    """Whose error shape a request gets: its route's API (a /rerank body with `texts` is TEI's)."""
    if scope["path"] in TEI_PATHS:
        return "tei"
    if scope["path"] in COHERE_PATHS:
        return "cohere"
    return scope.get(STYLE, "openai")


def renamed(message: str, names: dict[str, str]) -> str:
    """The service names its inputs as the Cog face does (`texts[3]`); say this face's names instead."""
    for old, new in names.items():
        if new == "query":  # rerank's one query travels as texts[0]
            message = message.replace(f"`{old}[0]`", f"`{new}`")
        message = message.replace(f"`{old}[", f"`{new}[").replace(f"`{old}`", f"`{new}`")
    return message


def input_error(err: InputError, names: dict[str, str]) -> ApiError:
    """e5's refusal -> a 400 whose `param` is the input it names (the first name in backticks)."""
    message = renamed(str(err), names)
    param = message.split("`")[1].split("[")[0] if message.count("`") >= 2 else None
    return ApiError(400, message, param=param, code=err.code)


def engine_failure(err: E5Error) -> ApiError:
    if isinstance(err, BusyError):  # no room in the memory budget within the wait: the SDKs retry a 503
        return ApiError(503, str(err), type="server_error", code=err.code, headers={"Retry-After": "5"})
    if err.code == "batcher_failure":  # the engine stopped: this replica needs a restart
        return ApiError(503, str(err), type="server_error", code=err.code)
    return ApiError(500, str(err), type="server_error", code=err.code)


def validation_error(exc: RequestValidationError) -> ApiError:
    """FastAPI's 422 list -> one OpenAI-style error naming the first field that is wrong.

    A union (`input`) fails once per member; its own message says what is accepted instead of four.
    """
    errors = exc.errors()
    first = errors[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}",
                        code="invalid_json")
    loc = [str(part) for part in first["loc"] if part != "body"]
    if not loc:
        return ApiError(422, "the body must be a JSON object: " + first["msg"], code=first["type"])
    field = loc[0]
    if field == "input" and first["type"] != "missing":
        return ApiError(422, "`input` must be a string or a list of strings", param="input", code="invalid_type")
    if first["type"] == "extra_forbidden":
        return unknown_field(field)
    where = field + "".join(f"[{p}]" for p in loc[1:] if p.isdigit())
    return ApiError(422, f"`{where}`: {first['msg']}", param=field, code=first["type"])


def unknown_field(field: str) -> ApiError:
    return ApiError(422, f"unknown field `{field}` (see GET /openapi.json for the fields this server takes)",
                    param=field, code="unknown_field")


def token_ids_refused(name: str = "input") -> ApiError:
    hint = (" LangChain's OpenAIEmbeddings sends them unless you set check_embedding_ctx_length=False."
            if name == "input" else "")
    return ApiError(
        400,
        f"`{name}` holds token ids; this server embeds text only (ids from another tokenizer mean nothing to "
        f"this model's vocabulary).{hint}",
        param=name, code="token_ids_not_supported",
    )


# --- the body: parsed once, its lists checked item by item --------------------------------------------------
#
# pydantic checks a list of a million wrong items by building a million errors (one per item and per member of
# `input`'s union), and json.loads builds every item first: a body of small wrong items costs 20-30x its size
# before any of that. So the gate parses a body itself, with the json module's own scanner, and walks the lists
# of texts item by item: it keeps strings, stops at the first few wrong items, and never builds a list or an
# object where a text or a scalar belongs. What it hands pydantic has the right shape, so pydantic's errors are
# few. The cost of a body is then its bytes, its decoded text and the texts kept (docs/openai.md, Limits).

WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, as the json module skips it
SCALAR = json.JSONDecoder().scan_once  # one JSON value at a position; used only where no list or object starts
CHECKED_ITEMS = 3  # wrong items named in one refusal; the walk stops there


TEXT_LISTS = ("input", "inputs", "documents", "texts")  # fields that hold texts, walked item by item
ID_LISTS = ("input", "inputs")  # fields whose clients may send token ids (OpenAI's, TEI's)
OBJECTS = {"parameters": peer.TeiOptions, "relevant_spans": peer.CohereSpans}  # fields that take an object


@dataclass(frozen=True)
class BodyShape:
    """A route's body as the walk sees it: the model's fields, which of them hold texts or objects, and the
    engine's limits, past which the request is refused anyway (so the walk stops there too)."""

    model: type[BaseModel]
    max_texts: int
    max_chars: int

    @property
    def text_lists(self) -> tuple[str, ...]:
        return tuple(name for name in TEXT_LISTS if name in self.model.model_fields)

    @property
    def text_objects(self) -> bool:
        """A text may come as `{"text": ...}` (Cohere's documents)."""
        return self.model is peer.CohereRerankRequest

    def within(self, model: type[BaseModel]) -> "BodyShape":
        return BodyShape(model, self.max_texts, self.max_chars)


def read_json(raw: bytearray, shape: BodyShape) -> dict | ApiError:
    """The body's JSON object, or the first thing wrong with it. `raw` is emptied once decoded (the text is
    what the walk reads), so the bytes and the parsed texts are not held together."""
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads decodes bytes
    except UnicodeDecodeError as err:
        return ApiError(400, f"the body is not valid JSON: {err.reason} at byte {err.start}", code="invalid_json")
    finally:
        raw.clear()
    try:
        return walk_body(text, shape)
    except json.JSONDecodeError as err:
        return ApiError(400, f"the body is not valid JSON: {err.msg}", code="invalid_json")
    except ValueError as err:  # an integer of more digits than Python converts
        return ApiError(400, f"the body is not valid JSON: {err}", code="invalid_json")


def skip(text: str, i: int) -> int:
    return WHITESPACE.match(text, i).end()


def expect(text: str, i: int, char: str, message: str) -> int:
    """The position after `char` (and the whitespace after it) at `i`; else the json module's message."""
    if not text.startswith(char, i):
        raise json.JSONDecodeError(message, text, i)
    return skip(text, i + 1)


def walk_body(text: str, shape: BodyShape) -> dict | ApiError:
    """A JSON object of the model's fields; lists of texts checked item by item (`text_list`)."""
    i = skip(text, 0)
    if not text.startswith("{", i):
        if not text.startswith("[", i):
            end_of_body(text, scalar(text, i)[1], {})  # a syntax error first, as json.loads would say
        return ApiError(422, "the body must be a JSON object: Input should be a valid dictionary or object to "
                             "extract fields from", code="model_attributes_type")
    body, i = walk_object(text, i, shape)
    return body if isinstance(body, ApiError) else end_of_body(text, i, body)


def walk_object(text: str, i: int, shape: BodyShape) -> tuple[dict | ApiError, int]:
    """The object at `i` (its `{`) of the model's fields, and the position after it. Only the fields in
    OBJECTS take an object, itself walked the same way; no other field takes a list or an object."""
    body, i = {}, skip(text, i + 1)
    if text.startswith("}", i):
        return body, i + 1
    while True:
        if not text.startswith('"', i):
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
        field, i = scanstring(text, i + 1)
        if field not in shape.model.model_fields:
            return unknown_field(field), i
        i = expect(text, skip(text, i), ":", "Expecting ':' delimiter")
        if field in shape.text_lists and text.startswith("[", i):
            value, i = text_list(text, i, field, shape)
        elif field in OBJECTS and text.startswith("{", i):
            value, i = walk_object(text, i, shape.within(OBJECTS[field]))
        elif text.startswith(("[", "{"), i):  # never build a list or an object where a scalar belongs
            return stand_in_error(shape.model, field, [] if text.startswith("[", i) else {}), i
        else:
            value, i = scalar(text, i)
        if isinstance(value, ApiError):
            return value, i
        body[field] = value
        i = skip(text, i)
        if text.startswith("}", i):
            return body, i + 1
        i = expect(text, i, ",", "Expecting ',' delimiter")


def end_of_body(text: str, i: int, body: dict) -> dict:
    if skip(text, i) != len(text):
        raise json.JSONDecodeError("Extra data", text, skip(text, i))
    return body


def scalar(text: str, i: int) -> tuple[object, int]:
    """A string, number, true, false or null at `i` (never a list or an object: callers check)."""
    try:
        return SCALAR(text, i)
    except StopIteration:
        raise json.JSONDecodeError("Expecting value", text, i) from None


def text_list(text: str, i: int, name: str, shape: BodyShape) -> tuple[list[str] | ApiError, int]:
    """The list of texts at `i`, or the refusal naming its first wrong items, without building them.

    A list whose first item is a whole number or a list is token ids. The walk stops at the CHECKED_ITEMS-th
    wrong item, at a wrong list or object (they are never parsed), and past the engine's limits.
    """
    texts: list[str] = []
    wrong: list[tuple[int, str]] = []
    chars, index, i = 0, 0, skip(text, i + 1)
    if text.startswith("]", i):
        return texts, i + 1
    while True:
        item = None
        if text.startswith('"', i):
            item, i = scanstring(text, i + 1)
        elif shape.text_objects and text.startswith("{", i):  # `{"text": ...}`: its text is the item
            document, i = walk_object(text, i, shape.within(peer.CohereDocument))
            if isinstance(document, ApiError) or not isinstance(document.get("text"), str):
                return ApiError(422, f"`{name}[{index}]` must be a string or an object with a string `text` (and "
                                     "nothing else)", param=name, code="invalid_type"), i
            item = document["text"]
        if item is not None:
            if not wrong:  # once an item is wrong the list is refused: nothing more is kept
                texts.append(item)
                chars += len(item)
        else:
            kind, end = item_kind(text, i)
            if index == 0 and name in ID_LISTS and kind in ("int", "list"):
                return token_ids_refused(name), i
            wrong.append((index, kind))
            if end is None or len(wrong) == CHECKED_ITEMS:
                return wrong_items(name, wrong, stopped=True), i
            i = end
        index += 1
        if index > shape.max_texts:
            return (wrong_items(name, wrong, stopped=True) if wrong else too_many_texts(name, shape.max_texts)), i
        if chars > shape.max_chars:
            return too_many_chars(shape.max_chars), i
        i = skip(text, i)
        if text.startswith("]", i):
            return (wrong_items(name, wrong, stopped=False) if wrong else texts), i + 1
        i = expect(text, i, ",", "Expecting ',' delimiter")


def item_kind(text: str, i: int) -> tuple[str, int | None]:
    """(type name, e5's words: int, float, bool, null, list, dict; end) of the item at `i`; a list or an
    object has no end here: finding it would mean parsing it."""
    if text.startswith("[", i):
        return "list", None
    if text.startswith("{", i):
        return "dict", None
    number = NUMBER_RE.match(text, i)
    if number:  # not converted: a number of a million digits costs nothing here
        return ("int" if number.group(2) is None and number.group(3) is None else "float"), number.end()
    value, end = scalar(text, i)  # true, false, null, NaN, Infinity
    return {bool: "bool", float: "float"}.get(type(value), "null"), end


def wrong_items(name: str, wrong: list[tuple[int, str]], stopped: bool) -> ApiError:
    """`input[1]` must be a string, got int (so must `input[2]` and `input[3]`, and maybe items after them)."""
    (first, kind), rest = wrong[0], [f"`{name}[{index}]`" for index, _ in wrong[1:]]
    message = f"`{name}[{first}]` must be a string, got {kind}"
    if rest:
        message += f" (so must {', '.join(rest[:-1]) + ' and ' if len(rest) > 1 else ''}{rest[-1]}"
        message += ", and maybe items after them: the check stops there)" if stopped else ")"
    elif stopped:
        message += " (items after it were not checked)"
    return ApiError(422, message, param=name, code="invalid_type")


def too_many_texts(name: str, limit: int) -> ApiError:
    return ApiError(400, f"`{name}` has more than {limit} texts; the limit is {limit} per request (split the "
                         f"request, or raise E5_MAX_TEXTS)", param=name, code="too_many_texts")


def too_many_chars(limit: int) -> ApiError:
    return ApiError(400, f"the request has more than {limit} characters of text; the limit is {limit} per request "
                         "(E5_MAX_REQUEST_CHARS)", code="request_too_large")


def stand_in_error(model: type[BaseModel], field: str, stand_in: list | dict) -> ApiError:
    """pydantic's refusal of a list or an object in `field`, from an empty one of the same kind (the value
    itself is never parsed: its type is all pydantic would have looked at)."""
    try:
        model.__pydantic_validator__.validate_assignment(model.model_construct(), field, stand_in)
    except ValidationError as err:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in err.errors()]
        return validation_error(RequestValidationError(errors))
    return ApiError(422, f"`{field}` must not be a list or an object", param=field, code="invalid_type")


# --- the OpenAI request -> the service's Request -> the OpenAI response ---------------------------------


def texts_of(value, name: str = "input") -> list[str] | str:
    """`input` as texts. Token ids are refused: they come from another tokenizer, not this model's."""
    if isinstance(value, list) and value and not isinstance(value[0], str):
        raise token_ids_refused(name)
    return value


def check_dimensions(dimensions: int | None, width: int) -> None:
    try:
        validate_dimensions(dimensions, width)
    except InputError as err:
        raise input_error(err, {}) from None


def embeddings_body(response: Response) -> dict:
    # base64 vectors travel in their own field of the service's Response (the Cog schema types each field once).
    vectors = response.embeddings_base64 if response.embeddings_base64 is not None else as_list(response.embeddings)
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(vectors)]
    for item, window in zip(data, response.windows or ()):  # long_texts windows: a vector per window of a text
        item.update(index=window["text"], start=window["start"], end=window["end"])
    return {
        "object": "list",
        "data": data,
        "model": response.model,
        "usage": response.usage,
    }


def ranked(response: Response) -> list[tuple[int, float]]:
    """(document index, cosine) best first for the request's one query.

    The one place that reads how the service's Response carries a ranking: `ranking[0]` the query's
    `{index, score}` entries best first, cut to top_k.
    """
    return [(int(e["index"]), round(float(e["score"]), 6)) for e in response.ranking[0]]


def rerank_body(response: Response, documents: list[str], return_documents: bool) -> dict:
    results = []
    for index, score in ranked(response):
        result = {"index": index, "relevance_score": score}
        if return_documents:
            result["document"] = {"text": documents[index]}
        results.append(result)
    return {"object": "rerank", "id": f"rerank-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": response.model, "results": results, "usage": response.usage}


def json_response(body: dict) -> HttpResponse:
    # Written directly: FastAPI's encoder would walk every one of a response's floats first.
    return HttpResponse(json.dumps(body, separators=(",", ":")), media_type="application/json")


async def until_disconnected(receive: Callable[[], Awaitable[dict]]) -> None:
    """Returns when the client has gone. After the body, the server's next message is the disconnect."""
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientGone(Exception):
    pass


async def unless_disconnected(http: HttpRequest, work: Awaitable):
    """`work`'s result, or its cancellation when the client goes away first (the batcher drops cancelled
    jobs' texts, so nobody else's request is touched)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnected(http.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is shutting down
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        print("e5: the client went away; its request was cancelled", flush=True)
        raise ClientGone
    return task.result()


# --- the app --------------------------------------------------------------------------------------------


class State:
    """What the routes share: the service once loaded, why loading failed, requests in flight, the bytes of
    bodies being received, and the lock that lets one large body be parsed at a time."""

    def __init__(self):
        self.service: EmbeddingService | None = None
        self.failure: str | None = None
        self.in_flight = 0
        self.body_bytes = 0
        self.parsing = asyncio.Lock()
        self.metrics = ApiMetrics(lambda: self.in_flight, lambda: self.service and self.service.budget.snapshot())

    def ready_service(self) -> EmbeddingService:
        refusal = self.unready()
        if refusal is not None:
            raise refusal
        return self.service

    def unready(self) -> ApiError | None:
        """Why no request can be served now, or None. Returned, not raised: see `Gate`."""
        if self.failure is not None:
            return ApiError(503, f"the server failed to start: {self.failure}", type="server_error", code="setup_failed")
        if self.service is None:
            return ApiError(503, "the model is still loading; retry shortly", type="server_error", code="model_loading",
                            headers={"Retry-After": "5"})
        if not self.service.healthy():
            return ApiError(503, "the engine stopped after repeated failures; this replica needs a restart",
                            type="server_error", code="unhealthy")
        return None

    def model_name(self) -> str | None:
        """The loaded checkpoint's model (e5/profiles.py), what every answer names; None while loading."""
        return None if self.service is None else self.service.embedder.model_profile.name

    def health(self) -> str:
        if self.failure is not None or (self.service is not None and not self.service.healthy()):
            return "unhealthy"
        return "loading" if self.service is None else "ready"


PARSED = "e5.body"  # the scope key under which the gate hands a parsed body to its route (ParsedRequest)
LARGE_BODY = 64 * 1024  # a body past this is parsed on a worker thread, so the event loop answers meanwhile


class Received:
    """A body as it arrives, counted against what all bodies being received may hold together."""

    def __init__(self, state: State):
        self.state, self.data, self.counted = state, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        self.counted += len(chunk)
        self.state.body_bytes += len(chunk)

    def release(self) -> None:
        self.state.body_bytes -= self.counted
        self.counted = 0


class Gate:
    """ASGI middleware in front of the routes: bearer auth (401) and the declared size (413) from the headers;
    then for embedding and rerank requests, the whole body (413 past the limit, 408 past the body timeout),
    a place in flight (429), the body parsed once and its shape checked (400, 422), and the route.

    A request takes its place in flight only once its body is here, so clients that send slowly hold no place.
    Refusals are returned and answered, never raised through frames that hold the body: an exception's
    traceback keeps every frame it passed alive, bodies included, until the garbage collector runs.
    """

    def __init__(self, app, settings: ApiSettings, state: State):
        self.app, self.settings, self.state = app, settings, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.handle(scope, receive, sending)
        finally:  # every answer is counted: refusals by the code `answer` or a route's handler left in the scope
            metrics = self.state.metrics
            metrics.answered(route_label(scope), status[0], time.perf_counter() - started)
            if status[0] >= 400:
                metrics.refused(scope.get(CODE) or f"http_{status[0]}")

    async def handle(self, scope, receive, send):
        work = scope["method"] == "POST" and scope["path"] in WORK_PATHS
        refusal = self.refusal(scope)
        if refusal is None and work:
            refusal = self.state.unready()  # before reading a body that could not be served
        if refusal is not None:  # answered before the body is read: the connection closes instead of reading it
            return await answer(refusal, scope, receive, send, close=work)
        if not work:
            return await self.app(scope, receive, send)
        received = Received(self.state)
        try:
            await self.serve(scope, receive, send, received)
        finally:
            received.release()

    async def serve(self, scope, receive, send, received: Received):
        refusal = await self.receive_body(receive, received)
        if refusal is not None:
            return await answer(refusal, scope, receive, send, close=True)
        if self.state.in_flight >= self.settings.max_requests:
            return await answer(too_many_requests(self.settings.max_requests), scope, receive, send)
        self.state.in_flight += 1
        try:
            body = b""
            if received.data and is_json(scope):
                parsed = await self.parse(received, body_shape(scope["path"], self.state.service))
                if isinstance(parsed, ApiError):
                    return await answer(parsed, scope, receive, send)
                if scope["path"] in RERANK_PATHS and "texts" in parsed:  # TEI's rerank: TEI's errors
                    scope[STYLE] = "tei"
                scope[PARSED] = parsed
            else:  # no body, or not JSON: FastAPI refuses it with one error; it gets the bytes as they came
                body = bytes(received.data)
                received.data.clear()
            received.release()
            await self.app(scope, replay(body, receive), send)
        finally:
            self.state.in_flight -= 1

    async def receive_body(self, receive, received: Received) -> ApiError | None:
        """Reads the whole body into `received`; or the refusal (None also when the client went away)."""
        limit, budget = self.settings.max_body_bytes, self.settings.max_requests * self.settings.max_body_bytes
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None  # nobody to answer; the caller sends into a closed connection, which is a no-op
                    chunk = message.get("body", b"")
                    if len(received.data) + len(chunk) > limit:  # a chunked body, or one longer than it said
                        return too_large(limit)
                    if self.state.body_bytes + len(chunk) > budget:
                        return too_many_bodies(budget)
                    received.add(chunk)
                    if not message.get("more_body", False):
                        return None
        except TimeoutError:
            return body_timeout(self.settings.body_timeout_s)

    async def parse(self, received: Received, shape: BodyShape) -> dict | ApiError:
        if len(received.data) <= LARGE_BODY:
            return read_json(received.data, shape)
        # One large body at a time: parsing holds the GIL, so two threads would not be faster, and what a parse
        # costs on top of the bodies' bytes is then one body's worth at most.
        async with self.state.parsing:
            return await asyncio.to_thread(read_json, received.data, shape)

    def refusal(self, scope) -> ApiError | None:
        headers = dict(scope["headers"])
        key = self.settings.api_key
        if key is not None and scope["path"] not in OPEN_PATHS:
            if not bearer_matches(headers.get(b"authorization", b""), key):
                return ApiError(401, "missing or wrong API key: send the header `Authorization: Bearer <E5_API_KEY>`",
                                type="authentication_error", code="invalid_api_key")
        if scope["method"] == "POST" and scope["path"] in WORK_PATHS:
            length = headers.get(b"content-length", b"").decode("latin-1")
            if length.isdigit() and int(length) > self.settings.max_body_bytes:
                return too_large(self.settings.max_body_bytes)
        return None


def bearer_matches(header: bytes, key: str) -> bool:
    """`Authorization: Bearer <key>`, the scheme in any case (RFC 7235: auth schemes are case-insensitive)."""
    scheme, _, token = header.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key.encode("ascii"))


def is_json(scope) -> bool:
    """Whether FastAPI would read the body as JSON: a content type of application/json or application/*+json."""
    content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
    if not content_type:
        return False  # FastAPI's strict content type: a body without one is not JSON
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


BODIES = {  # each route that does work when POSTed, and its body
    **{path: EmbeddingsRequest for path in EMBEDDINGS_PATHS}, **{path: RerankRequest for path in RERANK_PATHS},
    "/v2/rerank": peer.CohereRerankRequest, "/embed": peer.TeiEmbedRequest, "/": peer.TeiPredictRequest,
    "/tokenize": peer.TeiTokenizeRequest,
}
WORK_PATHS = set(BODIES)  # bounded in flight, their bodies read and checked by the gate
ROUTES = {*WORK_PATHS, "/v1/models", "/models", "/health", "/info", "/metrics"}  # /metrics' route labels
CODE = "e5.code"  # the scope key where an error's code is left for /metrics


def body_shape(path: str, service: EmbeddingService) -> BodyShape:
    return BodyShape(BODIES[path], service.limits.max_texts, service.limits.max_chars_per_request)


def route_label(scope) -> str:
    """The route a request is counted under: its path where that is a route, so unknown paths stay one label."""
    path = scope["path"]
    if path in ROUTES:
        return path
    return "/v1/models/{id}" if path.startswith(("/v1/models/", "/models/")) else "other"


def replay(body: bytes, receive):
    """`receive` for the route: the body once, as one message, then the connection's own messages (the
    disconnect that `until_disconnected` waits for)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def answer(err: ApiError, scope, receive, send, close: bool = False) -> None:
    scope[CODE] = err.code
    response = err.response(style_of(scope))
    if close:  # the body was not read whole: closing is the only way not to read the rest of it
        response.headers["connection"] = "close"
    await response(scope, receive, send)


class ParsedRequest(HttpRequest):
    """The request as its route sees it: the body the gate parsed and checked, not read or parsed again
    (FastAPI's documented custom Request class and route class)."""

    async def body(self) -> bytes:
        if PARSED in self.scope:
            return b"{}"  # FastAPI asks for the bytes only to see that a body came, then takes json()
        return await super().body()

    async def json(self):
        if PARSED in self.scope:
            return self.scope[PARSED]
        return await super().json()


class ParsedBodyRoute(APIRoute):
    def get_route_handler(self):
        handler = super().get_route_handler()

        async def with_parsed_body(request: HttpRequest):
            return await handler(ParsedRequest(request.scope, request.receive))

        return with_parsed_body


class HeadTimeout(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for each request's head.

    uvicorn 0.54 times a connection out only after an answer, and only until the next byte comes: a connection
    that never sends a byte, or sends half a request head and stops, is held for ever (and enough of them make
    the server unreachable). Here each connection must send a whole request head within the keep-alive timeout
    (E5_API_IDLE_TIMEOUT_S) of opening and of each answer, or it is closed; the body then has
    E5_API_BODY_TIMEOUT_S (the gate's 408).
    """

    head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self.await_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.await_head()

    def connection_lost(self, exc) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        super().connection_lost(exc)

    def await_head(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        self.head_timer = self.loop.call_later(self.timeout_keep_alive, self.head_overdue)

    def head_overdue(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():  # no whole request head yet
            self.transport.close()


def too_many_requests(limit: int) -> ApiError:
    return ApiError(429, f"{limit} requests are in flight, the most this server takes (E5_API_MAX_REQUESTS); "
                         "retry after a short pause",
                    type="rate_limit_error", code="too_many_requests", headers={"Retry-After": "1"})


def too_many_bodies(budget: int) -> ApiError:
    return ApiError(429, f"the bodies being received would pass {budget:,} bytes together, the most this server holds "
                         "(E5_API_MAX_REQUESTS x E5_API_MAX_BODY_BYTES); retry after a short pause",
                    type="rate_limit_error", code="too_many_requests", headers={"Retry-After": "1"})


def body_timeout(seconds: float) -> ApiError:
    return ApiError(408, f"the request body did not arrive whole within {seconds:g} s of its headers "
                         "(E5_API_BODY_TIMEOUT_S)", code="request_timeout")


def http_error(exc: HTTPException, settings: ApiSettings) -> ApiError:
    """The framework's own refusals (no such route, wrong method, a body cut short) in OpenAI's shape."""
    if exc.status_code == 413:
        return too_large(settings.max_body_bytes)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return ApiError(exc.status_code, str(exc.detail), code=codes.get(exc.status_code), headers=exc.headers)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is over {limit:,} bytes (E5_API_MAX_BODY_BYTES); split the request",
                    code="request_too_large")


def create_app(settings: ApiSettings | None = None, load: Callable[[], EmbeddingService] = load_service,
               on_failure: Callable[[], None] | None = None) -> FastAPI:
    """The app; the model loads in the background once it starts, so /health answers `loading` meanwhile.

    A failed load is logged with the engine's message and calls `on_failure` (`main` stops the server).
    """
    settings = settings or ApiSettings.from_env()
    state = State()

    async def load_in_background():
        try:
            service = await asyncio.to_thread(load)
            service.on_forward = state.metrics.forward  # before its first request makes the batcher
            state.service = service
        except Exception as err:
            state.failure = f"{type(err).__name__}: {err}"
            print(f"e5: setup failed: {state.failure}", file=sys.stderr, flush=True)
            if on_failure is not None:
                on_failure()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.api_key is None:
            print("e5: E5_API_KEY is not set: the API is open to anyone who can reach this port", flush=True)
        else:
            print("e5: bearer-token auth on: every call but /health needs `Authorization: Bearer <E5_API_KEY>`", flush=True)
        loading = asyncio.create_task(load_in_background())
        yield
        loading.cancel()

    app = FastAPI(title="multilingual-e5-large-instruct, OpenAI-compatible", version="1", lifespan=lifespan,
                  description="OpenAI's embeddings API and a rerank route over the e5 engine (docs/openai.md).")
    app.state.e5 = state
    app.router.route_class = ParsedBodyRoute  # routes take the body the gate parsed
    app.add_middleware(Gate, settings=settings, state=state)

    def handler(to_error: Callable[[Exception], ApiError | HttpResponse]):
        async def handle(request: HttpRequest, exc: Exception) -> HttpResponse:
            # Cut the exception's links before it is answered: the framework raises some exceptions from a
            # frame that also holds them (FastAPI's request handler keeps its RequestValidationError in a local),
            # and exception -> traceback -> frame -> exception is a cycle that only the garbage collector
            # breaks, keeping the frames' bodies and texts alive until it runs.
            err = to_error(exc)
            forget(exc)
            if isinstance(err, HttpResponse):
                return err
            request.scope[CODE] = err.code
            return err.response(style_of(request.scope))

        return handle

    app.add_exception_handler(ApiError, handler(lambda err: err))
    app.add_exception_handler(RequestValidationError, handler(validation_error))
    app.add_exception_handler(HTTPException, handler(lambda exc: http_error(exc, settings)))
    app.add_exception_handler(ClientGone, handler(lambda exc: HttpResponse(status_code=499)))
    app.add_exception_handler(Exception, handler(
        lambda exc: ApiError(500, f"internal error: {type(exc).__name__}", type="server_error")))

    async def run(http: HttpRequest, request: Request, names: dict[str, str]) -> Response:
        service = state.ready_service()
        try:
            response, metrics = await unless_disconnected(http, service.run(request))
        except InputError as err:
            raise input_error(err, names) from None
        except E5Error as err:
            raise engine_failure(err) from None
        state.metrics.served(metrics)
        return response

    async def rank(http: HttpRequest, request: Request, names: dict[str, str]) -> Response:
        return await run(http, request, {"texts": "query", "top_k": "top_n", **names})

    # --- OpenAI's routes, with and without /v1 ---

    async def embeddings(body: EmbeddingsRequest, http: HttpRequest):
        """Vectors for `input`, in its order. With only `input`, each text is a query with web_search's instruction."""
        service = state.ready_service()
        check_dimensions(body.dimensions, service.embedder.dimensions)
        task = DEFAULT_TASK if body.task is None else body.task
        options = Options(task, body.input_type, body.normalize, body.truncate, body.encoding_format, body.long_texts)
        response = await run(http, Request(texts=texts_of(body.input), options=options), {"texts": "input"})
        return json_response(embeddings_body(response))

    for path in EMBEDDINGS_PATHS:
        app.post(path, response_model=EmbeddingsResponse, responses=ERRORS,
                 operation_id=operation(path, "embeddings"))(embeddings)

    async def rerank(body: RerankRequest, http: HttpRequest):
        """`documents` ranked against `query` by cosine of their E5 vectors (a bi-encoder), best first. With
        `texts` instead of `documents`, TEI's request and answer."""
        if (body.documents is None) == (body.texts is None):
            raise ApiError(422, "give `documents` (Jina, Cohere v1, Infinity) or `texts` (TEI), one of the two",
                           param="documents", code="missing_documents")
        tei = body.texts is not None
        documents = body.texts if tei else body.documents
        try:
            peer.check_right_truncation(body.truncation_direction)
        except InputError as err:
            raise input_error(err, {}) from None
        task = DEFAULT_TASK if body.task is None else body.task
        request = Request(texts=[body.query], documents=documents, top_k=body.top_n, include_vectors=False,
                          options=Options(task, "query", True, body.truncate, "float", body.long_texts))
        response = await rank(http, request, {"documents": "texts"} if tei else {})
        if tei:
            return json_response(peer.tei_rerank_body(ranked(response), documents,
                                                      body.return_text or body.return_documents))
        return json_response(rerank_body(response, documents, body.return_documents))

    for path in RERANK_PATHS:
        app.post(path, response_model=Union[RerankResponse, list[peer.TeiRerankResult]], responses=RERANK_ERRORS,
                 operation_id=operation(path, "rerank"))(rerank)

    def loaded_model() -> str:
        """The model that answers; until it has loaded, the 503 the work routes give (loading, or why not)."""
        name = state.model_name()
        if name is None:
            raise state.unready()
        return name

    async def models():
        return {"object": "list", "data": [model_card(loaded_model())]}

    async def model(model_id: str):
        name = loaded_model()
        if model_id != name:
            raise ApiError(404, f"no model `{model_id}` here; this server has {name}", param="model",
                           code="model_not_found")
        return model_card(name)

    for prefix in ("/v1", ""):
        app.get(prefix + "/models", response_model=ModelList, responses={401: ERRORS[401], 503: ERRORS[503]},
                operation_id=operation(prefix + "/models", "models"))(models)
        app.get(prefix + "/models/{model_id:path}", response_model=ModelCard,
                responses={401: ERRORS[401], 404: ERRORS[400], 503: ERRORS[503]},
                operation_id=operation(prefix + "/models/id", "model"))(model)

    # --- text-embeddings-inference's routes ---

    async def tei_embed(body: peer.TeiEmbedRequest, http: HttpRequest):
        """TEI's /embed: one list of floats per text. `prompt_name` chooses the role (GET /info lists them)."""
        service = state.ready_service()
        try:
            request = peer.tei_embed_request(body, texts_of(body.inputs, "inputs"), service.embedder.dimensions)
        except InputError as err:
            raise input_error(err, {}) from None
        return json_response(peer.tei_embed_body(await run(http, request, {"texts": "inputs"})))

    app.post("/embed", response_model=list[list[float]], responses=TEI_ERRORS, operation_id="tei_embed")(tei_embed)

    @app.post("/", response_model=list[list[float]], responses=TEI_ERRORS, operation_id="tei_predict")
    async def tei_predict(body: peer.TeiPredictRequest, http: HttpRequest):
        """What huggingface_hub's `InferenceClient(base_url).feature_extraction` posts: TEI's /embed, its options
        also under `parameters`."""
        return await tei_embed(peer.merged(body), http)

    @app.post("/tokenize", response_model=list[list[peer.TeiToken]], responses=TEI_ERRORS, operation_id="tei_tokenize")
    async def tei_tokenize(body: peer.TeiTokenizeRequest):
        """Each text's tokens as the model reads it (the instruction on a query), uncut."""
        service = state.ready_service()
        try:
            if not body.add_special_tokens:
                raise InputError("`add_special_tokens` must be true: the model always reads <s> and </s>",
                                 "invalid_choice")
            options = peer.prompt_options(body.prompt_name, True, True)
            tokenized = await service.tokenize(body.inputs, options, peer.tei_tokens)
        except InputError as err:
            raise input_error(err, {"texts": "inputs"}) from None
        except E5Error as err:  # no room in the memory budget within the wait: a 503, as run's
            raise engine_failure(err) from None
        return json_response(tokenized)

    @app.get("/info", response_model=peer.TeiInfo, responses={401: TEI_ERRORS[401], 503: TEI_ERRORS[503]})
    async def tei_info():
        """TEI's /info: the model, its limits and the prompt names (`prompt_name`) with what each puts first."""
        service = state.ready_service()
        embedder, limits = service.embedder, service.limits
        dtype = str(embedder.profile.dtype).removeprefix("torch.")
        return peer.tei_info(embedder.model_profile, dtype, embedder.max_tokens, embedder.profile.token_budget,
                             settings.max_requests, limits.max_texts, app.version)

    # --- Cohere's v2 rerank ---

    @app.post("/v2/rerank", response_model=peer.CohereRerankResponse, responses=COHERE_ERRORS,
              operation_id="cohere_rerank")
    async def cohere_rerank(body: peer.CohereRerankRequest, http: HttpRequest):
        """Cohere v2's rerank (`ClientV2.rerank`): documents as texts or `{text}` objects, `max_tokens_per_doc`."""
        documents = peer.cohere_documents(body)
        try:
            request = peer.cohere_rerank_request(body, documents)
        except InputError as err:
            raise input_error(err, {}) from None
        response = await rank(http, request, {"document_tokens": "max_tokens_per_doc"})
        return json_response(peer.cohere_rerank_body(ranked(response), documents, body.return_documents,
                                                     response.usage["total_tokens"]))

    # --- the server itself ---

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health():
        status = state.health()
        body = {"status": status, "model": state.model_name(), "requests_in_flight": state.in_flight,
                "max_requests": settings.max_requests, "saturated": state.in_flight >= settings.max_requests,
                "memory": None if state.service is None else state.service.budget.snapshot()}
        return JSONResponse(body, status_code=200 if status == "ready" else 503)

    @app.get("/metrics", response_class=PlainTextResponse, responses={401: ERRORS[401]},
             operation_id="metrics")
    async def metrics():
        """Prometheus' text format: requests, texts, tokens, refusals, latency, queue wait, forwards, in flight."""
        return HttpResponse(state.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    return app


def operation(path: str, name: str) -> str:
    """A unique OpenAPI operation id for a route served at several paths."""
    return name + ("_v1" if path.startswith("/v1") else "")


def forget(exc: BaseException) -> None:
    """Drop what an answered exception refers to: its traceback (and with it every frame it passed, and their
    locals), the exceptions it was raised from, and a validation error's copy of the body."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        if isinstance(exc, RequestValidationError):
            exc.body = None
        after = exc.__cause__ or exc.__context__
        exc.__cause__ = exc.__context__ = None
        exc = after


def model_card(name: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": name.split("/")[0]}


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the OpenAI-compatible API (docs/openai.md).")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 in a container")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    try:
        settings = ApiSettings.from_env()
    except ValueError as err:  # a bad E5_API_* value: the same kind of message as the engine's settings
        print(f"e5: {err}", file=sys.stderr)
        return 2
    server: uvicorn.Server | None = None

    def stop() -> None:
        server.should_exit = True

    app = create_app(settings, on_failure=stop)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, http=HeadTimeout,
                            timeout_keep_alive=settings.idle_timeout_s)
    server = uvicorn.Server(config)
    server.run()
    return 1 if app.state.e5.failure else 0


if __name__ == "__main__":
    sys.exit(main())
