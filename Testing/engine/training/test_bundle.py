"""Installing a run as a bundled model: registry hash update, model card, metrics from CSV logs."""

from __future__ import annotations

import json

from MedLVMLib.training import bundle


def _registry(path, ids):
    entries = [{"id": i, "description": i, "source": {"bundled": f"models/{i}"}, "sha256": "", "size_bytes": 0,
                "tasks": ["motion"]} for i in ids]
    path.write_text(json.dumps({"format_version": 1, "default": ids[0], "models": entries}))


def test_register_updates_only_hash_and_size(tmp_path):
    folder = tmp_path / "models" / "a"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    _registry(tmp_path / "models.json", ["a", "b"])
    bundle.register("a", folder, tmp_path / "models.json")
    data = json.loads((tmp_path / "models.json").read_text(encoding="utf-8"))
    a, b = data["models"]
    assert len(a["sha256"]) == 64 and a["size_bytes"] == 7 and a["description"] == "a" and a["tasks"] == ["motion"]
    assert b["sha256"] == "" and b["size_bytes"] == 0 and data["default"] == "a"


def test_register_without_entry_writes_beside_model(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    message = bundle.register("m", folder, tmp_path / "missing.json")
    assert "registry_entry.json" in message
    assert json.loads((folder / "registry_entry.json").read_text(encoding="utf-8"))["size_bytes"] == 1


def test_model_card_reads_logs_and_has_motion_placeholder(tmp_path):
    run = tmp_path / "run"
    (run / "logs" / "version_0").mkdir(parents=True)
    (run / "logs" / "version_0" / "metrics.csv").write_text(
        "epoch,step,train/loss,train/acc\n0,0,5.0,0.1\n0,1,3.0,0.3\n")
    (run / "summary.json").write_text(json.dumps({"global_step": 2, "wall_s": 60.0, "hardware": "cpu"}))
    assert bundle.last_metrics(run) == {"loss": 4.0, "acc": 0.2}
    card = bundle.model_card("m", run, run, "intro", None, {"transformer": "medlvm train transformer"})
    assert "## Motion scores" in card and "docs/motion/" in card and "steps: 2" in card
