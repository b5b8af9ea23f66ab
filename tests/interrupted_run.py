"""A small `pretrain` run to kill: tests/training/test_runs.py starts it in a
subprocess, kills it (at chosen times, or inside a backup write), reruns it,
and compares the logs with an uninterrupted run.

    python -m tests.interrupted_run OUTPUT_DIR EPOCHS [--pause-in-backup MARKER]

`--pause-in-backup` makes the second backup write (epoch 2's) stop for a
minute after the state file is written and before it is renamed into place,
creating `MARKER` first, so the test can kill the process at that instant.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(output_dir, epochs, pause_marker=None):
    import keras
    import numpy as np

    from tests.helpers import tiny_config
    from tfvitmae import TFViTMAEForPreTraining
    from tfvitmae.data import make_dataset
    from tfvitmae.training import pretrain

    if pause_marker:
        save_weights = keras.Model.save_weights
        staged_backups = []

        def slow_save_weights(self, filepath, *args, **kwargs):
            save_weights(self, filepath, *args, **kwargs)
            if f"{os.sep}backup{os.sep}.tmp-" in os.fspath(filepath):  # a backup being staged
                staged_backups.append(filepath)
                if len(staged_backups) == 2:
                    open(pause_marker, "w").close()
                    time.sleep(60)

        keras.Model.save_weights = slow_save_weights

    keras.utils.set_random_seed(0)
    config = tiny_config()
    model = TFViTMAEForPreTraining(config, seed=0)
    # Shuffled and augmented anew each epoch: a resumed run must see the same epochs.
    raw = np.random.default_rng(3).integers(0, 256, (16, 40, 40, 3), dtype=np.uint8)
    images = make_dataset(raw, batch_size=4, processor=model.image_processor, seed=0)
    pretrain(
        model,
        images,
        epochs=epochs,
        batch_size=4,
        output_dir=output_dir,
        base_lr=1e-2,
        warmup_epochs=1,
        jit_compile=False,
        verbose=2,  # says whether the run starts, resumes or is refused
        callbacks=[
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda e, logs: print(f"epoch {e + 1} done", flush=True)
            )
        ],
    )
    print("finished", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    marker = args[args.index("--pause-in-backup") + 1] if "--pause-in-backup" in args else None
    main(args[0], int(args[1]), marker)
