"""The one-prompt TF-IDF path a router takes (`TfidfFeaturizer.transform` of one text: its own
counting, word-level n-gram cache) gives sklearn's row for any text: words, case, whitespace of
every kind, unicode, words shorter and longer than the n-gram lengths, repeated words."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optllm.data import load
from optllm.predict.features import TfidfFeaturizer, fit_transform

WORDS = ["a", "I", "to", "the", "Court", "court's", "ÉTAT", "naïve", "x1", "überlong" * 3, "—", "ab", "abc",
         "abcd", "abcde", "abcdef", "?", "", "日本語", "ß"]


@pytest.fixture(scope="module")
def fitted() -> TfidfFeaturizer:
    d = load("demo")
    texts = [str(t) for t in d.texts[:300]] + [" ".join(WORDS), "the court " * 5]
    f = TfidfFeaturizer()
    fit_transform(f, texts)
    return f


def _same(f: TfidfFeaturizer, text: str) -> None:
    one = f.transform([text]).toarray()
    ref = f.transform([text, "padding so sklearn's own transform runs"]).toarray()[:1]
    np.testing.assert_allclose(one, ref, rtol=0, atol=1e-12)


def test_demo_prompts_match_sklearn(fitted: TfidfFeaturizer) -> None:
    for t in load("demo").texts[300:420]:
        _same(fitted, str(t))
    _same(fitted, "")
    _same(fitted, "   \t\n ")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(WORDS) | st.text(max_size=8), max_size=30),
       st.lists(st.sampled_from([" ", "  ", "\t", "\n", " \r\n ", "\u00a0", "\u2003"]), min_size=30, max_size=30))
def test_any_text_matches_sklearn(fitted: TfidfFeaturizer, words: list[str], seps: list[str]) -> None:
    text = "".join(w + s for w, s in zip(words, seps))
    _same(fitted, text)
    _same(fitted, text)  # again: from the word cache
