"""Container stage: the .coin bitstream, version 1 (specified in bitstream/FORMAT.md).

    "COIN" | version u8 | flags u8 | section* | crc32 u32

A section is a 4-byte tag, a u32 body length and the body; a reader skips tags it does not
know. All integers little-endian. Every declared size is checked against caps before any
allocation, and the checksum is verified before anything is parsed.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field

from .errors import FormatError, LimitError

MAGIC = b"COIN"
FORMAT_VERSION = 1
HASH_BYTES = 16

# Caps (a decompression-bomb guard); `allow_huge` lifts the size caps for legitimate files.
MAX_SAMPLES = 1 << 28  # spatial samples of the decoded signal at its own resolution
MAX_DIM = 1 << 20
MAX_LATENT_DIM = 4096
MAX_CHANNELS = 256
MAX_PATCHES = 1 << 22
MAX_NAME = 64

KIND_BASE_NETWORK = 0  # latents for a shared, shipped base network (COIN++)


@dataclass
class CoinFile:
    """Everything a .coin file holds, parsed."""

    codec_name: str
    codec_hash: bytes
    modality: int
    shape: tuple[int, ...]  # spatial shape of the original signal
    channels: int
    patch: tuple[int, ...]
    bits: int
    latent_dim: int
    payload: bytes
    modality_meta: bytes = b""
    kind: int = KIND_BASE_NETWORK
    flags: int = 0
    extra: dict[bytes, bytes] = field(default_factory=dict)  # unknown sections, kept as read

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(math.ceil(s / p) for s, p in zip(self.shape, self.patch, strict=True))

    @property
    def padding(self) -> tuple[int, ...]:
        return tuple(c * p - s for c, p, s in zip(self.counts, self.patch, self.shape, strict=True))

    @property
    def num_patches(self) -> int:
        return math.prod(self.counts)


def _section(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("<I", len(body)) + body


def write_bytes(f: CoinFile) -> bytes:
    """Serialise a CoinFile."""
    name = f.codec_name.encode()
    if len(name) > MAX_NAME or len(f.codec_hash) != HASH_BYTES:
        raise ValueError("bad codec name or hash")
    d = len(f.shape)
    cdec = struct.pack("<BB", f.kind, len(name)) + name + f.codec_hash
    grid = struct.pack("<BB", f.modality, d)
    grid += struct.pack(f"<{d}I", *f.shape) + struct.pack("<H", f.channels)
    grid += struct.pack(f"<{d}H", *f.patch) + struct.pack(f"<{d}H", *f.padding)
    grid += struct.pack("<BHI", f.bits, f.latent_dim, f.num_patches)
    out = MAGIC + struct.pack("<BB", FORMAT_VERSION, f.flags)
    out += _section(b"CDEC", cdec) + _section(b"GRID", grid) + _section(b"MODA", f.modality_meta)
    out += _section(b"DATA", f.payload)
    return out + struct.pack("<I", zlib.crc32(out))


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError(f"corrupted header ({self.what} section is cut short)")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def done(self) -> None:
        if self.pos != len(self.data):
            raise FormatError(f"corrupted header ({self.what} section has trailing bytes)")


def read_bytes(data: bytes, allow_huge: bool = False) -> CoinFile:
    """Parse and validate a .coin file; any problem raises FormatError (or LimitError)."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise FormatError("not a .coin file (wrong magic bytes)")
    if len(data) < 10:
        raise FormatError("truncated .coin file")
    version, flags = data[4], data[5]
    if version != FORMAT_VERSION:
        raise FormatError(f"unsupported .coin format version {version} (this coin reads version "
                          f"{FORMAT_VERSION}); {'upgrade coin' if version > FORMAT_VERSION else 'file is corrupted'}")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise FormatError("corrupted or truncated .coin file (checksum mismatch)")
    if flags != 0:
        raise FormatError(f"unsupported flags {flags:#x} in a version-1 file")
    sections: dict[bytes, bytes] = {}
    r = _Reader(data[6:-4], "file")
    while r.pos < len(r.data):
        tag = r.take(4)
        (n,) = r.unpack("I")
        if tag in sections:
            raise FormatError(f"corrupted file (section {tag!r} appears twice)")
        sections[tag] = r.take(n)
    for tag in (b"CDEC", b"GRID", b"DATA"):
        if tag not in sections:
            raise FormatError(f"corrupted file (no {tag.decode()} section)")

    c = _Reader(sections.pop(b"CDEC"), "codec")
    kind, name_len = c.unpack("BB")
    if name_len > MAX_NAME:
        raise FormatError("corrupted header (codec name too long)")
    try:
        name = c.take(name_len).decode()
    except UnicodeDecodeError:
        raise FormatError("corrupted header (codec name is not text)") from None
    codec_hash = c.take(HASH_BYTES)
    c.done()
    if kind != KIND_BASE_NETWORK:
        raise FormatError(f"unsupported codec kind {kind}; upgrade coin")

    g = _Reader(sections.pop(b"GRID"), "grid")
    modality, d = g.unpack("BB")
    if not 1 <= d <= 4:
        raise FormatError(f"corrupted header ({d} spatial dimensions)")
    shape = g.unpack(f"{d}I")
    (channels,) = g.unpack("H")
    patch = g.unpack(f"{d}H")
    padding = g.unpack(f"{d}H")
    bits, latent_dim, num_patches = g.unpack("BHI")
    g.done()
    if min(shape) < 1 or min(patch) < 1 or not 1 <= channels <= MAX_CHANNELS:
        raise FormatError("corrupted header (zero size)")
    if not 1 <= bits <= 8 or not 1 <= latent_dim <= MAX_LATENT_DIM:
        raise FormatError("corrupted header (bits or latent size out of range)")
    if not allow_huge and (max(shape) > MAX_DIM or math.prod(shape) > MAX_SAMPLES):
        raise LimitError(f"declared size {'x'.join(map(str, shape))} exceeds the safety cap "
                         f"({MAX_SAMPLES} samples); pass --allow-huge if the file is trusted")
    f = CoinFile(name, codec_hash, modality, tuple(shape), channels, tuple(patch), bits, latent_dim,
                 sections.pop(b"DATA"), sections.pop(b"MODA", b""), kind, flags, sections)
    if f.padding != tuple(padding) or f.num_patches != num_patches:
        raise FormatError("corrupted header (patch grid does not match the shape)")
    if not allow_huge and num_patches > MAX_PATCHES:
        raise LimitError(f"{num_patches} patches exceed the safety cap; pass --allow-huge if trusted")
    return f
