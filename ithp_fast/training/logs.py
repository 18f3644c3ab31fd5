"""Logs of a run: ``metrics.csv`` per seed (one row per epoch), TensorBoard event files on request,
and ``results.csv`` beside the run directories (one row per run, appended, never rewritten)."""

from __future__ import annotations

import csv
import datetime
import io
import os
import warnings
from typing import Optional

METRICS = ("Non0_acc_2", "Non0_F1_score", "Has0_acc_2", "Has0_F1_score", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr")


def epoch_columns(terms: tuple[str, ...]) -> tuple[str, ...]:
    """The columns of ``metrics.csv`` for a run that logs the training ``terms`` (one KL and MSE per ITHP level)."""
    return (
        "epoch",
        "step",
        "lr",
        "seconds",
        *(f"train_{t}" for t in terms),
        *(f"{split}_{m}" for split in ("valid", "test") for m in METRICS),
    )


RESULTS_COLUMNS = (
    "name",
    "date",
    "dataset",
    "model",
    "protocol",
    "seeds",
    *(f"{m}_{stat}" for m in METRICS for stat in ("mean", "std")),
    "output_dir",
)


def write_metrics_csv(path: str, epochs: list[dict], protocol: str) -> None:
    """``metrics.csv``: one row per epoch (its last step, learning rate, seconds, training means of the loss and
    the IB terms, valid and test metrics under ``protocol``); rewritten whole from the history, which a resumed run
    carries on."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    terms = tuple(epochs[0]["train"]) if epochs else ()
    writer.writerow(epoch_columns(terms))
    for record in epochs:
        row = [record["epoch"], record.get("step", ""), record["lr"], record["seconds"]]
        row += [record["train"][t] for t in terms]
        row += [record[split][protocol].get(m, "") for split in ("valid", "test") for m in METRICS]
        writer.writerow(["" if v is None else v for v in row])
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, path)


class TensorBoardLog:
    """Training terms per logged step and metrics per epoch as TensorBoard scalars (``<seed dir>/tensorboard``)."""

    def __init__(self, directory: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=os.path.join(directory, "tensorboard"))

    def steps(self, records: list[dict]) -> None:
        for record in records:
            for term, value in record.items():
                if term not in ("step", "epoch"):
                    self.writer.add_scalar(f"train/{term}", value, record["step"])

    def epoch(self, record: dict, protocol: str) -> None:
        step = record.get("step", record["epoch"])
        self.writer.add_scalar("train/lr", record["lr"], step)
        for split in ("valid", "test"):
            for m in METRICS:
                value = record[split][protocol].get(m)
                if value is not None:
                    self.writer.add_scalar(f"{split}/{m}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_tensorboard(directory: str) -> Optional[TensorBoardLog]:
    """A TensorBoard log, or None with a message when the tensorboard package is not installed."""
    try:
        return TensorBoardLog(directory)
    except ImportError:
        warnings.warn(
            "--log tensorboard: the tensorboard package is not installed (pip install tensorboard); "
            "only metrics.csv is written",
            stacklevel=2,
        )
        return None


def results_table(output_dir: str) -> str:
    """Where a run's row goes: ``results.csv`` beside the run directory."""
    return os.path.join(os.path.dirname(os.path.abspath(output_dir)), "results.csv")


def append_results_row(
    path: str, summary: dict, *, name: str, dataset: str, model: str, output_dir: str, unless_present: bool = False
) -> bool:
    """Append one row for a run to ``results.csv``: the mean and sample standard deviation (ddof=1) of each test
    metric over the seeds; the std is left empty for a single seed. The file is only ever appended to, under an
    exclusive lock (two runs finishing at once write one header and both rows, whole). A file whose header differs
    is left alone, and with ``unless_present`` a row equal to this one but for the date is not added again;
    returns whether the row was added."""
    protocol = summary["protocol"]
    metrics = summary["metrics"][protocol]
    several = len(summary["seeds"]) > 1
    row = [name, datetime.datetime.now().isoformat(timespec="seconds"), dataset, model, protocol]
    row.append(" ".join(map(str, summary["seeds"])))
    for m in METRICS:
        entry = metrics.get(m)
        row += ["", ""] if entry is None else [entry["mean"], entry["std"] if several else ""]
    row.append(output_dir)
    row = ["nan" if isinstance(v, float) and v != v else str(v) for v in row]
    with open(path, "a+", newline="") as f:
        lock(f)
        f.seek(0)
        rows = list(csv.reader(f))
        if rows and tuple(rows[0]) != RESULTS_COLUMNS:
            warnings.warn(
                f"{path} has other columns than this version writes; the run's row was not added", stacklevel=2
            )
            return False
        date = RESULTS_COLUMNS.index("date")
        if unless_present and any(r[:date] + r[date + 1 :] == row[:date] + row[date + 1 :] for r in rows[1:]):
            return False
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if not rows:
            writer.writerow(RESULTS_COLUMNS)
        writer.writerow(row)
        f.write(text.getvalue())  # one write, appended
        f.flush()
        os.fsync(f.fileno())
    return True


def lock(f) -> None:
    """Hold an exclusive lock on an open file until it is closed (where the system has ``flock``)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks through fcntl
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
