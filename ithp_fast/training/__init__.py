"""Training and evaluation of ITHP-DeBERTa for sentiment regression.

One job per module:

    api.py          ithp_fast.train / ithp_fast.evaluate: settings from dicts or files, data from paths or memory
    config.py       TrainConfig: every setting of a run (each one a flag of ``ithp-fast train``)
    eval_config.py  EvalConfig: every setting of scoring a checkpoint (a flag of ``ithp-fast evaluate``, a keyword
                    of ``ithp_fast.evaluate``)
    build.py        the backbone, the model, the optimiser's parameter groups
    batches.py      seeds, per-example noise, one batch through the model
    loop.py         the run: seeds, resume, epochs, steps, early stop, callbacks, saving; it has evaluate.py
                    score the weights and hands the scores to results.py
    state.py        TrainState: a seed's progress, saved as trainer_state.json, what --resume continues from
    evaluate.py     predictions of a split and their scores, the text-only ceiling, the predictions CSV,
                    scoring a checkpoint
    load.py         ``ithp_fast.load_checkpoint``: a checkpoint as a model ready for inference
    results.py      a seed's results from its scores (runs no model), the summary over seeds, printed metric lines
    logs.py         metrics.csv, TensorBoard, results.csv across runs
    checkpoints.py  the checkpoint files (safetensors + JSON + SHA-256 manifest) and their crash-safe saving
    distributed.py  torchrun plumbing (no-ops in a single process)
    metrics.py      the sentiment metrics under both conventions
    console.py      the lines a run prints about its data and the files it wrote
    plots.py        the figures of a seed: training curves, information plane (matplotlib, optional)
    seed_comparison.py  the figure comparing a run's seeds per epoch (matplotlib, optional)

The data loaders live in ``ithp_fast.data``; the command line in ``ithp_fast.tools.train_commands``.
"""
