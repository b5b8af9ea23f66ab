"""Training on several devices and machines with Keras' own distribution API
(`keras.distribution`), on JAX.

- One process per machine (`initialize`), each with its local devices; one
  `keras.distribution` over all of them (`make_distribution`: data parallel,
  or model parallel through the model class's `get_layout_map`).
- `pretrain` and `train_classifier` take `distribution=` and run inside its
  scope (`with_distribution`); the model must have been made inside it too,
  so that its variables are laid out on the mesh (`prepare` checks).
- The global batch, the learning-rate scaling, the seeds and the masks mean
  what they mean on one device: a step over the global batch is the same
  step, its rows split between the devices.
- Each process reads its part of every global batch (`make_dataset`'s
  `process_index` and `process_count`). Only the chief (process 0) writes
  checkpoints, the run record, logs and pictures (`process_callbacks`); on a
  rerun every process loads the chief's backup from the shared `output_dir`,
  and one that cannot stops them all with its reason (`start_on_chief`, the
  same protocol as TensorFlow's multi-worker loop).

JAX is imported inside the functions that need it: this module also serves
the TensorFlow multi-worker loop (`start_on_chief`).
"""

import functools
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import keras
import numpy as np

from ..utils.backend import is_tf_dataset, keras_backend

if TYPE_CHECKING:
    from keras.distribution import Distribution

__all__ = [
    "PROCESS_ENVIRONMENT",
    "WorkerStartError",
    "chief_verbosity",
    "initialize",
    "is_chief",
    "make_distribution",
    "prepare",
    "process_callbacks",
    "process_count",
    "process_index",
    "replicas",
    "start_on_chief",
    "total_over_processes",
    "with_distribution",
]

# Where Keras and JAX read a multi-process run's settings (`initialize`).
PROCESS_ENVIRONMENT = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
    "JAX_COORDINATOR_ADDRESS",
)


def _check_backend(feature: str = "Training under keras.distribution") -> None:
    if keras_backend() != "jax":
        raise RuntimeError(
            f"{feature} runs on JAX here, but Keras runs on {keras_backend()}: start the "
            "process with KERAS_BACKEND=jax (on TensorFlow, train inside a tf.distribute "
            "strategy's scope instead: tfvitmae pretrain --multi-gpu)"
        )


# ----------------------------------------------------------------- processes
def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Join a run of several processes (one per machine), if one is asked for.

    Call it first, before anything runs on JAX. What is not given here is
    read where Keras and JAX read it: `KERAS_DISTRIBUTION_JOB_ADDRESSES`,
    `KERAS_DISTRIBUTION_NUM_PROCESSES` and `KERAS_DISTRIBUTION_PROCESS_ID`
    (Keras), `JAX_COORDINATOR_ADDRESS` (JAX), then the variables of the
    clusters JAX detects (SLURM, Open MPI, Kubernetes, Cloud TPU). Nothing
    given here or in those four variables: a single process, and nothing is
    done. On CPUs the processes talk through gloo.

    Args:
        coordinator_address: `host:port` of process 0, which every process reaches.
        num_processes: The number of processes.
        process_id: This process's number, 0 (the chief, which writes) to
            `num_processes - 1`.

    Returns:
        Whether this is one of several processes.
    """
    given = (coordinator_address, num_processes, process_id)
    if all(v is None for v in given) and not any(os.environ.get(k) for k in PROCESS_ENVIRONMENT):
        return False
    _check_backend("Training in several processes")
    import jax

    if not jax.distributed.is_initialized():
        collectives = "jax_cpu_collectives_implementation"
        if getattr(jax.config, collectives, "gloo") is None:  # older JAX: none on CPU
            jax.config.update(collectives, "gloo")
        keras.distribution.initialize(coordinator_address, num_processes, process_id)
    return True


def process_index() -> int:
    """This process's number among the processes of the run (0 alone, or off JAX)."""
    if keras_backend() != "jax":
        return 0
    import jax

    return jax.process_index()


def process_count() -> int:
    """The processes of the run (1 unless `initialize` joined several; 1 off JAX)."""
    if keras_backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def is_chief() -> bool:
    """Whether this process writes (process 0)."""
    return process_index() == 0


# ------------------------------------------------------------ distributions
def make_distribution(
    kind: str = "data",
    mesh: tuple[int, int] | None = None,
    model_class: type | None = None,
) -> "Distribution":
    """The `keras.distribution` over every device of every process.

    Args:
        kind: `"data"`: `DataParallel`, the weights replicated on every device
            and each global batch split between them. `"model"`:
            `ModelParallel` on a `(batch, model)` mesh with the layouts of
            `model_class.get_layout_map(device_mesh)`.
        mesh: The `(batch, model)` device counts for `"model"` (default: all
            devices on the model axis); their product is the device count.
        model_class: The model class whose `get_layout_map` lays out `"model"`.
    """
    _check_backend()
    devices = keras.distribution.list_devices()
    if kind == "data":
        if mesh is not None and tuple(mesh) != (len(devices), 1):
            raise ValueError(
                f"Data parallelism runs on every device ({len(devices)}x1), received mesh "
                f"{mesh}; a mesh of another shape is for model parallelism"
            )
        return keras.distribution.DataParallel(devices=devices)
    if kind != "model":
        raise ValueError(f"kind must be 'data' or 'model', received {kind!r}")
    get_layout_map = getattr(model_class, "get_layout_map", None)
    if get_layout_map is None:
        raise NotImplementedError(
            f"Model parallelism needs {getattr(model_class, '__name__', model_class)}."
            "get_layout_map(device_mesh), which this version does not have; use data "
            "parallelism (--distribution data)"
        )
    rows, columns = mesh if mesh is not None else (1, len(devices))
    if rows * columns != len(devices):
        raise ValueError(
            f"A {rows}x{columns} mesh needs {rows * columns} devices, there are {len(devices)}"
        )
    device_mesh = keras.distribution.DeviceMesh((rows, columns), ("batch", "model"), devices)
    return keras.distribution.ModelParallel(
        layout_map=get_layout_map(device_mesh), batch_dim_name="batch"
    )


def replicas(distribution: "Distribution | None" = None) -> int:
    """The model replicas that split each batch: the size of the mesh's batch
    axis (1 without a distribution)."""
    distribution = distribution or keras.distribution.distribution()
    if distribution is None:
        return 1
    device_mesh = distribution.device_mesh
    return device_mesh.shape[list(device_mesh.axis_names).index(distribution.batch_dim_name)]


_F = TypeVar("_F", bound=Callable[..., Any])


def with_distribution(function: _F) -> _F:
    """Run `function` inside the scope of its `distribution` argument, when
    one is given (inside, the argument reads `None`: the scope holds it)."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        distribution = bound.arguments.get("distribution")
        if distribution is None:
            return function(*args, **kwargs)
        _check_backend()
        bound.arguments["distribution"] = None
        with distribution.scope():
            return function(*bound.args, **bound.kwargs)

    return run  # type: ignore[return-value]


def prepare(model: keras.Model, *data: object, batch_size: int) -> None:
    """Check that `model` and `data` can train under the current
    distribution (none: nothing to do), and tell Keras how the processes
    read `data`.

    - The model's variables lie on the distribution's mesh: it was made (or
      loaded) inside the distribution's scope.
    - `batch_size`, the global batch, splits evenly between the replicas.
    - Several processes: every variable is whole on each device (data
      parallel), since process 0 alone writes them.
    - Several processes: a `make_dataset` pipeline made with this process's
      `process_index` and `process_count` is this process's part already (Keras
      must not shard it again); another `tf.data.Dataset` yields global
      batches, which Keras splits (each process reads them all and keeps its
      part); other data (a `keras.utils.PyDataset`, arrays) must be this
      process's part.
    """
    distribution = keras.distribution.distribution()
    if distribution is None:
        return
    _check_backend()
    mesh_devices = set(distribution.device_mesh.backend_mesh.devices.flat)
    for variable in model.variables:
        devices = variable.value.sharding.device_set
        if devices != mesh_devices:
            raise ValueError(
                f"The model was made outside the distribution: its variable {variable.path} "
                f"lies on {len(devices)} device(s), the distribution's mesh has "
                f"{len(mesh_devices)}. Make (or load) the model inside `with "
                "distribution.scope():`, or after `keras.distribution.set_distribution(...)`"
            )
    if process_count() > 1:
        split = [v.path for v in model.variables if not v.value.sharding.is_fully_replicated]
        if split:
            raise NotImplementedError(
                f"Under {process_count()} processes only process 0 writes, and it must hold "
                f"every weight, but {len(split)} variable(s) are split between devices "
                f"(e.g. {split[0]}): model parallelism runs in one process; several "
                "processes train data parallel (make_distribution('data'))"
            )
    count = replicas(distribution)
    if batch_size % count:
        raise ValueError(
            f"batch_size {batch_size} (the global batch) must be a multiple of the {count} "
            "model replicas that split it"
        )
    if process_count() > 1:
        distribution.auto_shard_dataset = _keras_shards([d for d in data if d is not None])


def _keras_shards(data: list) -> bool:
    """Whether Keras is to split `data`'s batches between the processes (see `prepare`)."""
    pipeline = sys.modules.get("tfvitmae.data.pipeline")  # else no make_dataset pipeline exists
    choices = set()
    for item in data:
        part = pipeline.process_part(item) if pipeline and is_tf_dataset(item) else None
        if part is not None:
            if part != (process_index(), process_count()):
                raise ValueError(
                    f"This is process {process_index()} of {process_count()}, but the "
                    f"make_dataset pipeline reads the part of process {part[0]} of {part[1]}"
                )
            choices.add(False)
        elif pipeline and is_tf_dataset(item) and pipeline.steps_per_pass(item) is not None:
            raise ValueError(
                f"Under {process_count()} processes each reads its part of every batch: make "
                f"the make_dataset pipeline with process_index={process_index()} and "
                f"process_count={process_count()}"
            )
        else:
            choices.add(is_tf_dataset(item))
    if len(choices) > 1:
        raise ValueError(
            "The training and validation data must both be per-process parts, or both "
            "tf.data.Datasets of global batches that Keras splits between the processes"
        )
    return choices.pop() if choices else True


# ------------------------------------------------------- the chief writes
class _OutsideDistribution(keras.callbacks.Callback):
    """`callback`, its hooks run with no distribution set: what it makes (a
    save's throwaway optimizer, a seed) stays on this process, which runs it
    alone; JAX would otherwise wait for the other processes to make it too."""

    def __init__(self, callback: keras.callbacks.Callback):
        super().__init__()
        self.callback = callback

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)


def _outside_distribution(name: str) -> Callable:
    def hook(self, *args, **kwargs):
        distribution = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            return getattr(self.callback, name)(*args, **kwargs)
        finally:
            keras.distribution.set_distribution(distribution)

    hook.__name__ = name
    return hook


for _name in dir(keras.callbacks.Callback):
    if _name.startswith("on_"):
        setattr(_OutsideDistribution, _name, _outside_distribution(_name))
del _name


def process_callbacks(
    callbacks: Iterable[keras.callbacks.Callback],
) -> list[keras.callbacks.Callback]:
    """The callbacks this process runs: all of them in a single process; of
    several, the chief runs all (those that write outside the distribution)
    and the others only those marked `on_every_worker` (`StopOnNonFiniteLoss`,
    so that all stop together, and `DataEpoch`), as TensorFlow's
    `train_loop` does."""
    callbacks = list(callbacks)
    if process_count() == 1:
        return callbacks
    chief = is_chief()
    return [
        c if getattr(c, "on_every_worker", False) else _OutsideDistribution(c)
        for c in callbacks
        if chief or getattr(c, "on_every_worker", False)
    ]


def chief_verbosity(verbose: int | str) -> int | str:
    """`verbose` on the chief, silence on the other processes."""
    return verbose if is_chief() else 0


# ---------------------------------------------------- starting a run together
class WorkerStartError(RuntimeError):
    """Another worker (process) of the run could not start; its own error says why."""


def _cache_keras_saving_skipset() -> None:
    """Keras' weight saving and loading build a throwaway `Optimizer(1.0)`,
    whose variables a multi-worker strategy (TensorFlow) or a multi-process
    distribution (JAX) creates collectively: a save on the chief alone fails
    (or waits) for want of the other workers. Keras caches it, but 3.15 reads
    the cache under another key than it writes, so it is built on every save.
    Build it once here, on every worker together, and cache it under both keys."""
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib
    except ImportError:  # another Keras layout: nothing to prime
        return
    skipset = saving_lib.get_attr_skipset("Optimizer")
    for key in ("saving_attr_skiplist_Optimizer", "saving_attr_skipset_Optimizer"):
        global_state.set_global_attribute(key, skipset)


def start_on_chief(
    model: keras.Model,
    start: Callable[[], tuple[str, int]],
    restore: Callable[[int], object],
    *,
    chief: bool,
    total: Callable[[int], int],
    load: Callable[[int], object] | None = None,
    name: str = "worker",
) -> tuple[str, int]:
    """Start a run of several workers: the chief decides, every worker restores.

    The chief alone calls `start()`, which prepares the output directory
    (and restores the model, unless `load` is given) and returns `(message,
    epoch)`. The other workers learn the epoch from it and call
    `restore(epoch)`, which loads the same backup (or, with `load`, checks
    that it reads). With `load`, every worker then calls `load(epoch)`
    together: where loading a laid-out variable is itself collective (JAX
    across processes), no worker may stop in the middle of it. Every step is
    collective: a worker that fails makes all of them raise instead of
    waiting for it forever.

    Args:
        chief: Whether this worker is the chief.
        total: The sum over the workers of an int that each gives (collective).
        name: What the messages call a worker.

    Returns:
        `(message, epoch)`: the chief's message (a shorter one on the other
        workers) and the number of epochs already trained.
    """
    if model.optimizer is not None and not model.optimizer.built:
        # Variables are created collectively: every worker builds them, in the same order.
        model.optimizer.build(model.trainable_variables)
    _cache_keras_saving_skipset()
    error: Exception | None = None
    result: tuple[str, int] = ("", 0)
    if chief:
        try:
            result = start()
        except Exception as e:  # raised below, once the other workers know
            error = e
    epoch = total(-1 if error else result[1])
    if error is not None:
        raise error
    if epoch < 0:
        raise WorkerStartError(f"The chief {name} could not start the run; see its error")
    if not chief and epoch > 0:
        try:
            restore(epoch)
        except Exception as e:
            error = e
    failed = total(error is not None)
    if error is not None:
        raise error
    if failed:
        some = f"{name}(es)" if name.endswith("s") else f"{name}(s)"
        raise WorkerStartError(
            f"{failed} {some} could not restore the backup of epoch {epoch}; see their errors"
        )
    if load is not None and epoch > 0:
        load(epoch)
    if chief:
        return result
    return f"{name} resuming after epoch {epoch} from the chief's backup" if epoch else "", epoch


def total_over_processes(value: int) -> int:
    """`value` summed over the processes, on every process (collective)."""
    from jax.experimental import multihost_utils

    return int(np.sum(multihost_utils.process_allgather(np.int32(value))))
