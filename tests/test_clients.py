"""Every client a self-hoster brings, unchanged, against the real server (`python -m openai_api`): the snippets of
docs/openai.md run as written with the real packages (openai, LangChain, LlamaIndex, huggingface_hub, cohere;
installed for the tests, never in the image), Infinity's and TEI's routes over raw HTTP, `/metrics` read by
prometheus_client's own parser. Each client's vectors equal /v1/embeddings' for the same texts and role; its
errors arrive as its own exception types. Two servers: the trained small model (meaning: retrieval, roles)
and the generated large-instruct checkpoint (multilingual-e5-large-instruct's recipe: raw documents)."""

from __future__ import annotations

import asyncio
import shlex
import subprocess

import cohere
import httpx
import numpy as np
import openai
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.retrieval_roles import measure_roles
from e5.instructions import DEFAULT_TASK
from testkit.doc_clients import run_python, snippet, snippets
from testkit.openai_server import OpenAIServer, start_server

KEY = "sk-clients"
TOLERANCE = 1e-5  # a text's vector depends a little on the forward it shares (padding, row packing)
PROTEIN_Q = "how much protein should a woman eat?"
PROTEIN_P = "Women need about 46 grams of protein a day."
TOWER_P = "The Eiffel Tower is 330 metres tall."


def start(weights, tmp_path_factory, name: str, env: dict) -> OpenAIServer:
    return start_server(weights, tmp_path_factory.mktemp(name) / "server.log", env)


@pytest.fixture(scope="module")
def trained(trained_dir, tmp_path_factory):
    """The trained multilingual-e5-small, with a key: every client sends it as its own way says."""
    server = start(trained_dir, tmp_path_factory, "trained", {"E5_DIMENSIONS": "384", "E5_API_KEY": KEY})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def large(checkpoint_dir, tmp_path_factory):
    """The generated checkpoint, which is multilingual-e5-large-instruct's layout and recipe (random weights)."""
    server = start(checkpoint_dir, tmp_path_factory, "large", {})
    yield server
    server.stop()


def post(server: OpenAIServer, path: str, body: dict, key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.url + path, json=body, headers=headers, timeout=120)


def reference(server: OpenAIServer, texts: list[str], input_type: str = "query", task: str | None = None,
              key: str | None = KEY) -> np.ndarray:
    """What /v1/embeddings gives for the same texts and role: the vectors every other route must equal."""
    body = {"input": texts, "input_type": input_type, **({"task": task} if task else {})}
    answer = post(server, "/v1/embeddings", body, key)
    assert answer.status_code == 200, answer.text
    return np.array([d["embedding"] for d in answer.json()["data"]], dtype=np.float32)


def close(a, b) -> bool:
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return a.shape == b.shape and float(np.abs(a - b).max()) < TOLERANCE


# --- the docs' snippets, as written -------------------------------------------------------------------------


def test_every_client_in_the_docs_has_a_snippet_that_this_file_runs():
    assert set(snippets()) == {"openai", "langchain", "llamaindex", "llamaindex-tei", "huggingface_hub", "cohere",
                               "curl"}


def test_openai_snippet(trained):
    namespace, printed = run_python("openai", trained.url, KEY)
    assert printed.split() == ["384", "384"]
    assert close(namespace["query"].data[0].embedding, reference(trained, [PROTEIN_Q])[0])
    assert close(namespace["passage"].data[0].embedding, reference(trained, [PROTEIN_P], "document")[0])


def test_the_openai_sdk_without_v1_reaches_the_same_routes(trained):
    client = openai.OpenAI(base_url=trained.url, api_key=KEY, max_retries=0)
    out = client.embeddings.create(model="e5", input=[PROTEIN_Q], encoding_format="float")
    assert close(out.data[0].embedding, reference(trained, [PROTEIN_Q])[0])
    assert client.models.list().data[0].id == "intfloat/multilingual-e5-small"


def test_langchain_snippet_ranks_with_roles_and_sends_each_role(trained):
    namespace, printed = run_python("langchain", trained.url, KEY)
    assert printed.strip() == PROTEIN_P
    embeddings = namespace["embeddings"]
    assert close(embeddings.embed_documents([PROTEIN_P])[0], reference(trained, [PROTEIN_P], "document")[0])
    assert close(embeddings.embed_query(PROTEIN_Q), reference(trained, [PROTEIN_Q])[0])

    async def both():  # one event loop: the SDK's async client belongs to the loop it first ran on
        return await embeddings.aembed_documents([PROTEIN_P]), await embeddings.aembed_query(PROTEIN_Q)

    documents, query = asyncio.run(both())
    assert close(documents[0], reference(trained, [PROTEIN_P], "document")[0])
    assert close(query, reference(trained, [PROTEIN_Q])[0])
    with pytest.raises(openai.BadRequestError, match=r"`input\[0\]` is empty"):
        embeddings.embed_documents(["   "])


def test_llamaindex_snippet_ranks_with_roles_and_sends_each_role(trained):
    namespace, printed = run_python("llamaindex", trained.url, KEY)
    assert printed.strip() == PROTEIN_P
    model = namespace["embed_model"]
    assert close(model.get_text_embedding(PROTEIN_P), reference(trained, [PROTEIN_P], "document")[0])
    assert close(model.get_query_embedding(PROTEIN_Q), reference(trained, [PROTEIN_Q])[0])

    async def both():
        return await model.aget_text_embedding_batch([PROTEIN_P]), await model.aget_query_embedding(PROTEIN_Q)

    documents, query = asyncio.run(both())
    assert close(documents[0], reference(trained, [PROTEIN_P], "document")[0])
    assert close(query, reference(trained, [PROTEIN_Q])[0])


def test_llamaindex_tei_snippet_gives_the_model_cards_recipe(large):
    """TEI's client adds the instruction itself and this server's TEI routes embed what they are sent (as TEI):
    on multilingual-e5-large-instruct's recipe that is exactly the OpenAI route's query, and its raw document."""
    namespace, printed = run_python("llamaindex-tei", large.url)
    assert printed.split() == ["1024", "1024"]
    assert close(namespace["query"], reference(large, [PROTEIN_Q], key=None)[0])
    assert close(namespace["passage"], reference(large, [PROTEIN_P], "document", key=None)[0])


@pytest.fixture
def hub_reaches_servers(monkeypatch):
    """The suite runs with HF_HUB_OFFLINE=1, under which huggingface_hub refuses every request, this server's
    too (the docs say to run the client without it); the client is otherwise as a user runs it."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_huggingface_hub_snippet_posts_to_the_base_url_with_tei_roles(trained, hub_reaches_servers):
    namespace, printed = run_python("huggingface_hub", trained.url, KEY)
    assert printed.split()[0] == "(1," and printed.split()[1] == "384)"
    assert close(namespace["passage"][0], reference(trained, [PROTEIN_P], "document")[0])
    assert close(namespace["query"][0], reference(trained, [PROTEIN_Q])[0])
    assert float(printed.split()[2]) > 0.5


def test_huggingface_hub_errors_are_its_own_exception_with_this_servers_message(trained, hub_reaches_servers):
    client = InferenceClient(base_url=trained.url, api_key=KEY)
    with pytest.raises(HfHubHTTPError, match="is empty or whitespace-only"):
        client.feature_extraction("   ")
    with pytest.raises(HfHubHTTPError, match="did you mean `web_search`"):
        client.feature_extraction("hello", prompt_name="websearch")
    with pytest.raises(HfHubHTTPError) as refused:
        InferenceClient(base_url=trained.url, api_key="wrong").feature_extraction("hello")
    assert refused.value.response.status_code == 401


def test_huggingface_hub_presets_are_queries_with_their_instruction(large, hub_reaches_servers):
    client = InferenceClient(base_url=large.url)
    assert close(client.feature_extraction("two cats", prompt_name="sts")[0],
                 reference(large, ["two cats"], task="sts", key=None)[0])


def test_cohere_snippet_and_its_options(trained):
    namespace, printed = run_python("cohere", trained.url, KEY)
    index, score = printed.split()
    assert index == "1" and 0 < float(score) <= 1
    co = namespace["co"]
    documents = [TOWER_P, {"text": PROTEIN_P}]
    out = co.rerank(model="e5", query=PROTEIN_Q, documents=documents, top_n=2.0)
    jina = post(trained, "/rerank", {"query": PROTEIN_Q, "documents": [TOWER_P, PROTEIN_P]}).json()
    assert [(r.index, r.relevance_score) for r in out.results] == [
        (r["index"], r["relevance_score"]) for r in jina["results"]]
    full = out.meta.tokens.input_tokens
    cut = co.rerank(model="e5", query=PROTEIN_Q, documents=[TOWER_P, PROTEIN_P], max_tokens_per_doc=3)
    query = post(trained, "/tokenize", {"inputs": [PROTEIN_Q], "prompt_name": "query"}).json()[0]
    assert cut.meta.tokens.input_tokens == len(query) + 2 * (3 + 2)  # each document: 3 tokens, <s> and </s>
    assert full > cut.meta.tokens.input_tokens


def test_cohere_errors_are_the_sdks_own_exception_types(trained):
    co = cohere.ClientV2(api_key=KEY, base_url=trained.url)
    with pytest.raises(cohere.BadRequestError) as blank:
        co.rerank(model="e5", query=PROTEIN_Q, documents=[TOWER_P, "  "])
    assert "`documents[1]` is empty" in blank.value.body["message"]
    with pytest.raises(cohere.UnprocessableEntityError):
        co.rerank(model="e5", query=PROTEIN_Q, documents=[TOWER_P], top_n=0)
    with pytest.raises(cohere.BadRequestError, match="relevant_spans"):
        co.rerank(model="e5", query=PROTEIN_Q, documents=[TOWER_P], relevant_spans={"mode": "auto"})
    with pytest.raises(cohere.UnauthorizedError):
        cohere.ClientV2(api_key="wrong", base_url=trained.url).rerank(model="e5", query="q", documents=["d"])


def test_curl_snippet_runs_as_written(trained):
    """Each curl line of the docs, against the server (its key added): a 2xx with a JSON body of the route's shape."""
    code = snippet("curl", trained.url).replace("\\\n", " ")
    commands = [line for line in code.splitlines() if line.startswith("curl ")]
    assert len(commands) == 6
    for command in commands:
        args = shlex.split(command) + ["-H", f"Authorization: Bearer {KEY}", "-w", "\n%{http_code}"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        body, status = done.stdout.rsplit("\n", 1)
        assert done.returncode == 0 and status == "200", (command, done.stdout, done.stderr)
        assert body.startswith(("{", "[")) and '"error"' not in body[:20], (command, body[:300])


# --- the routes' own shapes ---------------------------------------------------------------------------------


def test_tei_embed_and_root_equal_v1_embeddings_for_each_role(large):
    texts = ["two cats", "zwei Katzen"]
    embed = post(large, "/embed", {"inputs": texts}, key=None).json()
    assert close(embed, reference(large, texts, "document", key=None))
    query = post(large, "/embed", {"inputs": texts, "prompt_name": "query"}, key=None).json()
    assert close(query, reference(large, texts, key=None))
    root = post(large, "/", {"inputs": texts[0], "parameters": {"prompt_name": "query", "normalize": True}}, key=None)
    assert close(root.json(), reference(large, texts[:1], key=None))
    assert close(post(large, "/embed", {"inputs": "two cats", "dimensions": 1024.0}, key=None).json(),
                 reference(large, ["two cats"], "document", key=None))


def test_tei_refusals_have_teis_error_shape(large):
    cases = [
        ({"inputs": [" "]}, 400, "`inputs[0]` is empty or whitespace-only"),
        ({"inputs": [1, 2]}, 400, "`inputs` holds token ids"),
        ({"inputs": "x", "truncation_direction": "left"}, 400, "`truncation_direction` must be right"),
        ({"inputs": "x", "dimensions": 512}, 400, "`dimensions` must be 1024"),
        ({"inputs": "x", "prompt_name": "Websearch"}, 400, "did you mean `web_search`"),
        ({"inputs": "x", "pooling": "cls"}, 422, "unknown field `pooling`"),
    ]
    for body, status, message in cases:
        answer = post(large, "/embed", body, key=None)
        assert answer.status_code == status and answer.json()["error_type"] == "Validation", answer.text
        assert message in answer.json()["error"], answer.text


def test_rerank_tells_tei_from_jina_by_the_body(large):
    texts = ["two cats on a mat", "stock markets fell", "a cat sleeps"]
    jina = post(large, "/rerank", {"query": "cats", "documents": texts, "raw_scores": True}, key=None).json()
    tei = post(large, "/rerank", {"query": "cats", "texts": texts, "return_text": True, "raw_scores": False},
               key=None).json()
    assert jina["object"] == "rerank" and isinstance(tei, list)
    assert [(r["index"], r["relevance_score"]) for r in jina["results"]] == [(r["index"], r["score"]) for r in tei]
    assert [r["text"] for r in tei] == [texts[r["index"]] for r in tei]
    refused = post(large, "/rerank", {"query": "cats", "texts": ["ok", " "]}, key=None)
    assert refused.status_code == 400 and refused.json()["error"] == "`texts[1]` is empty or whitespace-only"
    both = post(large, "/v1/rerank", {"query": "cats", "texts": texts, "documents": texts}, key=None)
    assert both.status_code == 422 and "one of the two" in both.json()["error"]  # TEI's shape: it has `texts`


def test_tokenize_counts_what_embedding_counts(large):
    for prompt, input_type in ((None, "document"), ("query", "query")):
        body = {"inputs": ["two cats on a mat", "南瓜的家常做法"], **({"prompt_name": prompt} if prompt else {})}
        tokens = post(large, "/tokenize", body, key=None).json()
        usage = post(large, "/v1/embeddings", {"input": body["inputs"], "input_type": input_type}, key=None)
        assert sum(len(t) for t in tokens) == usage.json()["usage"]["total_tokens"]
        first = tokens[0]
        assert first[0]["special"] and first[0]["start"] is None and first[-1]["special"]
        written = f"Instruct: {DEFAULT_TASK}\nQuery: two cats on a mat" if prompt else "two cats on a mat"
        assert all(written[t["start"]:t["stop"]] == t["text"] for t in first if not t["special"])


def test_info_says_the_model_its_limits_and_prompts(large):
    info = httpx.get(large.url + "/info").json()
    assert info["model_id"] == "intfloat/multilingual-e5-large-instruct" and info["max_input_length"] == 512
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["max_client_batch_size"] == 10_000
    assert info["prompts"]["document"] == "" and info["prompts"]["query"] == f"Instruct: {DEFAULT_TASK}\nQuery: "


def test_whole_number_floats_are_integers_on_every_route(large):
    assert post(large, "/v1/embeddings", {"input": "x", "dimensions": 1024.0}, key=None).status_code == 200
    assert len(post(large, "/rerank", {"query": "q", "documents": ["a", "b", "c"], "top_n": 2.0}, key=None)
               .json()["results"]) == 2
    assert len(post(large, "/v2/rerank", {"query": "q", "documents": ["a", "b", "c"], "top_n": 2.0}, key=None)
               .json()["results"]) == 2
    fraction = post(large, "/rerank", {"query": "q", "documents": ["a", "b"], "top_n": 1.5}, key=None)
    assert fraction.status_code == 422 and fraction.json()["error"]["param"] == "top_n"


def test_a_near_miss_of_a_preset_is_refused_naming_it_and_a_sentence_passes(large):
    for task in ("websearch", "WEB_SEARCH", "web-serach"):
        refused = post(large, "/v1/embeddings", {"input": "x", "task": task}, key=None)
        assert refused.status_code == 400 and "did you mean `web_search`?" in refused.json()["error"]["message"]
        assert refused.json()["error"]["code"] == "unknown_preset"
    sentence = "Given a recipe name, retrieve recipes"
    assert close(post(large, "/v1/embeddings", {"input": ["pumpkin"], "task": sentence}, key=None).json()["data"][0]["embedding"],
                 reference(large, ["pumpkin"], task=sentence, key=None)[0])
    assert post(large, "/v1/embeddings", {"input": "x", "task": "Summarize"}, key=None).status_code == 200


def test_long_texts_on_the_openai_routes(large):
    long = " ".join(f"Chapter {i}: the river town kept its records in a ledger of {i * 7} pages." for i in range(120))
    today = post(large, "/v1/embeddings", {"input": ["short", long], "input_type": "document"}, key=None).json()
    windows = post(large, "/v1/embeddings", {"input": ["short", long], "input_type": "document",
                                             "long_texts": "windows"}, key=None).json()
    items = windows["data"]
    assert [d["index"] for d in items][:2] == [0, 1] and {d["index"] for d in items[1:]} == {1} and len(items) >= 3
    assert items[0]["start"] == 0 and items[0]["end"] == len("short") and items[-1]["end"] == len(long)
    assert close(items[0]["embedding"], today["data"][0]["embedding"])
    assert close(items[1]["embedding"], today["data"][1]["embedding"])  # the first window is what truncation keeps
    mean = post(large, "/v1/embeddings", {"input": ["short", long], "long_texts": "mean"}, key=None).json()
    assert len(mean["data"]) == 2 and mean["usage"]["total_tokens"] > today["usage"]["total_tokens"]
    ranked = post(large, "/rerank", {"query": "ledger", "documents": [long, "short"], "long_texts": "mean"}, key=None)
    assert ranked.status_code == 200 and ranked.json()["usage"]["total_tokens"] > 512


# --- /metrics -----------------------------------------------------------------------------------------------


def samples(server: OpenAIServer, key: str | None = KEY) -> dict[tuple, float]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.get(server.url + "/metrics", headers=headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def test_metrics_count_requests_texts_tokens_refusals_and_forwards(trained):
    before = samples(trained)
    ok = post(trained, "/v1/embeddings", {"input": ["one", "two", "three"]})
    refused = post(trained, "/embed", {"inputs": [" "]})
    after = samples(trained)

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("e5_requests_total", route="/v1/embeddings", status="200") == 1
    assert grew("e5_requests_total", route="/embed", status="400") == 1
    assert grew("e5_texts_total") == 3 and grew("e5_tokens_total") == ok.json()["usage"]["total_tokens"]
    assert grew("e5_refusals_total", code="empty_text") == 1 and refused.status_code == 400
    assert grew("e5_forwards_total") >= 1 and grew("e5_forward_texts_count") == grew("e5_forwards_total")
    assert grew("e5_forward_tokens_sum") == ok.json()["usage"]["total_tokens"]
    assert grew("e5_request_seconds_count", route="/v1/embeddings") == 1
    assert grew("e5_queue_wait_seconds_count") == 1
    assert after[("e5_requests_in_flight", ())] == 0
    assert after[("e5_memory_budget_bytes", ())] > 0
    assert httpx.get(trained.url + "/metrics").status_code == 401  # behind the key, like every route but /health


# --- retrieval roles ----------------------------------------------------------------------------------------


def test_with_roles_langchain_and_llamaindex_rank_at_least_as_well_as_everything_as_query(trained):
    """The docs' subclasses against the plain classes, on the same held pairs (benchmarks/retrieval_roles.py)."""
    figures = measure_roles(trained.url, KEY, distractors=60)
    for tool in ("langchain", "llamaindex"):
        roles, as_query = figures[tool]["roles"], figures[tool]["all_as_query"]
        assert roles["queries"] == as_query["queries"] == 45
        assert roles["recall_at_1"] >= as_query["recall_at_1"] and roles["mrr"] >= as_query["mrr"], figures
