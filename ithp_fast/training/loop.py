"""The training loop: every seed of a run, each resumable, epoch by epoch.

Multi-process: ``torchrun --nproc_per_node N -m ithp_fast train ...`` (or the ``ithp-fast``
script). ``--batch-size`` is the global batch, split evenly over the ranks; the min-max bounds are
reduced over the ranks so a sharded batch is normalised like the whole batch; evaluation
predictions are gathered so metrics are those of the whole split; rank 0 alone writes files.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..checks import renamed_settings
from ..data import PretrainedWordTokenizer, SentimentData, SyntheticSpec, load_sentiment_data
from . import checkpoints as ckpt
from .batches import TRAIN_TAG, derive_seed, present_detectors, run_batch
from .build import new_model, optimizer_groups, tokenizer_entry
from .config import RESUME_FREE, TrainConfig, train_terms
from .console import data_line, wrote_line
from .distributed import (
    DistContext,
    all_true,
    barrier,
    broadcast_object,
    init_distributed,
    mean_across_ranks,
    print_on_main,
    shutdown,
)
from .evaluate import predict, synthetic_ceiling, write_predictions
from .logs import append_results_row, open_tensorboard, results_table, write_metrics_csv
from .metrics import better, format_metrics
from .preflight import check_output_dir, new_paths, undo_unstarted
from .results import RESULTS_FILE, print_summary, report_seed, seed_results, summarise, write_seed_comparison
from .state import TrainState


class NonFiniteLossError(ArithmeticError):
    """A training step's loss or gradient was NaN or infinite (the message names seed, epoch and step)."""


@dataclass(frozen=True)
class SeedPaths:
    """Where one seed's files go: ``<output_dir>/seed-<seed>/``."""

    run: str
    last: str
    best: str
    results: str

    @classmethod
    def of(cls, output_dir: str, seed: int) -> "SeedPaths":
        run = os.path.join(output_dir, f"seed-{seed}")
        return cls(
            run,
            os.path.join(run, "checkpoint-last"),
            os.path.join(run, "checkpoint-best"),
            os.path.join(run, RESULTS_FILE),
        )


@dataclass(kw_only=True)
class SeedRun:
    """Everything one seed's training holds while it runs."""

    cfg: TrainConfig
    seed: int
    data: SentimentData
    ctx: DistContext
    paths: SeedPaths
    model: nn.Module
    ddp: nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    config: dict  # what every checkpoint's config.json holds (its "model" entry builds the model)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: DistributedSampler
    loader: DataLoader
    total_steps: int
    present: Optional[torch.Tensor] = None  # [train examples, levels] bool under --missing-rate, else None
    ceiling: Optional[dict] = None  # a synthetic set's text-only ceiling (synthetic_ceiling), None for other data
    callbacks: tuple = ()
    tensorboard: Optional[Any] = None
    state: TrainState = field(default_factory=TrainState)
    steps_this_call: int = 0

    @property
    def model_config(self) -> dict:
        return self.config["model"]

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    @property
    def terms(self) -> tuple[str, ...]:
        """The names of the training terms this run logs (``kl<k>``, ``mse<k>`` for each ITHP level)."""
        return train_terms(len(self.cfg.detector_names))

    @property
    def finished(self) -> bool:
        """Whether the seed's training has ended: every epoch or step done, or stopped early."""
        state = self.state
        return state.epoch >= self.cfg.epochs or state.global_step >= self.total_steps or bool(state.stopped)


@dataclass(frozen=True)
class EpochEnd:
    """What a callback of ``ithp_fast.train`` receives after each epoch. Returning True from the callback
    ends that seed's training there (as --early-stop does); under torchrun, rank 0's answer counts."""

    seed: int
    epoch: int  # 1-based
    record: dict  # lr, seconds, step, train (loss and IB terms), valid and test metrics under both conventions
    model: nn.Module
    run_dir: str


@dataclass
class EpochSums:
    """Sums of the training terms over an epoch, and the window since the last logged record."""

    total: torch.Tensor
    steps: int = 0
    window: list = field(default_factory=list)

    @classmethod
    def restore(cls, partial: Optional[dict], device: torch.device, terms: int) -> "EpochSums":
        """Sums of an epoch cut by --stop-after-steps carry over: a resumed epoch logs as an uninterrupted one."""
        partial = partial or {"sum": [0.0] * terms, "steps": 0, "window": []}
        return cls(
            torch.tensor(partial["sum"], device=device),
            partial["steps"],
            [torch.tensor(w, device=device) for w in partial["window"]],
        )

    def add(self, terms: torch.Tensor) -> None:
        self.total += terms
        self.steps += 1
        self.window.append(terms)

    def take_window(self, names: tuple[str, ...]) -> dict:
        means = torch.stack(self.window).mean(0).tolist()
        self.window.clear()
        return dict(zip(names, means))

    def to_state(self) -> dict:
        return {"sum": self.total.tolist(), "steps": self.steps, "window": [w.tolist() for w in self.window]}


def check_resume(saved: dict, cfg: TrainConfig, path: str) -> None:
    """A clear error when ``--resume`` is asked with settings that change what is computed. A setting the saved
    run does not list (written before the setting existed) counts as its default."""
    now = cfg.to_dict()
    saved = {**TrainConfig().to_dict(), **renamed_settings(saved, path)}
    diff = [
        k
        for k in now
        if k not in RESUME_FREE and saved.get(k) != now[k] and not (k == "epochs" and now[k] > saved.get(k, now[k]))
    ]
    if diff:
        detail = ", ".join(f"{k}: saved {saved.get(k)!r}, now {now[k]!r}" for k in diff)
        raise ValueError(f"--resume: {path} was written with other settings ({detail})")


def recover_checkpoints(paths: SeedPaths, ctx: DistContext) -> None:
    """Finish or undo a save a crash interrupted (rank 0 moves files, the others wait)."""
    if ctx.is_main:
        ckpt.recover(paths.last)
        ckpt.recover(paths.best)
    barrier(ctx)


def finished_earlier(cfg: TrainConfig, seed: int, paths: SeedPaths, ctx: DistContext) -> Optional[dict]:
    """With --resume, the results of a seed that already finished (None otherwise); its settings were checked by
    :func:`check_resumable`."""
    if not (os.path.isfile(paths.results) and os.path.isdir(paths.last)):
        return None
    done = ckpt.read_json(paths.results)
    if not done.get("finished"):
        return None
    saved = ckpt.load_config(paths.last)["run"]
    if cfg.epochs > saved["epochs"] and not done.get("stopped"):
        return None  # a larger --epochs extends the finished run
    print_on_main(ctx, f"seed {seed}: finished earlier, results read from {paths.results}")
    return done


def check_fresh_output(cfg: TrainConfig) -> list[str]:
    """Without --resume, refuse to train over a seed already in --output-dir; returns the seed directories
    --overwrite-output-dir will clear: a new run never replaces a finished one by accident."""
    clear = []
    for seed in cfg.seeds:
        paths = SeedPaths.of(cfg.output_dir, seed)
        check_seed_directory(paths)
        taken = [
            p
            for p in (paths.results, paths.last, ckpt.sibling(paths.last, ".tmp"), ckpt.sibling(paths.last, ".old"))
            if os.path.lexists(p)
        ]
        if not taken:
            continue
        if not cfg.overwrite_output_dir:
            raise ValueError(
                f"--output-dir: {paths.run} already holds a run ({os.path.basename(taken[0])}); pass "
                f"--resume to continue it, --overwrite-output-dir to replace it, or another --output-dir"
            )
        clear.append(paths.run)
    return clear


def check_seed_directory(paths: SeedPaths) -> None:
    """One line naming a file where a seed's directory goes, or something other than a file at its results.json."""
    if os.path.lexists(paths.run) and not os.path.isdir(paths.run):
        raise ValueError(f"--output-dir: {paths.run} is a file, where the seed's directory goes; move it away")
    if os.path.lexists(paths.results) and not os.path.isfile(paths.results):
        raise ValueError(f"--output-dir: {paths.results} is not a file; move it away")


def check_resumable(cfg: TrainConfig, ctx: DistContext) -> None:
    """With --resume, before anything trains: every seed's interrupted save finished or undone, and no checkpoint
    continued from whose files cannot be checked (no manifest.json) unless --resume-unverified allows it."""
    for seed in cfg.seeds:
        paths = SeedPaths.of(cfg.output_dir, seed)
        check_seed_directory(paths)
        recover_checkpoints(paths, ctx)
        for path in (paths.last, paths.best):
            unverified = ckpt.unverified_reason(path) if os.path.isdir(path) else None
            if unverified and not cfg.resume_unverified:
                raise ckpt.CheckpointError(
                    f"{unverified}; --resume continues only from a checkpoint it can check (pass "
                    f"--resume-unverified to continue from this one anyway)"
                )
        if os.path.isdir(paths.last):
            check_resume(ckpt.load_config(paths.last)["run"], cfg, paths.last)


def start_seed(cfg: TrainConfig, seed: int, data: SentimentData, ctx: DistContext, paths: SeedPaths) -> SeedRun:
    """A fresh model, optimiser, schedule and loader for one seed."""
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    model, model_config = new_model(cfg, data)
    model.to(ctx.device)
    optimizer = torch.optim.AdamW(optimizer_groups(model, cfg.weight_decay), lr=cfg.lr, eps=cfg.adam_eps)
    train_split = data.splits["train"]
    sampler = DistributedSampler(
        train_split, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed, drop_last=False
    )
    loader = DataLoader(
        train_split,
        batch_size=cfg.batch_size // ctx.world_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        pin_memory=ctx.device.type == "cuda",
    )
    total_steps = cfg.epochs * len(loader)
    if cfg.max_steps is not None:
        total_steps = min(cfg.max_steps, total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    config = {
        "model": model_config,
        "run": {**cfg.to_dict(), "seed": seed},
        "data": data.describe(),
        "backend": cfg.backend,
        "world_size": ctx.world_size,
        "tokenizer": tokenizer_entry(data),
    }
    ddp = model
    if ctx.enabled:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    return SeedRun(
        cfg=cfg,
        seed=seed,
        data=data,
        ctx=ctx,
        paths=paths,
        model=model,
        ddp=ddp,
        config=config,
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        loader=loader,
        total_steps=total_steps,
        present=present_detectors(seed, len(train_split), len(cfg.detector_names), cfg.missing_rate),
    )


def resume(run: SeedRun) -> None:
    """Load weights, optimiser, schedule and progress from checkpoint-last (when there is one; its settings were
    checked by :func:`check_resumable`)."""
    last = run.paths.last
    if not os.path.isdir(last):
        print_on_main(run.ctx, f"seed {run.seed}: nothing to resume in {run.paths.run}; starting")
        return
    ckpt.check_training_state(last)
    ckpt.load_weights(run.model, last)
    saved = ckpt.load_training_state(last, run.optimizer, run.scheduler)
    run.state = TrainState.from_dict(saved, os.path.join(last, ckpt.STATE_FILE))
    follow_schedule(run.optimizer, run.scheduler)
    print_on_main(
        run.ctx,
        f"seed {run.seed}: resuming from {last} at step {run.state.global_step} "
        f"(epoch {run.state.epoch + 1} of {run.cfg.epochs})",
    )


def follow_schedule(optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Set each group's rate to the schedule's value at the step reached. Resuming the same run, this is the
    rate it saved; extending a run (a larger --epochs), the warm-up and decay are those of the new total,
    so training goes on at the rate a run planned that long from the start would have at this step."""
    for group, base, schedule in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * schedule(scheduler.last_epoch)


def save_last(run: SeedRun, finished: bool) -> None:
    """Write checkpoint-last with everything --resume needs."""
    run.state.finished = finished
    if run.ctx.is_main:
        ckpt.save_checkpoint(
            run.paths.last,
            run.model,
            run.config,
            save_tokenizer=tokenizer_saver(run.data, run.cfg.max_seq_length),
            optimizer=run.optimizer,
            scheduler=run.scheduler,
            state=run.state.to_dict(),
        )


def tokenizer_saver(data: SentimentData, max_length: int):
    """Writes the run's tokenizer (cutting texts at ``max_length`` tokens) into a checkpoint; None without one."""
    if data.tokenizer is None:
        return None
    return lambda directory: data.tokenizer.save(directory, max_length=max_length)


def train_step(run: SeedRun, batch: dict, epoch: int) -> Optional[torch.Tensor]:
    """One optimiser step; returns the training terms (``run.terms``) of the batch, or None when the step
    was skipped because its loss or gradient was not finite (``--skip-nonfinite-steps``)."""
    cfg, state = run.cfg, run.state
    torch.manual_seed(derive_seed(run.seed, TRAIN_TAG, state.global_step, run.ctx.rank))
    noise_key = (run.seed, TRAIN_TAG, epoch) if cfg.noise == "per-example" else None
    detector_mask = None if run.present is None else run.present[batch["index"]]
    out, labels = run_batch(
        run.ddp, batch, cfg, run.model_config, run.ctx, noise_key, reduce_bounds=True, detector_mask=detector_mask
    )
    loss = run.model.training_loss(out, labels)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = gradient_norm(run.model, cfg.max_grad_norm)
    if not all_true(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm), run.ctx):
        run.optimizer.zero_grad(set_to_none=True)
        if not cfg.skip_nonfinite_steps:
            raise NonFiniteLossError(
                f"seed {run.seed}, epoch {epoch + 1}, step {state.global_step + 1}: the loss is {loss.item():g} and "
                f"the gradient norm {grad_norm.item():g}; training stopped before this step changed anything "
                f"(checkpoints already saved are kept). Lower --lr, clip with --max-grad-norm, or pass "
                f"--skip-nonfinite-steps"
            )
        state.skipped_steps += 1
        run.scheduler.step()  # a skipped step still counts in the schedule
        return None
    run.optimizer.step()
    run.scheduler.step()
    task_mse = F.mse_loss(out.logits.reshape(-1).float(), labels.float())
    per_level = [term for pair in zip(out.kl_terms, out.mse_terms) for term in pair]
    return torch.stack([loss, task_mse, out.IB_total, *per_level]).detach().float()


def gradient_norm(model: nn.Module, max_norm: Optional[float]) -> torch.Tensor:
    """The total gradient norm (before clipping); clips to ``max_norm`` when it is given."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm is not None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


def train_epoch(run: SeedRun) -> bool:
    """Train (the rest of) one epoch, then evaluate and save; True when --stop-after-steps stopped it."""
    from tqdm import tqdm

    cfg, state = run.cfg, run.state
    epoch = state.epoch
    run.sampler.set_epoch(epoch)
    run.ddp.train()
    sums = EpochSums.restore(state.partial, run.ctx.device, len(run.terms))
    state.partial = None
    bar = tqdm(
        total=min(run.steps_per_epoch, run.total_steps - state.global_step + state.step_in_epoch),
        initial=state.step_in_epoch,
        desc=f"seed {run.seed} epoch {epoch + 1}/{cfg.epochs}",
        disable=not (cfg.progress and run.ctx.is_main),
        leave=False,
        dynamic_ncols=True,
    )
    stopped = False
    t0 = time.perf_counter()
    for batch in itertools.islice(run.loader, state.step_in_epoch, None):
        if state.global_step >= run.total_steps:
            break
        terms = train_step(run, batch, epoch)
        if terms is not None:
            sums.add(terms)
        state.global_step += 1
        state.step_in_epoch += 1
        run.steps_this_call += 1
        bar.update(1)
        logged = state.global_step % cfg.log_every == 0 or state.step_in_epoch == run.steps_per_epoch
        if logged and sums.window:
            log_steps(run, {"step": state.global_step, "epoch": epoch + 1, **sums.take_window(run.terms)})
            bar.set_postfix(loss=f"{(sums.total[0] / sums.steps).item():.4f}")
        if cfg.stop_after_steps is not None and run.steps_this_call >= cfg.stop_after_steps:
            stopped = True
            break
    bar.close()
    state.train_seconds += time.perf_counter() - t0
    if state.step_in_epoch < run.steps_per_epoch and state.global_step < run.total_steps:
        state.partial = sums.to_state()  # stopped inside the epoch
        save_last(run, False)
        return True
    if sums.window:
        log_steps(run, {"step": state.global_step, "epoch": epoch + 1, **sums.take_window(run.terms)})
    end_epoch(run, epoch, sums, time.perf_counter() - t0)
    if run.finished or stopped or (epoch + 1) % cfg.checkpoint_every == 0:
        save_last(run, run.finished)
    return stopped


def log_steps(run: SeedRun, record: dict) -> None:
    run.state.history["steps"].append(record)
    if run.tensorboard is not None:
        run.tensorboard.steps([record])


def end_epoch(run: SeedRun, epoch: int, sums: EpochSums, seconds: float) -> None:
    """Record the epoch (training means, valid and test metrics), log it, keep the best weights if asked,
    and stop early when --early-stop or a callback says so."""
    cfg, ctx, state = run.cfg, run.ctx, run.state
    record = {
        "epoch": epoch + 1,
        "step": state.global_step,
        "seconds": seconds,
        "lr": run.scheduler.get_last_lr()[0],
        "train": dict(zip(run.terms, (mean_across_ranks(sums.total, ctx) / max(sums.steps, 1)).tolist())),
    }
    for name in ("valid", "test"):
        record[name] = predict(run.model, run.data.splits[name], cfg, run.model_config, ctx, run.seed)["metrics"]
    state.history["epochs"].append(record)
    state.epoch, state.step_in_epoch = epoch + 1, 0
    print_on_main(
        ctx,
        f"seed {run.seed} epoch {epoch + 1}/{cfg.epochs} ({seconds:.1f} s): train loss "
        f"{record['train']['loss']:.4f} | valid {format_metrics(record['valid'][cfg.protocol])} | "
        f"test {format_metrics(record['test'][cfg.protocol])}",
    )
    if ctx.is_main:
        write_metrics_csv(os.path.join(run.paths.run, "metrics.csv"), state.history["epochs"], cfg.protocol)
        if run.tensorboard is not None:
            run.tensorboard.epoch(record, cfg.protocol)
    track_best(run, record)
    if cfg.early_stop is not None and state.epochs_without_improvement >= cfg.early_stop:
        state.stopped = {
            "epoch": epoch + 1,
            "reason": f"no better valid {cfg.select_metric} in {cfg.early_stop} epochs",
        }
    ask = EpochEnd(run.seed, epoch + 1, record, run.model, run.paths.run)
    if ctx.is_main and any([bool(callback(ask)) for callback in run.callbacks]):  # every callback sees the epoch
        state.stopped = {"epoch": epoch + 1, "reason": "a callback asked to stop"}
    state.stopped = broadcast_object(state.stopped, ctx)
    if state.stopped and state.stopped["epoch"] == epoch + 1:
        print_on_main(ctx, f"seed {run.seed}: stopped after epoch {epoch + 1} ({state.stopped['reason']})")


def track_best(run: SeedRun, record: dict) -> None:
    """The best validation value of --select-metric so far; checkpoint-best holds its weights under --select best."""
    cfg, state = run.cfg, run.state
    value = record["valid"][cfg.protocol][cfg.select_metric]  # a name TrainConfig.validate checked
    if not better(cfg.select_metric, value, state.best):
        state.epochs_without_improvement += 1
        return
    state.best, state.best_epoch, state.epochs_without_improvement = value, record["epoch"], 0
    if cfg.selection == "best" and run.ctx.is_main:
        ckpt.save_checkpoint(run.paths.best, run.model, run.config,
                             save_tokenizer=tokenizer_saver(run.data, cfg.max_seq_length))


def train_seed(
    cfg: TrainConfig,
    seed: int,
    data: SentimentData,
    ctx: DistContext,
    *,
    ceiling: Optional[dict],
    callbacks: tuple = (),
) -> tuple[dict, bool]:
    """One seed's training; returns its results (also in ``<output_dir>/seed-<seed>/results.json``) and whether
    it trained in this call (False for a seed that had finished earlier). ``ceiling``: the text-only ceiling of
    the synthetic set ``data`` is (:func:`~ithp_fast.training.evaluate.synthetic_ceiling`; None for other data),
    reported beside the seed's scores. With --resume, :func:`check_resumable` has checked every seed's
    checkpoints first."""
    paths = SeedPaths.of(cfg.output_dir, seed)
    if cfg.resume:  # its checkpoints recovered, and their settings checked, by check_resumable
        done = finished_earlier(cfg, seed, paths, ctx)
        if done is not None:
            return done, False
    if ctx.is_main:
        os.makedirs(paths.run, exist_ok=True)
    run = start_seed(cfg, seed, data, ctx, paths)
    run.callbacks, run.ceiling = callbacks, ceiling
    if cfg.resume:
        resume(run)
    if cfg.log == "tensorboard" and ctx.is_main:
        run.tensorboard = open_tensorboard(paths.run)
    try:
        while not run.finished:
            if train_epoch(run):
                break
    finally:
        if run.tensorboard is not None:
            run.tensorboard.close()
    if not run.finished:
        print_on_main(
            ctx, f"seed {seed}: stopped at step {run.state.global_step} of {run.total_steps}; continue with --resume"
        )
        return {"seed": seed, "finished": False, "global_step": run.state.global_step}, True
    return finish_seed(run), True


def finish_seed(run: SeedRun) -> dict:
    """Score the selected epoch's weights on valid and test; on rank 0 write the test predictions, then report the
    seed (figures, results.json, with the text-only ceiling of a synthetic set); returns its results."""
    cfg, ctx, paths = run.cfg, run.ctx, run.paths
    if cfg.selection == "best" and run.state.best_epoch is not None:
        ckpt.load_weights(run.model, paths.best)
    scored = {
        name: predict(run.model, run.data.splits[name], cfg, run.model_config, ctx, run.seed)
        for name in ("valid", "test")
    }
    if ctx.is_main:
        write_predictions(os.path.join(paths.run, "predictions_test.csv"), run.data.splits["test"], scored["test"])
    results = seed_results(
        cfg,
        run.seed,
        run.state,
        scored,
        run.data,
        ctx=ctx,
        present=run.present,
        ceiling=run.ceiling,
        checkpoint=paths.best if cfg.selection == "best" else paths.last,
    )
    return report_seed(results, paths.run, ctx=ctx, plots=cfg.plots)


def load_run_data(cfg: TrainConfig, data: Union[SentimentData, Mapping, None] = None) -> SentimentData:
    """The data a run trains on: ``data`` when given, else ``--data``, else the synthetic set."""
    if isinstance(data, SentimentData):
        return data
    tokenizer = PretrainedWordTokenizer.from_directory(cfg.backbone) if cfg.backbone else None
    loaded = load_sentiment_data(
        data if data is not None else cfg.data,
        tokenizer=tokenizer,
        max_len=cfg.max_seq_length,
        synthetic=SyntheticSpec(seed=cfg.synthetic_seed, sizes=tuple(cfg.synthetic_sizes)),
    )
    if loaded.layout == "arrays" and cfg.backbone:
        warnings.warn(
            "the array (MMSA) layout carries token ids from its own BERT tokenizer; they are used as they are, "
            "which is only meaningful for a backbone that shares that vocabulary",
            stacklevel=2,
        )
    return loaded


def run_training(cfg: TrainConfig, data: Union[SentimentData, Mapping, None] = None, callbacks: tuple = ()) -> dict:
    """Run every seed of ``cfg``; returns (and writes, on rank 0) the summary over seeds.

    Writes ``train_config.json`` (every setting, resolved) and ``summary.json`` in --output-dir, and appends
    one row to ``results.csv`` in its parent when a seed trained or the table does not hold the run's row yet.
    """
    ctx = init_distributed(cfg.device)
    threads = torch.get_num_threads()
    try:
        cfg.validate(ctx.world_size)
        cfg = cfg.resolved()
        torch.set_num_threads(cfg.threads)
        check_output_dir(cfg.output_dir)
        if cfg.resume:
            check_resumable(cfg, ctx)
        clear = [] if cfg.resume else check_fresh_output(cfg)
        data = load_run_data(cfg, data)
        config_file = os.path.join(cfg.output_dir, "train_config.json")
        created = new_paths(os.path.abspath(cfg.output_dir)) + [config_file] * (not os.path.lexists(config_file))
        if ctx.is_main:  # everything checked: the run starts
            for run_dir in clear:
                shutil.rmtree(run_dir)
            os.makedirs(cfg.output_dir, exist_ok=True)
            ckpt.write_json(config_file, cfg.to_dict())
        barrier(ctx)
        print_on_main(ctx, data_line(data.describe()))
        if not cfg.backbone and cfg.lr <= 1e-5:
            print_on_main(
                ctx,
                f"note: --lr {cfg.lr:g} is the published rate for a pretrained backbone; the randomly "
                f"initialised one learns little at it (try --lr 1e-3), or pass --backbone DIR",
            )
        ceiling = synthetic_ceiling(data.synthetic_spec)  # the same for every seed
        try:
            outcomes = [train_seed(cfg, seed, data, ctx, ceiling=ceiling, callbacks=callbacks) for seed in cfg.seeds]
        except BaseException:
            if ctx.is_main:  # a run that failed before any seed wrote a file leaves nothing behind
                undo_unstarted([SeedPaths.of(cfg.output_dir, seed).run for seed in cfg.seeds], created)
            raise
        summary = summarise([results for results, _ in outcomes], cfg.protocol)
        if ctx.is_main and summary["seeds"]:
            ckpt.write_json(os.path.join(cfg.output_dir, "summary.json"), summary)
            print_summary(summary, cfg.protocol)
            if cfg.plots:
                write_seed_comparison([results for results, _ in outcomes], cfg.output_dir)
            print(wrote_line("run", cfg.output_dir))
            if len(summary["seeds"]) == len(cfg.seeds):  # resuming a finished run adds its row if it is missing
                add_results_row(cfg, data, summary, unless_present=not any(trained for _, trained in outcomes))
        return summary
    finally:
        torch.set_num_threads(threads)
        shutdown(ctx)


def add_results_row(cfg: TrainConfig, data: SentimentData, summary: dict, unless_present: bool = False) -> None:
    """One row for this run in ``results.csv`` beside the run directory (with ``unless_present``, only if the
    table does not hold it yet)."""
    output_dir = os.path.abspath(cfg.output_dir)
    backbone = cfg.backbone or f"random DeBERTa-v2 {cfg.hidden_size}x{cfg.num_layers}"
    path = results_table(output_dir)
    if append_results_row(
        path,
        summary,
        name=os.path.basename(output_dir),
        dataset=data.source,
        model=f"ITHP-DeBERTa (backend {cfg.backend}; {backbone})",
        output_dir=output_dir,
        unless_present=unless_present,
    ):
        print(f"results.csv: a row for {os.path.basename(output_dir)} added to {path}")
