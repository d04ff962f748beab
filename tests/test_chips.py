"""Where chips go, and the windows that blend their overlaps."""

from __future__ import annotations

import numpy as np

from utilise_cli.chips import blend_window, chip_starts, ramp_window


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
