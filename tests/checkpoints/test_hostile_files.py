"""Hostile weights files: whatever a downloaded checkpoint declares, reading it
reads no other file, buys no memory past the budget, and fails with a
`CheckpointError` that names the file and what was expected."""

import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tfvitmae import TFViTMAEForPreTraining, ViTMAEConfig
from tfvitmae.checkpoints.formats import CheckpointError, read_checkpoint, read_keras_weights
from tfvitmae.checkpoints.state_dicts import checkpoint_budget, to_state_dict
from tfvitmae.checkpoints.weight_names import keras_variables

from ..helpers import REFERENCE_CONFIG

SECRET = b"OUTSIDE-SECRET!!" * 8  # the bytes of a file beside the checkpoint folder
LEGACY_NAME = "vit/tf_model/vit/embeddings/cls_token:0"  # a tf_model.h5 dataset name


def plant_outside(folder):
    """A file and an HDF5 file outside the checkpoint folder, holding SECRET."""
    folder.mkdir(exist_ok=True)
    (folder / "secret.bin").write_bytes(SECRET)
    with h5py.File(folder / "other.h5", "w") as f:
        f["x"] = np.frombuffer(SECRET, "u1")
    return folder / "secret.bin", folder / "other.h5"


def tiny_h5(path, edit=None):
    """A Keras `.weights.h5` (one layer, two variables) or, for other names, a
    `tf_model.h5` (one weight); `edit(file, group)` adds to the weights' group."""
    with h5py.File(path, "w") as f:
        if path.name.endswith(".weights.h5"):
            group = f.create_group("layers/dense/vars")
            group.attrs["name"] = "dense"
            group["0"], group["1"] = np.ones((4, 3), "f4"), np.zeros(3, "f4")
        else:
            f[LEGACY_NAME] = np.ones((1, 1, 4), "f4")
            group = f[LEGACY_NAME.rpartition("/")[0]]
        if edit:
            edit(f, group)


def read_h5(path, **budget):
    if path.name.endswith(".weights.h5"):
        layers = read_keras_weights(path, **budget)
        return {f"{k}/{i}": a for k, v in layers.items() for i, a in enumerate(v)}
    return read_checkpoint(path, **budget)


def hostile(kind, secret, other):
    """`edit` for `tiny_h5`: one thing a weights file never holds, as `"2"`
    (a variable's name, so a reader that follows it would load it; a cycle
    beside the variables, so that one would recurse)."""
    edits = {
        "external storage": lambda f, g: g.create_dataset(
            "2", shape=(len(SECRET),), dtype="u1", external=[(str(secret), 0, len(SECRET))]
        ),
        "external link": lambda f, g: g.__setitem__("2", h5py.ExternalLink(str(other), "/x")),
        "soft link cycle": lambda f, g: g.parent.__setitem__("2", h5py.SoftLink("/")),
        "hard link cycle": lambda f, g: g.__setitem__("2", f["/"]),
        "virtual dataset": lambda f, g: g.create_virtual_dataset("2", virtual_layout(other)),
        "string dataset": lambda f, g: g.__setitem__("2", np.array([b"text"])),
        "huge chunks": lambda f, g: g.create_dataset(
            "2", shape=(4,), maxshape=(None,), chunks=(2**24,), dtype="f4"
        ),
    }
    return edits[kind]


def virtual_layout(other):
    layout = h5py.VirtualLayout(shape=(len(SECRET),), dtype="u1")
    layout[:] = h5py.VirtualSource(str(other), "x", shape=(len(SECRET),))
    return layout


HDF5_REFUSALS = {
    "external storage": "keeps its data in another file",
    "external link": "is an external link, to another file",
    "soft link cycle": "is a soft link",
    "hard link cycle": "is a second link to /",
    "virtual dataset": "is virtual",
    "string dataset": "holds |S4 values, not numbers",
    "huge chunks": "has 4 values in chunks of 16,777,216",
}


@pytest.mark.parametrize("name", ["model.weights.h5", "tf_model.h5"])
@pytest.mark.parametrize("kind", sorted(HDF5_REFUSALS))
def test_hdf5_links_and_outside_data_are_refused(tmp_path, kind, name):
    """External storage loaded another file's bytes into the weights (and from
    there into a re-exported model.safetensors); an external link or a virtual
    dataset read another HDF5 file; a link cycle recursed until RecursionError.
    Keras' own loader refuses all of these; so do ours, naming the dataset."""
    secret, other = plant_outside(tmp_path / "outside")
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    tiny_h5(folder / name, hostile(kind, secret, other))
    with pytest.raises(CheckpointError) as error:
        read_h5(folder / name)
    message = str(error.value)
    assert message.startswith(f"{folder / name} is refused: ") and "nothing was read" in message
    assert HDF5_REFUSALS[kind] in message and "/2" in message


def save_tiny_model(folder, **save_options):
    model = TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG))
    model.save_pretrained(folder, **save_options)
    return model


def test_declared_sizes_are_checked_against_the_config_before_reading(tmp_path):
    """A few-KB `.weights.h5` declaring a 1 GiB fill-value dataset raised peak
    memory by 1 GB before any size check; one declaring 4 TiB ends in a
    MemoryError. The budget the config gives is checked before any read."""
    model = save_tiny_model(tmp_path)
    with h5py.File(tmp_path / "model.weights.h5", "a") as f:
        group = f["layers/vi_tmae_encoder/embeddings/vars"]
        del group["0"]
        group.create_dataset("0", shape=(2**40,), dtype="f4", fillvalue=1.0)
    budget = checkpoint_budget(model.config)
    start = time.perf_counter()
    for load in (
        lambda: TFViTMAEForPreTraining.from_pretrained(tmp_path, strict=False),
        lambda: model.load_pretrained_weights(tmp_path, strict=False),
    ):
        with pytest.raises(CheckpointError) as error:
            load()
        message = str(error.value)
        assert "model.weights.h5 declares 1,099,511,6" in message
        assert f"more than the {budget:,} allowed; nothing was read" in message
        assert "'vit/embeddings/0', has shape (1099511627776,)" in message
    assert time.perf_counter() - start < 5


def test_the_budget_is_four_times_the_config_parameters():
    config = ViTMAEConfig(**REFERENCE_CONFIG)
    model = TFViTMAEForPreTraining(config)
    parameters = sum(int(np.prod(w.shape)) for w in model.weights)
    # (the head's few parameters are counted too, though this model has none)
    assert 4 * parameters <= checkpoint_budget(config) <= 4 * parameters * 1.1


def test_a_fill_value_bomb_costs_no_memory(tmp_path):
    """The issue's file: 1 GiB declared in a few KB. Measured in a fresh process."""
    path = tmp_path / "tf_model.h5"
    tiny_h5(path, lambda f, g: g.create_dataset("big", shape=(2**28,), dtype="f4", fillvalue=1))
    assert path.stat().st_size < 10_000
    code = (
        "import resource, sys\n"
        "from tfvitmae.checkpoints.formats import CheckpointError, read_checkpoint\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    read_checkpoint({str(path)!r}, max_elements=10**6)\n"
        "except CheckpointError as e:\n"
        "    print('refused', e)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith(f"refused {path} declares 268,435,460 values"), out
    assert int(out.split()[-1]) < 32, f"peak memory grew by {out.split()[-1]} MB"


def test_a_compressed_torch_archive_is_refused_before_inflating(tmp_path):
    """A 1 MB pytorch_model.bin with a deflated storage loaded a 268M-value
    tensor (+1 GB). `torch.save` never compresses its entries, so a compressed
    one is refused before anything is inflated."""
    path = tmp_path / "pytorch_model.bin"
    torch.save({"vit.embeddings.extra": torch.zeros(2**24)}, path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    assert path.stat().st_size < 2**20
    with pytest.raises(
        CheckpointError,
        match=r"pytorch_model\.bin is refused: its entry .* is compressed, which torch\.save "
        r"never does\. .*nothing was read",
    ):
        read_checkpoint(path)


def test_torch_sizes_are_checked_before_copying(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"a": torch.zeros(4), "b": torch.zeros(1).expand(2**40)}, path)  # a 4 TiB view
    with pytest.raises(CheckpointError, match=r"declares 1,099,511,627,780 values in 2 arrays"):
        read_checkpoint(path, max_elements=1000)
    torch.save({"a": torch.zeros(4)}, path)
    np.testing.assert_array_equal(read_checkpoint(path, max_elements=4)["a"], np.zeros(4))
    with pytest.raises(CheckpointError, match=r"declares 4 values in 1 arrays .* the 3 allowed"):
        read_checkpoint(path, max_elements=3)


@pytest.mark.parametrize(
    "kind, make",
    [
        ("sparse (torch.sparse_coo)", lambda t: t.to_sparse()),
        ("sparse (torch.sparse_csr)", lambda t: t.reshape(2, 2).to_sparse_csr()),
        ("meta (shape-only, no data)", lambda t: t.to("meta")),
        ("quantized (torch.qint8)", lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8)),
        ("complex (torch.complex64)", lambda t: t.to(torch.complex64)),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")  # torch: CSR, quantized, storages
def test_unreadable_torch_tensors_name_the_key(tmp_path, kind, make):
    """These gave a raw TypeError from NumPy (complex ones loaded, dropping
    their imaginary part)."""
    path = tmp_path / "pytorch_model.bin"
    torch.save({"a": torch.ones(4), "vit.embeddings.cls_token": make(torch.ones(4))}, path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert str(error.value) == (
        f"{path}: 'vit.embeddings.cls_token' is a {kind} tensor; expected dense "
        "floating-point or integer tensors"
    )


def test_pre_zip_torch_files_are_refused(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"a": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"Cannot read .*saved zip archives since version"):
        read_checkpoint(path)


def safetensors_file(path, header, data=b""):
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_safetensors_dtypes_numpy_lacks_are_upcast(tmp_path, dtype):
    """`F8_E4M3` gave an AttributeError from NumPy."""
    from safetensors.torch import save_file

    value = torch.linspace(-2, 2, 12).reshape(3, 4).to(getattr(torch, dtype))
    save_file({"w": value, "b": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    back = read_checkpoint(tmp_path / "model.safetensors")
    assert back["w"].dtype == np.float32
    np.testing.assert_array_equal(back["w"], value.float().numpy())
    np.testing.assert_array_equal(back["b"], np.ones(2, "f4"))


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"dtype": "C64", "shape": [2], "data_offsets": [0, 16]}, "dtype 'C64', which is not read"),
        ({"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}, "dtype 'F4', which is not read"),
        ({"dtype": "F32", "shape": [2**40], "data_offsets": [0, 16]}, "would span bytes 0 to 16"),
        ({"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}, "is not {dtype, shape, data"),
        ({"dtype": "F32", "shape": [4], "data_offsets": [0, 2**40]}, "would span bytes 0 to 1,"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}, "is not {dtype, shape, data"),
        ([1, 2], "is not {dtype, shape, data_offsets} in numbers"),
        ({"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}, "is not {dtype, shape, d"),
    ],
)
def test_safetensors_headers_are_checked_before_reading(tmp_path, entry, message):
    """Every size and offset is checked against the file before any data is
    read (the header is parsed here, so that bfloat16 and float8 read too)."""
    path = tmp_path / "model.safetensors"
    safetensors_file(path, {"w": entry}, bytes(16))
    with pytest.raises(
        CheckpointError, match=rf"{path}.*{message.replace('{', '.').replace('}', '.')}"
    ):
        read_checkpoint(path)


def test_safetensors_tensors_must_not_share_bytes(tmp_path):
    """Overlapping tensors would read the same bytes many times over."""
    path = tmp_path / "model.safetensors"
    header = {f"w{i}": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]} for i in range(9)}
    safetensors_file(path, header, bytes(16))
    with pytest.raises(CheckpointError, match="do not cover its 16 bytes of data exactly"):
        read_checkpoint(path)
    safetensors_file(path, {"w": header["w0"]}, bytes(20))  # bytes left over
    with pytest.raises(CheckpointError, match="do not cover its 20 bytes of data exactly"):
        read_checkpoint(path)
    safetensors_file(path, {"w": header["w0"], "__metadata__": {"format": "pt"}}, bytes(16))
    np.testing.assert_array_equal(read_checkpoint(path)["w"], np.zeros(4, "f4"))


@pytest.mark.parametrize("save", ["keras", "safetensors"])
def test_non_finite_weights_are_refused_under_strict(tmp_path, save):
    """A `.weights.h5` full of NaN loaded silently, even with strict=True."""
    model = save_tiny_model(tmp_path, pytorch=save == "safetensors")
    if save == "keras":
        with h5py.File(tmp_path / "model.weights.h5", "a") as f:
            f["layers/vi_tmae_encoder/embeddings/vars/0"][...] = np.nan
        path = "vit/embeddings/cls_token"
    else:
        from safetensors.numpy import save_file

        state = to_state_dict(model)
        state["vit.encoder.layer.1.output.dense.bias"] = np.full_like(
            state["vit.encoder.layer.1.output.dense.bias"], np.inf
        )
        save_file(state, str(tmp_path / "model.safetensors"))
        path = "vit/layer_1/mlp/output/bias"
    with pytest.raises(
        CheckpointError, match=rf"holds NaN or infinite values, in {path}; nothing was loaded"
    ):
        TFViTMAEForPreTraining.from_pretrained(tmp_path)
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        model.load_pretrained_weights(tmp_path)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, model.weights))
    with pytest.warns(UserWarning, match=rf"Loaded NaN or infinite values in .*, in {path}"):
        loaded = TFViTMAEForPreTraining.from_pretrained(tmp_path, strict=False)
    assert not np.isfinite(keras_variables(loaded)[path].numpy()).any()


# ---------------------------------------------------------------- property-based
# Components a hostile HDF5 file is built from; all but "plain" and a shallow
# "nesting" must be refused.
KINDS = (
    "plain",
    "nesting",
    "soft link",
    "soft link cycle",
    "hard link cycle",
    "external link",
    "external storage",
    "virtual dataset",
    "fill-value bomb",
    "chunk bomb",
    "string dataset",
    "compound dataset",
    "empty dataspace",
)
BUDGET = 10_000


def add_component(f, groups, kind, where, size, secret, other):
    """Put one `kind` of thing in the group `groups[where]`, as a variable."""
    group = groups[where % len(groups)]
    name = str(len(group))  # a variable's name, so a reader would load it
    if kind == "plain":
        group[name] = np.full(min(size, 64), 0.5, "f4")
    elif kind == "nesting":  # a layer nested a few, or over 64, groups deep
        deep = group.create_group(name + "/g" * (size % 30 + (70 if size % 2 else 0)))
        deep.create_group("vars").attrs["name"] = "deep"
        deep["vars/0"] = np.ones(2, "f4")
    elif kind == "soft link":
        group[name] = h5py.SoftLink(groups[size % len(groups)].name)
    elif kind == "soft link cycle":
        group[name] = h5py.SoftLink(group.name)
    elif kind == "hard link cycle":
        group[name] = groups[0] if size % 2 else f["/"]
    elif kind == "external link":
        group[name] = h5py.ExternalLink(str(other), "/x")
    elif kind == "external storage":
        group.create_dataset(
            name, shape=(len(SECRET),), dtype="u1", external=[(str(secret), 0, len(SECRET))]
        )
    elif kind == "virtual dataset":
        group.create_virtual_dataset(name, virtual_layout(other))
    elif kind == "fill-value bomb":  # far beyond memory: reading it would fail
        group.create_dataset(name, shape=(2 ** (40 + size % 8),), dtype="f4", fillvalue=1.0)
    elif kind == "chunk bomb":
        group.create_dataset(name, shape=(2,), maxshape=(None,), chunks=(2**21,), dtype="f4")
    elif kind == "string dataset":
        group[name] = np.array([b"x" * (1 + size % 8)])
    elif kind == "compound dataset":
        group[name] = np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])
    else:
        group[name] = h5py.Empty("f4")


def refused(kind, size):
    return kind != "plain" and not (kind == "nesting" and size % 2 == 0)


@settings(max_examples=40, deadline=None)
@given(
    keras=st.booleans(),
    layers=st.integers(1, 3),
    components=st.lists(
        st.tuples(st.sampled_from(KINDS), st.integers(0, 50), st.integers(0, 10**6)), max_size=4
    ),
)
def test_hostile_hdf5_files_are_read_within_budget_or_refused(keras, layers, components):
    with tempfile.TemporaryDirectory() as tmp:
        secret, other = plant_outside(Path(tmp) / "outside")
        outside = {p: p.read_bytes() for p in (secret, other)}
        folder = Path(tmp) / "checkpoint"
        folder.mkdir()
        path = folder / ("model.weights.h5" if keras else "tf_model.h5")
        with h5py.File(path, "w") as f:
            groups = []
            for i in range(layers):
                if keras:
                    group = f.create_group(f"layers/layer_{i}/vars")
                    group.attrs["name"] = f"layer_{i}"
                else:
                    group = f.create_group(f"vit/tf_model/vit/layer_{i}")
                group["0"] = np.full((2, 3), i, "f4")
                groups.append(group)
            for kind, where, size in components:
                add_component(f, groups, kind, where, size, secret, other)
        try:
            arrays = read_h5(path, max_elements=BUDGET)
        except CheckpointError as e:
            assert str(e).startswith(f"{path} ")
            assert any(refused(kind, size) for kind, _, size in components), e
        else:
            assert not any(refused(kind, size) for kind, _, size in components)
            assert sum(a.size for a in arrays.values()) <= BUDGET
            assert all(SECRET[:16] not in a.tobytes() for a in arrays.values())
            assert len(arrays) >= layers
        assert {p: p.read_bytes() for p in outside} == outside
        assert sorted(p.name for p in folder.iterdir()) == [path.name]
