"""Rate-distortion analysis of measured curves: joining a network's bit depths into one curve,
Bjøntegaard delta rate, rates at a target error."""

from __future__ import annotations

import re
import warnings

import numpy as np

from ..errors import InputError


def rate_at_rmse(points: list[dict], rmse: float) -> float | None:
    """Rate of a curve at `rmse` (log rate linear in log RMSE between the two nearest points);
    None outside the measured range."""
    pts = sorted((p["rmse"], p["bpp"]) for p in points if p.get("rmse", 0) > 0 and p["bpp"] > 0)
    if len(pts) < 2 or not pts[0][0] <= rmse <= pts[-1][0]:
        return None
    e, r = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.exp(np.interp(np.log(rmse), e, r)))


def interpolate_psnr(points: list[dict], bpp: float) -> float | None:
    """PSNR of a curve at `bpp` (linear in bpp); None outside the measured range."""
    xs = [p["bpp"] for p in points]
    if not xs or bpp < min(xs) or bpp > max(xs):
        return None
    return float(np.interp(bpp, xs, [p["psnr"] for p in points]))


def matched(summary: dict[str, list[dict]], anchor: str = "jpeg") -> list[dict]:
    """Each coin point next to the anchor's PSNR at the same rate (interpolated on its curve)."""
    rows = []
    for codec, pts in summary.items():
        if codec == anchor or anchor not in summary:
            continue
        for p in pts:
            a = interpolate_psnr(summary[anchor], p["bpp"])
            rows.append({"codec": codec, "bpp": p["bpp"], "psnr": p["psnr"], f"{anchor}_psnr": a,
                         "delta_db": None if a is None else p["psnr"] - a,
                         f"{anchor}_min_bpp": min(q["bpp"] for q in summary[anchor])})
    return rows


def curves(summary: dict[str, list[dict]]) -> dict[str, list[tuple[float, float]]]:
    """Rate-distortion curves: each baseline's points, and coin codecs that differ only in their
    bit depth (NAME-b3, NAME-b4, ...) joined into one curve NAME."""
    out: dict[str, list[tuple[float, float]]] = {}
    for codec, pts in summary.items():
        key = re.sub(r"-b\d+$", "", codec)
        out.setdefault(key, []).extend((p["bpp"], p["psnr"]) for p in pts)
    return {k: sorted(v) for k, v in out.items()}


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjøntegaard delta rate in percent (negative: test needs less rate for the same PSNR), by the
    `bjontegaard` package with pchip interpolation of log-rate over PSNR on the overlapping PSNR
    interval (as the video coding groups' common test conditions compute it). Points that would make
    PSNR non-increasing in rate are dropped first. None without overlap or with fewer than 2 points."""

    def monotone(curve):
        pts, best = [], -np.inf
        for r, q in sorted(curve):
            if q > best and r > 0:
                pts.append((r, q))
                best = q
        return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])

    ra, qa = monotone(anchor)
    rt, qt = monotone(test)
    if len(qa) < 2 or len(qt) < 2 or min(qa.max(), qt.max()) <= max(qa.min(), qt.min()):
        return None
    bjontegaard = _bjontegaard()
    with warnings.catch_warnings():  # it warns when the curves overlap over less than 3/4 of their range
        warnings.simplefilter("ignore")
        return float(bjontegaard.bd_rate(ra, qa, rt, qt, method="pchip", require_matching_points=False))


def _bjontegaard():
    try:
        import bjontegaard
    except ImportError:
        raise InputError("BD-rates need the bjontegaard package (pip install bjontegaard, or coin's [bench] "
                         "extra)") from None
    return bjontegaard


def bd_report(measured: dict[str, list[tuple[float, float]]], published: dict[str, list[tuple[float, float]]],
              anchor: str, comparable: bool, coin_curves: set[str]) -> dict:
    """BD-rate of every curve against `anchor`, and of each coin curve against every other curve
    (published curves too where they were measured on the same data, `comparable`)."""
    all_curves = {**measured, **published} if comparable else dict(measured)
    vs_anchor = {name: bd_rate(all_curves[anchor], pts) for name, pts in all_curves.items()
                 if name != anchor} if anchor in all_curves else {}
    matrix = {c: {k: bd_rate(v, measured[c]) for k, v in all_curves.items() if k != c}
              for c in sorted(coin_curves) if c in measured}
    return {"method": "bjontegaard package, pchip log-rate over PSNR, overlapping PSNR range", "anchor": anchor,
            "vs_anchor": vs_anchor, "coin_vs_each": matrix}


def at_rmse(summary: dict[str, list[dict]], target: float, bits_raw: int, coin: set[str]) -> dict:
    """Each curve's rate and compression ratio at `target` RMSE, and each point of the `coin` codecs
    against every other curve at that point's RMSE (how many times smaller coin's file is)."""
    joined: dict[str, list[dict]] = {}
    for codec, pts in summary.items():
        joined.setdefault(re.sub(r"-b\d+$", "", codec), []).extend(pts)
    curves_at = {}
    for name, pts in joined.items():
        rate = rate_at_rmse(pts, target)
        curves_at[name] = None if rate is None else {"rate": rate, "ratio": bits_raw / rate}
    others = {n: pts for n, pts in joined.items() if not any(re.sub(r"-b\d+$", "", c) == n for c in coin)}
    points = []
    for name in sorted(coin):
        for p in summary[name]:
            row = {"codec": name, "rate": p["bpp"], "rmse": p.get("rmse")}
            for other, pts in others.items():
                r = rate_at_rmse(pts, p["rmse"]) if p.get("rmse") else None
                row[f"{other}_rate"] = r
                row[f"{other}_over_coin"] = None if r is None else r / p["bpp"]
            points.append(row)
    return {"rmse": target, "raw_bits_per_value": bits_raw,
            "method": "log rate interpolated linearly in log RMSE between measured points", "curves": curves_at,
            "others": list(others), "coin_points_matched": points}
