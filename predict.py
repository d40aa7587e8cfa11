"""Cog interface for multilingual-e5-large-instruct: the inputs, one call into the engine, the output.

`cog build` reads this file without importing it (a static parser) to write the OpenAPI schema that the
image's server checks every request against. So every Input() argument and the decorator below are literals
(a number, a list of strings, one plain string without escapes): an imported name, an f-string or a call
would break the build or silently change the schema. tests/test_cog_schema.py holds this file to those
rules and to the schema the image carries (.cog/openapi_schema.json); the engine's own values (presets,
formats) are tied to these literals by tests, not by imports.
"""

from __future__ import annotations

from typing import Optional

from cog import BaseModel, BasePredictor, FieldInfo, Input, Path, concurrent
from cog.types import URLPath

from e5 import Embedder, uploads
from e5.form import read_form
from e5.startup import load_service
from e5.validation import Options, Request


class Usage(BaseModel):
    prompt_tokens: int  # tokens embedded, texts and documents together
    total_tokens: int  # the same number (as in OpenAI's API)


class RankedDocument(BaseModel):
    index: int  # the document's position in `documents`
    score: float  # its cosine similarity to the query, rounded to 8 decimals like the vectors


class WindowSpan(BaseModel):
    text: int  # the text this window's vector belongs to (its index in the input)
    start: int  # the window covers the text's characters start..end (a slice: text[start:end])
    end: int
    tokens: int  # tokens embedded in this window, the instruction and <s>, </s> included


class Output(BaseModel):
    """Every field typed, so the published schema says what comes back (tests/test_output_schema.py checks
    real responses against it). Vectors and scores leave as numpy arrays (TupleArray: Cog encodes them several
    times faster than nested lists, see e5/encodings.py); the JSON is the same."""

    model: str
    dimensions: int
    encoding_format: str
    embeddings: list[list[float]]  # one vector per text, input order; [] with base64, texts_file
    token_counts: list[int]  # tokens embedded per text, <s> and </s> included
    truncated: list[bool]  # True where a text was cut to the 512-token limit
    usage: Usage
    embeddings_base64: Optional[list[str]] = None  # encoding_format base64: each vector's float32 bytes
    document_embeddings: Optional[list[list[float]]] = None  # with documents, as embeddings
    document_embeddings_base64: Optional[list[str]] = None
    document_token_counts: Optional[list[int]] = None
    document_truncated: Optional[list[bool]] = None
    scores: Optional[list[list[float]]] = None  # with documents and no top_k: [query][document] cosine
    ranking: Optional[list[list[RankedDocument]]] = None  # with documents: per query, best first, top_k long
    embeddings_file: Optional[Path] = None  # with `texts_file`: the vectors as .npy or .jsonl
    windows: Optional[list[WindowSpan]] = None  # long_texts windows: what each vector of embeddings covers


def _given(value):
    """Direct calls leave omitted Input() arguments as FieldInfo; use the declared default instead."""
    return value.default if isinstance(value, FieldInfo) else value


class Predictor(BasePredictor):
    async def setup(self) -> None:
        # Cog's downloads of file inputs are recorded (and URLs on internal hosts refused): predict() reads only
        # the file Cog wrote for its own request, never a path a request names (e5/uploads.py).
        uploads.watch(URLPath, allow_private=uploads.private_urls_allowed())
        self.service = load_service()  # weights, E5_* settings, warm-up and the log line, as every face starts

    @property
    def embedder(self) -> Embedder:
        return self.service.embedder

    def batcher(self):
        return self.service.batcher()

    def healthcheck(self) -> bool:
        return self.service.healthy()

    @concurrent(max=32)
    async def predict(
        self,
        text: str = Input(
            default="",
            description="Type the texts to embed, one per line: two lines embed two texts (blank lines are skipped). Give this, texts or texts_file. A line break always ends a text here: send a text that contains one in texts. Vectors come back in line order, and an error names its line.",
        ),
        texts: Optional[list[str]] = Input(
            default=[],
            description='A JSON list of strings to embed, e.g. ["how much protein should a female eat", "南瓜的家常做法"]: give this, text or texts_file ([] is none). Vectors come back in the same order; each text is cut to 512 tokens (see truncate and long_texts).',
        ),
        task: str = Input(
            default="Given a web search query, retrieve relevant passages that answer the query",
            description="A one-sentence instruction saying what the queries are for, or a preset name: web_search, nq, fever, climate_fever, fiqa, scifact, arguana, hotpotqa, dbpedia, nfcorpus, trec_covid, touche, sts, bitext, summarization, quora, stackoverflow_dup, banking77, emotion, twentynewsgroups (the README lists their instructions). Default: the web_search instruction. Used for queries (input_type query) only.",
        ),
        input_type: str = Input(
            default="query",
            choices=["query", "document"],
            description="query (default) or document. query: each text is embedded as 'Instruct: {task}', a line break, then 'Query: {text}'. document: embedded as it is. For retrieval embed queries as query and passages as document; for symmetric tasks (similarity, clustering, classification, bitext, duplicates) embed every text as query with the same task.",
        ),
        normalize: bool = Input(
            default=True,
            description="true (default): L2-normalize each vector, so that a dot product is the cosine similarity. false: the mean-pooled vectors as they are. Unticked, this box sends nothing and true applies, whatever the greyed box reads: tick it and choose false to turn it off.",
        ),
        truncate: bool = Input(
            default=True,
            description="true (default): cut texts longer than 512 tokens (truncated says which; long_texts embeds them whole instead). false: such a text fails the request, naming it and its token count, and nothing is embedded. Unticked, this box sends nothing and true applies, whatever the greyed box reads: tick it and choose false to refuse long texts.",
        ),
        long_texts: str = Input(
            default="truncate",
            choices=["truncate", "mean", "windows"],
            description="What to do with a text longer than the model's 512 tokens. truncate (default): embed its first 512 tokens (see truncate). mean: embed all of it, in overlapping windows of 512 tokens, and return the average of the windows' vectors weighted by their tokens: one vector per text. windows: return each window's vector, with the part of the text it covers in windows (to index passages; not with documents or texts_file). A text that fits in 512 tokens gets the same vector in every mode.",
        ),
        document: str = Input(
            default="",
            description="Type the documents to rank against the texts (the queries), one per line (blank lines are skipped), or give documents. Adds ranking (per query, the documents best first with their scores), scores and document_embeddings. A document that contains a line break goes in documents. An error names its line.",
        ),
        documents: Optional[list[str]] = Input(
            default=[],
            description='A JSON list of documents to rank against the texts (the queries), e.g. ["46 grams a day for women", "清炒南瓜丝"], or type them in document, one per line. [] (default): none, no ranking. Adds ranking (per query, the documents best first with their scores), scores and document_embeddings.',
        ),
        top_k: Optional[int] = Input(
            default=0,
            ge=0,
            description="With documents: keep the best top_k documents per query in ranking, e.g. 3, and leave the full scores matrix out. 0 (default): every document ranked, and scores included.",
        ),
        encoding_format: str = Input(
            default="float",
            choices=["float", "base64", "int8", "binary"],
            description="float (default): vectors as lists of numbers. base64: each vector's little-endian float32 bytes in base64 (as OpenAI), in embeddings_base64. int8: round(127 x). binary: sign bits packed 8 to a byte, most significant first (128 values 0-255 for 1024 dimensions).",
        ),
        include_vectors: bool = Input(
            default=True,
            description="true (default): return the vectors. false: leave them out (embeddings and document_embeddings come back empty), for a short answer when only the ranking or the token counts are wanted. Unticked, this box sends nothing and true applies, whatever the greyed box reads: tick it and choose false to leave the vectors out.",
        ),
        texts_file: Optional[Path] = Input(
            default="",
            accept=".txt,.jsonl,.ndjson,.json,.csv,.gz",
            description="A file of texts to embed instead of texts: .txt (one per line), .jsonl (a text field per line), .json (a list of strings) or .csv (a text column), each also gzipped. Tick this only to choose a file or give its URL. The vectors come back in embeddings_file, a data: URL that holds the whole file in base64 (docs/web-form.md shows how to save it), and embeddings is empty. The bulk model returns download links instead.",
        ),
        output_file_format: str = Input(
            default="npy",
            choices=["npy", "jsonl"],
            description="With texts_file: npy (default; a float32 array, one row per text) or jsonl (index and embedding per line).",
        ),
    ) -> Output:
        texts_file = uploads.DOWNLOADS.claim(_given(texts_file))  # before anything: no other path is read
        options = Options(_given(task), _given(input_type), _given(normalize), _given(truncate), _given(encoding_format),
                          _given(long_texts))
        form = read_form(_given(text), _given(texts), _given(document), _given(documents), _given(top_k), texts_file)
        request = Request(form.texts, form.documents, form.top_k, texts_file,
                          _given(output_file_format), options, _given(include_vectors))
        with form.naming_lines():  # errors about a typed text name its line in the box
            response, metrics = await self.service.run(request)
        for name, value in metrics.items():
            self.record_metric(name, value)
        return Output(**response.fields())
