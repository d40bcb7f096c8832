"""Samples from a trained workdir: `tools/bazel run //workshop/train:sample -- --workdir=runs/vae`.

Writes `<output_dir>/samples.png` (a grid) and `<output_dir>/samples.npy`
(`[num_samples, *input_shape]` floats in [0, 1]). Diffusion models take
`--sampler` (ddpm, ddim, dpm_solver_pp_2m, heun), `--steps` and
`--guidance_scale`; unset flags keep the model's defaults. Super-resolution
models take `--low_res=images.npy` (`[B, H/f, W/f, C]` in [0, 1]; one sample per
image) or `--test_images=N` (the dataset's first N test images, averaged down),
and `--consistency`; they also write `super_resolution.png` (input | sample
| original). Autoregressive models take `--temperature`,
`--top_k` and `--top_p`, and continue a prompt: `--prompt="Once upon"` for
models of text (encoded with the run's tokenizer), or `--prompt_file=start.npy`
(audio: `[P]` or `[num_samples, P]` codes or waveform samples; images: the top
rows `[R, W, C]` or `[num_samples, R, W, C]` in [0, 1]). `--quality` scores image samples of Fashion-MNIST
models (FID, KID, PRDC; `quality.json`). Models of text also write the decoded text to
`samples.txt`, models of audio one WAV file per sample (`sample_000.wav`, ...;
see `workshop.train.sample_writers`).
"""

import json
import pathlib
import time

import jax.numpy as jnp
import numpy as np
from absl import app, flags

from workshop.core.protocols import SuperResolutionModel
from workshop.data.sources import encode_text_prompt
from workshop.eval.quality import sample_quality
from workshop.models.diffusion import average_pool
from workshop.train import cli, experiment
from workshop.train.cli import quiet_library_logs, user_path
from workshop.train.image_grid import save_labelled_panels
from workshop.train.sample_writers import write_decoded_samples
from workshop.train.sampling import restore_workdir, write_samples

_WORKDIR = flags.DEFINE_string("workdir", "runs/vae", "A workdir written by //workshop/train:train.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 64, "How many samples.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (sample i depends only on the seed and i).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write (default: <workdir>/generated).")
_LABELS = flags.DEFINE_list("labels", None, "Class labels for conditional models, e.g. 0,1,2 (cycled).")
_SAMPLER = flags.DEFINE_string("sampler", None, "Sampler of models that have several (diffusion: ddpm, ddim, "
                               "dpm_solver_pp_2m, heun). Default: the model's.")
_STEPS = flags.DEFINE_integer("steps", None, "Sampling steps (diffusion). Default: the model's.", lower_bound=1)
_GUIDANCE = flags.DEFINE_float("guidance_scale", None, "Classifier-free guidance scale of class-conditional "
                               "diffusion models (1 = none). Default: the model's.")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Softmax temperature of autoregressive models. Default: 1.")
_TOP_K = flags.DEFINE_integer("top_k", None, "Autoregressive models: sample among the k likeliest values.",
                              lower_bound=1)
_TOP_P = flags.DEFINE_float("top_p", None, "Autoregressive models: nucleus sampling with this mass.")
_PROMPT = flags.DEFINE_string("prompt", None, "Autoregressive models of text: continue this text (encoded with "
                              "the run's tokenizer); the samples start with it.")
_PROMPT_FILE = flags.DEFINE_string("prompt_file", None, "Autoregressive models: a .npy prefix that every sample "
                                   "continues (or one per sample): audio [P] or [num_samples, P] (codes or waveform "
                                   "in [-1, 1]); images the top rows [R, W, C] or [num_samples, R, W, C] in [0, 1].")
_LOW_RES = flags.DEFINE_string("low_res", None, "Super-resolution models: a .npy file of [B, H/f, W/f, C] "
                               "low-resolution images in [0, 1]; one sample per image (--num_samples is ignored).")
_COMPARE = flags.DEFINE_list("compare", None, "Diffusion: sampler:steps pairs, e.g. ddpm:1000,ddim:50,"
                              "dpm_solver_pp_2m:20; draws each from the same seed into <output_dir>/<sampler>_<steps>/ "
                              "and writes <output_dir>/samplers.png, one labelled panel per pair.")
_TEST_IMAGES = flags.DEFINE_integer("test_images", None, "Super-resolution models: instead of --low_res, the first "
                                    "N test images of the workdir's dataset averaged to low resolution; "
                                    "super_resolution.png then shows the originals too.", lower_bound=1)
_QUALITY = flags.DEFINE_bool("quality", False, "Image models of Fashion-MNIST: also score the samples against the "
                              "test set (FID, KID, precision/recall/density/coverage on the features of the "
                              "Fashion-MNIST classifier, workshop.eval.sample_quality) into quality.json. "
                              "Use at least 2000 samples for comparable FIDs.")
_CONSISTENCY = flags.DEFINE_bool("consistency", False, "Super-resolution models: make each result's f x f block "
                                 "means equal its low-resolution image exactly.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    workdir = user_path(_WORKDIR.value)
    cfg, trainer, state, record = restore_workdir(workdir, step=_STEP.value)
    labels = None
    if _LABELS.value:
        if not trainer.conditional:
            raise app.UsageError("--labels given, but this model is not conditional")
        labels = np.resize(np.array([int(v) for v in _LABELS.value], np.int32), _NUM_SAMPLES.value)
    output_dir = user_path(_OUTPUT_DIR.value) if _OUTPUT_DIR.value else workdir / "generated"
    options = {name: flag.value for name, flag in
               (("sampler", _SAMPLER), ("steps", _STEPS), ("guidance_scale", _GUIDANCE), ("temperature", _TEMPERATURE),
                ("top_k", _TOP_K), ("top_p", _TOP_P)) if flag.value is not None}
    if _PROMPT.value is not None or _PROMPT_FILE.value:
        options["prompt"] = _prompt(cfg)
    num_samples = _NUM_SAMPLES.value
    originals = None
    if _LOW_RES.value and _TEST_IMAGES.value:
        raise app.UsageError("give --low_res or --test_images, not both")
    if _LOW_RES.value or _TEST_IMAGES.value:
        flag = "--low_res" if _LOW_RES.value else "--test_images"
        model = trainer.model_from_state(state)
        if not isinstance(model, SuperResolutionModel):
            raise app.UsageError(f"{flag} given, but model_type {model.model_type!r} of {workdir} is not a "
                                 "super-resolution model")
        if _LOW_RES.value:
            path = user_path(_LOW_RES.value)
            try:
                low_res = np.load(path)
            except (OSError, ValueError) as err:
                raise app.UsageError(f"--low_res={_LOW_RES.value}: cannot read a .npy array ({err})") from None
        else:
            originals = _test_images(cfg, _TEST_IMAGES.value)
            low_res = np.asarray(average_pool(jnp.asarray(originals), model.downsample_factor))
        try:
            options["low_res"] = np.asarray(model.check_low_res(low_res))
        except ValueError as err:
            raise app.UsageError(f"{flag}={_LOW_RES.value or _TEST_IMAGES.value}: {err}") from None
        num_samples = len(low_res)
        if labels is not None:
            labels = np.resize(labels, num_samples)
    if _CONSISTENCY.value:
        options["consistency"] = True
    if _COMPARE.value:
        _compare(trainer, state, output_dir, num_samples, labels, options)
        print(f"restored step {record['step']} from {workdir}")
        return
    try:
        paths = write_samples(trainer, state, output_dir, num_samples=num_samples, seed=_SEED.value,
                              labels=labels, options=options)
        paths.update(write_decoded_samples(cfg.data, np.load(paths["npy"]), output_dir))
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    if "low_res" in options:  # each input, enlarged to the output's size, beside its sample
        samples = np.load(paths["npy"])
        factor = samples.shape[1] // options["low_res"].shape[1]
        shown = np.repeat(np.repeat(options["low_res"], factor, axis=1), factor, axis=2)
        panels = [(f"input ({factor}x enlarged)", shown), ("samples", samples)]
        if originals is not None:
            panels.append(("original", originals))
        path = save_labelled_panels(panels, output_dir / "super_resolution.png")
        print(f"wrote {path}")
    if _QUALITY.value:
        paths["quality"] = _score(cfg, np.load(paths["npy"]), output_dir)
    print(f"restored step {record['step']} from {workdir}")
    for kind, path in sorted(paths.items()):
        print(f"wrote {path}")


def _prompt(cfg) -> np.ndarray:
    """The prefix of --prompt (text, encoded with the run's tokenizer) or --prompt_file (a .npy array)."""
    if _PROMPT.value is not None and _PROMPT_FILE.value:
        raise app.UsageError("give --prompt (text) or --prompt_file (.npy), not both")
    if _PROMPT.value is not None:
        try:
            return encode_text_prompt(cfg.data, _PROMPT.value)
        except (ValueError, FileNotFoundError) as err:
            raise app.UsageError(f"--prompt: {err}") from None
    try:
        return np.load(user_path(_PROMPT_FILE.value))
    except (OSError, ValueError) as err:
        raise app.UsageError(f"--prompt_file={_PROMPT_FILE.value}: cannot read a .npy array ({err})") from None


def _score(cfg, samples: np.ndarray, output_dir) -> pathlib.Path:
    """FID/KID/PRDC of `samples` against the test set of the workdir's dataset, written to quality.json."""
    try:
        scores = sample_quality(samples, dataset=cfg.data.dataset, num_samples=None, data_dir=cfg.data.data_dir,
                                seed=_SEED.value)
    except (ValueError, FileNotFoundError) as err:  # FeatureNetworkMissingError names the command that makes it
        raise app.UsageError(f"--quality: {err}") from None
    path = output_dir / "quality.json"
    path.write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n")
    print(f"FID {scores['fid']:.2f}, KID {scores['kid']:.4f} +- {scores['kid_std']:.4f}, precision "
          f"{scores['precision']:.3f}, recall {scores['recall']:.3f}, density {scores['density']:.3f}, coverage "
          f"{scores['coverage']:.3f} ({scores['num_samples']} samples vs {scores['num_reference']} test images)")
    return path


def _test_images(cfg, n: int) -> np.ndarray:
    """The first n test images of the workdir's dataset, `[n, H, W, C]` floats in [0, 1]."""
    images = np.asarray(experiment.data_source(cfg.data, train=False)["x"][:n])
    if len(images) < n:
        raise app.UsageError(f"--test_images={n}, but the test split of {cfg.data.dataset!r} has {len(images)} images")
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def _compare(trainer, state, output_dir, num_samples, labels, options) -> None:
    """Same seed through each sampler:steps of --compare; one labelled panel each in samplers.png."""
    panels = []
    for item in _COMPARE.value:
        name, _, steps = item.partition(":")
        if not steps.isdigit():
            raise app.UsageError(f"--compare entry {item!r} must be sampler:steps, e.g. ddim:50")
        start = time.perf_counter()
        try:
            paths = write_samples(trainer, state, output_dir / f"{name}_{steps}", num_samples=num_samples,
                                  seed=_SEED.value, labels=labels, options=dict(options, sampler=name, steps=int(steps)))
        except ValueError as err:
            raise app.UsageError(str(err)) from None
        print(f"{name}, {steps} steps: {time.perf_counter() - start:.1f} s (compile included); wrote {paths['npy']}")
        panels.append((f"{name}, {steps} steps", np.load(paths["npy"])))
    save_labelled_panels(panels, output_dir / "samplers.png")
    print(f"wrote {output_dir / 'samplers.png'}")


def run():
    """Console-script entry point (pip installs)."""
    cli.run(main, name="sample")


if __name__ == "__main__":
    run()
