"""``abs-ray``: one CLI path from each job's config dataclass (jsonargparse), one vocabulary.

Each command's options are its config's fields: ``--help`` shows every default, a YAML file
given with ``--config`` is the same as the same flags, unknown keys and the old (pre-0.x)
flag names are refused, and a bad value ends the process before any work.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from abs_ray.cli import COMMANDS
from abs_ray.cli import audit as audit_cli
from abs_ray.cli import label as label_cli
from abs_ray.cli import pipeline as pipeline_cli
from abs_ray.cli import serve as serve_cli
from abs_ray.cli import train as train_cli
from abs_ray.cli import train_detector as detector_cli
from abs_ray.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
#: (module, the options every run of it needs)
CLIS = {
    "pipeline": (pipeline_cli, []),
    "train": (train_cli, ["--data", "runs/demo"]),
    "train-detector": (detector_cli, ["--data", "data/demo"]),
    "label": (label_cli, ["--data", "data/demo", "--labels", "l.csv"]),
    "serve": (serve_cli, []),
    "audit": (audit_cli, ["--data", "runs/demo", "--model", "m.pt", "--out", "runs/audit"]),
}


def _help(module) -> str:
    return module.get_args_parser().format_help()


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("train", ["--epochs EPOCHS", "default: 50", "--freeze_backbone", "SGD learning rate"]),
        ("pipeline", ["--detector.epochs", "--train.epochs", "--detector.backbone", "default: 5"]),
        ("train-detector", ["--backbone BACKBONE", "default: efficientnet_lite0", "--labels"]),
        ("label", ["--detector.freeze_backbone", "--detector_checkpoint", "default: 8000"]),
        ("serve", ["--detector_checkpoint", "--mask_source", "default: telea"]),
        ("audit", ["--model MODEL", "--n_boot N_BOOT", "default: 1000", "--in_process"]),
    ],
)
def test_help_lists_every_option_with_its_default(name, lines):
    text = _help(CLIS[name][0])
    for line in [*lines, "--config CONFIG", "--log-level", "-q", "-v"]:
        assert line in text, f"{line!r} not in {name} --help"


def test_every_field_is_an_option_with_help():
    """A new field is one line: it appears in --help with its docstring text."""
    import dataclasses

    from abs_ray.train import TrainConfig

    text = " ".join(_help(train_cli).split())
    for f in dataclasses.fields(TrainConfig):
        assert f"--{f.name} " in text, f.name
    assert "logged composite grid" in text  # sample_grid's text from the Attributes section


@pytest.mark.parametrize(
    ("name", "flags", "yaml_text"),
    [
        (
            "pipeline",
            ["--detector.epochs", "7", "--train.epochs", "3", "--stages", "detector,disentangle",
             "--inpaint.max_size", "4", "--inpainter_kwargs", '{"dilate": 3}'],
            "detector: {epochs: 7}\ntrain: {epochs: 3}\nstages: [detector, disentangle]\n"
            "inpaint: {max_size: 4}\ninpainter_kwargs: {dilate: 3}\n",
        ),
        (
            "train",
            ["--data", "runs/x", "--epochs", "4", "--crop_scale", "[0.5, 0.9]",
             "--freeze_backbone", "true"],
            "data: runs/x\nepochs: 4\ncrop_scale: [0.5, 0.9]\nfreeze_backbone: true\n",
        ),
        (
            "train-detector",
            ["--data", "d", "--backbone", "test_tiny", "--weights", "null",
             "--augment.max_shift_patches", "2"],
            "data: d\nbackbone: test_tiny\nweights: null\naugment: {max_shift_patches: 2}\n",
        ),
        (
            "label",
            ["--data", "d", "--labels", "l.csv", "--detector.backbone", "test_tiny",
             "--detector.image_size", "64", "--grid", "8"],
            "data: d\nlabels: l.csv\ndetector: {backbone: test_tiny, image_size: 64}\ngrid: 8\n",
        ),
        ("serve", ["--inpainter", "gray", "--scale", "[0.6, 1.2]"], "inpainter: gray\nscale: [0.6, 1.2]\n"),
        (
            "audit",
            ["--data", "runs/demo", "--model", "m.pt", "--out", "runs/audit", "--splits", "[val]",
             "--seed", "3"],
            "data: runs/demo\nmodel: m.pt\nout: runs/audit\nsplits: [val]\nseed: 3\n",
        ),
    ],
)  # fmt: skip
def test_a_config_file_equals_the_same_flags(tmp_path, name, flags, yaml_text):
    module, _ = CLIS[name]
    from_flags = module.config_from_args(module.get_args_parser().parse_args(flags))
    path = tmp_path / "run.yaml"
    path.write_text(yaml_text)
    from_file = module.config_from_args(
        module.get_args_parser().parse_args(["--config", str(path)])
    )
    assert from_file == from_flags
    default = module.config_from_args(module.get_args_parser().parse_args(CLIS[name][1]))
    assert from_file != default


def test_flags_after_the_config_file_win(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: runs/x\nepochs: 4\n")
    args = train_cli.get_args_parser().parse_args(["--config", str(path), "--epochs", "9"])
    assert train_cli.config_from_args(args).epochs == 9


@pytest.mark.parametrize("name", sorted(CLIS))
def test_an_unknown_key_in_the_config_file_is_refused(tmp_path, name):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"no_such_setting": 1}))
    module, required = CLIS[name]
    with pytest.raises(Exception, match="no_such_setting"):
        module.get_args_parser().parse_args([*required, "--config", str(path)])


@pytest.mark.parametrize(
    ("name", "old"),
    [
        ("pipeline", ["--unfreeze-backbone"]),
        ("pipeline", ["--train-backbone", "resnet18"]),
        ("pipeline", ["--train-epochs", "3"]),
        ("pipeline", ["--detector", "test_tiny"]),
        ("pipeline", ["--epochs", "3"]),
        ("pipeline", ["--labels", "l.csv"]),
        ("pipeline", ["--inpaint-pool", "1,1"]),
        ("train", ["--freeze-backbone"]),
        ("train", ["--batch-size", "8"]),
        ("train-detector", ["--labels-csv", "l.csv"]),
        ("train-detector", ["--detector", "test_tiny"]),
        ("label", ["--train-detector", "test_tiny"]),
        ("label", ["--unfreeze-backbone"]),
    ],
)
def test_old_flag_names_are_refused(name, old):
    module, required = CLIS[name]
    with pytest.raises(Exception, match="unrecognized|expected one argument|Unable to load config"):
        module.get_args_parser().parse_args([*required, *old])


def test_values_and_names_are_checked_when_the_config_is_built():
    parse = pipeline_cli.get_args_parser().parse_args
    with pytest.raises(ConfigError, match="unknown detector 'vit'"):
        pipeline_cli.config_from_args(parse(["--detector.backbone", "vit"]))
    with pytest.raises(ConfigError, match="unknown classifier 'vit'"):
        pipeline_cli.config_from_args(parse(["--train.backbone", "vit"]))
    with pytest.raises(ConfigError, match="inpainter"):
        pipeline_cli.config_from_args(parse(["--inpainter", "nope"]))
    with pytest.raises(ConfigError, match="--detector.epochs: detector training settings"):
        pipeline_cli.config_from_args(parse(["--mask_source", "truth", "--detector.epochs", "3"]))


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_abs_ray_help_lists_the_commands():
    script = Path(sys.executable).parent / "abs-ray"
    assert script.is_file(), "the abs-ray console script: run `pip install -e .` (make install)"
    proc = _run(str(script), "--help")
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert f"  {name} " in proc.stdout
    assert set(COMMANDS) == {"pipeline", "train", "train-detector", "label", "serve", "audit"}
    proc = _run(str(script), "frobnicate")
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr


def test_the_console_script_and_the_job_file_are_one_command():
    """A bad value: one typed line and status 1 from both, before any work; a bad flag: 2."""
    script = str(Path(sys.executable).parent / "abs-ray")
    for argv in (
        [script, "train-detector"],
        [sys.executable, "jobs/train_detector.py"],
    ):
        proc = _run(*argv, "--data", "d", "--grid", "5")
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == (
            "error: ConfigError: patch grid 5 must divide image size 224"
        )
        proc = _run(*argv, "--data", "d", "--labels-csv", "x")
        assert proc.returncode == 2 and "unrecognized arguments: --labels-csv" in proc.stderr
    proc = _run(script, "pipeline", "--data", "d", "--detector.backbone", "vit")
    assert proc.returncode == 1 and "unknown detector 'vit'" in proc.stderr
    assert "Ray:" not in proc.stderr  # refused before Ray started
