"""Training and evaluation of ITHP-DeBERTa for sentiment regression.

One job per module:

    config.py       TrainConfig: every setting of a run (each one a flag of ``ithp-fast train``)
    build.py        the backbone, the model, the optimiser's parameter groups
    batches.py      seeds, per-example noise, one batch through the model
    loop.py         ``train``: seeds, resume, epochs, steps, saving
    evaluate.py     predictions of a split, the predictions CSV, scoring a checkpoint
    results.py      a seed's results, the summary over seeds, printed metric lines
    checkpoints.py  the checkpoint files (safetensors + JSON) and their crash-safe saving
    distributed.py  torchrun plumbing (no-ops in a single process)
    metrics.py      the sentiment metrics under both conventions
    plots.py        the figures of a run (matplotlib, optional)

The data loaders live in ``ithp_fast.data``; the command line in ``ithp_fast.tools.train_commands``.
"""
