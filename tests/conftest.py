"""Shared fixtures: a tiny codec (random, untrained network) so the suite stays fast."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coinpp import codec as codecs
from coinpp import spec as specs
from coinpp.entropy import residuals
from coinpp.model import SirenConfig, build_network
from coinpp.quantize import Quantizer
from coinpp.training.export import write_folder
from coinpp.training.tables import context_prior, frequency_table


def make_tiny_codec(root: Path, name: str = "tiny-b4", bits: int = 4, seed: int = 0,
                    modality: str = "image", context: bool = False, grid: bool = False,
                    normalisation: str | None = None, supersample: int = 1) -> codecs.Codec:
    torch.manual_seed(seed)
    if modality == "audio":
        cfg = SirenConfig(in_dim=1, out_dim=1, width=16, depth=2, latent_dim=8, w0=30.0, coord_scale=5.0)
        patch = [50]
    elif modality == "mri":
        cfg = SirenConfig(in_dim=3, out_dim=1, width=16, depth=2, latent_dim=8, w0=30.0)
        patch = [8, 8, 8]
    elif modality == "climate":
        cfg = SirenConfig(in_dim=3, out_dim=1, width=16, depth=2, latent_dim=8, w0=30.0, coord_scale=4.0)
        patch = [1, 6, 9]
    elif grid:  # a latent grid: one latent per 4 x 4 cell, interpolated
        cfg = SirenConfig(width=16, depth=2, latent_dim=8, w0=30.0, cell=4, frequencies=2)
        patch = [4, 4]
    else:
        cfg = SirenConfig(width=16, depth=2, latent_dim=8, w0=30.0)
        patch = [8, 8]
    net = build_network(cfg)
    rng = np.random.default_rng(seed)
    latents = rng.normal(0, 0.05, size=(2000, cfg.latent_dim)).astype(np.float32)
    q = Quantizer.fit(latents, bits)
    table = frequency_table(q.quantize(latents), q.levels)
    config = {"name": name, "modality": modality, "model": cfg.to_dict(), "patch": patch,
              "presets": {"default": [{"phase": "sgd", "steps": 2}]}}
    if normalisation is not None:
        config["normalisation"] = normalisation
    if supersample != 1:
        config["supersample"] = supersample
    delta = None
    if modality == "climate":  # a series codec: fields coded as differences from the field before
        delta = frequency_table(residuals(q.quantize(latents), q.levels), 2 * q.levels - 1, prior=0.1)
    prior = None
    if context:  # neighbour context and quantization-aware refinement (the image levers)
        prior = context_prior([q.quantize(latents).reshape(40, 50, -1)], q.levels, 4)
        config["context"] = {"model": "neighbour-mean", "buckets": 4, "adapt": 16}
        if not grid:
            config["presets"]["default"].append({"phase": "adam", "steps": 3, "lr": 0.5, "lr_unit": "quantizer-step",
                                                 "quantized": True})
    return write_folder(root / name, config, net, q, table, f"# {name}\n\ntest codec\n", delta, prior)


@pytest.fixture()
def tiny_codec(tmp_path_factory, monkeypatch) -> codecs.Codec:
    root = tmp_path_factory.mktemp("codecs")
    c = make_tiny_codec(root)
    monkeypatch.setenv("COIN_CODECS_PATH", str(root))
    # Only the test's own codecs: the shipped ones in the source tree are not part of these tests.
    monkeypatch.setattr(specs, "search_path",
                        lambda: [Path(p) for p in os.environ["COIN_CODECS_PATH"].split(os.pathsep) if p])
    monkeypatch.setitem(codecs.DEFAULT_CODECS, "image", c.name)
    codecs.clear_cache()
    yield c
    codecs.clear_cache()


@pytest.fixture()
def tiny_context_codec(tiny_codec, monkeypatch) -> codecs.Codec:
    """A tiny image codec with the neighbour context and refinement, next to the tiny image codec."""
    return make_tiny_codec(Path(os.environ["COIN_CODECS_PATH"]), "tiny-ctx-b4", context=True)


@pytest.fixture()
def tiny_audio_codec(tiny_codec, monkeypatch) -> codecs.Codec:
    """A tiny mono audio codec (50-sample patches) next to the tiny image codec."""
    c = make_tiny_codec(Path(os.environ["COIN_CODECS_PATH"]), "tiny-audio-b5", bits=5, modality="audio")
    monkeypatch.setitem(codecs.DEFAULT_CODECS, "audio", c.name)
    return c


@pytest.fixture()
def tiny_climate_codec(tiny_codec, monkeypatch) -> codecs.Codec:
    """A tiny climate codec (points on the sphere) next to the tiny image codec."""
    c = make_tiny_codec(Path(os.environ["COIN_CODECS_PATH"]), "tiny-climate-b6", bits=6, modality="climate")
    monkeypatch.setitem(codecs.DEFAULT_CODECS, "climate", c.name)
    return c


@pytest.fixture()
def tiny_mri_codec(tiny_codec, monkeypatch) -> codecs.Codec:
    """A tiny MRI codec (8x8x8 patches) next to the tiny image codec."""
    c = make_tiny_codec(Path(os.environ["COIN_CODECS_PATH"]), "tiny-mri-b5", bits=5, modality="mri")
    monkeypatch.setitem(codecs.DEFAULT_CODECS, "mri", c.name)
    return c


def write_nifti(path: Path, shape=(13, 11, 9), dtype=np.int16, zooms=(1.0, 1.0, 2.0), version: int = 1,
                values: np.ndarray | None = None):
    """A smooth blob volume with an oblique affine (sform and qform), returns the nibabel image."""
    import nibabel as nib

    if values is None:
        grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[:3]], indexing="ij")
        blob = np.exp(-(grid[0] ** 2 + 2 * grid[1] ** 2 + grid[2] ** 2) * 2)
        values = (blob * 1000).astype(dtype)
        if len(shape) == 4:
            values = np.stack([values * (1 + 0.1 * t) for t in range(shape[3])], -1).astype(dtype)
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(zooms)
    affine[:3, 3] = [-20.0, 15.0, -30.0]
    cls = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    img = cls(values, affine)
    img.set_qform(affine, 1)
    img.set_sform(affine, 4)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = b"coin test volume"
    nib.save(img, str(path))
    return img


def write_netcdf(path: Path, lat: np.ndarray, lon: np.ndarray, times: int = 3, levels: int | None = None,
                 missing: bool = False, packed: bool = False, seed: int = 0, name: str = "t2m",
                 extra_var: str | None = None) -> np.ndarray:
    """A small smooth temperature field (time[, level], lat, lon) in Kelvin; returns the values
    written (masked where missing)."""
    import netCDF4

    rng = np.random.default_rng(seed)
    la, lo = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    lead = (times,) if levels is None else (times, levels)
    base = 280 + 15 * np.cos(la) + 3 * np.sin(2 * lo)
    values = base + rng.normal(0, 0.3, size=(*lead, *base.shape)) + np.arange(times).reshape(
        (times,) + (1,) * (len(lead) + 1)) * 0.5
    values = np.ma.masked_array(values, mask=np.zeros(values.shape, bool))
    if missing:
        values[..., 0, 0] = np.ma.masked
        values[0, ..., 1, 2] = np.ma.masked
    with netCDF4.Dataset(str(path), "w") as ds:
        ds.title = "test field"
        ds.createDimension("time", None)
        if levels is not None:
            ds.createDimension("level", levels)
        ds.createDimension("lat", len(lat))
        ds.createDimension("lon", len(lon))
        t = ds.createVariable("time", "i4", ("time",))
        t.units = "hours since 2019-03-01"
        t[:] = np.arange(times) * 6
        if levels is not None:
            lv = ds.createVariable("level", "f4", ("level",))
            lv.units = "millibar"
            lv[:] = np.linspace(1000, 500, levels)
        y = ds.createVariable("lat", "f4", ("lat",))
        y.units = "degrees_north"
        y[:] = lat
        x = ds.createVariable("lon", "f4", ("lon",))
        x.units = "degrees_east"
        x[:] = lon
        dims = ("time",) + (("level",) if levels is not None else ()) + ("lat", "lon")
        if packed:
            v = ds.createVariable(name, "i2", dims, fill_value=np.int16(-32767))
            v.scale_factor = 0.01
            v.add_offset = 280.0
        else:
            v = ds.createVariable(name, "f4", dims, fill_value=np.float32(-9.96921e36))
        v.units = "K"
        v.long_name = "2 metre temperature"
        v[...] = values
        if extra_var:
            w = ds.createVariable(extra_var, "f4", dims)
            w[...] = values
        return v[...]


def smooth_image(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth uint8 test image (gradients plus a blob) of any size."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(seed)
    chans = []
    for c in range(channels):
        a, b = rng.uniform(0.5, 2.0, 2)
        chans.append(0.5 + 0.4 * np.sin(a * x / w * 3 + c) * np.cos(b * y / h * 3))
    return np.clip(np.stack(chans, -1) * 255, 0, 255).astype(np.uint8)


@pytest.fixture()
def rgb_png(tmp_path) -> Path:
    p = tmp_path / "rgb.png"
    Image.fromarray(smooth_image(37, 29)).save(p)
    return p
