"""Glow (Kingma & Dhariwal 2018, arXiv:1807.03039) on 8-bit Fashion-MNIST.

Two levels (squeeze to 14x14x4, 8 steps, split; squeeze to 7x7x8, 8 steps),
each step ActNorm (data-dependent initialisation on the first batch), an
LU-parameterised invertible 1x1 convolution and an affine coupling (Glow's
sigmoid scale) with a 32-channel CNN; logit preprocessing. Uniform
dequantisation; the bits/dim are of the discrete 8-bit images. Kept small
for a 2-core CPU. Results: BENCHMARKS.md, "The other families". At temperature 1
(what the sample grid uses) about half the samples are saturated noise this
early in training; the rest are garment-like blobs. Glow's authors sample at
temperature 0.7: `model.generate(..., temperature=0.7)`.

    tools/bazel run //workshop/train:train -- --config=workshop/train/configs/glow.py \\
        --workdir=runs/glow
"""

from workshop.train.configs import realnvp, with_defaults


def get_config():
    config = realnvp.get_config()
    config.name = "glow"
    config.model.model_type = "glow"
    config.model.num_flows = 8
    config.model.parameters = dict(coupling_type="affine", hidden_channels=32, num_levels=2, logit_alpha=0.05)
    return with_defaults(config)
