"""The contestants of `run.py`: tfvitmae and Hugging Face's ports, on the same weights.

Each contestant builds from one transformers-layout checkpoint directory and
offers `infer(pixels, noise)` (a forward pass, waited for) and
`step(pixels, noise)` (forward, backward and AdamW). Peers that are not
installed are reported as missing instead of failing the run. Ours on Keras'
JAX and PyTorch backends runs in a process of its own (the backend is fixed
at import), driven through a pipe: `run.py --serve`.
"""

import dataclasses
import importlib.util
import os
import subprocess
import sys


@dataclasses.dataclass
class Contestant:
    name: str
    family: str  # "ours", "hf-tf" or "hf-pt"
    precision: str  # "fp32" or "bf16"
    options: dict = dataclasses.field(default_factory=dict)

    def available(self):
        """`None` if this contestant can run here, else why not."""
        backend = self.options.get("backend")
        if backend and importlib.util.find_spec(backend) is None:
            return f"not installed (no {backend})"
        try:
            if self.family == "hf-tf":
                import tf_keras  # noqa: F401
                from transformers import TFViTMAEForPreTraining  # noqa: F401
            elif self.family == "hf-pt":
                import torch  # noqa: F401
                from transformers import ViTMAEForPreTraining  # noqa: F401
        except ImportError as e:
            return f"not installed ({e})"
        return None

    def build(self, checkpoint, mask_ratio, learning_rate=1e-4, here=False):
        """A `Runner` for the weights in `checkpoint`, at `mask_ratio`; with
        `here`, in this process even for another backend (already set)."""
        if self.options.get("backend") and not here:
            return _Remote(self, checkpoint, mask_ratio, learning_rate)
        return {"ours": _Ours, "hf-tf": _HFTF, "hf-pt": _HFPT}[self.family](
            self, checkpoint, mask_ratio, learning_rate
        )


def contestants():
    """Every contestant, ours first. `options` are tfvitmae model/compile options."""
    return [
        Contestant("ours fp32", "ours", "fp32"),  # defaults, as a user gets them
        Contestant("ours fp32 xla", "ours", "fp32", {"jit_compile": True}),
        Contestant("ours fp32 no-xla", "ours", "fp32", {"jit_compile": False}),
        Contestant("ours fp32 attn=eager", "ours", "fp32", {"attn_implementation": "eager"}),
        Contestant("ours fp32 attn=sdpa", "ours", "fp32", {"attn_implementation": "sdpa"}),
        Contestant("ours bf16", "ours", "bf16"),
        Contestant("ours fp32 remat", "ours", "fp32", {"remat": True}),
        Contestant("ours jax fp32", "ours", "fp32", {"backend": "jax"}),
        Contestant("ours torch fp32", "ours", "fp32", {"backend": "torch"}),
        Contestant("ours torch fp32 remat", "ours", "fp32", {"backend": "torch", "remat": True}),
        Contestant("hf-tf fp32", "hf-tf", "fp32"),
        Contestant("hf-pt fp32", "hf-pt", "fp32"),
        Contestant("hf-pt bf16", "hf-pt", "bf16"),
    ]


class _Ours:
    def __init__(self, contestant, checkpoint, mask_ratio, learning_rate):
        import keras

        from tfvitmae import TFViTMAEForPreTraining

        options = dict(contestant.options)
        options.pop("backend", None)  # fixed at import: KERAS_BACKEND of this process
        jit_compile = options.pop("jit_compile", "auto")
        if contestant.precision == "bf16":
            options["dtype"] = "mixed_bfloat16"
        self.model = TFViTMAEForPreTraining.from_pretrained(
            checkpoint, mask_ratio=mask_ratio, **options
        )
        self.model.compile(optimizer=keras.optimizers.AdamW(learning_rate), jit_compile=jit_compile)
        self._forward = None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            forward_xla = jit_compile if isinstance(jit_compile, bool) else None
            model = self.model
            self._forward = tf.function(
                lambda x, n: model(x, noise=n).logits,
                jit_compile=forward_xla if forward_xla is not None else model.jit_compile,
            )

    def infer(self, pixels, noise):
        if self._forward is None:  # Keras' compiled predict (jit on JAX)
            batch = {"pixel_values": pixels, "noise": noise}
            return self.model.predict_on_batch(batch)["logits"]
        return self._forward(pixels, noise).numpy()

    def step(self, pixels, noise):
        return self.model.train_on_batch({"pixel_values": pixels, "noise": noise})


class _HFTF:
    def __init__(self, contestant, checkpoint, mask_ratio, learning_rate):
        import tensorflow as tf
        import tf_keras
        from transformers import TFViTMAEForPreTraining

        self.model = TFViTMAEForPreTraining.from_pretrained(
            checkpoint, from_pt=True, mask_ratio=mask_ratio
        )
        self.model.compile(optimizer=tf_keras.optimizers.AdamW(learning_rate))
        model = self.model
        self._forward = tf.function(lambda x, n: model(x, noise=n).logits)

    def infer(self, pixels, noise):
        return self._forward(pixels, noise).numpy()

    def step(self, pixels, noise):
        return self.model.train_on_batch({"pixel_values": pixels, "noise": noise})


class _HFPT:
    def __init__(self, contestant, checkpoint, mask_ratio, learning_rate):
        import torch
        from transformers import ViTMAEForPreTraining

        self.torch = torch
        self.model = ViTMAEForPreTraining.from_pretrained(
            checkpoint, mask_ratio=mask_ratio, attn_implementation="sdpa"
        )
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=learning_rate)
        self.bf16 = contestant.precision == "bf16"

    def _autocast(self):
        return self.torch.autocast("cpu", dtype=self.torch.bfloat16, enabled=self.bf16)

    def infer(self, pixels, noise):
        torch = self.torch
        self.model.eval()
        with torch.no_grad(), self._autocast():
            out = self.model(pixel_values=torch.from_numpy(pixels), noise=torch.from_numpy(noise))
        return out.logits.float().numpy()

    def step(self, pixels, noise):
        torch = self.torch
        self.model.train()
        with self._autocast():
            loss = self.model(
                pixel_values=torch.from_numpy(pixels), noise=torch.from_numpy(noise)
            ).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


class _Remote:
    """Ours in a child process on another Keras backend (`run.py --serve`):
    each call sends the batch size and waits for the child's answer; the
    child makes the same inputs (`run.make_inputs`) and runs `_Ours` there."""

    def __init__(self, contestant, checkpoint, mask_ratio, learning_rate):
        run = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")
        env = {**os.environ, "KERAS_BACKEND": contestant.options["backend"]}
        command = [sys.executable, run, "--serve", contestant.name, "--checkpoint", checkpoint]
        command += ["--mask-ratio", str(mask_ratio), "--learning-rate", str(learning_rate)]
        self.process = subprocess.Popen(
            command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._ask("ready")

    def _ask(self, request):
        if request != "ready":
            self.process.stdin.write(request + "\n")
            self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"the {request} request failed in the child process: {answer!r}")

    def infer(self, pixels, noise):
        self._ask(f"infer {len(pixels)}")

    def step(self, pixels, noise):
        self._ask(f"step {len(pixels)}")

    def __del__(self):
        if getattr(self, "process", None) and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


def serve(name, checkpoint, mask_ratio, learning_rate, make_inputs):
    """The child side of `_Remote`: answer `infer N` / `step N` lines with `ok`."""
    from tfvitmae import ViTMAEConfig

    contestant = next(c for c in contestants() if c.name == name)
    runner = _Ours(contestant, checkpoint, mask_ratio, learning_rate)
    config = ViTMAEConfig.from_pretrained(checkpoint)
    inputs = {}
    print("ok", flush=True)
    for line in sys.stdin:
        kind, batch = line.split()
        if batch not in inputs:
            inputs[batch] = make_inputs(config, int(batch))
        getattr(runner, kind)(*inputs[batch])
        print("ok", flush=True)
