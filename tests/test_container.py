"""Bitstream v1: round trip, and every kind of bad file gives a FormatError."""

import struct
import zlib

import pytest

from coinpp import container
from coinpp.container import CoinFile, read_bytes, write_bytes
from coinpp.errors import FormatError, LimitError


def _file(**kw):
    base = dict(codec_name="image-test", codec_hash=bytes(range(16)), modality=1, shape=(37, 29), channels=3,
                patch=(8, 8), bits=4, latent_dim=8, payload=b"\x01\x02\x03\x04" * 5)
    base.update(kw)
    return CoinFile(**base)


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_round_trip():
    f = _file()
    g = read_bytes(write_bytes(f))
    assert (g.codec_name, g.codec_hash, g.shape, g.patch, g.bits, g.latent_dim, g.payload, g.channels) == (
        f.codec_name, f.codec_hash, f.shape, f.patch, f.bits, f.latent_dim, f.payload, f.channels)
    assert g.counts == (5, 4) and g.padding == (3, 3) and g.num_patches == 20


def test_layout_starts_with_magic_version_flags():
    data = write_bytes(_file())
    assert data[:4] == b"COIN" and data[4] == container.FORMAT_VERSION and data[5] == 0


def test_unknown_sections_are_skipped():
    data = write_bytes(_file())
    body = data[:-4] + b"XTRA" + struct.pack("<I", 3) + b"abc"
    g = read_bytes(_with_crc(body))
    assert g.extra == {b"XTRA": b"abc"}


@pytest.mark.parametrize("data,message", [
    (b"", "not a .coin"), (b"GIF89a....", "not a .coin"), (b"COIN", "truncated"),
])
def test_foreign_and_empty(data, message):
    with pytest.raises(FormatError, match=message):
        read_bytes(data)


def test_every_truncation_is_caught():
    data = write_bytes(_file())
    for n in range(len(data)):
        with pytest.raises(FormatError):
            read_bytes(data[:n])


def test_every_single_bit_flip_is_caught():
    data = bytearray(write_bytes(_file()))
    for i in range(len(data)):
        for bit in (0, 7):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(FormatError):
                read_bytes(bytes(bad))


def test_newer_version_is_refused_with_a_clear_message():
    data = bytearray(write_bytes(_file()))
    data[4] = 9
    with pytest.raises(FormatError, match="version 9"):
        read_bytes(_with_crc(bytes(data[:-4])))


def test_huge_declared_size_hits_the_cap_before_allocating():
    big = _file(shape=(1 << 20, 1 << 20), patch=(32, 32))
    data = write_bytes(big)
    with pytest.raises(LimitError, match="safety cap"):
        read_bytes(data)
    assert read_bytes(data, allow_huge=True).shape == (1 << 20, 1 << 20)


def test_inconsistent_grid_is_refused():
    data = write_bytes(_file())
    # Change the declared patch count (last u32 of the GRID body) and fix the checksum.
    i = data.index(b"GRID") + 8
    body = bytearray(data[:-4])
    grid_len = struct.unpack("<I", body[i - 4 : i])[0]
    struct.pack_into("<I", body, i + grid_len - 4, 999)
    with pytest.raises(FormatError, match="patch grid"):
        read_bytes(_with_crc(bytes(body)))
