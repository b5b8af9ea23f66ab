"""`from_pretrained`, `save_pretrained` and `push_to_hub`: local directories and
files, huggingface_hub's real cache (no network here), and uploads."""

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import event, example, given, settings
from safetensors.numpy import load_file, save_file

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel, ViTMAEConfig, ViTMAEImageProcessor
from tfvitmae.checkpoints.formats import CheckpointError
from tfvitmae.checkpoints.hub import (
    architecture_class,
    finish_interrupted_save,
    registered_class,
    resolve_files,
)
from tfvitmae.models.classification import TFViTMAEForImageClassification
from tfvitmae.utils.files import PLAN_FORMAT, PLAN_VERSION

from ..helpers import FIXTURE, REFERENCE_CONFIG, ROOT, max_diff, noise_for, pixels, tiny_config
from ..utils.test_files import hostile_plans


def fill_hub_cache(cache, repo_id, files, revision="main", commit="a" * 40):
    """Lay out files as huggingface_hub's cache stores a downloaded repo
    snapshot: the contents in `blobs/`, linked from `snapshots/<commit>/`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, source in files.items():
        data = pathlib.Path(source).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)  # a subfolder's files
        link.unlink(missing_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)  # "../../blobs/<hash>"
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path):
    cache = tmp_path / "hub"
    files = {n: FIXTURE / n for n in ("config.json", "model.safetensors")}
    fill_hub_cache(cache, "facebook/vit-mae-tiny", files)
    return cache


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace huggingface_hub.HfApi's network calls; returns what they received."""
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        calls["create"] = (repo_id, private, exist_ok)

    def upload_folder(
        self, *, repo_id, folder_path, commit_message=None, revision=None, create_pr=None, **kw
    ):
        calls["upload"] = (repo_id, sorted(os.listdir(folder_path)), commit_message)
        calls["config"] = ViTMAEConfig.from_pretrained(folder_path)
        return "commit-info"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


# --------------------------------------------------------------- the Hub cache
def test_from_hub_cache_with_local_files_only(hub_cache):
    model = TFViTMAEForPreTraining.from_pretrained(
        "facebook/vit-mae-tiny", cache_dir=hub_cache, local_files_only=True
    )
    reference = TFViTMAEForPreTraining.from_pretrained(FIXTURE)
    x, noise = pixels(model.config), noise_for(model.config)
    assert max_diff(model(x, noise=noise).logits, reference(x, noise=noise).logits) == 0


def test_revision_selects_the_snapshot(hub_cache, tmp_path):
    other = TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG))
    other.save_pretrained(tmp_path / "v2", pytorch=True)
    fill_hub_cache(
        hub_cache,
        "facebook/vit-mae-tiny",
        {n: tmp_path / "v2" / n for n in ("config.json", "model.safetensors")},
        revision="v2",
        commit="b" * 40,
    )
    model = TFViTMAEForPreTraining.from_pretrained(
        "facebook/vit-mae-tiny", revision="v2", cache_dir=hub_cache, local_files_only=True
    )
    np.testing.assert_array_equal(
        model.vit.embeddings.cls_token.numpy(), other.vit.embeddings.cls_token.numpy()
    )


@pytest.mark.slow
def test_offline_mode_reads_the_cache_in_a_fresh_process(hub_cache):
    code = (
        "from tfvitmae import TFViTMAEModel\n"
        "import warnings; warnings.simplefilter('ignore')\n"
        "m = TFViTMAEModel.from_pretrained('facebook/vit-mae-tiny')\n"
        "print(m.config.hidden_size)\n"
        "try:\n"
        "    TFViTMAEModel.from_pretrained('facebook/not-cached')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache), TF_CPP_MIN_LOG_LEVEL="3"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()[-2:]
    assert first == "32"
    assert second.startswith("CheckpointError") and "offline mode" in second


def test_missing_files_in_cache(tmp_path):
    with pytest.raises(
        CheckpointError, match="No local directory 'someone/absent', and no weights for the Hub"
    ):
        TFViTMAEModel.from_pretrained("someone/absent", cache_dir=tmp_path, local_files_only=True)


def test_a_sharded_hub_snapshot_loads_by_id_and_as_a_local_folder(tmp_path):
    """A snapshot's files are links into the cache repo's blobs: they load, by
    Hub id and from the snapshot folder given as a path."""
    state = load_file(FIXTURE / "model.safetensors")
    keys = sorted(state)
    (tmp_path / "shards").mkdir()
    files = {"config.json": FIXTURE / "config.json"}
    weight_map = {}
    for i, part in enumerate((keys[::2], keys[1::2])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, str(tmp_path / "shards" / name))
        files[name] = tmp_path / "shards" / name
        weight_map.update(dict.fromkeys(part, name))
    index = tmp_path / "shards" / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    files[index.name] = index
    snapshot = fill_hub_cache(tmp_path / "hub", "org/sharded", files)
    reference = TFViTMAEForPreTraining.from_pretrained(FIXTURE)
    by_id = TFViTMAEForPreTraining.from_pretrained(
        "org/sharded", cache_dir=tmp_path / "hub", local_files_only=True
    )
    for model in (by_id, TFViTMAEForPreTraining.from_pretrained(snapshot)):
        for a, b in zip(model.weights, reference.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


# ------------------------------------------------------------- local folders
def test_resolve_files(tmp_path):
    config, weights = resolve_files(str(FIXTURE))
    assert config == str(FIXTURE / "config.json")
    assert weights == str(FIXTURE / "model.safetensors")
    assert resolve_files(weights) == (config, weights)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert resolve_files(str(tmp_path / "model.safetensors"))[0] is None
    # this package's own weights come first when several formats are present
    (tmp_path / "model.weights.h5").write_bytes(b"")
    assert resolve_files(str(tmp_path)) == (None, str(tmp_path / "model.weights.h5"))


@pytest.mark.parametrize(
    "link, subfolder",
    [
        ("model.safetensors", None),
        ("config.json", None),
        ("preprocessor_config.json", None),
        (None, "../outside"),
        (None, "{root}/outside"),
        ("escape", "escape"),  # a subfolder that is a link out
    ],
)
def test_links_and_subfolders_out_of_a_local_folder_are_refused_alike(tmp_path, link, subfolder):
    """Whether the outside file exists or not, the error is the same and names
    the entry as written in the folder."""
    folder, outside = tmp_path / "ck", tmp_path / "outside"
    TFViTMAEModel(tiny_config()).save_pretrained(folder, pytorch=True)
    shutil.copytree(folder, outside)
    if subfolder:
        subfolder = subfolder.format(root=tmp_path)
    if link == "escape":
        os.symlink(outside, folder / "escape")
    elif link:
        (folder / link).unlink()
        os.symlink(f"../outside/{link}", folder / link)

    def error():
        with pytest.raises(CheckpointError) as caught:
            TFViTMAEModel.from_pretrained(folder, subfolder=subfolder)
        return str(caught.value)

    found = error()
    what = f"The subfolder {subfolder}" if subfolder else f"Refused {link}"
    assert found.startswith(f"{what}: it leads outside the checkpoint folder {folder}")
    shutil.rmtree(outside)
    assert error() == found


def test_missing_paths_and_empty_directories(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="No file or directory at './nowhere'"):
        TFViTMAEForPreTraining.from_pretrained("./nowhere")
    # A mistyped folder name is not sent to the Hub (offline, that took minutes of retries).
    monkeypatch.setattr(
        "huggingface_hub.hf_hub_download", lambda *a, **k: pytest.fail("asked the Hub")
    )
    with pytest.raises(FileNotFoundError, match="No local file or directory 'nonexistent_dir'"):
        TFViTMAEForPreTraining.from_pretrained("nonexistent_dir")
    (tmp_path / "config.json").write_text(ViTMAEConfig(**REFERENCE_CONFIG).to_json_string())
    with pytest.raises(
        CheckpointError,
        match=r"No weights in the directory .* expected one of model\.weights\.h5, "
        r".* found \['config.json'\]",
    ):
        TFViTMAEForPreTraining.from_pretrained(tmp_path)


def test_weights_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes((FIXTURE / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="No config.json beside .*pass config="):
        TFViTMAEForPreTraining.from_pretrained(tmp_path / "model.safetensors")
    model = TFViTMAEForPreTraining.from_pretrained(
        tmp_path / "model.safetensors", config=ViTMAEConfig.from_pretrained(FIXTURE)
    )
    reference = TFViTMAEForPreTraining.from_pretrained(FIXTURE)
    for a, b in zip(model.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_keras_format_round_trip_and_cross_class(tmp_path):
    config = ViTMAEConfig(**REFERENCE_CONFIG)
    model = TFViTMAEForPreTraining(config)
    written = model.save_pretrained(tmp_path)
    assert sorted(os.path.basename(p) for p in written) == [
        "config.json",
        "model.weights.h5",
        "preprocessor_config.json",
    ]
    loaded = TFViTMAEForPreTraining.from_pretrained(tmp_path)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.warns(UserWarning, match="Ignored .* parts this model does not have"):
        encoder = TFViTMAEModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(
        encoder.vit.layernorm.gamma.numpy(), model.vit.layernorm.gamma.numpy()
    )
    encoder.save_pretrained(tmp_path / "enc")
    with pytest.warns(UserWarning, match="has no decoder"):
        TFViTMAEForPreTraining.from_pretrained(tmp_path / "enc")
    # Saving another format over a directory removes the stale weights that would shadow it.
    model.save_pretrained(tmp_path, pytorch=True)
    assert not (tmp_path / "model.weights.h5").exists()
    assert (tmp_path / "model.safetensors").exists()


def test_the_image_processor_travels_with_the_model(tmp_path):
    """preprocessor_config.json is written beside the weights and read back,
    from our folders, transformers-style Hub snapshots and .keras files."""
    import json

    import keras

    from tfvitmae.data.image_processor import ViTMAEImageProcessor

    processor = ViTMAEImageProcessor(size=32, resample=2, image_mean=[0.3], image_std=[0.4])
    model = TFViTMAEForPreTraining(tiny_config(), image_processor=processor)
    assert model.image_processor.image_mean == (0.3, 0.3, 0.3)  # one value per channel
    model.save_pretrained(tmp_path / "ours")
    for cls in (TFViTMAEForPreTraining, TFViTMAEForImageClassification):
        loaded = cls.from_pretrained(tmp_path / "ours")
        assert loaded.image_processor == model.image_processor
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert reloaded.image_processor == model.image_processor
    # A Hub snapshot with transformers' own file (legacy int size, no resample).
    hf_file = {"size": 224, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.2, 0.2]}
    hf_file["feature_extractor_type"] = "ViTFeatureExtractor"
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(hf_file))
    files = {n: FIXTURE / n for n in ("config.json", "model.safetensors")}
    files["preprocessor_config.json"] = tmp_path / "preprocessor_config.json"
    fill_hub_cache(tmp_path / "hub", "org/mae", files)
    hub = TFViTMAEForPreTraining.from_pretrained(
        "org/mae", cache_dir=tmp_path / "hub", local_files_only=True
    )
    assert hub.image_processor.image_mean == (0.5, 0.4, 0.3)
    assert hub.image_processor.resample == 2  # ViTImageProcessor's default where unsaid
    assert hub.image_processor.size == hub.config.image_hw  # the model's size always
    # No file: MAE's preprocessing. An argument wins over the file.
    fixture = TFViTMAEForPreTraining.from_pretrained(FIXTURE)
    assert fixture.image_processor == ViTMAEImageProcessor.for_config(fixture.config)
    chosen = TFViTMAEForPreTraining.from_pretrained(tmp_path / "ours", image_processor=None)
    assert chosen.image_processor == ViTMAEImageProcessor.for_config(chosen.config)
    with pytest.raises(ValueError, match=r"image_processor must be a ViTMAEImageProcessor"):
        TFViTMAEForPreTraining(tiny_config(), image_processor="imagenet")


def test_from_pretrained_takes_config_fields_and_model_options(tmp_path):
    """Config fields, the output flags included, and model arguments can be
    passed to from_pretrained, as in transformers."""
    config = tiny_config()
    TFViTMAEForPreTraining(config).save_pretrained(tmp_path)
    x = pixels(config)
    model = TFViTMAEForPreTraining.from_pretrained(
        tmp_path,
        output_attentions=True,
        return_dict=False,
        mask_ratio=0.5,
        data_format="channels_last",
        seed=3,
    )
    assert model.config.mask_ratio == 0.5 and model.data_format == "channels_last"
    assert model.seed == 3
    out = model(np.transpose(x, (0, 2, 3, 1)))
    assert isinstance(out, tuple) and len(out) == 5  # loss, logits, mask, ids_restore, attentions
    assert len(out[4]) == config.num_hidden_layers
    assert out[4][0].shape == (2, config.num_attention_heads, 1 + 8, 1 + 8)


def test_from_pretrained_output_hidden_states(tmp_path):
    config = tiny_config()
    TFViTMAEModel(config).save_pretrained(tmp_path)
    model = TFViTMAEModel.from_pretrained(tmp_path, output_hidden_states=True)
    out = model(pixels(config))
    assert len(out.hidden_states) == config.num_hidden_layers + 1 and out.attentions is None
    assert out.hidden_states[-1].shape == (2, 5, config.hidden_size)
    assert model(pixels(config), output_hidden_states=False).hidden_states is None


def test_failed_save_leaves_directory_untouched(tmp_path, monkeypatch):
    model = TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG))
    model.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(state, path):
        with open(path, "wb") as f:  # a partial file, then the failure
            f.write(b"partial")
        raise OSError("disk full")

    import tfvitmae.checkpoints.hub

    monkeypatch.setattr(tfvitmae.checkpoints.hub, "write_safetensors", fail)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path, pytorch=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_save_killed_while_moving_its_files_is_refused_by_loads_and_completed_by_the_next_save(
    tmp_path, monkeypatch
):
    folder = tmp_path / "checkpoint"
    TFViTMAEForPreTraining(tiny_config(), seed=0).save_pretrained(folder)
    # Another model of the same shapes: mixed files would load without an error.
    new = TFViTMAEForPreTraining(tiny_config(hidden_act="relu"), seed=1)

    class Killed(BaseException):
        pass

    replace, moved = os.replace, []

    def replace_then_die(src, dst):
        if os.path.basename(os.path.dirname(src)).startswith(".tmp-save-"):
            if moved:
                raise Killed  # the weights moved in, the config not yet
            moved.append(dst)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(Killed):
        new.save_pretrained(folder)
    monkeypatch.setattr(os, "replace", replace)
    assert moved == [str(folder / "model.weights.h5")]
    assert json.loads((folder / "config.json").read_text())["hidden_act"] == "gelu"

    def contents(root):
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    before = contents(folder)
    # A load reads neither the mixed visible files nor the staged ones: it
    # refuses, says why and how to complete the save, and changes nothing.
    with pytest.raises(CheckpointError, match=r"interrupted.*\.tmp-save-.*finish_interrupted_save"):
        TFViTMAEForPreTraining.from_pretrained(folder)
    assert contents(folder) == before
    # Completing it gives the interrupted save whole.
    shutil.copytree(folder, tmp_path / "copy", symlinks=True)
    with pytest.warns(UserWarning, match="Completed the interrupted save"):
        assert len(finish_interrupted_save(tmp_path / "copy")) == 1
    loaded = TFViTMAEForPreTraining.from_pretrained(tmp_path / "copy")
    assert loaded.config.hidden_act == "relu"
    for a, b in zip(loaded.weights, new.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The next save completes it first, then writes its own.
    newest = TFViTMAEForPreTraining(tiny_config(hidden_act="gelu_new"), seed=2)
    with pytest.warns(UserWarning, match="Completed the interrupted save"):
        newest.save_pretrained(folder)
    assert not [p for p in os.listdir(folder) if p.startswith(".tmp")]
    assert TFViTMAEForPreTraining.from_pretrained(folder).config.hidden_act == "gelu_new"


@pytest.mark.parametrize("entry", ["move", "remove"])
def test_a_crafted_save_plan_in_a_downloaded_folder_touches_nothing_outside_it(tmp_path, entry):
    """A `.tmp-save-*/commit-plan.json` moving `../.bashrc` wrote the folder's
    own `.bashrc` over the one above it on `from_pretrained` then
    `save_pretrained`; one removing an absolute path deleted that file."""
    model = TFViTMAEModel(tiny_config())
    folder = tmp_path / "downloaded"
    model.save_pretrained(folder)
    (tmp_path / ".bashrc").write_text("the user's")
    (folder / ".bashrc").write_text("the attacker's")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "thesis.tex").write_text("the user's thesis")
    names = ["../.bashrc"] if entry == "move" else [str(tmp_path / "elsewhere" / "thesis.tex")]
    (folder / ".tmp-save-x").mkdir()
    (folder / ".tmp-save-x" / "commit-plan.json").write_text(
        json.dumps({"move": [], "remove": [], entry: names})
    )

    def everything():
        return {str(p): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    before = everything()
    with pytest.raises(CheckpointError, match=r"commit-plan\.json is not a plan this package"):
        TFViTMAEModel.from_pretrained(folder)
    with pytest.raises(CheckpointError, match=r"commit-plan\.json is not a plan this package"):
        model.save_pretrained(folder)
    assert everything() == before


def test_a_load_never_reads_staged_files_or_skips_visible_ones(tmp_path):
    """A plan moving in `.tmp-save-*/model.safetensors` and removing the
    visible `model.weights.h5` made `from_pretrained` read the hidden weights."""
    visible, hidden = (TFViTMAEModel(tiny_config(), seed=s) for s in (0, 1))
    visible.save_pretrained(tmp_path)
    hidden.save_pretrained(tmp_path / ".tmp-save-x", pytorch=True)
    (tmp_path / ".tmp-save-x" / "commit-plan.json").write_text(
        json.dumps({"move": ["model.safetensors"], "remove": ["model.weights.h5"]})
    )
    with pytest.raises(CheckpointError, match=r"\.tmp-save-x.*not a plan this package wrote"):
        resolve_files(str(tmp_path))
    with pytest.raises(CheckpointError, match="not a plan this package wrote"):
        TFViTMAEModel.from_pretrained(tmp_path)
    shutil.rmtree(tmp_path / ".tmp-save-x")  # the user removes what is not theirs
    loaded = TFViTMAEModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.weights[0].numpy(), visible.weights[0].numpy())


OUR_PLAN = {"format": PLAN_FORMAT, "version": PLAN_VERSION, "move": {"weights": 0, "x": 0}}


@settings(max_examples=30, deadline=None)
@given(case=hostile_plans())
@example(case=({**OUR_PLAN, "remove": []}, {"weights": b"new", "x": b"{}"}, True))
@example(case=({**OUR_PLAN, "move": {}, "remove": ["config.json"]}, {}, False))
def test_property_loads_read_only_visible_files_and_saves_touch_nothing_outside(case):
    """Whatever a plan says, a load resolves only the folder's visible files
    (or refuses), and completing saves changes nothing outside the folder."""
    plan, staged_files, true_sizes = case
    with tempfile.TemporaryDirectory() as root:
        folder = os.path.join(root, "model")
        staged = os.path.join(folder, ".tmp-save-x")
        os.makedirs(staged)
        for where in (root, folder):
            with open(os.path.join(where, ".bashrc"), "w") as f:
                f.write(f"{where}'s own")
        for name in ("config.json", "model.weights.h5"):
            with open(os.path.join(folder, name), "w") as f:
                f.write("visible")
        # The files-level plans, named as a save's files.
        ours = {"weights": "model.safetensors", "x": "preprocessor_config.json"}
        for name, data in staged_files.items():
            with open(os.path.join(staged, ours.get(name, name)), "wb") as f:
                f.write(data)
        text = json.dumps(plan).replace("ABS", root)
        for name, saved in ours.items():
            text = text.replace(f'"{name}"', f'"{saved}"')
        plan = json.loads(text)
        if true_sizes and isinstance(plan["move"], dict):
            for name in plan["move"]:
                if os.path.isfile(os.path.join(staged, name)):
                    plan["move"][name] = os.path.getsize(os.path.join(staged, name))
        with open(os.path.join(staged, "commit-plan.json"), "w") as f:
            json.dump(plan, f)
        outside = {n: open(os.path.join(root, n), "rb").read() for n in (".bashrc",)}
        with pytest.raises(CheckpointError, match=r"\.tmp-save-x"):  # never read through
            resolve_files(folder)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                finish_interrupted_save(folder)
        except CheckpointError as e:
            event("refused")
            assert "Nothing was changed" in str(e) or "nothing was changed" in str(e)
        else:
            event("completed")
            config, weights = resolve_files(folder)  # the visible files, whole
            assert os.path.dirname(weights) == folder
            assert config is None or os.path.dirname(config) == folder
        assert sorted(os.listdir(root)) == [".bashrc", "model"]
        assert {n: open(os.path.join(root, n), "rb").read() for n in (".bashrc",)} == outside


SAVER = """
import sys
from tfvitmae import TFViTMAEForPreTraining
from tests.helpers import tiny_config

import numpy as np

folder, rounds = sys.argv[1], int(sys.argv[2])
# Two models whose files would load together without an error: mask_ratio tells them apart.
models = [
    TFViTMAEForPreTraining(tiny_config(mask_ratio=r), seed=i) for i, r in enumerate((0.5, 0.6))
]
models[0].save_pretrained(folder)
np.savez(sys.argv[3], *[m.weights[0].numpy() for m in models])
print("ready", flush=True)
for i in range(rounds):
    models[i % 2].save_pretrained(folder)
"""


@pytest.mark.slow
def test_loads_beside_a_process_that_saves_see_one_whole_save(tmp_path):
    """6 of 167 loads mixed one save's weights with another's config, and 74
    failed, while another process called `save_pretrained` in a loop."""
    folder, written = tmp_path / "checkpoint", tmp_path / "weights.npz"
    saver = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(folder), "60", str(written)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert saver.stdout.readline().strip() == "ready"
    with np.load(written) as arrays:
        references = {0.5: arrays["arr_0"], 0.6: arrays["arr_1"]}
    seen = set()
    while saver.poll() is None:
        loaded = TFViTMAEForPreTraining.from_pretrained(folder)
        ratio = loaded.config.mask_ratio
        np.testing.assert_array_equal(loaded.weights[0].numpy(), references[ratio])
        seen.add(ratio)
    assert saver.wait() == 0
    assert seen == {0.5, 0.6}  # both saves were read while the other process saved


def test_save_pretrained_onto_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="must be a directory, received the file"):
        TFViTMAEModel(tiny_config()).save_pretrained(tmp_path / "file")


def test_classes_are_found_by_architecture_name():
    assert registered_class("TFViTMAEModel") is TFViTMAEModel
    assert registered_class("ViTMAEForPreTraining") is TFViTMAEForPreTraining  # PyTorch name
    assert registered_class("ViTForImageClassification") is TFViTMAEForImageClassification
    assert registered_class("BertModel") is None
    config = tiny_config(architectures=["BertModel", "ViTMAEModel"])
    assert architecture_class(config, TFViTMAEForPreTraining) is TFViTMAEModel
    assert architecture_class(tiny_config(), TFViTMAEForPreTraining) is TFViTMAEForPreTraining


# ---------------------------------------------------------------- push_to_hub
def test_push_to_hub_uploads_what_save_pretrained_writes(fake_hub, tmp_path):
    model = TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG))
    assert model.push_to_hub("me/tiny-mae", private=True, pytorch=True) == "commit-info"
    assert fake_hub["create"] == ("me/tiny-mae", True, True)
    assert fake_hub["upload"] == (
        "me/tiny-mae",
        ["config.json", "model.safetensors", "preprocessor_config.json"],
        "Upload TFViTMAEForPreTraining",
    )
    assert fake_hub["config"].extra["architectures"] == ["ViTMAEForPreTraining"]
    fake_hub.clear()
    model.save_pretrained(tmp_path / "local", push_to_hub=True, commit_message="first")
    assert fake_hub["create"] == ("local", None, True)
    assert fake_hub["upload"] == (
        "local",
        ["config.json", "model.weights.h5", "preprocessor_config.json"],
        "first",
    )


def test_push_to_hub_refuses_what_save_pretrained_refuses(fake_hub, tmp_path, monkeypatch):
    """A model that refuses a PyTorch save refuses a PyTorch push the same way,
    before anything reaches the Hub (pushes are saved to a folder first)."""
    model = TFViTMAEForImageClassification(tiny_config(), num_labels=2)

    def refuse():
        raise ValueError("this model has no PyTorch layout")

    monkeypatch.setattr(model, "pytorch_state_dict", refuse)
    with pytest.raises(ValueError) as saved:
        model.save_pretrained(tmp_path, pytorch=True)
    assert not os.listdir(tmp_path)  # refused before anything was written
    with pytest.raises(ValueError) as pushed:
        model.push_to_hub("me/classifier", pytorch=True)
    assert str(pushed.value) == str(saved.value) == "this model has no PyTorch layout"
    assert fake_hub == {}  # neither create_repo nor upload_folder was called
    with pytest.raises(ValueError, match="no PyTorch layout"):
        model.save_pretrained(tmp_path / "both", pytorch=True, push_to_hub=True)
    assert fake_hub == {}


def test_a_keras_save_onto_a_full_disk_is_refused_before_h5py_writes(tmp_path, monkeypatch):
    """h5py crashes the process when a write fails, so the space is claimed
    first; a full disk is then one line naming the folder."""
    import errno

    def no_space(fd, offset, size):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    model = TFViTMAEForPreTraining(tiny_config())
    model.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 52_000))
    monkeypatch.setattr(model, "save_weights", lambda path: pytest.fail("h5py was asked to write"))
    with pytest.raises(OSError) as caught:
        model.save_pretrained(tmp_path)
    assert re.fullmatch(
        rf"Could not save TFViTMAEForPreTraining to {tmp_path}: the disk is full "
        rf"\(model.weights.h5 needs ~\d+ KB, 52 KB free\)\. {tmp_path} is unchanged",
        str(caught.value),
    )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_save_removes_the_staging_folders_of_crashed_saves_and_only_those(tmp_path):
    import fcntl

    from tfvitmae.utils.files import STAGING_MARKER

    TFViTMAEModel(tiny_config()).save_pretrained(tmp_path)
    crashed = tmp_path / ".tmp-save-k1ll3d_x"  # killed while writing: no plan
    running = tmp_path / ".tmp-save-runn1ng_"  # a save writing now holds its marker locked
    for staging in (crashed, running):
        staging.mkdir()
        (staging / STAGING_MARKER).touch()  # as staging_dir marks its folders
        (staging / "model.weights.h5").write_bytes(b"partial")
    (tmp_path / ".tmp-save-notes").mkdir()  # the user's: not marked
    (tmp_path / ".tmp-save-notes" / "notes.txt").write_text("mine")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / STAGING_MARKER).touch()
    (tmp_path / "elsewhere" / "keep.txt").write_text("keep")
    os.symlink(tmp_path / "elsewhere", tmp_path / ".tmp-save-l1nk0ut_")
    fd = os.open(running / STAGING_MARKER, os.O_RDWR)  # as staging_dir locks it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        TFViTMAEModel(tiny_config()).save_pretrained(tmp_path)
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")) == [
        ".tmp-save-l1nk0ut_",
        ".tmp-save-notes",
        ".tmp-save-runn1ng_",
    ]
    assert (running / "model.weights.h5").exists()
    assert (tmp_path / ".tmp-save-notes" / "notes.txt").read_text() == "mine"
    assert (tmp_path / "elsewhere" / "keep.txt").read_text() == "keep"


def test_a_failed_write_is_named_and_changes_nothing(tmp_path, monkeypatch):
    import torch

    model = TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG))
    model.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full_disk(*args, **kwargs):  # what torch.save says when the disk fills up
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 128")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(
        OSError,
        match=r"Could not save TFViTMAEForPreTraining to .* writing "
        r"pytorch_model.bin .*enforce fail.* Is the disk full\?.* is unchanged",
    ):
        model.save_pretrained(tmp_path, pytorch=True, safe_serialization=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no .tmp-save-*


def test_a_checkpoint_with_an_impossible_image_processor_names_the_file(tmp_path):
    TFViTMAEModel(tiny_config()).save_pretrained(tmp_path)
    path = tmp_path / "preprocessor_config.json"
    fields = json.loads(path.read_text())
    path.write_text(json.dumps({**fields, "image_std": [0.2, 0.0, 0.2]}))
    with pytest.raises(ValueError, match=r"preprocessor_config.json: image_std must be positive"):
        TFViTMAEModel.from_pretrained(tmp_path)


def test_save_pretrained_refuses_transformers_saved_model_argument(tmp_path):
    """transformers' `save_pretrained(dir, saved_model=True)` also wrote a SavedModel;
    here that is `export`, and the argument is refused, not ignored (issue 21)."""
    with pytest.raises(TypeError, match=r"does not take saved_model: .*model\.export\(directory\)"):
        TFViTMAEModel(tiny_config()).save_pretrained(tmp_path / "m", saved_model=True)
    assert not (tmp_path / "m").exists()


def test_subfolder_of_a_folder_and_of_a_hub_repo(hub_cache, tmp_path):
    """Repos that keep a model in a subfolder (issue 21): `subfolder` was refused by
    the models and silently stored as a config key by `ViTMAEConfig.from_pretrained`."""
    model = TFViTMAEForPreTraining(tiny_config(hidden_act="relu"))
    model.save_pretrained(tmp_path / "repo" / "encoder")
    TFViTMAEForPreTraining(tiny_config()).save_pretrained(tmp_path / "repo")  # the decoy above it
    loaded = TFViTMAEForPreTraining.from_pretrained(tmp_path / "repo", subfolder="encoder")
    assert loaded.config.hidden_act == "relu"
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    config = ViTMAEConfig.from_pretrained(tmp_path / "repo", subfolder="encoder")
    assert config.hidden_act == "relu" and "subfolder" not in config.to_dict()
    processor = ViTMAEImageProcessor.from_pretrained(tmp_path / "repo", subfolder="encoder")
    assert processor == model.image_processor
    with pytest.raises(FileNotFoundError, match="No subfolder 'absent' in"):
        TFViTMAEForPreTraining.from_pretrained(tmp_path / "repo", subfolder="absent")
    # A Hub repo's subfolder, from the cache.
    files = {f"encoder/{n}": FIXTURE / n for n in ("config.json", "model.safetensors")}
    fill_hub_cache(hub_cache, "someone/nested", files)
    nested = TFViTMAEForPreTraining.from_pretrained(
        "someone/nested", subfolder="encoder", cache_dir=hub_cache, local_files_only=True
    )
    reference = TFViTMAEForPreTraining.from_pretrained(FIXTURE)
    x, noise = pixels(nested.config), noise_for(nested.config)
    assert max_diff(nested(x, noise=noise).logits, reference(x, noise=noise).logits) == 0


@pytest.mark.parametrize("cls", [TFViTMAEModel, TFViTMAEForPreTraining])
def test_the_encoder_saves_as_a_transformers_vit(cls, tmp_path):
    """`pytorch="vit"`: transformers' `ViTModel` loads the encoder and gives
    its unmasked features; the decoder and the MAE-only fields are left out."""
    import torch
    import transformers

    config = tiny_config(layer_norm_eps=1e-6)
    model = cls(config)
    model.save_pretrained(tmp_path, pytorch="vit")
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == "vit" and written["architectures"] == ["ViTModel"]
    assert not any(k.startswith("decoder_") or k == "mask_ratio" for k in written)
    vit, info = transformers.ViTModel.from_pretrained(tmp_path, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["pooler.dense.bias", "pooler.dense.weight"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    x = pixels(config)
    with torch.no_grad():
        expected = vit.eval()(torch.from_numpy(x)).last_hidden_state.numpy()
    ours = model.vit(np.transpose(x, (0, 2, 3, 1)), unmasked=True).last_hidden_state
    assert max_diff(ours, expected) < 1e-5
    back = TFViTMAEModel.from_pretrained(tmp_path)  # and back, strictly
    assert max_diff(back.unmasked_features(x)["cls_features"], expected[:, 0]) < 1e-5


def test_a_cls_classifier_saves_as_transformers_vit_classifier_and_mean_pooling_is_refused(
    tmp_path,
):
    import torch
    import transformers

    config = tiny_config()
    probe = TFViTMAEForImageClassification(config, id2label={0: "a", 1: "b"}, linear_probe=True)
    rng = np.random.default_rng(0)
    for variable in probe.weights:  # BatchNorm statistics that change the logits
        values = rng.normal(0, 0.2, variable.shape)
        variable.assign(np.abs(values) + 0.5 if "variance" in variable.path else values)
    probe.save_pretrained(tmp_path / "probe", pytorch="vit")
    vit = transformers.ViTForImageClassification.from_pretrained(tmp_path / "probe").eval()
    assert vit.config.id2label == {0: "a", 1: "b"}
    x = pixels(config)
    with torch.no_grad():
        expected = vit(torch.from_numpy(x)).logits.numpy()
    assert max_diff(probe(x), expected) < 1e-5
    mean = TFViTMAEForImageClassification(config, num_labels=2, pooling="mean")
    with pytest.raises(ValueError, match="mean-pooled classifier has no transformers ViT layout"):
        mean.save_pretrained(tmp_path / "mean", pytorch="vit")
    assert not (tmp_path / "mean").exists() or not list((tmp_path / "mean").iterdir())
    with pytest.raises(ValueError, match=r"pytorch must be True, False or 'vit', received 'timm'"):
        mean.save_pretrained(tmp_path / "mean", pytorch="timm")
