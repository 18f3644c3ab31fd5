"""Names that changed keep working under their old spelling: ``impl`` (fast | reference), now the
``backend`` setting (auto | triton | torch | reference), in flags, keyword arguments, config files
and checkpoints written before; the serving wrappers' ``backend=``, now ``runtime=``, is covered
with the wrappers (test_inference.py, test_export.py)."""

import json
import os

import pytest
from helpers import TINY_TRAINING, as_flags

import ithp_fast
from ithp_fast.reference import ITHP as ReferenceITHP
from ithp_fast.tools.cli import main
from ithp_fast.training import checkpoints as ckpt
from ithp_fast.training.api import make_config
from ithp_fast.training.loop import check_resume

TINY = {**TINY_TRAINING, "max_steps": 1, "epochs": 1}


@pytest.mark.parametrize("old, new", [("fast", "auto"), ("reference", "reference")])
def test_impl_setting_is_the_backend(tmp_path, old, new):
    assert make_config({"impl": old}).backend == new
    assert make_config(None, impl=old).backend == new  # ithp_fast.train(..., impl=...)
    path = tmp_path / "old.yaml"
    path.write_text(f"impl: {old}\nepochs: 2\n")
    assert make_config(path).backend == new
    assert make_config(path, backend="torch").backend == "torch"  # today's name overrides the file's old one


def test_old_and_new_names_that_disagree_are_one_error():
    with pytest.raises(ValueError, match="impl='fast' \\(the old name of backend\\) and backend='reference' disagree"):
        make_config({"impl": "fast", "backend": "reference"})
    with pytest.raises(ValueError, match="impl \\(the old name of backend\\): expected fast or reference, got 'slow'"):
        make_config({"impl": "slow"})
    with pytest.raises(ValueError, match="--backend: expected one of auto, triton, torch, reference, got 'fast'"):
        make_config({"backend": "fast"}).validate()


def old_checkpoint(directory: str) -> None:
    """Rewrite a checkpoint as written before ``backend`` (``impl`` in config.json and training.json),
    with its manifest."""
    for name in (ckpt.CONFIG_FILE, ckpt.RUN_FILE):
        path = os.path.join(directory, name)
        values = json.loads(open(path).read())
        for entry in (values, values.get("run", {})):
            if "backend" in entry:
                entry["impl"] = "reference" if entry.pop("backend") == "reference" else "fast"
        ckpt.write_json(path, values)
    ckpt.write_manifest(directory)


def test_flag_and_checkpoints_written_before(tmp_path, capsys):
    out = tmp_path / "run"
    flags = [*as_flags(TINY), "--synthetic-sizes", "8", "4", "4"]
    assert main(["train", "--impl", "reference", "--output-dir", str(out), *flags]) == 0
    written = json.loads((out / "train_config.json").read_text())
    assert written["backend"] == "reference" and "impl" not in written
    directory = str(out / "seed-1" / "checkpoint-last")
    saved_run = {k: v for k, v in ckpt.load_config(directory)["run"].items() if k != "seed"}
    old_checkpoint(directory)
    assert ckpt.load_config(directory)["impl"] == ckpt.load_config(directory)["model"]["impl"] == "reference"
    assert type(ithp_fast.load_checkpoint(directory).ithp) is ReferenceITHP  # the run's own, read from "impl"
    assert type(ithp_fast.load_checkpoint(directory, impl="fast").ithp) is ithp_fast.ITHP
    assert ithp_fast.load_checkpoint(directory, backend="torch").ithp.backend == "torch"
    with pytest.raises(ValueError, match="impl='fast' \\(the old name of backend\\) and backend='torch' disagree"):
        ithp_fast.load_checkpoint(directory, backend="torch", impl="fast")
    old_run = ckpt.load_config(directory)["run"]
    check_resume(old_run, make_config(saved_run), directory)  # resuming an old run with today's name: no difference
    with pytest.raises(ValueError, match="backend: saved 'reference', now 'auto'"):
        check_resume(old_run, make_config({**saved_run, "backend": "auto"}), directory)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", directory, "--impl", "fast", "--output-dir", str(tmp_path / "e")]) == 0
    report = ithp_fast.evaluate(directory, impl="reference", output_dir=str(tmp_path / "e2"))
    assert report["split"] == "test"


def test_model_config_reads_impl_and_writes_backend():
    from ithp_fast import ITHPDebertaConfig

    for old, new in (("fast", "auto"), ("reference", "reference")):
        config = ITHPDebertaConfig(impl=old)  # config.json files written before backend hold impl
        assert config.backend == new and "impl" not in config.to_dict()
        assert ITHPDebertaConfig.from_dict({**config.to_dict(), "backend": None, "impl": old}).backend == new
    assert ITHPDebertaConfig(backend="torch").backend == "torch"
    with pytest.raises(ValueError, match="impl='fast' \\(the old name of backend\\) and backend='torch' disagree"):
        ITHPDebertaConfig(backend="torch", impl="fast")
