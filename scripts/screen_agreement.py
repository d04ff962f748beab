"""How the multi-temporal screen (utilise_cli/screen.py) agrees with Sentinel-2 scene classification (SCL) when
SCL is hidden from it: the measure of issue #16 and the data its thresholds were chosen on.

Per source: on frames with 5-90 % SCL cloud (classes 8, 9, 10), the recall of SCL cloud pixels and the precision
of the screen's pixels (a screen pixel counts as right when SCL calls it cloud or shadow, 3, 8, 9, 10); on
frames without any SCL cloud or shadow, the share of pixels the screen flags. Also the precision without the
screen pixels that SCL leaves unclassified (7: often thin cloud or a cloud's edge, neither right nor wrong).
The same against a second reference made without SCL, the minicubes' deep-learning cloud mask (s2_dlmask).

    python scripts/screen_agreement.py [--grid]     # --grid: also the threshold grid (training-policy sources)
    python scripts/screen_agreement.py --figure docs/screen_vs_scl.png

--figure draws, for each training-policy source, the partly cloudy date where the screen flags most pixels that
SCL calls neither cloud nor shadow, beside the nearest clear date: a look at what "imprecise" means there.

Training-policy sources (the thresholds are chosen on these): WorldCereal 00002806639B424A, the Portugal and
HU/RO minicubes. The Sweden minicube is scored, never used for the choice. The three GeoTIFF folders (Portugal
and HU/RO training, Sweden evaluation) are scored as well; none of their frames has 5-90 % SCL cloud.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLOUD, OCCLUDED, UNCLASSIFIED = (8, 9, 10), (3, 8, 9, 10), 7
DL_CLOUD, DL_OCCLUDED = (1, 2), (1, 2, 3)  # the minicubes' s2_dlmask: thick and thin cloud; and shadow
TRAINING = ("worldcereal Belgium", "minicube Portugal", "minicube HU/RO")


def _days(times: np.ndarray) -> np.ndarray:
    return ((times - times[0]) / np.timedelta64(1, "D")).astype(np.float32)


def worldcereal(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reflectance T x 4 x H x W (B2, B3, B4, B8), SCL T x H x W (upsampled to 10 m), days since the first date."""
    ten = next(folder.glob("S2_L2A_10m_*.nc"))
    ds = xr.open_dataset(ten)
    raw = xr.open_dataset(ten.with_name(ten.name.replace("_10m_", "_20m_")), decode_cf=False)
    refl = np.stack([ds[b].values for b in ("B02", "B03", "B04", "B08")], axis=1).astype(np.float32)
    scl = raw["SCL"].values.astype(np.float32)
    fy, fx = refl.shape[-2] // scl.shape[1], refl.shape[-1] // scl.shape[2]
    scl = np.repeat(np.repeat(scl, fy, axis=1), fx, axis=2)[:, :refl.shape[-2], :refl.shape[-1]]
    return refl, scl, _days(ds["timestamp"].values)


def _acquired(ds: xr.Dataset) -> np.ndarray:
    """The minicube's dates with an acquisition (its daily axis is all NaN on the others)."""
    return np.isfinite(ds["s2_SCL"].values).any(axis=(1, 2))


def minicube(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As `worldcereal`, with B8A for B8; dates without SCL are left out."""
    ds = xr.open_dataset(path)
    keep = _acquired(ds)
    refl = np.stack([ds[b].values[keep] for b in ("s2_B02", "s2_B03", "s2_B04", "s2_B8A")], axis=1)
    return refl.astype(np.float32), ds["s2_SCL"].values[keep], _days(ds["time"].values[keep])


def geotiff_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As `worldcereal`, from a folder of Earth Engine S2_SR GeoTIFFs read as `fill` reads them (scenes on
    another grid reprojected onto the first's; DN 0 is no data)."""
    from utilise_cli.cube import open_folder
    from utilise_cli.options import ReadOptions

    cube = open_folder(folder, ["B2", "B3", "B4", "B8"], ReadOptions(screen=False, mask_buffer=0, align=True))
    raw = np.asarray(cube.reflectance.data)
    scales, offsets = (np.asarray(v, np.float32)[:, None, None, None] for v in (cube.scales, cube.offsets))
    refl = np.where(raw == 0, np.nan, raw * scales + offsets).astype(np.float32)
    scl = np.asarray(cube.mask.data).astype(np.float32)
    days = np.array([(d - cube.dates[0]).days for d in cube.dates], np.float32)
    return refl, scl, days


CUBES = {"minicube Portugal": "JAS2021_*29SND*.nc", "minicube HU/RO": "MJJ2021_*34TET*.nc",
         "minicube Sweden (evaluation only)": "MJJ2021_*34VCL*.nc"}


def sources() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    cubes = DATA / "greenearthnet" / "minicubes"
    folders = DATA / "greenearthnet"
    return {"worldcereal Belgium": worldcereal(DATA / "worldcereal" / "00002806639B424A"),
            **{name: minicube(next(cubes.glob(pattern))) for name, pattern in CUBES.items()},
            "GeoTIFF Portugal": geotiff_folder(folders / "geotiff_portugal"),
            "GeoTIFF HU/RO": geotiff_folder(folders / "geotiff_hu_ro"),
            "GeoTIFF Sweden (evaluation only)": geotiff_folder(folders / "geotiff_sweden_T34VCL")}


def deep_masks() -> dict[str, np.ndarray]:
    """The minicubes' own cloud masks (s2_dlmask, T x H x W, on the dates of `sources`): GreenEarthNet's
    deep-learning mask, a reference made without SCL (the data README calls Sweden's unreliable)."""
    cubes = DATA / "greenearthnet" / "minicubes"
    out = {}
    for name, pattern in CUBES.items():
        ds = xr.open_dataset(next(cubes.glob(pattern)))
        out[name] = ds["s2_dlmask"].values[_acquired(ds)]
    return out


def usable(refl: np.ndarray, scl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reflectance with NaN where there is no data, valid T x H x W): valid where every band is finite and SCL
    says something other than no data or saturated (0, 1)."""
    valid = np.isfinite(refl).all(axis=1) & np.isfinite(scl) & ~np.isin(scl, (0, 1))
    return np.where(valid[:, None], refl, np.nan), valid


def agreement(refl: np.ndarray, scl: np.ndarray, dlmask: np.ndarray | None = None) -> dict[str, float]:
    """The screen's scores against SCL, and against the minicube's deep-learning cloud mask where given (dlmask
    T x H x W: 0 clear, 1 thick cloud, 2 thin cloud, 3 shadow; keys prefixed dl_)."""
    from utilise_cli.screen import screen

    refl, valid = usable(refl, scl)
    flagged = screen(refl, None, ["B2", "B3", "B4", "B8"]) & valid
    out = scores(flagged, valid, np.isin(scl, CLOUD), np.isin(scl, OCCLUDED), scl == UNCLASSIFIED)
    if dlmask is not None:
        dl = scores(flagged, valid, np.isin(dlmask, DL_CLOUD), np.isin(dlmask, DL_OCCLUDED),
                    np.zeros_like(valid))
        out.update({f"dl_{k}": v for k, v in dl.items()})
    return out


def scores(flagged: np.ndarray, valid: np.ndarray, cloud: np.ndarray, occluded: np.ndarray,
           unclassified: np.ndarray) -> dict[str, float]:
    """Recall of the reference's cloud and precision of the screen's pixels (right where the reference calls
    them cloud or shadow) on frames with 5-90 % reference cloud; the share flagged on frames the reference
    calls clear. All arrays T x H x W bool."""
    cloud, occluded = cloud & valid, occluded & valid
    share = cloud.sum(axis=(1, 2)) / np.maximum(valid.sum(axis=(1, 2)), 1)
    partly = (share >= 0.05) & (share <= 0.9)
    clear = (occluded.sum(axis=(1, 2)) == 0) & (valid.sum(axis=(1, 2)) > 0)
    hit = (flagged & cloud)[partly].sum()
    return {"frames": len(valid), "partly": int(partly.sum()), "clear": int(clear.sum()),
            "recall": hit / max(cloud[partly].sum(), 1),
            "precision": (flagged & occluded)[partly].sum() / max(flagged[partly].sum(), 1),
            "precision_no7": (flagged & occluded)[partly].sum() / max((flagged & ~unclassified)[partly].sum(), 1),
            "clear_flagged": flagged[clear].sum() / max(valid[clear].sum(), 1)}


Case = tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None"]


def disagreement_figure(rows: list[Case]):
    """One row per case: a date in true colour, the nearest clear date, the reference mask, and where the screen
    and the reference agree (white), the screen alone flags (red) or the reference alone does (blue); the same
    against a second reference where there is one.

    rows: (title, rgb 3 x H x W of the date, rgb of the clear date, reference H x W bool, screen H x W bool,
    second reference H x W bool or None)."""
    import matplotlib.pyplot as plt

    from utilise_cli.pictures import true_colour

    def compared(reference: np.ndarray, flagged: np.ndarray) -> np.ndarray:
        image = np.zeros(reference.shape + (3,))
        image[flagged & reference] = (1, 1, 1)
        image[flagged & ~reference] = (1, 0, 0)
        image[~flagged & reference] = (0, 0.4, 1)
        return image

    fig, axes = plt.subplots(len(rows), 5, figsize=(13.5, 3 * len(rows)), squeeze=False)
    for (title, date, clear, reference, flagged, second), ax in zip(rows, axes):
        panels = [(true_colour(date), title), (true_colour(clear), "nearest clear date"),
                  (reference, "SCL cloud or shadow"),
                  (compared(reference, flagged),
                   f"vs SCL: red screen only {(flagged & ~reference).sum()}/{flagged.sum()}")]
        if second is not None:
            panels.append((compared(second, flagged),
                           f"vs the cube's cloud mask: red {(flagged & ~second).sum()}/{flagged.sum()}"))
        for a, (image, name) in zip(ax, panels):
            a.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
            a.set_title(name, fontsize=8)
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
        if second is None:
            ax[-1].axis("off")
            ax[-1].text(0.5, 0.5, "no second mask\nfor this source", ha="center", va="center", fontsize=8)
    fig.tight_layout(pad=0.4)
    return fig


def disagreement_case(refl: np.ndarray, scl: np.ndarray, days: np.ndarray, name: str,
                      dlmask: np.ndarray | None = None) -> Case:
    """The partly cloudy date with the most screen-only pixels, as a row of disagreement_figure (the reference:
    SCL cloud or shadow, 3, 8, 9, 10; the second: dlmask cloud or shadow, where given)."""
    from utilise_cli.screen import screen

    refl, valid = usable(refl, scl)
    flagged = screen(refl, None, ["B2", "B3", "B4", "B8"]) & valid
    cloud, occluded = np.isin(scl, CLOUD) & valid, np.isin(scl, OCCLUDED) & valid
    share = cloud.sum(axis=(1, 2)) / np.maximum(valid.sum(axis=(1, 2)), 1)
    partly = (share >= 0.05) & (share <= 0.9)
    alone = np.where(partly, (flagged & ~occluded).sum(axis=(1, 2)), -1)
    i = int(np.argmax(alone))
    clear = np.flatnonzero((occluded.sum(axis=(1, 2)) == 0) & (valid.mean(axis=(1, 2)) > 0.95))
    j = int(clear[np.argmin(np.abs(days[clear] - days[i]))])
    second = None if dlmask is None else np.isin(dlmask[i], DL_OCCLUDED) & valid[i]
    return f"{name}, day {days[i]:.0f}", refl[i][[2, 1, 0]], refl[j][[2, 1, 0]], occluded[i], flagged[i], second


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", action="store_true", help="score a grid of thresholds on the training sources")
    parser.add_argument("--figure", type=Path, help="draw where the screen and SCL disagree most (PNG)")
    args = parser.parse_args()
    data = sources()
    if args.figure:
        from utilise_cli.pictures import save_figure

        deep = deep_masks()
        rows = [disagreement_case(*data[name], name, deep.get(name)) for name in TRAINING]
        print(save_figure(disagreement_figure(rows), args.figure, dpi=80))
        return 0
    if args.grid:
        import utilise_cli.screen as screen

        for blue in (0.03, 0.04, 0.06):
            for ratio in (0.0, 0.8, 1.0):
                screen.CLOUD_BLUE, screen.CLOUD_RED, screen.BLUE_OVER_RED = blue, blue * 0.75, ratio
                rows = [agreement(*data[name][:2]) for name in TRAINING]
                print(f"blue {blue:.2f} red {blue * 0.75:.3f} blue/red {ratio:.1f}: " + "  ".join(
                    f"R {r['recall']:.2f} P {r['precision']:.2f} clear {r['clear_flagged']:.1%}" for r in rows))
        return 0
    deep = deep_masks()
    results = {name: agreement(refl, scl, deep.get(name)) for name, (refl, scl, _) in data.items()}
    print("| source | frames (5-90 % cloud / clear) | recall of SCL cloud | precision | precision without SCL 7 "
          "| flagged on clear frames |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        scored = (f"{r['recall']:.2f} | {r['precision']:.2f} | {r['precision_no7']:.2f}" if r["partly"]
                  else "- | - | -")
        print(f"| {name} | {r['frames']} ({r['partly']} / {r['clear']}) | {scored} | "
              + (f"{r['clear_flagged']:.1%} |" if r["clear"] else "- |"))
    print("\nThe screen and the minicubes' deep-learning cloud mask (s2_dlmask: cloud 1, 2; cloud or shadow 1, 2, 3)"
          " scored alike, recall / precision, against SCL and against each other (SCL against the mask too):\n")
    print("| source | screen vs SCL | mask vs SCL | screen vs mask | SCL vs mask |")
    print("|---|---|---|---|---|")
    for name, dlmask in deep.items():
        refl, scl, _ = data[name]
        valid = usable(refl, scl)[1]
        mask_vs_scl = scores(np.isin(dlmask, DL_OCCLUDED) & valid, valid, np.isin(scl, CLOUD),
                             np.isin(scl, OCCLUDED), scl == UNCLASSIFIED)
        scl_vs_mask = scores(np.isin(scl, OCCLUDED) & valid, valid, np.isin(dlmask, DL_CLOUD),
                             np.isin(dlmask, DL_OCCLUDED), np.zeros_like(valid))
        r = results[name]
        print(f"| {name} | {r['recall']:.2f} / {r['precision']:.2f} | "
              f"{mask_vs_scl['recall']:.2f} / {mask_vs_scl['precision']:.2f} | "
              f"{r['dl_recall']:.2f} / {r['dl_precision']:.2f} (clear {r['dl_clear_flagged']:.1%}) | "
              f"{scl_vs_mask['recall']:.2f} / {scl_vs_mask['precision']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
