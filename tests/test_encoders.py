"""Encoders: shapes and ranges, paper sizes, the log-mel front end, default-bias init, and that learning works."""

from __future__ import annotations

import pytest
import torch
import torchaudio

from afx_lightning.encoders import (
    InceptionEncoder,
    LogMelFrontend,
    MobileNetV2Encoder,
    ParameterEncoder,
    SmallEncoder,
    count_parameters,
)

SR = 22050
CONTEXT = 40960
P = 17  # the breath-removal chain's parameter count

ENCODERS = [InceptionEncoder, MobileNetV2Encoder, SmallEncoder]


@pytest.fixture(scope="module")
def context() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(2, 2, CONTEXT, generator=g)  # stereo: the front end downmixes


@pytest.mark.parametrize("cls", ENCODERS)
def test_output_shape_and_range(cls: type[ParameterEncoder], context: torch.Tensor) -> None:
    torch.manual_seed(0)
    enc = cls(num_params=P, sample_rate=SR)
    out = enc(context)
    assert out.shape == (2, P)
    assert torch.all((out > 0) & (out < 1))
    out.sum().backward()
    assert all(p.grad is not None for p in enc.parameters() if p.requires_grad)
    enc.eval()
    with torch.no_grad():
        assert enc(context[:, 0]).shape == (2, P)  # [B, T] is accepted too
        assert enc(context[..., :1024]).shape == (2, P)  # a single mel frame still works


@pytest.mark.parametrize(("cls", "paper"), [(InceptionEncoder, 2.8e6), (MobileNetV2Encoder, 2.2e6)])
@pytest.mark.parametrize("num_params", [17, 21, 50])  # the paper's three chains
def test_parameter_count_matches_paper(cls: type[ParameterEncoder], paper: float, num_params: int) -> None:
    n = count_parameters(cls(num_params=num_params))
    assert abs(n - paper) / paper < 0.15, n


def test_small_encoder_is_small() -> None:
    assert 50_000 <= count_parameters(SmallEncoder(num_params=P)) <= 150_000


def test_frontend_matches_torchaudio_log_mel_and_finds_the_sine() -> None:
    freq = 1000.0
    t = torch.arange(CONTEXT) / SR
    sine = 0.5 * torch.sin(2 * torch.pi * freq * t)
    audio = torch.stack([sine, sine])[None]  # [1, 2, T]: identical channels, so the downmix is the sine
    front = LogMelFrontend(sample_rate=SR).eval()  # fresh batch norm in eval mode: x / sqrt(1 + 1e-5)
    with torch.no_grad():
        out = front(audio)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=1024, win_length=1024, hop_length=256, n_mels=128, power=2.0, center=False
    )
    expected = torch.log10(mel(sine[None]) + 1e-6)[:, None] / (1 + 1e-5) ** 0.5
    assert out.shape == (1, 1, 128, (CONTEXT - 1024) // 256 + 1)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    # The peak band is the mel band whose triangle is highest at 1 kHz.
    fb = torchaudio.functional.melscale_fbanks(513, 0.0, SR / 2, 128, SR)  # [freqs, mels]
    expected_band = fb[round(freq * 1024 / SR)].argmax().item()
    peak = out[0, 0].mean(dim=-1).argmax().item()
    assert abs(peak - expected_band) <= 1
    assert not any(p.requires_grad for name, p in front.named_parameters() if not name.startswith("norm."))
    assert [n for n, _ in front.named_parameters()] == ["norm.weight", "norm.bias"]


@pytest.mark.parametrize("cls", ENCODERS)
def test_init_output_bias_starts_at_defaults(cls: type[ParameterEncoder], context: torch.Tensor) -> None:
    torch.manual_seed(0)
    enc = cls(num_params=5)
    defaults = torch.tensor([0.0, 0.25, 0.5, 0.8, 1.0])
    enc.init_output_bias(defaults)
    enc.eval()
    with torch.no_grad():
        out = enc(context)
    torch.testing.assert_close(out, defaults.clamp(0.01, 0.99).expand(2, 5), rtol=1e-5, atol=1e-6)


def test_init_output_bias_still_trains() -> None:
    torch.manual_seed(0)
    enc = SmallEncoder(num_params=3)
    enc.init_output_bias(torch.full((3,), 0.5))
    x = 0.1 * torch.randn(4, 1, 8192)
    target = torch.tensor([[0.9, 0.1, 0.5]]).expand(4, 3)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(enc(x), target).backward()
        opt.step()
    assert enc.head.weight.abs().sum() > 0


def test_small_encoder_learns_fixed_targets() -> None:
    """Fit per-input targets (depending on level and brightness): MSE must fall by orders of magnitude.

    Training the head alone on frozen random features only gets to ~4e-2 of the start; the whole network to ~2e-5.
    """
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    n, length = 8, 8192
    gains = torch.linspace(0.02, 0.5, n)
    bright = torch.rand(n, generator=g)
    white = torch.randn(n, 1, length, generator=g)
    dull = torchaudio.functional.lowpass_biquad(white, SR, 500.0)
    x = gains[:, None, None] * (bright[:, None, None] * white + (1 - bright[:, None, None]) * dull)
    target = torch.stack([torch.linspace(0.1, 0.9, n), bright, torch.full((n,), 0.3)], dim=1)

    enc = SmallEncoder(num_params=3)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(enc(x), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0], (losses[0], losses[-1])


def test_constructor_arguments_are_typed() -> None:
    """LightningCLI / jsonargparse build encoders from typed __init__ signatures."""
    import inspect

    for cls in ENCODERS:
        sig = inspect.signature(cls.__init__)
        assert list(sig.parameters)[1:3] == ["num_params", "sample_rate"]
        assert sig.parameters["sample_rate"].default == SR
        assert all(p.annotation is not inspect.Parameter.empty for n, p in sig.parameters.items() if n != "self")


def test_small_encoder_centre_features_tell_when_an_event_is_in_the_frame() -> None:
    """Global pooling sees a click the same wherever it lies in the context; centre=True adds the middle column's
    features, which respond to a click in the frame (the context's centre) and not to one at its edge."""
    torch.manual_seed(0)
    quiet = 1e-3 * torch.randn(1, 1, 40960)
    in_frame, at_edge = quiet.clone(), quiet.clone()
    burst = 0.5 * torch.randn(2048)
    in_frame[..., 19456:21504] += burst  # around the centre, where the data module puts the frame
    at_edge[..., 2048:4096] += burst
    encoder = SmallEncoder(3, centre=True).eval()
    with torch.no_grad():
        features = [encoder.body(encoder.frontend(x))[0] for x in (quiet, in_frame, at_edge)]
    c = features[0].numel() // 4  # [global mean, global max, centre mean, centre max] x C channels
    centre = [f[2 * c :] for f in features]
    assert torch.allclose(centre[2], centre[0], atol=1e-3 * centre[0].abs().max())  # an edge click: centre unchanged
    assert (centre[1] - centre[0]).abs().max() > 10 * (centre[2] - centre[0]).abs().max()
    assert SmallEncoder(3, centre=True).head.in_features == 2 * SmallEncoder(3).head.in_features


def test_inception_channels_last_gives_the_same_outputs_and_gradients_as_nchw():
    """NHWC is a speed choice only (issue 14): same weights -> same θ and same weight gradients, in train mode."""
    import torch

    from afx_lightning.encoders import InceptionEncoder

    torch.manual_seed(0)
    nchw = InceptionEncoder(5, width=16, num_stages=2, channels_last=False)
    nhwc = InceptionEncoder(5, width=16, num_stages=2)
    nhwc.load_state_dict(nchw.state_dict())
    assert nhwc.body[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.get_config()["init_args"]["channels_last"] is True
    x = 0.1 * torch.randn(3, 1, 8192)
    outs = []
    for enc in (nchw, nhwc):
        enc.train()
        enc.zero_grad()
        theta = enc(x)
        theta.square().sum().backward()
        outs.append((theta.detach(), enc.head.weight.grad.clone(), enc.body[0][0].weight.grad.clone()))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
