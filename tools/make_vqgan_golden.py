"""Compute golden numbers for MedLVM's VQGAN from the ORIGINAL open-muse implementation.

    python tools/make_vqgan_golden.py --open-muse /tmp/openmuse/muse

--open-muse is a folder holding open-muse's `modeling_taming_vqgan.py` with its siblings `modeling_utils.py`
and `logging.py` (huggingface/open-muse, folder `muse/`), or a checkout with that `muse/` folder. The module is
imported from there and never copied into MedLVM; it needs `accelerate` and `requests` besides torch, e.g.
`pip install --target /tmp/openmuse/deps --no-deps accelerate requests charset_normalizer idna urllib3 certifi
psutil` and `PYTHONPATH=/tmp/openmuse/deps`. This script imports nothing from MedLVMLib, so the numbers are
independent of the code they check.

It builds a small seeded `VQGANModel` (16x16 images, one downsample, 32 channels, 64 codes of 8 values) in which
every tensor is perturbed (GroupNorm weights and biases too), runs `get_code`, `encode`, `decode_code` and
`decode` on seeded images, and writes into --out:
- `config.json` + `pytorch_model.bin`: the model, via open-muse's own `save_pretrained`. The weights are stored
  in fp16 to keep the fixture small; every value was rounded to fp16 BEFORE the goldens were computed in fp32,
  so an fp16 -> fp32 load gives exactly the weights the goldens came from.
- `golden.safetensors`: inputs and fp32 outputs (names below), plus one open-muse `ResnetBlock(32 -> 64)` with
  its weights, input and output, because the small model has no channel change and so no `nin_shortcut`.
- metadata in the safetensors header: seed, torch version, the sha256 of the open-muse module.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "Testing/engine/engine/models/fixtures/vqgan_golden"
MODULE = "modeling_taming_vqgan.py"
CONFIG = dict(resolution=16, num_channels=3, hidden_channels=32, channel_mult=(1, 1), num_res_blocks=1,
              attn_resolutions=(), no_attn_mid_block=True, z_channels=8, num_embeddings=64, quantized_embed_dim=8,
              dropout=0.0, resample_with_conv=True, commitment_cost=0.25)
#: the smallest gap between the nearest and second-nearest squared codebook distance at any position. Between
#: fp32 runs (1 or 2 threads, contiguous or channels-last input) and an fp64 run, squared distances moved by at
#: most 1.2e-5 here, so with this margin two correct implementations must agree on every code
MIN_CODE_MARGIN = 2e-3


def import_open_muse(path: Path) -> types.ModuleType:
    """open-muse's modeling_taming_vqgan, imported from `path` as `muse.modeling_taming_vqgan`.

    A bare `muse` package is registered instead of running open-muse's `__init__.py`, which would import
    every other model of the repository (and their dependencies) for nothing.
    """
    folder = path / "muse" if (path / "muse" / MODULE).is_file() else path
    if not (folder / MODULE).is_file():
        raise SystemExit(f"{path}: no {MODULE} here or in {path / 'muse'}")
    package = types.ModuleType("muse")
    package.__path__ = [str(folder)]
    package.__version__ = "0.0.1"
    sys.modules["muse"] = package
    return importlib.import_module("muse.modeling_taming_vqgan")


def fp16_exact(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.half().float()


@torch.no_grad()
def perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Make every tensor matter: GroupNorms get weights 1 +- 0.3 and biases +- 0.3 instead of 1 and 0, conv
    biases get noise added; then every tensor is rounded to fp16 (see the module docstring)."""
    for name, tensor in model.state_dict().items():
        if isinstance(model.get_submodule(name.rsplit(".", 1)[0]), torch.nn.GroupNorm):
            base = 1.0 if name.endswith("weight") else 0.0
            tensor.copy_(base + 0.3 * torch.randn(tensor.shape, generator=generator))
        elif name.endswith("bias"):
            tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator))
        tensor.copy_(fp16_exact(tensor))


def flat_latents(model, images: list) -> torch.Tensor:
    """(N, D) pre-quantisation latents of all positions of all image batches."""
    dim = CONFIG["quantized_embed_dim"]
    return torch.cat([model.quant_conv(model.encoder(x)).permute(0, 2, 3, 1).reshape(-1, dim) for x in images])


def code_margins(codebook: torch.Tensor, latents: torch.Tensor) -> tuple:
    """Per position: the gap between the second-nearest and the nearest squared distance, and the nearest entry."""
    nearest = torch.cdist(latents.double(), codebook.double()).pow(2).topk(2, dim=1, largest=False)
    return nearest.values[:, 1] - nearest.values[:, 0], nearest.indices[:, 0]


@torch.no_grad()
def make_codebook(model, images: list, generator: torch.Generator) -> None:
    """Codebook entries = latents of the images at random positions plus noise, so that codes spread over the
    codebook (the default init, +-1/K, sends nearly every position to one entry). Then, while some position
    lies within MIN_CODE_MARGIN of a tie between two entries, its nearest entry moves onto it: every code is
    then decided by a margin far above float rounding."""
    latents = flat_latents(model, images)
    picks = torch.randperm(latents.shape[0], generator=generator)[:CONFIG["num_embeddings"]]
    noise = 0.2 * latents.std() * torch.randn(picks.numel(), latents.shape[1], generator=generator)
    codebook = model.quantize.embedding.weight
    codebook.copy_(fp16_exact(latents[picks] + noise))
    for _ in range(200):
        gaps, nearest = code_margins(codebook, latents)
        worst = int(gaps.argmin())
        if gaps[worst] >= MIN_CODE_MARGIN:
            return
        codebook[nearest[worst]] = fp16_exact(latents[worst])
    raise SystemExit(f"could not separate the codes by {MIN_CODE_MARGIN}; pick another --seed")


def seeded_images(generator: torch.Generator) -> dict:
    """A smooth pattern and uniform noise (2, 3, 16, 16), and a non-square image (1, 3, 16, 24), all in [0, 1]."""
    r = CONFIG["resolution"]
    y, x = torch.meshgrid(torch.linspace(0, 1, r), torch.linspace(0, 1, r), indexing="ij")
    smooth = torch.stack([x, y, 0.5 + 0.5 * torch.sin(6.0 * x + 4.0 * y)])
    noise = torch.rand(3, r, r, generator=generator)
    return {"images": torch.stack([smooth, noise]), "images_wide": torch.rand(1, 3, r, r * 3 // 2, generator=generator)}


@torch.no_grad()
def run_model(model, images: torch.Tensor, images_wide: torch.Tensor) -> dict:
    """The open-muse outputs: codes (B, h*w) row-major, pre-quantisation latents, raw (unclamped) decodes."""
    latents = model.quant_conv(model.encoder(images))
    codes = model.get_code(images)
    quantized, encode_codes = model.encode(images)
    assert torch.equal(codes, encode_codes)
    assert torch.allclose(model.decode(quantized), model.decode_code(codes), atol=1e-4)
    quantized_wide, codes_wide = model.encode(images_wide)  # decode_code assumes square latents; decode does not
    margin = code_margins(model.quantize.embedding.weight, flat_latents(model, [images, images_wide]))[0].min()
    return {"latents": latents, "codes": codes, "decoded": model.decode_code(codes), "codes_wide": codes_wide,
            "decoded_wide": model.decode(quantized_wide), "margin": margin}


@torch.no_grad()
def resnet_block_golden(open_muse, generator: torch.Generator) -> dict:
    """An open-muse ResnetBlock(32 -> 64): weights (prefix `resnet_block.`), input and output."""
    block = open_muse.ResnetBlock(32, 64).eval()
    perturb(block, generator)
    hidden = torch.randn(1, 32, 6, 10, generator=generator)
    golden = {"resnet_block_input": hidden, "resnet_block_output": block(hidden)}
    golden.update({f"resnet_block.{k}": v.half() for k, v in block.state_dict().items()})
    return golden


def build(open_muse, seed: int) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # open-muse's default initialisation draws from the global generator
    model = open_muse.VQGANModel(**CONFIG).eval()
    perturb(model, generator)
    images = seeded_images(generator)
    make_codebook(model, list(images.values()), generator)
    golden = {**images, **run_model(model, images["images"], images["images_wide"])}
    return model, golden, generator


def check_reload(open_muse, folder: Path, golden: dict) -> None:
    """The saved folder, loaded by open-muse's own from_pretrained, reproduces the goldens bit for bit."""
    model = open_muse.VQGANModel.from_pretrained(str(folder), low_cpu_mem_usage=False).float().eval()
    again = run_model(model, golden["images"], golden["images_wide"])
    for key in ("codes", "decoded", "codes_wide", "decoded_wide"):
        assert torch.equal(again[key], golden[key]), f"{key} differs after open-muse's own reload"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--open-muse", type=Path, required=True, help="folder holding " + MODULE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    open_muse = import_open_muse(args.open_muse)
    model, golden, generator = build(open_muse, args.seed)
    margin = float(golden.pop("margin"))
    golden.update(resnet_block_golden(open_muse, generator))
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out), state_dict={k: v.half() for k, v in model.state_dict().items()})
    check_reload(open_muse, args.out, golden)
    source = Path(open_muse.__file__).read_bytes()
    metadata = {"seed": str(args.seed), "torch": torch.__version__, "code_margin": f"{margin:.4g}",
                "open_muse_module_sha256": hashlib.sha256(source).hexdigest(), "config": json.dumps(CONFIG)}
    save_file({k: v.contiguous() for k, v in golden.items()}, str(args.out / "golden.safetensors"), metadata)
    sizes = {p.name: p.stat().st_size for p in sorted(args.out.iterdir())}
    print(f"wrote {args.out}: {sizes}, {sum(sizes.values()) / 1024:.0f} KiB; smallest code margin {margin:.3g}; "
          f"codes used {golden['codes'].unique().numel()} of {CONFIG['num_embeddings']}")


if __name__ == "__main__":
    main()
