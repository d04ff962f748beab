"""``utilise eval``: score a checkpoint or an interpolation baseline on a simulated dataset.

Every method sees the same series, gaps and target masks. Metrics (utilise_cli.metrics) are computed per
series on the pixels whose target is valid, three ways: all pixels, occluded input pixels (inside the
simulated gaps) and observed input pixels; then averaged over series. A network is scored as it outputs
("raw") and with observed pixels kept ("kept"); for baselines the two are the same.

Pixels without a valid target are never scored, but SSIM windows reach across them; every method's values
there are replaced by the target's before SSIM, so that no method gains or loses by what it writes where
nothing can be checked (a baseline writes 0 at never-observed pixels, which matches the zero-filled target).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .adapt import AdaptOptions
from .atomic import write_text
from .baselines import METHODS, interpolate
from .datasets.store import DatasetFile
from .errors import CheckpointError, DatasetError, OutputError
from .inference import model_input, run_network
from .metrics import series_metrics, ssim_map

SUBSETS = ("all", "occluded", "observed")
METRICS = ("mae", "rmse", "psnr", "ssim", "sam")


@dataclass
class Method:
    """A baseline name or a loaded network with a display name."""

    name: str
    model: Any = None
    precision: str = "fp32"

    def predict(self, target: np.ndarray, gaps: np.ndarray, days: np.ndarray) -> np.ndarray:
        """T x C x H x W prediction from the target (NaN = no data) with ``gaps`` hidden."""
        observed = ~gaps & ~np.isnan(target).any(axis=1)
        if self.model is None:
            pred = interpolate(self.name, np.nan_to_num(target), observed, days)
            return np.nan_to_num(pred, nan=0.0)  # never-observed pixels: no value, scored as 0
        return run_network(self.model, model_input(self.model, target, gaps, days)[None], days, self.precision)[0]


@dataclass
class AutoMethod:
    """`fill --method auto` on a series: self-validation on the series' own input (its observed pixels and the
    shapes of its gaps) chooses among linear, adjusted and the network, which then fills it. It sees nothing
    of the hidden target pixels, so its outputs keep the observed pixels like a baseline's."""

    network: Any
    precision: str = "fp32"
    seed: int = 0
    name: str = "auto"
    model: Any = None  # scored like a baseline: its output already keeps the observed pixels
    choices: list[str] | None = None

    def predict(self, target: np.ndarray, gaps: np.ndarray, days: np.ndarray) -> np.ndarray:
        from .inference import NetworkPredictor
        from .validation import candidate_predictors, choose, score_candidates

        observed = ~gaps & ~np.isnan(target).any(axis=1)
        inputs = np.where(observed[:, None], target, np.nan).astype(np.float32)[None]
        candidates = candidate_predictors(NetworkPredictor(self.network, precision=self.precision))
        scores = score_candidates(candidates, inputs, observed[None], days, np.random.default_rng(self.seed))
        chosen, _ = choose(scores)
        if self.choices is not None:
            self.choices.append(chosen)
        pred = candidates[chosen](inputs, observed[None], days)[0]
        return np.nan_to_num(np.where(observed[:, None], target, pred), nan=0.0)


@dataclass
class AdaptedMethod:
    """The network fine-tuned on each series' own input before it fills it (adapt.adapt): it learns from the
    observed pixels and the shapes of the gaps, never from the hidden target pixels."""

    network: Any
    precision: str = "fp32"
    steps: int = AdaptOptions.steps
    name: str = "utilise (adapted)"
    model: Any = None  # scored like a baseline: its output keeps the observed pixels

    def predict(self, target: np.ndarray, gaps: np.ndarray, days: np.ndarray) -> np.ndarray:
        from .adapt import adapt
        from .inference import NetworkPredictor

        observed = ~gaps & ~np.isnan(target).any(axis=1)
        inputs = np.where(observed[:, None], target, np.nan).astype(np.float32)
        tuned = adapt(self.network, inputs, observed, days, AdaptOptions(steps=self.steps))
        pred = NetworkPredictor(tuned, precision=self.precision)(inputs[None], observed[None], days)[0]
        return np.nan_to_num(np.where(observed[:, None], target, pred), nan=0.0)


def load_method(spec: str, device: str = "cpu", precision: str = "fp32") -> Method | AutoMethod | AdaptedMethod:
    """A baseline of baselines.METHODS, 'shipped' (the packaged weights) or a checkpoint path;
    a network spec may end in @bf16 or @fp16 to run it under autocast."""
    if spec in METHODS:
        return Method(spec)
    from .inference import PRECISION_CHOICES
    from .network import load_model
    from .weights import SHIPPED, resolve_checkpoint

    if "@" in spec:
        spec, precision = spec.rsplit("@", 1)
    if precision not in PRECISION_CHOICES:
        raise CheckpointError(f"{spec}@{precision}: precision must be one of {', '.join(PRECISION_CHOICES)}")
    if spec == "auto":
        return AutoMethod(load_model(resolve_checkpoint(SHIPPED), device), precision, choices=[])
    if spec == "adapted" or spec.startswith("adapted:"):  # adapted:STEPS
        steps = int(spec.split(":", 1)[1]) if ":" in spec else AdaptOptions.steps
        return AdaptedMethod(load_model(resolve_checkpoint(SHIPPED), device), precision, steps,
                             f"utilise (adapted, {steps} steps)")
    path = resolve_checkpoint(spec)
    if not path.exists():
        raise CheckpointError(f"{spec}: neither a method nor a checkpoint file; use one of "
                              f"{', '.join(METHODS)}, auto, adapted[:STEPS], shipped, or a .pth path")
    name = "utilise (shipped)" if spec == SHIPPED else path.name
    suffix = "" if precision == "fp32" else f" @{precision}"
    return Method(name + suffix, load_model(path, device), precision)


def evaluate(methods: Sequence[Method], simulated: str | os.PathLike, ratio_key: str | None = None,
             ) -> dict[str, Any]:
    """Scores of every method on every series of ``simulated``.

    Returns {"dataset", "ratio", "series": [names], "results": {method: {variant: {subset: {metric: mean}}}},
    "per_series": {method: {variant: [{subset: {metric: value}}]}}}."""
    per_series: dict[str, dict[str, list[dict[str, dict[str, float]]]]] = {}
    names = []
    with DatasetFile(simulated) as data:
        if data.kind != "simulated":
            raise DatasetError(f"{simulated}: has no simulated gaps; make it with `utilise simulate`")
        ratio_key = ratio_key or data.ratios[0]
        if ratio_key not in data.ratios:
            raise DatasetError(f"{simulated}: no gaps {ratio_key}; it holds {', '.join(data.ratios)}")
        for item in data:
            s = item.series
            gaps = item.gaps[ratio_key].mask
            target = s.frames
            valid = ~np.isnan(target).any(axis=1)
            clean = np.nan_to_num(target)
            names.append(s.name)
            subsets = {"all": valid, "occluded": valid & gaps, "observed": valid & ~gaps}
            for method in methods:
                pred = method.predict(target, gaps, s.days)
                variants = {"raw": pred}
                if method.model is not None:
                    variants["kept"] = np.where((valid & ~gaps)[:, None], clean, pred)
                for variant, p in variants.items():
                    smap = ssim_map(np.where(valid[:, None], p, clean), clean)
                    scores = {k: series_metrics(p, clean, sel, smap) for k, sel in subsets.items()}
                    per_series.setdefault(method.name, {}).setdefault(variant, []).append(scores)
    results = {
        m: {v: {k: {metric: _mean([s[k][metric] for s in rows]) for metric in METRICS} for k in SUBSETS}
            for v, rows in variants.items()}
        for m, variants in per_series.items()
    }
    return {"dataset": str(simulated), "ratio": ratio_key, "series": names, "results": results,
            "per_series": per_series}


def _mean(values: list[float]) -> float:
    known = [v for v in values if not math.isnan(v)]  # inf (a perfect series) stays in: the mean is inf
    return float(np.mean(known)) if known else math.nan


def markdown_table(results: dict[str, Any], subsets: Sequence[str] = SUBSETS) -> str:
    """One row per method and variant; PSNR (dB), SSIM, MAE, RMSE, SAM (degrees) per subset."""
    head = ["method"] + [f"{m.upper()} {k}" for k in subsets for m in ("psnr", "ssim", "mae", "sam")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, variants in results["results"].items():
        for variant, scores in variants.items():
            label = method if variant == "raw" else f"{method} (observed kept)"
            cells = [f"{scores[k][m]:.{2 if m in ('psnr', 'sam') else 4}f}" for k in subsets
                     for m in ("psnr", "ssim", "mae", "sam")]
            lines.append("| " + " | ".join([label] + cells) + " |")
    return "\n".join(lines)


def write_results(results: dict[str, Any], out: str | os.PathLike) -> list[Path]:
    """metrics.json, metrics.md and metrics.png (PSNR per series and method) in the folder ``out``."""
    from .pictures import metrics_figure, save_figure

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the results folder ({err.strerror})") from None
    paths = []
    for name, text in (("metrics.json", json.dumps(results, indent=1)),
                       ("metrics.md", f"Dataset `{results['dataset']}`, gaps {results['ratio']}, "
                                      f"{len(results['series'])} series.\n\n{markdown_table(results)}\n")):
        paths.append(write_text(out / name, text))
    psnr = {m: [s["occluded"]["psnr"] for s in v["raw"]] for m, v in results["per_series"].items()}
    paths.append(save_figure(metrics_figure(psnr, results["series"], "PSNR on occluded input pixels (dB)"),
                             out / "metrics.png"))
    return paths


def seed_study(methods: Sequence[Method], prepared: str | os.PathLike, seeds: Sequence[int], out: str | os.PathLike,
               masks: Sequence[str | os.PathLike] = (), ratio: float = 0.5) -> dict[str, Any]:
    """Simulate ``prepared`` once per seed (into out/seed_N.h5), evaluate every method on each, and
    summarise over seeds: mean and standard deviation of each seed's series-averaged score."""
    from .datasets.simulate import simulate
    from .datasets.store import gaps_key

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in seeds:
        path = out / f"seed_{seed}.h5"
        simulate(prepared, path, seed=seed, ratios=[ratio], masks=masks)
        result = evaluate(methods, path, gaps_key(ratio))
        write_results(result, out / f"seed_{seed}")
        runs.append(result)
    summary: dict[str, Any] = {"dataset": str(prepared), "seeds": list(seeds), "ratio": ratio, "methods": {}}
    for name, variants in runs[0]["results"].items():
        for variant in variants:
            label = name if variant == "raw" else f"{name} (observed kept)"
            summary["methods"][label] = {
                subset: {metric: {"mean": float(np.mean(vals)), "std": _std(vals), "per_seed": vals}
                         for metric in METRICS
                         for vals in [[r["results"][name][variant][subset][metric] for r in runs]]}
                for subset in SUBSETS}
    return summary


def _std(values: list[float]) -> float:
    """Spread over seeds; 0 for identical values, inf ones included (a perfect score on every seed)."""
    return 0.0 if len(set(values)) == 1 else float(np.std(values))


def seed_table(summary: dict[str, Any], reference: str = "linear") -> str:
    """Markdown: occluded-pixel PSNR / SSIM / MAE / SAM (mean ± std over seeds) and the PSNR gain over ``reference``."""
    lines = ["| method | PSNR occluded (dB) | gain vs linear (dB) | SSIM occluded | MAE occluded | SAM occluded (deg) | PSNR all (dB) |",
             "|---|---|---|---|---|---|---|"]
    ref = summary["methods"].get(reference, {}).get("occluded", {}).get("psnr")
    for label, scores in summary["methods"].items():
        occ = scores["occluded"]
        gain = "-"
        if ref is not None:
            diffs = np.array(occ["psnr"]["per_seed"]) - np.array(ref["per_seed"])
            gain = f"{diffs.mean():+.2f} ± {diffs.std():.2f}"
        lines.append(f"| {label} | {occ['psnr']['mean']:.2f} ± {occ['psnr']['std']:.2f} | {gain} | "
                     f"{occ['ssim']['mean']:.4f} ± {occ['ssim']['std']:.4f} | {occ['mae']['mean']:.4f} | "
                     f"{occ['sam']['mean']:.2f} | {scores['all']['psnr']['mean']:.2f} |")
    return "\n".join(lines)
