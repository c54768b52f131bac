"""Movie reviews as raw text with 0/1 sentiment labels, for TensorFlow's text tutorial.

Online, ``load_imdb()`` reads Keras' IMDB dataset (25,000 training and 25,000 test reviews,
cached by Keras after one download) and turns its word ids back into text with Keras' word
index: lower-case words without punctuation, which is what the tutorial's ``TextVectorization``
sees after its standardization anyway.

Offline (or with ``TFSERVE_MAGIC_OFFLINE=1``) it writes its own reviews instead: short English
reviews put together from fixed word lists, each with two to four opinion words of its label's
sentiment and at most one of the other, among neutral sentences. The label is the majority
sentiment of its opinion words, so a bag-of-words model can learn it, but a single word does not
decide it. One review in twelve is mixed (as many opinions each way): its label is the
reviewer's verdict, which the text does not give away, so even a perfect model errs on some
(about 4% of all reviews), as on real reviews. They are generated from a fixed seed (the same
reviews on every machine) and are reported as ``source == "generated reviews (offline
fallback)"``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from tfserve_magic.datasets import _source
from tfserve_magic.datasets._source import Dataset

IMDB_SOURCE = "imdb"
FALLBACK_SOURCE = "generated reviews (offline fallback)"
_IMDB_HOST = ("storage.googleapis.com", 443)  # where keras.datasets.imdb downloads from
_IMDB_FILES = ("imdb.npz", "imdb_word_index.json")
_KERAS_INDEX_FROM = 3  # ids 0..2 are padding, start and out-of-vocabulary
_FALLBACK_TRAIN, _FALLBACK_TEST = 4000, 1000
_SEED = 0
_MIXED_SHARE = 1 / 12  # reviews with as many opinions each way

POSITIVE = (
    "wonderful", "brilliant", "moving", "delightful", "superb", "charming", "gripping",
    "beautiful", "clever", "memorable", "funny", "touching", "excellent", "fresh",
)
NEGATIVE = (
    "boring", "awful", "dull", "clumsy", "predictable", "tedious", "weak", "forgettable",
    "silly", "painful", "messy", "lifeless", "terrible", "flat",
)
_SUBJECTS = (
    "the acting", "the story", "the script", "the ending", "the soundtrack", "the cast",
    "the direction", "the dialogue", "the pacing", "the photography", "the humour",
    "the lead actor", "the second half", "the villain",
)
_OPINIONS = (
    "{subject} was {word}.", "{subject} felt {word}.", "I found {subject} {word}.",
    "{subject} is really {word}.", "a truly {word} film.", "all in all, a {word} movie.",
    "{subject} was quite {word}.",
)
_NEUTRAL = (
    "I saw it on a rainy Sunday.", "it runs a little over two hours.",
    "a friend recommended it to me.", "the film is based on a novel.",
    "we watched it in a small cinema.", "it came out last year.",
    "the trailer gives away most of the plot.", "it is the director's third film.",
    "I watched it with my family.", "there is a long scene on a train.",
    "most of it was shot in the city.", "it is in English with some French.",
)


@dataclass(frozen=True, repr=False)
class TextData(Dataset):
    """Reviews as a 1-D object array of strings and int64 labels (0 negative, 1 positive)."""

    class_names: tuple = ("negative", "positive")


def load_imdb(n_train: int | None = None, n_test: int | None = None) -> TextData:
    """IMDB reviews as text (or the generated offline reviews), optionally only the first
    ``n_train``/``n_test`` of each split (both splits are shuffled, so any head is balanced
    up to chance)."""
    return _source.load("IMDB", n_train, n_test, online=_keras_imdb, fallback=_generated_reviews,
                        cached_files=_IMDB_FILES, host=_IMDB_HOST,
                        instead="reviews generated from word lists")


@functools.lru_cache(maxsize=1)
def _keras_imdb() -> TextData | None:
    try:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.imdb.load_data()
        word_index = keras.datasets.imdb.get_word_index()
    except Exception:  # download failed half-way, proxy, corrupt cache: use the fallback
        return None
    words = {index + _KERAS_INDEX_FROM: word for word, index in word_index.items()}

    def decode(reviews) -> np.ndarray:
        return _source.strings(
            " ".join(words[i] for i in ids if i in words) for ids in reviews
        )

    return TextData(
        decode(x_train), np.asarray(y_train, np.int64),
        decode(x_test), np.asarray(y_test, np.int64),
        IMDB_SOURCE,
    )


@functools.lru_cache(maxsize=1)
def _generated_reviews() -> TextData:
    rng = np.random.RandomState(_SEED)
    total = _FALLBACK_TRAIN + _FALLBACK_TEST
    labels = rng.permutation(np.arange(total) % 2).astype(np.int64)  # exactly half positive
    reviews = _source.strings(_review(rng, int(label)) for label in labels)
    n = _FALLBACK_TRAIN
    return TextData(reviews[:n], labels[:n], reviews[n:], labels[n:], FALLBACK_SOURCE)


def _review(rng: np.random.RandomState, label: int) -> str:
    """Two to four opinions of the label's sentiment, at most one of the other (or, for a
    mixed review, as many each way), and one or two neutral sentences, in random order."""
    agree, disagree = (POSITIVE, NEGATIVE) if label == 1 else (NEGATIVE, POSITIVE)
    n_agree = rng.randint(2, 5)
    n_disagree = rng.randint(0, 2)
    if rng.rand() < _MIXED_SHARE:
        n_agree = n_disagree = rng.randint(1, 3)
    sentences = [_opinion(rng, agree) for _ in range(n_agree)]
    sentences += [_opinion(rng, disagree) for _ in range(n_disagree)]
    sentences += [str(rng.choice(_NEUTRAL)) for _ in range(rng.randint(1, 3))]
    order = rng.permutation(len(sentences))
    return " ".join(sentences[i][0].upper() + sentences[i][1:] for i in order)


def _opinion(rng: np.random.RandomState, words: tuple) -> str:
    template = str(rng.choice(_OPINIONS))
    return template.format(subject=str(rng.choice(_SUBJECTS)), word=str(rng.choice(words)))
