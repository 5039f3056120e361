"""The command line as a new user meets it: help for every option, one line per error, the
documented exit codes (0 done, 1 some inputs failed, 2 usage or configuration), no traceback.

Most checks run ``cli.main`` in-process (fast); two subprocess runs prove that nothing reaches a
real terminal's stderr but the one line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from apexmusic import cli
from apexmusic.choices import LABEL_PRESETS, LOSSES, TRAIN_PRECISIONS
from apexmusic.encoders import available_encoders

ROOT = Path(__file__).resolve().parents[1]
SONG = ROOT.parent / "shared" / "data" / "real-audio" / "yue_01_en.mp3"


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """(argv prefix, parser) for every command and nested command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subcommands(sub, (*prefix, name))


COMMANDS = dict(_subcommands(cli._build_parser()))


def run(argv: list[str], capsys) -> tuple[int, str, list[str]]:
    """Exit code, stdout and the non-empty stderr lines of ``apexmusic ARGV``."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def assert_one_error_line(code: int, err: list[str], expected_code: int = 2) -> None:
    assert code == expected_code, err
    assert len(err) == 1, err
    assert err[0].startswith("apexmusic"), err
    assert "Traceback" not in err[0]


def test_every_command_is_walked():
    assert {"embed", "train", "evaluate", "grid", "predict", "compare", "serve", "demo", "report"} <= {
        c[0] for c in COMMANDS
    }
    assert ("arena", "leaderboard") in COMMANDS and ("store", "repair") in COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=" ".join)
def test_help_describes_the_command_and_every_option(command, capsys):
    parser = COMMANDS[command]
    code, text, err = run([*command, "--help"], capsys)
    assert code == 0 and not err and text.startswith("usage: apexmusic")
    if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        assert parser.description, f"{' '.join(command)} has no description"
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
            continue
        assert action.help, f"{' '.join(command)} {action.option_strings or action.dest} has no help"
        line = formatter._get_help_string(action)
        assert "…" not in line and not line.rstrip(". ").endswith(".."), line
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in line, f"{action.option_strings}: {line!r} does not show its default"
        if getattr(action, "default_from", None):  # a config's default, read only for help
            assert "(default: " in line, line


def test_choices_come_from_the_library(capsys):
    from apexmusic.data import PRESETS
    from apexmusic.train import TrainConfig

    train = COMMANDS[("train",)]
    choices = {a.dest: a.choices for a in train._actions if a.choices}
    assert tuple(choices["loss"]) == LOSSES and tuple(choices["precision"]) == TRAIN_PRECISIONS
    assert set(LABEL_PRESETS) == {"auto", "songeval", *PRESETS}
    embed_help = COMMANDS[("embed",)].format_help()
    for name in available_encoders():  # the musicnn and -vgg encoders too
        assert name in embed_help
    help_lines = {a.dest: train._get_formatter()._get_help_string(a) for a in train._actions}
    assert f"(default: {TrainConfig().epochs})" in help_lines["epochs"]
    assert f"(default: {TrainConfig().loss})" in help_lines["loss"]


def test_building_the_parser_imports_no_torch():
    code = "import sys; from apexmusic import cli; cli._build_parser(); print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """Paths of every wrong kind: missing, a file, a folder, under a file, a symlink loop."""
    root = tmp_path_factory.mktemp("cli-paths")
    (root / "file.jsonl").write_text("")
    (root / "folder").mkdir()
    (root / "loop").symlink_to(root / "loop")
    return {
        "root": str(root),
        "missing": str(root / "missing"),
        "file": str(root / "file.jsonl"),
        "folder": str(root / "folder"),
        "under_file": str(root / "file.jsonl" / "sub"),
        "loop": str(root / "loop"),
    }


BAD_PATHS = ("missing", "file", "folder", "under_file", "loop")


def _bad_invocations(p: dict[str, str], model: str, store: str) -> list[list[str]]:
    r = p["root"]
    lines: list[list[str]] = []
    for kind in BAD_PATHS:
        x = p[kind]
        lines += [
            ["store", "repair", x],
            ["train", "--embeddings", x, "--labels", p["file"], "--out", f"{r}/t"],
            ["evaluate", "--model", x, "--embeddings", store, "--labels", p["file"], "--out", f"{r}/e"],
            ["grid", "--embeddings", x, "--labels", p["file"], "--out", f"{r}/g"],
            ["import-reference", x, f"{r}/imported"],
            ["predict", str(SONG), "--model", x, "--out", f"{r}/p.jsonl"],
            ["predict", "--embeddings", x, "--model", model, "--out", f"{r}/{kind}.jsonl"],
            ["compare", str(SONG), str(SONG), "--model", x],
            ["serve", "--model", x],
            ["arena", "eval", "--battles", x, "--out", f"{r}/a"],
            ["arena", "leaderboard", "--battles", x, "--out", f"{r}/l"],
            ["report", x],
        ]
    for kind in ("file", "under_file", "loop"):  # an output folder that cannot be one
        x = p[kind]
        lines += [
            ["embed", str(SONG), "--out", x],
            ["predict", "--embeddings", store, "--model", model, "--out", f"{x}/s.jsonl"],
            ["arena", "leaderboard", "--battles", p["missing"], "--out", x],
            ["report", model, "--out", f"{x}/r.html"],
            ["demo", "--out", x, "--songs", "120"],
        ]
    return lines


WRONG_VALUES = [
    ["embed", "x.mp3", "--out", "o", "--segment-seconds", "abc"],
    ["embed", "x.mp3", "--out", "o", "--encoder", "nope"],
    ["embed", "x.mp3", "--out", "o", "--precision", "fp8"],
    ["embed"],
    ["train", "--embeddings", "s", "--labels", "l", "--out", "o", "--epochs", "ten"],
    ["train", "--embeddings", "s", "--labels", "l", "--out", "o", "--loss", "nope"],
    ["predict", "x.mp3", "--model", "m", "--out", "o.jsonl", "--batch-size", "1.5"],
    ["serve", "--model", "m", "--port", "-5"],
    ["serve", "--model", "m", "--port", "http"],
    ["arena", "leaderboard", "--battles", "b", "--out", "o", "--subset", "nope"],
    ["demo", "--songs", "many"],
    ["nope"],
    ["--nope"],
]


@pytest.mark.parametrize("argv", WRONG_VALUES, ids=" ".join)
def test_a_wrong_value_is_one_usage_line(argv, capsys):
    code, _, err = run(argv, capsys)
    assert_one_error_line(code, err)
    assert "--help" in err[0]


def test_bad_paths_and_settings_are_one_line_each(paths, predict_model_dir, capsys):
    store = str(predict_model_dir.parent / "store")
    model = str(predict_model_dir)
    r = paths["root"]
    bad_settings = [
        ["embed", str(SONG), "--out", f"{r}/x", "--segment-seconds", "-1"],
        ["embed", str(SONG), "--out", f"{r}/x", "--batch-size", "0"],
        ["predict", str(SONG), "--model", model, "--out", f"{r}/o.txt"],
        ["predict", str(SONG), "--model", model, "--out", f"{r}/o.jsonl", "--mc-samples", "-1"],
        ["predict", "--model", model, "--out", f"{r}/o.jsonl"],
        ["demo", "--out", f"{r}/d", "--songs", "10"],
        ["demo", "--out", f"{r}/d", "--encoder", "handcrafted", "--compare-encoders", "nope"],
        ["arena", "eval", "--battles", store, "--out", f"{r}/a"],  # a folder of other tables
        ["arena", "leaderboard", "--battles", store, "--out", f"{r}/l"],
    ]
    for argv in _bad_invocations(paths, model, store) + bad_settings:
        code, _, err = run(argv, capsys)
        assert code == 2 and len(err) == 1, (argv, code, err)
        assert err[0].startswith("apexmusic") and "Traceback" not in err[0], (argv, err)


def test_unexpected_errors_are_one_line_with_the_traceback_at_vv(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli.report, "_cmd_report", broken)
    code, _, err = run(["report", "x"], capsys)
    assert_one_error_line(code, err)
    assert "internal error: ZeroDivisionError" in err[0] and "-vv" in err[0]


def test_predict_prints_each_failure_with_its_reason_and_names_only_files_that_exist(
    paths, predict_model_dir, capsys
):
    bad = Path(paths["root"]) / "not-audio.mp3"
    bad.write_bytes(b"not audio at all")
    out = Path(paths["root"]) / "scores.csv"
    argv = ["predict", str(bad), "--model", str(predict_model_dir), "--out", str(out)]
    code, stdout, err = run(argv, capsys)
    assert code == 1
    assert err[0] == f"apexmusic: failed not-audio ({bad}): decode: " + err[0].split(": decode: ", 1)[1]
    assert "not a decodable audio file" in err[0]
    assert len(err) == 2 and "1 songs failed; see" in err[1]
    named = err[1].split("see ", 1)[1]
    assert Path(named).is_file()
    assert str(out) not in stdout or out.exists()


def test_compare_heads_its_columns_with_the_file_names(predict_model_dir, capsys):
    other = SONG.parent / "acestep_saxphone_jazz.opus"
    code, out, err = run(["compare", str(SONG), str(other), "--model", str(predict_model_dir)], capsys)
    assert code == 0, err
    header = out.splitlines()[1].split()
    assert header == ["score", SONG.name, other.name]
    argv = ["compare", str(SONG), "/nonexistent/x.mp3", "--model", str(predict_model_dir)]
    code, _, err = run(argv, capsys)
    assert_one_error_line(code, err, expected_code=1)


@pytest.mark.parametrize(
    "argv",
    [
        ["embed", str(SONG), "--out", "__FILE__"],  # a file where the store folder should be
        ["serve", "--model", "/nonexistent/model"],
    ],
)
def test_no_traceback_reaches_the_terminal(argv, tmp_path):
    placeholder = tmp_path / "f"
    placeholder.touch()
    argv = [str(placeholder) if a == "__FILE__" else a for a in argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "apexmusic.cli", *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_text_outputs_round_floats_unless_full_precision(predict_model_dir, tmp_path, capsys):
    import csv

    from apexmusic.predict import score_store

    store = str(predict_model_dir.parent / "store")
    full = tmp_path / "full.csv"
    score_store(store, predict_model_dir, full, full_precision=True)
    base = ["predict", "--embeddings", store, "--model", str(predict_model_dir), "--out"]
    assert run([*base, str(tmp_path / "short.csv")], capsys)[0] == 0
    assert run([*base, str(tmp_path / "again.csv"), "--full-precision"], capsys)[0] == 0
    read = lambda p: list(csv.DictReader(p.open()))  # noqa: E731
    short, again, exact = read(tmp_path / "short.csv"), read(tmp_path / "again.csv"), read(full)
    assert again == exact
    for s_row, e_row in zip(short, exact, strict=True):
        for name in ("score_streams", "coherence", "naturalness"):
            digits = s_row[name].replace(".", "").replace("-", "").lstrip("0")
            assert len(digits) <= 6, s_row[name]
            assert float(s_row[name]) == pytest.approx(float(e_row[name]), rel=1e-5)


def test_leaderboard_names_the_systems_min_votes_hides(tmp_path, capsys):
    from apexmusic import arena

    battles_file = ROOT.parent / "shared" / "data" / "music_arena" / "battles_postcut_scored.csv"
    argv = [
        "arena",
        "leaderboard",
        "--battles",
        str(battles_file),
        "--out",
        str(tmp_path),
        "--bootstrap",
        "2",
    ]
    code, out, _ = run([*argv, "--min-votes", "200"], capsys)
    assert code in (0, 1)
    votes = arena.system_votes(
        arena.leaderboard_battles(arena.load_battles(battles_file), arena.LeaderboardConfig())
    )
    listed = {line.split()[1] for line in out.splitlines() if line[:3].strip().isdigit()}
    hidden_line = next(line for line in out.splitlines() if line.startswith("not listed"))
    expected = sorted((n for n, v in votes.items() if v < 200), key=lambda n: (-votes[n], n))
    assert listed == {n for n, v in votes.items() if v >= 200} and expected
    assert hidden_line.split(": ", 1)[1] == ", ".join(f"{n} ({votes[n]} votes)" for n in expected)


@pytest.mark.parametrize(
    ("source", "settings"),
    [
        ("apexmusic.train:TrainConfig", {"mixing": "nope"}),
        ("apexmusic.train:TrainConfig", {"shared": 4}),
        ("apexmusic.train:TrainConfig", {"weight_decay": -1.0}),
        ("apexmusic.train:TrainConfig", {"precision": "int8"}),
        ("apexmusic.demo:DemoConfig", {"encoder": "nope"}),
        ("apexmusic.demo:DemoConfig", {"val_fraction": 0.9}),
        ("apexmusic.demo:DemoConfig", {"arena_folds": 1}),
        ("apexmusic.distributed:RaySettings", {"concurrency": 0}),
        ("apexmusic.targets:PopularityConfig", {"min_cohort": 0}),
    ],
)
def test_configs_check_themselves_for_python_callers(source, settings):
    import importlib

    from apexmusic.errors import ConfigError

    module, name = source.split(":")
    config_class = getattr(importlib.import_module(module), name)
    config_class()  # the defaults are valid
    with pytest.raises(ConfigError):
        config_class(**settings)
