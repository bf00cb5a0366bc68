"""`medlvm info`, `medlvm models`, `medlvm convert`, and light imports of the command modules."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from MedLVMLib import cli
from MedLVMLib.engine.checkpoints.formats import export_hf_llama, export_open_muse, load_checkpoint
from MedLVMLib.engine.config import TokenizerConfig, TransformerConfig, transformer_param_count
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.engine.models.vqgan import VQGAN


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """An official-layout LVM folder (HF LLaMA, 2 shards + vqvae/ open-muse) with tiny random weights."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("cli") / "lvm"
    export_hf_llama(folder, Transformer(TransformerConfig.from_name("tiny")), n_shards=2)
    export_open_muse(folder / "vqvae", VQGAN(TokenizerConfig.from_name("tiny")))
    return folder


def test_info_lists_versions_device_and_models(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for text in ("torch", "device", "CPU kernels", "lvm-7b", "medlvm-tiny-ct", "(default)"):
        assert text in out


def test_info_model_describes_official_folder(official, capsys):
    assert cli.main(["info", "--model", str(official)]) == 0
    out = capsys.readouterr().out
    assert "(lvm)" in out and "codebook_size=64" in out
    assert f"{transformer_param_count(TransformerConfig.from_name('tiny')):,} parameters" in out


def test_info_unknown_model_is_a_clean_error(capsys):
    assert cli.main(["info", "--model", "no-such-model"]) == 2
    assert "medlvm: error:" in capsys.readouterr().err


def test_models_table(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| id |") and "Emma02/LVM_ckpts" in out and "medlvm-tiny-zs" in out


def test_convert_official_to_medlvm(official, tmp_path, capsys):
    out = tmp_path / "converted"
    assert cli.main(["convert", str(official), str(out), "--dtype", "bf16", "--model-id", "lvm-tiny"]) == 0
    assert str(out) in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt.format == "medlvm" and ckpt.model_id == "lvm-tiny"
    assert ckpt.transformer.lm_head.weight.dtype == torch.bfloat16
    source = load_checkpoint(official)
    assert torch.equal(ckpt.tokenizer.quantize.embedding.weight, source.tokenizer.quantize.embedding.weight)
    assert torch.equal(ckpt.transformer.lm_head.weight, source.transformer.lm_head.weight.bfloat16())
    assert cli.main(["convert", str(official), str(out)]) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err


def test_command_modules_do_not_import_torch():
    code = ("import sys, MedLVMLib.cli, MedLVMLib.commands.info, MedLVMLib.commands.models, "
            "MedLVMLib.commands.convert; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
