"""benchmarks/run.py runs end to end on a tiny config, so it cannot rot.

Only what is installed competes: Hugging Face's TF port needs the pinned peers
of benchmarks/requirements.txt and is reported as skipped without them.
Speed is never asserted here (timings are for benchmarks/, not tests).
"""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from flops import forward_flops, step_flops  # noqa: E402

from .helpers import tiny_config  # noqa: E402


def test_flops_count_the_visible_patches_only():
    config = tiny_config()  # 16 patches of 8x8x3, width 32, 2 blocks; decoder 16 wide, 1 block
    d, i, dd, di, p = 32, 48, 16, 24, 8 * 8 * 3

    def blocks(tokens, width, inter, layers):
        return layers * (4 * tokens * width**2 + 2 * tokens**2 * width + 2 * tokens * width * inter)

    kept = 4  # int(16 * 0.25)
    expected = 16 * p * d + blocks(1 + kept, d, i, 2)
    expected += (1 + kept) * d * dd + blocks(17, dd, di, 1) + 17 * dd * p
    assert forward_flops(config) == 2 * expected
    assert forward_flops(config, mask_ratio=0.0) > forward_flops(config)
    assert forward_flops(config, decoder=False) == 2 * (16 * p * d + blocks(1 + kept, d, i, 2))
    assert step_flops(config) == 3 * forward_flops(config)


@pytest.mark.slow
def test_run_writes_a_table_with_ratios_mfu_memory_and_loss_curves(tmp_path):
    command = [
        sys.executable, str(ROOT / "benchmarks" / "run.py"), "--config", "tiny",
        "--rounds", "2", "--settle", "0", "--infer-batches", "1", "--step-batches", "2",
        "--loss-steps", "3", "--output", str(tmp_path),
        "--only", "ours fp32", "ours fp32 attn=eager", "ours bf16", "hf-pt fp32", "hf-tf fp32",
        "ours jax fp32", "ours torch fp32 remat",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "latest-tiny.json").read_text())
    table = (tmp_path / "latest-tiny.md").read_text()
    ran = {name for task in report["tasks"] for name in task["rows"]}
    assert {"ours fp32", "ours fp32 attn=eager", "ours bf16", "hf-pt fp32"} <= ran
    assert {"ours jax fp32", "ours torch fp32 remat"} <= ran  # each in its own process
    if "hf-tf fp32" not in ran:
        assert "hf-tf fp32" in report["skipped"]
    tasks = [t["task"] for t in report["tasks"]]
    assert tasks == [
        "inference mask 0.75 batch 1", "train step batch 2", "inference mask 0.0 batch 1"
    ]  # fmt: skip
    for task in report["tasks"]:
        rounds = task["seconds_per_round"]
        assert all(len(times) == 2 and min(times) > 0 for times in rounds.values())
        ours = task["rows"]["ours fp32"]
        # The median of the per-round ratios, recomputed from the raw timings.
        ratios = sorted(p / o for p, o in zip(rounds["hf-pt fp32"], rounds["ours fp32"]))
        assert ours["vs hf-pt fp32"] == pytest.approx(sum(ratios) / 2)
        assert 0 < ours["mfu"] < 1
        assert f"| {task['task']} | ours fp32 |" in table
    assert set(report["mae_speedup"]["speedup"]) == ran
    assert {m["contestant"] for m in report["memory"]} >= {
        "ours fp32", "hf-pt fp32", "ours jax fp32", "ours torch fp32 remat"
    }  # fmt: skip
    assert all(m["peak_rss_mib"] >= m["baseline_rss_mib"] > 0 for m in report["memory"])
    curves = report["loss_curves"]
    assert len(curves["fp32"]) == len(curves["bf16"]) == 3
    assert curves["max_relative_gap"] < 0.05
    assert set(report["matmul_ceilings_gflops"]) >= {"tf_fp32", "tf_bf16", "torch_fp32"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "precision, xla, stem",
    [("fp32", "auto", "breakdown-tiny"), ("bf16", "auto", "breakdown-tiny-bf16")],
)
def test_breakdown_times_each_part_for_both(tmp_path, precision, xla, stem):
    command = [
        sys.executable, str(ROOT / "benchmarks" / "breakdown.py"), "--config", "tiny",
        "--batch", "2", "--rounds", "1", "--settle", "0", "--output", str(tmp_path),
        "--precision", precision, "--xla", xla, "--peer", "on",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / f"{stem}.json").read_text())
    assert (report["precision"], report["xla"]) == (precision, precision == "fp32")
    parts = {row["part"]: row for row in report["parts"]}
    assert "step: forward + backward" in parts
    assert parts["encoder block (2, 5, 32)"]["count"] == 2  # tiny: two encoder blocks
    for row in parts.values():
        assert row["ours_ms"] > 0 and row["hf_pt_ms"] > 0
        assert row["hf_pt_over_ours"] == pytest.approx(
            row["hf_pt_ms"] / row["ours_ms"]
        )  # per-part times are scaled by the same count
    assert [m["part"].split()[0] for m in report["matmuls"]] == ["y", "dx", "dW"]
    assert "| step: whole" in (tmp_path / f"{stem}.md").read_text()
    profiles = report["op_profiles"]
    if precision == "fp32":  # under XLA the ops are fused: nothing to profile
        assert profiles == {}
    else:  # the graph's own ops, float32 weights cast to bfloat16 among them
        assert set(profiles) == {"forward", "gradients"}
        for ops in profiles.values():
            kinds = [kind for kind, _, _ in ops]
            assert "MatMul" in kinds and all(ms > 0 for _, ms, _ in ops)
            assert sum(share for _, _, share in ops) <= 1 + 1e-9
        assert "Cast" in [kind for kind, _, _ in profiles["forward"]]


def test_breakdown_leaves_out_an_emulated_bf16_peer(tmp_path, monkeypatch):
    import breakdown

    monkeypatch.setattr(breakdown, "native_bf16", lambda: False)
    parts = [("step: forward", 1, int, _fail), ("step: forward + backward", 1, int, _fail)]
    monkeypatch.setattr(breakdown, "step_parts", lambda *a: parts)
    monkeypatch.setattr(breakdown, "block_parts", lambda *a: [])
    monkeypatch.setattr(breakdown, "op_profile", lambda calls: {})
    monkeypatch.setattr(breakdown, "make_checkpoint", lambda config, folder: folder)
    rows, rates = breakdown.main(
        ["--config", "tiny", "--batch", "2", "--rounds", "1", "--settle", "0",
         "--precision", "bf16", "--output", str(tmp_path)]
    )  # fmt: skip
    assert [r["hf_pt_ms"] for r in rows] == [None, None]
    assert all(rate["hf-pt"] is None and rate["ours"] > 0 for rate in rates)
    table = (tmp_path / "breakdown-tiny-bf16.md").read_text()
    assert "HF-PT not timed" in table and "| step: forward | 1 |" in table


def _fail():
    raise AssertionError("HF-PT ran in emulated bf16")


@pytest.mark.slow
def test_matmul_reports_each_framework_its_rate_and_kernels(tmp_path):
    command = [
        sys.executable, str(ROOT / "benchmarks" / "matmul.py"), "--config", "tiny",
        "--batch", "2", "--rounds", "1", "--settle", "0", "--output", str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (path,) = tmp_path.glob("matmul-tiny-*.json")
    report = json.loads(path.read_text())
    assert report["machine"]["cpu_flags"]
    rows = report["products"]
    assert {r["dtype"] for r in rows} == {"float32", "bfloat16"} and len(rows) == 8
    for row in rows:
        assert all(row[k] > 0 for k in ("tf eager", "tf graph", "tf xla", "torch"))
        # Every product is listed with what ran it: a oneDNN kernel, or none.
        assert row["tf kernels"] and row["torch kernels"]
    # TensorFlow's float32 Dense product goes through oneDNN on every x86 CPU.
    dense = next(r for r in rows if r["dtype"] == "float32" and "MLP y = xW" in r["product"])
    assert dense["tf kernels"] != ["no oneDNN call"]
    assert path.with_suffix(".md").read_text().count("| float32 |") == 4


@pytest.mark.slow
def test_label_efficiency_reports_every_method_at_every_size(tmp_path):
    """The label-efficiency script runs end to end (an untrained demo-sized
    MAE and a few steps: no accuracy asserted) and reports every draw."""
    from tfvitmae import TFViTMAEForPreTraining
    from tfvitmae.cli.demo import demo_config

    processor = dict(size=32, image_mean=[0.5], image_std=[0.25])
    TFViTMAEForPreTraining(demo_config(), image_processor=processor).save_pretrained(tmp_path / "m")
    command = [
        sys.executable, str(ROOT / "benchmarks" / "label_efficiency.py"),
        "--pretrained", str(tmp_path / "m"), "--sizes", "1", "all", "--draws", "2",
        "--steps", "2", "--output", str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "label-efficiency.json").read_text())
    assert report["steps"] == 2
    assert [row["labels_per_class"] for row in report["rows"]] == [1, "all"]
    methods = ("fine-tuned", "probe", "scratch", "pixels LR", "pixels 1-NN")
    for row, draws in zip(report["rows"], (2, 1)):
        assert row["draws"] == draws
        for method in methods:
            assert len(row[method]) == draws and all(0 <= a <= 1 for a in row[method]), row
    assert "| all | 1 |" in (tmp_path / "label-efficiency.md").read_text()
