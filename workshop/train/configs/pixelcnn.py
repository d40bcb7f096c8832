"""Gated PixelCNN on 8-bit Fashion-MNIST, small enough for a 2-core CPU.

van den Oord et al. 2016 (arXiv:1606.05328): 5 gated layers (a 7x7 type-A
first layer, then 3x3), 16 features per stack, and a mixture of 5
discretized logistics per pixel (Salimans et al. 2017, arXiv:1701.05517)
over the 256 grey levels. XLA's CPU convolutions are slow, so the network is
narrow and the run short (1500 steps of 32 images); the final test-set
likelihood is exact and covers all 10000 test images (one forward pass each).

    PYTHONPATH=. JAX_PLATFORMS=cpu python -m workshop.train.main \
        --config=workshop/train/configs/pixelcnn.py --workdir=/tmp/pixelcnn

Results: BENCHMARKS.md, "The other families".
"""

import ml_collections

from workshop.train.configs import with_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "pixelcnn"
    config.model = dict(
        model_type="pixelcnn",
        input_shape=(28, 28, 1),
        parameters=dict(num_layers=5, features=16, kernel_size=3, first_kernel_size=7, num_levels=256,
                        output="logistic_mixture", num_mixtures=5),
    )
    config.training = dict(
        num_steps=1500,
        seed=0,
        optimizer=dict(name="adam", learning_rate=3e-3, schedule="warmup_cosine", warmup_steps=100,
                       final_lr_fraction=0.05, grad_clip_norm=1000.0),
        ema_decay=0.99,
        log_every=100,
        eval_every=500,
        eval_batches=2,
        checkpoint_every=500,
        keep_checkpoints=2,
        sample_every=None,  # samples once, at the end: 784 sequential steps
        num_samples=36,
    )
    config.data = dict(dataset="fashion_mnist", batch_size=32, eval_batch_size=500, image=dict(binarize="none"))
    config.eval = dict(final_eval=True)
    return with_defaults(config)
