"""Where a pretraining step's time goes: ours (under XLA) against HF-PT, part by part.

    python benchmarks/breakdown.py                 # ViT-B/16 at 224, batch 8
    python benchmarks/breakdown.py --config tiny   # seconds

`run.py` says how fast each contestant is; this says why. Each line times
one part of the step for both, interleaved, and reports milliseconds (times
the number of such parts in the model, where there are several) and the
ratio HF-PT / ours: the parts below 1 are where ours loses.

- the whole step split into forward, forward + backward, and the AdamW update;
- one encoder block and one decoder block, forward + backward;
- the attention core alone (softmax(QK^T)V), as our two formulations write it
  and as PyTorch's fused SDPA kernel and its plain math run it;
- the three matrix products of a Dense layer's training (y = xW, dx, dW) in
  GFLOP/s, at the decoder MLP's shape.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from run import machine, make_checkpoint, make_config, make_inputs  # noqa: E402


def interleaved(calls, rounds, settle):
    """Median seconds per call name, the calls interleaved round by round,
    after `settle` idle seconds each (see `run.run_task`: one framework's
    spinning worker threads slow the other's next call)."""
    for call in calls.values():
        call()
        call()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            time.sleep(settle)
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _tf_grads(fn, watched, variables):
    """An XLA-compiled `() -> gradients` of `sum(fn(*watched)**2)`."""
    import tensorflow as tf

    @tf.function(jit_compile=True)
    def grads(*inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = fn(*inputs)
            loss = tf.reduce_sum(out * out)
        return tape.gradient(loss, list(inputs) + list(variables))

    return lambda: grads(*watched)[0].numpy()


def _pt_grads(fn, inputs):
    def run():
        out = fn(*inputs)
        (out * out).sum().backward()

    return run


def step_parts(config, checkpoint, batch):
    import keras
    import tensorflow as tf
    import torch
    from transformers import ViTMAEForPreTraining

    from tfvitmae import TFViTMAEForPreTraining

    pixels, noise = make_inputs(config, batch)
    ours = TFViTMAEForPreTraining.from_pretrained(checkpoint)
    ours.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=True)
    x, n = tf.constant(pixels), tf.constant(noise)

    @tf.function(jit_compile=True)
    def forward():
        return ours(x, noise=n, training=True).loss

    @tf.function(jit_compile=True)
    def gradients():
        with tf.GradientTape() as tape:
            loss = ours(x, noise=n, training=True).loss
        return tape.gradient(loss, ours.trainable_variables)

    grads = gradients()

    @tf.function(jit_compile=True)
    def update():
        ours.optimizer.apply(grads, ours.trainable_variables)

    peer = ViTMAEForPreTraining.from_pretrained(checkpoint, attn_implementation="sdpa")
    peer.train()
    optimizer = torch.optim.AdamW(peer.parameters(), lr=1e-4)
    px, pn = torch.from_numpy(pixels), torch.from_numpy(noise)

    def peer_forward():
        with torch.no_grad():
            return peer(pixel_values=px, noise=pn).loss.item()

    def peer_gradients():
        peer(pixel_values=px, noise=pn).loss.backward()

    peer_gradients()  # every parameter has a .grad for the update alone
    return [
        ("step: forward", 1, lambda: forward().numpy(), peer_forward),
        ("step: forward + backward", 1, lambda: gradients()[0].numpy(), peer_gradients),
        ("step: AdamW update", 1,
         lambda: (update(), ours.optimizer.iterations.numpy()), optimizer.step),
        ("step: whole (train_on_batch / fwd+bwd+step)", 1,
         lambda: ours.train_on_batch({"pixel_values": pixels, "noise": noise}),
         lambda: (peer_gradients(), optimizer.step(), optimizer.zero_grad())),
    ]  # fmt: skip


def block_parts(config, batch):
    import numpy as np
    import tensorflow as tf
    import torch
    from transformers import ViTMAEConfig as PTConfig
    from transformers.models.vit_mae.modeling_vit_mae import ViTMAELayer

    from tfvitmae.models.layers import ViTMAEBlock

    kept = int(config.num_patches * (1 - config.mask_ratio))
    stacks = [
        ("encoder", 1 + kept, config.hidden_size, config.num_attention_heads,
         config.intermediate_size, config.num_hidden_layers),
        ("decoder", 1 + config.num_patches, config.decoder_hidden_size,
         config.decoder_num_attention_heads, config.decoder_intermediate_size,
         config.decoder_num_hidden_layers),
    ]  # fmt: skip
    parts = []
    rng = np.random.default_rng(0)
    for name, tokens, width, heads, inner, layers in stacks:
        hidden = rng.standard_normal((batch, tokens, width)).astype("float32")
        block = ViTMAEBlock(width, heads, inner, layer_norm_eps=config.layer_norm_eps)
        block(hidden)
        peer = ViTMAELayer(
            PTConfig(hidden_size=width, num_attention_heads=heads, intermediate_size=inner,
                     layer_norm_eps=config.layer_norm_eps, attn_implementation="sdpa")
        )  # fmt: skip
        parts.append((
            f"{name} block {tuple(hidden.shape)}", layers,
            _tf_grads(lambda h, block=block: block(h, training=True)[0], [tf.constant(hidden)],
                      block.trainable_variables),
            _pt_grads(lambda h, peer=peer: _first(peer(h)),
                      [torch.from_numpy(hidden).requires_grad_()]),
        ))  # fmt: skip
        head_dim = width // heads
        qkv = [
            rng.standard_normal((batch, heads, tokens, head_dim)).astype("float32") for _ in "qkv"
        ]
        tf_qkv = [tf.constant(a) for a in qkv]
        pt_qkv = [torch.from_numpy(a.copy()).requires_grad_() for a in qkv]
        scale = head_dim**-0.5

        def matmul_core(q, k, v, scale=scale):
            return tf.matmul(tf.nn.softmax(tf.matmul(q * scale, k, transpose_b=True)), v)

        def einsum_core(q, k, v, scale=scale):
            probs = tf.nn.softmax(tf.einsum("bhtd,bhsd->bhts", q * scale, k))
            return tf.einsum("bhts,bhsd->bhtd", probs, v)

        def math_core(q, k, v, scale=scale):
            return torch.softmax((q * scale) @ k.transpose(-1, -2), -1) @ v

        sdpa = torch.nn.functional.scaled_dot_product_attention
        parts += [
            (f"{name} attention core, matmul (ours: sdpa) vs SDPA", layers,
             _tf_grads(matmul_core, tf_qkv, []), _pt_grads(sdpa, pt_qkv)),
            (f"{name} attention core, einsum (ours: eager) vs SDPA", layers,
             _tf_grads(einsum_core, tf_qkv, []), _pt_grads(sdpa, pt_qkv)),
            (f"{name} attention core, matmul vs PT math", layers,
             _tf_grads(matmul_core, tf_qkv, []), _pt_grads(math_core, pt_qkv)),
        ]  # fmt: skip
    return parts


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _matmul_calls(a, b, transpose_a, transpose_b):
    import tensorflow as tf
    import torch

    fn = tf.function(
        lambda a, b: tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b),
        jit_compile=True,
    )
    tf_a, tf_b = tf.constant(a), tf.constant(b)
    pt_a, pt_b = torch.from_numpy(a), torch.from_numpy(b)
    pt_a, pt_b = (pt_a.t() if transpose_a else pt_a), (pt_b.t() if transpose_b else pt_b)
    return {"ours": lambda: fn(tf_a, tf_b).numpy(), "hf-pt": lambda: torch.matmul(pt_a, pt_b)}


def matmul_rates(config, batch, rounds, settle):
    """GFLOP/s of y = xW, dx = dy W^T and dW = x^T dy at the decoder MLP's shape."""
    import numpy as np

    rows = batch * (1 + config.num_patches)
    k, n = config.decoder_hidden_size, config.decoder_intermediate_size
    rng = np.random.default_rng(0)
    x, w, dy = (rng.standard_normal(s).astype("float32") for s in ((rows, k), (k, n), (rows, n)))
    cases = {
        f"y = xW {(rows, k)}x{(k, n)}": (x, w, False, False),
        "dx = dy W^T": (dy, w, False, True),
        "dW = x^T dy": (x, dy, True, False),
    }
    flops = 2 * rows * k * n
    rates = []
    for name, (a, b, ta, tb) in cases.items():
        times = interleaved(_matmul_calls(a, b, ta, tb), rounds, settle)
        rates.append({"part": name, **{k: flops / t / 1e9 for k, t in times.items()}})
    return rates


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=("base", "tiny"), default="base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--settle", type=float, default=1.0, help="idle seconds before each timed call"
    )
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    config = make_config(args.config)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        parts = step_parts(config, make_checkpoint(config, folder), args.batch)
        parts += block_parts(config, args.batch)
        for name, count, ours, peer in parts:
            times = interleaved({"ours": ours, "hf-pt": peer}, args.rounds, args.settle)
            rows.append(
                {"part": name, "count": count, "ours_ms": times["ours"] * 1000 * count,
                 "hf_pt_ms": times["hf-pt"] * 1000 * count,
                 "hf_pt_over_ours": times["hf-pt"] / times["ours"]}
            )  # fmt: skip
    rates = matmul_rates(config, args.batch, args.rounds, args.settle)
    lines = [
        f"Machine: {machine().get('cpu', '?')}, {os.cpu_count()} CPUs. Config: {args.config}, "
        f"batch {args.batch}, {args.rounds} interleaved rounds; ours under XLA, HF-PT with SDPA.",
        "",
        "| part | x | ours ms | HF-PT ms | HF-PT / ours |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['part']} | {r['count']} | {r['ours_ms']:.1f} | {r['hf_pt_ms']:.1f} | "
        f"{r['hf_pt_over_ours']:.2f}x |"
        for r in rows
    ]
    lines += ["", "| Dense matmul | ours GFLOP/s | HF-PT GFLOP/s |", "|---|---|---|"]
    lines += [f"| {r['part']} | {r['ours']:.0f} | {r['hf-pt']:.0f} |" for r in rates]
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(args.output, exist_ok=True)
    stem = os.path.join(args.output, f"breakdown-{args.config}")
    with open(stem + ".json", "w") as f:
        json.dump({"parts": rows, "matmuls": rates}, f, indent=2)
    with open(stem + ".md", "w") as f:
        f.write(table)
    return rows, rates


if __name__ == "__main__":
    main()
