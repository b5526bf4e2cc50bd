"""Read TensorFlow checkpoint bundles (`PREFIX.index` + `PREFIX.data-00000-of-00001`) without TensorFlow.

The musicnn taggers ship as TF-1 checkpoints, and importing TensorFlow is not an option (gigabytes,
and it cannot install beside our numpy). The format is small enough to read directly:

- `.index` is a LevelDB-style sorted table: data blocks of prefix-compressed key/value entries, an index
  block pointing at them, and a 48-byte footer ending in a magic number. Keys are tensor names; the
  empty key holds the bundle header.
- Each value is a `BundleEntryProto` (protobuf): dtype, shape, shard id, and the offset and size of the
  tensor's raw little-endian bytes in the `.data-NNNNN-of-NNNNN` shard.

Only what checkpoints written by TF's `Saver` use is supported: uncompressed blocks, whole (unsliced)
tensors of numeric dtypes. Anything else raises `CheckpointFormatError` with the reason.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5  # one compression-type byte and a CRC32C after every block

# TensorFlow's DataType enum (types.proto) for the dtypes a numeric checkpoint holds.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}


class CheckpointFormatError(ValueError):
    """The files are not a TensorFlow checkpoint bundle this reader understands."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointFormatError("varint longer than 64 bits")


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message as (field number, value) pairs: ints for varint/fixed fields, bytes for the rest."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise CheckpointFormatError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise CheckpointFormatError("truncated protobuf message")
        out.append((number, value))
    return out


def _block(data: bytes, handle: bytes) -> bytes:
    """The block a BlockHandle (varint offset, varint size) points at, checked to be uncompressed."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data):
        raise CheckpointFormatError("block handle points past the end of the index file")
    if data[end] != 0:
        raise CheckpointFormatError(f"compressed table blocks (type {data[end]}) are not supported")
    return data[offset:end]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The key/value pairs of one table block (keys share a prefix with the key before them)."""
    if len(block) < 4:
        raise CheckpointFormatError("table block too short")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise CheckpointFormatError("table block restart array is corrupt")
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    pos = 0
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise CheckpointFormatError("table block entry is corrupt")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    return entries


def _entry(name: str, value: bytes) -> TensorEntry:
    dtype_id, shape, shard, offset, size = 0, (), 0, 0, 0
    for number, field in _proto_fields(value):
        if number == 1:
            dtype_id = field
        elif number == 2:
            dims = [v for n, v in _proto_fields(field) if n == 2]
            shape = tuple(dict(_proto_fields(d)).get(1, 0) for d in dims)
        elif number == 3:
            shard = field
        elif number == 4:
            offset = field
        elif number == 5:
            size = field
        elif number == 7:
            raise CheckpointFormatError(f"{name}: sliced tensors are not supported")
    if dtype_id not in DTYPES:
        raise CheckpointFormatError(f"{name}: unsupported TensorFlow dtype {dtype_id}")
    dtype = DTYPES[dtype_id]
    if size != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise CheckpointFormatError(f"{name}: {size} bytes do not hold a {dtype} tensor of shape {shape}")
    return TensorEntry(name, dtype, shape, shard, offset, size)


class CheckpointReader:
    """The tensors of one checkpoint bundle; `prefix` is the path before `.index` (here often a folder + '/')."""

    def __init__(self, prefix: str | Path):
        self.prefix = str(prefix)
        index = Path(self.prefix + ".index")
        if not index.is_file():
            raise CheckpointFormatError(f"no checkpoint index at {index}")
        data = index.read_bytes()
        if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
            raise CheckpointFormatError(f"{index} is not a TensorFlow checkpoint index (bad magic)")
        footer = data[len(data) - FOOTER_SIZE:]
        _, pos = _varint(footer, 0)  # the metaindex handle: TF leaves its block empty
        _, pos = _varint(footer, pos)
        index_block = _block(data, footer[pos:])
        self.num_shards = 1
        self.entries: dict[str, TensorEntry] = {}
        for _, handle in _block_entries(index_block):
            for key, value in _block_entries(_block(data, handle)):
                if key == b"":  # the BundleHeaderProto
                    self.num_shards = dict(_proto_fields(value)).get(1, 1)
                else:
                    name = key.decode("utf-8")
                    self.entries[name] = _entry(name, value)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def read(self, name: str) -> np.ndarray:
        """One tensor as a numpy array with its checkpoint shape and dtype."""
        if name not in self.entries:
            raise KeyError(f"no tensor '{name}' in checkpoint {self.prefix}")
        e = self.entries[name]
        shard = Path(f"{self.prefix}.data-{e.shard:05d}-of-{self.num_shards:05d}")
        with open(shard, "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.size)
        if len(raw) != e.size:
            raise CheckpointFormatError(f"{name}: {shard} ends before the tensor's {e.size} bytes")
        return np.frombuffer(raw, dtype=e.dtype).reshape(e.shape).copy()
