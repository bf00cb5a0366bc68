"""VQGAN: open-muse key layout, golden numbers from open-muse itself, encode/decode shapes (also non-square),
row-major codes, training pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from MedLVMLib.engine.config import TokenizerConfig
from MedLVMLib.engine.models import vqgan
from MedLVMLib.engine.models.vqgan import VQGAN, ResnetBlock, VQGANOutput
from MedLVMLib.errors import InputError

#: made by tools/make_vqgan_golden.py from open-muse's VQGANModel; see the README there
GOLDEN = Path(__file__).parent / "fixtures" / "vqgan_golden"
#: Two correct fp32 runs differ by ~1e-5 here (the conv algorithm depends on the memory layout: open-muse's own
#: decode() and decode_code() of the same codes differ by up to 3e-5; MedLVM's decoded values differ from the
#: goldens by 5e-6), the values are of order 1, and each planted bug below moves some value by 0.39 or more.
#: Codes must match exactly: each is decided by a margin of 2e-3 in squared distance, 100x what rounding moves.
GOLDEN_TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


def official_muse_shapes() -> dict:
    """The 277 open-muse tensor names and shapes of muse-f16-8192, enumerated from the published architecture
    (reference/lvm.md 2.5) independently of MedLVM's module code."""
    shapes = {}

    def conv(name, cout, cin, k):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (c,), (c,)

    def block(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cout, cin, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cout, cin, 1)

    widths = [128, 256, 256, 512, 768]
    conv("encoder.conv_in", 128, 3, 3)
    c = 128
    for level, w in enumerate(widths):
        for b in range(2):
            block(f"encoder.down.{level}.block.{b}", c, w)
            c = w
        if level < 4:
            conv(f"encoder.down.{level}.downsample.conv", w, w, 3)
    for mid in ("block_1", "block_2"):
        block(f"encoder.mid.{mid}", 768, 768)
        block(f"decoder.mid.{mid}", 768, 768)
    norm("encoder.norm_out", 768)
    conv("encoder.conv_out", 64, 768, 3)
    conv("quant_conv", 64, 64, 1)
    shapes["quantize.embedding.weight"] = (8192, 64)
    conv("post_quant_conv", 64, 64, 1)
    conv("decoder.conv_in", 768, 64, 3)
    c = 768
    for level in reversed(range(5)):
        for b in range(3):
            block(f"decoder.up.{level}.block.{b}", c, widths[level])
            c = widths[level]
        if level > 0:
            conv(f"decoder.up.{level}.upsample.conv", c, c, 3)
    norm("decoder.norm_out", 128)
    conv("decoder.conv_out", 3, 128, 3)
    return shapes


def test_state_dict_matches_open_muse_layout():
    with torch.device("meta"):
        model = VQGAN(TokenizerConfig.from_name("muse-f16-8192"))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = official_muse_shapes()
    assert len(official) == 277
    assert ours == official


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return VQGAN(TokenizerConfig.from_name("tiny")).eval()


@pytest.mark.parametrize("height,width", [(32, 32), (32, 48), (16, 40), (64, 32)])
@torch.no_grad()
def test_encode_decode_shapes(tiny, height, width):
    images = torch.rand(2, 3, height, width)
    codes = tiny.encode(images)
    assert codes.shape == (2, height // 4, width // 4) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < 64
    decoded = tiny.decode(codes)
    assert decoded.shape == (2, 3, height, width)
    assert float(decoded.min()) >= 0.0 and float(decoded.max()) <= 1.0


@pytest.mark.parametrize("shape", [(2, 3, 30, 32), (2, 1, 32, 32), (3, 32, 32)])
def test_encode_rejects_bad_shapes(tiny, shape):
    with pytest.raises(InputError):
        tiny.encode(torch.rand(*shape))


@pytest.mark.parametrize("codes", [torch.zeros(2, 64, dtype=torch.long), torch.full((1, 8, 8), 64)])
def test_decode_rejects_bad_codes(tiny, codes):
    with pytest.raises(InputError):
        tiny.decode(codes)


def test_codes_are_row_major_nearest_entries():
    torch.manual_seed(1)
    quantizer = VQGAN(TokenizerConfig.from_name("tiny")).quantize
    codebook = torch.randn(64, 8)
    quantizer.embedding.weight.data.copy_(codebook)
    h, w = 4, 6
    ids = torch.arange(h * w)
    latents = codebook[ids].view(1, h, w, 8).permute(0, 3, 1, 2) + 1e-3 * torch.randn(1, 8, h, w)
    assert torch.equal(quantizer.codes(latents), ids.view(1, h, w))  # code (i, j) is token i*w + j
    z = torch.randn(3, 8, 5, 7)
    brute = torch.cdist(z.permute(0, 2, 3, 1).reshape(-1, 8), codebook).argmin(1).view(3, 5, 7)
    assert torch.equal(quantizer.codes(z), brute)
    expected = codebook[ids].view(1, h, w, 8).permute(0, 3, 1, 2)
    assert torch.allclose(quantizer.lookup(quantizer.codes(latents)), expected)


def test_forward_straight_through_gradients(tiny):
    model = VQGAN(TokenizerConfig.from_name("tiny"))
    images = torch.rand(2, 3, 32, 32)
    out = model(images)
    assert isinstance(out, VQGANOutput)
    assert out.reconstruction.shape == images.shape and out.codes.shape == (2, 8, 8)
    assert out.commitment_loss.ndim == 0 and out.codebook_loss.ndim == 0
    loss = (out.reconstruction - images).pow(2).mean() + out.codebook_loss + out.commitment_loss
    loss.backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0  # reached the encoder through the quantiser
    assert model.quantize.embedding.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(out.codes, model.encode(images))


def test_commitment_cost_scales_loss():
    torch.manual_seed(0)
    model = VQGAN(TokenizerConfig.from_name("tiny"))
    images = torch.rand(1, 3, 32, 32)
    out = model(images)
    assert out.commitment_loss.item() == pytest.approx(0.25 * out.codebook_loss.item(), rel=1e-5)


OFFICIAL_CONFIG = {"_class_name": "VQGANModel", "_version": "0.0.1", "attn_resolutions": [],
                   "channel_mult": [1, 2, 2, 4, 6], "commitment_cost": 0.25, "dropout": 0.0, "hidden_channels": 128,
                   "no_attn_mid_block": True, "num_channels": 3, "num_embeddings": 8192, "num_res_blocks": 2,
                   "quantized_embed_dim": 64, "resample_with_conv": True, "resolution": 256, "z_channels": 64}


def test_official_layout_checkpoint_loads_strictly(tmp_path):
    """config.json + pytorch_model.bin as released (Emma02/vqvae_ckpts), random weights, 146M parameters."""
    import json

    from MedLVMLib.engine.checkpoints.formats import load_checkpoint

    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=generator) * 0.02 for k, shape in official_muse_shapes().items()}
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    torch.save(state, tmp_path / "pytorch_model.bin")
    del state
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.format == "open-muse" and ckpt.transformer is None
    model = ckpt.tokenizer
    assert model.config == TokenizerConfig.from_name("muse-f16-8192")
    reference = torch.load(tmp_path / "pytorch_model.bin", weights_only=True, mmap=True)
    for key in ("encoder.conv_in.weight", "quantize.embedding.weight", "decoder.up.3.block.0.nin_shortcut.bias"):
        assert torch.equal(model.state_dict()[key], reference[key])
    with torch.no_grad():
        codes = model.encode(torch.rand(1, 3, 64, 48))  # non-square; 256x256 works the same, only slower
        assert codes.shape == (1, 4, 3)
        assert model.decode(codes).shape == (1, 3, 64, 48)


# ----------------------------------------------------------------------------------- golden numbers from open-muse


@pytest.fixture(scope="module")
def golden():
    from safetensors.torch import load_file

    from MedLVMLib.engine.checkpoints.formats import load_open_muse

    return load_open_muse(GOLDEN), load_file(str(GOLDEN / "golden.safetensors"))


def golden_differences(model: VQGAN, golden: dict) -> dict:
    """{output name: how it differs from open-muse's}; empty when the model reproduces every golden output."""
    differences = {}

    def compare(name, got, expected):
        if got.shape != expected.shape:
            differences[name] = f"shape {tuple(got.shape)} != {tuple(expected.shape)}"
        elif expected.dtype == torch.int64 and not torch.equal(got, expected):
            differences[name] = f"{int((got != expected).sum())} of {expected.numel()} codes differ"
        elif expected.is_floating_point() and not torch.allclose(got, expected, **GOLDEN_TOLERANCE):
            differences[name] = f"max |difference| {float((got - expected).abs().max()):.3g}"

    f = model.config.downsample_factor
    with torch.no_grad():
        compare("latents", model.latents(golden["images"]), golden["latents"])
        for suffix in ("", "_wide"):
            images, codes = golden["images" + suffix], golden["codes" + suffix]
            grid = codes.view(images.shape[0], images.shape[2] // f, images.shape[3] // f)  # row-major (B, h, w)
            compare("codes" + suffix, model.encode(images), grid)
            raw = model.decode_latents(model.quantize.lookup(grid))
            compare("decoded" + suffix, raw, golden["decoded" + suffix])
            compare("decoded_clamped" + suffix, model.decode(grid), golden["decoded" + suffix].clamp(0.0, 1.0))
        block = ResnetBlock(32, 64, groups=32)
        block.load_state_dict({k[len("resnet_block."):]: v.float() for k, v in golden.items()
                               if k.startswith("resnet_block.")}, strict=True)
        compare("resnet_block", block(golden["resnet_block_input"]), golden["resnet_block_output"])
    return differences


def test_golden_fixture_is_small_and_in_open_muse_format(golden):
    from MedLVMLib.engine.checkpoints.formats import detect_format

    model, values = golden
    assert detect_format(GOLDEN) == "open-muse"
    assert model.config == TokenizerConfig(resolution=16, hidden_channels=32, channel_mult=(1, 1), num_res_blocks=1,
                                           z_channels=8, codebook_size=64, embed_dim=8, norm_groups=32)
    assert sum(p.stat().st_size for p in GOLDEN.iterdir()) < 700_000
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert all(m.weight.std() > 0.1 and m.bias.std() > 0.1 for m in norms)  # not the initial ones and zeros
    assert values["codes"].unique().numel() > 40  # codes spread over the 64 entries


def test_matches_open_muse_golden_numbers(golden):
    """Codes exactly, latents and decoded values to 1e-4, as open-muse's VQGANModel computed them."""
    assert golden_differences(*golden) == {}


class _Functional:
    """torch.nn.functional with some functions replaced, to plant a bug in vqgan.py only."""

    def __init__(self, **replaced):
        self.__dict__.update(replaced)

    def __getattr__(self, name):
        return getattr(F, name)


PLANTED_BUGS = {
    # name: (replaced functions, golden outputs that must then differ)
    "relu instead of silu": ({"silu": F.relu}, {"latents", "codes", "codes_wide", "decoded", "decoded_wide",
                                                "resnet_block"}),
    "bilinear upsampling": ({"interpolate": lambda x, **kw: F.interpolate(x, **{**kw, "mode": "bilinear"})},
                            {"decoded", "decoded_wide"}),
    "downsample pads left and top": ({"pad": lambda x, pad: F.pad(x, (1, 0, 1, 0))}, {"latents", "codes"}),
}


@pytest.mark.parametrize("bug", PLANTED_BUGS)
def test_golden_comparison_catches_planted_bugs(golden, monkeypatch, bug):
    replaced, must_differ = PLANTED_BUGS[bug]
    monkeypatch.setattr(vqgan, "F", _Functional(**replaced))
    differences = golden_differences(*golden)
    assert must_differ <= set(differences), differences
