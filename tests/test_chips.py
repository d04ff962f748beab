"""Where chips go, and the windows that blend their overlaps."""

from __future__ import annotations

import numpy as np

from utilise_cli.chips import blend_window, chip_batch, chip_starts, ramp_window


def test_chip_grid_snaps_last_chip_to_the_edge():
    assert chip_starts(165, 128, 32) == [0, 37]
    assert chip_starts(300, 128, 32) == [0, 96, 172]
    assert chip_starts(100, 128, 32) == [0]
    ramp = ramp_window(128, 32)
    assert ramp[32:96].min() == 1.0 and ramp[0] < 0.01 and ramp.min() >= 1e-3
    assert blend_window(64, 16).shape == (64, 64)


def test_complementary_ramps_sum_to_one_across_an_overlap():
    # Two chips overlapping by 32 px: their ramps add up to ~1, so blending leaves no bump or dip.
    ramp = ramp_window(128, 32)
    assert np.allclose(ramp[96:] + ramp[:32], 1.0, atol=1e-3)


def test_chip_batch_views_whole_evenly_spaced_chips_and_copies_the_rest():
    rng = np.random.default_rng(3)
    stripe = rng.random((5, 4, 16, 100), np.float32)  # T x C x h x W
    chip = 16

    def expected(starts: list[int], rows: np.ndarray) -> np.ndarray:
        padded = np.pad(rows, [(0, 0)] * (rows.ndim - 2) + [(0, chip - rows.shape[-2]), (0, 8)], mode="edge")
        return np.stack([padded[..., x0: x0 + chip] for x0 in starts])

    for starts in ([0, 12, 24, 36], [40], [0, 12, 36], [60, 72, 84]):
        batch = chip_batch(stripe, starts, chip)
        assert batch.shape == (len(starts), 5, 4, chip, chip)
        np.testing.assert_array_equal(batch, expected(starts, stripe))
        # Whole, evenly spaced chips share the stripe's memory; gaps in the starts are copied.
        assert np.shares_memory(batch, stripe) == (starts != [0, 12, 36])
    # The last chip row of a raster (fewer rows than a chip) and a chip past the edge are padded copies.
    short = stripe[..., :11, :]
    np.testing.assert_array_equal(chip_batch(short, [0, 12], chip), expected([0, 12], short))
    edge = chip_batch(stripe, [88], chip)
    np.testing.assert_array_equal(edge, expected([88], stripe))
    assert not np.shares_memory(edge, stripe)
    masks = rng.random((5, 16, 100)) < 0.5  # T x h x W
    np.testing.assert_array_equal(chip_batch(masks, [4, 20], chip), np.stack([masks[..., 4:20], masks[..., 20:36]]))
