"""Shared building blocks of the model families (one small module each).

Every layer reads `workshop.core.device_manager.get_precision_policy()` when it
is built, so `configure_for_generative_models(enable_mixed_precision=True)`
makes them compute in bfloat16 with float32 parameters.
"""

from workshop.models.layers.conv import ConvDecoder as ConvDecoder
from workshop.models.layers.conv import ConvEncoder as ConvEncoder
from workshop.models.layers.conv import downsampled_sizes as downsampled_sizes
from workshop.models.layers.embedding import LabelEmbedding as LabelEmbedding
from workshop.models.layers.embedding import validate_labels as validate_labels
from workshop.models.layers.mlp import MLP as MLP

__all__ = ["ConvDecoder", "ConvEncoder", "LabelEmbedding", "MLP", "downsampled_sizes", "validate_labels"]
