"""Batch mode: encode or decode a whole directory tree.

    coin encode DIR -o OUTDIR     a/b.png -> OUTDIR/a/b.png.coin
    coin decode DIR -o OUTDIR     a/b.png.coin -> OUTDIR/a/b.png

The output tree mirrors the input. Files are read ahead on worker threads; the patches of
consecutive files that share a codec are fitted in one batch, so a folder of small files keeps
the CPU or GPU as busy as one large file. Every output is written atomically; an existing output
is skipped unless `force` (so a rerun resumes); a bad file is recorded and the batch goes on; a
full disk stops the batch with everything finished intact.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import codec as codecs
from . import modalities
from .bitstream import parse
from .decoder import Decoder, decode_bytes
from .device import pick_device
from .encoder import Encoder
from .errors import CoinError, DiskFullError, InputError, OutputError
from .files import atomic_write, atomic_write_bytes
from .modalities import Modality, Signal

SUFFIX = ".coin"
# Patches fitted per batch across files. On the CPU the fit is compute-bound from a few patches
# on (measured: batching small files bought nothing); on a GPU a batch must be large to fill it.
BATCH_PATCHES = {"cpu": 1024, "cuda": 4096}
PREFETCH = 4  # files read ahead of the fit


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' with 0 <= I < N (0-based, like SLURM_ARRAY_TASK_ID=0.. or a Kubernetes job index)."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise InputError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def in_shard(rel: str, shard: tuple[int, int] | None) -> bool:
    """A file's shard depends only on its relative path, so every machine agrees on the split
    whatever else the folder holds, and the shards together cover each file exactly once."""
    return shard is None or zlib.crc32(rel.encode()) % shard[1] == shard[0]


def walk(root: Path) -> list[Path]:
    """Every regular file under root, sorted, skipping our own temporary files and hidden ones."""
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


@dataclass
class Item:
    """One file of a batch and what became of it."""

    file: str  # path relative to the input folder
    output: str = ""
    status: str = "pending"  # done | exists | failed | unknown | not-run
    error: str | None = None
    bytes_in: int = 0
    bytes_out: int = 0
    quality: dict[str, float] = field(default_factory=dict)
    rate: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Report:
    command: str
    input: str
    output: str
    items: list[Item] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None  # why the batch stopped early (full disk, interrupted)

    def count(self, status: str) -> int:
        return sum(1 for i in self.items if i.status == status)

    @property
    def failed(self) -> list[Item]:
        return [i for i in self.items if i.status == "failed"]

    def to_dict(self) -> dict:
        done = [i for i in self.items if i.status == "done"]
        bytes_in = sum(i.bytes_in for i in done)
        bytes_out = sum(i.bytes_out for i in done)
        keys = sorted({k for i in done for k in i.quality})
        mean_q = {k: sum(i.quality[k] for i in done if k in i.quality) / max(1, sum(k in i.quality for i in done))
                  for k in keys}
        return {
            "command": self.command, "input": self.input, "output": self.output,
            "files": len(self.items), "done": len(done), "existing_skipped": self.count("exists"),
            "unknown_skipped": [i.file for i in self.items if i.status == "unknown"],
            "failed": [{"file": i.file, "error": i.error} for i in self.failed],
            "not_run": self.count("not-run"), "stopped": self.stopped,
            "bytes_in": bytes_in, "bytes_out": bytes_out,
            # original size over compressed size, whichever way the batch went
            "ratio": (bytes_in / bytes_out if self.command == "encode" else bytes_out / bytes_in)
            if bytes_in and bytes_out else None,
            "mean_quality": mean_q, "seconds": round(self.seconds, 3),
            "files_per_s": len(done) / self.seconds if self.seconds else None,
            "mb_per_s": bytes_in / 1e6 / self.seconds if self.seconds else None,
            "items": [asdict(i) for i in self.items],
        }


Event = Callable[[str, Item, Report], None]  # ("start" | "end", item, report so far)


def _plan(root: Path, out: Path, accept: Callable[[Path], str | None], shard: tuple[int, int] | None,
          force: bool) -> tuple[Report, list[tuple[Item, Path, Path]]]:
    """Decide each file's fate before any work: unknown, existing output, or to do."""
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder")
    out_resolved = out.resolve()
    report = Report("", str(root), str(out))
    todo = []
    for src in walk(root):
        if out_resolved in src.resolve().parents:  # the output folder inside the input folder
            continue
        rel = src.relative_to(root).as_posix()
        if not in_shard(rel, shard):
            continue
        item = Item(rel, bytes_in=src.stat().st_size)
        report.items.append(item)
        target = accept(src)
        if target is None:
            item.status = "unknown"
            continue
        dst = out / Path(rel).parent / target
        item.output = dst.relative_to(out).as_posix()
        if dst.exists() and not force:
            item.status = "exists"
            continue
        todo.append((item, src, dst))
    return report, todo


def _read_ahead(tasks: list, read: Callable, jobs: int) -> Iterator[tuple[object, object]]:
    """Yield (task, result or CoinError) in order, reading at most PREFETCH files ahead."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        window: list[tuple[object, Future]] = []
        it = iter(tasks)
        for t in it:
            window.append((t, pool.submit(read, t)))
            if len(window) >= PREFETCH:
                break
        while window:
            t, fut = window.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                window.append((nxt, pool.submit(read, nxt)))
            try:
                yield t, fut.result()
            except CoinError as e:
                yield t, e


def encode_tree(root: Path, out: Path, codec_name: str | None = None, steps: int | None = None,
                force: bool = False, check: bool = True, device: str = "auto",
                shard: tuple[int, int] | None = None, jobs: int = 1, batch_patches: int | None = None,
                on_event: Event | None = None, preset: str = "default") -> Report:
    """Encode every file of a known type under `root` into `out` (COIN++ codecs): each with the
    default codec of its modality, or all files of `codec_name`'s modality with that codec, with the
    codecs' encoder `preset` ("fast": `coin encode --fast`)."""
    forced = codecs.load(codec_name) if codec_name else None
    batch_patches = batch_patches or BATCH_PATCHES[pick_device(device).type]

    def accept(src: Path) -> str | None:
        try:
            modality = modalities.for_path(src)
        except InputError:
            return None
        if forced is not None and forced.modality != modality.name:
            return None  # --codec picks the files of its own modality
        return src.name + SUFFIX

    report, todo = _plan(root, out, accept, shard, force)
    report.command = "encode"
    notify = on_event or (lambda *a: None)

    encoders: dict[tuple[str, str], Encoder] = {}

    def read(task) -> tuple[Signal, Modality, codecs.Codec]:
        item, src, _ = task
        modality = modalities.for_path(src)
        codec = forced or codecs.load(codecs.default_for(modality.name))
        if codec.modality != modality.name:
            raise InputError(f"codec {codec.name!r} is for {codec.modality}, not {modality.name}")
        return modality.read(src), modality, codec

    def encoder_for(modality: Modality, codec: codecs.Codec) -> Encoder:
        if (modality.name, codec.name) not in encoders:
            encoders[modality.name, codec.name] = Encoder(codec, modality, preset, steps, device)
        return encoders[modality.name, codec.name]

    group: list[tuple[tuple[Item, Path, Path], Signal, Modality, codecs.Codec]] = []

    def flush() -> None:
        if not group:
            return
        _, _, modality, codec = group[0]
        started = time.perf_counter()
        try:
            encoder = encoder_for(modality, codec)
            latents = encoder.fit([g[1] for g in group])
        except CoinError as e:
            for (item, _, _), *_ in group:
                item.status, item.error = "failed", str(e)
                notify("end", item, report)
            group.clear()
            return
        share = (time.perf_counter() - started) / len(group)
        for ((item, _, dst), signal, _, _), lat in zip(group, latents, strict=True):
            with _outcome(item, dst, report, notify, share):
                enc = encoder.finish(lat, signal)
                dst.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(dst, enc.data, force)
                item.bytes_out = len(enc.data)
                item.rate = modality.rate(len(enc.data), signal.spatial, signal.meta)
                if check:
                    decoded, _ = decode_bytes(enc.data, device=device)
                    item.quality = modality.quality(signal, decoded)
                item.status = "done"
        group.clear()

    with _stops_cleanly(report):
        for task, result in _read_ahead(todo, read, jobs):
            item = task[0]
            notify("start", item, report)
            if isinstance(result, CoinError):
                item.status, item.error = "failed", str(result)
                notify("end", item, report)
                continue
            signal, modality, codec = result
            if group and (group[0][3] is not codec or group[0][2] is not modality):
                flush()
            group.append((task, signal, modality, codec))
            if sum(_patches(g[1], g[3]) for g in group) >= batch_patches:
                flush()
        flush()
    return report


@contextmanager
def _outcome(item: Item, dst: Path, report: Report, notify: Event, extra_seconds: float = 0.0) -> Iterator[None]:
    """One file's work: a failure is recorded on the item and the batch goes on (a full disk still
    ends it); the end is always reported, with the time spent."""
    started = time.perf_counter()
    try:
        yield
    except DiskFullError as e:
        item.status, item.error = "failed", str(e)
        raise
    except CoinError as e:
        item.status, item.error = "failed", str(e)
    except OSError as e:  # e.g. an output folder that cannot be created
        item.status, item.error = "failed", f"{dst}: cannot write ({e.strerror or e})"
    finally:
        item.seconds = extra_seconds + time.perf_counter() - started
        notify("end", item, report)


@contextmanager
def _stops_cleanly(report: Report) -> Iterator[None]:
    """A full disk or Ctrl-C ends the batch with what was finished, recorded in the report."""
    t0 = time.perf_counter()
    try:
        yield
    except DiskFullError:
        report.stopped = "disk full"
    except KeyboardInterrupt:
        report.stopped = "interrupted"
    finally:
        for item in report.items:
            if item.status == "pending":
                item.status = "not-run"
        report.seconds = time.perf_counter() - t0


def _patches(signal: Signal, codec: codecs.Codec) -> int:
    n = 1
    for s, p in zip(signal.spatial, codec.patch, strict=False):
        n *= -(-s // p)
    return n


def decode_tree(root: Path, out: Path, ext: str | None = None, force: bool = False, device: str = "auto",
                shard: tuple[int, int] | None = None, jobs: int = 1, on_event: Event | None = None,
                postfilter: bool = True, postfilter_views: int | None = None) -> Report:
    """Decode every .coin file under `root` into `out`; the output keeps the original extension
    (a/b.png.coin -> a/b.png), or takes `ext`, or the modality's first extension. `postfilter` and
    `postfilter_views` as for `decoder.Decoder`."""
    decoder = Decoder(device, postfilter=postfilter, postfilter_views=postfilter_views)
    if ext is not None and not ext.startswith("."):
        ext = "." + ext

    def accept(src: Path) -> str | None:
        return src.name[: -len(SUFFIX)] if src.name.endswith(SUFFIX) else None

    report, todo = _plan(root, out, accept, shard, force)
    report.command = "decode"
    notify = on_event or (lambda *a: None)

    def read(task):
        _, src, _ = task
        try:
            data = src.read_bytes()
        except OSError as e:
            raise InputError(f"{src}: cannot read ({e.strerror or e})") from None
        return parse(data)

    with _stops_cleanly(report):
        for (item, _src, dst), parsed in _read_ahead(todo, read, jobs):
            notify("start", item, report)
            with _outcome(item, dst, report, notify):
                if isinstance(parsed, CoinError):
                    raise parsed
                modality = parsed.modality
                target = _output_name(dst, modality, ext)
                item.output = target.relative_to(out).as_posix()
                if target != dst and target.exists() and not force:
                    item.status = "exists"
                    continue
                signal = decoder.decode(parsed)
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(target, lambda p, s=signal, m=modality: m.write(s, p), force)
                item.bytes_out = target.stat().st_size
                item.status = "done"
    return report


def _output_name(dst: Path, modality: Modality, ext: str | None) -> Path:
    own = modality.extension_of(dst)
    if ext is not None:
        if ext.lower() not in modality.extensions:
            raise InputError(f"--ext {ext}: {modality.name} is written as one of {', '.join(modality.extensions)}")
        return dst.with_name((dst.name[: -len(own)] if own else dst.name) + ext)
    if own:
        return dst
    return dst.with_name(dst.name + modality.extensions[0])
