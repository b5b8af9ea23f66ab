"""Which attention path is faster on each Keras backend: the fused kernel
(`keras.ops.dot_product_attention`) or batched matmuls. It decides
`tfvitmae.models.layers.FUSED_ATTENTION_BACKENDS`.

    python benchmarks/attention.py                # ViT-B/16's encoder and decoder attention
    python benchmarks/attention.py --tiny         # seconds (the smoke test's run)

One process per backend (the backend is fixed at import). In each, a
training step (`train_on_batch`: forward, backward, SGD) of one attention
layer runs both ways, interleaved round by round; the ratio `matmuls time /
kernel time` is taken within a round and its median reported (above 1: the
kernel is faster). Results go to `benchmarks/results/attention_<machine>.json`
and `.md`.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("tensorflow", "jax", "torch")
# (name, sequence length, width, heads): MAE ViT-B/16 at 224 with 75% masked.
SHAPES = (("encoder", 50, 768, 12), ("decoder", 197, 512, 16))
TINY_SHAPES = (("encoder", 5, 32, 4), ("decoder", 17, 16, 2))


def attention_model(width: int, heads: int):
    """One `ViTMAEAttention` layer as a compiled Keras model."""
    import keras

    from tfvitmae.models.layers import ViTMAEAttention

    class Attention(keras.Model):
        def __init__(self):
            super().__init__()
            self.attention = ViTMAEAttention(width, heads, seed=0)

        def call(self, x):
            return self.attention(x)[0]

    model = Attention()
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    return model


def timed_step(model, x, kernel: bool) -> float:
    """Seconds of one `train_on_batch`, on the kernel path or the matmuls."""
    import keras

    from tfvitmae.models import layers

    backend = keras.backend.backend()
    layers.FUSED_ATTENTION_BACKENDS = (backend, "jax:cpu", "jax:gpu") if kernel else ()
    start = time.perf_counter()
    model.train_on_batch(x, x)
    return time.perf_counter() - start


def worker(batch: int, rounds: int, tiny: bool) -> dict:
    """Time both paths on this process's backend; `{shape: {...}}`."""
    import numpy as np

    results = {}
    for name, length, width, heads in TINY_SHAPES if tiny else SHAPES:
        x = np.random.default_rng(0).normal(size=(batch, length, width)).astype("float32")
        models = {path: attention_model(width, heads) for path in ("kernel", "matmuls")}

        def step(path, models=models, x=x):
            return timed_step(models[path], x, kernel=path == "kernel")

        for path in models:  # compile and warm up
            step(path)
            step(path)
        times = {path: [] for path in models}
        ratios = []
        for i in range(rounds):
            order = ("kernel", "matmuls") if i % 2 else ("matmuls", "kernel")
            round_times = {path: step(path) for path in order}
            for path, seconds in round_times.items():
                times[path].append(seconds)
            ratios.append(round_times["matmuls"] / round_times["kernel"])
        results[name] = {
            "kernel_ms": 1000 * statistics.median(times["kernel"]),
            "matmuls_ms": 1000 * statistics.median(times["matmuls"]),
            "matmuls_over_kernel": statistics.median(ratios),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, 3 rounds")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    rounds = 3 if args.tiny else args.rounds
    if args.worker:
        print(json.dumps(worker(args.batch, rounds, args.tiny)))
        return
    table = {}
    for backend in args.backends:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [sys.executable, __file__, "--worker", backend, "--batch", str(args.batch)]
        command += ["--rounds", str(rounds)] + (["--tiny"] if args.tiny else [])
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{backend} failed:\n{done.stderr[-2000:]}")
        table[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    machine = platform.processor() or platform.machine()
    lines = [
        f"Attention train step (one layer, batch {args.batch}), {machine}",
        "",
        "| backend | shape | kernel ms | matmuls ms | matmuls / kernel |",
        "|---|---|---|---|---|",
    ]
    for backend, shapes in table.items():
        for shape, r in shapes.items():
            lines.append(
                f"| {backend} | {shape} | {r['kernel_ms']:.2f} | {r['matmuls_ms']:.2f} | "
                f"{r['matmuls_over_kernel']:.2f}x |"
            )
    print("\n".join(lines))
    if not args.tiny:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, f"attention_{platform.machine()}_cpu")
        with open(stem + ".json", "w") as f:
            json.dump({"batch": args.batch, "rounds": rounds, "results": table}, f, indent=1)
        with open(stem + ".md", "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
