"""Speed of tfvitmae against Hugging Face's TF and PyTorch ViTMAE, in one process.

    python benchmarks/run.py                 # ViT-B/16 at 224, the full table
    python benchmarks/run.py --config tiny   # a tiny model: seconds (the smoke test's run)

Every contestant gets the same config, weights, images and masking noise.
Rounds are interleaved (and their order rotated) so that machine noise hits
all contestants alike; each ratio `peer time / our time` is taken within a
round, and the median over rounds is reported (above 1: ours is faster).
Peak memory of a training step is measured in a fresh process per
contestant. Results are printed and written as JSON and Markdown to
`benchmarks/results/`. Install the peers with `benchmarks/requirements.txt`.
"""

import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from contestants import contestants  # noqa: E402
from flops import forward_flops, matmul_ceilings, step_flops  # noqa: E402

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=24,
    image_size=32,
    patch_size=8,
)
REFERENCE = "ours fp32"  # the row every ratio is taken for
PEERS = ("hf-tf fp32", "hf-pt fp32", "hf-pt bf16")


def make_config(name):
    from tfvitmae import ViTMAEConfig

    return ViTMAEConfig.from_preset("base") if name == "base" else ViTMAEConfig(**TINY)


def make_checkpoint(config, directory):
    """Random weights in the transformers layout, which every contestant reads."""
    from tfvitmae import TFViTMAEForPreTraining

    TFViTMAEForPreTraining(config, seed=0).save_pretrained(directory, pytorch=True)
    return directory


def make_inputs(config, batch, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    height, width = config.image_hw
    pixels = rng.standard_normal((batch, config.num_channels, height, width)).astype("float32")
    noise = rng.random((batch, config.num_patches)).astype("float32")
    return pixels, noise


def time_call(fn, repeats):
    """Median seconds of `repeats` calls of `fn()`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_task(runners, kind, batch, config, rounds, repeats, settle):
    """Interleaved timings of one task; `{contestant: [seconds per round]}`.

    Before each contestant's turn the process idles `settle` seconds: the
    previous framework's worker threads keep spinning for a moment after its
    last op (seen here: PyTorch calls right after TensorFlow work ran 100x
    slower for about half a second), and that must not count against the next.
    """
    pixels, noise = make_inputs(config, batch)
    calls = {
        name: (lambda r=runner: getattr(r, kind)(pixels, noise)) for name, runner in runners.items()
    }
    for call in calls.values():  # trace / compile, and warm caches
        call()
        call()
    times = {name: [] for name in calls}
    names = list(calls)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(settle)
            times[name].append(time_call(calls[name], repeats))
    return times


def summarise(times, batch, flops_per_image, ceiling_for):
    """Per contestant: median time, images/s, MFU and the median ratios to the peers."""
    rows = {}
    for name, per_round in times.items():
        median = statistics.median(per_round)
        ceiling = ceiling_for(name)
        rows[name] = {
            "seconds": median,
            "images_per_s": batch / median,
            "mfu": (flops_per_image * batch / median) / ceiling if ceiling else None,
        }
    for name in rows:
        for peer in PEERS:
            if peer in times and name.startswith("ours"):
                ratios = [p / o for p, o in zip(times[peer], times[name])]
                rows[name][f"vs {peer}"] = statistics.median(ratios)
    return rows


def measure_memory(contestant_name, config_name, batch, steps=3):
    """Peak RSS (MiB) of a fresh process running training steps of one contestant,
    and its RSS after the imports, before the model was built."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--memory-child",
        contestant_name,
        "--config",
        config_name,
        "--batch",
        str(batch),
        "--steps",
        str(steps),
    ]
    contestant = next(c for c in contestants() if c.name == contestant_name)
    env = {**os.environ, "KERAS_BACKEND": contestant.options.get("backend", "tensorflow")}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def _peak_rss_mib():
    """This process's peak resident memory (VmHWM). Unlike `ru_maxrss`, it
    starts afresh at `exec`, so it does not inherit the parent's peak."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _memory_child(args):
    import numpy as np  # noqa: F401  (imported before the baseline, as every contestant needs it)

    contestant = next(c for c in contestants() if c.name == args.memory_child)
    if contestant.family == "ours":
        importlib.import_module(contestant.options.get("backend", "tensorflow"))
        import tfvitmae  # noqa: F401
    elif contestant.family == "hf-tf":
        import tensorflow  # noqa: F401
        import transformers  # noqa: F401
    else:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    baseline = _peak_rss_mib()
    config = make_config(args.config)
    with tempfile.TemporaryDirectory() as folder:
        # In this process: measure_memory started it on the contestant's backend.
        runner = contestant.build(make_checkpoint(config, folder), config.mask_ratio, here=True)
        pixels, noise = make_inputs(config, args.batch)
        for _ in range(args.steps):
            runner.step(pixels, noise)
    peak = _peak_rss_mib()
    print(json.dumps({"baseline_rss_mib": baseline, "peak_rss_mib": peak}))


def loss_curves(config, checkpoint, steps, batch):
    """The pretraining losses of ours in fp32 and bf16 from the same start,
    on the same images and masks: bf16 should track fp32."""
    import keras

    from tfvitmae import TFViTMAEForPreTraining

    curves = {}
    for precision, dtype in (("fp32", None), ("bf16", "mixed_bfloat16")):
        model = TFViTMAEForPreTraining.from_pretrained(
            checkpoint, **({"dtype": dtype} if dtype else {})
        )
        model.compile(optimizer=keras.optimizers.AdamW(1e-3 if config.hidden_size < 128 else 1e-4))
        losses = []
        for step in range(steps):
            pixels, noise = make_inputs(config, batch, seed=step)
            losses.append(float(model.train_on_batch({"pixel_values": pixels, "noise": noise})))
        curves[precision] = losses
    gaps = [abs(b - f) / abs(f) for f, b in zip(curves["fp32"], curves["bf16"])]
    return {"steps": steps, "batch": batch, **curves, "max_relative_gap": max(gaps)}


def native_bf16():
    """Whether bf16 matmuls run in hardware here: a GPU, or a CPU with AVX512-BF16
    or AMX. Elsewhere PyTorch emulates them about 100x slower than fp32 (seen
    here: a ViT-B step took 190 s against 4.5 s), which measures nothing useful."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def machine():
    import tensorflow as tf

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "tensorflow": tf.__version__,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        "native_bf16": native_bf16(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        info["cpu"] = next(
            line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")
        )
        flags = next(line for line in lines if line.startswith("flags")).split(":", 1)[1].split()
        info["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    except (OSError, StopIteration):
        pass
    for module in ("keras", "torch", "transformers", "tf_keras"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    return info


def markdown(report):
    lines = [
        f"Machine: {report['machine'].get('cpu', report['machine']['processor'])}, "
        f"{report['machine']['cpus']} CPUs; TensorFlow {report['machine']['tensorflow']}, "
        f"torch {report['machine']['torch']}, transformers {report['machine']['transformers']}. "
        f"Config: {report['config']}, {report['rounds']} interleaved rounds.",
        "",
    ]
    for name, why in report.get("skipped", {}).items():
        lines.append(f"Skipped {name}: {why}.")
    if report.get("skipped"):
        lines.append("")
    ceilings = report["matmul_ceilings_gflops"]
    lines.append(
        "Dense matmul ceilings (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in ceilings.items())
    )
    lines.append("")
    peers = [p for p in PEERS if any(p in t["rows"] for t in report["tasks"])]
    header = (
        "| task | contestant | ms | images/s | MFU | " + " | ".join(f"vs {p}" for p in peers) + " |"
    )
    lines += [header, "|" + "---|" * (5 + len(peers))]
    for task in report["tasks"]:
        for name, row in task["rows"].items():
            ratios = [f"{row[f'vs {p}']:.2f}x" if f"vs {p}" in row else "" for p in peers]
            mfu = f"{row['mfu']:.0%}" if row["mfu"] is not None else ""
            lines.append(
                f"| {task['task']} | {name} | {row['seconds'] * 1000:.1f} | "
                f"{row['images_per_s']:.1f} | {mfu} | " + " | ".join(ratios) + " |"
            )
    if report.get("memory"):
        lines += [
            "",
            "| step peak memory | contestant | peak RSS MiB | after imports MiB |",
            "|---|---|---|---|",
        ]
        for entry in report["memory"]:
            lines.append(
                f"| batch {entry['batch']} | {entry['contestant']} | {entry['peak_rss_mib']:.0f} | "
                f"{entry['baseline_rss_mib']:.0f} |"
            )
    if report.get("mae_speedup"):
        lines += [
            "",
            "Visible-only encoding (inference at mask ratio 0 / at 0.75, batch "
            f"{report['mae_speedup']['batch']}): "
            + ", ".join(f"{k} {v:.2f}x" for k, v in report["mae_speedup"]["speedup"].items()),
        ]
    if report.get("loss_curves"):
        curves = report["loss_curves"]
        lines += [
            "",
            f"bf16 vs fp32 pretraining loss over {curves['steps']} steps: largest relative gap "
            f"{curves['max_relative_gap']:.2%} "
            f"(fp32 {curves['fp32'][0]:.4f} -> {curves['fp32'][-1]:.4f}, "
            f"bf16 {curves['bf16'][0]:.4f} -> {curves['bf16'][-1]:.4f})",
        ]
    return "\n".join(lines) + "\n"


def save(report, args):
    """Write the report so far (JSON and Markdown): a run that dies late keeps its
    earlier tables. Returns the Markdown."""
    table = markdown(report)
    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(args.output, f"latest-{args.config}")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(table)
    return table


def release_memory():
    """Free the models of a finished phase before the next one builds its own
    (a ViT-B run holds every contestant at once, and peaked near 17 GB)."""
    import gc

    import keras

    gc.collect()
    keras.backend.clear_session()
    gc.collect()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=("base", "tiny"), default="base")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="calls timed per round (median)")
    parser.add_argument("--infer-batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--step-batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument(
        "--mask-ratios",
        type=float,
        nargs="+",
        default=[0.75, 0.0],
        help="inference mask ratios; training steps use the first",
    )
    parser.add_argument(
        "--settle", type=float, default=1.0, help="idle seconds before each timed turn (default: 1)"
    )
    parser.add_argument(
        "--only", nargs="+", help="contestant names to run (default: all installed)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument(
        "--loss-steps", type=int, default=20, help="steps of the bf16/fp32 loss curves"
    )
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--mask-ratio", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        return _memory_child(args)
    if args.serve:
        from contestants import serve

        return serve(args.serve, args.checkpoint, args.mask_ratio, args.learning_rate, make_inputs)

    config = make_config(args.config)
    chosen = [c for c in contestants() if not args.only or c.name in args.only]
    missing = {c.name: c.available() for c in chosen if c.available()}
    chosen = [c for c in chosen if c.name not in missing]
    if not native_bf16():
        for c in chosen:  # run anyway only when named in --only
            if c.family == "hf-pt" and c.precision == "bf16" and not args.only:
                missing[c.name] = "bf16 is emulated on this CPU (no AVX512-BF16 or AMX)"
        chosen = [c for c in chosen if c.name not in missing]
    for name, why in missing.items():
        print(f"skipping {name}: {why}")
    ceilings = matmul_ceilings(
        size=512 if args.config == "tiny" else 2048,
        torch_bf16=any(c.family == "hf-pt" and c.precision == "bf16" for c in chosen),
    )

    def ceiling_for(name):
        family = "torch" if name.startswith("hf-pt") or "torch" in name else "tf"
        return ceilings.get(f"{family}_{'bf16' if 'bf16' in name else 'fp32'}")

    report = {
        "machine": machine(),
        "config": args.config,
        "rounds": args.rounds,
        "matmul_ceilings_gflops": {k: v / 1e9 for k, v in ceilings.items()},
        "skipped": missing,
        "tasks": [],
        "memory": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = make_checkpoint(config, folder)
        for ratio in args.mask_ratios:
            runners = {c.name: c.build(checkpoint, ratio) for c in chosen}
            for batch in args.infer_batches:
                times = run_task(
                    runners, "infer", batch, config, args.rounds, args.repeats, args.settle
                )
                rows = summarise(times, batch, forward_flops(config, ratio), ceiling_for)
                report["tasks"].append(
                    {
                        "task": f"inference mask {ratio} batch {batch}",
                        "rows": rows,
                        "seconds_per_round": times,
                    }
                )
                save(report, args)
                print(f"inference mask {ratio} batch {batch}: done", flush=True)
            if ratio == args.mask_ratios[0]:
                for batch in args.step_batches:
                    times = run_task(
                        runners, "step", batch, config, args.rounds, args.repeats, args.settle
                    )
                    rows = summarise(times, batch, step_flops(config), ceiling_for)
                    report["tasks"].append(
                        {
                            "task": f"train step batch {batch}",
                            "rows": rows,
                            "seconds_per_round": times,
                        }
                    )
                    save(report, args)
                    print(f"train step batch {batch}: done", flush=True)
            del runners
            release_memory()
        if args.loss_steps:
            report["loss_curves"] = loss_curves(config, checkpoint, args.loss_steps, batch=8)
            save(report, args)
            release_memory()
    speedup_batch = max(args.infer_batches)
    by_task = {t["task"]: t["rows"] for t in report["tasks"]}
    masked = by_task.get(f"inference mask 0.75 batch {speedup_batch}")
    full = by_task.get(f"inference mask 0.0 batch {speedup_batch}")
    if masked and full:
        report["mae_speedup"] = {
            "batch": speedup_batch,
            "speedup": {n: full[n]["seconds"] / masked[n]["seconds"] for n in masked},
        }
    if not args.no_memory:
        for batch in args.step_batches:
            for c in chosen:
                measured = c.name in (REFERENCE, "ours bf16") or not c.name.startswith("ours")
                if measured or "backend" in c.options or c.options.get("remat"):
                    report["memory"].append(
                        {
                            "contestant": c.name,
                            "batch": batch,
                            **measure_memory(c.name, args.config, batch),
                        }
                    )
    table = save(report, args)
    print(table)
    print(f"wrote {os.path.join(args.output, 'latest-' + args.config)}.json and .md")
    return report


if __name__ == "__main__":
    main()
