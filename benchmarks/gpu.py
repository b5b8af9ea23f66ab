"""ViTMAE pretraining on a GPU: tfvitmae on Keras' JAX backend against
PyTorch `transformers` (SDPA), both in bfloat16. Needs no TensorFlow.

    python benchmarks/gpu.py                 # ViT-B/16 at 224, batches 64 and 256 (~5 min)
    python benchmarks/gpu.py --tiny --device cpu   # seconds: the smoke test, on a CPU
    python benchmarks/gpu.py --scaling 1 2 4 8     # data-parallel scaling over the devices

Contestants, each in a process of its own (a Keras backend is fixed at
import), driven through a pipe and timed from here, rounds interleaved:
- `ours jax bf16`: `TFViTMAEForPreTraining` (mixed_bfloat16, XLA), AdamW;
  its attention is the fused kernel (`keras.ops.dot_product_attention`:
  cuDNN flash attention on a GPU);
- `ours jax bf16 matmuls`: the same with attention as batched matmuls;
- `hf-pt bf16`: `transformers.ViTMAEForPreTraining` with SDPA attention,
  under `torch.autocast(bfloat16)`, AdamW.
With `--scaling N ...`, instead: `ours jax bf16` under
`keras.distribution.DataParallel` over the first N devices, each device
with the same batch (`--batches`' first, per device), one worker per N
(rounds interleaved); images/s and the scaling efficiency
`(images/s on N) / (N x images/s on 1)`, in `<out>/gpu-scaling-*`.

Same weights, images and masking noise. Ratios `peer time / our time` are
taken within a round (median over rounds: above 1, ours is faster). MFU is
the step's matmul FLOPs (`flops.step_flops`) per second against the
measured bf16 matmul peak of the device (JAX, 8192x8192). Results:
`<out>/gpu-<config>-<device>.json` and `.md`.

On a machine that has JAX (with CUDA), PyTorch and `transformers` but not
Keras, bring Keras and the small wheels it needs, downloaded beforehand with
`pip download keras==3.15.* namex optree rich absl-py h5py --no-deps -d wheels/`:
`pip install --no-deps wheels/*.whl && PYTHONPATH=. python benchmarks/gpu.py --out $OUT`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from run import TINY, make_inputs  # noqa: E402  (the CPU benchmark's config and inputs)

CONTESTANTS = ("ours jax bf16", "ours jax bf16 matmuls", "hf-pt bf16")
REFERENCE = "ours jax bf16"


# ------------------------------------------------------------------ workers
class OursJax:
    def __init__(self, checkpoint, kernel, devices=None):
        import jax
        import keras

        from tfvitmae import TFViTMAEForPreTraining
        from tfvitmae.models import layers

        if not kernel:
            layers.FUSED_ATTENTION_BACKENDS = ()
        if devices is not None:  # data parallel: weights replicated, each batch split
            if devices > jax.device_count():
                raise SystemExit(f"--scaling {devices}: only {jax.device_count()} devices here")
            distribution = keras.distribution.DataParallel(devices=jax.devices()[:devices])
            keras.distribution.set_distribution(distribution)
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
        self.model = TFViTMAEForPreTraining.from_pretrained(checkpoint)
        self.model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=True)

    def step(self, pixels, noise):
        return float(self.model.train_on_batch({"pixel_values": pixels, "noise": noise}))


class HfTorch:
    def __init__(self, checkpoint, device):
        import torch
        from transformers import ViTMAEForPreTraining

        self.torch, self.device = torch, device
        model = ViTMAEForPreTraining.from_pretrained(checkpoint, attn_implementation="sdpa")
        self.model = model.to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def step(self, pixels, noise):
        torch = self.torch
        with torch.autocast(self.device, dtype=torch.bfloat16):
            loss = self.model(
                pixel_values=torch.from_numpy(pixels).to(self.device),
                noise=torch.from_numpy(noise).to(self.device),
            ).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())  # waits for the device


def bf16_peak(size):
    """FLOP/s of the best of ten bf16 matmuls of `size`^2 on JAX's default device."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), jnp.bfloat16)
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def serve(name, checkpoint, device, tiny):
    """A worker: answer `step N` lines with the step's loss, `peak` with the bf16 peak."""
    from tfvitmae import ViTMAEConfig

    config = ViTMAEConfig.from_pretrained(checkpoint)
    if name.startswith("hf-pt"):
        runner = HfTorch(checkpoint, device)
    elif name.startswith("dp "):  # "dp N": data parallel over N devices
        runner = OursJax(checkpoint, kernel=True, devices=int(name.split()[1]))
    else:
        runner = OursJax(checkpoint, kernel=not name.endswith("matmuls"))
    made = {}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = line.split()
        if request[0] == "peak":
            print(json.dumps({"flops": bf16_peak(512 if tiny else 8192)}), flush=True)
            continue
        batch = int(request[1])
        made.setdefault(batch, make_inputs(config, batch))
        print(json.dumps({"loss": runner.step(*made[batch])}), flush=True)


# ------------------------------------------------------------------ driver
class Worker:
    def __init__(self, name, checkpoint, args, environ):
        # Each JAX worker takes a third of the device's memory, not JAX's default
        # 75% up front, so that all three fit on one GPU.
        env = {**environ, "KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3"}
        if name.startswith("dp "):  # one worker per device count: allocate as needed
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
            if args.device == "cpu":  # as many CPU devices as the largest count
                flag = f"--xla_force_host_platform_device_count={max(args.scaling)}"
                env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
        if args.device == "cpu" or name.startswith("hf-pt"):
            env["JAX_PLATFORMS"] = "cpu"  # PyTorch's worker leaves the GPU to torch
        command = [sys.executable, __file__, "--serve", name, "--checkpoint", checkpoint]
        command += ["--device", args.device] + (["--tiny"] if args.tiny else [])
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.ask(None)

    def ask(self, request):
        if request is not None:
            self.process.stdin.write(request + "\n")
            self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise SystemExit(f"a worker died on {request!r} (its error is printed above)")
        return json.loads(answer)

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per turn (median)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="a tiny config, batch 4, 2 rounds")
    parser.add_argument(
        "--scaling",
        type=int,
        nargs="+",
        metavar="N",
        help="data-parallel scaling over the first N devices (per-device batch: --batches[0])",
    )
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.checkpoint, args.device, args.tiny)
    environ = dict(os.environ)  # the workers' environment, before this process's changes
    # This process only writes the checkpoint: on the CPU, so the GPU stays the workers'.
    os.environ.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    from flops import step_flops

    from tfvitmae import TFViTMAEForPreTraining, ViTMAEConfig

    batches, rounds = ([4], 2) if args.tiny else (args.batches, args.rounds)
    config = ViTMAEConfig(**TINY) if args.tiny else ViTMAEConfig.from_preset("base")
    if args.scaling:
        return scaling(args, config, batches[0], rounds, environ)
    report = {"device": args.device, "config": "tiny" if args.tiny else "base", "tasks": []}
    with tempfile.TemporaryDirectory() as checkpoint:
        TFViTMAEForPreTraining(config, seed=0).save_pretrained(checkpoint, pytorch=True)
        workers = {name: Worker(name, checkpoint, args, environ) for name in CONTESTANTS}
        peak = workers[REFERENCE].ask("peak")["flops"]
        report["bf16_matmul_peak_tflops"] = peak / 1e12
        for batch in batches:
            losses = {name: worker.ask(f"step {batch}")["loss"] for name, worker in workers.items()}
            for worker in workers.values():  # compile and warm up
                worker.ask(f"step {batch}")
            times = timed_rounds(workers, dict.fromkeys(workers, batch), rounds, args.steps)
            flops = step_flops(config) * batch
            rows = {}
            for name, per_round in times.items():
                seconds = statistics.median(per_round)
                rows[name] = {
                    "seconds": seconds,
                    "images_per_s": batch / seconds,
                    "mfu": flops / seconds / peak,
                    "first_loss": losses[name],
                    "vs hf-pt bf16": statistics.median(
                        p / o for p, o in zip(times["hf-pt bf16"], per_round)
                    ),
                }
            report["tasks"].append({"batch": batch, "rows": rows, "seconds_per_round": times})
            print(f"batch {batch}: done", flush=True)
        for worker in workers.values():
            worker.close()
    lines = [
        f"ViTMAE {report['config']} train step (bf16) on {args.device}; bf16 matmul peak "
        f"{report['bf16_matmul_peak_tflops']:.1f} TFLOP/s; {rounds} interleaved rounds.",
        "",
        "| batch | contestant | ms | images/s | MFU | vs hf-pt bf16 |",
        "|---|---|---|---|---|---|",
    ]
    for task in report["tasks"]:
        for name, row in task["rows"].items():
            lines.append(
                f"| {task['batch']} | {name} | {row['seconds'] * 1000:.1f} | "
                f"{row['images_per_s']:.0f} | {row['mfu']:.0%} | {row['vs hf-pt bf16']:.2f}x |"
            )
    write_report(args.out, f"gpu-{report['config']}-{args.device}", report, lines)


def write_report(out, name, report, lines):
    """Print the table `lines`, and write `<out>/<name>.json` and `.md`."""
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, name + ".md"), "w") as f:
        f.write(table)


def timed_rounds(workers, batch_of, rounds, steps):
    """Each worker's median step time per round, the workers' turns rotated
    from round to round; `batch_of[name]` is the batch it steps."""
    times = {name: [] for name in workers}
    for i in range(rounds):
        names = list(workers)[i % len(workers) :] + list(workers)[: i % len(workers)]
        for name in names:
            turn = []
            for _ in range(steps):
                start = time.perf_counter()
                workers[name].ask(f"step {batch_of[name]}")
                turn.append(time.perf_counter() - start)
            times[name].append(statistics.median(turn))
    return times


def scaling(args, config, per_device, rounds, environ):
    """Data-parallel weak scaling: `per_device` images per device per step."""
    from tfvitmae import TFViTMAEForPreTraining

    report = {"device": args.device, "config": "tiny" if args.tiny else "base", "rows": []}
    report["per_device_batch"] = per_device
    with tempfile.TemporaryDirectory() as checkpoint:
        TFViTMAEForPreTraining(config, seed=0).save_pretrained(checkpoint, pytorch=True)
        workers = {f"dp {n}": Worker(f"dp {n}", checkpoint, args, environ) for n in args.scaling}
        batch_of = {f"dp {n}": per_device * n for n in args.scaling}
        losses = {name: w.ask(f"step {batch_of[name]}")["loss"] for name, w in workers.items()}
        for name, worker in workers.items():  # compile and warm up
            worker.ask(f"step {batch_of[name]}")
        times = timed_rounds(workers, batch_of, rounds, args.steps)
        for worker in workers.values():
            worker.close()
    base = per_device / statistics.median(times[f"dp {args.scaling[0]}"]) / args.scaling[0]
    for n in args.scaling:
        seconds = statistics.median(times[f"dp {n}"])
        images = per_device * n / seconds
        report["rows"].append(
            {
                "devices": n,
                "global_batch": per_device * n,
                "seconds": seconds,
                "images_per_s": images,
                "efficiency": images / (n * base),
                "first_loss": losses[f"dp {n}"],
                "seconds_per_round": times[f"dp {n}"],
            }
        )
    lines = [
        f"ViTMAE {report['config']} train step (bf16), data parallel on {args.device}: "
        f"{per_device} images per device; {rounds} interleaved rounds. Efficiency: "
        f"images/s on N devices over N x images/s on {args.scaling[0]}.",
        "",
        "| devices | global batch | ms | images/s | efficiency |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['devices']} | {row['global_batch']} | {row['seconds'] * 1000:.1f} | "
            f"{row['images_per_s']:.0f} | {row['efficiency']:.0%} |"
        )
    write_report(args.out, f"gpu-scaling-{report['config']}-{args.device}", report, lines)


if __name__ == "__main__":
    main()
