"""Block-parallel gzip: one valid stream, the same bytes whatever the number of threads."""

from __future__ import annotations

import gzip
import io
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from buildbox.oci.pgzip import BLOCK_SIZE, ParallelGzipWriter, incompressible


def compress(data: bytes, threads: int, level: int = 6, piece: int = 10240) -> bytes:
    out = io.BytesIO()
    with (
        ThreadPoolExecutor(max_workers=threads) as pool,
        ParallelGzipWriter(out, level, pool, 2 * threads) as writer,
    ):
        for start in range(0, len(data), piece):  # in tarfile's record-sized writes
            writer.write(data[start : start + piece])
    return out.getvalue()


def text(size: int) -> bytes:
    """Compressible data: words drawn from a small vocabulary."""
    words = [f"word{number}".encode() for number in range(500)]
    pick = random.Random(7)
    out = bytearray()
    while len(out) < size:
        out += pick.choice(words) + b" "
    return bytes(out[:size])


def test_same_bytes_whatever_the_number_of_threads() -> None:
    data = text(5 * BLOCK_SIZE + 123)
    single = compress(data, 1)
    assert compress(data, 2) == single
    assert compress(data, 4) == single
    assert compress(data, 3, piece=BLOCK_SIZE + 7) == single  # however the writes are cut


@pytest.mark.parametrize(
    "size", [0, 1, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 3 * BLOCK_SIZE + 5]
)
def test_every_size_decompresses_to_the_input_with_gzip_itself(size: int) -> None:
    data = random.Random(size).randbytes(size)
    compressed = compress(data, 2)
    assert gzip.decompress(compressed) == data
    # An independent decoder: the gzip program checks the CRC and the length in the trailer.
    assert (
        subprocess.run(["gzip", "-dc"], input=compressed, capture_output=True, check=True).stdout
        == data
    )


def test_header_has_no_time_and_no_name() -> None:
    compressed = compress(b"x" * 100, 1)
    assert compressed[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no flags (no name, no comment)
    assert compressed[4:8] == b"\0\0\0\0"  # mtime


def test_blocks_cost_almost_nothing_in_size() -> None:
    # Each block is primed with the 32 KiB before it, so matches still reach across the cuts.
    data = text(4 * BLOCK_SIZE)
    parallel = len(compress(data, 2))
    whole = len(gzip.compress(data, compresslevel=6, mtime=0))
    assert parallel <= whole * 1.005


def test_only_blocks_deflate_cannot_shrink_are_stored() -> None:
    noise = random.Random(3).randbytes(BLOCK_SIZE)
    assert incompressible(noise)
    assert not incompressible(text(BLOCK_SIZE))
    # One compressible sample is enough to deflate the block.
    assert not incompressible(noise[: BLOCK_SIZE // 2] + text(BLOCK_SIZE // 2))
    assert not incompressible(noise[:1000])  # too short to judge: deflated


def test_stored_and_deflated_blocks_make_one_stream() -> None:
    data = random.Random(4).randbytes(2 * BLOCK_SIZE) + text(2 * BLOCK_SIZE)
    compressed = compress(data, 2)
    assert gzip.decompress(compressed) == data
    assert len(compressed) < 2 * BLOCK_SIZE + len(gzip.compress(text(2 * BLOCK_SIZE), 6)) * 1.005
