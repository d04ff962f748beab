"""Put small deliberate bugs into a copy of the package, one at a time, and check that the tests catch each.

    python scripts/mutants.py [--only NAME ...]

Each mutation names a module, a function and a statement in it (text, not a line number, so it survives code
moving around) and what to write instead. The copy (package, tests, sample data) lives in a temporary folder
with ../shared linked beside it; the tests named for the mutation run there. Prints caught / NOT CAUGHT per
mutation and exits non-zero if any survives.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    module: str  # path under utilise_cli/
    function: str  # the function (or class.method) whose body holds the statement; "" = module level
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation("with workers, a chip row's rows are written with the next chip row's inputs", "stripes.py",
             "run_stripes", "inputs, observed = job.refl[:, :, rows], job.obs[:, rows]",
             "inputs, observed = queue[-1].refl[:, :, rows], queue[-1].obs[:, rows]", ("tests/test_stripes.py",)),
    Mutation("blending replaced by plain averaging", "stripes.py", "run_stripes",
             "window = blend_window(chip, plan.overlap)", "window = np.ones((chip, chip), np.float32)",
             ("tests/test_stripes.py",)),
    Mutation("last chip overwrites instead of accumulating", "stripes.py", "accumulate",
             "acc[target] += weighted", "acc[target] = weighted", ("tests/test_stripes.py",)),
    Mutation("observed pixels not kept", "stripes.py", "write_rows",
             "np.copyto(result, inputs[i], where=observed[i])", "pass", ("tests/test_stripes.py",)),
    Mutation("SSIM constants not squared", "metrics.py", "", "SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2",
             "SSIM_C1, SSIM_C2 = 0.01, 0.03", ("tests/test_metrics.py",)),
    Mutation("SAM in radians", "metrics.py", "sam", "np.degrees(np.arccos(cos))", "np.arccos(cos)",
             ("tests/test_metrics.py",)),
    Mutation("gap value 0 instead of 1", "inference.py", "network_input_tensor", "torch.where(blank, 1.0, reflectance)",
             "torch.where(blank, 0.0, reflectance)", ("tests/test_inference.py",)),
    Mutation("linear interpolation by frame index", "baselines.py", "interpolate_tensor",
             "days = days.to(device=reflectance.device, dtype=torch.float32)",
             "days = torch.arange(t, device=reflectance.device, dtype=torch.float32)", ("tests/test_baselines.py",)),
    Mutation("the adjusted baseline's anomaly sees the date itself", "baselines.py", "_other_dates",
             "before[(gaps - 1).clamp(min=0)]", "before[gaps]", ("tests/test_baselines.py",)),
    Mutation("a COG copy that failed on a thread goes unnoticed", "cores.py", "each_on_threads",
             "return [future.result() for future in futures]",
             "return [None if future.exception() else future.result() for future in futures]",
             ("tests/test_safety.py",)),
    Mutation("a COG copy left truncated without an error gets its final name", "cog.py", "finish_cog",
             "if problem:", "if False:", ("tests/test_safety.py",)),
    Mutation("the completeness check forgets the bytes GDAL repeats after each tile", "cog.py", "incomplete",
             "int(offset) + int(length) + trailer > size", "int(offset) + int(length) > size",
             ("tests/test_safety.py",)),
    Mutation("self-validation shows candidates the hidden pixels", "validation.py", "score_candidates",
             "candidates[name](inputs, kept, days)", "candidates[name](reflectance[chips], kept, days)",
             ("tests/test_validation.py",)),
    Mutation("a chip row is predicted from the rows read for it alone, not those it shares with the one before",
             "stripes.py", "ChipRowInputs.next", "shared = first - y0", "shared = 0",
             ("tests/test_stripes.py", "tests/test_fill.py")),
    Mutation("rows are read again for every chip row that covers them", "stripes.py", "rows_to_read",
             "if k and order[k - 1][0] == p:", "if False:", ("tests/test_stripes.py",)),
    Mutation("self-validation prunes against linear, not the choice among the simpler methods", "validation.py",
             "score_candidates", "rival = choose({n: scores[n] for n in names[:k]})[0] if prune and k else None",
             "rival = names[0] if prune and k else None", ("tests/test_validation.py",)),
    Mutation("adaptation trains on pixels it was told are not observed", "adapt.py", "_sample",
             "known = observed[window]", "known = np.ones_like(observed[window])", ("tests/test_validation.py",)),
    Mutation("the dead-head watch never fires", "network/health.py", "Health.head_live",
             'return self.live.get("head.conv1", 0.0)', "return 1.0", ("tests/test_health.py",)),
    Mutation("fill and prepare ignore --offset", "cube.py", "decoding",
             "offset = read.offset", "offset = 0.0 if read.offset is not None else None", ("tests/test_cube.py",)),
    Mutation("every date decoded with the first date's offset", "cube.py", "read_classes",
             "reflectance[t] += np.float32(cube.offsets[t])", "reflectance[t] += np.float32(cube.offsets[0])",
             ("tests/test_safety.py",)),
    Mutation("a folder's later scenes take the first scene's offset, not their tags'", "cube.py", "scene_decoding",
             "offset = tag_offset(tags, scale, scene.path) if scene.files else first[1]",
             "offset = first[1]", ("tests/test_safety.py",)),
    Mutation("a STAC date's items' offset not passed on (its files' tags decide)", "stac.py", "_scene",
             "offset=item_offset(first, first_band))", "offset=None)", ("tests/test_stac.py",)),
    Mutation("a SAFE product's baseline ignored (raw DN read as harmonised)", "scenes.py", "safe_band_files",
             "offset = RAW_OFFSET if baseline and baseline_number(baseline.group(1)) >= 4.0 else 0.0",
             "offset = 0.0", ("tests/test_scenes.py",)),
    Mutation("of a band's 10 m and 20 m files, the coarser taken", "scenes.py", "_finer",
             "finer = path if int(found[0].group(1)) < int(found[1].group(1)) else other",
             "finer = path if int(found[0].group(1)) > int(found[1].group(1)) else other", ("tests/test_scenes.py",)),
    Mutation("SAFE products' masks left on their 20 m grid", "cube.py", "open_folder",
             "align = read.align or all(s.product or s.folder for s in scenes)",
             "align = read.align or all(s.folder for s in scenes)", ("tests/test_scenes.py",)),
    Mutation("every scene read with the first scene's nodata", "cube.py", "read_classes",
             "value = cube.nodata[t]", "value = cube.nodata[0]", ("tests/test_safety.py",)),
    Mutation("float scenes beside DN scenes read with the first scene's scale", "cube.py", "scene_decoding",
             "if scale is None and is_float != first_float:", "if False:", ("tests/test_safety.py",)),
    Mutation("a long series' pictures in one row of dates", "pictures.py", "", "WRAP_DATES = 12",
             "WRAP_DATES = 1000", ("tests/test_explain.py",)),
    Mutation("a long series' date-by-date attention as T x T maps", "pictures.py", "attention_dates_figure",
             "if len(dates) > WRAP_DATES:", "if False:", ("tests/test_explain.py",)),
    Mutation("an HLS Fmask file read as a binary mask", "scenes.py", "_mask_kind_from_name",
             'return "fmask"', 'return "binary"',
             ("tests/test_scenes.py",)),
    Mutation("an HLS Fmask's aerosol, water and snow bits counted as cloud", "cube.py", "decode_mask",
             "return ((bits & FMASK_OCCLUDED_BITS) != 0) & ~fill, fill", "return (bits != 0) & ~fill, fill",
             ("tests/test_scenes.py",)),
    Mutation("probability masks named like binary ones read as binary", "cube.py", "check_binary_masks",
             'if guess == "scl" or (guess == "probability" and len(present) > 6):', "if False:",
             ("tests/test_safety.py",)),
    Mutation("granule band files outside their products read without a word about the offset", "cube.py",
             "open_folder", "if loose and read.offset is None:", "if False:", ("tests/test_scenes.py",)),
    Mutation("float reflectance read as DN", "cube.py", "decoding", "scale = 1.0", "scale = DN_SCALE",
             ("tests/test_safety.py",)),
    Mutation("a rerun's fingerprint ignores the method", "plan.py", "fingerprint",
             '"method": options.method, "predictor": getattr(predictor, "name", ""),', "",
             ("tests/test_safety.py",)),
    Mutation("a resumed run skips the chip row whose overlap reaches its first rows", "stripes.py", "rows_to_run",
             "if p > panel or y0 + plan.chip_size > rows]", "if p > panel or y0 >= rows]", ("tests/test_safety.py",)),
    Mutation("a resumed run starts again at the first column panel", "stripes.py", "rows_to_run",
             "for p in range(panel, len(plan.panels))", "for p in range(0, len(plan.panels))",
             ("tests/test_safety.py",)),
    Mutation("a column panel runs only the chips that start in it", "chips.py", "column_panels",
             "touching = tuple(c for c in cols if c < col1 and c + chip > col0)",
             "touching = tuple(c for c in cols if col0 <= c < col1)", ("tests/test_stripes.py",)),
    Mutation("the quicklook ignores where a column panel starts", "stripes.py", "Quicklook.add",
             "first = -col0 % self.step", "first = 0", ("tests/test_stripes.py",)),
    Mutation("a window is read without the screen's and buffer's column margin", "cube.py", "read_classes",
             "c0, c1 = max(0, col0 - margin), min(width, col1 + margin)", "c0, c1 = col0, col1",
             ("tests/test_cube.py",)),
    Mutation("pixels only the screen found are flagged like masked ones", "stripes.py", "write_rows",
             "flags[screened & ~observed] = FLAG_SCREENED", "pass", ("tests/test_screen.py",)),
    Mutation("a scene with nothing observed is filled anyway", "fill.py", "_check_observed",
             "if not seen.any():", "if False:", ("tests/test_safety.py",)),
    Mutation("a reddish brightening next to a mask is a rim even where it lasts (soil)", "screen.py", "_screen",
             "rim &= ~reddish | (_change_from_clear_neighbours(blue, clear, np.fmax) > RIM_BLUE)", "pass",
             ("tests/test_screen.py",)),
    Mutation("the window reader reads rows for columns", "windows.py", "_window",
             "return Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])",
             "return Window(rows[0], cols[0], rows[1] - rows[0], cols[1] - cols[0])", ("tests/test_cube.py",)),
    Mutation("a damaged scene's read error goes out as a traceback", "windows.py", "WindowReader._read",
             "cause = first_line(err.__cause__ or err, path, 120)", "raise", ("tests/test_fill.py",)),
    Mutation("the adjusted baseline's anomaly has no gain", "baselines.py", "date_fit",
             "(scale * (dd * xr - xd * dr))", "(0 * (dd * xr - xd * dr))", ("tests/test_baselines.py",)),
    Mutation("the adjusted baseline's anomaly has no lean towards a neighbour", "baselines.py", "date_fit",
             "(scale * (xx * dr - xd * xr))", "(0 * (xx * dr - xd * xr))", ("tests/test_baselines.py",)),
    Mutation("the clip quantiles' ranks count one date too many", "baselines.py", "nanquantile",
             "* (count - 1)", "* count", ("tests/test_baselines.py",)),
    Mutation("a date counts as its own nearest clear neighbour in time", "screen.py",
             "_change_from_clear_neighbours", "change[t] = last", "change[t] = np.where(clear[t], values[t], last)",
             ("tests/test_screen.py",)),
    Mutation("a shadow need be darker than only one of its clear neighbours in time (a harvest passes)", "screen.py",
             "_screen", "(nir, clear_sky, np.fmin)", "(nir, clear_sky, np.fmax)", ("tests/test_screen.py",)),
    Mutation("cloud need not brighten blue as much as red (bare soil after a harvest is cloud)", "screen.py",
             "_screen", "& (d_blue >= BLUE_OVER_RED * d_red) & valid", "& valid", ("tests/test_screen.py",)),
    Mutation("a partial sorting network drops the comparators that feed its first places", "screen.py",
             "_comparators", "needed |= {a, b}", "needed |= {a}", ("tests/test_screen.py",)),
    Mutation("the screen's margin misses its longest chain without masks (19 px, not 21)", "screen.py", "",
             "SCREEN_MARGIN_PX = SHADOW_NEAR_PX + NEAR_MASK_PX + 2 * (PATCH_PX // 2)",
             "SCREEN_MARGIN_PX = SHADOW_NEAR_PX + PATCH_PX", ("tests/test_screen.py",)),
    Mutation("the screen's margin with masks misses its longest chain (17 px, not 18)", "screen.py", "",
             "SCREEN_MARGIN_WITH_MASKS_PX = SHADOW_NEAR_PX + max(NEAR_MASK_PX, 2 * (PATCH_PX // 2))",
             "SCREEN_MARGIN_WITH_MASKS_PX = SHADOW_NEAR_PX + max(NEAR_MASK_PX, 2 * (PATCH_PX // 2)) - 1",
             ("tests/test_screen.py",)),
    Mutation("a screened piece is put back without its margin taken off", "screen.py", "screen",
             "out[..., x0:x1] = part[..., x0 - m0: x1 - m0]", "out[..., x0:x1] = part[..., :x1 - x0]",
             ("tests/test_screen.py",)),
    Mutation("the screen is told that pixels without data are valid", "cube.py", "read_classes",
             "valid=~nodata)", "valid=np.ones_like(nodata))", ("tests/test_screen.py",)),
    Mutation("the mask buffer grows only the first date", "cube.py", "read_classes",
             "if rule.buffer:", "if rule.buffer and t == 0:", ("tests/test_fill.py",)),
    Mutation("decoding on threads leaves out the last date of each range", "cube.py", "read_classes",
             "dates * (i + 1) // threads)", "dates * (i + 1) // threads - 1)", ("tests/test_cube.py",)),
    Mutation("a pixel is no data only where its first band is", "cube.py", "read_classes",
             "for band in range(1, raw.shape[1]):", "for band in range(1, 1):", ("tests/test_cube.py",)),
    Mutation("the collector walks the imports' objects during a fill", "fill.py", "_collector_skips_older_objects",
             "gc.freeze()", "pass", ("tests/test_stripes.py",)),
    Mutation("a full disk is judged after the partial files are removed, freeing the space", "fill.py", "fill",
             "if full:", "if disk_full(err, out):", ("tests/test_safety.py",)),
    Mutation("a fill unfreezes the objects its caller froze", "fill.py", "_collector_skips_older_objects",
             "if gc.get_freeze_count():", "if False:", ("tests/test_stripes.py",)),
    Mutation("the memory estimate counts float32 activations at bf16's size", "plan.py", "estimate_memory_mb",
             'per_pixel_date = _NETWORK_BYTES_PER_PIXEL_DATE["native bf16" if native_bf16 else "fp32"]',
             'per_pixel_date = _NETWORK_BYTES_PER_PIXEL_DATE["native bf16"]', ("tests/test_stripes.py",)),
    Mutation("the checkpoint header's unpickler takes any global", "network/header.py", "_HeaderUnpickler.find_class",
             "return _KNOWN[(module, name)]", "return _KNOWN.get((module, name)) or super().find_class(module, name)",
             ("tests/test_network.py",)),
    Mutation("a scene without a mask gets its empty mask on its own grid, not the one it is reprojected to", "cube.py",
             "open_cube", "mask = da.zeros(stack.shape[1:], np.uint8, chunks=(chunk_rows, -1))",
             "mask = da.zeros(file(scene.path).shape[1:], np.uint8, chunks=(chunk_rows, -1))", ("tests/test_fill.py",)),
    Mutation("a dry run's plan leaves out the checkpoint's identity", "network/header.py", "read_header",
             "return CheckpointHeader(config, {**identity(path), **metadata})", "return CheckpointHeader(config, metadata)",
             ("tests/test_fill.py",)),
    Mutation("every window read whole again (no rows carried from the last one)", "windows.py", "_carry",
             "return last_rows[1]", "return rows[0]", ("tests/test_windows.py",)),
    Mutation("windows read across block edges in one piece", "windows.py", "WindowReader._pieces",
             "cuts = [start, *sorted(edges), stop]", "cuts = [start, stop]", ("tests/test_windows.py",)),
    Mutation("the output codec left out of the fingerprint", "plan.py", "fingerprint",
             '"compress": options.compress, ', "", ("tests/test_fill.py",)),
    Mutation("the COG copy's temporary overviews lossy", "cog.py", "",
             'COG_TEMPORARY = {"COG_TMP_COMPRESSION": "NONE"}',
             'COG_TEMPORARY = {"COG_TMP_COMPRESSION": "LERC", "MAX_Z_ERROR": "40", "MAX_Z_ERROR_OVERVIEW": "40"}',
             ("tests/test_safety.py",)),
    Mutation("scenes in strips read in several panels go unnamed", "windows.py", "WindowReader.striped",
             "if (ds := self._dataset(t % len(self._shares), path)).block_shapes[0][1] >= ds.width > 1), \"\")",
             "if False), \"\")", ("tests/test_windows.py",)),
    Mutation("decoding trusts spots that missed the data (no whole-band read after all)", "cube.py", "sample_values",
             "if values.size >= SAMPLE_ENOUGH:", "if True:", ("tests/test_cube.py",)),
    Mutation("the blur's bands reach one row short of the kernel", "baselines.py", "_bands",
             "slice(max(0, a - radius), min(size, b + radius))",
             "slice(max(0, a - radius + 1), min(size, b + radius - 1))", ("tests/test_baselines.py",)),
    Mutation("a pixel with no neighbour in time on either side gets a value", "baselines.py", "_blend",
             "return filled.add_(torch.fmin(day_before, day_after).mul_(0))", "return filled",
             ("tests/test_baselines.py",)),
    Mutation("a pixel with no data in one band only is not a gap for the residual network", "inference.py",
             "network_input_tensor", "reflectance.amax(dim=-3).isnan()", "reflectance[..., 0, :, :].isnan()",
             ("tests/test_inference.py",)),
    Mutation("the decoder's skips aggregated for the first dates instead of the wanted ones", "network/utilise.py",
             "aggregate_skip", "else attention[:, i, queries[i]]", "else attention[:, i, :q]",
             ("tests/test_network.py",)),
    Mutation("a date with something to fill in part of a chip neither decoded nor blended", "chips.py",
             "dates_to_fill", ".any(axis=(-2, -1))", ".all(axis=(-2, -1))",
             ("tests/test_inference.py", "tests/test_stripes.py")),
    Mutation("a pixel never observed makes every date decoded", "chips.py", "dates_to_fill",
             "(~observed & observed.any(axis=-3, keepdims=True))", "(~observed)", ("tests/test_inference.py",)),
    Mutation("an undecoded date's frames left at zero, not its input", "inference.py", "NetworkPredictor.__call__",
             "out[kept] = np.where(", "out[kept] = 0 * np.where(", ("tests/test_inference.py",)),
    Mutation("--regenerate-all decodes only the dates with a gap", "plan.py", "load_predictor",
             "every_date=options.regenerate_all", "every_date=False", ("tests/test_inference.py",)),
    Mutation("a chip's dates blended: those with nothing to fill", "stripes.py", "accumulate",
             "picked = np.flatnonzero(dates)", "picked = np.flatnonzero(~dates)", ("tests/test_stripes.py",)),
    Mutation("--regenerate-all blends only a chip's dates with something to fill", "stripes.py", "submit_row",
             "dates = None if options.regenerate_all else dates_to_fill(", "dates = dates_to_fill(",
             ("tests/test_stripes.py",)),
    Mutation("the COG's predictor runs on across tile edges", "cog_writer.py", "predict",
             "out[:, :, ::TILE] = rows[:, :, ::TILE]", "pass", ("tests/test_cog_writer.py",)),
    Mutation("the COG's tiles interleave the bands in reverse", "cog_writer.py", "interleaved",
             "out[:, :, k] = band", "out[:, :, -1 - k] = band", ("tests/test_cog_writer.py",)),
    Mutation("the COG's averaged overviews rounded down", "cog_writer.py", "average",
             "total += 2", "total += 0", ("tests/test_cog_writer.py",)),
    Mutation("the COG's overviews count partly covered pixels whole", "cog_writer.py", "average_windows",
             "weights[rows[last > 0], last[last > 0]] = (1 - (stop - right))[last > 0]", "pass",
             ("tests/test_cog_writer.py",)),
    Mutation("the COG's flags overviews take the pixel under each window's centre", "cog_writer.py",
             "nearest_windows", "np.floor(np.arange(n) * (n_above / n) + 0.5)",
             "np.floor((np.arange(n) + 0.5) * (n_above / n))", ("tests/test_cog_writer.py",)),
    Mutation("the COG's flags overviews break rounding ties upwards", "cog_writer.py", "nearest_windows",
             "np.floor(np.arange(n) * (n_above / n) + 0.5)", "np.floor(np.arange(n) * (n_above / n) + 0.5 + 1e-9)",
             ("tests/test_cog_writer.py",)),
    Mutation("a COG built from a fill's rows compresses them in the pieces they come in", "cog_writer.py",
             "CogBuilder.push", "rows.shape[1] - done >= READ_ROWS or", "rows.shape[1] > done or",
             ("tests/test_cog_writer.py", "tests/test_safety.py")),
    Mutation("a COG given up half-built gives its integer rows back without undoing the predictor",
             "cog_writer.py", "TileRows.rows_back", "unpredict(block) if self.predictor == 2 else block", "block",
             ("tests/test_cog_writer.py", "tests/test_safety.py")),
    Mutation("a COG given up half-built gives its floating-point rows back with their bytes reversed",
             "cog_writer.py", "float_unpredict", "planes.transpose(0, 2, 1)[:, :, ::-1]", "planes.transpose(0, 2, 1)",
             ("tests/test_cog_writer.py", "tests/test_safety.py")),
    Mutation("a fill with one column panel writes partial files all the same", "fill.py", "_open_writers",
             "streamed = not resume and len(plan.panels) == 1", "streamed = False", ("tests/test_safety.py",)),
    Mutation("the COG's tiles lack GDAL's trailer", "cog_writer.py", "_assemble",
             "out.write(struct.pack(\"<I\", len(data)) + data + data[-4:])",
             "out.write(struct.pack(\"<I\", len(data)) + data + data[-4:] * 0)", ("tests/test_safety.py",)),
    Mutation("a batch of chips viewed in the stripe steps by rows instead of columns", "chips.py", "chip_batch",
             "(step * stripe.strides[-1], *first.strides)", "(step * stripe.strides[-2], *first.strides)",
             ("tests/test_chips.py",)),
    Mutation("the screen's padding all goes before the values (its grows and patch counts shift)", "screen.py",
             "_padded", "_part(out, axis, px, px + a.shape[axis])[...] = a",
             "_part(out, axis, 2 * px, 2 * px + a.shape[axis])[...] = a", ("tests/test_screen.py",)),
    Mutation("an overview of a block without gaps rounds its averages half down", "cog_writer.py", "average",
             "total += 2", "total += 1", ("tests/test_cog_writer.py",)),
    Mutation("a scene or mask without a CRS goes on into the cube", "cube.py", "open_cube",
             "if grid.crs is None:", "if grid.crs is None and what == 'nothing':", ("tests/test_fill.py",)),
    Mutation("a --bbox beside every item goes on to odc-stac", "stac.py", "target_grid",
             "if stac.bbox is not None and footprints and not any(", "if stac.bbox is None and footprints and not any(", ("tests/test_stac.py",)),
    Mutation("a preview outlines the filled areas of a raster one row high", "pictures.py", "fill_preview_figure",
             "if area.any() and not area.all() and min(area.shape) >= 2:", "if area.any() and not area.all():",
             ("tests/test_fill.py",)),
    Mutation("a preview's panels as tall as the raster's aspect makes them, however thin", "pictures.py",
             "fill_preview_figure", "min(max(h / max(w, 1), PREVIEW_ASPECT[0]), PREVIEW_ASPECT[1])",
             "h / max(w, 1)", ("tests/test_fill.py",)),
    Mutation("a chip is mirrored only up to the network's size multiple, however thin", "inference.py",
             "run_network", "max(n + -n % m, 2 * m)", "n + -n % m", ("tests/test_fill.py",)),
    Mutation("the completeness check sizes an overview by the factor GDAL reports, rounded up", "cog.py",
             "incomplete", "levels = [(None, *sizes[0])] + [(i, *size) for i, size in enumerate(sizes[1:])]",
             "levels = [(None, *sizes[0])] + [(i, -(-src.height // f), -(-src.width // f)) "
             "for i, f in enumerate(src.overviews(band))]", ("tests/test_safety.py",)),
    Mutation("SIGTERM is left to Python's default, which ends a fill with its rows lost", "cli.py", "user_errors",
             "signal.signal(signal.SIGTERM, _terminated)", "signal.signal(signal.SIGTERM, previous)",
             ("tests/test_safety.py",)),
    Mutation("a resumed training run takes last.pth's weights, not those its state was saved with", "train.py",
             "train", 'model.load_state_dict(state["model"] if "model" in state else read_checkpoint(run / "last.pth")[1])',
             'model.load_state_dict(read_checkpoint(run / "last.pth")[1])', ("tests/test_train_eval.py",)),
    Mutation("a resumed training run keeps the log rows of the epoch it runs again", "train.py", "train",
             "_drop_rounds_after(run / name, epoch)", "_drop_rounds_after(run / name, epoch + 1)",
             ("tests/test_train_eval.py",)),
    Mutation("the skips' attention is resized over the whole map at once, however long the series",
             "network/utilise.py", "aggregate_skip",
             "band = max(1, AGGREGATE_BYTES // max(1, width * g * q * t * attention.element_size()))",
             "band = height",
             ("tests/test_network.py",)),
    Mutation("each band of rows of the skips is aggregated with the map's first rows", "network/utilise.py",
             "aggregate_skip", "frames.storage_offset() + y0 * frames.stride(-2))", "frames.storage_offset())",
             ("tests/test_network.py",)),
    Mutation("the memory estimate leaves out --method auto's first phase", "plan.py", "estimate_memory_mb",
             "return _BASE_MB + cache + network / 1e6 + max(filling, validating)",
             "return _BASE_MB + cache + network / 1e6 + filling", ("tests/test_stripes.py",)),
    Mutation("the files of a mask folder read as scenes", "scenes.py", "discover_scenes",
             "if path in foldered or mask_re.search(path.stem):", "if mask_re.search(path.stem):",
             ("tests/test_scenes.py",)),
    Mutation("any subfolder named with a mask word taken for a mask folder (cloud_free/ too)", "scenes.py",
             "mask_folders", "MASK_FOLDER.match(d.name)", "re.search(DEFAULT_MASK_PATTERN, d.name)",
             ("tests/test_scenes.py",)),
    Mutation("a mask folder's name not telling its masks' kind", "scenes.py", "discover_scenes",
             "mask_files[date] in foldered)", "False)", ("tests/test_scenes.py",)),
    Mutation("the first scene's band metadata (scale, offset) ignored", "cube.py", "decoding",
             "if declared is not None and (read.scale is None or read.offset is None):", "if False:",
             ("tests/test_safety.py",)),
    Mutation("a later scene's stated offset ignored", "cube.py", "scene_decoding",
             "if offset is None and declared is not None:", "if False:", ("tests/test_safety.py",)),
    Mutation("one --mask-folder given to every tile of a folder of tiles", "tiles.py", "check_tile_options",
             "if options.read.mask_folder is not None:", "if False:", ("tests/test_tiles.py",)),
    Mutation("QA60 files beside the scenes taken for scenes", "options.py", "", "|fmask|qa60)", "|fmask)",
             ("tests/test_scenes.py",)),
    Mutation("a no-data mark the files do not name read as reflectance", "cube.py", "decoding",
             "if decoded.size and float(decoded.min()) < NO_SURFACE:", "if False:", ("tests/test_safety.py",)),
    Mutation("bands stored as bytes read as DN", "cube.py", "_check_not_bytes",
             "if dtype.itemsize == 1 and read.scale is None and declared is None:", "if False:",
             ("tests/test_safety.py",)),
    Mutation("a later scene's bands stored as bytes read as DN", "cube.py", "scene_decoding",
             "if dtype is not None:", "if False:", ("tests/test_safety.py",)),
    Mutation("probability masks of fractions 0..1 read as percent", "cube.py", "probability_scale",
             "return 1.0 if checked and floats and highest <= 1 else 255.0 if highest > 100 else 100.0",
             "return 255.0 if highest > 100 else 100.0", ("tests/test_fill.py",)),
    Mutation("probability masks of bytes 0..255 read as percent", "cube.py", "probability_scale",
             "return 1.0 if checked and floats and highest <= 1 else 255.0 if highest > 100 else 100.0",
             "return 1.0 if checked and floats and highest <= 1 else 100.0", ("tests/test_fill.py",)),
    Mutation("a folder per date taken for a folder of tiles", "tiles.py", "find_tiles",
             "or _has_rasters(folder) or dated_folders(folder):", "or _has_rasters(folder):",
             ("tests/test_scenes.py",)),
    Mutation("the files of a folder per date not dated by their folder", "scenes.py", "discover_scenes",
             "date = _date_of(path, tags, date_pattern, dated.get(path.parent))",
             "date = _date_of(path, tags, date_pattern)", ("tests/test_scenes.py",)),
    Mutation("a folder per date's 20 m SCL not put on the bands' grid", "cube.py", "open_folder",
             "align = read.align or all(s.product or s.folder for s in scenes)",
             "align = read.align or all(s.product for s in scenes)", ("tests/test_scenes.py",)),
    Mutation("--band-names ignored", "scenes.py", "_bands_of", "if band_names and count > 1 and not any(names):",
             "if False:", ("tests/test_scenes.py",)),
    Mutation("dates written YYYY_MM_DD or YYYY.MM.DD not read from names", "dates.py", "",
             "(?P<sep>[-_.])", "(?P<sep>-)", ("tests/test_dates.py",)),
]


def _function_lines(source: str, qualified: str) -> tuple[int, int]:
    """1-based first and last line of ``qualified`` (function or Class.method) in ``source``."""
    if not qualified:
        return 1, len(source.splitlines())
    parts = qualified.split(".")
    nodes = ast.parse(source).body
    for part in parts:
        node = next((n for n in nodes if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part), None)
        if node is None:
            raise SystemExit(f"no {qualified} found")
        nodes = node.body
    return node.lineno, node.end_lineno or node.lineno


def apply(mutation: Mutation, package: Path) -> None:
    path = package / mutation.module
    lines = path.read_text().splitlines(keepends=True)
    first, last = _function_lines("".join(lines), mutation.function)
    for i in range(first - 1, last):
        if mutation.old in lines[i]:
            lines[i] = lines[i].replace(mutation.old, mutation.new, 1)
            path.write_text("".join(lines))
            return
    raise SystemExit(f"{mutation.name}: {mutation.old!r} is not in {mutation.module}:{mutation.function}; "
                     "update scripts/mutants.py")


def run(mutation: Mutation | None, tests: tuple[str, ...]) -> bool:
    """True when ``tests`` fail in a copy with ``mutation`` in place (None: the code as it is)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "main"
        work.mkdir()
        for name in ("utilise_cli", "tests", "sample_data"):
            shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", work)
        if (ROOT.parent / "shared").exists():
            (Path(tmp) / "shared").symlink_to(ROOT.parent / "shared")
        if mutation is not None:
            apply(mutation, work / "utilise_cli")
        # python -m puts the copy first on sys.path, ahead of any installed utilise_cli
        result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                cwd=work, capture_output=True, text=True)
        return result.returncode != 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="run only mutations whose name contains one of these words")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or any(w in m.name for w in args.only)]
    tests = tuple(sorted({t for m in chosen for t in m.tests}))
    if run(None, tests):
        print(f"the tests fail without any mutation ({' '.join(tests)}); fix them first")
        return 2
    survivors = 0
    for mutation in chosen:
        caught = run(mutation, mutation.tests)
        survivors += not caught
        print(f"{'caught' if caught else 'NOT CAUGHT':>10s}  {mutation.name}  ({mutation.module}:"
              f"{mutation.function or 'module'}; {' '.join(mutation.tests)})", flush=True)
    print(f"{len(chosen) - survivors} of {len(chosen)} mutations caught")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
