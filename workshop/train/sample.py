"""Samples from a trained workdir: `tools/bazel run //workshop/train:sample -- --workdir=runs/vae`.

Writes `<output_dir>/samples.png` (a grid) and `<output_dir>/samples.npy`
(`[num_samples, *input_shape]` floats in [0, 1]). Diffusion models take
`--sampler` (ddpm, ddim, dpm_solver_pp_2m, heun), `--steps` and
`--guidance_scale`; unset flags keep the model's defaults.
"""

import numpy as np
from absl import app, flags

from workshop.train.cli import quiet_library_logs, user_path
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    workdir = user_path(_WORKDIR.value)
    _, trainer, state, record = restore_workdir(workdir, step=_STEP.value)
    labels = None
    if _LABELS.value:
        if not trainer.conditional:
            raise app.UsageError("--labels given, but this model is not conditional")
        labels = np.resize(np.array([int(v) for v in _LABELS.value], np.int32), _NUM_SAMPLES.value)
    output_dir = user_path(_OUTPUT_DIR.value) if _OUTPUT_DIR.value else workdir / "generated"
    options = {name: flag.value for name, flag in
               (("sampler", _SAMPLER), ("steps", _STEPS), ("guidance_scale", _GUIDANCE)) if flag.value is not None}
    try:
        paths = write_samples(trainer, state, output_dir, num_samples=_NUM_SAMPLES.value, seed=_SEED.value,
                              labels=labels, options=options)
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    print(f"restored step {record['step']} from {workdir}")
    for kind, path in sorted(paths.items()):
        print(f"wrote {path}")


def run():
    """Console-script entry point (pip installs)."""
    app.run(main)


if __name__ == "__main__":
    run()
