"""An MLP GAN on the 2-D ring of eight Gaussians, the mode-collapse test bed.

The non-saturating loss (Goodfellow et al. 2014, arXiv:1406.2661; model_type
"dcgan" names that recipe, here with MLP players) with the R1 penalty on real
data, gamma = 1 (Mescheder, Geiger & Nowozin 2018, arXiv:1801.04406), which
makes the game converge locally: d_loss settles at log 4. Three 128-unit ReLU
layers in each player, Adam with b1=0.5, b2=0.9 as in the toy set-up of
Gulrajani et al. 2017 (arXiv:1704.00028), on the ring of Metz et al. 2017
("Unrolled GANs", arXiv:1611.02163; mode std 0.04). The sample pictures in
<workdir>/samples are 2-D densities of 2000 EMA-generator samples.

WGAN-GP (model_type "wgan-gp") with the same networks and lr 1e-3 covered all
eight modes after 2000 steps for one data order but none for two others; the
paper's budget is lr 1e-4 for far longer runs.

Results: BENCHMARKS.md, "The other families".

    PYTHONPATH=. python -m workshop.train.main --config=workshop/train/configs/gan_ring.py --workdir=/tmp/gan_ring
"""

import ml_collections

from workshop.train.configs import with_defaults


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "gan_ring"
    config.model = dict(
        model_type="dcgan",
        input_shape=(2,),
        latent_dim=16,
        backbone_type="mlp",
        encoder_features=[128, 128, 128],
        decoder_features=[128, 128, 128],
        parameters=dict(r1_weight=1.0),
    )
    config.training = dict(
        num_steps=3000,
        seed=0,
        optimizer=dict(name="adam", learning_rate=1e-3, b1=0.5, b2=0.9),
        ema_decay=0.99,
        log_every=100,
        eval_every=1000,
        eval_batches=2,
        checkpoint_every=1000,
        keep_checkpoints=2,
        sample_every=1000,
        num_samples=2000,
    )
    config.data = dict(dataset="eight_gaussians", batch_size=256, eval_batch_size=500)
    config.eval = dict(final_eval=False)
    return with_defaults(config)
