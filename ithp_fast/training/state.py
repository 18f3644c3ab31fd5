"""The progress of one seed's training: what a checkpoint's ``trainer_state.json`` holds beside the
optimiser and the schedule, and what ``--resume`` continues from.

The file is the JSON of :meth:`TrainState.to_dict` (plus ``optimizer`` and ``scheduler``, which
:mod:`.checkpoints` writes and reads). A file written by an earlier version lacks the fields added
since: they take their defaults, which is what that version's run had (no early stop, no skipped
step). A key this version does not know (a file of a later version, or edited by hand) is refused
with one line naming the file and the key, rather than dropped, so resuming never silently loses
progress a file records.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from .checkpoints import CheckpointError

COUNTERS = ("epoch", "step_in_epoch", "global_step", "epochs_without_improvement", "skipped_steps")


def empty_history() -> dict[str, list[dict]]:
    return {"steps": [], "epochs": []}


@dataclass
class TrainState:
    """Where one seed's training stands. Fields in the order ``trainer_state.json`` lists them."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # steps taken in the epoch under way (0 between epochs)
    global_step: int = 0  # steps taken, skipped ones included
    history: dict[str, list[dict]] = field(default_factory=empty_history)  # logged step windows; epoch records
    best: Optional[float] = None  # the best valid --select-metric so far
    best_epoch: Optional[int] = None  # the epoch (1-based) that reached it
    epochs_without_improvement: int = 0
    stopped: Optional[dict] = None  # {"epoch", "reason"} once --early-stop or a callback ended the seed
    train_seconds: float = 0.0
    skipped_steps: int = 0  # non-finite steps skipped under --skip-nonfinite-steps
    partial: Optional[dict] = None  # the running sums of an epoch that --stop-after-steps cut short
    finished: bool = False  # whether the seed's training had ended when the state was saved

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values; ``partial`` only while an epoch is cut short (as earlier versions wrote)."""
        values = dataclasses.asdict(self)
        if self.partial is None:
            del values["partial"]
        return values

    @classmethod
    def from_dict(cls, values: Mapping, where: str = "trainer_state.json") -> TrainState:
        """The state saved in ``values`` (``trainer_state.json`` without ``optimizer`` and ``scheduler``);
        ``where`` names the file in errors."""
        if not isinstance(values, Mapping):
            raise CheckpointError(f"{where}: expected a JSON object of training progress, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            raise CheckpointError(
                f"{where}: unknown keys {', '.join(map(repr, unknown))} (written by another version of ithp_fast?); "
                f"expected only {', '.join(sorted(known))}"
            )
        for name in COUNTERS:
            count = values.get(name, 0)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise CheckpointError(f"{where}: {name} is {count!r}, expected a whole number >= 0")
        history = values.get("history", empty_history())
        if not (isinstance(history, Mapping) and all(isinstance(history.get(k), list) for k in empty_history())):
            raise CheckpointError(f'{where}: history is not {{"steps": [...], "epochs": [...]}}')
        return cls(**values)
