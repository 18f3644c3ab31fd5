"""Checkpoint files: a crash at any step of a save leaves a complete checkpoint to continue from,
every file is checked against its SHA-256, damaged or foreign files give one line naming them,
and a loaded checkpoint answers the same way twice."""

import itertools
import json
import os
import re
import shutil

import pytest
import torch
from helpers import TINY_TRAINING, as_flags
from safetensors.torch import load_file, save_file
from torch import nn

import ithp_fast
from ithp_fast.tools.cli import main
from ithp_fast.training import checkpoints as ckpt
from ithp_fast.training.api import train
from ithp_fast.training.config import TrainConfig

TINY = TINY_TRAINING
TINY_FLAGS = as_flags(TINY_TRAINING)


class Crash(Exception):
    """Stands for the process dying at one step of a save."""


class CrashAt:
    """Counts the file-system steps of a save and raises :class:`Crash` at step ``k`` (before it happens;
    a file write that crashes leaves half a file behind)."""

    def __init__(self, monkeypatch, k=None):
        self.k, self.count, self.names = k, 0, []
        for module, name in ((os, "replace"), (os, "makedirs"), (shutil, "rmtree"), (ckpt, "sync_to_disk")):
            monkeypatch.setattr(module, name, self.step(f"{module.__name__}.{name}", getattr(module, name)))
        monkeypatch.setattr(ckpt, "save_file", self.step("save_file", ckpt.save_file, half_written=True))

    def step(self, name, fn, half_written=False):
        def wrapped(*args, **kwargs):
            self.names.append((name, os.path.basename(str(args[-1]))))
            self.count += 1
            if self.count - 1 == self.k:
                if half_written:
                    fn(*args, **kwargs)
                    path = args[1]
                    with open(path, "r+b") as f:
                        f.truncate(os.path.getsize(path) // 2)
                raise Crash(name)
            return fn(*args, **kwargs)

        return wrapped


def small_model(value):
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def save(directory, value):
    model = small_model(value)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    ckpt.save_checkpoint(
        str(directory),
        model,
        {"model": {"value": value}},
        optimizer=optimizer,
        state={"value": value},
        save_tokenizer=lambda d: open(os.path.join(d, "vocab.json"), "w").write("{}"),
    )


def saved_value(directory):
    return round(load_file(os.path.join(directory, ckpt.MODEL_FILE))["0.weight"].flatten()[0].item(), 2)


def test_a_crash_at_every_step_of_a_save_leaves_the_old_or_the_new_checkpoint(tmp_path, monkeypatch):
    with pytest.MonkeyPatch.context() as mp:
        counter = CrashAt(mp)
        save(tmp_path / "count" / "checkpoint-last", 1.0)
        save(tmp_path / "count" / "checkpoint-last", 2.0)
        steps = counter.count // 2  # steps of one save over an existing checkpoint
    second = counter.names[steps:]
    manifest_written = second.index(("os.replace", ckpt.MANIFEST_FILE))
    assert steps >= 10 and manifest_written < steps - 3, second
    outcomes = []
    for k in range(steps):
        directory = tmp_path / f"crash-{k}" / "checkpoint-last"
        save(directory, 1.0)
        with pytest.MonkeyPatch.context() as mp:
            CrashAt(mp, k)
            with pytest.raises(Crash):
                save(directory, 2.0)
        assert ckpt.recover(str(directory)) == str(directory), k
        assert os.listdir(directory.parent) == ["checkpoint-last"], (k, os.listdir(directory.parent))
        assert ckpt.checkpoint_problem(str(directory)) is None
        outcomes.append(saved_value(directory))
        save(directory, 3.0)  # and saving goes on from there
        assert saved_value(directory) == 3.0
    # the old checkpoint until the new one is complete (its manifest written), the new one after: never neither
    assert outcomes == [1.0] * (manifest_written + 1) + [2.0] * (steps - manifest_written - 1), (outcomes, second)


def test_a_crash_during_the_first_save_leaves_nothing_to_resume(tmp_path, monkeypatch):
    directory = tmp_path / "checkpoint-last"
    CrashAt(monkeypatch, 3)
    with pytest.raises(Crash):
        save(directory, 1.0)
    monkeypatch.undo()
    assert ckpt.recover(str(directory)) is None and os.listdir(tmp_path) == []


def test_recover_never_deletes_a_damaged_checkpoint_or_guesses(tmp_path):
    directory = tmp_path / "checkpoint-last"
    save(tmp_path / "elsewhere", 1.0)
    save(directory, 2.0)
    os.replace(tmp_path / "elsewhere", str(directory) + ".old")  # as a crash before the old copy's removal
    flip_a_byte(directory / ckpt.MODEL_FILE)
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors: its SHA-256 differs"):
        ckpt.recover(str(directory))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-last", "checkpoint-last.old"]  # both kept


COPIES = {".tmp": 3.0, "": 2.0, ".old": 1.0}  # the copies a save can leave, newest first, with their values
STATES = list(itertools.product(("absent", "incomplete", "complete"), repeat=3))  # of DIR.tmp, DIR, DIR.old


def expected_recovery(state):
    """What recovery must do from ``state``: "error" (nothing guessed, nothing touched), None (nothing to resume) or the
    value of the newest complete copy, then the only copy left, at DIR."""
    kinds = dict(zip(COPIES, state))
    complete = [value for suffix, value in COPIES.items() if kinds[suffix] == "complete"]
    if not complete:
        return "error" if "incomplete" in (kinds[""], kinds[".old"]) else None
    if complete[0] == COPIES[".old"] and kinds[""] != "absent":
        return "error"  # a damaged DIR and only an older copy: which one to continue from is not guessed
    return complete[0]


def make_copies(directory, state, scratch):
    for (suffix, value), kind in zip(COPIES.items(), state):
        path = str(directory) + suffix
        if kind == "absent":
            continue
        save(scratch / suffix.lstrip(".") / "copy", value)  # saved apart: a save next to the others recovers them
        os.replace(scratch / suffix.lstrip(".") / "copy", path)
        if kind == "incomplete":  # a save cut short (no manifest yet, half a file), or a copy damaged since
            model = os.path.join(path, ckpt.MODEL_FILE)
            os.truncate(model, os.path.getsize(model) // 2)
            if suffix == ".tmp":
                os.remove(os.path.join(path, ckpt.MANIFEST_FILE))


def contents(folder):
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(folder)
        for name in names
    }


@pytest.mark.parametrize("state", STATES, ids=["tmp-{}_dir-{}_old-{}".format(*s) for s in STATES])
def test_recovery_puts_back_the_newest_complete_copy_from_every_state(tmp_path, state):
    """Every combination of DIR.tmp, DIR and DIR.old, each absent, incomplete or complete: the newest complete copy
    ends up at DIR (a lone complete DIR.old included), and a complete copy is never deleted unless a newer one
    replaces it."""
    directory = tmp_path / "run" / "checkpoint-last"
    directory.parent.mkdir()
    make_copies(directory, state, tmp_path / "scratch")
    tmp_path = directory.parent
    before, expected = contents(tmp_path), expected_recovery(state)
    if expected == "error":
        with pytest.raises(ckpt.CheckpointError, match=str(tmp_path)):
            ckpt.recover(str(directory))
        assert contents(tmp_path) == before  # nothing moved, nothing deleted
    elif expected is None:
        assert ckpt.recover(str(directory)) is None and os.listdir(tmp_path) == []
    else:
        assert ckpt.recover(str(directory)) == str(directory)
        assert os.listdir(tmp_path) == ["checkpoint-last"] and ckpt.checkpoint_problem(str(directory)) is None
        assert saved_value(directory) == expected
        assert ckpt.recover(str(directory)) == str(directory) and saved_value(directory) == expected  # and stays


def test_leftovers_of_an_earlier_version_are_not_guessed_at(tmp_path):
    directory = tmp_path / "checkpoint-last"
    for suffix, value in ((".old", 1.0), (".tmp", 2.0)):
        save(str(directory) + suffix, value)
        os.remove(os.path.join(str(directory) + suffix, ckpt.MANIFEST_FILE))
        config = os.path.join(str(directory) + suffix, ckpt.CONFIG_FILE)
        json.dump({"format": ckpt.LEGACY_FORMAT, "value": value}, open(config, "w"))  # as format 1 wrote it
    with pytest.raises(ckpt.CheckpointError, match="interrupted save of an earlier version"):
        ckpt.recover(str(directory))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-last.old", "checkpoint-last.tmp"]


def test_signing_a_directory_again_lists_its_files_not_its_old_manifest(tmp_path):
    directory = tmp_path / "checkpoint-last"
    save(directory, 1.0)
    (directory / "sub").mkdir()
    (directory / "sub" / ckpt.MANIFEST_FILE).write_text("{}")  # a file of that name below the top is a file
    (directory / "vocab.json").write_text('{"a": 1}')  # a file changed after the save, then signed again
    ckpt.write_manifest(str(directory))
    ckpt.write_manifest(str(directory))
    assert ckpt.checkpoint_problem(str(directory)) is None
    listed = set(json.loads((directory / ckpt.MANIFEST_FILE).read_text())["files"])
    assert ckpt.MANIFEST_FILE not in listed and os.path.join("sub", ckpt.MANIFEST_FILE) in listed
    assert listed == {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()} - {ckpt.MANIFEST_FILE}


def flip_a_byte(path, offset=-5):
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0x01
    open(path, "wb").write(bytes(data))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    train(TrainConfig(output_dir=str(out), synthetic_sizes=(16, 8, 8), epochs=1, lr=1e-3, **TINY))
    return out / "seed-1" / "checkpoint-last"


@pytest.fixture
def checkpoint(trained, tmp_path):
    copy = tmp_path / "run" / "seed-1" / "checkpoint-last"
    shutil.copytree(trained, copy)
    return copy


def one_line_error(capsys, argv, code=2):
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith(f"ithp-fast {argv[0]}: error: ")]
    assert len(errors) == 1 and "Traceback" not in err and "train loss" not in err, err
    return errors[0]


def resume_argv(run):
    return ["train", "--resume", "--output-dir", str(run), "--synthetic-sizes", "16", "8", "8", "--epochs", "2",
            "--lr", "1e-3", *TINY_FLAGS]


@pytest.fixture
def run_checkpoint(trained, tmp_path):
    """A copy of the whole trained run and its seed's checkpoint-last: ``(run, checkpoint)``."""
    run = tmp_path / "run"
    shutil.copytree(trained.parent.parent, run)
    return run, run / "seed-1" / "checkpoint-last"


@pytest.mark.parametrize("name", [ckpt.MODEL_FILE, ckpt.CONFIG_FILE, ckpt.RUN_FILE, "tokenizer.json"])
def test_a_flipped_byte_is_one_line_naming_the_file(checkpoint, capsys, name):
    flip_a_byte(checkpoint / name, offset=len(open(checkpoint / name, "rb").read()) // 2)
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(checkpoint)])
    assert str(checkpoint / name) in err and "SHA-256 differs" in err


def test_truncated_files_are_named(checkpoint, capsys):
    path = checkpoint / ckpt.MODEL_FILE
    os.truncate(path, os.path.getsize(path) - 100)
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(checkpoint)])
    assert str(path) in err and "truncated" in err


@pytest.mark.parametrize(
    "name, content, problem",
    [
        (ckpt.MODEL_FILE, b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header", "not a readable safetensors file"),
        (ckpt.CONFIG_FILE, b"\x89PNG\r\n", "not a readable JSON file"),
        (ckpt.CONFIG_FILE, b'{"format": "something-else"}', "format 'something-else'"),
    ],
)
def test_foreign_files_without_a_manifest_are_named(checkpoint, capsys, name, content, problem):
    os.remove(checkpoint / ckpt.MANIFEST_FILE)  # nothing to compare with: the content itself is checked
    (checkpoint / name).write_bytes(content)
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(checkpoint)])
    assert str(checkpoint / name) in err and problem in err


@pytest.mark.parametrize("legacy", [False, True], ids=["manifest-removed", "earlier-version"])
def test_a_checkpoint_without_a_manifest_is_said_unverified_and_resume_refuses_it(
    run_checkpoint, tmp_path, capsys, legacy
):
    run, checkpoint = run_checkpoint
    os.remove(checkpoint / ckpt.MANIFEST_FILE)
    if legacy:
        config = json.loads((checkpoint / ckpt.CONFIG_FILE).read_text())
        (checkpoint / ckpt.CONFIG_FILE).write_text(json.dumps({**config, "format": ckpt.LEGACY_FORMAT}))
    flip_a_byte(checkpoint / ckpt.MODEL_FILE, offset=-5)  # nothing can tell: the one line says so
    why = (
        "it was written by an earlier version, before checksums were kept (no manifest.json)"
        if legacy
        else "its manifest.json is missing"
    )
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--output-dir", str(tmp_path / "eval")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warned == [f"ithp-fast evaluate: warning: {checkpoint}: unverified checkpoint: {why}"
                      ", so its files cannot be checked against what was saved"]
    with pytest.warns(ckpt.UnverifiedCheckpointWarning, match=re.escape(f"{checkpoint}: unverified checkpoint: {why}")):
        ithp_fast.load_checkpoint(checkpoint)
    before = contents(run)
    err = one_line_error(capsys, resume_argv(run))
    assert f"{checkpoint}: unverified checkpoint" in err and "--resume-unverified" in err
    assert contents(run) == before  # nothing trained, nothing written
    assert main([*resume_argv(run), "--resume-unverified"]) == 0
    out = capsys.readouterr().err
    assert len([line for line in out.splitlines() if "warning" in line and "unverified" in line]) == 1
    assert json.loads((checkpoint / ckpt.STATE_FILE).read_text())["epoch"] == 2  # continued, and saved verified
    assert (checkpoint / ckpt.MANIFEST_FILE).is_file()


def good_manifest(checkpoint):
    return json.loads((checkpoint / ckpt.MANIFEST_FILE).read_text())


def entry(path):
    return {"bytes": os.path.getsize(path), "sha256": ckpt.sha256_of(path)}


MANIFESTS = {
    "a list": lambda m, c: [],
    "files a list": lambda m, c: {**m, "files": list(m["files"])},
    "no files": lambda m, c: {"format": m["format"]},
    "another format": lambda m, c: {**m, "format": "ithp_fast-checkpoint-9"},
    "an entry a list": lambda m, c: {**m, "files": {**m["files"], ckpt.MODEL_FILE: [1, 2]}},
    "no sha256": lambda m, c: {**m, "files": {**m["files"], ckpt.MODEL_FILE: {"bytes": 3}}},
    "bytes a string": lambda m, c: {**m, "files": {**m["files"], ckpt.MODEL_FILE: {**m["files"][ckpt.MODEL_FILE],
                                                                                  "bytes": "3"}}},
    "sha256 not hex": lambda m, c: {**m, "files": {**m["files"], ckpt.MODEL_FILE: {"bytes": 3, "sha256": "zz"}}},
    "model not listed": lambda m, c: {**m, "files": {k: v for k, v in m["files"].items() if k != ckpt.MODEL_FILE}},
    "../x": lambda m, c: {**m, "files": {**m["files"], "../../outside.txt": entry(c.parent.parent / "outside.txt")}},
    "/etc/hostname": lambda m, c: {**m, "files": {**m["files"], "/etc/hostname": entry("/etc/hostname")}},
    "a link out": lambda m, c: {**m, "files": {**m["files"], "tokenizer.json": entry(c.parent.parent / "outside.txt")}},
}


@pytest.mark.parametrize("variant", list(MANIFESTS))
def test_a_manifest_of_the_wrong_shape_is_one_line_naming_it_and_nothing_outside_is_read(
    run_checkpoint, capsys, monkeypatch, variant
):
    if variant == "/etc/hostname" and not os.path.isfile("/etc/hostname"):
        pytest.skip("no /etc/hostname here")
    run, checkpoint = run_checkpoint
    (run / "outside.txt").write_text("not part of the checkpoint")
    if variant == "a link out":
        os.remove(checkpoint / "tokenizer.json")
        os.symlink(run / "outside.txt", checkpoint / "tokenizer.json")
    manifest = checkpoint / ckpt.MANIFEST_FILE
    manifest.write_text(json.dumps(MANIFESTS[variant](good_manifest(checkpoint), checkpoint)))
    hashed, sha256_of = [], ckpt.sha256_of
    monkeypatch.setattr(ckpt, "sha256_of", lambda path: (hashed.append(os.path.realpath(path)), sha256_of(path))[1])
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(checkpoint)])
    assert err.startswith(f"ithp-fast evaluate: error: {manifest}: not a checkpoint manifest (")
    with pytest.raises(ckpt.CheckpointError, match=f"^{manifest}: not a checkpoint manifest"):
        ithp_fast.load_checkpoint(checkpoint)
    before = contents(run)
    assert f"{manifest}: not a checkpoint manifest" in one_line_error(capsys, resume_argv(run))
    assert contents(run) == before
    assert all(path.startswith(os.path.realpath(checkpoint) + os.sep) for path in hashed), hashed


def test_a_file_in_place_of_checkpoint_last_is_named_and_nothing_trains(run_checkpoint, capsys):
    run, checkpoint = run_checkpoint
    shutil.rmtree(checkpoint)
    checkpoint.write_text("not a checkpoint")
    before = contents(run)
    err = one_line_error(capsys, resume_argv(run))
    assert err == (f"ithp-fast train: error: {checkpoint}: a file where a checkpoint directory was expected; "
                   "move it away and run again")
    assert contents(run) == before


def test_resume_continues_from_a_lone_complete_old_copy(run_checkpoint, capsys):
    run, checkpoint = run_checkpoint
    os.replace(checkpoint, str(checkpoint) + ".old")  # as a crash between the renames, its DIR.tmp lost
    capsys.readouterr()
    assert main(resume_argv(run)) == 0
    assert f"resuming from {checkpoint} at step" in capsys.readouterr().err
    assert sorted(os.listdir(checkpoint.parent))[:1] == ["checkpoint-last"] and not os.path.exists(f"{checkpoint}.old")
    assert json.loads((checkpoint / ckpt.STATE_FILE).read_text())["epoch"] == 2


@pytest.mark.parametrize("name", [ckpt.STATE_FILE, ckpt.OPTIMIZER_FILE])
def test_resume_without_training_state_is_an_error_not_a_restart(checkpoint, capsys, name):
    run = checkpoint.parent.parent
    os.remove(checkpoint / name)
    err = one_line_error(capsys, resume_argv(run))
    assert str(checkpoint / name) in err and "missing" in err
    manifest = json.loads((checkpoint / ckpt.MANIFEST_FILE).read_text())
    del manifest["files"][name]
    (checkpoint / ckpt.MANIFEST_FILE).write_text(json.dumps(manifest))
    err = one_line_error(capsys, resume_argv(run))
    assert str(checkpoint / name) in err and "cannot be resumed" in err
    assert (checkpoint / ckpt.MODEL_FILE).is_file()  # nothing was deleted


def test_a_run_directory_is_not_a_checkpoint(checkpoint, capsys):
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(checkpoint.parent.parent)])
    assert "not a checkpoint" in err and "seed-1/checkpoint-last" in err


def test_evaluate_writes_beside_the_checkpoint_or_where_asked(checkpoint, capsys, tmp_path):
    assert main(["evaluate", "--checkpoint", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "eval_sampling=sample" in out  # the training run's, said
    assert (checkpoint.parent / "eval-checkpoint-last" / "test-sample.json").is_file()
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--output-dir",
                str(tmp_path / "mine"),
                "--eval-sampling",
                "mean",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "mine" / "test-mean.json").read_text())["eval_sampling"] == "mean"
    err = one_line_error(capsys, ["evaluate", "--checkpoint", str(checkpoint), "--output-dir", str(checkpoint / "x")])
    assert "--output-dir" in err and "inside a checkpoint" in err
    assert not (checkpoint / "x").exists()


def test_load_checkpoint_answers_the_same_way_twice(trained):
    model = ithp_fast.load_checkpoint(trained)
    assert isinstance(model, ithp_fast.ITHPDeberta) and not model.training
    assert model.ithp.eval_sampling == "mean"
    ids = torch.randint(4, 40, (3, 12))
    visual, acoustic = torch.rand(3, 12, 47), torch.rand(3, 12, 74)
    first = model(ids, visual, acoustic).logits
    assert torch.equal(model(ids, visual, acoustic).logits, first)
    sampled = ithp_fast.load_checkpoint(trained, eval_sampling="sample")
    torch.manual_seed(0)
    a = sampled(ids, visual, acoustic).logits
    assert not torch.equal(sampled(ids, visual, acoustic).logits, a)  # the released evaluation draws the latent


def test_load_checkpoint_names_the_first_mismatching_shape(checkpoint):
    tensors = load_file(checkpoint / ckpt.MODEL_FILE)
    first = next(iter(tensors))
    tensors = {k: (torch.zeros(3, 3) if k == first else v) for k, v in tensors.items()}
    save_file(tensors, checkpoint / ckpt.MODEL_FILE)
    os.remove(checkpoint / ckpt.MANIFEST_FILE)
    with pytest.raises(ckpt.CheckpointError, match=rf"{first} has shape \(3, 3\) in the checkpoint but \("):
        with pytest.warns(ckpt.UnverifiedCheckpointWarning):
            ithp_fast.load_checkpoint(checkpoint)
