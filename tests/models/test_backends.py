"""The model side on Keras' JAX and PyTorch backends, each in its own
process with TensorFlow made unimportable (`tests/other_backend.py`):
checkpoints written on TensorFlow load there and give TensorFlow's outputs
for the same noise, and the MAE recipe trains, saves and resumes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfvitmae import TFViTMAEForImageClassification, TFViTMAEForPreTraining

from ..helpers import ROOT, noise_for, pixels, tiny_config

BACKENDS = ("jax", "torch")


@pytest.fixture(scope="module")
def made_on_tensorflow(tmp_path_factory):
    """Checkpoints in every format, inputs and outputs, made here on TensorFlow."""
    folder = tmp_path_factory.mktemp("backends")
    config = tiny_config()
    model = TFViTMAEForPreTraining(config, seed=0)
    model.save_pretrained(folder / "keras")
    model.save_pretrained(folder / "pytorch", pytorch=True)
    classifier = TFViTMAEForImageClassification.from_encoder(model, num_labels=3)
    classifier.save_pretrained(folder / "classifier")
    x, noise = pixels(config, batch=4), noise_for(config, batch=4, seed=1)
    labels = np.array([0, 1, 2, 1])
    np.savez(folder / "inputs.npz", pixels=x, noise=noise, labels=labels)
    out = model(x, noise=noise, output_hidden_states=True)
    np.savez(
        folder / "expected.npz",
        loss=out.loss,
        logits=out.logits,
        mask=out.mask,
        ids_restore=out.ids_restore,
        last_hidden=out.hidden_states[-1],
        classifier_logits=classifier(x),
    )
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_model_side_runs_on_another_backend_without_tensorflow(made_on_tensorflow, backend):
    pytest.importorskip(backend)  # installed by the test extras; a skip here is a failure there
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-m", "tests.other_backend", str(made_on_tensorflow)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((made_on_tensorflow / f"{backend}.json").read_text())
    assert report["backend"] == backend and report["tensorflow_loaded"] is False
    for source in ("from_keras", "from_pytorch", "keras_file"):
        diffs = report[source]
        assert diffs["ids_restore"] == 0 and diffs["mask"] == 0, (source, diffs)
        assert max(diffs.values()) < 2e-5, (source, diffs)
    assert report["classifier"] < 2e-5
    # PyTorch's SDPA kernel was measured faster; JAX on a CPU keeps the matmuls.
    assert report["fused_kernel"] is (backend == "torch")
    assert report["kernel_calls"] == (3 if backend == "torch" else 0)  # 2 encoder + 1 decoder
    assert max(report["kernel_vs_matmuls"].values()) < 2e-5
    assert report["predict"] < 2e-5  # Keras' predict: a stateless step on JAX
    assert report["predict_keys"] == ["ids_restore", "logits", "mask"]
    assert report["saved_files"] == ["config.json", "model.safetensors", "preprocessor_config.json"]
    losses = report["pretrain_losses"]
    assert len(losses) == 2 and all(np.isfinite(losses)) and report["pretrain_changed_weights"]
    assert {"run.json", "training_log.csv", "config.json"} <= set(report["run_files"])
    assert report["resumed_epochs"] == 1  # epochs 1-2 were done: only the third ran
    assert np.isfinite(report["finetune_loss"])
    assert report["remat_step"] < 1e-6  # with dropout and drop path on
    # Accumulated or not, 2 updates; Adam steps of ~1e-2 (the rate) agree to
    # 1e-3 of a step: float32 sums in another order (measured ~3e-7), where a
    # rate or schedule off by one update moves weights by ~5e-3.
    assert report["accumulation_updates_2"] == report["accumulation_updates_1"] == 2
    assert report["accumulation_vs_full_batch"] < 1e-5
    assert len(report["remat_matrix"]) == (6 if backend == "torch" else 4)
    for cell, result in report["remat_matrix"].items():  # tests/remat_gradients.py
        assert result["agree"], (cell, result)
    assert report["export_error"].startswith("A SavedModel export needs TensorFlow")
    assert report["make_dataset_error"].endswith(
        "needs TensorFlow, which is not installed here (pip install tensorflow); "
        "the models themselves run without it"
    )


@pytest.mark.slow
def test_an_export_on_another_backend_says_it_needs_keras_on_tensorflow(tmp_path):
    pytest.importorskip("jax")
    script = (
        "from tfvitmae import TFViTMAEModel\n"
        "from tests.helpers import tiny_config\n"
        f"TFViTMAEModel(tiny_config()).export({str(tmp_path / 'export')!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert (
        "RuntimeError: A SavedModel export needs Keras on TensorFlow, but it runs on jax "
        "(KERAS_BACKEND=jax); run it in a process started with KERAS_BACKEND=tensorflow"
    ) in done.stderr
    assert not (tmp_path / "export").exists()
