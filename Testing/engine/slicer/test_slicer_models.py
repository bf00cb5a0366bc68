"""Models from the Slicer panel: the selector's states and labels, the consent question, and downloads through the
real engine worker from a local folder standing in for the hub (MEDLVM_HUB_MIRROR): progress, verification,
cancel mid-file and resume, and a one-line message when the hub cannot be reached. Nothing touches the network."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import types
from pathlib import Path

import pytest

from MedLVMLib.errors import MedLVMError
from MedLVMLib.slicer import models, protocol, requirements
from Testing.engine.slicer import test_slicer_module as base

pytest.importorskip("slicer")
module, logic, widget = base.module, base.logic, base.widget

HUB_ENTRY = {"id": "lvm-test", "description": "a test hub model",
             "source": {"hub": "org/llama", "tokenizer_hub": "org/vq"}, "size_bytes": 1_500_000_000,
             "tasks": ["motion"], "recommended_device": "cuda", "memory_gb": 16}
BUNDLED_ENTRY = {"id": "tiny-test", "description": "a bundled test model", "source": {"bundled": "models/tiny-test"},
                 "size_bytes": 11_425_780, "tasks": ["motion"], "recommended_device": "cpu", "memory_gb": 0.5}
SHARD = "model.safetensors"
SHARD_BYTES = 3 * 1_000_000 + 12345


def _write_checkpoint(folder: Path, config: dict, weights: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for name, data in weights.items():
        (folder / name).write_bytes(data)


def _shard_bytes() -> bytes:
    return bytes(range(256)) * (SHARD_BYTES // 256) + bytes(SHARD_BYTES % 256)


def _write_registry(resources: Path, hub_sha256: str) -> None:
    (resources / "models.json").write_text(json.dumps({"format_version": 1, "default": "tiny-test", "models": [
        BUNDLED_ENTRY, {**HUB_ENTRY, "sha256": hub_sha256}]}), encoding="utf-8")


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A private Resources/ (registry with a bundled and a hub model), cache, and a mirror holding the hub repos
    in the layouts of Emma02/LVM_ckpts (sharded LLaMA) and Emma02/vqvae_ckpts (open-muse)."""
    resources, cache, mirror = tmp_path / "Resources", tmp_path / "cache", tmp_path / "mirror"
    resources.mkdir()
    _write_registry(resources, hashlib.sha256(_shard_bytes()).hexdigest())
    _write_checkpoint(resources / "models" / "tiny-test", {"format_version": 1}, {"model.safetensors": b"x" * 10})
    _write_checkpoint(mirror / "org" / "llama", {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
                      {SHARD: _shard_bytes(), "generation_config.json": b"{}"})
    _write_checkpoint(mirror / "org" / "vq", {"_class_name": "VQGANModel"}, {"pytorch_model.bin": b"v" * 2048})
    for name, value in (("MEDLVM_RESOURCES", resources), ("MEDLVM_CACHE", cache), (models.MIRROR_ENV, mirror)):
        monkeypatch.setenv(name, str(value))
    return types.SimpleNamespace(resources=resources, cache=cache, mirror=mirror, target=cache / "lvm-test",
                                 staging=cache / ".lvm-test.partial")


def _choice(model_id: str):
    return next(choice for choice in models.model_choices() if choice.id == model_id)


# --------------------------------------------------------------------------- the selector


def test_labels_of_installed_and_downloadable_models(places):
    assert [c.label for c in models.model_choices()] == [
        "tiny-test — installed, runs on a CPU in about 0.5 GB",
        "lvm-test — 1.5 GB download, needs a GPU with 16 GB",
    ]
    hub = _choice("lvm-test")
    assert hub.downloadable and not hub.installed and hub.folder == places.target
    assert "Would be stored in" in hub.tooltip and "Not installed" in models.model_info(hub)
    _write_checkpoint(places.target, {"model_type": "llama"}, {"model.safetensors.index.json": b"{}"})
    assert not _choice("lvm-test").installed  # no tokenizer in vqvae/: not a usable download
    _write_checkpoint(places.target / "vqvae", {"_class_name": "VQGANModel"}, {"pytorch_model.bin": b"v"})
    assert _choice("lvm-test").label == "lvm-test — installed, needs a GPU with 16 GB"
    (places.resources / "models" / "tiny-test" / "model.safetensors").unlink()
    bundled = _choice("tiny-test")
    assert bundled.label.startswith("tiny-test — missing") and not bundled.downloadable
    assert "reinstall" in models.model_info(bundled)


def test_the_shipped_registry_offers_lvm_7b_with_its_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLVM_CACHE", str(tmp_path))  # nothing downloaded here
    monkeypatch.delenv("MEDLVM_RESOURCES", raising=False)
    entry = next(e for e in json.loads((base.ROOT / "Resources" / "models.json").read_text())["models"]
                 if e["id"] == "lvm-7b")
    label = _choice("lvm-7b").label
    assert label == (f"lvm-7b — {entry['size_bytes'] / 1e9:.1f} GB download, "
                     f"needs a GPU with {entry['memory_gb']:g} GB")


@pytest.mark.parametrize("size, text", [(0, "unknown size"), (400_000, "1 MB"), (11_425_780, "11 MB"),
                                        (13_665_077_729, "13.7 GB")])
def test_size_text(size, text):
    assert models.size_text(size) == text


def test_panel_rules_agree_with_the_engine(places):
    """models.py repeats a few engine rules without importing torch: they must stay the same."""
    from MedLVMLib.engine.checkpoints import download, formats, registry

    assert models.MIRROR_ENV == download.MIRROR_ENV
    assert set(models.WEIGHT_NAMES) == {formats.SAFETENSORS_NAME, formats.INDEX_NAME, formats.MUSE_WEIGHTS_NAME}
    engine = registry.load_registry()
    for choice in models.model_choices():
        assert choice.folder == registry.model_location(engine.models[choice.id], engine)



def test_the_panel_shows_the_default_the_engine_runs_for_each_task(monkeypatch):
    """models.default_model repeats the engine's per-task default without importing torch."""
    from MedLVMLib.engine.checkpoints import registry

    monkeypatch.delenv("MEDLVM_RESOURCES", raising=False)
    engine = registry.load_registry()
    for task in ("", "motion", "segment", "denoise", "superres"):
        assert models.default_model(models.read_registry(), task) == engine.default_for(task or None)


# --------------------------------------------------------------------------- consent


def test_consent_names_what_where_how_large_and_the_packages(places, monkeypatch):
    choice = _choice("lvm-test")
    text = models.consent_text(choice, ["- huggingface_hub>=0.20 (pip)"])
    assert "lvm-test (1.5 GB)" in text and str(places.target) in text and "needs a GPU with 16 GB" in text
    assert f"{places.mirror / 'org' / 'llama'}" in text and f"{places.mirror / 'org' / 'vq'}" in text
    assert "huggingface_hub>=0.20 (pip)" in text and "resumes" in text
    monkeypatch.delenv(models.MIRROR_ENV)
    text = models.consent_text(choice)
    assert "https://huggingface.co/org/llama" in text and "https://huggingface.co/org/vq" in text
    assert "Python packages" not in text


def test_download_needs_huggingface_hub_only_from_the_hub(places, monkeypatch):
    missing = {"huggingface_hub"}
    plan = requirements.install_plan(lambda name: None if name in missing else object(), lambda name: "2.5",
                                     download=True)
    assert plan.packages == [requirements.DOWNLOAD_PACKAGES["huggingface_hub"]]
    assert requirements.install_plan(lambda name: None if name in missing else object(), lambda name: "2.5").empty
    assert not models.download_needs_hub_client()  # the mirror is set
    monkeypatch.delenv(models.MIRROR_ENV)
    assert models.download_needs_hub_client()


@pytest.mark.parametrize("model_id", ["", "--help"])
def test_download_argv_refuses_what_is_not_an_id(model_id):
    assert protocol.download_argv("lvm-7b") == ["models", "--download", "lvm-7b"]
    with pytest.raises(MedLVMError, match="not a model id"):
        protocol.download_argv(model_id)


# --------------------------------------------------------------------------- downloads through the worker


def test_download_through_the_worker_with_progress_and_checks(places, logic):
    progress, lines = [], []
    assert logic.downloadModel("lvm-test", onProgress=lambda *p: progress.append(p), onLog=lines.append) == "lvm-test"
    assert _choice("lvm-test").installed and not places.staging.exists()
    assert (places.target / SHARD).read_bytes() == _shard_bytes()
    assert (places.target / "vqvae" / "pytorch_model.bin").is_file()
    assert not list(places.target.rglob("*.incomplete"))
    stages = {stage for stage, _, _ in progress}
    assert {"downloading org/llama (MB)", "downloading org/vq (MB)", "checking org/llama"} <= stages
    assert ("downloading org/llama (MB)", 4, 4) in progress  # MB counted up to the total
    assert any("downloaded, checked and installed" in line for line in lines)


def test_weights_that_fail_the_registry_sha256_are_refused_and_fetched_again(places, logic):
    _write_registry(places.resources, "0" * 64)
    with pytest.raises(RuntimeError) as info:
        logic.downloadModel("lvm-test")
    message = str(info.value)
    assert "sha256 differs from the models.json entry 'lvm-test'" in message and "\n" not in message
    assert not places.target.exists() and not _choice("lvm-test").installed
    assert not (places.staging / SHARD).exists() and (places.staging / "vqvae" / "pytorch_model.bin").is_file()
    _write_registry(places.resources, hashlib.sha256(_shard_bytes()).hexdigest())
    assert logic.downloadModel("lvm-test") == "lvm-test" and _choice("lvm-test").installed


def _poll_until(logic, condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logic._poll()  # what the Qt timer does
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe to hold the copy mid-file")
def test_cancel_mid_file_keeps_the_part_and_the_next_download_resumes(places, logic):
    shard = places.mirror / "org" / "llama" / SHARD
    data = shard.read_bytes()
    shard.unlink()
    os.mkfifo(shard)  # the copy reads what the test writes, then waits: a download stopped mid-file
    release = threading.Event()

    def serve_half():
        with open(shard, "wb") as pipe:
            pipe.write(data[: 2 * 1_000_000])
            pipe.flush()
            release.wait(60)

    writer = threading.Thread(target=serve_half, daemon=True)
    writer.start()
    finished = []
    logic.downloadModel("lvm-test", onFinished=lambda *result: finished.append(result), blocking=False)
    partial = places.staging / (SHARD + ".incomplete")
    _poll_until(logic, lambda: partial.is_file() and partial.stat().st_size >= 2 * 1_000_000)
    logic.cancel()
    release.set()
    writer.join(10)
    assert finished == [(None, "Cancelled.")] and logic.lastJobCancelled
    assert not places.target.exists() and not _choice("lvm-test").installed
    assert partial.stat().st_size == 2 * 1_000_000  # kept for the next try

    shard.unlink()
    shard.write_bytes(data)
    lines = []
    assert logic.downloadModel("lvm-test", onLog=lines.append) == "lvm-test"
    assert any(line.startswith(f"resuming {SHARD} at 2.0 MB") for line in lines)
    assert hashlib.sha256((places.target / SHARD).read_bytes()).digest() == hashlib.sha256(data).digest()
    assert _choice("lvm-test").installed and not places.staging.exists()


def test_no_hub_gives_one_line_and_the_job_ends_cleanly(places, logic, monkeypatch):
    monkeypatch.delenv(models.MIRROR_ENV)
    # the hub client's own offline mode, and no route to any server should it try one anyway
    for name, value in (("HF_HUB_OFFLINE", "1"), ("HTTPS_PROXY", "http://127.0.0.1:9"),
                        ("HTTP_PROXY", "http://127.0.0.1:9"), ("NO_PROXY", "")):
        monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError) as info:
        logic.downloadModel("lvm-test")
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("could not reach the hub to download org/llama") or "huggingface_hub" in message
    assert not places.target.exists() and not logic.busy
    assert logic.engine().alive  # the worker stays up for the next job


def test_a_mirror_without_the_repository_says_so(places, logic):
    (places.mirror / "org" / "vq" / "config.json").unlink()
    (places.mirror / "org" / "vq" / "pytorch_model.bin").unlink()
    (places.mirror / "org" / "vq").rmdir()
    with pytest.raises(RuntimeError, match=r"has no copy of org/vq: expected the folder .*org/vq$"):
        logic.downloadModel("lvm-test")
    assert not _choice("lvm-test").installed and (places.staging / SHARD).is_file()  # what came is kept


# --------------------------------------------------------------------------- the panel


@pytest.fixture
def panel(places, widget, monkeypatch):
    """The panel set up with the private registry (the fixture `widget` read the shipped one)."""
    import slicer

    asked = []
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda text, **kwargs: asked.append(text) or widget.consent, raising=False)
    widget.asked, widget.consent = asked, False
    widget._populateModels()
    widget.ui.modelComboBox.currentIndex = [c.id for c in widget._models].index("lvm-test")
    return widget


def test_apply_on_a_model_to_download_asks_first(panel, places):
    assert panel.ui.downloadModelButton.visible and panel._parameterNode.model == "lvm-test"
    panel.onApplyButton()
    assert len(panel.asked) == 1 and "Download the model lvm-test (1.5 GB)?" in panel.asked[0]
    assert not panel.logic.busy and panel.ui.statusLabel.text.startswith("Download declined")
    assert not places.staging.exists()


def test_download_from_the_panel_then_the_selector_shows_it_installed(panel, places):
    panel.consent = True
    panel.onDownloadButton()
    assert panel.logic.busy and panel.ui.cancelButton.enabled and not panel.ui.downloadModelButton.enabled
    _poll_until(panel.logic, lambda: not panel.logic.busy)
    assert panel.errors == [] and panel.ui.statusLabel.text == "lvm-test is installed: press Apply to run it."
    assert panel.ui.modelComboBox.currentText == "lvm-test — installed, needs a GPU with 16 GB"
    assert not panel.ui.downloadModelButton.visible and panel._parameterNode.model == "lvm-test"
    assert any(line.startswith("downloading org/llama (MB)") for line in panel.ui.logTextEdit.lines)


def test_a_failed_download_is_one_line_in_the_panel(panel, places):
    panel.consent = True
    for path in sorted((places.mirror / "org" / "llama").iterdir()):
        path.unlink()
    (places.mirror / "org" / "llama").rmdir()
    panel.onDownloadButton()
    _poll_until(panel.logic, lambda: not panel.logic.busy)
    assert len(panel.errors) == 1 and "\n" not in panel.errors[0]
    assert panel.errors[0].startswith("Download of lvm-test failed: the mirror")
    assert panel.ui.modelComboBox.currentText.startswith("lvm-test — 1.5 GB download")


# --------------------------------------------------------------------------- the hub path, its client faked


@pytest.mark.parametrize("damage, problem", [(None, None), ("size", "expected 3012345 bytes"),
                                             ("content", "sha256 differs from org/llama's")])
def test_hub_download_reports_bytes_and_checks_the_hubs_sizes_and_hashes(places, monkeypatch, damage, problem):
    """The hub client (faked: it copies the mirror and describes the files as the hub's API does) gives no byte
    counts: the staging folder is watched instead; its files are then checked against the hub's description."""
    import shutil

    from MedLVMLib.engine.checkpoints import download
    from MedLVMLib.progress import Progress

    monkeypatch.delenv(models.MIRROR_ENV)

    def fake_hub(repo_id, local_dir):
        shutil.copytree(places.mirror / repo_id, local_dir, dirs_exist_ok=True)
        files = [download.RemoteFile(p.name, p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()
                                     if p.name == SHARD else "") for p in Path(local_dir).iterdir() if p.is_file()]
        if repo_id == "org/llama" and damage:
            shard = Path(local_dir) / SHARD
            shard.write_bytes(shard.read_bytes()[:-1] + (b"!" if damage == "content" else b""))
        time.sleep(0.4)  # the watcher reports meanwhile
        return files

    class Recorder(Progress):
        def __init__(self):
            self.updates = []

        def on_update(self, name, done, total):
            self.updates.append((name, done, total))

    monkeypatch.setattr(download, "_snapshot_download", fake_hub)
    monkeypatch.setattr(download, "WATCH_INTERVAL_S", 0.1)
    recorder = Recorder()
    if problem is None:
        assert download.download_model("lvm-test", consent=True, progress=recorder) == places.target
        assert _choice("lvm-test").installed
    else:
        with pytest.raises(MedLVMError, match=problem):
            download.download_model("lvm-test", consent=True, progress=recorder)
        assert not places.target.exists()
        assert (places.staging / SHARD).exists() == (damage == "size")  # a file with a bad hash is removed
    watched = [done for name, done, total in recorder.updates if name == "downloading lvm-test (MB)" and total == 1500]
    assert watched[0] == 0 and max(watched) >= 3  # the 3 MB shard seen in the staging folder
