"""How the multi-temporal screen (utilise_cli/screen.py) agrees with Sentinel-2 scene classification (SCL) when
SCL is hidden from it: the measure of issue #16 and the data its thresholds were chosen on.

Per source: on frames with 5-90 % SCL cloud (classes 8, 9, 10), the recall of SCL cloud pixels and the precision
of the screen's pixels (a screen pixel counts as right when SCL calls it cloud or shadow, 3, 8, 9, 10); on
frames without any SCL cloud or shadow, the share of pixels the screen flags. Also the precision without the
screen pixels that SCL leaves unclassified (7: often thin cloud or a cloud's edge, neither right nor wrong).

    python scripts/screen_agreement.py [--grid]     # --grid: also the threshold grid (training-policy sources)
    python scripts/screen_agreement.py --figure docs/screen_vs_scl.png

--figure draws, for each training-policy source, the partly cloudy date where the screen flags most pixels that
SCL calls neither cloud nor shadow, beside the nearest clear date: a look at what "imprecise" means there.

Training-policy sources (the thresholds are chosen on these): WorldCereal 00002806639B424A, the Portugal and
HU/RO minicubes. The Sweden minicube is scored, never used for the choice.
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


def minicube(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As `worldcereal`, with B8A for B8; dates without SCL are left out."""
    ds = xr.open_dataset(path)
    keep = np.isfinite(ds["s2_SCL"].values).any(axis=(1, 2))
    refl = np.stack([ds[b].values[keep] for b in ("s2_B02", "s2_B03", "s2_B04", "s2_B8A")], axis=1)
    return refl.astype(np.float32), ds["s2_SCL"].values[keep], _days(ds["time"].values[keep])


def sources() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    cubes = DATA / "greenearthnet" / "minicubes"
    return {"worldcereal Belgium": worldcereal(DATA / "worldcereal" / "00002806639B424A"),
            "minicube Portugal": minicube(next(cubes.glob("JAS2021_*29SND*.nc"))),
            "minicube HU/RO": minicube(next(cubes.glob("MJJ2021_*34TET*.nc"))),
            "minicube Sweden (evaluation only)": minicube(next(cubes.glob("MJJ2021_*34VCL*.nc")))}


def usable(refl: np.ndarray, scl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reflectance with NaN where there is no data, valid T x H x W): valid where every band is finite and SCL
    says something other than no data or saturated (0, 1)."""
    valid = np.isfinite(refl).all(axis=1) & np.isfinite(scl) & ~np.isin(scl, (0, 1))
    return np.where(valid[:, None], refl, np.nan), valid


def agreement(refl: np.ndarray, scl: np.ndarray) -> dict[str, float]:
    from utilise_cli.screen import screen

    refl, valid = usable(refl, scl)
    flagged = screen(refl, None, ["B2", "B3", "B4", "B8"]) & valid
    cloud, occluded = np.isin(scl, CLOUD) & valid, np.isin(scl, OCCLUDED) & valid
    share = cloud.sum(axis=(1, 2)) / np.maximum(valid.sum(axis=(1, 2)), 1)
    partly = (share >= 0.05) & (share <= 0.9)
    clear = (occluded.sum(axis=(1, 2)) == 0) & (valid.sum(axis=(1, 2)) > 0)
    hit = (flagged & cloud)[partly].sum()
    return {"frames": len(scl), "partly": int(partly.sum()), "clear": int(clear.sum()),
            "recall": hit / max(cloud[partly].sum(), 1),
            "precision": (flagged & occluded)[partly].sum() / max(flagged[partly].sum(), 1),
            "precision_no7": (flagged & occluded)[partly].sum() / max((flagged & (scl != UNCLASSIFIED))[partly].sum(), 1),
            "clear_flagged": flagged[clear].sum() / max(valid[clear].sum(), 1)}


def disagreement_figure(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]):
    """One row per case: a date in true colour, the nearest clear date, the reference mask, and where the screen
    and the reference agree (white), the screen alone flags (red) or the reference alone does (blue).

    rows: (title, rgb 3 x H x W of the date, rgb of the clear date, reference H x W bool, screen H x W bool)."""
    import matplotlib.pyplot as plt

    from utilise_cli.pictures import true_colour

    fig, axes = plt.subplots(len(rows), 4, figsize=(11, 3 * len(rows)), squeeze=False)
    for (title, date, clear, reference, flagged), ax in zip(rows, axes):
        agreement = np.zeros(reference.shape + (3,))
        agreement[flagged & reference] = (1, 1, 1)
        agreement[flagged & ~reference] = (1, 0, 0)
        agreement[~flagged & reference] = (0, 0.4, 1)
        panels = (true_colour(date), true_colour(clear), reference, agreement)
        names = (title, "nearest clear date", "reference mask",
                 f"white both, red screen only: {(flagged & ~reference).sum()}/{flagged.sum()}")
        for a, image, name in zip(ax, panels, names):
            a.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
            a.set_title(name, fontsize=8)
            a.set_xticks([])
            a.set_yticks([])
    fig.tight_layout(pad=0.4)
    return fig


def disagreement_case(refl: np.ndarray, scl: np.ndarray, days: np.ndarray, name: str
                      ) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The partly cloudy date with the most screen-only pixels, as a row of disagreement_figure (the reference:
    SCL cloud or shadow, 3, 8, 9, 10)."""
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
    return f"{name}, day {days[i]:.0f}", refl[i][[2, 1, 0]], refl[j][[2, 1, 0]], occluded[i], flagged[i]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", action="store_true", help="score a grid of thresholds on the training sources")
    parser.add_argument("--figure", type=Path, help="draw where the screen and SCL disagree most (PNG)")
    args = parser.parse_args()
    data = sources()
    if args.figure:
        from utilise_cli.pictures import save_figure

        rows = [disagreement_case(*data[name], name) for name in TRAINING]
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
    print("| source | frames (5-90 % cloud / clear) | recall of SCL cloud | precision | precision without SCL 7 "
          "| flagged on clear frames |")
    print("|---|---|---|---|---|---|")
    for name, (refl, scl, _) in data.items():
        r = agreement(refl, scl)
        print(f"| {name} | {r['frames']} ({r['partly']} / {r['clear']}) | {r['recall']:.2f} | {r['precision']:.2f} | "
              f"{r['precision_no7']:.2f} | "
              f"{r['clear_flagged']:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
