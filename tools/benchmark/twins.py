"""Workshop's training against twins written without the library: plain JAX + optax, and PyTorch.

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m tools.benchmark.twins --cases=vae:64,vae:128,conv_vae:128
    tools/bazel run //tools/benchmark:twins -- --cases=vae:128 --rounds=7

The bare `jax.jit` side of `tools/benchmark` is Workshop's own step (its guard,
metrics and EMA included), so it cannot show what the library costs. Here
each case (`<config>:<batch>`) runs, in one process and in alternating rounds
(the order rotating each round), on the same dynamically binarised
Fashion-MNIST batches made once on the host:

* `Trainer.fit`: Workshop's loop over those batches (`make_trainer` of the
  config, as the train binary builds it);
* Workshop step: a Python loop over Workshop's compiled `train_step`;
* plain JAX: the same network written here with `jax.lax` and optax (Adam, a
  jitted step donating its state, the Bernoulli negative ELBO with one
  reparameterised sample), checked to have the config model's parameter count;
* PyTorch (eager), the same network with `torch.nn` and `torch.optim.Adam`,
  when torch imports. torch is never a dependency of the library: it is looked
  for in this interpreter, then in the virtualenv `--torch_venv` (default
  `$WORKSHOP_TORCH_VENV` or `~/.cache/workshop/torch-bench`, made with
  `python3 -m venv ~/.cache/workshop/torch-bench && ~/.cache/workshop/torch-bench/bin/pip install torch`),
  whose site-packages are appended to `sys.path`; otherwise the PyTorch side is
  skipped with the reason in the report.

Reported per case: the median seconds per step of each side, the median of
the per-round ratios Workshop / twin in steps/s (>1: Workshop is faster), the
load average, and GFLOP/s = the plain-JAX step's FLOPs (XLA cost analysis; the
same network for every side) / seconds per step. The twins carry none of
Workshop's extras (EMA, learning-rate schedule, gradient clipping, the
non-finite guard, metrics): the ratio is what those and the loop cost.
"""

from __future__ import annotations

import glob
import importlib
import math
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from flax import nnx

from workshop.models.factories import create_model
from workshop.train.experiment import data_source, make_trainer, parse_config
from tools.benchmark.reports import write_report

_CASES = flags.DEFINE_list("cases", ["vae:64", "vae:128", "conv_vae:128"],
                           "<config>:<batch size> pairs; configs: vae (MLP VAE) and conv_vae.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating rounds per case.", lower_bound=1)
_SECONDS = flags.DEFINE_float("seconds", 2.0, "Target seconds per side per round (sets its step count).")
_MIN_STEPS = flags.DEFINE_integer("min_steps", 3, "Fewest timed steps per side per round.", lower_bound=1)
_TORCH = flags.DEFINE_enum("torch", "auto", ["auto", "off"], "auto: run the PyTorch twin when torch imports.")
_TORCH_VENV = flags.DEFINE_string(
    "torch_venv", os.environ.get("WORKSHOP_TORCH_VENV", os.path.expanduser("~/.cache/workshop/torch-bench")),
    "A virtualenv holding torch (optional).")
_OUTPUT = flags.DEFINE_string("output", None, "Write the report as JSON here too.")

LATENT = 32
_LR = 1e-3


# ------------------------------------------------------------------ data
def binarised_batches(batch_size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` batches `[B, 28, 28, 1]` float32 of Fashion-MNIST training images, each pixel ~ Bernoulli(grey)."""
    cfg = parse_config(importlib.import_module("workshop.train.configs.vae").get_config())
    grey = data_source(cfg.data, train=True)["x"]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        rows = grey[rng.integers(0, len(grey), batch_size)].reshape(batch_size, 28, 28, 1)
        out.append((rng.random(rows.shape) < rows / 255.0).astype(np.float32))
    return out


# ------------------------------------------------------------- plain JAX
def _dense(key, n_in: int, n_out: int) -> dict:
    return {"w": jax.random.normal(key, (n_in, n_out)) / math.sqrt(n_in), "b": jnp.zeros(n_out)}


def _conv(key, k: int, c_in: int, c_out: int) -> dict:
    return {"w": jax.random.normal(key, (k, k, c_in, c_out)) / math.sqrt(k * k * c_in), "b": jnp.zeros(c_out)}


def _mlp(params: list, h: jax.Array) -> jax.Array:
    for i, layer in enumerate(params):
        h = h @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            h = jax.nn.gelu(h)
    return h


def mlp_vae_init(key) -> dict:
    """784-512-256-64 encoder (mean, log-variance of 32 latents), 32-256-512-784 decoder."""
    keys = iter(jax.random.split(key, 6))
    enc = [_dense(next(keys), a, b) for a, b in [(784, 512), (512, 256), (256, 2 * LATENT)]]
    dec = [_dense(next(keys), a, b) for a, b in [(LATENT, 256), (256, 512), (512, 784)]]
    return {"enc": enc, "dec": dec}


def _sample(stats: jax.Array, key) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(z, mean, logvar): one reparameterised draw from the encoder's diagonal Gaussian."""
    mean, logvar = stats[:, :LATENT], stats[:, LATENT:]
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape), mean, logvar


def _conv2d(layer: dict, x: jax.Array, stride: int = 1) -> jax.Array:
    y = jax.lax.conv_general_dilated(x, layer["w"], (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + layer["b"]


def _upsample(layer: dict, x: jax.Array, method: str) -> jax.Array:
    b, h, w, _ = x.shape
    if method == "subpixel":
        y = _conv2d(layer, x)
        c = y.shape[-1] // 4
        return y.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, c)
    if method == "transposed":
        y = jax.lax.conv_transpose(x, layer["w"], (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + layer["b"]
    resize = "nearest" if method == "resize_conv" else "bilinear"
    return _conv2d(layer, jax.image.resize(x, (b, 2 * h, 2 * w, x.shape[-1]), resize))


def conv_vae_init(key, method: str) -> dict:
    """The conv_vae config: stride-2 convs 1->32->64 (28->14->7), Linear to 2x32; Linear 32->7x7x64,
    upsampling 64->64 (14) and 64->32 (28), a 3x3 head to 1 channel."""
    keys = iter(jax.random.split(key, 8))
    up_out = 4 if method == "subpixel" else 1
    return {
        "enc": [_conv(next(keys), 3, 1, 32), _conv(next(keys), 3, 32, 64)],
        "enc_head": _dense(next(keys), 7 * 7 * 64, 2 * LATENT),
        "stem": _dense(next(keys), LATENT, 7 * 7 * 64),
        "up": [_conv(next(keys), 3, 64, 64 * up_out), _conv(next(keys), 3, 64, 32 * up_out)],
        "head": _conv(next(keys), 3, 32, 1),
    }


def jax_twin(config: str, method: str) -> tuple[Callable, Any, int]:
    """(step, state, parameter count): `step(state, x) -> (state, loss)`, jitted, donating the state."""
    key = jax.random.PRNGKey(0)
    if config == "vae":
        params = mlp_vae_init(key)

        def forward(p, x, k):
            stats = _mlp(p["enc"], x.reshape(x.shape[0], -1))
            z, mean, logvar = _sample(stats, k)
            return _mlp(p["dec"], z).reshape(x.shape), mean, logvar
    else:
        params = conv_vae_init(key, method)

        def forward(p, x, k):
            h = x
            for layer in p["enc"]:
                h = jax.nn.gelu(_conv2d(layer, h, 2))
            stats = h.reshape(x.shape[0], -1) @ p["enc_head"]["w"] + p["enc_head"]["b"]
            z, mean, logvar = _sample(stats, k)
            h = jax.nn.gelu((z @ p["stem"]["w"] + p["stem"]["b"]).reshape(x.shape[0], 7, 7, 64))
            for layer in p["up"]:
                h = jax.nn.gelu(_upsample(layer, h, method))
            return _conv2d(p["head"], h), mean, logvar

    def neg_elbo(p, x, k):
        logits, mean, logvar = forward(p, x, k)
        recon = optax.sigmoid_binary_cross_entropy(logits, x).sum((1, 2, 3))
        kl = 0.5 * (jnp.exp(logvar) + mean**2 - 1.0 - logvar).sum(-1)
        return (recon + kl).mean()

    optimizer = optax.adam(_LR)

    @jax.jit
    def _step(state, x):
        p, opt_state, k = state
        k, sub = jax.random.split(k)
        loss, grads = jax.value_and_grad(neg_elbo)(p, x, sub)
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state, k), loss

    step = jax.jit(_step, donate_argnums=0)
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
    return step, (params, optimizer.init(params), jax.random.PRNGKey(1)), count


# --------------------------------------------------------------- PyTorch
def import_torch(venv: str | None, enabled: bool = True) -> tuple[Any, str]:
    """(torch module or None, how it was found or why not)."""
    if not enabled:
        return None, "skipped: --torch=off"
    try:
        import torch  # noqa: PLC0415
        return torch, f"torch {torch.__version__} from this interpreter"
    except ImportError:
        pass
    sites = sorted(glob.glob(os.path.join(venv or "", "lib", "python3*", "site-packages"))) if venv else []
    if not sites:
        return None, (f"skipped: torch is not installed here nor in --torch_venv={venv!r} (optional; "
                      "python3 -m venv <dir> && <dir>/bin/pip install torch)")
    sys.path.append(sites[-1])  # after this interpreter's packages, so numpy etc. stay ours
    # Idle OpenMP workers sleep instead of spinning, so they do not steal the cores of the JAX rounds.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: PLC0415
    except Exception as err:  # noqa: BLE001 - any failure to import means: no torch side
        return None, f"skipped: import torch from {sites[-1]} failed: {type(err).__name__}: {err}"
    return torch, f"torch {torch.__version__} from {sites[-1]}"


def torch_twin(torch, config: str, method: str) -> tuple[Callable, int]:
    """(step, parameter count): `step(x [B, 1, 28, 28]) -> loss tensor`, eager, Adam."""
    nn = torch.nn
    torch.manual_seed(0)
    gelu = nn.GELU(approximate="tanh")  # jax.nn.gelu's default

    if config == "vae":
        def mlp(sizes):
            layers = []
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
                layers += [nn.Linear(a, b)] + ([gelu] if i < len(sizes) - 2 else [])
            return nn.Sequential(*layers)

        encoder, decoder = mlp([784, 512, 256, 2 * LATENT]), mlp([LATENT, 256, 512, 784])
        model = nn.ModuleList([encoder, decoder])

        def forward(x):
            stats = encoder(x.flatten(1))
            mean, logvar = stats[:, :LATENT], stats[:, LATENT:]
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            return decoder(z).view_as(x), mean, logvar
    else:
        def upsample(c_in, c_out):
            if method == "subpixel":
                return nn.Sequential(nn.Conv2d(c_in, 4 * c_out, 3, padding=1), nn.PixelShuffle(2))
            if method == "transposed":
                return nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1)
            mode = "nearest" if method == "resize_conv" else "bilinear"
            return nn.Sequential(nn.Upsample(scale_factor=2, mode=mode), nn.Conv2d(c_in, c_out, 3, padding=1))

        encoder = nn.Sequential(nn.Conv2d(1, 32, 3, stride=2, padding=1), gelu,
                                nn.Conv2d(32, 64, 3, stride=2, padding=1), gelu, nn.Flatten(),
                                nn.Linear(7 * 7 * 64, 2 * LATENT))
        stem = nn.Linear(LATENT, 7 * 7 * 64)
        decoder = nn.Sequential(gelu, upsample(64, 64), gelu, upsample(64, 32), gelu, nn.Conv2d(32, 1, 3, padding=1))
        model = nn.ModuleList([encoder, stem, decoder])

        def forward(x):
            stats = encoder(x)
            mean, logvar = stats[:, :LATENT], stats[:, LATENT:]
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            return decoder(stem(z).view(-1, 64, 7, 7)), mean, logvar

    optimizer = torch.optim.Adam(model.parameters(), lr=_LR)
    bce = nn.BCEWithLogitsLoss(reduction="sum")

    def step(x):
        optimizer.zero_grad(set_to_none=True)
        logits, mean, logvar = forward(x)
        kl = 0.5 * (torch.exp(logvar) + mean**2 - 1.0 - logvar).sum()
        loss = (bce(logits, x) + kl) / x.shape[0]
        loss.backward()
        optimizer.step()
        return loss

    return step, sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------- Workshop
class _StopAt:
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step, state):
        if step >= self.step:
            trainer.request_stop("twins benchmark")


def workshop_sides(config: str, batch_size: int):
    """(trainer, state holder, parameter count, upsampling) for the config, as the train binary builds it."""
    raw = importlib.import_module(f"workshop.train.configs.{config}").get_config()
    raw.data.batch_size = batch_size
    raw.training.num_steps = 10**9  # the loops below stop themselves
    cfg = parse_config(raw)
    model = create_model(cfg.model, rngs=nnx.Rngs(0))
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
    method = getattr(getattr(model, "decoder", None), "upsampling", None)
    return make_trainer(model, cfg), count, method


def _flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))


# ------------------------------------------------------------ the rounds
def run_case(config: str, batch_size: int, *, rounds: int, seconds: float, torch_module, torch_note: str,
             min_steps: int = 3) -> dict:
    """Times every side of one case in `rounds` alternating rounds; returns the figures (see the module doc)."""
    trainer, ws_count, method = workshop_sides(config, batch_size)
    step, jax_state, jax_count = jax_twin(config, method or "subpixel")
    if jax_count != ws_count:
        raise AssertionError(f"{config}: the plain-JAX twin has {jax_count:,} parameters, Workshop's model "
                             f"{ws_count:,}: the twin no longer matches the config")
    batches = binarised_batches(batch_size, 8)
    flops = _flops(step.lower(jax_state, jnp.asarray(batches[0])).compile())

    holder: dict[str, Any] = {"jax": jax_state, "fit": trainer.init_state(), "step": trainer.init_state()}

    def run_fit(n: int) -> None:
        state = holder["fit"]
        it = ({"x": batches[i % len(batches)]} for i in range(10**9))
        state = trainer.fit(state, it, callbacks=[_StopAt(int(state.step) + n)])
        jax.block_until_ready(state)
        holder["fit"] = state

    def run_step(n: int) -> None:
        state = holder["step"]
        for i in range(n):
            state, _ = trainer.train_step(state, {"x": jnp.asarray(batches[i % len(batches)])})
        jax.block_until_ready(state)
        holder["step"] = state

    def run_jax(n: int) -> None:
        state = holder["jax"]
        for i in range(n):
            state, loss = step(state, jnp.asarray(batches[i % len(batches)]))
        jax.block_until_ready(loss)
        holder["jax"] = state

    sides: dict[str, Callable[[int], None]] = {"Trainer.fit": run_fit, "Workshop step": run_step, "plain JAX": run_jax}
    torch_count = None
    if torch_module is not None:
        t_step, torch_count = torch_twin(torch_module, config, method or "subpixel")
        t_batches = [torch_module.from_numpy(b).permute(0, 3, 1, 2).contiguous() for b in batches]

        def run_torch(n: int) -> None:
            for i in range(n):
                loss = t_step(t_batches[i % len(t_batches)])
            loss.item()

        sides["PyTorch"] = run_torch

    # Warm-up (compiles), then three timed steps per side to size its rounds.
    steps_per_round = {}
    for name, run in sides.items():
        run(2)
        start = time.perf_counter()
        run(3)
        per = max(time.perf_counter() - start, 1e-6) / 3
        steps_per_round[name] = max(min_steps, int(seconds / per))

    names = list(sides)
    per_step = {name: [] for name in names}
    cpu_per_step = {name: [] for name in names}
    loads = []
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            n = steps_per_round[name]
            wall, cpu = time.perf_counter(), time.process_time()
            sides[name](n)
            per_step[name].append((time.perf_counter() - wall) / n)
            cpu_per_step[name].append((time.process_time() - cpu) / n)
        loads.append(os.getloadavg()[0])
        print(f"  {config}:{batch_size} round {r + 1}/{rounds}: "
              + ", ".join(f"{n} {1e3 * per_step[n][-1]:.1f} ms" for n in names) + f" (load {loads[-1]:.1f})",
              flush=True)

    def ratio(a: str, b: str) -> float:  # steps/s of a over steps/s of b, median over rounds
        return float(np.median([tb / ta for ta, tb in zip(per_step[a], per_step[b])]))

    result = {
        "config": config, "batch_size": batch_size, "upsampling": method, "parameters": ws_count,
        "twin_parameters": {"plain JAX": jax_count, "PyTorch": torch_count},
        "flops_per_step": flops, "rounds": rounds, "steps_per_round": steps_per_round,
        "load_average": {"min": min(loads), "median": float(np.median(loads)), "max": max(loads)},
        "seconds_per_step": {n: float(np.median(v)) for n, v in per_step.items()},
        "cpu_seconds_per_step": {n: float(np.median(v)) for n, v in cpu_per_step.items()},
        "gflops_per_second": {n: flops / float(np.median(v)) / 1e9 for n, v in per_step.items()},
        "ratios": {"Trainer.fit / plain JAX": ratio("Trainer.fit", "plain JAX"),
                   "Workshop step / plain JAX": ratio("Workshop step", "plain JAX")},
        "torch": torch_note,
    }
    if "PyTorch" in sides:
        result["ratios"]["Trainer.fit / PyTorch"] = ratio("Trainer.fit", "PyTorch")
        result["ratios"]["plain JAX / PyTorch"] = ratio("plain JAX", "PyTorch")
    return result


def format_markdown(results: list[dict]) -> str:
    lines = ["| Case | upsampling | Trainer.fit ms/step | Workshop step ms/step | plain JAX ms/step | PyTorch ms/step "
             "| Trainer.fit / plain JAX | Workshop step / plain JAX | Trainer.fit / PyTorch | GFLOP/step "
             "| GFLOP/s (fit, JAX, torch) | load |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        s, q, g = r["seconds_per_step"], r["ratios"], r["gflops_per_second"]
        ms = lambda name: f"{1e3 * s[name]:.2f}" if name in s else "skipped"  # noqa: E731
        torch_ratio = f"{q['Trainer.fit / PyTorch']:.3f}" if "Trainer.fit / PyTorch" in q else "-"
        gflops = ", ".join(f"{g[n]:.1f}" if n in g else "-" for n in ("Trainer.fit", "plain JAX", "PyTorch"))
        load = r["load_average"]
        lines.append(
            f"| `{r['config']}` batch {r['batch_size']} | {r['upsampling'] or '-'} | {ms('Trainer.fit')} "
            f"| {ms('Workshop step')} | {ms('plain JAX')} | {ms('PyTorch')} "
            f"| {q['Trainer.fit / plain JAX']:.3f} | {q['Workshop step / plain JAX']:.3f} | {torch_ratio} "
            f"| {r['flops_per_step'] / 1e9:.3f} | {gflops} | {load['min']:.1f}-{load['max']:.1f} |")
    return "\n".join(lines)


def parse_cases(cases: list[str]) -> list[tuple[str, int]]:
    out = []
    for case in cases:
        config, _, batch = case.partition(":")
        if config not in ("vae", "conv_vae") or not batch.isdigit():
            raise app.UsageError(f"--cases entry {case!r}: expected vae:<batch> or conv_vae:<batch>")
        out.append((config, int(batch)))
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cases = parse_cases(_CASES.value)
    torch_module, torch_note = import_torch(_TORCH_VENV.value, enabled=_TORCH.value == "auto")
    if torch_module is not None:
        torch_module.set_num_threads(os.cpu_count() or 1)
    print(f"PyTorch side: {torch_note}", flush=True)
    results = [run_case(c, b, rounds=_ROUNDS.value, seconds=_SECONDS.value, torch_module=torch_module,
                        torch_note=torch_note, min_steps=_MIN_STEPS.value) for c, b in cases]
    print(format_markdown(results))
    report = {"jax_version": jax.__version__, "cpu_count": os.cpu_count(), "torch": torch_note, "results": results}
    if _OUTPUT.value:
        write_report(_OUTPUT.value, report)


if __name__ == "__main__":
    app.run(main)
