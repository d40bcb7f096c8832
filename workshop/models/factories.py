"""Model factories: build any registered model from a `ModelConfiguration`.

`create_model` looks `config.model_type` up in the registry; the per-family
functions (`create_vae`, `create_gan`, ...) do the same but refuse a
configuration of another family, so a typo cannot build the wrong kind of model.
Importing this module registers every built-in family.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from workshop.core import registry
from workshop.core.configuration import ModelConfiguration

# Built-in families register themselves on import.
import workshop.models.autoregressive  # noqa: F401  pylint: disable=unused-import
import workshop.models.diffusion  # noqa: F401  pylint: disable=unused-import
import workshop.models.ebm  # noqa: F401  pylint: disable=unused-import
import workshop.models.flow  # noqa: F401  pylint: disable=unused-import
import workshop.models.gan  # noqa: F401  pylint: disable=unused-import
import workshop.models.latent  # noqa: F401  pylint: disable=unused-import
import workshop.models.vae  # noqa: F401  pylint: disable=unused-import

__all__ = [
    "create_autoregressive",
    "create_diffusion",
    "create_ebm",
    "create_flow",
    "create_gan",
    "create_model",
    "create_vae",
]


def _as_configuration(config: ModelConfiguration | dict[str, Any]) -> ModelConfiguration:
    if isinstance(config, ModelConfiguration):
        return config
    if isinstance(config, dict):
        return ModelConfiguration.model_validate(config)
    raise TypeError(f"config must be a ModelConfiguration or a dict, got {type(config).__name__}")


def create_model(config: ModelConfiguration | dict[str, Any], *, rngs: nnx.Rngs) -> nnx.Module:
    """Builds the model registered under `config.model_type`.

    Raises:
      ValueError: the model type is unknown (the message lists the known ones)
        or its `parameters` do not fit the model's schema.
    """
    config = _as_configuration(config)
    spec = registry.get_model_spec(config.model_type)
    spec.parse_parameters(config.parameters)
    return spec.builder(config, rngs=rngs)


def _family_factory(family: str):
    def create(config: ModelConfiguration | dict[str, Any], *, rngs: nnx.Rngs) -> nnx.Module:
        config = _as_configuration(config)
        if not registry.is_registered(config.model_type):
            known = ", ".join(registry.registered_model_types(family)) or "none yet"
            raise ValueError(
                f"model_type {config.model_type!r} is unknown or not built yet; "
                f"known {family} models: {known}"
            )
        spec = registry.get_model_spec(config.model_type)
        if spec.family != family:
            raise ValueError(
                f"create_{family} got model_type {config.model_type!r}, which is a {spec.family} "
                f"model; use create_{spec.family} or create_model. Known {family} models: "
                f"{', '.join(registry.registered_model_types(family)) or 'none yet'}"
            )
        return create_model(config, rngs=rngs)

    create.__name__ = create.__qualname__ = f"create_{family}"
    create.__doc__ = f"Builds a {family} model; refuses a configuration of another family."
    return create


create_vae = _family_factory("vae")
create_gan = _family_factory("gan")
create_diffusion = _family_factory("diffusion")
create_flow = _family_factory("flow")
create_ebm = _family_factory("ebm")
create_autoregressive = _family_factory("autoregressive")
