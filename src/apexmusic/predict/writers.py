"""Output files of a scoring run: JSONL, CSV or Parquet, one writer family for every run.

``open_writer`` picks the writer for the file's suffix. Every writer takes rows (dicts, as the
Predictor makes them) or column batches (arrays, as store scoring makes them) and:

- ``resume=True``: appends to what an earlier (maybe interrupted) run wrote, and
  ``done_ids`` lists the ids already there. JSONL and CSV are appended durably line by line;
  Parquet, which cannot be appended to, gets atomic part files beside the output that
  ``close`` merges into the final file. A crash leaves whole lines or whole parts.
- ``resume=False``: starts a new file, refusing to overwrite an existing one unless
  ``overwrite=True`` (store scoring writes to a temporary name, then renames). Parquet then
  streams row groups straight into the file.

JSONL and CSV floats are rounded to ``DIGITS`` significant digits (scores come from float32
arithmetic, good to about seven); ``digits=None`` writes them in full. Parquet keeps full floats.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from apexmusic.choices import OUTPUT_DIGITS
from apexmusic.errors import ConfigError
from apexmusic.paths import output_dir

log = logging.getLogger(__name__)

DIGITS = OUTPUT_DIGITS

OUTPUT_FORMATS = (".jsonl", ".csv", ".parquet")

Columns = Mapping[str, Any]  # column name -> numpy array, Arrow array or list


def output_format(out_file: str | Path) -> str:
    """The suffix of an output file (``.jsonl``, ``.csv`` or ``.parquet``); ConfigError otherwise."""
    suffix = Path(out_file).suffix.lower() or str(out_file).lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(f"--out must end in one of {', '.join(OUTPUT_FORMATS)}: {out_file}")
    return suffix


def open_writer(
    out_file: str | Path,
    resume: bool,
    overwrite: bool = False,
    fmt: str | None = None,
    digits: int | None = DIGITS,
) -> OutputWriter:
    """The writer for ``out_file``'s format (or ``fmt``, a suffix, for a temporary name);
    ``digits``: significant digits of text floats (None: full precision)."""
    out_file = Path(out_file)
    suffix = output_format(fmt or out_file)
    output_dir(out_file.parent)
    exists = out_file.exists() or (suffix == ".parquet" and _parts_dir(out_file).exists())
    if exists and not resume and not overwrite:
        raise ConfigError(f"{out_file} already exists; pass --resume to continue it or remove it")
    if exists and overwrite and not resume:
        out_file.unlink(missing_ok=True)
    cls = {".jsonl": JsonlWriter, ".csv": CsvWriter, ".parquet": ParquetWriter}[suffix]
    return cls(out_file, resume, digits)


def round_significant(values: Any, digits: int) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits (NaN, inf and 0 unchanged). Dividing
    by an exact power of ten gives the double nearest the rounded decimal, so it prints short."""
    x = np.array(values, dtype=np.float64)
    out = x.copy()
    ok = np.isfinite(x) & (x != 0)
    exp = np.zeros_like(x)
    exp[ok] = digits - 1 - np.floor(np.log10(np.abs(x[ok])))
    up, down = ok & (exp >= 0), ok & (exp < 0)
    out[up] = np.round(x[up] * 10.0 ** exp[up]) / 10.0 ** exp[up]
    out[down] = np.round(x[down] / 10.0 ** -exp[down]) * 10.0 ** -exp[down]
    return out


def _round_value(value: Any, digits: int | None) -> Any:
    if digits is None:
        return value
    if isinstance(value, float | np.floating):
        return float(round_significant(value, digits))
    if isinstance(value, list | tuple):
        return [_round_value(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: _round_value(v, digits) for k, v in value.items()}
    return value


class OutputWriter:
    """Rows or column batches to one output file; see the module docstring."""

    def __init__(self, path: Path, resume: bool, digits: int | None = DIGITS):
        self.path = path
        self.resume = resume
        self.digits = digits

    def _rows(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [{k: _round_value(v, self.digits) for k, v in r.items()} for r in rows]

    def _columns(self, columns: Columns) -> dict[str, Any]:
        def rounded(col: Any) -> Any:
            floats = isinstance(col, np.ndarray) and col.dtype.kind == "f"
            return round_significant(col, self.digits) if floats and self.digits is not None else col

        return {name: rounded(col) for name, col in columns.items()}

    def done_ids(self) -> set[str]:
        raise NotImplementedError

    def write_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        raise NotImplementedError

    def write_columns(self, columns: Columns) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonlWriter(OutputWriter):
    def __init__(self, path: Path, resume: bool, digits: int | None = DIGITS):
        super().__init__(path, resume, digits)
        _drop_partial_last_line(path)

    def done_ids(self) -> set[str]:
        if not self.path.exists():
            return set()
        ids = set()
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    ids.add(str(json.loads(line)["id"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("%s: skipping an unreadable line", self.path)
        return ids

    def write_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        _append_durably(self.path, "".join(json.dumps(r) + "\n" for r in self._rows(rows)).encode())

    def write_columns(self, columns: Columns) -> None:
        _append_durably(self.path, jsonl_lines(self._columns(columns)))


class CsvWriter(OutputWriter):
    def __init__(self, path: Path, resume: bool, digits: int | None = DIGITS):
        super().__init__(path, resume, digits)
        _drop_partial_last_line(path)
        self.header: list[str] | None = None
        if path.exists() and path.stat().st_size:
            with path.open(newline="", encoding="utf-8") as f:
                self.header = next(csv.reader(f), None)

    def done_ids(self) -> set[str]:
        if not self.path.exists():
            return set()
        with self.path.open(newline="", encoding="utf-8") as f:
            return {row["id"] for row in csv.DictReader(f) if row.get("id")}

    def write_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        buf = io.StringIO()
        new_file = self.header is None
        if new_file:
            self.header = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(buf, fieldnames=self.header, extrasaction="ignore", lineterminator="\n")
        if new_file:
            w.writeheader()
        w.writerows(self._rows(rows))
        _append_durably(self.path, buf.getvalue().encode())

    def write_columns(self, columns: Columns) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        table = pa.table(self._columns(columns))
        new_file = self.header is None
        if new_file:
            self.header = list(table.column_names)
        elif list(table.column_names) != self.header:
            table = table.select(self.header)
        buf = pa.BufferOutputStream()
        pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=new_file))
        _append_durably(self.path, buf.getvalue().to_pybytes())


class ParquetWriter(OutputWriter):
    """Resumable: atomic part files merged by ``close``. New: row groups streamed to the file."""

    def __init__(self, path: Path, resume: bool, digits: int | None = DIGITS):
        super().__init__(path, resume, None)  # binary floats: nothing to gain from rounding
        self.parts = _parts_dir(path)
        self._stream: Any = None

    def _sources(self) -> list[Path]:
        parts = sorted(self.parts.glob("part-*.parquet")) if self.parts.exists() else []
        return ([self.path] if self.path.exists() else []) + parts

    def done_ids(self) -> set[str]:
        import pyarrow.parquet as pq

        ids: set[str] = set()
        for src in self._sources():
            ids.update(pq.read_table(src, columns=["id"]).column("id").to_pylist())
        return ids

    def write_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        import pyarrow as pa

        table = pa.Table.from_pylist(list(rows))
        for i, f in enumerate(table.schema):  # an all-None column (a task not served) stays a number column
            if pa.types.is_null(f.type):
                table = table.set_column(i, f.name, table.column(i).cast(pa.float64()))
        self._write(table)

    def write_columns(self, columns: Columns) -> None:
        import pyarrow as pa

        self._write(pa.table(dict(columns)))

    def _write(self, table: Any) -> None:
        import pyarrow.parquet as pq

        if not self.resume:
            self._stream = self._stream or pq.ParquetWriter(self.path, table.schema)
            self._stream.write_table(table)
            return
        self.parts.mkdir(exist_ok=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}.parquet"
        tmp = self.parts / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.parts / name)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self.parts.exists():
            self._merge_parts()

    def _merge_parts(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(s) for s in self._sources()]
        if tables:
            merged = pa.concat_tables(tables, promote_options="default")
            tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
            pq.write_table(merged, tmp)
            os.replace(tmp, self.path)
        for part in self.parts.glob("*"):
            part.unlink()
        self.parts.rmdir()


def _parts_dir(path: Path) -> Path:
    return path.with_name(f".{path.name}.parts")


def _drop_partial_last_line(path: Path) -> None:
    """A killed run can leave half a line at the end; cut it so appends start clean."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        cut = f.read().rfind(b"\n") + 1
        f.truncate(cut)
        log.warning("%s: dropped an incomplete last line left by an interrupted run", path)


def _append_durably(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def jsonl_lines(columns: Columns) -> bytes:
    """JSON lines for a column batch, built column-wise with Arrow kernels (millions of rows/s).

    Floats use Arrow's shortest round-trip formatting; strings are JSON-escaped (rows holding
    control characters fall back to ``json.dumps``).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    parts: list[Any] = []
    for i, (name, col) in enumerate(columns.items()):
        parts.append(("{" if i == 0 else ", ") + json.dumps(name) + ": ")
        if isinstance(col, np.ndarray) and col.dtype.kind in "fb":
            col = pa.array(col.astype(np.float64) if col.dtype.kind == "f" else col)
        if isinstance(col, pa.Array) and not pa.types.is_string(col.type):
            parts.append(pc.fill_null(pc.cast(col, pa.string()), "null"))  # numbers, booleans, nulls
        else:
            parts.append(_json_string_array(col))
    parts.append("}\n")
    lines = pc.binary_join_element_wise(*parts, "")  # one string per row, newline included
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def _json_string_array(values: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = values if isinstance(values, pa.Array) else pa.array([str(v) for v in values], pa.string())
    if pc.any(pc.match_substring_regex(arr, '["\\\\\\x00-\\x1f]')).as_py():
        if pc.any(pc.match_substring_regex(arr, "[\\x00-\\x1f]")).as_py():
            return pa.array([json.dumps(v, ensure_ascii=False) for v in arr.to_pylist()], pa.string())
        arr = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', arr, '"', "")
