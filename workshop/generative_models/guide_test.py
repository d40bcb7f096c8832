"""Runs the user guide's snippets (reference/core-concepts.md) as written.

Each snippet is kept verbatim. The guide's snippets use `rngs` and
`ModelConfiguration` without defining them; a reader has them from the
configuration section, so they are defined here the same way.
"""

import textwrap

import jax
import jax.numpy as jnp
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import device_manager, protocols, registry

PRELUDE = """
from flax import nnx
from workshop.generative_models.core.configuration import ModelConfiguration
rngs = nnx.Rngs(0)
"""

GUIDE_SNIPPETS = {
    "vae": """
from workshop.generative_models.factories import create_vae

config = ModelConfiguration(
    model_type="vae",
    latent_dim=128,
    parameters={"beta": 1.0}  # β-VAE for disentanglement
)
model = create_vae(config, rngs=rngs)
""",
    "configuration": """
from workshop.generative_models.core.configuration import ModelConfiguration

config = ModelConfiguration(
    # Required fields
    model_type="vae",              # Type of model
    input_shape=(28, 28, 1),       # Input dimensions

    # Architecture
    latent_dim=128,                # Latent space size
    encoder_features=[64, 128],    # Encoder layer sizes
    decoder_features=[128, 64],    # Decoder layer sizes

    # Model-specific parameters
    parameters={
        "beta": 1.0,               # VAE-specific: β-VAE weight
        "kl_weight": 1.0,          # KL divergence weight
        "reconstruction_loss": "mse"  # Reconstruction loss type
    },

    # Optional metadata
    metadata={
        "experiment_id": "vae_001",
        "dataset": "mnist"
    }
)
""",
    "device": """
from workshop.generative_models.core.device_manager import get_device_manager

# Automatic device detection
manager = get_device_manager()
print(f"Using: {manager.get_device()}")  # gpu, cpu, or tpu
print(f"Device count: {manager.device_count}")

# Explicit configuration
from workshop.generative_models.core.device_manager import configure_for_generative_models, MemoryStrategy

manager = configure_for_generative_models(
    memory_strategy=MemoryStrategy.BALANCED,  # 75% GPU memory
    enable_mixed_precision=True               # BF16/FP16
)
""",
    "diffusion": """
from workshop.generative_models.factories import create_diffusion

config = ModelConfiguration(
    model_type="ddpm",
    num_timesteps=1000,
    backbone_type="dit",  # Diffusion Transformer
    parameters={"beta_schedule": "cosine"}
)
model = create_diffusion(config, rngs=rngs)
""",
    "ebm": """
from workshop.generative_models.factories import create_ebm

config = ModelConfiguration(
    model_type="ebm",
    parameters={
        "mcmc_steps": 60,
        "step_size": 0.01
    }
)
model = create_ebm(config, rngs=rngs)
""",
    "autoregressive": """
from workshop.generative_models.factories import create_autoregressive

config = ModelConfiguration(
    model_type="pixelcnn",
    parameters={"num_layers": 12}
)
model = create_autoregressive(config, rngs=rngs)
""",
    "gan": """
from workshop.generative_models.factories import create_gan

config = ModelConfiguration(
    model_type="wgan-gp",  # WGAN with gradient penalty
    latent_dim=100,
    parameters={"gp_weight": 10.0}
)
model = create_gan(config, rngs=rngs)
""",
    "flow": """
from workshop.generative_models.factories import create_flow

config = ModelConfiguration(
    model_type="glow",
    num_flows=32,
    parameters={"coupling_type": "affine"}
)
model = create_flow(config, rngs=rngs)
""",
}

BUILT_FAMILIES = ("autoregressive", "diffusion", "ebm", "flow", "gan")


def model_type_of(family: str) -> str:
    """The model_type a family's snippet builds."""
    return {"autoregressive": "pixelcnn", "diffusion": "ddpm", "ebm": "ebm", "flow": "glow", "gan": "wgan-gp"}[family]


def _run(snippet: str) -> dict:
    scope: dict = {}
    exec(compile(PRELUDE + textwrap.dedent(snippet), "<guide>", "exec"), scope)  # noqa: S102
    return scope


class GuideTest(parameterized.TestCase):
    def tearDown(self):
        device_manager.set_precision_policy(device_manager.PrecisionPolicy())
        super().tearDown()

    def test_vae_snippet_builds_a_working_model(self):
        model = _run(GUIDE_SNIPPETS["vae"])["model"]
        x = jnp.full((2, 28, 28, 1), 0.5)
        outputs = model(x, rngs=nnx.Rngs(1))
        losses = model.loss_fn({"x": x}, outputs)
        self.assertTrue(jnp.isfinite(losses["loss"]))
        self.assertEqual(model.generate(n_samples=3, rngs=nnx.Rngs(2)).shape, (3, 28, 28, 1))

    def test_configuration_snippet(self):
        config = _run(GUIDE_SNIPPETS["configuration"])["config"]
        self.assertEqual(config.parameters["reconstruction_loss"], "mse")
        self.assertEqual(config.metadata["experiment_id"], "vae_001")

    def test_device_snippet_enables_bf16_compute(self):
        manager = _run(GUIDE_SNIPPETS["device"])["manager"]
        self.assertEqual(manager.device_count, jax.device_count())
        self.assertEqual(device_manager.get_precision_policy().compute_dtype, jnp.bfloat16)

    @parameterized.parameters(*sorted(BUILT_FAMILIES))
    def test_family_snippet_builds_a_model_that_trains_and_scores(self, family):
        model = _run(GUIDE_SNIPPETS[family])["model"]
        self.assertIsInstance(model, protocols.GenerativeModel)
        self.assertEqual(registry.get_model_spec(model_type_of(family)).family, family)
        # Two Fashion-MNIST-shaped images on the 8-bit grid, the pipeline's format.
        x = jnp.round(jax.random.uniform(jax.random.PRNGKey(0), (2, 28, 28, 1)) * 255) / 255
        outputs = model(x, rngs=nnx.Rngs(1))
        losses = model.loss_fn({"x": x}, outputs)
        self.assertTrue(jnp.isfinite(losses["loss"]), f"{family}: loss {losses['loss']}")
        if isinstance(model, protocols.LikelihoodModel):
            log_p = model.log_prob(x, rngs=nnx.Rngs(2), num_samples=4)
            self.assertEqual(log_p.shape, (2,))
            self.assertTrue(jnp.isfinite(log_p).all(), f"{family}: log_prob {log_p}")

if __name__ == "__main__":
    absltest.main()
