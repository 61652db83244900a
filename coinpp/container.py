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

# Flags (byte 5). A reader refuses a flag it does not know, so a file whose meaning changes with a
# flag never decodes silently without it.
FLAG_RESIDUAL = 0x01  # a RESI section follows the network's latents: bounded error on the file's own grid
KNOWN_FLAGS = FLAG_RESIDUAL
RESIDUAL_TAG = b"RESI"
# Optional, no flag: the decoder's post-filter for this file (audio). A reader that does not know it skips
# it and gives the network's output, which is the normative decode anyway.
FILE_FILTER_TAG = b"FILT"

KIND_BASE_NETWORK = 0  # latents for a shared, shipped base network (COIN++)
KIND_OVERFIT_NETWORK = 1  # the weights of a network overfitted to this one file (COIN)

# Caps of an overfitted network (COIN): far above any useful size, low enough to allocate safely.
MAX_WIDTH = 4096
MAX_DEPTH = 64
MAX_PARAMS = 1 << 24
WEIGHT_BITS = (8, 9, 10, 11, 12, 13, 14, 15, 16)  # 16: IEEE half floats; fewer: per-tensor uniform


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
    # Channel groups with a latent per patch each (e.g. stereo audio through a mono network);
    # not a field of its own: the stored patch count is groups x the patch grid.
    groups: int = 1

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(math.ceil(s / p) for s, p in zip(self.shape, self.patch, strict=True))

    @property
    def padding(self) -> tuple[int, ...]:
        return tuple(c * p - s for c, p, s in zip(self.counts, self.patch, self.shape, strict=True))

    @property
    def num_patches(self) -> int:
        return math.prod(self.counts) * self.groups


@dataclass(frozen=True)
class SirenArch:
    """Architecture of an overfitted SIREN: `depth` sine layers of `width`, then a linear layer."""

    in_dim: int
    out_dim: int
    width: int
    depth: int
    w0: int = 30

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the stored tensors, in stored order: W_0, b_0, ..., W_out, b_out."""
        dims = [self.in_dim] + [self.width] * self.depth
        out: list[tuple[int, ...]] = []
        for i in range(self.depth):
            out += [(self.width, dims[i]), (self.width,)]
        return out + [(self.out_dim, self.width), (self.out_dim,)]

    @property
    def params(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def tag(self) -> str:
        return f"{self.depth}x{self.width}"


@dataclass
class NetworkFile:
    """A COIN file (kind 1): one network overfitted to the signal; its weights are the payload."""

    modality: int
    shape: tuple[int, ...]
    channels: int
    arch: SirenArch
    weight_bits: int
    payload: bytes
    modality_meta: bytes = b""
    flags: int = 0
    extra: dict[bytes, bytes] = field(default_factory=dict)
    kind: int = KIND_OVERFIT_NETWORK

    @property
    def payload_size(self) -> int:
        """Exact payload length implied by the header (checked before anything is decoded)."""
        n = self.arch.params
        if self.weight_bits == 16:
            return 2 * n
        return 8 * len(self.arch.shapes) + (n * self.weight_bits + 7) // 8


def _section(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("<I", len(body)) + body


def _grid(modality: int, shape: tuple[int, ...], channels: int) -> bytes:
    d = len(shape)
    return struct.pack("<BB", modality, d) + struct.pack(f"<{d}I", *shape) + struct.pack("<H", channels)


def _finish(flags: int, sections: list[tuple[bytes, bytes]]) -> bytes:
    out = MAGIC + struct.pack("<BB", FORMAT_VERSION, flags)
    for tag, body in sections:
        out += _section(tag, body)
    return out + struct.pack("<I", zlib.crc32(out))


def write_bytes(f: CoinFile | NetworkFile) -> bytes:
    """Serialise a CoinFile (kind 0) or NetworkFile (kind 1)."""
    if isinstance(f, NetworkFile):
        a = f.arch
        if f.weight_bits not in WEIGHT_BITS or len(f.payload) != f.payload_size:
            raise ValueError("bad weight bits or payload size")
        cdec = struct.pack("<BBHHBHB", f.kind, a.in_dim, a.out_dim, a.width, a.depth, a.w0, f.weight_bits)
        return _finish(f.flags, [(b"CDEC", cdec), (b"GRID", _grid(f.modality, f.shape, f.channels)),
                                 (b"MODA", f.modality_meta), (b"DATA", f.payload)])
    name = f.codec_name.encode()
    if len(name) > MAX_NAME or len(f.codec_hash) != HASH_BYTES:
        raise ValueError("bad codec name or hash")
    d = len(f.shape)
    cdec = struct.pack("<BB", f.kind, len(name)) + name + f.codec_hash
    grid = _grid(f.modality, f.shape, f.channels)
    grid += struct.pack(f"<{d}H", *f.patch) + struct.pack(f"<{d}H", *f.padding)
    grid += struct.pack("<BHI", f.bits, f.latent_dim, f.num_patches)
    extra = sorted(f.extra.items())
    if bool(f.flags & FLAG_RESIDUAL) != (RESIDUAL_TAG in f.extra):
        raise ValueError("the residual flag and the RESI section go together")
    return _finish(f.flags, [(b"CDEC", cdec), (b"GRID", grid), (b"MODA", f.modality_meta), (b"DATA", f.payload),
                             *extra])


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


def _read_grid(g: _Reader, allow_huge: bool) -> tuple[int, tuple[int, ...], int]:
    modality, d = g.unpack("BB")
    if not 1 <= d <= 4:
        raise FormatError(f"corrupted header ({d} spatial dimensions)")
    shape = g.unpack(f"{d}I")
    (channels,) = g.unpack("H")
    if min(shape) < 1 or not 1 <= channels <= MAX_CHANNELS:
        raise FormatError("corrupted header (zero size)")
    if not allow_huge and (max(shape) > MAX_DIM or math.prod(shape) > MAX_SAMPLES):
        raise LimitError(f"declared size {'x'.join(map(str, shape))} exceeds the safety cap "
                         f"({MAX_SAMPLES} samples); pass --allow-huge if the file is trusted")
    return modality, tuple(shape), channels


def _read_network_file(cdec: bytes, sections: dict[bytes, bytes], flags: int, allow_huge: bool) -> NetworkFile:
    c = _Reader(cdec, "codec")
    kind, in_dim, out_dim, width, depth, w0, weight_bits = c.unpack("BBHHBHB")
    c.done()
    if not (1 <= in_dim <= 4 and 1 <= out_dim <= MAX_CHANNELS and 1 <= width <= MAX_WIDTH
            and 1 <= depth <= MAX_DEPTH and 1 <= w0 <= 1000) or weight_bits not in WEIGHT_BITS:
        raise FormatError("corrupted header (network architecture out of range)")
    arch = SirenArch(in_dim, out_dim, width, depth, w0)
    if arch.params > MAX_PARAMS:
        raise LimitError(f"network of {arch.params} weights exceeds the safety cap")
    g = _Reader(sections.pop(b"GRID"), "grid")
    modality, shape, channels = _read_grid(g, allow_huge)
    g.done()
    if len(shape) != in_dim or channels != out_dim:
        raise FormatError("corrupted header (network does not match the grid)")
    f = NetworkFile(modality, shape, channels, arch, weight_bits, sections.pop(b"DATA"), sections.pop(b"MODA", b""),
                    flags, sections, kind)
    if len(f.payload) != f.payload_size:
        raise FormatError("corrupted file (weights payload has the wrong size)")
    return f


def read_bytes(data: bytes, allow_huge: bool = False) -> CoinFile | NetworkFile:
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
    if flags & ~KNOWN_FLAGS:
        raise FormatError(f"unsupported flags {flags:#x} in a version-1 file; upgrade coin")
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
    if bool(flags & FLAG_RESIDUAL) != (RESIDUAL_TAG in sections):
        raise FormatError("corrupted file (the residual flag and the RESI section disagree)")

    cdec = sections.pop(b"CDEC")
    if cdec[:1] == bytes([KIND_OVERFIT_NETWORK]):
        if flags:
            raise FormatError("corrupted file (a COIN network file has no residual layer)")
        return _read_network_file(cdec, sections, flags, allow_huge)
    c = _Reader(cdec, "codec")
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
    modality, shape, channels = _read_grid(g, allow_huge)
    d = len(shape)
    patch = g.unpack(f"{d}H")
    padding = g.unpack(f"{d}H")
    bits, latent_dim, num_patches = g.unpack("BHI")
    g.done()
    if min(patch) < 1:
        raise FormatError("corrupted header (zero size)")
    if not 1 <= bits <= 8 or not 1 <= latent_dim <= MAX_LATENT_DIM:
        raise FormatError("corrupted header (bits or latent size out of range)")
    f = CoinFile(name, codec_hash, modality, tuple(shape), channels, tuple(patch), bits, latent_dim,
                 sections.pop(b"DATA"), sections.pop(b"MODA", b""), kind, flags, sections)
    grid_patches = math.prod(f.counts)
    if f.padding != tuple(padding) or num_patches % grid_patches or not 1 <= num_patches // grid_patches <= channels:
        raise FormatError("corrupted header (patch grid does not match the shape)")
    f.groups = num_patches // grid_patches
    if not allow_huge and num_patches > MAX_PATCHES:
        raise LimitError(f"{num_patches} patches exceed the safety cap; pass --allow-huge if trusted")
    return f
