"""The model side on another Keras backend, in a process where TensorFlow
cannot be imported: `python -m tests.other_backend FOLDER` with
`KERAS_BACKEND` set. `tests/models/test_backends.py` wrote FOLDER (checkpoints
made on TensorFlow, inputs and TensorFlow's outputs); this writes
`FOLDER/<backend>.json` with what it found, for that test to judge."""

import json
import os
import sys

sys.modules["tensorflow"] = None  # `import tensorflow` raises ImportError from here on

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfvitmae  # noqa: E402
from tfvitmae import (  # noqa: E402
    TFViTMAEForImageClassification,
    TFViTMAEForPreTraining,
    pretrain,
    train_classifier,
)
from tfvitmae.models import layers  # noqa: E402
from tfvitmae.training import mae_optimizer  # noqa: E402

from .remat_gradients import OTHER_BACKEND_CELLS, compare  # noqa: E402


class Batches(keras.utils.PyDataset):
    """`(pixel_values[, labels])` batches from arrays, without tf.data."""

    def __init__(self, x, y=None, batch_size=2):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, i):
        part = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[part] if self.y is None else (self.x[part], self.y[part])


def outputs(model, pixels, noise):
    out = model(pixels, noise=noise, output_hidden_states=True)
    keep = dict(loss=out.loss, logits=out.logits, mask=out.mask, ids_restore=out.ids_restore)
    keep["last_hidden"] = out.hidden_states[-1]
    return {k: keras.ops.convert_to_numpy(v) for k, v in keep.items()}


def max_diffs(found, expected):
    return {k: float(np.abs(found[k].astype("float64") - expected[k]).max()) for k in found}


def main(folder):
    backend = keras.backend.backend()
    with np.load(os.path.join(folder, "inputs.npz")) as f:
        pixels, noise, labels = f["pixels"], f["noise"], f["labels"]
    with np.load(os.path.join(folder, "expected.npz")) as f:
        expected = dict(f)
    report: dict = {"backend": backend}
    # The same weights and noise: every checkpoint format made on TensorFlow.
    for name in ("keras", "pytorch"):
        model = TFViTMAEForPreTraining.from_pretrained(os.path.join(folder, name))
        report[f"from_{name}"] = max_diffs(outputs(model, pixels, noise), expected)
    predicted = model.predict({"pixel_values": pixels, "noise": noise}, batch_size=2, verbose=0)
    report["predict"] = float(np.abs(predicted["logits"] - expected["logits"]).max())
    report["predict_keys"] = sorted(predicted)
    keras_file = os.path.join(folder, f"{backend}.keras")
    model.save(keras_file)
    reloaded = keras.saving.load_model(keras_file)
    report["keras_file"] = max_diffs(outputs(reloaded, pixels, noise), expected)
    # The fused attention kernel where it runs, and the matmuls elsewhere, agree.
    report["fused_kernel"] = layers.fused_attention_kernel()
    calls = []
    fused = keras.ops.dot_product_attention
    keras.ops.dot_product_attention = lambda *a, **k: calls.append(1) or fused(*a, **k)
    with_kernel = outputs(model, pixels, noise)
    report["kernel_calls"] = len(calls)
    layers.FUSED_ATTENTION_BACKENDS, kept = (), layers.FUSED_ATTENTION_BACKENDS
    report["kernel_vs_matmuls"] = max_diffs(outputs(model, pixels, noise), with_kernel)
    layers.FUSED_ATTENTION_BACKENDS = kept
    keras.ops.dot_product_attention = fused
    classifier = TFViTMAEForImageClassification.from_pretrained(os.path.join(folder, "classifier"))
    logits = keras.ops.convert_to_numpy(classifier(pixels))
    report["classifier"] = float(np.abs(logits - expected["classifier_logits"]).max())
    # Saving on this backend, loading there (the PyTorch layout).
    saved = os.path.join(folder, f"saved_on_{backend}")
    model.save_pretrained(saved, pytorch=True)
    report["saved_files"] = sorted(os.listdir(saved))
    # The recipe: MAE's optimizer, schedule and callbacks, with a run folder that resumes.
    run = os.path.join(folder, f"run_on_{backend}")
    before = keras.ops.convert_to_numpy(model.vit.blocks[0].attention.qkv.kernel).copy()
    history = pretrain(model, Batches(pixels), epochs=2, batch_size=2, output_dir=run, verbose=0)
    after = keras.ops.convert_to_numpy(model.vit.blocks[0].attention.qkv.kernel)
    report["pretrain_losses"] = [float(v) for v in history.history["loss"]]
    report["pretrain_changed_weights"] = bool(np.abs(after - before).max() > 0)
    report["run_files"] = sorted(os.listdir(run))
    resumed = pretrain(  # the same model, fresh: the run's backup restores it
        TFViTMAEForPreTraining.from_pretrained(os.path.join(folder, "pytorch")),
        Batches(pixels),
        epochs=3,
        batch_size=2,
        output_dir=run,
        resume=True,
        verbose=0,
    )
    report["resumed_epochs"] = len(resumed.history["loss"])
    history = train_classifier(
        classifier, Batches(pixels, labels), epochs=1, batch_size=2, layer_decay=0.75, verbose=0
    )
    report["finetune_loss"] = float(history.history["loss"][-1])
    # Recomputed activations, with dropout and drop path on: one SGD step of
    # Keras' own (compiled on JAX), the same weights after it, for the
    # recomputation draws the forward pass's masks.
    stepped = []
    config = model.config.copy(hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    for remat in (False, True):
        model = TFViTMAEForPreTraining.from_pretrained(
            os.path.join(folder, "keras"), config=config, remat=remat, seed=7, drop_path_rate=0.5
        )
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.train_on_batch({"pixel_values": pixels, "noise": noise})
        stepped.append([keras.ops.convert_to_numpy(w) for w in model.trainable_weights])
    report["remat_step"] = max(float(np.abs(a - b).max()) for a, b in zip(*stepped))
    # Gradient accumulation (Keras' own, in MAE's optimizer): two updates of
    # two accumulated batches of 2 give the weights that two batches of 4
    # give, the masks drawn from the same noise.
    trained = []
    for batch, accum_steps in ((2, 2), (4, 1)):
        model = TFViTMAEForPreTraining.from_pretrained(os.path.join(folder, "keras"))
        steps = 2 * 4 // batch  # an epoch of 2 updates
        optimizer = mae_optimizer(
            batch, steps, 1, warmup_epochs=0, base_lr=0.64, accum_steps=accum_steps
        )  # a peak rate of 1e-2: 0.64 per 256 images, 4 images per update
        model.compile(optimizer=optimizer)
        for start in [0, 2, 0, 2] if batch == 2 else [0, 0]:  # the 4 images, twice
            part = slice(start, start + batch)
            model.train_on_batch({"pixel_values": pixels[part], "noise": noise[part]})
        report[f"accumulation_updates_{accum_steps}"] = int(optimizer.iterations)
        trained.append([keras.ops.convert_to_numpy(w) for w in model.trainable_weights])
    report["accumulation_vs_full_batch"] = max(float(np.abs(a - b).max()) for a, b in zip(*trained))
    # Unseeded dropout is torch's own RNG there; on JAX it is Keras' global generator.
    cells = [c for c in OTHER_BACKEND_CELLS if backend == "torch" or "unseeded" not in c[1]]
    report["remat_matrix"] = {"/".join(key): compare(*key) for key in cells}
    try:
        tfvitmae.make_dataset(pixels, batch_size=2)
    except ImportError as error:
        report["make_dataset_error"] = str(error)
    try:
        model.export(os.path.join(folder, f"export_on_{backend}"))
    except ImportError as error:
        report["export_error"] = str(error)
    report["tensorflow_loaded"] = sys.modules["tensorflow"] is not None
    with open(os.path.join(folder, f"{backend}.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
