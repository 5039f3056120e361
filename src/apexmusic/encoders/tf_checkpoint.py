"""Read TensorFlow checkpoints (the "tensor bundle" format) without TensorFlow.

A checkpoint ``prefix`` is two kinds of file:

- ``prefix.index``: an immutable sorted table in LevelDB's SSTable layout (data blocks of
  prefix-compressed keys with restart points, an index block, a metaindex block, and a 48-byte
  footer ending in a magic number). It maps each tensor name to a ``BundleEntryProto`` (dtype,
  shape, shard, offset, size, masked crc32c); the empty key holds the ``BundleHeaderProto``.
- ``prefix.data-0000i-of-0000n``: the raw little-endian tensor bytes.

The two protobuf messages are tiny, so their wire format is decoded by hand here; no protobuf,
TensorFlow or pickle is involved. Every block and every tensor is checked against its crc32c.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from apexmusic.errors import ModelLoadError

log = logging.getLogger(__name__)

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes + 8-byte magic
BLOCK_TRAILER_SIZE = 5  # 1 byte compression type + 4 bytes masked crc32c
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1
HEADER_KEY = b""

# tensorflow/core/framework/types.proto DataType -> numpy dtype (little-endian).
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}


# ---------------------------------------------------------------- crc32c (Castagnoli)


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C of ``data`` (uses the ``google-crc32c`` C extension when it is installed)."""
    try:
        import google_crc32c

        return int(google_crc32c.value(bytes(data)))
    except ImportError:
        pass
    table, crc = _CRC_TABLE, 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB/TensorFlow store CRCs rotated and offset, so a CRC of data holding CRCs stays sound."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------- varints and protobuf


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ModelLoadError("corrupt checkpoint: truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _as_int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_protobuf(buf: bytes | memoryview) -> dict[int, list[int | bytes]]:
    """Split a protobuf message into {field number: [raw values]} (varints as int, others bytes)."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = read_varint(buf, pos)
        elif wire_type == 1:
            value, pos = bytes(buf[pos : pos + 8]), pos + 8
        elif wire_type == 2:
            length, pos = read_varint(buf, pos)
            value, pos = bytes(buf[pos : pos + length]), pos + length
        elif wire_type == 5:
            value, pos = bytes(buf[pos : pos + 4]), pos + 4
        else:
            raise ModelLoadError(f"corrupt checkpoint: unsupported protobuf wire type {wire_type}")
        if pos > len(buf):
            raise ModelLoadError("corrupt checkpoint: truncated protobuf field")
        fields.setdefault(number, []).append(value)
    return fields


def _last(fields: dict[int, list[int | bytes]], number: int, default: int | bytes = 0) -> int | bytes:
    values = fields.get(number)
    return values[-1] if values else default  # proto3: the last occurrence wins


# ---------------------------------------------------------------- snappy


def snappy_decompress(buf: bytes | memoryview) -> bytes:
    """Decompress a raw snappy block (the format LevelDB tables may use for their blocks)."""
    expected, pos = read_varint(buf, 0)
    out = bytearray()
    while pos < len(buf):
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            length = tag >> 2
            if length >= 60:
                n_bytes = length - 59
                length = int.from_bytes(buf[pos : pos + n_bytes], "little")
                pos += n_bytes
            length += 1
            out += buf[pos : pos + length]
            pos += length
            continue
        if kind == 1:
            length = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | buf[pos]
            pos += 1
        elif kind == 2:
            length = 1 + (tag >> 2)
            offset = int.from_bytes(buf[pos : pos + 2], "little")
            pos += 2
        else:
            length = 1 + (tag >> 2)
            offset = int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise ModelLoadError("corrupt checkpoint: bad snappy copy offset")
        start = len(out) - offset
        for i in range(length):  # copies may overlap their own output
            out.append(out[start + i])
    if len(out) != expected:
        raise ModelLoadError(f"corrupt checkpoint: snappy block gave {len(out)} bytes, expected {expected}")
    return bytes(out)


# ---------------------------------------------------------------- SSTable


@dataclass(frozen=True)
class BlockHandle:
    offset: int
    size: int


def _read_handle(buf: bytes | memoryview, pos: int) -> tuple[BlockHandle, int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return BlockHandle(offset, size), pos


def read_block(table: bytes, handle: BlockHandle) -> bytes:
    """The contents of one block, with its trailer's checksum verified and snappy undone."""
    end = handle.offset + handle.size
    if end + BLOCK_TRAILER_SIZE > len(table):
        raise ModelLoadError("corrupt checkpoint index: block runs past the end of the file")
    contents = table[handle.offset : end]
    compression = table[end]
    (stored_crc,) = struct.unpack_from("<I", table, end + 1)
    if mask_crc(crc32c(table[handle.offset : end + 1])) != stored_crc:
        raise ModelLoadError("corrupt checkpoint index: block checksum mismatch")
    if compression == NO_COMPRESSION:
        return contents
    if compression == SNAPPY_COMPRESSION:
        return snappy_decompress(contents)
    raise ModelLoadError(f"checkpoint index block uses unsupported compression type {compression}")


def iter_block(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of one block; keys are stored as (shared prefix, suffix) deltas."""
    if len(block) < 4:
        raise ModelLoadError("corrupt checkpoint index: block too small")
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    entries_end = len(block) - 4 - 4 * n_restarts
    if entries_end < 0:
        raise ModelLoadError("corrupt checkpoint index: bad restart count")
    restarts = struct.unpack_from(f"<{n_restarts}I", block, entries_end)
    if any(r >= max(entries_end, 1) for r in restarts):
        raise ModelLoadError("corrupt checkpoint index: restart point outside the block")
    pos, key = 0, b""
    while pos < entries_end:
        shared, pos = read_varint(block, pos)
        non_shared, pos = read_varint(block, pos)
        value_len, pos = read_varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > entries_end:
            raise ModelLoadError("corrupt checkpoint index: bad block entry")
        if pos in restarts and shared:
            raise ModelLoadError("corrupt checkpoint index: restart entry shares a prefix")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + value_len]
        pos += value_len


def iter_table(table: bytes) -> Iterator[tuple[bytes, bytes]]:
    """All (key, value) pairs of an SSTable, in key order."""
    if len(table) < FOOTER_SIZE:
        raise ModelLoadError("corrupt checkpoint index: file shorter than the table footer")
    footer = table[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != TABLE_MAGIC:
        raise ModelLoadError("not a TensorFlow checkpoint index (bad table magic number)")
    _metaindex, pos = _read_handle(footer, 0)
    index_handle, _ = _read_handle(footer, pos)
    for _last_key, handle_bytes in iter_block(read_block(table, index_handle)):
        data_handle, _ = _read_handle(handle_bytes, 0)
        yield from iter_block(read_block(table, data_handle))


# ---------------------------------------------------------------- tensor bundle


@dataclass(frozen=True)
class BundleHeader:
    num_shards: int
    little_endian: bool
    producer: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    masked_crc32c: int


def _parse_header(value: bytes) -> BundleHeader:
    fields = parse_protobuf(value)
    version = parse_protobuf(_last(fields, 3, b""))
    return BundleHeader(
        num_shards=int(_last(fields, 1, 0)),
        little_endian=int(_last(fields, 2, 0)) == 0,
        producer=int(_last(version, 1, 0)),
    )


def _parse_shape(value: bytes) -> tuple[int, ...]:
    fields = parse_protobuf(value)
    if int(_last(fields, 3, 0)):
        raise ModelLoadError("checkpoint tensor has unknown rank")
    return tuple(_as_int64(int(_last(parse_protobuf(dim), 1, 0))) for dim in fields.get(2, []))


def _parse_entry(name: str, value: bytes) -> TensorEntry:
    fields = parse_protobuf(value)
    if fields.get(7):
        raise ModelLoadError(f"checkpoint tensor {name!r} is partitioned into slices (unsupported)")
    dtype_code = int(_last(fields, 1, 0))
    if dtype_code not in _DTYPES:
        raise ModelLoadError(f"checkpoint tensor {name!r} has unsupported dtype code {dtype_code}")
    crc_raw = _last(fields, 6, b"\0\0\0\0")
    return TensorEntry(
        name=name,
        dtype=_DTYPES[dtype_code],
        shape=_parse_shape(_last(fields, 2, b"")),
        shard_id=int(_last(fields, 3, 0)),
        offset=_as_int64(int(_last(fields, 4, 0))),
        size=_as_int64(int(_last(fields, 5, 0))),
        masked_crc32c=struct.unpack("<I", crc_raw)[0],
    )


def read_index(index: bytes) -> tuple[BundleHeader, dict[str, TensorEntry]]:
    """Parse a ``.index`` file into its header and {tensor name: entry}."""
    header: BundleHeader | None = None
    entries: dict[str, TensorEntry] = {}
    for key, value in iter_table(index):
        if key == HEADER_KEY:
            header = _parse_header(value)
        else:
            name = key.decode("utf-8")
            entries[name] = _parse_entry(name, value)
    if header is None:
        raise ModelLoadError("corrupt checkpoint index: no bundle header entry")
    if not header.little_endian:
        raise ModelLoadError("big-endian TensorFlow checkpoints are not supported")
    return header, entries


def data_file_name(prefix: str, shard_id: int, num_shards: int) -> str:
    return f"{prefix}.data-{shard_id:05d}-of-{num_shards:05d}"


class TensorBundle:
    """A checkpoint held in memory: ``bundle.read(name)`` returns a verified numpy array."""

    def __init__(self, index: bytes, shards: list[bytes]):
        self.header, self.entries = read_index(index)
        if len(shards) != self.header.num_shards:
            raise ModelLoadError(
                f"checkpoint has {self.header.num_shards} data shards, {len(shards)} were given"
            )
        self._shards = shards

    def names(self) -> list[str]:
        return sorted(self.entries)

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        try:
            entry = self.entries[name]
        except KeyError:
            raise ModelLoadError(f"checkpoint has no tensor named {name!r}") from None
        if not 0 <= entry.shard_id < len(self._shards):
            raise ModelLoadError(f"checkpoint tensor {name!r} points at a missing shard")
        shard = self._shards[entry.shard_id]
        if entry.offset < 0 or entry.offset + entry.size > len(shard):
            raise ModelLoadError(f"checkpoint tensor {name!r} runs past the end of its data file")
        raw = memoryview(shard)[entry.offset : entry.offset + entry.size]
        if verify and mask_crc(crc32c(raw)) != entry.masked_crc32c:
            raise ModelLoadError(f"checkpoint tensor {name!r} fails its crc32c check (corrupt data)")
        n_items = int(np.prod(entry.shape, dtype=np.int64))
        if n_items * entry.dtype.itemsize != entry.size:
            raise ModelLoadError(f"checkpoint tensor {name!r}: shape {entry.shape} does not match its size")
        return (
            np.frombuffer(raw, dtype=entry.dtype).reshape(entry.shape).astype(entry.dtype.newbyteorder("="))
        )

    def read_all(self, names: list[str] | None = None, verify: bool = True) -> dict[str, np.ndarray]:
        return {name: self.read(name, verify) for name in (names if names is not None else self.names())}


def open_bundle(files: Mapping[str, bytes], prefix: str) -> TensorBundle:
    """Build a bundle from ``files`` (path -> bytes, e.g. read from a zip) for checkpoint ``prefix``."""
    try:
        index = files[f"{prefix}.index"]
    except KeyError:
        raise ModelLoadError(f"no checkpoint index {prefix}.index") from None
    header, _ = read_index(index)
    shards = []
    for shard_id in range(header.num_shards):
        name = data_file_name(prefix, shard_id, header.num_shards)
        if name not in files:
            raise ModelLoadError(f"checkpoint data file {name} is missing")
        shards.append(files[name])
    return TensorBundle(index, shards)
