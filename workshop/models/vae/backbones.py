"""Shared set-up of the VAE family: typed parameters and the backbone choice.

`backbone_type` "mlp" flattens the input; "conv" uses the stride-2
convolutional encoder/decoder of `workshop.models.layers.conv`. None picks
"conv" for `(H, W, C)` inputs and "mlp" for anything else.
"""

from __future__ import annotations

import pydantic

from workshop.core import registry
from workshop.core.configuration import ModelConfiguration

__all__ = ["BACKBONES", "resolve_backbone", "typed_parameters"]

BACKBONES = ("mlp", "conv")


def typed_parameters(config: ModelConfiguration, schema: type[pydantic.BaseModel]) -> pydantic.BaseModel:
    """`config.parameters` validated by the registered schema (or `schema`).

    The registered schema of `config.model_type` carries that type's defaults
    (beta 4 for "beta-vae"); a model class built directly from a config of an
    unregistered type falls back to its own `schema`.

    Raises:
      ValueError: unknown keys (listing the valid ones) or bad values.
    """
    if registry.is_registered(config.model_type):
        parsed = registry.validate_parameters(config.model_type, config.parameters)
        if isinstance(parsed, schema):
            return parsed
    try:
        return schema.model_validate(config.parameters)
    except pydantic.ValidationError as err:
        valid = ", ".join(sorted(schema.model_fields))
        raise ValueError(f"invalid parameters for {config.model_type!r}: {err}. Valid keys: {valid}") from None


def resolve_backbone(config: ModelConfiguration) -> str:
    """"mlp" or "conv" for this configuration.

    Raises:
      ValueError: an unknown backbone, or "conv" for a non-image input.
    """
    shape = tuple(config.input_shape)
    backbone = config.backbone_type
    if backbone is None:
        return "conv" if len(shape) == 3 else "mlp"
    backbone = backbone.strip().lower()
    if backbone not in BACKBONES:
        raise ValueError(
            f"backbone_type {config.backbone_type!r} is not available for model_type {config.model_type!r}; "
            f"known: {', '.join(BACKBONES)} (or None to pick from input_shape)"
        )
    if backbone == "conv" and len(shape) != 3:
        raise ValueError(f"backbone_type 'conv' needs an (H, W, C) input_shape, got {shape}; use 'mlp'")
    return backbone
