"""The network reproduces the original implementation and behaves as MODEL.md describes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from utilise_cli import NetworkConfig, UTILISE, load_model, save_checkpoint
from utilise_cli.errors import CheckpointError, InputShapeError
from utilise_cli.network.blocks import ReflectConv2d
from utilise_cli.network.header import read_header
from utilise_cli.network.utilise import resize_matrix

REFERENCES = ["earthnet2021", "sen12mscrts_wo_s1", "sen12mscrts_w_s1"]


@pytest.mark.parametrize("name", REFERENCES)
def test_reproduces_original_outputs(reference_dir, name):
    model = load_model(reference_dir / f"{name}_seed0.pth")
    data = np.load(reference_dir / f"{name}_seed0_io.npz")
    with torch.inference_mode():
        y, attention = model(torch.from_numpy(data["x"]), torch.from_numpy(data["position_days"]),
                             return_attention=True)
    assert y.shape == data["y"].shape and attention.shape == data["attention"].shape
    assert np.abs(y.numpy() - data["y"]).max() <= 1e-5
    assert np.abs(attention.numpy() - data["attention"]).max() <= 1e-5
    # The second sample ends in temporal padding: its output is exactly 0 there, as in the original.
    padded = data["position_days"][1] == 0
    assert padded.sum() == 3
    assert np.all(y.numpy()[1, padded] == 0)


@pytest.mark.parametrize("name", REFERENCES)
def test_parameter_count_matches_manifest(reference_dir, name):
    import json

    manifest = json.loads((reference_dir / "manifest_seed0.json").read_text())[name]
    model = load_model(reference_dir / f"{name}_seed0.pth")
    assert sum(p.numel() for p in model.parameters()) == manifest["params"]
    assert list(model.config.encoder_widths) == manifest["encoder_widths"]
    assert (model.config.input_dim, model.config.output_dim) == (manifest["input_dim"], manifest["output_dim"])


def test_padded_batch_equals_sequences_run_alone(reference_dir):
    model = load_model(reference_dir / "earthnet2021_seed0.pth")
    data = np.load(reference_dir / "earthnet2021_seed0_io.npz")
    x, days = torch.from_numpy(data["x"]), torch.from_numpy(data["position_days"])
    with torch.inference_mode():
        batch = model(x, days)
        alone = model(x[1:, :5], days[1:, :5])
    assert torch.allclose(batch[1, :5], alone[0], atol=1e-5)


def test_frames_decoded_alone_equal_the_whole_pass_and_the_others_are_zero(reference_dir):
    model = load_model(reference_dir / "earthnet2021_seed0.pth")
    data = np.load(reference_dir / "earthnet2021_seed0_io.npz")
    x, days = torch.from_numpy(data["x"]), torch.from_numpy(data["position_days"])
    decode = torch.zeros(days.shape, dtype=torch.bool)
    decode[0, ::3] = True
    decode[1, [1, -1]] = True  # the second sample's last date is padding: never decoded
    with torch.inference_mode():
        whole, some = model(x, days), model(x, days, decode=decode)
        none = model(x, days, decode=torch.zeros_like(decode))
    wanted = decode & (days != 0)
    assert wanted.sum() == int(decode[0].sum()) + 1
    assert torch.allclose(some[wanted], whole[wanted], atol=1e-6)
    assert (some[~wanted] == 0).all() and (none == 0).all()


def test_attention_rows_sum_to_one_and_any_length_works():
    torch.manual_seed(1)
    model = UTILISE(NetworkConfig(encoder_widths=(16, 16, 32), decoder_widths=(16, 16, 32))).eval()
    for t in (1, 3, 13):
        x = torch.rand(2, t, 4, 24, 40)
        days = torch.sort(torch.randint(1, 365, (2, t)), dim=1).values.float()
        with torch.inference_mode():
            y, attention = model(x, days, return_attention=True)
        assert y.shape == (2, t, 4, 24, 40)
        assert attention.shape == (4, 2, t, t, 6, 10)
        assert torch.allclose(attention.sum(dim=3), torch.ones(()), atol=1e-5)
        assert float(y.min()) > 0 and float(y.max()) < 1


@pytest.mark.parametrize("kernel,stride,size", [(3, 1, (40, 56)), (4, 2, (64, 48)), (3, 1, (8, 8))])
def test_reflect_conv_without_padded_copy_is_exact(kernel, stride, size):
    torch.manual_seed(0)
    conv = ReflectConv2d(6, 5, kernel, stride)
    x = torch.randn(3, 6, *size)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), conv.weight, conv.bias, stride)
    assert torch.allclose(conv(x), expected, atol=1e-5)


def test_resize_matrix_matches_torch_bilinear_and_pooling():
    a = torch.rand(2, 3, 8, 6)
    up = torch.einsum("Yy,Xx,bcyx->bcYX", resize_matrix(8, 64, a.dtype, a.device),
                      resize_matrix(6, 48, a.dtype, a.device), a)
    assert torch.allclose(up, F.interpolate(a, size=(64, 48), mode="bilinear", align_corners=False), atol=1e-6)
    down = torch.einsum("Yy,Xx,bcyx->bcYX", resize_matrix(8, 3, a.dtype, a.device),
                        resize_matrix(6, 4, a.dtype, a.device), a)
    assert torch.allclose(down, F.adaptive_avg_pool2d(a, (3, 4)), atol=1e-6)


@pytest.mark.parametrize("band_rows", [1, 3, 100])  # the resized attention of 1, 3 or every row of the map at a time
def test_skips_aggregated_a_band_of_rows_at_a_time_equal_the_whole_map_at_once(monkeypatch, band_rows):
    import utilise_cli.network.utilise as utilise

    torch.manual_seed(0)
    g, b, t, h, size, c = 2, 2, 7, 4, 32, 8
    attention = torch.softmax(torch.randn(g, b, t, t, h, h), dim=3)
    skip = torch.randn(b, t, c, size, size)
    pad = torch.zeros(b, t, dtype=torch.bool)
    pad[1, -2:] = True
    queries = [torch.tensor([0, 2, 3, 6]), torch.tensor([1, 4])]
    monkeypatch.setattr(utilise, "AGGREGATE_BYTES", 1 << 40)
    whole = [utilise.aggregate_skip(attention, skip, pad, q) for q in (None, queries)]
    monkeypatch.setattr(utilise, "AGGREGATE_BYTES", band_rows * size * g * t * t * attention.element_size())
    for q, expected in zip((None, queries), whole):
        # the same products; resizing a band's rows is a smaller matrix product, which may round in another order
        assert torch.allclose(utilise.aggregate_skip(attention, skip, pad, q), expected, rtol=1e-6, atol=1e-6)


def test_a_long_series_costs_memory_in_proportion_to_its_dates():
    # The skips' attention resized to a 128-px chip is H x W x heads x T x T: the whole map at once made a pass of
    # 48 dates take 2244-2498 bytes per pixel-date against 1649-1660 at 12 (fp32, 2-core AMD EPYC); a band of rows
    # at a time, 1292-1567 (32 and 64 MB a band).
    import subprocess
    import sys

    code = """
import sys, torch
from utilise_cli.network import load_model
from utilise_cli.network.allocator import reuse_freed_memory
from utilise_cli.weights import DEFAULT_WEIGHTS
reuse_freed_memory()
model = load_model(DEFAULT_WEIGHTS).eval()
t = int(sys.argv[1])
x, days = torch.rand(1, t, model.config.input_dim, 128, 128), torch.arange(t, dtype=torch.float32)[None] * 5
def peak():
    return int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) * 1024
before = peak()
with torch.no_grad():
    model(x, days)
print((peak() - before) / (t * 128 * 128))
"""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads the peak from /proc")
    per_pixel_date = {t: float(subprocess.run([sys.executable, "-c", code, str(t)], capture_output=True, text=True,
                                              check=True).stdout) for t in (12, 48)}
    assert per_pixel_date[48] < 1.15 * per_pixel_date[12], per_pixel_date


def test_training_mode_backward_pass():
    torch.manual_seed(0)
    model = UTILISE(NetworkConfig(encoder_widths=(8, 8, 16), decoder_widths=(8, 8, 16))).train()
    x = torch.rand(2, 4, 4, 32, 32)
    x[1, 3] = 0  # one padded frame
    days = torch.tensor([[3.0, 20, 40, 90], [5, 30, 60, 0]])
    loss = model(x, days).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_own_format_roundtrip_keeps_outputs_and_metadata(tmp_path, reference_dir):
    model = load_model(reference_dir / "earthnet2021_seed0.pth")
    path = save_checkpoint(model, tmp_path / "ours.pth", {"bands": ["B2", "B3", "B4", "B8"], "scale": 1e-4})
    again = load_model(path)
    assert again.metadata["bands"] == ["B2", "B3", "B4", "B8"]
    assert again.config == model.config
    x, days = torch.rand(1, 4, 4, 32, 32), torch.tensor([[10.0, 50, 90, 130]])
    with torch.inference_mode():
        assert torch.equal(model(x, days), again(x, days))


def test_bad_sizes_say_which_sizes_work():
    model = UTILISE(NetworkConfig()).eval()
    with pytest.raises(InputShapeError, match=r"multiples of 8.*height 100 \(try 96 or 104\)"):
        model(torch.rand(1, 2, 4, 100, 64), torch.tensor([[1.0, 2.0]]))
    with pytest.raises(InputShapeError, match="takes 4 input channels, got 13"):
        model(torch.rand(1, 2, 13, 64, 64), torch.tensor([[1.0, 2.0]]))


def test_not_a_checkpoint_gives_clear_errors(tmp_path, reference_dir):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pth: not a readable PyTorch checkpoint"):
        load_model(text)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes((reference_dir / "earthnet2021_seed0.pth").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_model(truncated)
    # The header reader (a dry run's) leaves what it cannot read to torch's loader, and gives the same errors.
    assert read_header(text) is None and read_header(truncated) is None
    other = tmp_path / "other.pth"
    torch.save({"model_state_dict": {"encoder.weight": torch.zeros(3)}}, other)
    for read in (load_model, read_header):
        with pytest.raises(CheckpointError, match="other.pth: unknown parameter 'encoder.weight': not a U-TILISE"):
            read(other)
        with pytest.raises(CheckpointError, match="no such checkpoint"):
            read(tmp_path / "missing.pth")


def test_the_header_read_without_torch_is_what_loading_gives(reference_dir):
    from utilise_cli.weights import DEFAULT_WEIGHTS

    for path in [DEFAULT_WEIGHTS] + [reference_dir / f"{name}_seed0.pth" for name in REFERENCES]:
        header, model = read_header(path), load_model(path)
        assert header.config == model.config and header.metadata == model.metadata, path.name


def test_the_header_reads_no_unknown_object_and_runs_no_code(tmp_path):
    from pathlib import Path

    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return Path.touch, (ran,)

    evil = tmp_path / "evil.pth"
    torch.save({"model_state_dict": {"stem.conv1.weight": Payload()}}, evil)
    assert read_header(evil) is None and not ran.exists()  # left to torch's weights_only loader, which refuses
    with pytest.raises(CheckpointError, match="evil.pth: not a readable PyTorch checkpoint"):
        load_model(evil)
    assert not ran.exists()


def test_temporal_windows_cover_every_date_and_match_one_pass_when_long_enough():
    from utilise_cli.inference import NetworkPredictor, time_windows

    torch.manual_seed(0)
    model = UTILISE(NetworkConfig(encoder_widths=(8, 8, 16), decoder_widths=(8, 8, 16))).eval()
    x = np.random.default_rng(0).random((1, 12, 4, 16, 16), dtype=np.float32)
    observed, days = np.ones((1, 12, 16, 16), bool), np.arange(12.0) * 10
    windows = time_windows(12, 5, 2)
    assert windows[0][0] == 0 and windows[-1][1] == 12
    assert set(range(12)) == {d for a, b in windows for d in range(a, b)}
    one_pass = NetworkPredictor(model)(x, observed, days)
    assert np.allclose(NetworkPredictor(model, window=12)(x, observed, days), one_pass)
    windowed = NetworkPredictor(model, window=5, window_overlap=2)(x, observed, days)
    assert windowed.shape == one_pass.shape and np.isfinite(windowed).all()
    # The first window alone decides the first dates: they equal a pass over those 5 dates.
    first = NetworkPredictor(model)(x[:, :5], observed[:, :5], days[:5])
    assert np.allclose(windowed[:, :3], first[:, :3], atol=1e-6)


def test_bf16_autocast_is_close_to_float32_but_not_identical(reference_dir):
    from utilise_cli.inference import run_network

    model = load_model(reference_dir / "earthnet2021_seed0.pth")
    x = np.load(reference_dir / "earthnet2021_seed0_io.npz")["x"][:1, :, :, :64, :64]
    days = np.arange(x.shape[1], dtype=np.float32) * 10
    full = run_network(model, x, days)
    half = run_network(model, x, days, "bf16")
    diff = np.abs(full - half)
    assert half.dtype == np.float32 and 0 < diff.max() < 0.05 and diff.mean() < 0.005


def test_residual_input_is_interpolated_series_plus_gap_channel(reference_dir):
    from utilise_cli.baselines import interpolate
    from utilise_cli.inference import network_input

    io = np.load(reference_dir / "earthnet2021_seed0_io.npz")
    series, days = io["x"][0, :, :, :32, :32], io["position_days"][0]
    hidden = io["masks"][0, :, 0, :32, :32] > 0.5
    series[2, 1, 5, 5] = np.nan  # no data in one band: the whole pixel counts as a gap
    x = network_input(series, hidden, days, residual="linear")
    assert x.shape == (8, 5, 32, 32) and x.dtype == np.float32
    blank = hidden | np.isnan(series).any(axis=1)
    assert np.array_equal(x[:, 4], blank.astype(np.float32))
    expected = interpolate("linear", np.nan_to_num(series), ~blank, days)
    known = ~np.isnan(expected)
    assert known.mean() > 0.9 and np.allclose(x[:, :4][known], expected[known], atol=1e-6)
    assert np.array_equal(x[:, :4][~blank[:, None].repeat(4, 1)], series[:, :4][~blank[:, None].repeat(4, 1)])
    # A batch gives the same as its series one by one.
    batch = network_input(np.stack([series, series[::-1]]), np.stack([hidden, hidden[::-1]]), days, residual="linear")
    assert np.array_equal(batch[0], x)
    with pytest.raises(ValueError, match="days"):
        network_input(series, hidden, residual="linear")


def test_residual_network_with_zero_head_is_linear_interpolation(tmp_path, reference_dir):
    from utilise_cli.baselines import interpolate
    from utilise_cli.inference import NetworkPredictor

    with pytest.raises(ValueError, match="output_activation none"):
        NetworkConfig(input_dim=5, residual="linear")
    torch.manual_seed(0)
    config = NetworkConfig(input_dim=5, output_dim=4, encoder_widths=(8, 8, 16), decoder_widths=(8, 8, 16),
                           residual="linear", output_activation="none")
    model = UTILISE(config).eval()
    torch.nn.init.zeros_(model.head.conv2.weight)
    torch.nn.init.zeros_(model.head.conv2.bias)
    model = load_model(save_checkpoint(model, tmp_path / "residual.pth"))
    assert model.config.residual
    io = np.load(reference_dir / "earthnet2021_seed0_io.npz")
    series, days = io["x"][:1, :, :, :32, :32], io["position_days"][0]
    observed = io["masks"][:1, :, 0, :32, :32] < 0.5
    out = NetworkPredictor(model)(series, observed, days)
    linear = interpolate("linear", series[0], observed[0], days)
    known = ~np.isnan(linear)
    assert np.allclose(out[0][known], linear[known], atol=1e-6)
    # With a non-zero head the output moves away from the interpolation.
    torch.nn.init.normal_(model.head.conv2.bias, std=0.05)
    assert not np.allclose(NetworkPredictor(model)(series, observed, days)[0][known], linear[known], atol=1e-3)


def test_a_model_cast_to_bf16_runs_and_stays_close(reference_dir):
    model = load_model(reference_dir / "earthnet2021_seed0.pth")
    data = np.load(reference_dir / "earthnet2021_seed0_io.npz")
    x, days = torch.from_numpy(data["x"][:1, :, :, :64, :64]), torch.from_numpy(data["position_days"][:1])
    with torch.inference_mode():
        full = model(x, days)
        half = model.to(torch.bfloat16)(x.bfloat16(), days)  # days stay float32: bf16 cannot hold day 257
    assert half.dtype == torch.bfloat16
    diff = (half.float() - full).abs()
    assert 0 < diff.mean() < 0.01
