"""Where a pretraining step's time goes: ours against HF-PT, part by part.

    python benchmarks/breakdown.py                 # ViT-B/16 at 224, batch 8, fp32
    python benchmarks/breakdown.py --config tiny   # seconds
    python benchmarks/breakdown.py --precision bf16 --xla off   # mixed_bfloat16 / autocast

`run.py` says how fast each contestant is; this says why. Each line times
one part of the step for both, interleaved, and reports milliseconds (times
the number of such parts in the model, where there are several) and the
ratio HF-PT / ours: the parts below 1 are where ours loses.

- the whole step split into forward, forward + backward, and the AdamW update;
- one encoder block and one decoder block, forward + backward;
- the attention core alone (softmax(QK^T)V), as our two formulations write it
  and as PyTorch's fused SDPA kernel and its plain math run it;
- the three matrix products of a Dense layer's training (y = xW, dx, dW) in
  GFLOP/s, at the decoder MLP's shape (`matmul.py` has plain TF against
  PyTorch, with the kernels each ran);
- TensorFlow's op types by time in our forward pass and our gradients, from
  TensorFlow's profiler (XLA off only: under XLA the ops are fused away).

`--precision bf16` runs ours under `mixed_bfloat16` and HF-PT under bfloat16
autocast; `--xla` defaults to what `compile()` chooses (on for fp32, off for
bf16 on CPU).
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

from run import machine, make_checkpoint, make_config, make_inputs, native_bf16  # noqa: E402


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


def _tf_grads(fn, watched, variables, xla):
    """A compiled `() -> gradients` of `sum(fn(*watched)**2)` (the sum in float32)."""
    import tensorflow as tf

    @tf.function(jit_compile=xla)
    def grads(*inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = tf.cast(fn(*inputs), tf.float32)
            loss = tf.reduce_sum(out * out)
        return tape.gradient(loss, list(inputs) + list(variables))

    return lambda: grads(*watched)[0].numpy()


def _pt_grads(fn, inputs, bf16):
    import torch

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = fn(*inputs).float()
        (out * out).sum().backward()

    return run


def op_profile(calls, runs=2, top=12):
    """TensorFlow op types by time over `runs` calls of each of `calls`
    (name -> callable): name -> [(op type, ms per call, share)]. Ops that
    ran concurrently each count their whole time, so a share is of the
    summed op time, not of the wall time. Reads the profiler's private
    XPlane proto directly (no TensorBoard needed)."""
    import collections
    import glob

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    profiles = {}
    for name, call in calls.items():
        call()
        with tempfile.TemporaryDirectory() as logdir:
            tf.profiler.experimental.start(logdir)
            for _ in range(runs):
                call()
            tf.profiler.experimental.stop()
            (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
            space = xplane_pb2.XSpace.FromString(open(path, "rb").read())
        totals = collections.Counter()
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            for line in plane.lines:
                if line.name.startswith("tf_Compute"):  # the executor's op events
                    for event in line.events:
                        kind = plane.event_metadata[event.metadata_id].name.split(":")[-1]
                        totals[kind] += event.duration_ps / 1e9 / runs
        for container in ("Process", "ExecutorDoneCallback", ""):
            totals.pop(container, None)
        whole = sum(totals.values()) or 1.0
        profiles[name] = [(kind, ms, ms / whole) for kind, ms in totals.most_common(top)]
    return profiles


def step_parts(config, checkpoint, batch, precision, xla):
    import keras
    import tensorflow as tf
    import torch
    from transformers import ViTMAEForPreTraining

    from tfvitmae import TFViTMAEForPreTraining

    pixels, noise = make_inputs(config, batch)
    bf16 = precision == "bf16"
    ours = TFViTMAEForPreTraining.from_pretrained(
        checkpoint, dtype="mixed_bfloat16" if bf16 else None
    )
    ours.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=xla)
    x, n = tf.constant(pixels), tf.constant(noise)

    @tf.function(jit_compile=xla)
    def forward():
        return ours(x, noise=n, training=True).loss

    @tf.function(jit_compile=xla)
    def gradients():
        with tf.GradientTape() as tape:
            loss = ours(x, noise=n, training=True).loss
        return tape.gradient(loss, ours.trainable_variables)

    grads = gradients()

    @tf.function(jit_compile=xla)
    def update():
        ours.optimizer.apply(grads, ours.trainable_variables)

    peer = ViTMAEForPreTraining.from_pretrained(checkpoint, attn_implementation="sdpa")
    peer.train()
    optimizer = torch.optim.AdamW(peer.parameters(), lr=1e-4)
    px, pn = torch.from_numpy(pixels), torch.from_numpy(noise)
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)  # noqa: E731

    def peer_forward():
        with torch.no_grad(), autocast():
            return peer(pixel_values=px, noise=pn).loss.item()

    def peer_gradients():
        with autocast():
            loss = peer(pixel_values=px, noise=pn).loss
        loss.backward()

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


def block_parts(config, batch, precision, xla):
    import numpy as np
    import tensorflow as tf
    import torch
    from transformers import ViTMAEConfig as PTConfig
    from transformers.models.vit_mae.modeling_vit_mae import ViTMAELayer

    from tfvitmae.models.layers import ViTMAEBlock

    bf16 = precision == "bf16"
    dtype = "bfloat16" if bf16 else "float32"
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
        block = ViTMAEBlock(
            width, heads, inner, layer_norm_eps=config.layer_norm_eps,
            dtype="mixed_bfloat16" if bf16 else None,
        )  # fmt: skip
        block(hidden)
        peer = ViTMAELayer(
            PTConfig(hidden_size=width, num_attention_heads=heads, intermediate_size=inner,
                     layer_norm_eps=config.layer_norm_eps, attn_implementation="sdpa")
        )  # fmt: skip
        parts.append((
            f"{name} block {tuple(hidden.shape)}", layers,
            _tf_grads(lambda h, block=block: block(h, training=True)[0], [tf.constant(hidden)],
                      block.trainable_variables, xla),
            _pt_grads(lambda h, peer=peer: _first(peer(h)),
                      [torch.from_numpy(hidden).requires_grad_()], bf16),
        ))  # fmt: skip
        head_dim = width // heads
        qkv = [
            rng.standard_normal((batch, heads, tokens, head_dim)).astype("float32") for _ in "qkv"
        ]
        tf_qkv = [tf.cast(a, dtype) for a in qkv]
        pt_qkv = [torch.from_numpy(a).to(getattr(torch, dtype)).requires_grad_() for a in qkv]
        scale = head_dim**-0.5

        def softmax(logits):  # in float32, as ours does under mixed precision
            return tf.cast(tf.nn.softmax(tf.cast(logits, tf.float32)), logits.dtype)

        def matmul_core(q, k, v, scale=scale):
            return tf.matmul(softmax(tf.matmul(q * scale, k, transpose_b=True)), v)

        def einsum_core(q, k, v, scale=scale):
            probs = softmax(tf.einsum("bhtd,bhsd->bhts", q * scale, k))
            return tf.einsum("bhts,bhsd->bhtd", probs, v)

        def math_core(q, k, v, scale=scale):
            return torch.softmax((q * scale) @ k.transpose(-1, -2), -1) @ v

        sdpa = torch.nn.functional.scaled_dot_product_attention
        parts += [
            (f"{name} attention core, matmul (ours: sdpa) vs SDPA", layers,
             _tf_grads(matmul_core, tf_qkv, [], xla), _pt_grads(sdpa, pt_qkv, bf16)),
            (f"{name} attention core, einsum (ours: eager) vs SDPA", layers,
             _tf_grads(einsum_core, tf_qkv, [], xla), _pt_grads(sdpa, pt_qkv, bf16)),
            (f"{name} attention core, matmul vs PT math", layers,
             _tf_grads(matmul_core, tf_qkv, [], xla), _pt_grads(math_core, pt_qkv, bf16)),
        ]  # fmt: skip
    return parts


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _matmul_calls(a, b, transpose_a, transpose_b, dtype, xla):
    import tensorflow as tf
    import torch

    fn = tf.function(
        lambda a, b: tf.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b),
        jit_compile=xla,
    )
    tf_a, tf_b = tf.cast(a, dtype), tf.cast(b, dtype)
    pt_a, pt_b = (torch.from_numpy(v).to(getattr(torch, dtype)) for v in (a, b))
    pt_a, pt_b = (pt_a.t() if transpose_a else pt_a), (pt_b.t() if transpose_b else pt_b)
    return {"ours": lambda: fn(tf_a, tf_b).numpy(), "hf-pt": lambda: torch.matmul(pt_a, pt_b)}


def matmul_rates(config, batch, rounds, settle, precision, xla, peer=True):
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
        dtype = "bfloat16" if precision == "bf16" else "float32"
        calls = _matmul_calls(a, b, ta, tb, dtype, xla)
        times = interleaved(calls if peer else {"ours": calls["ours"]}, rounds, settle)
        rates.append(
            {"part": name, "hf-pt": None, **{k: flops / t / 1e9 for k, t in times.items()}}
        )
    return rates


def _number(value, spec, unit=""):
    return "-" if value is None else format(value, spec) + unit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=("base", "tiny"), default="base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--settle", type=float, default=1.0, help="idle seconds before each timed call"
    )
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument(
        "--xla", choices=("auto", "on", "off"), default="auto",
        help="XLA for ours; auto: as compile() chooses on CPU (on for fp32, off for bf16)",
    )  # fmt: skip
    parser.add_argument(
        "--peer", choices=("auto", "on", "off"), default="auto",
        help="time HF-PT too; auto: not in bf16 where the CPU emulates it (~100x slower)",
    )  # fmt: skip
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    config = make_config(args.config)
    xla = args.precision == "fp32" if args.xla == "auto" else args.xla == "on"
    if args.peer == "auto":
        with_peer = args.precision == "fp32" or native_bf16()
    else:
        with_peer = args.peer == "on"
    rows, profiles = [], {}
    with tempfile.TemporaryDirectory() as folder:
        parts = step_parts(config, make_checkpoint(config, folder), args.batch, args.precision, xla)
        if not xla:
            ours = {name: call for name, _, call, _ in parts}
            profiles = op_profile(
                {"forward": ours["step: forward"], "gradients": ours["step: forward + backward"]}
            )
        parts += block_parts(config, args.batch, args.precision, xla)
        for name, count, ours, peer in parts:
            calls = {"ours": ours, "hf-pt": peer} if with_peer else {"ours": ours}
            times = interleaved(calls, args.rounds, args.settle)
            row = {"part": name, "count": count, "ours_ms": times["ours"] * 1000 * count,
                   "hf_pt_ms": None, "hf_pt_over_ours": None}  # fmt: skip
            if with_peer:
                row["hf_pt_ms"] = times["hf-pt"] * 1000 * count
                row["hf_pt_over_ours"] = times["hf-pt"] / times["ours"]
            rows.append(row)
    rates = matmul_rates(
        config, args.batch, args.rounds, args.settle, args.precision, xla, with_peer
    )
    info = machine()
    precision = (
        "ours under mixed_bfloat16, HF-PT under bfloat16 autocast"
        if args.precision == "bf16"
        else "float32"
    )
    lines = [
        f"Machine: {info.get('cpu', '?')}, {os.cpu_count()} CPUs, flags: "
        f"{' '.join(info.get('cpu_flags', []))}. Config: {args.config}, batch {args.batch}, "
        f"{args.rounds} interleaved rounds; {precision}; ours with XLA {'on' if xla else 'off'}, "
        "HF-PT with SDPA."
        + ("" if with_peer else " HF-PT not timed (--peer, or bf16 emulated on this CPU)."),
        "",
        "| part | x | ours ms | HF-PT ms | HF-PT / ours |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['part']} | {r['count']} | {r['ours_ms']:.1f} | {_number(r['hf_pt_ms'], '.1f')} | "
        f"{_number(r['hf_pt_over_ours'], '.2f', 'x')} |"
        for r in rows
    ]
    lines += ["", "| Dense matmul | ours GFLOP/s | HF-PT GFLOP/s |", "|---|---|---|"]
    lines += [f"| {r['part']} | {r['ours']:.3g} | {_number(r['hf-pt'], '.3g')} |" for r in rates]
    for name, ops in profiles.items():
        lines += ["", f"| TF op type, ours' {name} | ms per call | share |", "|---|---|---|"]
        lines += [f"| {kind} | {ms:.1f} | {share:.1%} |" for kind, ms, share in ops]
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(args.output, exist_ok=True)
    suffix = "" if (args.precision, xla) == ("fp32", True) else f"-{args.precision}"
    suffix += "" if xla == (args.precision == "fp32") else f"-xla-{'on' if xla else 'off'}"
    stem = os.path.join(args.output, f"breakdown-{args.config}{suffix}")
    with open(stem + ".json", "w") as f:
        json.dump({"machine": info, "precision": args.precision, "xla": xla, "parts": rows,
                   "matmuls": rates, "op_profiles": profiles}, f, indent=2)  # fmt: skip
    with open(stem + ".md", "w") as f:
        f.write(table)
    return rows, rates


if __name__ == "__main__":
    main()
