"""Every CPU serving path of one model, raced in one run: latency and throughput.

    python benchmarks/serving.py                     # ViT-B/16 at 224 (random weights)
    python benchmarks/serving.py --config tiny --rounds 2 --output /tmp/serving

The paths, each computing the CLS features of the same float32 images:
our SavedModel (fp32; bf16 = built with `mixed_bfloat16`) loaded with
`tf.saved_model.load`, as TF Serving runs it; ONNX Runtime and LiteRT, fp32
and int8 (`export(..., quantize="int8")`: dynamic, and static = calibrated on
the benchmark's images: ONNX QDQ, LiteRT full-integer); Hugging Face's
PyTorch ViTMAE (SDPA), fp32 and bf16 autocast.

Batch-1 latency (p50 and p99 over every call of every round) and batch-8
throughput (images/s, the median round), interleaved round by round with the
order rotated and `--settle` idle seconds before each turn (see `run.py`).
Each path's features are compared with the Keras fp32 model's (the smallest
per-image cosine). Ratios are HF-PT bf16's time over the path's: above 1,
faster. Writes `serving-<config>-<cpu kind>.json` and `.md` (the CPU's name
and flags included) to `--output` (default `benchmarks/results`).
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PEER = "hf-pt bf16"


def cosine(a, b):
    """The smallest per-row cosine similarity of `a` and `b`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return float(np.min(np.sum(a * b, -1) / norms))


def cpu_kind(info):
    return "amx" if info.get("native_bf16") else "avx2"


# ------------------------------------------------------------------ the paths
# name: (format, precision of the model exported, int8 export options). Each
# file is written by a process of its own (`--write`): converting ViT-B to
# ONNX or LiteRT beside everything else loaded here ran out of 24 GiB.
EXPORTS = {
    "SavedModel fp32": ("tf_saved_model", "fp32", None),
    "SavedModel bf16": ("tf_saved_model", "bf16", None),
    "ONNX Runtime fp32": ("onnx", "fp32", None),
    "ONNX Runtime int8 dynamic": ("onnx", "fp32", "dynamic"),
    "ONNX Runtime int8 static": ("onnx", "fp32", "static"),
    "LiteRT fp32": ("litert", "fp32", None),
    "LiteRT int8 dynamic": ("litert", "fp32", "dynamic"),
    "LiteRT int8 full-integer": ("litert", "fp32", "static"),
}
SUFFIX = {"tf_saved_model": "", "onnx": ".onnx", "litert": ".tflite"}


def write(job):
    """Export one file (in a `--write` process): `job` = checkpoint, target,
    format, precision, int8 mode and calibration `.npy`."""
    from tfvitmae import TFViTMAEForPreTraining

    dtype = "mixed_bfloat16" if job["precision"] == "bf16" else None
    model = TFViTMAEForPreTraining.from_pretrained(job["checkpoint"], dtype=dtype)
    options = {}
    if job["format"] == "tf_saved_model":
        options["raw_inputs"] = False
    else:
        options["signature"] = "features"
    if job["int8"]:
        # The export's own accuracy check is reported, not enforced: the
        # table's cosine column says how close each path is.
        options.update(quantize="int8", min_cosine=0, min_agreement=0)
    if job["int8"] == "static":
        options["calibration_images"] = np.load(job["calibration"])
    model.export(job["target"], format=job["format"], verbose=False, **options)


def load(format, target):
    """`features(pixels)` of the exported file, in its runtime."""
    if format == "tf_saved_model":
        import tensorflow as tf

        serve = tf.saved_model.load(str(target)).signatures["serving_default"]
        return lambda pixels: serve(pixel_values=tf.constant(pixels))["cls_features"].numpy()
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        output = [o.name for o in session.get_outputs()].index("cls_features")
        return lambda pixels: session.run(None, {"pixel_values": pixels})[output]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(target), num_threads=os.cpu_count())
    runner = interpreter.get_signature_runner("features")
    return lambda pixels: runner(pixel_values=pixels)["cls_features"]


def hf_pt_path(checkpoint, bf16):
    import torch
    from transformers import ViTMAEModel

    model = ViTMAEModel.from_pretrained(checkpoint, mask_ratio=0.0, attn_implementation="sdpa")
    model.eval()

    def features(pixels):
        # Every patch is kept, so the CLS token does not depend on their order.
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = model(torch.from_numpy(pixels)).last_hidden_state
        return hidden[:, 0].float().numpy()

    return features


def build_paths(config, work, calibration, only=None):
    """`{name: features(pixels)}` for every path that can run here, and
    `{name: why not}` for the others."""
    from run import make_checkpoint

    from tfvitmae import TFViTMAEForPreTraining

    checkpoint = make_checkpoint(config, work / "checkpoint")
    np.save(work / "calibration.npy", calibration)
    makers = {}
    for name, (format, precision, int8) in EXPORTS.items():
        target = work / (name.replace(" ", "_") + SUFFIX[format])
        job = dict(
            checkpoint=str(checkpoint),
            target=str(target),
            format=format,
            precision=precision,
            int8=int8,
            calibration=str(work / "calibration.npy"),
        )

        def make(job=job):
            done = subprocess.run(
                [sys.executable, __file__, "--write", json.dumps(job)],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                said = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                raise RuntimeError(f"the export failed: {said}")
            return load(job["format"], job["target"])

        makers[name] = make
    makers["hf-pt fp32"] = lambda: hf_pt_path(checkpoint, bf16=False)
    makers[PEER] = lambda: hf_pt_path(checkpoint, bf16=True)
    paths, missing = {}, {}
    for name, make in makers.items():
        if only and name not in only and name != PEER:
            continue
        try:
            paths[name] = make()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"{name}: ready (this process's peak memory {peak:.1f} GiB)", flush=True)
        except Exception as e:  # a runtime or an option this install lacks
            missing[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            print(f"{name}: not run ({missing[name]})")
    fp32 = TFViTMAEForPreTraining.from_pretrained(checkpoint)
    reference = lambda pixels: np.asarray(fp32.unmasked_features(pixels)["cls_features"])  # noqa: E731
    return paths, missing, reference


# ------------------------------------------------------------------ timing
def race(paths, inputs, rounds, calls, settle):
    """`{name: [seconds of each call]}`: per round, every path in turn (the
    order rotated), `calls` calls each, after `settle` idle seconds."""
    for path in paths.values():  # load, trace and warm caches
        path(inputs)
        path(inputs)
    names, times = list(paths), {name: [] for name in paths}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(settle)
            for _ in range(calls):
                start = time.perf_counter()
                paths[name](inputs)
                times[name].append(time.perf_counter() - start)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", help=argparse.SUPPRESS)  # one export, in its own process
    parser.add_argument("--config", choices=("base", "tiny"), default="base")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-calls", type=int, default=10, help="batch-1 calls per turn")
    parser.add_argument("--throughput-batch", type=int, default=8)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--calibration", type=int, default=16, help="int8 calibration images")
    parser.add_argument("--only", nargs="*", help="paths to run (the peer always runs)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.write:
        return write(json.loads(args.write))

    from run import machine, make_config

    config = make_config(args.config)
    info = machine()
    rng = np.random.default_rng(0)
    (height, width), channels = config.image_hw, config.num_channels
    images = lambda n: rng.standard_normal((n, channels, height, width)).astype("float32")  # noqa: E731
    calibration = images(args.calibration)
    work = pathlib.Path(tempfile.mkdtemp(prefix="serving-"))
    paths, missing, reference = build_paths(config, work, calibration, args.only)

    batch = images(args.throughput_batch)
    expected = reference(batch)
    accuracy = {name: cosine(path(batch), expected) for name, path in paths.items()}
    latency = race(paths, images(1), args.rounds, args.latency_calls, args.settle)
    throughput = race(paths, batch, args.rounds, 1, args.settle)

    rows = []
    peer_p50 = statistics.median(latency[PEER]) if PEER in latency else None
    peer_batch = statistics.median(throughput[PEER]) if PEER in throughput else None
    for name in paths:
        p50 = statistics.median(latency[name])
        p99 = float(np.percentile(latency[name], 99))
        seconds = statistics.median(throughput[name])
        rows.append(
            dict(
                path=name,
                p50_ms=p50 * 1000,
                p99_ms=p99 * 1000,
                images_per_s=args.throughput_batch / seconds,
                batch1_vs_peer=peer_p50 / p50 if peer_p50 else None,
                batch8_vs_peer=peer_batch / seconds if peer_batch else None,
                min_cosine=accuracy[name],
            )
        )
    given = list(argv if argv is not None else sys.argv[1:])
    if "--output" in given:  # a path of this machine
        del given[given.index("--output") : given.index("--output") + 2]
    command = " ".join(["python benchmarks/serving.py", *given])
    report = dict(
        config=args.config,
        rounds=args.rounds,
        latency_calls=args.latency_calls,
        throughput_batch=args.throughput_batch,
        command=command.strip(),
        machine=info,
        rows=rows,
        missing=missing,
    )
    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    stem = output / f"serving-{args.config}-{cpu_kind(info)}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [
        f"# CPU serving paths, {args.config} config: CLS features of float32 images",
        "",
        f"`{report['command']}`, {args.rounds} interleaved rounds.",
        "",
        f"CPU: {info.get('cpu', info['processor'])}, {info['cpus']} cores; "
        f"bf16 in hardware: {'yes' if info['native_bf16'] else 'no'}; "
        f"flags: {' '.join(info.get('cpu_flags', []))}.",
        "",
        f"| path | batch 1 p50 ms | p99 ms | vs {PEER} | batch {args.throughput_batch} images/s "
        f"| vs {PEER} | min cosine to Keras fp32 |",
        "|---|---|---|---|---|---|---|",
    ]

    def ratio(value):
        return "" if value is None else f"{value:.2f}x"

    for r in rows:
        lines.append(
            f"| {r['path']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {ratio(r['batch1_vs_peer'])} "
            f"| {r['images_per_s']:.1f} | {ratio(r['batch8_vs_peer'])} | {r['min_cosine']:.5f} |"
        )
    for name, why in missing.items():
        lines.append(f"| {name} | not run: {why} | | | | | |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {stem}.md")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
