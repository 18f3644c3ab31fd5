"""``ithp-fast package``: a trained checkpoint as a slim directory to hand on, with a model card.

    ithp-fast package --checkpoint runs/synthetic/seed-1/checkpoint-last --output-dir models/ithp-synthetic

The directory holds what scoring needs and nothing for resuming training (no optimizer state):
``config.json`` (posterior mean), ``model.safetensors``, the tokenizer's files, ``training.json``
(how it was trained), a generated ``README.md`` (the model card: data, metrics with their
convention, settings, how to load and score) and ``manifest.json`` (the SHA-256 of each file).
``ITHPDeberta.from_pretrained``, ``AutoModelForSequenceClassification``, ``pipeline``,
``ithp_fast.load_checkpoint``, ``ithp-fast predict`` and ``ithp-fast export`` read it. A checkpoint of
an earlier version comes out in this version's layout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from typing import Optional

from ..files import follow_umask
from .errors import CommandError, one_line_errors

CONVENTION_TEXT = {
    "authors": "the authors' convention: zero labels dropped for every metric, a prediction >= 0 counts as "
    "positive, the last epoch scored",
    "mmsa": "MMSA's convention: zero labels kept for MAE, Corr and the multi-class accuracies (Has0_*: classes "
    ">= 0; Non0_*: zeros dropped, classes > 0)",
}


def package(checkpoint: str, output_dir: str) -> str:
    """Write the slim copy of ``checkpoint`` to ``output_dir`` (which must not hold anything); returns it."""
    from ..training import checkpoints as ckpt
    from ..training.load import load_checkpoint_model

    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise CommandError(f"--output-dir: {output_dir} already exists and is not empty; name a new directory")
    parent = os.path.dirname(os.path.abspath(output_dir))
    if not os.path.isdir(parent):
        raise CommandError(f"--output-dir: the directory {parent} does not exist")
    model, config = load_checkpoint_model(checkpoint, eval_sampling="mean")
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output_dir)}.", dir=parent)
    try:
        model.save_pretrained(staging)
        if "run" in config:
            run = {k: v for k, v in config.items() if k != "model"}
            ckpt.write_json(os.path.join(staging, ckpt.RUN_FILE), {**run, "format": ckpt.FORMAT})
        with open(os.path.join(staging, "README.md"), "w", encoding="utf-8") as f:
            f.write(model_card(config, seed_results(checkpoint), run_summary(checkpoint), os.path.basename(output_dir)))
        ckpt.write_manifest(staging)
        follow_umask(staging)  # made 0700 by mkdtemp
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)  # empty, checked above
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def seed_results(checkpoint: str) -> Optional[dict]:
    """``results.json`` of the seed that wrote ``checkpoint`` (``seed-N/checkpoint-*``), if there is one."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "results.json")
    return json.load(open(path)) if os.path.isfile(path) else None


def run_summary(checkpoint: str) -> Optional[dict]:
    """``summary.json`` of the run (mean and std over its seeds), if there is one."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))), "summary.json")
    return json.load(open(path)) if os.path.isfile(path) else None


def model_card(config: dict, results: Optional[dict], summary: Optional[dict], name: str) -> str:
    """The ``README.md`` of a packaged model."""
    model = config["model"]
    sections = [
        "---\nlibrary_name: ithp_fast\npipeline_tag: text-classification\n"
        "tags: [ithp, deberta-v2, sentiment-analysis, regression]\n---\n",
        f"# {name}: ITHP-DeBERTa sentiment regression\n\n"
        "ITHP (Information-Theoretic Hierarchical Perception, Xiao et al., ICLR 2024) on a DeBERTa-v2 backbone, "
        "trained with ithp_fast. Text in, one sentiment score out (the labels run from -3, negative, to +3, "
        "positive). At inference ITHP's latent depends on the text alone: the detectors "
        f"({', '.join(model['modality_order'])}) shaped it in training and are not needed to score text. "
        "Scores use ITHP's posterior mean, so one text always gets one score.\n",
        data_section(config),
        metrics_section(results, summary),
        settings_section(config),
        usage_section(name),
    ]
    return "\n".join(s for s in sections if s)


def data_section(config: dict) -> str:
    data = config.get("data")
    if not data:
        return "## Data\n\nNot recorded (this directory was not written by `ithp-fast train`).\n"
    sizes = ", ".join(f"{k} {v}" for k, v in data.get("sizes", {}).items())
    text = f"## Data\n\n{data['source']} ({data['layout']} layout; {sizes} examples; {data.get('tokens')} tokens).\n"
    if data["layout"] == "synthetic":
        text += ("\nThe built-in **synthetic** set, not CMU-MOSI or MOSEI: it shows that training works, nothing "
                 "about accuracy on real data.\n")
    return text


def metrics_section(results: Optional[dict], summary: Optional[dict]) -> str:
    if results is None:
        return "## Metrics\n\nNo results.json beside the checkpoint: not recorded.\n"
    rows = ["| metric | authors | mmsa |", "|---|---:|---:|"]
    keys = sorted((set(results["test"]["authors"]) | set(results["test"]["mmsa"])) - {"count"})
    for key in keys:
        cells = [results["test"][c].get(key) for c in ("authors", "mmsa")]
        rows.append(f"| {key} | " + " | ".join("" if v is None else f"{v:.3f}" for v in cells) + " |")
    counts = ", ".join(f"{c} {results['test'][c].get('count')}" for c in ("authors", "mmsa"))
    text = (f"## Metrics\n\nTest split, seed {results['seed']}, epoch {results['selection']['epoch']} "
            f"({results['selection']['rule']}); accuracies and F1 as fractions; examples scored: {counts}. "
            f"Two conventions:\n\n"
            + "".join(f"- `{c}`: {t}.\n" for c, t in CONVENTION_TEXT.items()) + "\n" + "\n".join(rows) + "\n")
    if summary and len(summary.get("seeds", [])) > 1:
        protocol = summary.get("protocol", "authors")
        spread = ", ".join(f"{k} {v['mean']:.3f} ± {v['std']:.3f}" for k, v in summary["metrics"][protocol].items()
                           if k in ("Non0_acc_2", "MAE", "Corr"))
        text += f"\nOver the run's seeds {summary['seeds']} ({protocol}, mean ± std, ddof=1): {spread}.\n"
    return text


def settings_section(config: dict) -> str:
    model, run = config["model"], config.get("run", {})
    backbone = model["backbone"]
    source = model.get("backbone_path") or (f"a randomly initialised DeBERTa-v2 (hidden {backbone['hidden_size']}, "
                                            f"{backbone['num_hidden_layers']} layers)")
    ithp = model["ithp"]
    lines = [f"- backbone: {source}",
             f"- ITHP: inter_dim {ithp['inter_dim']}, latents {ithp['B0_dim']} and {ithp['B1_dim']}, p_beta "
             f"{ithp['p_beta']}, p_gamma {ithp['p_gamma']}, p_lambda {ithp['p_lambda']}",
             f"- {model['max_seq_length']} tokens per text; attention mask passed to the backbone: "
             f"{model['pass_attention_mask']}"]
    if run:
        lines.append(f"- recipe {run.get('recipe') or 'default'}: lr {run['lr']}, {run['epochs']} epochs, batch "
                     f"{run['batch_size']}, seed {run['seed']}, evaluated with eval_sampling {run['eval_sampling']}")
    return "## Settings\n\n" + "\n".join(lines) + "\n"


def usage_section(name: str) -> str:
    return f"""## Load and score

```python
import ithp_fast
model = ithp_fast.ITHPDeberta.from_pretrained("{name}")   # or ithp_fast.load_checkpoint("{name}")
model.predict(["I really love this movie", "the plot was dull"])   # one score per text

from transformers import pipeline                       # import ithp_fast first: it registers the model
pipeline("text-classification", model="{name}")("I really love this movie")   # [{{"label": "sentiment", ...}}]
```

```bash
ithp-fast predict --checkpoint {name} "I really love this movie"
mkdir -p {name}-onnx && ithp-fast export --checkpoint {name} --format onnx --output {name}-onnx/model.onnx
```
"""


@one_line_errors("package")
def package_command(args: argparse.Namespace) -> int:
    written = package(args.checkpoint, args.output_dir)
    print(f"wrote {written}: " + ", ".join(sorted(os.listdir(written))))
    return 0


def register(sub) -> None:
    p = sub.add_parser("package", help="write a checkpoint as a slim directory to hand on, with a model card",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint directory written by ithp-fast train")
    p.add_argument("--output-dir", "--output", required=True, help="the directory to write (new, or empty)")
    p.set_defaults(func=package_command)
