"""Self-validation and `auto`: scored on the scene's own pixels, never on what it must fill; falls back to linear."""

from __future__ import annotations

import json

import numpy as np
import rasterio
import torch

from utilise_cli.adapt import AdaptOptions, adapt
from utilise_cli.cube import open_folder, read_rows
from utilise_cli.evaluate import AutoMethod
from utilise_cli.fill import FillOptions, fill
from utilise_cli.inference import BaselinePredictor, NetworkPredictor
from utilise_cli.network import load_model
from utilise_cli.validation import choose, score_candidates, validation_masks
from utilise_cli.weights import DEFAULT_WEIGHTS

from .conftest import ROOT

SAMPLE = ROOT / "sample_data"


def _sample_masks(size: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sample's real reflectance, observed mask (T x H x W) and days on a size x size window."""
    cube = open_folder(SAMPLE, ["B2", "B3", "B4", "B8"])
    refl, observed = read_rows(cube, 0, size)
    return refl[..., :size], observed[..., :size], cube.days


def test_validation_masks_hide_only_observed_pixels_in_the_shapes_of_the_scenes_own_masks():
    _, observed, _ = _sample_masks()
    hidden = validation_masks(observed, np.random.default_rng(0))
    assert hidden.any() and not (hidden & ~observed).any()
    dates = np.flatnonzero(observed.reshape(len(observed), -1).any(axis=1))
    assert hidden.reshape(len(hidden), -1).any(axis=1).sum() <= int(np.ceil(0.5 * len(dates)))
    # a hidden area is a shifted copy of some date's unobserved area (checked on the first one)
    for t in np.flatnonzero(hidden.reshape(len(hidden), -1).any(axis=1))[:1]:
        assert any((hidden[t] <= np.roll(~observed[s], (dy, dx), axis=(0, 1))).all()
                   for s in range(len(observed)) for dy in range(96) for dx in range(96)
                   if (hidden[t] & np.roll(~observed[s], (dy, dx), axis=(0, 1))).sum() == hidden[t].sum())


def test_auto_falls_back_to_linear_where_adjusted_and_the_network_are_worse():
    _, observed, days = _sample_masks()
    rng = np.random.default_rng(1)
    t, h, w = observed.shape
    # A random walk in time at every pixel, each pixel on its own: linear interpolation by days is the best
    # guess between two dates (a Brownian bridge), and a date's anomaly on its observed pixels says nothing of
    # its gaps. (White noise about a line would not do: averaging the two neighbours alike beats weighting them
    # by days there, and adjusted's lean finds that.)
    spread = 0.003 * np.sqrt(np.diff(days, prepend=days[0]) + 1).reshape(-1, 1, 1, 1)
    truth = (rng.uniform(0.05, 0.3, (1, 4, h, w)) + np.cumsum(rng.normal(0, 1, (t, 4, h, w)) * spread, axis=0)
             ).astype(np.float32)
    network = load_model(DEFAULT_WEIGHTS)
    with torch.no_grad():
        network.head.conv2.bias += 0.05  # a network that is off by 0.05 everywhere
    candidates = {"linear": BaselinePredictor("linear"), "adjusted": BaselinePredictor("adjusted"),
                  "utilise": NetworkPredictor(network)}
    scores = score_candidates(candidates, truth[None], observed[None], days, np.random.default_rng(0))
    assert scores["utilise"].psnr < scores["linear"].psnr - 3
    assert scores["adjusted"].psnr < scores["linear"].psnr and scores["adjusted"].stopped is not None
    assert choose(scores)[0] == "linear"


def test_auto_in_eval_never_sees_the_hidden_target_pixels():
    refl, observed, days = _sample_masks(64)
    gaps = np.zeros_like(observed)
    gaps[3:6, 10:50, 5:40] = True  # simulated gaps on clear pixels
    target = np.where(observed[:, None], refl, np.nan)
    auto = AutoMethod(load_model(DEFAULT_WEIGHTS), choices=[])
    first = auto.predict(target, gaps, days)
    noisy = target.copy()
    noise = np.random.default_rng(0).random(noisy.shape, dtype=np.float32)
    noisy[np.broadcast_to(gaps[:, None], noisy.shape)] = noise[np.broadcast_to(gaps[:, None], noisy.shape)]
    second = auto.predict(noisy, gaps, days)
    assert np.array_equal(first[np.broadcast_to(gaps[:, None], first.shape)],
                          second[np.broadcast_to(gaps[:, None], second.shape)])
    assert auto.choices[0] == auto.choices[1]


def test_fill_auto_writes_what_it_chose_and_the_same_seed_gives_the_same_bytes(tmp_path):
    first = fill(SAMPLE, tmp_path / "a", FillOptions(method="auto"))
    second = fill(SAMPLE, tmp_path / "b", FillOptions(method="auto"))
    report = json.loads((tmp_path / "a" / "fill_report.json").read_text())
    chosen = report["self_validation"]["chosen"]
    assert report["method"] == first.method == f"auto: {chosen}"
    assert set(report["self_validation"]["scores"]) == {"linear", "adjusted", "utilise"}
    for a, b in zip(first.outputs, second.outputs):
        assert a.read_bytes() == (tmp_path / "b" / a.name).read_bytes()
    alone = fill(SAMPLE, tmp_path / "alone", FillOptions(method=chosen))
    for a, b in zip(first.outputs, alone.outputs):
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert np.array_equal(x.read(), y.read())  # the chosen method is what filled the scene
            assert json.loads(x.tags()["UTILISE_SELF_VALIDATION"])["chosen"] == chosen


def test_adaptation_learns_only_from_what_it_is_told_is_observed():
    refl, observed, days = _sample_masks(48)
    held_out = np.zeros_like(observed)
    held_out[2:5, 8:40, 8:40] = True  # e.g. self-validation pixels
    seen = observed & ~held_out
    options = AdaptOptions(steps=3, crop=32, batch_size=2)
    model = load_model(DEFAULT_WEIGHTS)
    clean = np.where(seen[:, None], refl, np.nan)
    noisy = np.where(seen[:, None], refl, np.random.default_rng(0).random(refl.shape, dtype=np.float32))
    a, b = (adapt(model, r, seen, days, options).state_dict() for r in (clean, noisy))
    assert all(torch.equal(a[k], b[k]) for k in a)  # held-out values never reach the weights
    before = model.state_dict()
    assert any(not torch.equal(a[k], before[k]) for k in a)  # and it did learn something


def test_validation_never_shows_a_candidate_the_pixels_it_is_scored_on():
    refl, observed, days = _sample_masks(64)

    def oracle(reflectance, seen, days):  # returns whatever values it is given, ignoring the mask
        return np.nan_to_num(reflectance)

    scores = score_candidates({"linear": BaselinePredictor("linear"), "oracle": oracle}, refl[None],
                              observed[None], days, np.random.default_rng(0))
    assert scores["oracle"].pixels > 0
    assert scores["oracle"].psnr < scores["linear"].psnr  # it saw NaN (0) where it is scored, not the truth


def test_a_candidate_stops_at_the_first_draw_it_loses_to_the_simpler_choice_and_the_choice_stays():
    refl, observed, days = _sample_masks()
    adjusted = BaselinePredictor("adjusted")

    def brighter(reflectance, seen, days):  # adjusted, 0.01 too bright: beats linear, loses to adjusted
        return adjusted(reflectance, seen, days) + 0.01

    def oracle(reflectance, seen, days):  # the true values everywhere: wins every draw
        return np.broadcast_to(refl, reflectance.shape)

    candidates = {"linear": BaselinePredictor("linear"), "adjusted": adjusted, "brighter": brighter,
                  "oracle": oracle}
    full, pruned = (score_candidates(candidates, refl[None], observed[None], days, np.random.default_rng(0),
                                     prune=prune) for prune in (False, True))
    mse = {name: score.draw_mse() for name, score in full.items()}
    draws = sorted(mse["linear"])
    # what makes the case: adjusted is the simpler methods' choice, and "brighter" beats linear on every draw
    assert choose({n: full[n] for n in ("linear", "adjusted")})[0] == "adjusted" and len(draws) == 4
    assert all(mse["brighter"][d] < mse["linear"][d] for d in draws)
    assert mse["brighter"][draws[0]] >= mse["adjusted"][draws[0]]
    assert pruned["brighter"].stopped == draws[0] and list(pruned["brighter"].per_draw) == draws[:1]
    for name in ("linear", "adjusted", "oracle"):
        assert pruned[name].stopped is None and pruned[name].per_draw == full[name].per_draw
    assert choose(pruned) == choose(full) and choose(pruned)[0] == "oracle"
    without_oracle = ("linear", "adjusted", "brighter")
    assert choose({n: pruned[n] for n in without_oracle}) == choose({n: full[n] for n in without_oracle})


def test_the_choice_of_auto_does_not_depend_on_the_batch_size(tmp_path):
    """A CPU validates one chip at a time, a GPU four: the hidden pixels, and so the scores, must be the same."""
    reports = {}
    for batch in (1, 4):
        out = tmp_path / str(batch)
        fill(SAMPLE, out, FillOptions(method="auto", batch_size=batch, precision="fp32"))
        reports[batch] = json.loads((out / "fill_report.json").read_text())["self_validation"]
    one, four = reports[1], reports[4]
    assert one["chosen"] == four["chosen"] and one["chips"] == four["chips"] >= 2
    for name, score in one["scores"].items():
        assert score["values"] == four["scores"][name]["values"] > 0
        assert abs(score["psnr_db"] - four["scores"][name]["psnr_db"]) < 0.01
