"""The request and response shapes of the servers self-hosters already run, over this engine (docs/openai.md).

- text-embeddings-inference (TEI): `POST /embed`, `POST /` (where huggingface_hub's `InferenceClient` posts),
  `POST /rerank` with `texts`, `POST /tokenize`, `GET /info`;
- Cohere v2: `POST /v2/rerank`;
- Infinity: OpenAI's routes without `/v1`, and `raw_scores` on `/rerank` (openai_api.py).

Each request shape becomes the service's `Request`, each `Response` that API's answer. The routes
(openai_api.py) send every request through `EmbeddingService.run`, as every other route does. Pure: no
server, no model. What a shape cannot carry is refused with e5's `InputError`, naming the field.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from e5.errors import InputError
from e5.instructions import DEFAULT_TASK, PRESETS, near_miss
from e5.profiles import ModelProfile
from e5.service import Response
from e5.encodings import as_list
from e5.engine import Tokens
from e5.validation import Options, Request, validate_dimensions, whole_number

# `2.0` as 2 on every route, as the Cog face takes it; anything else meets pydantic's strict check as it came.
WholeInt = Annotated[StrictInt, BeforeValidator(whole_number)]

# --- roles: TEI's `prompt_name` ------------------------------------------------------------------------------
#
# TEI embeds a text as it comes unless `prompt_name` names a prompt of the model's sentence-transformers config;
# clients written for TEI add an instruction themselves where they want one (LlamaIndex's `query_instruction`,
# Haystack's `prefix`). So here too: left out, a text is embedded as a document (raw on multilingual-e5-large-
# instruct); `prompt_name` names a role: `query` (web_search's instruction), a preset's query, or `document`.

DOCUMENT_PROMPTS = ("document", "passage")


def prompt_names() -> list[str]:
    return ["query", *DOCUMENT_PROMPTS, *PRESETS]


def prompt_options(prompt_name: str | None, normalize: bool, truncate: bool) -> Options:
    """The options a TEI request's `prompt_name` stands for. Left out: a document, as TEI embeds it as it comes."""
    if prompt_name == "query":
        return Options(DEFAULT_TASK, "query", normalize, truncate)
    if prompt_name is None or prompt_name in DOCUMENT_PROMPTS:
        return Options(DEFAULT_TASK, "document", normalize, truncate)
    if prompt_name in PRESETS:
        return Options(prompt_name, "query", normalize, truncate)
    meant = near_miss(prompt_name)
    hint = f"did you mean `{meant}`? " if meant else ""
    raise InputError(f"`prompt_name` {prompt_name!r} is not a prompt here; {hint}the prompts are: "
                     f"{', '.join(prompt_names())}", "unknown_prompt")


def prompts(model: ModelProfile) -> dict[str, str]:
    """What each prompt name puts before a text, as TEI's /info lists a model's prompts."""
    before = model.query_template.split("{text}")[0]
    listed = {"query": before.format(task=DEFAULT_TASK)}
    listed.update({name: model.document_template.split("{text}")[0] for name in DOCUMENT_PROMPTS})
    if model.uses_task:
        listed.update({name: before.format(task=preset.instruction) for name, preset in PRESETS.items()})
    return listed


def check_right_truncation(direction: str | None) -> None:
    if direction is not None and direction.lower() != "right":
        raise InputError("`truncation_direction` must be right: this server keeps a text's first 512 tokens",
                         "invalid_choice")


# --- TEI ------------------------------------------------------------------------------------------------------


class TeiOptions(BaseModel):
    """The options TEI's /embed takes, also as huggingface_hub sends them (`parameters`). Null: the default."""

    model_config = ConfigDict(extra="forbid")

    normalize: Optional[StrictBool] = Field(None, description="L2-normalize each vector (default true).")
    truncate: Optional[StrictBool] = Field(
        None, description="Cut texts past 512 tokens (default true here, as every route of this server); false: "
                          "such a text is an error.")
    truncation_direction: Optional[Literal["left", "right", "Left", "Right"]] = Field(
        None, description="Only right: a text's first 512 tokens are kept.")
    prompt_name: Optional[StrictStr] = Field(
        None, description="The role. Left out or document: the text as a document (raw, as TEI). query: a query "
                          "with web_search's instruction; a preset name: a query with its instruction. GET /info "
                          "lists them.")
    dimensions: Optional[WholeInt] = Field(None, description="Only the model's width is accepted.")
    encoding_format: Optional[Literal["float"]] = Field(None, description="float only, as TEI.")


class TeiEmbedRequest(TeiOptions):
    inputs: Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]] = Field(
        description="A text or a list of texts. Token-id arrays are refused.")


class TeiPredictRequest(TeiEmbedRequest):
    """`POST /`: TEI's body, or huggingface_hub's, which puts the options under `parameters`."""

    parameters: Optional[TeiOptions] = None


class TeiRerankResult(BaseModel):
    index: int
    score: float
    text: Optional[str] = None


class TeiToken(BaseModel):
    id: int
    text: str
    special: bool
    start: Optional[int] = Field(description="The token's first character in the text as the model reads it.")
    stop: Optional[int]


class TeiTokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: Union[StrictStr, list[StrictStr]]
    add_special_tokens: StrictBool = Field(True, description="Only true: the model always reads <s> and </s>.")
    prompt_name: Optional[StrictStr] = Field(None, description="As on /embed: the text is written as it is embedded.")


class TeiEmbeddingModel(BaseModel):
    pooling: Literal["mean"]


class TeiModelType(BaseModel):
    embedding: TeiEmbeddingModel


class TeiInfo(BaseModel):
    model_id: str
    model_sha: Optional[str]
    model_dtype: str
    model_type: TeiModelType
    prompts: dict[str, str]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: Optional[int]
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    version: str
    sha: Optional[str]
    docker_label: Optional[str]


class TeiError(BaseModel):
    error: str
    error_type: str


def tei_options(body: TeiOptions, width: int) -> Options:
    """TEI's options as the service's, or the refusal of what this server does not do."""
    check_right_truncation(body.truncation_direction)
    validate_dimensions(body.dimensions, width)
    normalize = True if body.normalize is None else body.normalize
    truncate = True if body.truncate is None else body.truncate
    return prompt_options(body.prompt_name, normalize, truncate)


def merged(body: TeiPredictRequest) -> TeiEmbedRequest:
    """`POST /`'s body with its `parameters` in place (they win over the same field at the top)."""
    given = body.model_dump(exclude={"parameters"}, exclude_none=True)
    if body.parameters is not None:
        given.update(body.parameters.model_dump(exclude_none=True))
    return TeiEmbedRequest.model_construct(**given)


def tei_embed_request(body: TeiEmbedRequest, texts: list[str] | str, width: int) -> Request:
    return Request(texts=texts, options=tei_options(body, width))


def tei_embed_body(response: Response) -> list:
    """TEI's answer: one list of floats per text, even for one text."""
    return as_list(response.embeddings)


def tei_rerank_body(ranked: list[tuple[int, float]], texts: list[str], return_text: bool) -> list[dict]:
    """TEI's answer: `{index, score}` best first (a cosine: this is a bi-encoder, so raw and not-raw agree)."""
    return [{"index": i, "score": s, **({"text": texts[i]} if return_text else {})} for i, s in ranked]


def tei_info(model: ModelProfile, dtype: str, max_tokens: int, batch_tokens: int, max_requests: int,
             max_texts: int, version: str) -> dict:
    return {
        "model_id": model.name, "model_sha": None, "model_dtype": dtype,
        "model_type": {"embedding": {"pooling": "mean"}}, "prompts": prompts(model),
        "max_concurrent_requests": max_requests, "max_input_length": max_tokens, "max_batch_tokens": batch_tokens,
        "max_batch_requests": None, "max_client_batch_size": max_texts, "auto_truncate": True,
        "tokenization_workers": 1, "version": version, "sha": None, "docker_label": None,
    }


def tei_tokens(tokens: Tokens) -> list[dict]:
    """One text's tokens in TEI's shape: a marker has its own piece and no span; a word piece, its characters."""
    return [
        {"id": i, "text": piece if is_special else tokens.text[start:stop], "special": is_special,
         "start": None if is_special else start, "stop": None if is_special else stop}
        for i, (start, stop), is_special, piece in zip(tokens.ids, tokens.spans, tokens.special, tokens.pieces)
    ]


# --- Cohere v2 ------------------------------------------------------------------------------------------------


class CohereDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: StrictStr


class CohereSpans(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: StrictStr


class CohereRerankRequest(BaseModel):
    """Cohere's v2 rerank body (the `cohere` SDK's `ClientV2.rerank`), plus E5's `task`."""

    model_config = ConfigDict(extra="forbid")

    model: Optional[StrictStr] = Field(None, description="Any name is accepted; this server has one model.")
    query: StrictStr
    documents: list[Union[StrictStr, CohereDocument]] = Field(description="Texts, or objects with a `text`.")
    top_n: Optional[WholeInt] = Field(None, ge=1, description="Keep the best top_n results.")
    max_tokens_per_doc: Optional[WholeInt] = Field(
        None, ge=1, description="Cut each document to its first max_tokens_per_doc tokens (at most the model's 512).")
    return_documents: StrictBool = Field(False, description="Add each document's text to its result (Cohere v1).")
    relevant_spans: Optional[CohereSpans] = Field(None, description="Not supported: refused when given.")
    priority: Optional[WholeInt] = Field(None, description="Accepted and ignored: every request shares one queue.")
    task: Optional[StrictStr] = Field(None, description="The query's instruction or preset name. Default web_search's.")


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: Optional[CohereDocument] = None


class CohereApiVersion(BaseModel):
    version: str


class CohereBilledUnits(BaseModel):
    search_units: int


class CohereTokens(BaseModel):
    input_tokens: int


class CohereMeta(BaseModel):
    api_version: CohereApiVersion
    billed_units: CohereBilledUnits
    tokens: CohereTokens


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereResult]
    meta: CohereMeta


class CohereError(BaseModel):
    message: str


def cohere_rerank_request(body: CohereRerankRequest, documents: list[str]) -> Request:
    if body.relevant_spans is not None:
        raise InputError("`relevant_spans` is not supported: this server ranks whole documents", "not_supported")
    task = DEFAULT_TASK if body.task is None else body.task
    return Request(texts=[body.query], documents=documents, top_k=body.top_n, include_vectors=False,
                   document_tokens=body.max_tokens_per_doc, options=Options(task, "query", True, True, "float"))


def cohere_documents(body: CohereRerankRequest) -> list[str]:
    return [d if isinstance(d, str) else d.text for d in body.documents]


def cohere_rerank_body(ranked: list[tuple[int, float]], documents: list[str], return_documents: bool,
                       tokens: int) -> dict:
    """Cohere's answer: `{index, relevance_score}` best first; `meta.tokens` counts every token embedded."""
    results = [{"index": i, "relevance_score": s, **({"document": {"text": documents[i]}} if return_documents else {})}
               for i, s in ranked]
    return {"id": str(uuid.uuid4()), "results": results,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1},
                     "tokens": {"input_tokens": tokens}}}
