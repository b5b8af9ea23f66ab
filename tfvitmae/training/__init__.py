"""Training: the MAE recipes as Keras `fit` runs, and what they are made of.

- `recipes.py`: `pretrain`, and `train_classifier` for the linear probe and
  fine-tuning (`compile_classifier` is its compile step).
- `label_efficiency.py`: a pretrained encoder against raw pixels and
  random initialisation with 1, 5, 10 and all labels per class.
- `optimizers.py`: AdamW with MAE's settings, layer-wise lr decay, the
  warmup-cosine schedule, SGD for the probe.
- `callbacks.py`: divergence guard, per-epoch `save_pretrained`,
  reconstruction grids, the learning rate in the logs, `DataEpoch`,
  Ctrl-C between steps.
- `runs.py`: an output directory's run: resume, refuse or start afresh;
  atomic backups.
- `distributed.py`: the multi-worker loop and its start on the chief.
- `mesh.py`: several devices and processes on JAX through `keras.distribution`
  (`from tfvitmae.training import mesh`).
- `visualization.py`: reconstruction grids as arrays and PNGs.
"""

from ..utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "compile_classifier": "recipes",
        "pretrain": "recipes",
        "train_classifier": "recipes",
        "FINETUNE_BASE_LR": "optimizers",
        "NO_WEIGHT_DECAY": "optimizers",
        "PRETRAIN_BASE_LR": "optimizers",
        "PROBE_BASE_LR": "optimizers",
        "LayerDecayAdamW": "optimizers",
        "WarmupCosineDecay": "optimizers",
        "classifier_optimizer": "optimizers",
        "layer_decay_multipliers": "optimizers",
        "mae_optimizer": "optimizers",
        "scaled_learning_rate": "optimizers",
        "DataEpoch": "callbacks",
        "EmptyEpochError": "callbacks",
        "InterruptBetweenSteps": "callbacks",
        "LogLearningRate": "callbacks",
        "NonFiniteLossError": "callbacks",
        "ReconstructionCallback": "callbacks",
        "SavePretrained": "callbacks",
        "StopOnNonFiniteLoss": "callbacks",
        "CSV_LOG": "runs",
        "RunBackup": "runs",
        "RunConflictError": "runs",
        "RunProgress": "runs",
        "restore_backup": "runs",
        "start_run": "runs",
        "is_chief": "distributed",
        "is_multi_worker": "distributed",
        "start_on_chief": "distributed",
        "train_loop": "distributed",
        "reconstruct": "visualization",
        "reconstruction_grid": "visualization",
        "write_reconstruction_grid": "visualization",
    },
)
