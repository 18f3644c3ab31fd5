"""A small synthetic multimodal sentiment set, generated from a seed: the default dataset.

It is NOT CMU-MOSI or CMU-MOSEI and its numbers say nothing about them. It exists so that
training, evaluation, checkpoints, plots and multi-process runs can be exercised without a
download, on a CPU, in seconds.

What is in it. Each utterance is 6-20 words from a small lexicon: neutral filler words,
sentiment words with a polarity (``great`` +2, ``awful`` -3, ...), negators (``not``, ``never``:
flip the next sentiment word) and intensifiers (``very``, ``really``, ``so``: x1.5). Per utterance

    text part   t = 0.6 * sum of the (negated / intensified) polarities
    prosody     p ~ N(0, 1)      carried only by the acoustic features
    face        f ~ N(0, 1)      carried only by the visual features
    label       = round_to_thirds(clip(t + 0.6 p + 0.5 f + 0.2 n, -3, 3)),   n ~ N(0, 1)

so labels lie in [-3, 3] in steps of 1/3 like the averaged MOSI annotations, with some exact
zeros. Word-level features (zero-mean noise of std 0.5 elsewhere):

    acoustic[:, 0:8]   p + noise                       (utterance prosody, detector-only)
    acoustic[:, 8:16]  |polarity of the word| + noise  (emphasis, predictable from text)
    acoustic[:, 16:20] word length / 5 + noise         (predictable from text)
    visual[:, 0:6]     f + noise                       (facial expression, detector-only)
    visual[:, 6:12]    sign(polarity of the word) + noise (predictable from text)

What it can show: that the pipeline learns (the loss falls, text sentiment with negation is
picked up, the reconstruction terms of ITHP fall because part of each detector is predictable
from text) and that runs are reproducible. What it cannot show: anything about real data or
real accuracy. Note that ITHP's prediction depends on the text alone at inference (the
detectors only shape the latent during training), so the detector-only parts p and f cannot
be recovered: the text-only oracle ``t`` gives the ceiling, reported by
:func:`text_only_oracle` on the generated test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_NAMES = ("train", "dev", "test")  # the word-level layout's split names

SENTIMENT = {
    "good": 1.0,
    "nice": 1.0,
    "funny": 1.0,
    "enjoyed": 1.5,
    "great": 2.0,
    "love": 2.0,
    "wonderful": 2.5,
    "brilliant": 3.0,
    "excellent": 3.0,
    "bad": -1.0,
    "dull": -1.0,
    "weak": -1.0,
    "boring": -1.5,
    "hate": -2.0,
    "terrible": -2.5,
    "awful": -3.0,
    "worst": -3.0,
}
NEGATORS = ("not", "never")
INTENSIFIERS = ("very", "really", "so")
FILLERS = (
    "the",
    "movie",
    "film",
    "it",
    "was",
    "i",
    "a",
    "and",
    "plot",
    "actor",
    "story",
    "this",
    "to",
    "of",
    "um",
    "uh",
    "scene",
    "ending",
    "just",
    "think",
    "kind",
    "characters",
    "music",
    "is",
    "thought",
)


@dataclass(frozen=True)
class SyntheticSpec:
    """How to generate the synthetic set (the seed and sizes fully determine it)."""

    seed: int = 0
    sizes: tuple[int, int, int] = (512, 128, 128)  # train, valid, test
    visual_dim: int = 47
    acoustic_dim: int = 74

    def __post_init__(self) -> None:
        if len(self.sizes) != 3 or any(int(n) < 1 for n in self.sizes):
            raise ValueError(f"synthetic sizes: expected three positive counts (train, valid, test), got {self.sizes}")
        if self.visual_dim < 12 or self.acoustic_dim < 20:
            raise ValueError(
                f"synthetic widths: visual_dim must be >= 12 and acoustic_dim >= 20 (the informative columns), "
                f"got {self.visual_dim} and {self.acoustic_dim}"
            )


def _utterance(rng: np.random.Generator, spec: SyntheticSpec):
    n_words = int(rng.integers(6, 21))
    words = list(rng.choice(FILLERS, size=n_words))
    polarity = np.zeros(n_words)
    sentiment_words = sorted(SENTIMENT)
    # Sentiment words sit at odd positions, so the word before each (a possible modifier) is never
    # another sentiment word: the text part below is a function of the words alone.
    slots = rng.choice(np.arange(1, n_words, 2), size=int(rng.integers(0, 4)), replace=False)
    for pos in map(int, slots):
        word = sentiment_words[int(rng.integers(len(sentiment_words)))]
        value = SENTIMENT[word]
        modifier = rng.random()
        if modifier < 0.2:
            words[pos - 1], value = str(rng.choice(NEGATORS)), -value
        elif modifier < 0.35:
            words[pos - 1], value = str(rng.choice(INTENSIFIERS)), 1.5 * value
        words[pos], polarity[pos] = word, value
    text = 0.6 * polarity.sum()
    prosody, face = rng.standard_normal(2)
    label = float(np.clip(text + 0.6 * prosody + 0.5 * face + 0.2 * rng.standard_normal(), -3, 3))
    label = round(label * 3) / 3

    acoustic = 0.5 * rng.standard_normal((n_words, spec.acoustic_dim))
    acoustic[:, 0:8] += prosody
    acoustic[:, 8:16] += np.abs(polarity)[:, None]
    acoustic[:, 16:20] += (np.array([len(w) for w in words]) / 5.0)[:, None]
    visual = 0.5 * rng.standard_normal((n_words, spec.visual_dim))
    visual[:, 0:6] += face
    visual[:, 6:12] += np.sign(polarity)[:, None]
    return words, visual.astype(np.float32), acoustic.astype(np.float32), label, float(np.clip(text, -3, 3))


def _generate(spec: SyntheticSpec):
    data, oracle = {}, {}
    for k, (name, size) in enumerate(zip(SPLIT_NAMES, spec.sizes)):
        rng = np.random.default_rng([spec.seed, k])  # one stream per split: sizes do not shift other splits
        entries, text_parts = [], []
        for i in range(int(size)):
            words, visual, acoustic, label, text = _utterance(rng, spec)
            entries.append(
                ((words, visual, acoustic), np.array([[label]], dtype=np.float32), f"synthetic-{name}-{i:05d}")
            )
            text_parts.append(text)
        data[name], oracle[name] = entries, np.array(text_parts)
    return data, oracle


def make_synthetic(spec: SyntheticSpec = SyntheticSpec()) -> dict:
    """The synthetic set in the word-level pickle layout:
    ``{"train"|"dev"|"test": [((words, visual, acoustic), label, segment)]}``."""
    return _generate(spec)[0]


def text_only_oracle(spec: SyntheticSpec = SyntheticSpec()) -> tuple[np.ndarray, np.ndarray]:
    """``(predictions, labels)`` of the text-only oracle (prediction = the text part ``t``) on the
    generated test split: no text-only model can expect to do better (its scores are the ceiling
    that training reports)."""
    data, oracle = _generate(spec)
    labels = np.array([float(np.asarray(e[1]).reshape(())) for e in data["test"]])
    return oracle["test"], labels
