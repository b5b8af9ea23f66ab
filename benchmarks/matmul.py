"""Plain TensorFlow against plain PyTorch: the matrix products of a ViT, no tfvitmae.

    python benchmarks/matmul.py                  # ViT-B/16 at 224, batch 8
    python benchmarks/matmul.py --config tiny    # seconds
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/matmul.py   # TF without its oneDNN rewrite

When ours trails HF-PT in bf16, this says whether the limit is TensorFlow's
own kernel: each product runs in float32 and bfloat16, in TensorFlow eager,
as a `tf.function` graph and under XLA, and in PyTorch, interleaved, in
GFLOP/s. A child process per framework and precision runs each product once
with `ONEDNN_VERBOSE=1` and reports which oneDNN kernels ran: `gemm_api` in
float32 blocks is Eigen's contraction calling oneDNN's sgemm (bfloat16 is then
converted, not computed, in bfloat16); `matmul` with `brg:avx512_core_amx` is
the AMX kernel; no line at all means the framework did not call oneDNN
(PyTorch's MKL or its own kernels). The shapes are a ViT's: the encoder MLP's
`y = xW` and its two gradients, the decoder MLP's `y = xW`, and the decoder's
attention logits `q k^T` as one batched product.
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from breakdown import interleaved  # noqa: E402
from run import make_config  # noqa: E402

DTYPES = ("float32", "bfloat16")


def products(config, batch):
    """name -> (a's shape, b's shape, transpose_b): the products of one step."""
    rows = batch * (1 + int(config.num_patches * (1 - config.mask_ratio)))
    tokens = 1 + config.num_patches
    width, inner = config.hidden_size, config.intermediate_size
    d_width, d_inner = config.decoder_hidden_size, config.decoder_intermediate_size
    heads = config.decoder_num_attention_heads
    head_dim = d_width // heads
    return {
        f"encoder MLP y = xW ({rows}x{width} . {width}x{inner})":
            ((rows, width), (width, inner), False),
        f"encoder MLP dx = dy W^T ({rows}x{inner} . {width}x{inner}^T)":
            ((rows, inner), (width, inner), True),
        f"decoder MLP y = xW ({batch * tokens}x{d_width} . {d_width}x{d_inner})":
            ((batch * tokens, d_width), (d_width, d_inner), False),
        f"decoder attention q k^T ({batch * heads} x {tokens}x{head_dim} . {head_dim}x{tokens})":
            ((batch * heads, tokens, head_dim), (batch * heads, tokens, head_dim), True),
    }  # fmt: skip


def flops(a_shape, b_shape, transpose_b):
    *batch, m, k = a_shape
    n = b_shape[-2] if transpose_b else b_shape[-1]
    return 2 * int(np.prod(batch or [1])) * m * k * n


def operands(a_shape, b_shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(a_shape, np.float32), rng.standard_normal(b_shape, np.float32)


def tf_calls(a, b, transpose_b, dtype):
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # one tf.function per product, by design
    x, y = tf.cast(a, dtype), tf.cast(b, dtype)
    product = lambda x, y: tf.matmul(x, y, transpose_b=transpose_b)  # noqa: E731
    graph, xla = tf.function(product), tf.function(product, jit_compile=True)
    return {
        "tf eager": lambda: product(x, y).numpy(),
        "tf graph": lambda: graph(x, y).numpy(),
        "tf xla": lambda: xla(x, y).numpy(),
    }


def torch_call(a, b, transpose_b, dtype):
    import torch

    x, y = (torch.from_numpy(v).to(getattr(torch, dtype)) for v in (a, b))
    y = y.transpose(-1, -2) if transpose_b else y
    return lambda: torch.matmul(x, y)


def kernels(framework, dtype, config, batch):
    """The oneDNN kernels each product ran, from a child with ONEDNN_VERBOSE=1:
    product name -> sorted `primitive implementation (source dtype)` strings."""
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    command = [sys.executable, __file__, "--kernels-of", framework, dtype,
               "--config", config, "--batch", str(batch)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if out.returncode:
        raise RuntimeError(f"{framework} {dtype} kernel probe failed:\n{out.stderr[-2000:]}")
    found, current = {}, None
    for line in out.stdout.splitlines():
        if line.startswith("product: "):
            current = line[len("product: ") :]
            found[current] = set()
        elif current and line.startswith("onednn_verbose") and ",primitive,exec," in line:
            fields = line.split(",")
            kind, implementation = fields[5], fields[6] or "-"
            source = fields[8].split()[0].split(":")[0] if len(fields) > 8 and fields[8] else "?"
            if kind != "reorder":
                found[current].add(f"{kind} {implementation} ({source})")
    return {name: sorted(seen) or ["no oneDNN call"] for name, seen in found.items()}


def probe_kernels(framework, dtype, config, batch):
    """Run each product once (the child side of `kernels`)."""
    for name, (a_shape, b_shape, transpose_b) in products(make_config(config), batch).items():
        a, b = operands(a_shape, b_shape)
        calls = (
            tf_calls(a, b, transpose_b, dtype)
            if framework == "tf"
            else {"torch": torch_call(a, b, transpose_b, dtype)}
        )
        for call in calls.values():
            call()  # compile and warm up before the marker: only the run is counted
        print(f"product: {name}", flush=True)
        for call in calls.values():
            call()
        sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=("base", "tiny"), default="base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle", type=float, default=1.0, help="idle seconds before each call")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    parser.add_argument(
        "--kernels-of", nargs=2, metavar=("FRAMEWORK", "DTYPE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.kernels_of:
        return probe_kernels(*args.kernels_of, args.config, args.batch)

    from run import machine
    from serving import cpu_kind

    config = make_config(args.config)
    rows = []
    for dtype in DTYPES:
        for name, (a_shape, b_shape, transpose_b) in products(config, args.batch).items():
            a, b = operands(a_shape, b_shape)
            calls = tf_calls(a, b, transpose_b, dtype)
            calls["torch"] = torch_call(a, b, transpose_b, dtype)
            times = interleaved(calls, args.rounds, args.settle)
            work = flops(a_shape, b_shape, transpose_b)
            rows.append({"product": name, "dtype": dtype,
                         **{k: work / t / 1e9 for k, t in times.items()}})  # fmt: skip
    dispatch = {
        (framework, dtype): kernels(framework, dtype, args.config, args.batch)
        for framework in ("tf", "torch")
        for dtype in DTYPES
    }
    for row in rows:
        row["tf kernels"] = dispatch["tf", row["dtype"]][row["product"]]
        row["torch kernels"] = dispatch["torch", row["dtype"]][row["product"]]
    info = machine()
    lines = [
        f"Machine: {info.get('cpu', '?')}, {info['cpus']} CPUs, flags: "
        f"{' '.join(info.get('cpu_flags', []))}. TensorFlow {info['tensorflow']} "
        f"(TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default')}), "
        f"PyTorch {info['torch']}. Config {args.config}, batch {args.batch}, "
        f"{args.rounds} interleaved rounds; GFLOP/s, higher is faster.",
        "",
        "| product | dtype | TF eager | TF graph | TF XLA | PyTorch | PyTorch / best TF "
        "| TF's oneDNN kernels | PyTorch's |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = max(r["tf eager"], r["tf graph"], r["tf xla"])
        lines.append(
            f"| {r['product']} | {r['dtype']} | {r['tf eager']:.3g} | {r['tf graph']:.3g} | "
            f"{r['tf xla']:.3g} | {r['torch']:.3g} | {r['torch'] / best:.2f}x | "
            f"{'; '.join(r['tf kernels'])} | {'; '.join(r['torch kernels'])} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(args.output, f"matmul-{args.config}-{cpu_kind(info)}")
    with open(stem + ".json", "w") as f:
        json.dump({"machine": info, "products": rows}, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(table)
    return rows


if __name__ == "__main__":
    main()
