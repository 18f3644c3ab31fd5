"""Data for ITHP sentiment models: both CMU-MOSI / CMU-MOSEI pickle layouts and a synthetic default.

Pickles run code stored in them when loaded: only pass paths to files you trust.
"""

from .dataset import (
    DETECTOR_NAMES,
    SentimentData,
    SentimentSplit,
    check_feature_widths,
    load_sentiment_data,
    minmax_normalise,
)
from .formats import LABEL_RANGE, SPLITS, DataFormatError, read_pickle
from .synthetic import SyntheticSpec, make_synthetic, text_only_oracle
from .tokenize import PretrainedWordTokenizer, WordVocabulary, align_words

__all__ = [
    "DETECTOR_NAMES",
    "LABEL_RANGE",
    "SPLITS",
    "DataFormatError",
    "PretrainedWordTokenizer",
    "SentimentData",
    "SentimentSplit",
    "SyntheticSpec",
    "WordVocabulary",
    "align_words",
    "check_feature_widths",
    "load_sentiment_data",
    "make_synthetic",
    "minmax_normalise",
    "read_pickle",
    "text_only_oracle",
]
