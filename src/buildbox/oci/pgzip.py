"""gzip on every core, with the same bytes whatever the number of cores (how pigz does it).

A real box is one large layer, and zlib deflates it at about 28 MiB/s on one core: compressing it
took longer than all of ``docker push``. The stream is therefore cut into fixed blocks that are
deflated in parallel, each primed with the 32 KiB before it (so matches still reach back across
a cut) and ended with a sync flush (so the pieces join into one deflate stream). The bytes depend
on the block size, the level and the zlib, never on how many threads ran. A block that deflate
cannot shrink (judged from samples) is stored rather than searched for matches in vain.
Python's ``gzip`` cannot do this, and ``pigz`` is a program to run rather than a library; the
format is small.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from concurrent.futures import Executor, Future
from typing import IO, Self

#: Uncompressed bytes per block: part of what decides the published bytes.
BLOCK_SIZE = 1024 * 1024
#: How far back deflate looks: the dictionary each block is primed with.
WINDOW = 32 * 1024
#: Samples taken across a block to judge whether deflate can shrink it, and their size.
SAMPLES, SAMPLE_SIZE = 4, 16 * 1024


def incompressible(block: bytes) -> bool:
    """Whether deflate would waste its time on ``block``: every sample, deflated fast, keeps at
    least 97% of its size (compressed files, random data). Such blocks are stored as they are,
    which deflate at any level does for them anyway, but about ten times sooner."""
    if len(block) < SAMPLES * SAMPLE_SIZE:
        return False
    step = len(block) // SAMPLES
    return all(
        len(zlib.compress(block[start : start + SAMPLE_SIZE], 1)) >= 0.97 * SAMPLE_SIZE
        for start in range(0, SAMPLES * step, step)
    )


def _deflate(block: bytes, dictionary: bytes, level: int, last: bool) -> bytes:
    if incompressible(block):
        level, dictionary = 0, b""
    compressor = (
        zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=dictionary)
        if dictionary
        else zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    )
    body = compressor.compress(block)
    return body + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class ParallelGzipWriter:
    """A write-only gzip stream into ``sink`` (mtime 0, no name: the header gzip.GzipFile
    writes with those), deflated on ``pool``'s threads, at most ``in_flight`` blocks held at
    once (memory stays bounded). Close it to finish the stream."""

    def __init__(self, sink: IO[bytes], level: int, pool: Executor, in_flight: int) -> None:
        self._sink, self._level, self._pool, self._limit = sink, level, pool, in_flight
        self._in_flight: deque[Future[bytes]] = deque()
        self._pending = bytearray()
        self._dictionary = b""
        self._crc, self._size = 0, 0
        extra_flags = {9: 2, 1: 4}.get(level, 0)  # as gzip.GzipFile marks best and fastest
        sink.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([extra_flags, 255]))

    def write(self, data: bytes) -> int:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._pending += data
        while len(self._pending) > BLOCK_SIZE:  # keep the last block back: it ends the stream
            self._submit(bytes(self._pending[:BLOCK_SIZE]), last=False)
            del self._pending[:BLOCK_SIZE]
        return len(data)

    def flush(self) -> None:
        """Nothing to do: blocks go out as they fill (tarfile calls this)."""

    def close(self) -> None:
        self._submit(bytes(self._pending), last=True)
        while self._in_flight:
            self._sink.write(self._in_flight.popleft().result())
        self._sink.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is None:
            self.close()
        else:  # the stream is abandoned: free the pool of blocks nobody will read
            for block in self._in_flight:
                block.cancel()

    def _submit(self, block: bytes, *, last: bool) -> None:
        self._in_flight.append(
            self._pool.submit(_deflate, block, self._dictionary, self._level, last)
        )
        self._dictionary = block[-WINDOW:]
        while len(self._in_flight) > self._limit:
            self._sink.write(self._in_flight.popleft().result())
