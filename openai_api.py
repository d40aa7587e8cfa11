"""The OpenAI-compatible face: `POST /v1/embeddings`, `POST /rerank`, `GET /v1/models`, `GET /health`.

    python -m openai_api --host 0.0.0.0 --port 8000

For self-hosters whose tools speak OpenAI's embeddings API (the `openai` SDKs, LangChain, LlamaIndex, vector
databases' "OpenAI" vectorizers). Like predict.py it is declarations around `EmbeddingService.run`: the
engine is built by `e5.startup.load_service` (the same weights, `E5_*` settings and refusals as the Cog face),
and every request goes through the same validation, formatting, batching and encoding. What is here is the
HTTP shape: OpenAI's request and response bodies, its error object, bearer auth, a body-size gate, a bound on
requests in flight, and cancelling the work of a client that went away. docs/openai.md lists every route
and error.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Literal, Optional, Union

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response as HttpResponse
from starlette.exceptions import HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from e5.errors import E5Error, InputError
from e5.instructions import DEFAULT_TASK
from e5.model import MODEL_ID
from e5.service import EmbeddingService, Response
from e5.startup import ApiSettings, load_service
from e5.validation import Options, Request

WORK_PATHS = {"/v1/embeddings", "/rerank", "/v1/rerank"}  # the routes that embed: bounded in flight
OPEN_PATHS = {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}  # no key needed
NOT_MATRYOSHKA = (
    "multilingual-e5-large-instruct was not trained to give shorter vectors (it is not Matryoshka-trained): "
    "a cut vector is not a smaller version of this one"
)

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
    dimensions: Optional[StrictInt] = Field(None, description="Only 1024 (the model's width) is accepted.")
    user: Optional[StrictStr] = Field(None, description="Accepted and ignored.")
    input_type: Literal["query", "document"] = Field(
        "query", description="query: the task's instruction goes before each text. document: the text as it is."
    )
    task: Optional[StrictStr] = Field(
        None, description="For queries: an instruction, or a preset name (web_search, nq, sts, ...). Default web_search's."
    )
    truncate: StrictBool = Field(True, description="Cut texts past 512 tokens; false: such a text is a 400.")
    normalize: StrictBool = Field(True, description="L2-normalize each vector.")


class EmbeddingData(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: Union[list[float], str, list[int]]


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingData]
    model: str
    usage: Usage


class RerankRequest(BaseModel):
    """The rerank shape Jina, Cohere and TEI's clients share (with `documents`, as Jina and Cohere)."""

    model_config = ConfigDict(extra="forbid")

    query: StrictStr
    documents: list[StrictStr]
    top_n: Optional[StrictInt] = Field(None, ge=1, description="Keep the best top_n results.")
    return_documents: StrictBool = Field(False, description="Add each document's text to its result.")
    model: Optional[StrictStr] = Field(None, description="Any name is accepted; this server has one model.")
    task: Optional[StrictStr] = Field(None, description="The query's instruction or preset name. Default web_search's.")
    truncate: StrictBool = Field(True, description="Cut texts past 512 tokens; false: such a text is a 400.")


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: Optional[RerankDocument] = None


class RerankResponse(BaseModel):
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


class Health(BaseModel):
    status: Literal["loading", "ready", "unhealthy"]
    model: str
    requests_in_flight: int


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str]
    code: Optional[str]


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 413, 422, 429, 500, 503)}

# --- errors in OpenAI's shape ---------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class BodyTooLarge(HTTPException):
    """Raised from inside the body's reading; FastAPI passes an HTTPException on as it is."""

    def __init__(self):
        super().__init__(413)


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
        return ApiError(422, f"unknown field `{field}` (see GET /openapi.json for the fields this server takes)",
                        param=field, code="unknown_field")
    where = field + "".join(f"[{p}]" for p in loc[1:] if p.isdigit())
    return ApiError(422, f"`{where}`: {first['msg']}", param=field, code=first["type"])


# --- the OpenAI request -> the service's Request -> the OpenAI response ---------------------------------


def texts_of(value) -> list[str] | str:
    """`input` as texts. Token ids are refused: they come from OpenAI's tokenizer, not this model's."""
    if isinstance(value, list) and value and not isinstance(value[0], str):
        raise ApiError(
            400,
            "`input` holds token ids; this server embeds text only (ids from OpenAI's tokenizer mean nothing to "
            "this model's vocabulary). LangChain's OpenAIEmbeddings sends them unless you set "
            "check_embedding_ctx_length=False.",
            param="input", code="token_ids_not_supported",
        )
    return value


def check_dimensions(dimensions: int | None, width: int) -> None:
    if dimensions is not None and dimensions != width:
        raise ApiError(400, f"`dimensions` must be {width} or left out, got {dimensions}: {NOT_MATRYOSHKA}",
                       param="dimensions", code="invalid_dimensions")


def embeddings_body(response: Response) -> dict:
    # base64 vectors travel in their own field of the service's Response (the Cog schema types each field once).
    vectors = response.embeddings_base64 if response.embeddings_base64 is not None else as_list(response.embeddings)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(vectors)],
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
    return {"model": response.model, "results": results, "usage": response.usage}


def as_list(value) -> list:
    return value.tolist() if hasattr(value, "tolist") else list(value)


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
    """What the routes share: the service once loaded, why loading failed, requests in flight."""

    def __init__(self):
        self.service: EmbeddingService | None = None
        self.failure: str | None = None
        self.in_flight = 0

    def ready_service(self) -> EmbeddingService:
        if self.failure is not None:
            raise ApiError(503, f"the server failed to start: {self.failure}", type="server_error", code="setup_failed")
        if self.service is None:
            raise ApiError(503, "the model is still loading; retry shortly", type="server_error", code="model_loading",
                           headers={"Retry-After": "5"})
        if not self.service.healthy():
            raise ApiError(503, "the engine stopped after repeated failures; this replica needs a restart",
                           type="server_error", code="unhealthy")
        return self.service

    def health(self) -> str:
        if self.failure is not None or (self.service is not None and not self.service.healthy()):
            return "unhealthy"
        return "loading" if self.service is None else "ready"


class Gate:
    """ASGI middleware, before any body is read: bearer auth (401), requests in flight (429), body size (413)."""

    def __init__(self, app, settings: ApiSettings, state: State):
        self.app, self.settings, self.state = app, settings, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            return await refusal.response()(scope, receive, send)
        if not (scope["method"] == "POST" and scope["path"] in WORK_PATHS):
            return await self.app(scope, receive, send)
        self.state.in_flight += 1
        try:
            await self.app(scope, self.limited(receive), send)
        finally:
            self.state.in_flight -= 1

    def refusal(self, scope) -> ApiError | None:
        headers = dict(scope["headers"])
        key = self.settings.api_key
        if key is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(given.encode("latin-1"), f"Bearer {key}".encode("latin-1")):
                return ApiError(401, "missing or wrong API key: send the header `Authorization: Bearer <E5_API_KEY>`",
                                type="authentication_error", code="invalid_api_key")
        if scope["method"] == "POST" and scope["path"] in WORK_PATHS:
            if self.state.in_flight >= self.settings.max_requests:
                return ApiError(429, f"{self.settings.max_requests} requests are in flight, the most this server takes "
                                     "(E5_API_MAX_REQUESTS); retry after a short pause",
                                type="rate_limit_error", code="too_many_requests", headers={"Retry-After": "1"})
            length = headers.get(b"content-length", b"").decode("latin-1")
            if length.isdigit() and int(length) > self.settings.max_body_bytes:
                return too_large(self.settings.max_body_bytes)
        return None

    def limited(self, receive):
        """`receive` that stops a body (say a chunked one) once it passes the limit, whatever its header said."""
        received, limit = 0, self.settings.max_body_bytes

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        return limited_receive


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
            state.service = await asyncio.to_thread(load)
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
    app.add_middleware(Gate, settings=settings, state=state)

    app.add_exception_handler(ApiError, lambda request, err: err.response())
    app.add_exception_handler(RequestValidationError, lambda request, exc: validation_error(exc).response())
    app.add_exception_handler(HTTPException, lambda request, exc: http_error(exc, settings).response())
    app.add_exception_handler(ClientGone, lambda request, exc: HttpResponse(status_code=499))
    app.add_exception_handler(
        Exception, lambda request, exc: ApiError(500, f"internal error: {type(exc).__name__}", type="server_error").response()
    )

    async def run(http: HttpRequest, request: Request, names: dict[str, str]) -> Response:
        service = state.ready_service()
        try:
            response, _ = await unless_disconnected(http, service.run(request))
        except InputError as err:
            raise input_error(err, names) from None
        except E5Error as err:
            raise engine_failure(err) from None
        return response

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=ERRORS)
    async def embeddings(body: EmbeddingsRequest, http: HttpRequest):
        """Vectors for `input`, in its order. With only `input`, each text is a query with web_search's instruction."""
        service = state.ready_service()
        check_dimensions(body.dimensions, service.embedder.dimensions)
        task = DEFAULT_TASK if body.task is None else body.task
        options = Options(task, body.input_type, body.normalize, body.truncate, body.encoding_format)
        response = await run(http, Request(texts=texts_of(body.input), options=options), {"texts": "input"})
        return json_response(embeddings_body(response))

    async def rerank(body: RerankRequest, http: HttpRequest):
        """`documents` ranked against `query` by cosine of their E5 vectors (a bi-encoder), best first."""
        task = DEFAULT_TASK if body.task is None else body.task
        options = Options(task, "query", True, body.truncate, "float")
        request = Request(texts=[body.query], documents=body.documents, top_k=body.top_n, options=options,
                          include_vectors=False)  # only the ranking is answered: no vectors encoded or held
        response = await run(http, request, {"texts": "query"})
        return json_response(rerank_body(response, body.documents, body.return_documents))

    for path in ("/rerank", "/v1/rerank"):
        app.post(path, response_model=RerankResponse, responses=ERRORS, operation_id=f"rerank_{path.strip('/').replace('/', '_')}")(rerank)

    @app.get("/v1/models", response_model=ModelList, responses={401: ERRORS[401]})
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses={401: ERRORS[401], 404: ERRORS[400]})
    async def model(model_id: str):
        if model_id != MODEL_ID:
            raise ApiError(404, f"no model `{model_id}` here; this server has {MODEL_ID}", param="model",
                           code="model_not_found")
        return model_card()

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health():
        status = state.health()
        body = {"status": status, "model": MODEL_ID, "requests_in_flight": state.in_flight}
        return JSONResponse(body, status_code=200 if status == "ready" else 503)

    return app


def model_card() -> dict:
    return {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": MODEL_ID.split("/")[0]}


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
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level))
    server.run()
    return 1 if app.state.e5.failure else 0


if __name__ == "__main__":
    sys.exit(main())
