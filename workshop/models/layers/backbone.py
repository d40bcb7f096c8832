"""The backbone choice of families with MLP and convolutional networks (VAE, GAN).

`backbone_type` "mlp" flattens the input; "conv" uses the stride-2
convolutional encoder/decoder of `workshop.models.layers.conv`. None picks
"conv" for `(H, W, C)` inputs and "mlp" for anything else.
"""

from __future__ import annotations

from workshop.core.configuration import ModelConfiguration

__all__ = ["BACKBONES", "resolve_backbone"]

BACKBONES = ("mlp", "conv")


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
