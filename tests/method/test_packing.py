"""What the transformer receives in every section, in both modes, recorded by a stand-in model."""
import pytest
import torch

from framepack_core.method.sections import Conditioning, SectionSettings, run_sections

H, W = 4, 6


class RecordingTransformer(torch.nn.Module):
    """Velocity = 0.5 * x + 0.1 * the mean clean frame, so sections differ and depend on the context."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    @property
    def dtype(self):
        return torch.float32

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, **kwargs):
        self.calls.append({k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})
        x = kwargs["hidden_states"]
        return (0.5 * x + 0.1 * kwargs["latents_clean"].mean(dim=2, keepdim=True),)


def conditioning():
    g = torch.Generator().manual_seed(5)
    return Conditioning(torch.randn(1, 512, 8, generator=g), torch.arange(512)[None] < 7,
                        torch.randn(1, 8, generator=g), torch.randn(1, 3, 8, generator=g))


def start_latent(seed=3):
    return torch.randn(1, 16, 1, H, W, generator=torch.Generator().manual_seed(seed))


def run(mode, sections, window=3, steps=2, end_latent=None):
    model = RecordingTransformer()
    settings = SectionSettings(seconds=sections * 4 * window / 30, window=window, steps=steps, mode=mode)
    out = list(run_sections(model, conditioning(), start_latent(), settings, torch.Generator().manual_seed(0),
                            end_latent=end_latent))
    assert len(out) == sections and len(model.calls) == sections * steps
    return out, [model.calls[i * steps] for i in range(sections)]


def zeros(frames):
    return torch.zeros(1, 16, frames, H, W)


@pytest.mark.parametrize("sections", [1, 2, 3, 6])
def test_inverted_packing(sections):
    window = 3
    out, calls = run("inverted", sections, window)
    S = start_latent()
    history = torch.zeros(1, 16, 0, H, W)  # generated so far, temporal order
    paddings = [sections - 1 - i for i in range(sections)] if sections <= 4 else [3] + [2] * (sections - 3) + [1, 0]
    for index, (section, call) in enumerate(zip(out, calls)):
        padded = torch.cat([history, zeros(19)], dim=2)[:, :, :19]
        assert torch.equal(call["latents_clean"], torch.cat([S, padded[:, :, :1]], dim=2))
        assert torch.equal(call["latents_history_2x"], padded[:, :, 1:3])
        assert torch.equal(call["latents_history_4x"], padded[:, :, 3:19])
        gap = paddings[index] * window
        assert call["indices_latents"].tolist() == list(range(1 + gap, 1 + gap + window))
        assert call["indices_latents_clean"].tolist() == [0, 1 + gap + window]
        assert call["indices_latents_history_2x"].tolist() == [2 + gap + window, 3 + gap + window]
        assert call["indices_latents_history_4x"].tolist() == list(range(4 + gap + window, 20 + gap + window))
        assert call["hidden_states"].shape == (1, 16, window, H, W)
        last = index == sections - 1
        assert section.latents.shape[2] == window + last
        if last:
            assert torch.equal(section.latents[:, :, :1], S)
        history = torch.cat([section.latents, history], dim=2)
        assert torch.equal(section.video_latents, history)
    assert history.shape[2] == sections * window + 1


@pytest.mark.parametrize("sections", [1, 2, 7])
def test_forward_packing(sections):
    window = 3
    out, calls = run("forward", sections, window)
    S = start_latent()
    history = S  # temporal order, start frame first
    for section, call in zip(out, calls):
        padded = torch.cat([zeros(19), history], dim=2)[:, :, -19:]
        assert torch.equal(call["latents_history_4x"], padded[:, :, :16])
        assert torch.equal(call["latents_history_2x"], padded[:, :, 16:18])
        assert torch.equal(call["latents_clean"], torch.cat([S, padded[:, :, 18:]], dim=2))
        assert call["indices_latents_clean"].tolist() == [0, 19]
        assert call["indices_latents_history_4x"].tolist() == list(range(1, 17))
        assert call["indices_latents_history_2x"].tolist() == [17, 18]
        assert call["indices_latents"].tolist() == list(range(20, 20 + window))
        assert section.latents.shape[2] == window
        history = torch.cat([history, section.latents], dim=2)
        assert torch.equal(section.video_latents, history)
    assert history.shape[2] == sections * window + 1


def test_end_frame_reaches_the_first_section_only():
    E = torch.full((1, 16, 1, H, W), 7.0)
    out, calls = run("inverted", 3, end_latent=E)
    assert torch.equal(calls[0]["latents_clean"][:, :, 1:], E)
    assert torch.equal(calls[1]["latents_clean"][:, :, 1:], out[0].latents[:, :, :1])
    plain, _ = run("inverted", 3)
    assert not torch.equal(out[0].latents, plain[0].latents)


def test_end_frame_needs_inverted_sampling():
    with pytest.raises(ValueError, match="inverted"):
        run("forward", 2, end_latent=torch.zeros(1, 16, 1, H, W))


def test_guidance_and_timesteps():
    _, _ = run("inverted", 1, steps=3)
    model = RecordingTransformer()
    settings = SectionSettings(seconds=0.4, window=3, steps=3, gs=6.0)
    list(run_sections(model, conditioning(), start_latent(), settings, torch.Generator().manual_seed(0)))
    assert [c["guidance"].tolist() for c in model.calls] == [[6000.0]] * 3
    assert model.calls[0]["timestep"].tolist() == [1000.0]
    assert model.calls[0]["encoder_hidden_states"].shape == (1, 512, 8)
    assert model.calls[0]["encoder_attention_mask"].dtype == torch.bool


def test_noise_is_drawn_per_section_in_order():
    """Each section's noise is the next randn((1,16,K,h,w)) of the one seeded CPU generator."""
    model = RecordingTransformer()
    settings = SectionSettings(seconds=0.8, window=3, steps=1)
    list(run_sections(model, conditioning(), start_latent(), settings, torch.Generator().manual_seed(42)))
    g = torch.Generator().manual_seed(42)
    for call in model.calls:
        assert torch.equal(call["hidden_states"], torch.randn((1, 16, 3, H, W), generator=g))
