import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

from .helpers import (  # noqa: E402
    distributed_run_results,
    finish_distributed_run,
    save_torch_reference,
    start_distributed_run,
)


@pytest.fixture(autouse=True)
def _float32_policy():
    """Tests that switch to mixed precision must not leak it into others."""
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def checkpoint(tmp_path):
    """`make(**overrides)` -> (torch model, directory) of a saved transformers
    ViTMAEForPreTraining with random weights (`helpers.torch_reference_model`)."""

    def make(**overrides):
        return save_torch_reference(tmp_path / "hf", **overrides)

    return make


@pytest.fixture(scope="session")
def single_device_run(tmp_path_factory):
    """The single-device run of `tests.distributed_run` that the mirrored and
    multi-worker runs must reproduce: `(final weights, .npz)`."""
    out = tmp_path_factory.mktemp("single") / "single.npz"
    finish_distributed_run(start_distributed_run("single", out))
    return distributed_run_results(out)
