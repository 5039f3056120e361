"""The store under faults: one writer, signals, kill -9, changed inputs, damaged shards and a
full disk. Each test drives the real ``apexmusic`` command (in-process or as a subprocess) on
small generated wav files with the handcrafted encoder."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _audio_files import music_like, write_audio

from apexmusic.cli import main
from apexmusic.embed import EmbedConfig, embed_inputs
from apexmusic.errors import StoreError
from apexmusic.sources import resolve_inputs
from apexmusic.store import MANIFEST, QUARANTINE, EmbeddingStore, Failure, verify_store

SR = 22050
FLAGS = ["--workers", "0", "--segment-seconds", "2", "--batch-size", "2"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _write_songs(folder: Path, n: int, seconds: float = 3.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_audio(folder / f"s{i:02d}.wav", music_like(seconds, SR, seed=i), SR)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _write_songs(tmp_path_factory.mktemp("corpus"), 16)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted run over the corpus: what every interrupted one must end up equal to."""
    out = tmp_path_factory.mktemp("reference") / "store"
    assert main(["embed", str(corpus), "--out", str(out), *FLAGS]) == 0
    return EmbeddingStore.open(out).load(with_segments=True)


def _assert_equal_to(reference, out: Path, n: int | None = None) -> None:
    """The store at ``out`` holds exactly the reference rows (the first ``n`` songs), bit for bit."""
    reference = reference if n is None else reference.subset(range(n))
    got = EmbeddingStore.open(out).load(with_segments=True)
    assert got.ids == reference.ids  # every song once, none twice (load refuses duplicates)
    np.testing.assert_array_equal(got.layers, reference.layers)
    for a, b in zip(got.segments, reference.segments, strict=True):
        np.testing.assert_array_equal(a, b)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "apexmusic.cli", *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.startswith("apexmusic:")]  # beside the progress bar
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---- one writer ----------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_holder_until_it_dies(corpus, tmp_path, capsys):
    two = [str(corpus / "s00.wav"), str(corpus / "s01.wav")]
    out = tmp_path / "store"
    out.mkdir()
    code = f"import apexmusic.store as s; s.WriterLock({str(out)!r}); print('locked', flush=True); input()"
    holder = subprocess.Popen(
        [sys.executable, "-c", code], env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["embed", *two, "--out", str(out), *FLAGS]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"process {holder.pid}" in line and str(out) in line
        assert main(["store", "repair", str(out)]) == 2  # repair writes too: same lock
        assert f"process {holder.pid}" in _one_line(capsys.readouterr().err)
        assert not list(out.glob("shard-*"))
    finally:
        holder.kill()  # the kernel drops a dead holder's lock: no stale lock to clean up
        holder.wait()
    assert main(["embed", *two, "--out", str(out), *FLAGS]) == 0
    assert len(EmbeddingStore.open(out).load()) == 2


@pytest.mark.slow
def test_two_embed_processes_at_once_never_duplicate_a_song(corpus, reference, tmp_path):
    out = tmp_path / "store"
    runs = [_cli("embed", str(corpus), "--out", str(out), "--resume", *FLAGS) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in runs]
    codes = sorted(code for code, _ in results)
    assert codes in ([0, 0], [0, 2]), results  # the loser stops with the lock error, or runs after
    for code, err in results:
        if code == 2:
            assert "is being written by process" in _one_line(err)
    _assert_equal_to(reference, out)


# ---- signals and kill -9 -------------------------------------------------------------------


class _Stderr:
    """A subprocess whose stderr is a terminal (the progress bar is drawn only on one), read by a
    thread as it comes."""

    def __init__(self, *args: str, **kwargs):
        import fcntl
        import pty
        import struct
        import termios

        master, terminal = pty.openpty()
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 240, 0, 0))  # room for the bar
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apexmusic.cli", *args],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            **kwargs,
        )
        os.close(terminal)
        self.chunks: list[bytes] = []
        self.fd = master
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while chunk := os.read(self.fd, 4096):
                self.chunks.append(chunk)
        except OSError:  # EIO: the process closed the terminal
            pass
        finally:
            os.close(self.fd)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")

    def wait_for_songs(self, proc: subprocess.Popen, at_least: int, timeout: float = 90.0) -> bool:
        """True once ``at_least`` songs are done; False when the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [int(n) for n in re.findall(r"\| *(\d+)/\d+ \[", self.text)]
            if done and max(done) >= at_least:
                return True
            if proc.poll() is not None:
                return False
            time.sleep(0.05)
        raise AssertionError(f"no progress to {at_least} songs: {self.text[-500:]}")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_keeps_finished_songs_and_prints_the_resume_command(signum, corpus, reference, tmp_path):
    out = tmp_path / "store"
    args = ["embed", str(corpus), "--out", str(out), *FLAGS, "--workers", "1", "--flush-seconds", "600"]
    stderr = _Stderr(*args, start_new_session=True)
    proc = stderr.proc
    assert stderr.wait_for_songs(proc, 4)
    os.killpg(proc.pid, signum)  # the whole group, decoder processes too, as Ctrl-C and systemd do
    proc.wait(timeout=60)
    stderr.thread.join(10)
    err = stderr.text
    assert proc.returncode == 128 + signum, err
    line = _one_line(err)
    kept = int(re.search(r"(\d+) songs finished in this run are kept", line).group(1))
    assert signal.Signals(signum).name in line
    assert kept >= 4 and len(EmbeddingStore.open(out).load()) == kept  # no flush before: all kept now
    resume = line.split("continue with: ", 1)[1]
    assert resume.startswith("apexmusic embed ") and resume.endswith(" --resume")
    assert main(resume.split()[1:]) == 0
    _assert_equal_to(reference, out)


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_store(corpus, reference, tmp_path):
    out = tmp_path / "store"
    args = ["embed", str(corpus), "--out", str(out), *FLAGS, "--flush-seconds", "0.2", "--resume"]
    rng = np.random.default_rng(13)
    kept, mid_run = 0, []
    for _ in range(3):
        stderr = _Stderr(*args)
        proc = stderr.proc
        mid_run.append(stderr.wait_for_songs(proc, int(rng.integers(1, 4))))  # some songs done, more to do
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.kill()
        proc.wait()
        check = verify_store(out)
        assert check.clean and not check.bad  # whole shards only, never a song twice
        assert kept <= check.n_rows <= 16
        kept = check.n_rows
    assert mid_run[0] and kept > 0  # killed mid-run; with a 0.2 s flush, finished songs were kept
    assert main(args) == 0
    _assert_equal_to(reference, out)


# ---- changed inputs --------------------------------------------------------------------------


def test_resume_embeds_a_replaced_file_again_and_replaces_its_row(tmp_path, capsys):
    folder = _write_songs(tmp_path / "in", 4)
    out = tmp_path / "store"
    assert main(["embed", str(folder), "--out", str(out), *FLAGS]) == 0
    before = EmbeddingStore.open(out).load()
    target = folder / "s01.wav"
    write_audio(target, music_like(3.0, SR, seed=99), SR)  # other audio, same length and size
    os.utime(folder / "s02.wav")  # touched only: same content
    capsys.readouterr()
    assert main(["embed", str(folder), "--out", str(out), *FLAGS, "--resume"]) == 0
    assert "1 replaced" in capsys.readouterr().out
    after = EmbeddingStore.open(out).load()
    assert after.ids == before.ids
    fresh = embed_inputs(
        resolve_inputs([str(target)]), tmp_path / "fresh", EmbedConfig(workers=0, segment_seconds=2)
    )
    assert fresh.n_done == 1
    new = EmbeddingStore.open(tmp_path / "fresh").load().layers[0]
    i = after.ids.index("s01")
    np.testing.assert_array_equal(after.layers[i], new)
    assert not np.array_equal(before.layers[i], new)
    others = [k for k in range(4) if k != i]
    np.testing.assert_array_equal(after.layers[others], before.layers[others])
    assert main(["embed", str(folder), "--out", str(out), *FLAGS, "--resume"]) == 0
    assert "replaced (their" not in capsys.readouterr().out  # size and mtime now match the new row


def test_a_replaced_file_that_no_longer_decodes_loses_its_stale_row(tmp_path):
    folder = _write_songs(tmp_path / "in", 3)
    out = tmp_path / "store"
    assert main(["embed", str(folder), "--out", str(out), *FLAGS]) == 0
    (folder / "s00.wav").write_bytes(b"not audio at all")
    assert main(["embed", str(folder), "--out", str(out), *FLAGS, "--resume"]) == 1
    store = EmbeddingStore.open(out)
    assert store.load().ids == ["s01", "s02"]
    assert [f["id"] for f in store.failures()] == ["s00"]


# ---- damaged shards ------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_a_damaged_shard_is_one_line_then_quarantined_and_embedded_again(
    damage, corpus, reference, tmp_path, capsys
):
    out = tmp_path / "store"
    assert main(["embed", str(corpus), "--out", str(out), *FLAGS, "--flush-seconds", "0.01"]) == 0
    shards = EmbeddingStore.open(out).shards()
    assert len(shards) >= 2
    bad = shards[0]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
    capsys.readouterr()
    assert main(["embed", str(corpus), "--out", str(out), *FLAGS, "--resume"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert bad.name in line and "store repair" in line
    with pytest.raises(StoreError, match=bad.name):
        EmbeddingStore.open(out).load()
    assert main(["store", "verify", str(out)]) == 1
    assert bad.name in capsys.readouterr().err
    assert bad.exists()  # verify alone changes nothing
    assert main(["store", "repair", str(out)]) == 0
    assert (out / QUARANTINE / bad.name).exists() and not bad.exists()
    assert main(["store", "verify", str(out)]) == 0
    assert main(["embed", str(corpus), "--out", str(out), *FLAGS, "--resume"]) == 0
    _assert_equal_to(reference, out)


def test_a_flipped_byte_inside_a_shard_is_found_by_verify(corpus, tmp_path, capsys):
    out = tmp_path / "store"
    assert main(["embed", str(corpus), "--out", str(out), *FLAGS]) == 0
    [shard] = EmbeddingStore.open(out).shards()
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the vectors' data pages: only the page checksum sees it
    shard.write_bytes(bytes(data))
    assert main(["store", "verify", "--quarantine", str(out)]) == 1
    assert shard.name in capsys.readouterr().err and (out / QUARANTINE / shard.name).exists()


def test_predict_and_train_name_a_truncated_shard_in_one_line(predict_model_dir, tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(predict_model_dir.parent / "store", store)
    shard = EmbeddingStore.open(store).shards()[0]
    shard.write_bytes(shard.read_bytes()[:100])
    out = tmp_path / "scores.jsonl"
    assert (
        main(["predict", "--embeddings", str(store), "--model", str(predict_model_dir), "--out", str(out)])
        == 2
    )
    assert shard.name in _one_line(capsys.readouterr().err)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,coherence\n" + "".join(f"x{i},3\n" for i in range(4)))
    assert (
        main(["train", "--embeddings", str(store), "--labels", str(labels), "--out", str(tmp_path / "m")])
        == 2
    )
    assert shard.name in _one_line(capsys.readouterr().err)


def test_repair_drops_a_song_stored_twice_keeping_the_newest_row(corpus, reference, tmp_path):
    out = tmp_path / "store"
    assert main(["embed", str(corpus), "--out", str(out), *FLAGS]) == 0
    [shard] = EmbeddingStore.open(out).shards()
    shutil.copy(shard, out / shard.name.replace("shard-", "shard-9"))  # what two writers once made
    with pytest.raises(StoreError, match="duplicate"):
        EmbeddingStore.open(out).load()
    assert not verify_store(out).clean
    assert main(["store", "repair", str(out)]) == 0
    _assert_equal_to(reference, out)


# ---- the failure log ----------------------------------------------------------------------


def test_the_failure_log_survives_garbage(tmp_path, caplog):
    store = EmbeddingStore(tmp_path)
    store.failures_path.write_bytes(
        b'{"id": "a", "path": "a.wav", "kind": "decode", "message": "x"}\n\xff\xfe{torn'
    )
    store.record_failure(Failure("b", "b.wav", "decode", "y"))
    assert [f["id"] for f in store.failures()] == ["a", "b"]
    assert "not a failure record" in caplog.text


# ---- a full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and mount rights; skipped elsewhere: see the simulated test)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` up to ``leave`` free bytes."""
    filler = folder / "filler"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            f.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_disk_is_one_line_naming_the_file_and_resume_finishes(small_disk, corpus, reference, capsys):
    four = [str(corpus / f"s{i:02d}.wav") for i in range(4)]
    out = small_disk / "store"
    filler = _fill(small_disk, 0)
    assert main(["embed", *four, "--out", str(out), *FLAGS]) == 2  # full from the start
    line = _one_line(capsys.readouterr().err)
    assert MANIFEST in line and "No space left" in line
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    filler.unlink()
    filler = _fill(small_disk, 12 * 1024)  # room for the manifest, not for the shard
    assert main(["embed", *four, "--out", str(out), *FLAGS]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "shard-" in line and "No space left" in line
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    filler.unlink()
    assert main(["embed", *four, "--out", str(out), *FLAGS, "--resume"]) == 0
    _assert_equal_to(reference, out, 4)


def test_a_simulated_full_disk_leaves_no_temporary_files(corpus, reference, tmp_path, monkeypatch, capsys):
    import pyarrow.parquet as pq

    four = [str(corpus / f"s{i:02d}.wav") for i in range(4)]

    def no_space(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1")  # a partial file, as a real full disk leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "store"
    with monkeypatch.context() as patch:
        patch.setattr(pq, "write_table", no_space)
        assert main(["embed", *four, "--out", str(out), *FLAGS]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "shard-" in line and os.strerror(errno.ENOSPC) in line
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")] and not list(out.glob("shard-*"))
    assert main(["embed", *four, "--out", str(out), *FLAGS, "--resume"]) == 0
    _assert_equal_to(reference, out, 4)
