"""The lines a training run prints about itself, besides its progress and metrics: what it trains on, and
where each seed's files and the run's own files went."""

from __future__ import annotations

import os

PICKLE_LAYOUTS = {"words": "word-level pickle", "arrays": "MMSA array pickle"}


def data_line(described: dict) -> str:
    """One line from ``SentimentData.describe()``: ``data: synthetic set (seed 0): 512 train / 128 valid /
    128 test examples, 50 tokens, acoustic 74 and visual 47 features per token, vocabulary of 51``."""
    if described.get("layout") == "synthetic" and "synthetic" in described:
        source = f"synthetic set (seed {described['synthetic']['seed']})"
    else:
        source = f"{described['source']} ({PICKLE_LAYOUTS.get(described['layout'], described['layout'])})"
    examples = " / ".join(f"{n} {split}" for split, n in described["sizes"].items())
    features = " and ".join(
        f"{name} {described[f'{name}_dim']}" for name in ("acoustic", "visual") if f"{name}_dim" in described
    )
    return (
        f"data: {source}: {examples} examples, {described['tokens']} tokens, {features} features per token, "
        f"vocabulary of {described['vocab_size']}"
    )


def listing_order(directory: str, name: str) -> tuple[int, str]:
    """Checkpoints first, then figures, then the other files, then other folders."""
    if os.path.isdir(os.path.join(directory, name)):
        return (0 if name.startswith("checkpoint-") else 3, name)
    return (1 if name.endswith(".png") else 2, name)


def wrote_line(label: str, directory: str) -> str:
    """``<label>: wrote DIR/ (checkpoint-last/, training_curves.png, ..., results.json)``: what ``directory``
    holds, folders marked with a trailing slash."""
    names = sorted(os.listdir(directory), key=lambda name: listing_order(directory, name))
    shown = [name + "/" if os.path.isdir(os.path.join(directory, name)) else name for name in names]
    return f"{label}: wrote {os.path.join(directory, '')} ({', '.join(shown)})"
