"""Reflow: a second flow matching model trained on (noise, sample) pairs of flow_matching.py's run.

Liu, Gong & Liu 2023, "Flow Straight and Fast" (arXiv:2209.03003), the
2-rectified flow: the teacher (a trained flow_matching workdir,
`parameters.teacher_workdir`) integrates its ODE from `reflow_pairs` noises
(Heun, its own steps unless `teacher_sampler`/`teacher_steps` say otherwise),
once; the pairs are cached in this run's workdir (`teacher_data.npz`, with the
teacher's checkpoint named in `teacher_data.json`). The student regresses the
velocity eps - x0 of each pair's straight line with uniform times, as in the
paper. Its paths are straighter than the teacher's, so it samples in a few
Euler steps (default 4; `sample --sampler=euler --steps=1` for one).
Network, optimiser and schedule are flow_matching.py's (`reflow.py:dit` for
its DiT variant).

    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/flow_matching.py --workdir=/tmp/fm
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.main \
        --config=workshop/train/configs/reflow.py --workdir=/tmp/reflow \
        --config.model.parameters.teacher_workdir=/tmp/fm
    PYTHONPATH=. JAX_PLATFORMS=cpu python3 -m workshop.train.sample --workdir=/tmp/reflow \
        --num_samples=16 --sampler=euler --steps=1
"""

from ml_collections import config_dict

from workshop.train.configs import flow_matching, with_defaults


def get_config(backbone: str = "unet"):
    config = flow_matching.get_config(backbone)
    config.name = "reflow" if backbone == "unet" else f"reflow_{backbone}"
    config.model.parameters.update(
        teacher_workdir="runs/flow_matching",
        reflow_pairs=20000,
        time_sampling="uniform",
        sampler="euler",
        sampling_steps=4,
        init_from_teacher=True,
    )
    # None: the teacher's own solver and steps; typed placeholders so that the command
    # line can set them, e.g. --config.model.parameters.teacher_steps=10.
    config.model.parameters.teacher_sampler = config_dict.placeholder(str)
    config.model.parameters.teacher_steps = config_dict.placeholder(int)
    return with_defaults(config)
