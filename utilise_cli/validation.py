"""Self-validation: which method fills this scene best, judged on the scene itself.

Observed pixels of some dates are hidden under the real cloud masks of the scene's other dates (copies
shifted by a random offset), every candidate fills them from what is left, and its error on exactly those
pixels is scored. The masks come from the scene, so the validation sees the scene's own cover per date,
near-total cover included (where the `adjusted` interpolation is weakest). Seeded and deterministic.

Masks here are ``observed`` (True = a valid, cloud-free pixel), as on the whole fill path; ``hidden`` marks
the pixels taken away for validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from typing import TYPE_CHECKING, Sequence

from .inference import Predictor
from .plan import SELF_VALIDATION_CHIPS

if TYPE_CHECKING:  # the array functions here need no raster stack; select_method reads a plan's cube
    from .plan import FillPlan

MIN_MASK_COVER = 0.01  # a date's mask is used as a validation shape when it covers at least this share
HIDE_RATIO = 0.5  # share of the dates (with observed pixels) that get a validation mask, as in training
MARGIN_DB = 0.05  # a method must beat the simpler one by this much (pooled) to be chosen over it
DRAWS = 4  # validation splits per chip; a method must win on every one of them
FALLBACK = "linear"


@dataclass
class Score:
    """Errors of one method on the hidden pixels (reflectance 0..1, every band): sums and the pixel count."""

    pixels: int = 0
    squared: float = 0.0
    absolute: float = 0.0
    per_draw: dict[int, list[float]] = field(default_factory=dict)  # draw -> [values, squared error]
    stopped: int | None = None  # the draw it stopped after, having lost it (score_candidates' pruning)

    def add(self, pred: np.ndarray, truth: np.ndarray, draw: int = 0) -> None:
        diff = pred.astype(np.float64) - truth
        squared = float(np.square(diff).sum())
        self.pixels += diff.size
        self.squared += squared
        self.absolute += float(np.abs(diff).sum())
        values = self.per_draw.setdefault(draw, [0, 0.0])
        values[0] += diff.size
        values[1] += squared

    def draw_mse(self) -> dict[int, float]:
        return {d: sq / n for d, (n, sq) in self.per_draw.items() if n}

    @property
    def psnr(self) -> float:
        """dB, data range 1, from the pooled RMSE; NaN without pixels."""
        if not self.pixels:
            return math.nan
        mse = self.squared / self.pixels
        return math.inf if mse == 0 else -10 * math.log10(mse)

    @property
    def mae(self) -> float:
        return self.absolute / self.pixels if self.pixels else math.nan


@dataclass
class Selection:
    """The scores of every candidate and the one chosen, with the reason."""

    scores: dict[str, Score]
    chosen: str
    reason: str
    chips: int = 0
    details: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"chosen": self.chosen, "reason": self.reason, "chips": self.chips,
                "scores": {name: {"psnr_db": round(s.psnr, 3), "mae": round(s.mae, 5), "values": s.pixels,
                                  "draws": len(s.per_draw), "stopped": s.stopped is not None}
                           for name, s in self.scores.items()}}

    def line(self) -> str:
        def shown(name: str, s: Score) -> str:
            if s.stopped is None:
                return f"{name} {s.psnr:.2f} dB"
            ran = "draw 1" if s.stopped == 0 else f"draws 1-{s.stopped + 1}"
            return f"{name} {s.psnr:.2f} dB on {ran} only, having lost draw {s.stopped + 1} to a simpler method"

        table = ", ".join(shown(n, s) for n, s in self.scores.items())
        return f"self-validation on {self.chips} chips: {table}; chose {self.chosen} ({self.reason})"


def candidate_predictors(network: Predictor) -> dict[str, Predictor]:
    """What `auto` chooses from, simplest first (the order :func:`choose` relies on)."""
    from .inference import BaselinePredictor

    return {"linear": BaselinePredictor("linear"), "adjusted": BaselinePredictor("adjusted"), "utilise": network}


def validation_masks(observed: np.ndarray, rng: np.random.Generator, ratio: float = HIDE_RATIO) -> np.ndarray:
    """T x H x W: observed pixels to hide. For ceil(ratio * n) of the n dates that have observed pixels, the
    unobserved pattern of another date (covering at least MIN_MASK_COVER), rolled by a random offset."""
    t, h, w = observed.shape
    hidden = np.zeros_like(observed)
    cover = 1.0 - observed.reshape(t, -1).mean(axis=1)
    shapes = np.flatnonzero(cover >= MIN_MASK_COVER)
    dates = np.flatnonzero(observed.reshape(t, -1).any(axis=1))
    if len(shapes) == 0 or len(dates) < 2:
        return hidden
    for d in rng.choice(dates, size=math.ceil(ratio * len(dates)), replace=False):
        others = shapes[shapes != d]
        source = int(rng.choice(others if len(others) else shapes))
        shift = (int(rng.integers(h)), int(rng.integers(w)))
        hidden[d] = np.roll(~observed[source], shift, axis=(0, 1)) & observed[d]
    return hidden


def score_candidates(candidates: dict[str, Predictor], reflectance: np.ndarray, observed: np.ndarray,
                     days: np.ndarray, rng: np.random.Generator | Sequence[np.random.Generator],
                     draws: int = DRAWS, batch_size: int | None = None, prune: bool = True) -> dict[str, Score]:
    """Every candidate's errors on ``draws`` validation splits of chips.

    reflectance B x T x C x H x W (0..1, anything where not observed), observed B x T x H x W, days T; ``rng``
    draws the hidden pixels, one generator per chip or one for all; the predictors get ``batch_size`` chips at
    a time (default: all).

    Candidates are scored one after the other, simplest first, draw by draw. With ``prune`` one stops at the
    first draw it loses to the choice among the simpler ones: :func:`choose` wants a win on every draw, so it
    could no longer be chosen, and the choice is the one every draw would give. Its score then holds the draws
    it ran (``stopped``)."""
    scores: dict[str, Score] = {}
    rngs = [rng] * len(observed) if isinstance(rng, np.random.Generator) else list(rng)
    hidden = [np.stack([validation_masks(o, r) for o, r in zip(observed, rngs)]) for _ in range(draws)]
    step = batch_size or len(observed)
    names = list(candidates)
    for k, name in enumerate(names):
        score = scores[name] = Score()
        rival = choose({n: scores[n] for n in names[:k]})[0] if prune and k else None
        for draw, hide in enumerate(hidden):
            for b in range(0, len(observed), step):
                chips = slice(b, b + step)
                if not hide[chips].any():
                    continue
                kept = observed[chips] & ~hide[chips]
                where = np.broadcast_to(hide[chips, :, None], reflectance[chips].shape)
                # the hidden values never go in
                inputs = np.where(kept[:, :, None], reflectance[chips], np.nan).astype(np.float32)
                score.add(candidates[name](inputs, kept, days)[where], reflectance[chips][where], draw)
            if rival is not None and _lost(score, scores[rival], draw):
                score.stopped = draw
                break
    return scores


def _lost(score: Score, rival: Score, draw: int) -> bool:
    """Whether ``score`` is no better than ``rival`` on ``draw`` (both scored on its pixels)."""
    mine, theirs = score.draw_mse(), rival.draw_mse()
    return draw in mine and draw in theirs and mine[draw] >= theirs[draw]


def choose(scores: dict[str, Score], margin_db: float = MARGIN_DB) -> tuple[str, str]:
    """(method, reason). Candidates are taken in their order, simplest first (linear, adjusted, the network):
    one replaces the current choice only when it beats it by ``margin_db`` pooled AND on every validation
    draw, so a lucky split cannot pick a method that is worse on the scene. A candidate stopped early (it lost
    a draw to the current choice) is passed over."""
    if FALLBACK not in scores or math.isnan(scores[FALLBACK].psnr):
        return FALLBACK, "nothing to validate on"
    chosen, reason = FALLBACK, f"nothing beats linear by {margin_db} dB on every draw"
    for name, score in scores.items():
        if name == chosen or math.isnan(score.psnr) or score.stopped is not None:
            continue
        current = scores[chosen]
        mine, theirs = score.draw_mse(), current.draw_mse()
        if score.psnr - current.psnr >= margin_db and all(mine[d] < theirs[d] for d in theirs):
            gain = score.psnr - scores[FALLBACK].psnr
            chosen, reason = name, f"+{gain:.2f} dB over linear, better than the simpler methods on every draw"
    return chosen, reason


def select_method(plan: FillPlan, candidates: dict[str, Predictor], batch_size: int = 4,
                  max_chips: int = SELF_VALIDATION_CHIPS,
                  seed: int = 0) -> Selection:
    """Score ``candidates`` on up to ``max_chips`` chips of the plan drawn at random (seeded) among the chips
    that have clouds to learn shapes from, and choose one (see :func:`choose`). Each chip draws its hidden
    pixels from a generator of its own (seed, chip index), so that they do not depend on the other chips drawn;
    all are drawn before any candidate runs, so that the choice does not depend on ``batch_size`` (1 on a CPU,
    16 on a GPU) either.

    The chips are held until every candidate is scored: at most ``max_chips`` x T x C x chip^2 reflectance
    values (8 chips of 10 dates, 4 bands and 128 px: 21 MB)."""
    from .cube import read_rows

    rng = np.random.default_rng(seed)
    cube, chip = plan.cube, plan.chip_size
    origins = [(y0, x0) for y0 in plan.rows for x0 in plan.cols]
    chips: list[tuple[np.ndarray, np.ndarray, np.random.Generator]] = []
    for index in rng.permutation(len(origins)):
        if len(chips) >= max_chips:
            break
        y0, x0 = origins[index]
        refl, observed = read_rows(cube, y0, min(y0 + chip, cube.grid.height), x0, x0 + chip)
        cover = 1.0 - observed.reshape(len(observed), -1).mean(axis=1)
        if not (cover >= MIN_MASK_COVER).any() or (cover < 1).sum() < 2:
            continue
        chips.append((refl, observed, np.random.default_rng([seed, int(index)])))
    count, scores = len(chips), {name: Score() for name in candidates}
    if chips:
        refl, observed, rngs = np.stack([c[0] for c in chips]), np.stack([c[1] for c in chips]), [c[2] for c in chips]
        chips.clear()  # the chips read let go once stacked: two copies through the scoring were 0.2 GB at 70 dates
        scores = score_candidates(candidates, refl, observed, cube.days, rngs, batch_size=batch_size)
    chosen, reason = choose(scores)
    return Selection(scores, chosen, reason, count)
