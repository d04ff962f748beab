"""Turn a run's best.pth into the shipped weights: same tensors, plus the provenance the model card states.

    python scripts/package_weights.py build/runs/shipped [--status TEXT]

Writes utilise_cli/weights/utilise_s2_4band.pth (atomically) and prints its SHA-256 for
the model card. The wall time is the run's own (log.csv, last row).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from utilise_cli import __version__, load_model, save_checkpoint
from utilise_cli.network.header import identity
from utilise_cli.weights import DEFAULT_WEIGHTS

TRAINING_DATA = ["worldcereal/00002806639B424A", "greenearthnet minicube 29SND (Portugal)",
                 "greenearthnet minicube 34TET (HU/RO)", "greenearthnet/geotiff_portugal"]
VALIDATION_DATA = ["greenearthnet/geotiff_hu_ro (simulated, seed 0, ratio 1.0)"]
LICENSE = "MIT; trained on Contains modified Copernicus Sentinel data 2017-2023"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder of `utilise train configs/shipped.yaml`")
    parser.add_argument("--status", default="", help="a warning that `fill` logs whenever it loads the weights")
    parser.add_argument("--machine", default="2-core CPU", help="where the run trained, for the provenance")
    args = parser.parse_args()
    with open(args.run / "log.csv") as handle:
        minutes = float(list(csv.DictReader(handle))[-1]["seconds"]) / 60
    model = load_model(args.run / "best.pth")
    model.metadata.pop("status", None)
    model.metadata.update(name=DEFAULT_WEIGHTS.stem, license=LICENSE, training_data=TRAINING_DATA,
                          validation_data=VALIDATION_DATA,
                          trained_with=f"utilise train configs/shipped.yaml (utilise {__version__}), "
                                       f"{args.machine}, {minutes:.1f} min")
    if args.status:
        model.metadata["status"] = args.status
    save_checkpoint(model, DEFAULT_WEIGHTS)
    print(f"wrote {DEFAULT_WEIGHTS} (epoch {model.metadata.get('epoch')}, {minutes:.1f} min)")
    print(f"SHA-256 {identity(DEFAULT_WEIGHTS)['checkpoint_sha256']}")


if __name__ == "__main__":
    main()
