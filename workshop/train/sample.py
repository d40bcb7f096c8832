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

import contextlib

import numpy as np
from absl import app, flags

from workshop.train import cli, sample_requests
from workshop.train.cli import quiet_library_logs, user_path
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
    output_dir = user_path(_OUTPUT_DIR.value) if _OUTPUT_DIR.value else workdir / "generated"
    options = {name: flag.value for name, flag in
               (("sampler", _SAMPLER), ("steps", _STEPS), ("guidance_scale", _GUIDANCE), ("temperature", _TEMPERATURE),
                ("top_k", _TOP_K), ("top_p", _TOP_P)) if flag.value is not None}
    if _PROMPT.value is not None and _PROMPT_FILE.value:
        raise app.UsageError("give --prompt (text) or --prompt_file (.npy), not both")
    if _PROMPT.value is not None:
        with _usage_errors("--prompt"):
            options["prompt"] = sample_requests.read_prompt(cfg.data, text=_PROMPT.value)
    elif _PROMPT_FILE.value:
        with _usage_errors(f"--prompt_file={_PROMPT_FILE.value}"):
            options["prompt"] = sample_requests.read_prompt(cfg.data, path=user_path(_PROMPT_FILE.value))
    num_samples, low_res, originals = _NUM_SAMPLES.value, None, None
    if _LOW_RES.value and _TEST_IMAGES.value:
        raise app.UsageError("give --low_res or --test_images, not both")
    if _LOW_RES.value:
        with _usage_errors(f"--low_res={_LOW_RES.value}"):
            low_res = sample_requests.super_resolution_input(
                trainer.model_from_state(state), low_res=sample_requests.read_npy(user_path(_LOW_RES.value)))
    elif _TEST_IMAGES.value:
        originals = sample_requests.first_test_images(cfg.data, _TEST_IMAGES.value)
        if len(originals) < _TEST_IMAGES.value:
            raise app.UsageError(f"--test_images={_TEST_IMAGES.value}, but the test split of {cfg.data.dataset!r} "
                                 f"has {len(originals)} images")
        with _usage_errors(f"--test_images={_TEST_IMAGES.value}"):
            low_res = sample_requests.super_resolution_input(trainer.model_from_state(state), originals=originals)
    if low_res is not None:
        options["low_res"], num_samples = low_res, len(low_res)
    labels = None
    if _LABELS.value:
        with _usage_errors(f"--labels={','.join(_LABELS.value)}"):
            labels = sample_requests.class_labels(trainer, _LABELS.value, num_samples)
    if _CONSISTENCY.value:
        options["consistency"] = True
    if _COMPARE.value:
        with _usage_errors("--compare"):
            pairs = sample_requests.parse_sampler_steps(_COMPARE.value)
        with _usage_errors():
            runs, picture = sample_requests.compare_samplers(trainer, state, output_dir, pairs, num_samples=num_samples,
                                                             seed=_SEED.value, labels=labels, options=options)
        for run in runs:
            print(f"{run.sampler}, {run.steps} steps: {run.seconds:.1f} s (compile included); wrote {run.npy}")
        print(f"wrote {picture}")
        print(f"restored step {record['step']} from {workdir}")
        return
    with _usage_errors():
        paths = write_samples(trainer, state, output_dir, num_samples=num_samples, seed=_SEED.value,
                              labels=labels, options=options)
        paths.update(write_decoded_samples(cfg.data, np.load(paths["npy"]), output_dir))
    if low_res is not None:
        paths["super_resolution"] = sample_requests.save_super_resolution_panel(
            low_res, np.load(paths["npy"]), output_dir / "super_resolution.png", originals=originals)
    if _QUALITY.value:
        with _usage_errors("--quality"):
            paths["quality"], scores = sample_requests.score_samples(cfg.data, np.load(paths["npy"]), output_dir,
                                                                     seed=_SEED.value)
        print(sample_requests.describe_quality(scores))
    print(f"restored step {record['step']} from {workdir}")
    for _, path in sorted(paths.items()):
        print(f"wrote {path}")


@contextlib.contextmanager
def _usage_errors(flag: str | None = None):
    """Reports a library's ValueError (or missing file) as a usage error, after the flag that asked for it."""
    try:
        yield
    except (ValueError, FileNotFoundError) as err:
        raise app.UsageError(f"{flag}: {err}" if flag else str(err)) from None


def run():
    """Console-script entry point (pip installs)."""
    cli.run(main, name="sample")


if __name__ == "__main__":
    run()
