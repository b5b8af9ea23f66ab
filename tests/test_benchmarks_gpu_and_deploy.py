"""The GPU and deployment benchmarks run end to end on a tiny config, so they
cannot rot (a file of their own so that pytest-xdist can run them beside
`test_benchmarks.py`). Speed is never asserted here.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_the_gpu_script_runs_on_a_cpu_without_tensorflow(tmp_path):
    """benchmarks/gpu.py is prepared here for a GPU machine that has no TensorFlow:
    a tiny run on the CPU, with `tensorflow` unimportable in every process."""
    pytest.importorskip("jax")  # a test extra
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "tensorflow.py").write_text(
        "raise ImportError('no TensorFlow on the GPU machine')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])}
    command = [
        sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--device", "cpu",
        "--out", str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-tiny-cpu.json").read_text())
    (task,) = report["tasks"]
    assert set(task["rows"]) == {"ours jax bf16", "ours jax bf16 matmuls", "hf-pt bf16"}
    for name, row in task["rows"].items():
        assert row["seconds"] > 0 and 0 < row["mfu"] < 1 and np.isfinite(row["first_loss"])
        ratios = sorted(
            p / o
            for p, o in zip(
                task["seconds_per_round"]["hf-pt bf16"], task["seconds_per_round"][name]
            )
        )
        assert row["vs hf-pt bf16"] == pytest.approx(sum(ratios) / 2)
    assert report["bf16_matmul_peak_tflops"] > 0


@pytest.mark.slow
def test_the_gpu_scaling_run_reports_each_device_count(tmp_path):
    """`gpu.py --scaling` trains data parallel over 1 and 2 (virtual CPU) devices,
    each with the same per-device batch, without TensorFlow."""
    pytest.importorskip("jax")
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "tensorflow.py").write_text("raise ImportError('no TensorFlow here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])}
    command = [
        sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--device", "cpu",
        "--scaling", "1", "2", "--out", str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-scaling-tiny-cpu.json").read_text())
    rows = report["rows"]
    assert [(r["devices"], r["global_batch"]) for r in rows] == [(1, 4), (2, 8)]
    one = 4 / np.median(rows[0]["seconds_per_round"])
    for row in rows:
        assert np.isfinite(row["first_loss"]) and row["seconds"] > 0
        images = row["global_batch"] / np.median(row["seconds_per_round"])
        assert row["efficiency"] == pytest.approx(images / (row["devices"] * one))
    assert "| 2 | 8 |" in (tmp_path / "gpu-scaling-tiny-cpu.md").read_text()


@pytest.mark.slow
def test_deploy_reports_every_target_at_parity(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "deploy.py"), "--config", "tiny"]
    out = subprocess.run(
        [*command, "--output", str(tmp_path)], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "deploy-tiny.json").read_text())
    targets = {row["target"] for row in report["rows"]}
    assert targets == {
        "TF Serving (SavedModel)",
        "ONNX Runtime",
        "LiteRT",
        "keras-hub ViTBackbone",
        "keras-hub ViTImageClassifier",
        "transformers ViTModel",
        "transformers ViTForImageClassification",
    }
    assert all(row["max_diff"] < 1e-4 and row["size_mib"] > 0 for row in report["rows"])
    assert "| LiteRT | pretraining: reconstruct |" in (tmp_path / "deploy-tiny.md").read_text()


@pytest.mark.slow
def test_serving_races_every_cpu_path_with_its_accuracy(tmp_path):
    """benchmarks/serving.py runs every serving path (int8 ones included) on
    the same images and reports latency, throughput, the ratio to HF-PT bf16
    and each path's cosine to the Keras model (no speed asserted)."""
    command = [sys.executable, str(ROOT / "benchmarks" / "serving.py"), "--config", "tiny"]
    command += ["--rounds", "1", "--latency-calls", "2", "--settle", "0", "--calibration", "4"]
    out = subprocess.run(
        [*command, "--output", str(tmp_path)], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    [report_file] = tmp_path.glob("serving-tiny-*.json")
    report = json.loads(report_file.read_text())
    assert report["missing"] == {}
    rows = {row["path"]: row for row in report["rows"]}
    assert set(rows) == {
        "SavedModel fp32", "SavedModel bf16", "ONNX Runtime fp32", "ONNX Runtime int8 dynamic",
        "ONNX Runtime int8 static", "LiteRT fp32", "LiteRT int8 dynamic",
        "LiteRT int8 full-integer", "hf-pt fp32", "hf-pt bf16",
    }  # fmt: skip
    for name, row in rows.items():
        # Float paths compute the Keras model's features; how close int8 comes
        # is tested on a trained model (tests/serving/test_portable.py).
        assert row["min_cosine"] >= (0.9999 if "fp32" in name else 0.5), (name, row)
        assert 0 < row["p50_ms"] <= row["p99_ms"] and row["images_per_s"] > 0
    peer = rows["hf-pt bf16"]
    assert peer["batch1_vs_peer"] == peer["batch8_vs_peer"] == 1.0
    for row in rows.values():
        assert row["batch1_vs_peer"] == pytest.approx(peer["p50_ms"] / row["p50_ms"])
        assert row["batch8_vs_peer"] == pytest.approx(row["images_per_s"] / peer["images_per_s"])
    assert report["machine"]["cpu_flags"] and "CPU: " in report_file.with_suffix(".md").read_text()
