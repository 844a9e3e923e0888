"""Choosing what to label: sizes, random and diverse (k-means / farthest-point) samples."""
from __future__ import annotations

import numpy as np
import pytest

from optllm.errors import OptLLMError
from optllm.sample import choose_sample, parse_size, text_features

TOPICS = {
    "court": "the court overruled the appeal and the judge cited precedent in the ruling",
    "log": "kernel error disk sector failed retry io timeout on device sda",
    "math": "compute the sum of the integers and prove the equation holds for every prime",
    "cook": "bake the bread with flour butter sugar and eggs in the oven for an hour",
    "space": "the rocket launched the satellite into orbit around the moon and mars",
}


def topic_texts(per: int = 40, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for t, (name, base) in enumerate(TOPICS.items()):
        words = base.split()
        for _ in range(per):
            pick = rng.choice(words, size=8, replace=True)
            texts.append(" ".join(pick) + f" item{rng.integers(1000)}")
            labels.append(t)
    order = rng.permutation(len(texts))
    return [texts[i] for i in order], np.array(labels)[order]


@pytest.mark.parametrize("size, n, k", [("1%", 2000, 20), ("0.5%", 100, 1), (0.1, 50, 5), ("0.1", 50, 5),
                                        (20, 100, 20), ("20", 100, 20), ("100%", 7, 7), (1, 3, 1)])
def test_parse_size(size, n: int, k: int) -> None:
    assert parse_size(size, n) == k


@pytest.mark.parametrize("size", ["0", "-3", "abc", "2.5", "150%", "0%", 101])
def test_parse_size_errors(size) -> None:
    with pytest.raises(OptLLMError, match="--size"):
        parse_size(size, 100)


def test_random_is_seeded_sorted_unique() -> None:
    texts = [f"t{i}" for i in range(500)]
    a = choose_sample(texts, "5%", "random", seed=3)
    b = choose_sample(texts, "5%", "random", seed=3)
    c = choose_sample(texts, "5%", "random", seed=4)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert a.size == 25 and np.all(np.diff(a) > 0)


@pytest.mark.parametrize("method", ["kmeans", "farthest"])
def test_diverse_covers_the_topics(method: str) -> None:
    texts, topic = topic_texts()
    idx = choose_sample(texts, 5, "diverse", seed=0, method=method)
    assert idx.size == 5 and len(set(idx.tolist())) == 5
    # k-means centres: one per topic; farthest-point covers widely but may take an outlier
    assert len(set(topic[idx].tolist())) >= (5 if method == "kmeans" else 4)
    again = choose_sample(texts, 5, "diverse", seed=0, method=method)
    assert idx.tolist() == again.tolist()


def test_diverse_beats_random_on_topic_coverage() -> None:
    texts, topic = topic_texts(per=40)
    covered = [len(set(topic[choose_sample(texts, 5, "random", seed=s)].tolist())) for s in range(20)]
    assert np.mean(covered) < 5  # random misses a topic most of the time; diverse never does


def test_features_and_errors() -> None:
    X = text_features(["a b c", "a b d", "x y z", ""], dim=8)
    assert X.shape[0] == 4 and np.isfinite(X).all()
    assert text_features(["", ""]).shape == (2, 1)
    with pytest.raises(OptLLMError, match="strategy"):
        choose_sample(["a", "b"], 1, "clever")
    with pytest.raises(OptLLMError, match="method"):
        choose_sample(["a b", "c d", "e f"], 2, "diverse", method="magic")
    with pytest.raises(OptLLMError, match="no prompts"):
        choose_sample([], 1)
    feats = np.eye(6)
    assert choose_sample(["x"] * 6, 3, "diverse", features=feats).size == 3


def test_stratified_keeps_the_mix_of_prompt_types() -> None:
    texts, topic = topic_texts(per=20, seed=2)
    extra, extra_topic = topic_texts(per=60, seed=3)
    keep = extra_topic == 0  # topic 0 is 4x more common than the others
    texts = texts + [t for t, k in zip(extra, keep) if k]
    topic = np.concatenate([topic, extra_topic[keep]])
    idx = choose_sample(texts, 16, "diverse", seed=0, method="stratified")
    counts = np.bincount(topic[idx], minlength=5)
    # proportional to the mix (8, 2, 2, 2, 2) up to rounding inside k-means clusters
    assert idx.size == 16 and np.abs(counts - [8, 2, 2, 2, 2]).max() <= 1 and counts.min() >= 1
