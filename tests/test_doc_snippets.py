"""Every README and docs snippet works as written: Python snippets run against a demo-like model
in a folder laid out as they assume, shell lines parse against the CLI's own parser, and the
encoder table lists exactly the encoders the CLI accepts."""

from __future__ import annotations

import ast
import builtins
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from apexmusic.cli import _build_parser
from apexmusic.encoders import available_encoders, load_encoder
from apexmusic.tasks import ALL_TASKS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)

# Snippets that cannot run here, with why; their imports still run and every name they use
# must be imported or assigned in the snippet, or be one of the inputs the text describes.
NOT_RUN: dict[tuple[str, int], tuple[str, set[str]]] = {
    ("docs/embedding-speed.md", 0): ("needs MERT weights at a placeholder path", {"segments", "lengths"}),
    ("docs/musicnn.md", 0): ("downloads the musicnn wheel", {"segments", "lengths", "audio_16k_mono"}),
    ("docs/scale.md", 0): ("starts a Ray cluster", set()),
}
# Inputs a snippet's text describes but does not build: given here, then the snippet runs.
GIVEN: dict[tuple[str, int], dict[str, object]] = {
    ("docs/arena.md", 0): {  # two songs' scores, as `apexmusic predict` writes them
        "scores_a": dict(zip(ALL_TASKS, (61.2, 58.0, 3.4, 3.1, 2.9, 3.6, 3.3), strict=True)),
        "scores_b": dict(zip(ALL_TASKS, (40.5, 44.1, 2.2, 2.4, 2.0, 2.8, 2.5), strict=True)),
    },
}


def _blocks(language: tuple[str, ...]) -> list[tuple[str, int, str]]:
    out = []
    for doc in DOCS:
        found = [m.group(2) for m in FENCE.finditer(doc.read_text()) if m.group(1) in language]
        out += [(str(doc.relative_to(ROOT)), i, code) for i, code in enumerate(found)]
    return out


PYTHON = _blocks(("python",))
SHELL = _blocks(("bash", "sh", "console"))


def test_the_snippets_are_found():
    assert ("README.md", 0) in {(doc, i) for doc, i, _ in PYTHON}
    assert set(NOT_RUN) <= {(doc, i) for doc, i, _ in PYTHON}
    assert len(SHELL) >= 10


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, predict_model_dir: Path, shared_data: Path) -> Path:
    """A folder laid out as the snippets assume: model/, runs/model, store/, songs/ and three songs."""
    root = tmp_path_factory.mktemp("snippets")
    shutil.copytree(predict_model_dir, root / "model")
    (root / "runs").mkdir()
    shutil.copytree(predict_model_dir, root / "runs" / "model")
    shutil.copytree(predict_model_dir.parent / "store", root / "store")
    audio = shared_data / "real-audio"
    (root / "songs").mkdir()
    for name in ("acestep_saxphone_jazz.opus", "acestep_female_pop.opus"):
        shutil.copy(audio / name, root / "songs" / name)
    for name, source in (
        ("song.mp3", "suno_01_en.mp3"),
        ("a.mp3", "mureka_01_en.mp3"),
        ("b.mp3", "yue_01_en.mp3"),
    ):
        shutil.copy(audio / source, root / name)
    _arena_files(root)
    return root


def _arena_files(root: Path, n_songs: int = 40, n_battles: int = 300) -> None:
    """scores.jsonl for songs s0..s39 and battles.jsonl between them, decided mostly by coherence."""
    rng = np.random.default_rng(0)
    scores = {f"s{i}": {t: float(rng.uniform(1, 5)) for t in ALL_TASKS} for i in range(n_songs)}
    with (root / "scores.jsonl").open("w") as f:
        for song, row in scores.items():
            f.write(json.dumps({"id": song, "path": f"songs/{song}.mp3", **row}) + "\n")
    with (root / "battles.jsonl").open("w") as f:
        for k in range(n_battles):
            a, b = rng.choice(n_songs, 2, replace=False)
            margin = scores[f"s{a}"]["coherence"] - scores[f"s{b}"]["coherence"] + rng.normal(0, 0.5)
            sides = {"id_a": f"s{a}", "id_b": f"s{b}", "system_a": "x", "system_b": "y"}
            f.write(
                json.dumps({"battle_uuid": f"b{k}", **sides, "preference": "A" if margin > 0 else "B"}) + "\n"
            )


def _free_names(code: str) -> set[str]:
    """Names a snippet reads that it neither imports nor assigns (nor are builtins)."""
    tree = ast.parse(code)
    bound, read = set(dir(builtins)), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
    return read - bound


@pytest.fixture(scope="module")
def trust_workdir(tmp_path_factory, aesthetics_only_model: Path) -> tuple[Path, np.ndarray]:
    """``model/``: a model saved with trust statistics (trained without plays/likes); and the
    real songs' layer vectors it is asked about."""
    from apexmusic.store import EmbeddingStore

    root = tmp_path_factory.mktemp("trust-snippet")
    shutil.copytree(aesthetics_only_model, root / "model")
    return root, EmbeddingStore.open(aesthetics_only_model.parent / "real-store").load().layers


@pytest.mark.slow
@pytest.mark.parametrize(("doc", "index", "code"), PYTHON, ids=[f"{d}#{i}" for d, i, _ in PYTHON])
def test_python_snippet_runs_as_written(doc, index, code, workdir, request, monkeypatch):
    if (doc, index) in NOT_RUN:
        why, inputs = NOT_RUN[(doc, index)]
        assert _free_names(code) == inputs, f"{doc} snippet {index} uses undefined names"
        imports = [n for n in ast.parse(code).body if isinstance(n, ast.Import | ast.ImportFrom)]
        exec(compile(ast.Module(imports, []), f"{doc}#{index}", "exec"), {})
        pytest.skip(f"imports checked; not run: {why}")
    given = GIVEN.get((doc, index), {})
    if doc == "docs/trust.md":
        folder, song_layers = request.getfixturevalue("trust_workdir")
        monkeypatch.chdir(folder)
        given = {"song_layers": song_layers}
    else:
        monkeypatch.chdir(workdir)
    assert _free_names(code) == set(given), f"{doc} snippet {index} uses undefined names"
    names = {"__name__": "__snippet__", **given}
    exec(compile(code, f"{doc}#{index}", "exec"), names)
    if doc == "docs/trust.md":  # what the snippet's comment promises
        row = names["row"]
        assert row["scores"]["score_streams"] is None and row["scores"]["coherence"] is not None
        served = {t for t, v in row["scores"].items() if v is not None}
        assert row["level"] == 0.9 and set(row["intervals"]) == served
        assert isinstance(row["in_domain"], bool) and row["domain_distance"] > 0


def _cli_commands(code: str) -> list[list[str]]:
    """Every ``apexmusic ...`` command in a shell block, as argv after the program name."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        line = re.sub(r"\[[^\]]*\]", "", line)  # [optional ...] parts of a usage line
        tokens = shlex.split(line, comments=True)
        for i, token in enumerate(tokens):
            starts = i == 0 or tokens[i - 1] in ("&&", "||", ";") or tokens[i - 1].endswith(".lock")
            if starts and Path(token).name == "apexmusic":
                rest = tokens[i + 1 :]
                end = next((j for j, t in enumerate(rest) if t in ("&&", "||", ";", "|")), len(rest))
                commands.append(rest[:end])
    return commands


@pytest.mark.parametrize(("doc", "index", "code"), SHELL, ids=[f"{d}#{i}" for d, i, _ in SHELL])
def test_shell_snippet_commands_parse(doc, index, code, capsys):
    parser = _build_parser()
    for argv in _cli_commands(code):
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{doc}: `apexmusic {' '.join(argv)}` does not parse: {capsys.readouterr().err}")
        assert getattr(args, "handler", None) is not None, (
            f"{doc}: `apexmusic {' '.join(argv)}` has no command"
        )


def test_the_readme_shows_the_cli_commands():
    readme = [argv[0] for doc, _, code in SHELL if doc == "README.md" for argv in _cli_commands(code)]
    assert {"embed", "train", "predict", "serve", "arena", "store", "report"} <= set(readme)


def _encoder_table() -> dict[str, tuple[str, str]]:
    text = (ROOT / "docs" / "embedding.md").read_text()
    section = text.split("## Encoders", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `")]
    return {r[0].strip().strip("`"): (r[1].strip(), r[2].strip()) for r in rows}


def test_the_encoder_table_lists_every_encoder_the_cli_accepts():
    table = _encoder_table()
    assert sorted(table) == available_encoders()  # the registry `--encoder` is checked against


@pytest.mark.parametrize("name", ["handcrafted", "musicnn-msd", "musicnn-mtt-vgg"])
def test_the_encoder_table_gives_the_real_shapes(name):
    encoder = load_encoder(name, weights=None if name == "handcrafted" else "random", device="cpu")
    rate, shape = _encoder_table()[name]
    assert rate == f"{encoder.sample_rate / 1000:g} kHz"
    assert shape == f"{encoder.n_layers} × {encoder.dim}"
