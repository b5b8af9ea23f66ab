"""Hub loading through huggingface_hub's real cache (no network here), push_to_hub,
and the `tfvitmae convert` command."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tfvitmae import TFViTMAEForPreTraining, TFViTMAEModel, ViTMAEConfig
from tfvitmae.cli import main
from tfvitmae.weights import CheckpointError

from .helpers import REFERENCE_CONFIG, max_diff, noise_for, pixels

FIXTURE = pathlib.Path(__file__).resolve().parent / "fixtures" / "tiny_vit_mae"


def fill_hub_cache(cache, repo_id, files, revision="main", commit="a" * 40):
    """Lay out files as huggingface_hub's cache stores a downloaded repo snapshot."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        shutil.copy(source, snapshot / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)


@pytest.fixture
def hub_cache(tmp_path):
    cache = tmp_path / "hub"
    fill_hub_cache(cache, "facebook/vit-mae-tiny", {n: FIXTURE / n for n in ("config.json", "model.safetensors")})
    return cache


def test_from_hub_cache_with_local_files_only(hub_cache):
    model = TFViTMAEForPreTraining.from_pretrained("facebook/vit-mae-tiny", cache_dir=hub_cache, local_files_only=True)
    reference = TFViTMAEForPreTraining.from_pretrained(FIXTURE)
    x, noise = pixels(model.config), noise_for(model.config)
    assert max_diff(model(x, noise=noise).logits, reference(x, noise=noise).logits) == 0


def test_revision_selects_the_snapshot(hub_cache, tmp_path):
    other = TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG))
    other.save_pretrained(tmp_path / "v2", pytorch=True)
    fill_hub_cache(hub_cache, "facebook/vit-mae-tiny",
                   {n: tmp_path / "v2" / n for n in ("config.json", "model.safetensors")},
                   revision="v2", commit="b" * 40)
    model = TFViTMAEForPreTraining.from_pretrained(
        "facebook/vit-mae-tiny", revision="v2", cache_dir=hub_cache, local_files_only=True
    )
    np.testing.assert_array_equal(model.vit.embeddings.cls_token.numpy(), other.vit.embeddings.cls_token.numpy())


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
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.strip().splitlines()[-2:]
    assert first == "32"
    assert second.startswith("CheckpointError") and "offline mode" in second


def test_missing_files_in_cache(tmp_path):
    with pytest.raises(CheckpointError, match="No weights for 'someone/absent' in the local cache"):
        TFViTMAEModel.from_pretrained("someone/absent", cache_dir=tmp_path, local_files_only=True)


def test_push_to_hub_uploads_what_save_pretrained_writes(monkeypatch):
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        calls["create"] = (repo_id, private, exist_ok)

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, revision=None, create_pr=None, **kw):
        calls["upload"] = (repo_id, sorted(os.listdir(folder_path)), commit_message)
        calls["config"] = ViTMAEConfig.from_pretrained(folder_path)
        return "commit-info"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    model = TFViTMAEForPreTraining(ViTMAEConfig(**REFERENCE_CONFIG))
    assert model.push_to_hub("me/tiny-mae", private=True, pytorch=True) == "commit-info"
    assert calls["create"] == ("me/tiny-mae", True, True)
    assert calls["upload"] == ("me/tiny-mae", ["config.json", "model.safetensors"], "Upload TFViTMAEForPreTraining")
    assert calls["config"].extra["architectures"] == ["ViTMAEForPreTraining"]


def test_convert_command_both_directions(tmp_path, capsys):
    assert main(["convert", str(FIXTURE), str(tmp_path / "keras")]) == 0
    out = capsys.readouterr().out
    assert f"{14 + 12 * 4} variables mapped from model.safetensors (transformers layout)" in out  # 2 + 2 blocks
    assert "model.weights.h5" in out
    assert main(["convert", str(tmp_path / "keras"), str(tmp_path / "torch")]) == 0
    assert "transformers PyTorch layout" in capsys.readouterr().out
    import transformers

    torch_model, info = transformers.ViTMAEForPreTraining.from_pretrained(tmp_path / "torch", output_loading_info=True)
    assert not any(info.values())
    assert main(["convert", str(FIXTURE), str(tmp_path / "enc"), "--encoder-only", "--to", "pytorch", "--bin"]) == 0
    from safetensors.numpy import load_file

    decoder_keys = [k for k in load_file(FIXTURE / "model.safetensors") if k.startswith("decoder.")]
    assert f"Ignored {len(decoder_keys)} weights in model.safetensors of parts" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "enc")) == ["config.json", "pytorch_model.bin"]


def test_convert_command_reports_bad_input(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1
    assert "tfvitmae convert: error: No file or directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
