"""TFRecord files without TensorFlow: CRC-32C, framing, a streaming reader and a writer.

A TFRecord file is a sequence of frames: the record's length (uint64, little
endian), the masked CRC-32C of those 8 bytes, the record, and the masked
CRC-32C of the record.  :mod:`sparktf.readers` streams records from remote
stores with :func:`iter_tfrecord_chunks`; :func:`write_tfrecords` lets Spark
executors write TFRecord files without importing TensorFlow (~10 s each).
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any, Iterable, Iterator

import google_crc32c

from . import fs
from .errors import ConfigError, CorruptRecordError

#: Bytes read from a remote TFRecord stream at a time (a larger record is read whole).
DEFAULT_CHUNK = 4 << 20

_HEADER = struct.Struct("<QI")  # TFRecord: uint64 length, masked crc32c of the length
_FOOTER = struct.Struct("<I")  # masked crc32c of the data
_COMPRESSION = {None: "", "": "", "NONE": "", "GZIP": "GZIP", "ZLIB": "ZLIB"}


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc32c_table()


def _crc32c_py(data: bytes) -> int:
    """CRC-32C in pure Python: used only for the 8-byte length, where a call into C costs more."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` from ``google-crc32c`` (a dependency; C speed, ~1 GB/s)."""
    return google_crc32c.value(bytes(data))


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


class _Inflate:
    """A ``read(n)`` stream that decompresses GZIP or ZLIB data from another one."""

    def __init__(self, raw: Any, wbits: int, chunk: int) -> None:
        self.raw = raw
        self.inflater = zlib.decompressobj(wbits)
        self.chunk = chunk
        self.done = False

    def read(self, n: int) -> bytes:
        out = []
        have = 0
        while have < n and not self.done:
            data = self.inflater.unconsumed_tail or self.raw.read(self.chunk)
            if not data:
                self.done = True
                piece = self.inflater.flush()
            else:
                piece = self.inflater.decompress(data, n - have)
                if self.inflater.eof:
                    self.done = True
            out.append(piece)
            have += len(piece)
        return b"".join(out)


def iter_tfrecord_chunks(stream: Any, name: str = "<stream>", *, compression: str | None = None,
                         chunk_size: int = DEFAULT_CHUNK,
                         check_crc: bool = True) -> Iterator[list[bytes]]:
    """The records of a TFRecord stream, as lists of records, reading ``chunk_size`` at a time.

    ``stream`` is anything with ``read(n) -> bytes`` (a pyarrow file from
    :func:`sparktf.fs.open_input`, a Python file).  Each frame is a uint64
    length, the masked crc32c of the length, the data and the masked crc32c
    of the data.  With ``check_crc`` (the default) both CRCs are verified: the
    length's (it catches a file that is not TFRecord or a wrong
    ``compression``; pure Python, computed once per distinct length) and the
    data's (``google-crc32c``), so a damaged record raises instead of reaching
    the model.  A stream that ends inside a record raises
    :class:`CorruptRecordError` naming ``name`` and the offset (in the
    decompressed stream, with ``compression``).
    """
    comp = compression_type(compression)
    if comp:
        stream = _Inflate(stream, 31 if comp == "GZIP" else 15, chunk_size)
    data_crc = _crc32c if check_crc else None
    head, foot, mask, crc_py = _HEADER, _FOOTER, _mask, _crc32c_py
    good_lengths: dict[int, int] = {}  # length -> its masked CRC, computed once per stream
    buf = b""
    pos = 0  # next frame in buf
    base = 0  # stream offset of buf[0]
    eof = False
    while True:
        records = []
        n = len(buf)
        want = chunk_size
        while n - pos >= 12:
            length, length_crc = head.unpack_from(buf, pos)
            if check_crc and good_lengths.get(length) != length_crc:
                if mask(crc_py(buf[pos:pos + 8])) != length_crc:
                    raise CorruptRecordError(
                        f"{name}: corrupt TFRecord header at offset {base + pos} (the length's "
                        "CRC does not match): not a TFRecord file, the wrong compression= "
                        f"({comp or 'none'}), or damaged data")
                if len(good_lengths) >= 65536:  # records have few distinct lengths
                    good_lengths.clear()
                good_lengths[length] = length_crc
            end = pos + 16 + length
            if end > n:
                want = max(chunk_size, end - n)
                break
            data = buf[pos + 12:end - 4]
            if data_crc is not None and mask(data_crc(data)) != foot.unpack_from(buf, end - 4)[0]:
                raise CorruptRecordError(f"{name}: corrupt TFRecord at offset {base + pos}: "
                                         f"the CRC of its {length} data bytes does not match")
            records.append(data)
            pos = end
        if records:
            yield records
        if eof:
            if pos < n:
                left = n - pos
                what = (f"a {length}-byte record needs {16 + length} bytes"
                        if left >= 12 else "a record header needs 12 bytes")
                raise CorruptRecordError(
                    f"{name}: truncated TFRecord at offset {base + pos}: {what} but the "
                    f"{'stream' if comp else 'file'} ends after {left} (incomplete write or "
                    "copy?)")
            return
        try:
            chunk = stream.read(want)
        except zlib.error as e:
            raise CorruptRecordError(
                f"{name}: cannot decompress {comp} data after decompressed offset {base + n} "
                f"({e}): the wrong compression= or a damaged file") from e
        if not chunk:
            eof = True
        buf = buf[pos:] + chunk if pos < n else bytes(chunk)
        base += pos
        pos = 0


def iter_tfrecords(source: str | Any, *, compression: str | None = None,
                   chunk_size: int = DEFAULT_CHUNK, check_crc: bool = True) -> Iterator[bytes]:
    """The serialized records of one TFRecord file (a URL or an open stream), streamed.

    See :func:`iter_tfrecord_chunks`, which this flattens.
    """
    if isinstance(source, (str, os.PathLike)):
        url = os.fspath(source)
        f = fs.open_input(url)
        try:
            for records in iter_tfrecord_chunks(f, url, compression=compression,
                                                chunk_size=chunk_size, check_crc=check_crc):
                yield from records
        finally:
            f.close()
    else:
        name = getattr(source, "path", None) or getattr(source, "name", None) or "<stream>"
        for records in iter_tfrecord_chunks(source, str(name), compression=compression,
                                            chunk_size=chunk_size, check_crc=check_crc):
            yield from records


def compression_type(compression: str | None) -> str:
    """``""``, ``"GZIP"`` or ``"ZLIB"`` for a ``compression=`` argument (TensorFlow's names)."""
    key = compression.upper() if isinstance(compression, str) else compression
    if key not in _COMPRESSION:
        raise ConfigError(f"compression={compression!r}: use None, 'GZIP' or 'ZLIB'")
    return _COMPRESSION[key]


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C that TFRecord frames carry."""
    return _mask(_crc32c(data))


def frame(record: bytes) -> bytes:
    """``record`` framed as one TFRecord: length, its CRC, the record, its CRC."""
    length = struct.pack("<Q", len(record))
    return (length + _FOOTER.pack(masked_crc32c(length)) + record
            + _FOOTER.pack(masked_crc32c(record)))


def write_tfrecords(path: str, records: Iterable[bytes]) -> int:
    """Write ``records`` to the local file ``path`` as an uncompressed TFRecord file.

    Byte for byte what ``tf.io.TFRecordWriter`` writes.  Returns the record count.
    """
    count = 0
    with open(path, "wb") as f:
        for record in records:
            f.write(frame(record))
            count += 1
    return count
