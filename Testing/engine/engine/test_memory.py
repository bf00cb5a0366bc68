"""The generation batch from the memory a sentence needs; the fallback to smaller batches on out-of-memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MedLVMLib.engine import lvm, memory
from MedLVMLib.engine.config import TransformerConfig

LVM_7B = TransformerConfig.from_name("lvm-7b")


def test_lvm_7b_kv_cache_of_ten_images_in_bf16():
    # 2 (k, v) x 32 layers x 2,560 tokens x 4,096 values x 2 bytes
    assert memory.kv_cache_bytes(LVM_7B, 1, 10 * 256, 2) == 1_342_177_280
    assert memory.kv_cache_bytes(LVM_7B, 64, 10 * 256, 2) == 64 * 1_342_177_280


def test_kv_cache_estimate_equals_what_the_transformer_allocates():
    model = lvm.random_model("tiny")
    transformer = model.transformer
    transformer.setup_caches(5, 300, dtype=torch.float32)
    allocated = sum(layer.self_attn.kv_cache.k.nbytes + layer.self_attn.kv_cache.v.nbytes
                    for layer in transformer.model.layers)
    transformer.clear_caches()
    assert allocated == memory.kv_cache_bytes(transformer.config, 5, 300, 4)


def test_batch_follows_the_free_memory_of_a_gpu():
    cuda = torch.device("cuda")
    per = memory.bytes_per_sentence(LVM_7B, 2560, 1280, 2)
    assert 1.34e9 < per < 1.8e9  # the KV cache dominates (prefill activations: the rest)
    # a 24 GB workstation GPU after 13.5 GB of bf16 weights: about 10 GB free
    workstation = memory.generation_batch(LVM_7B, 128, 2560, 1280, 2, cuda, free=10 * 2**30)
    h200 = memory.generation_batch(LVM_7B, 128, 2560, 1280, 2, cuda, free=125 * 2**30)
    assert 4 <= workstation <= 7 and workstation * per <= 10 * 2**30
    assert h200 > 10 * workstation
    assert memory.generation_batch(LVM_7B, 128, 2560, 1280, 2, cuda, free=2**20) == 1  # never 0
    assert memory.generation_batch(LVM_7B, 3, 2560, 1280, 2, cuda, free=125 * 2**30) == 3  # never more than asked


def test_cpu_batch_does_not_depend_on_the_machine_load(monkeypatch):
    monkeypatch.setattr(memory, "free_bytes", lambda device: pytest.fail("a CPU batch must not read free memory"))
    cpu = torch.device("cpu")
    config = TransformerConfig.from_name("medlvm-tiny")
    small = memory.generation_batch(config, 320, 640, 320, 4, cpu)
    assert 100 <= small <= 320 and small == memory.generation_batch(config, 320, 640, 320, 4, cpu, free=2**20)
    per = memory.bytes_per_sentence(LVM_7B, 2560, 1280, 4)
    assert memory.generation_batch(LVM_7B, 320, 2560, 1280, 4, cpu) == max(1, memory.CPU_BUDGET_BYTES // per)


def test_generation_falls_back_to_smaller_batches_on_out_of_memory(monkeypatch):
    model = lvm.random_model("tiny")
    prompt = np.random.default_rng(0).integers(0, 64, size=(7, 2 * model.tokens_per_image))
    expected = lvm.generate(model, prompt, 1, greedy=True, batch_size=7)
    original, batches = lvm.generate_images, []

    def small_memory(transformer, rows, *args, **kwargs):
        batches.append(len(rows))
        if len(rows) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.3 GiB")
        return original(transformer, rows, *args, **kwargs)

    monkeypatch.setattr(lvm, "generate_images", small_memory)
    got = lvm.generate(model, prompt, 1, greedy=True)  # automatic batch: all 7, then halved until it fits
    np.testing.assert_array_equal(got, expected)
    assert batches[0] == 7 and max(batches[1:]) <= 3 and sum(b for b in batches if b <= 2) == 7
