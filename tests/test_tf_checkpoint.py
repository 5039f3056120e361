"""The TensorFlow tensor-bundle reader: a hand-built bundle round-trips, corruption is caught,
and the published musicnn checkpoint parses into the expected variables."""

from __future__ import annotations

import struct
import zipfile

import numpy as np
import pytest

from apexmusic.encoders.tf_checkpoint import (
    TABLE_MAGIC,
    TensorBundle,
    crc32c,
    iter_table,
    mask_crc,
    open_bundle,
    read_index,
    snappy_decompress,
)
from apexmusic.errors import ModelLoadError

# ---- a tiny independent writer of the format (LevelDB table + hand-encoded protobuf)

_DTYPE_CODES = {np.dtype("<f4"): 1, np.dtype("<i4"): 3, np.dtype("<i8"): 9, np.dtype("<f2"): 19}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _entry(dtype: np.dtype, shape: tuple[int, ...], offset: int, raw: bytes) -> bytes:
    dims = b"".join(_field_bytes(2, _field_varint(1, d)) for d in shape)
    return (
        _field_varint(1, _DTYPE_CODES[dtype])
        + _field_bytes(2, dims)
        + _field_varint(4, offset)
        + _field_varint(5, len(raw))
        + _varint(6 << 3 | 5)
        + struct.pack("<I", mask_crc(crc32c(raw)))
    )


def _block(items: list[tuple[bytes, bytes]], restart_interval: int = 2) -> bytes:
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        previous = key
    restarts = restarts or [0]
    return bytes(out) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))


def _snappy_literal(data: bytes) -> bytes:
    """A valid (uncompressing) snappy stream: one literal element."""
    n = len(data) - 1
    tag = bytes([n << 2]) if n < 60 else bytes([61 << 2]) + struct.pack("<H", n)
    return _varint(len(data)) + tag + data


def _table(items: list[tuple[bytes, bytes]], per_block: int = 2, snappy: bool = False) -> bytes:
    out, index_items = bytearray(), []

    def put(block: bytes, compress: bool) -> bytes:
        contents, kind = (_snappy_literal(block), b"\x01") if compress else (block, b"\x00")
        handle = _varint(len(out)) + _varint(len(contents))
        out.extend(contents + kind + struct.pack("<I", mask_crc(crc32c(contents + kind))))
        return handle

    for start in range(0, len(items), per_block):
        chunk = items[start : start + per_block]
        index_items.append((chunk[-1][0], put(_block(chunk), snappy)))
    meta_handle = put(_block([]), False)
    index_handle = put(_block(index_items, restart_interval=1), False)
    handles = meta_handle + index_handle
    return bytes(out) + handles + b"\0" * (40 - len(handles)) + struct.pack("<Q", TABLE_MAGIC)


def _bundle_files(tensors: dict[str, np.ndarray], snappy: bool = False) -> dict[str, bytes]:
    data, entries = bytearray(), []
    for name in sorted(tensors):
        raw = np.ascontiguousarray(tensors[name]).tobytes()
        entries.append((name.encode(), _entry(tensors[name].dtype, tensors[name].shape, len(data), raw)))
        data += raw
    header = _field_varint(1, 1) + _field_varint(2, 0) + _field_bytes(3, _field_varint(1, 1))
    index = _table([(b"", header), *entries], snappy=snappy)
    return {"ckpt/.index": index, "ckpt/.data-00000-of-00001": bytes(data)}


@pytest.fixture
def tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv2d/kernel": rng.standard_normal((7, 38, 1, 4)).astype("<f4"),
        "conv2d/bias": rng.standard_normal(4).astype("<f4"),
        "conv2d_1/kernel": rng.standard_normal((3, 2)).astype("<f2"),
        "global_step": np.array(12345, dtype="<i8"),
        "counts": np.arange(-3, 3, dtype="<i4"),
    }


# ---- tests


def test_crc32c_known_vectors():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert mask_crc(0) == 0xA282EAD8


@pytest.mark.parametrize("snappy", [False, True])
def test_hand_built_bundle_round_trips(tensors, snappy):
    bundle = open_bundle(_bundle_files(tensors, snappy=snappy), "ckpt/")
    assert bundle.header.num_shards == 1 and bundle.header.little_endian
    assert bundle.names() == sorted(tensors)
    for name, expected in tensors.items():
        got = bundle.read(name)
        assert got.dtype == expected.dtype.newbyteorder("=") and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_prefix_compressed_keys_are_rebuilt():
    items = [(b"", b"h"), (b"layer/a", b"1"), (b"layer/ab", b"2"), (b"layer/abc", b"3"), (b"m", b"4")]
    assert list(iter_table(_table(items, per_block=3))) == items


def test_snappy_copies_including_overlap():
    literal = bytes([3 << 2]) + b"abcd"  # 4-byte literal
    copy_1byte_offset = bytes([((6 - 4) << 2) | 1, 4])  # copy 6 bytes from 4 back (overlapping)
    copy_2byte_offset = bytes([((3 - 1) << 2) | 2]) + struct.pack("<H", 10)  # 3 bytes from 10 back
    stream = _varint(13) + literal + copy_1byte_offset + copy_2byte_offset
    assert snappy_decompress(stream) == b"abcdabcdab" + b"abc"
    with pytest.raises(ModelLoadError):
        snappy_decompress(_varint(14) + literal + copy_1byte_offset + copy_2byte_offset)


def test_corrupt_tensor_data_fails_its_checksum(tensors):
    files = _bundle_files(tensors)
    data = bytearray(files["ckpt/.data-00000-of-00001"])
    data[5] ^= 0x01  # inside conv2d/bias (the first tensor in sorted order)
    files["ckpt/.data-00000-of-00001"] = bytes(data)
    bundle = open_bundle(files, "ckpt/")
    with pytest.raises(ModelLoadError, match="crc32c"):
        bundle.read("conv2d/bias")
    np.testing.assert_array_equal(bundle.read("counts"), tensors["counts"])  # others still fine


def test_corrupt_index_is_rejected(tensors):
    index = _bundle_files(tensors)["ckpt/.index"]
    with pytest.raises(ModelLoadError, match="magic"):
        read_index(index[:-1] + b"\0")
    flipped = bytearray(index)
    flipped[3] ^= 0x40  # inside the first data block
    with pytest.raises(ModelLoadError, match="checksum"):
        read_index(bytes(flipped))
    with pytest.raises(ModelLoadError):
        read_index(b"short")


def test_missing_shard_and_truncated_data(tensors):
    files = _bundle_files(tensors)
    with pytest.raises(ModelLoadError, match="missing"):
        open_bundle({"ckpt/.index": files["ckpt/.index"]}, "ckpt/")
    bundle = TensorBundle(files["ckpt/.index"], [files["ckpt/.data-00000-of-00001"][:10]])
    with pytest.raises(ModelLoadError, match="past the end"):
        bundle.read("global_step")


def test_published_musicnn_checkpoint_parses(musicnn_wheel):
    with zipfile.ZipFile(musicnn_wheel) as archive:
        files = {n: archive.read(n) for n in archive.namelist() if n.startswith("musicnn/MSD_musicnn/.")}
    bundle = open_bundle(files, "musicnn/MSD_musicnn/")
    shapes = {name: entry.shape for name, entry in bundle.entries.items()}
    assert shapes["conv2d/kernel"] == (7, 38, 1, 204)  # timbral 7 x int(0.4 * 96) x 204 filters
    assert shapes["conv2d_2/kernel"] == (128, 1, 1, 51)  # temporal 128-frame filters
    assert shapes["conv2d_5/kernel"] == (7, 561, 1, 64)  # mid end over the 561 front-end maps
    assert shapes["dense/kernel"] == (1506, 200) and shapes["dense_1/kernel"] == (200, 50)
    kernel = bundle.read("dense_1/kernel")  # crc32c verified on read
    assert kernel.dtype == np.float32 and np.isfinite(kernel).all() and kernel.std() > 0
