"""Shared building blocks of the model families (one small module each).

Every layer reads `workshop.core.device_manager.get_precision_policy()` when it
is built, so `configure_for_generative_models(enable_mixed_precision=True)`
makes them compute in bfloat16 with float32 parameters.
"""

from workshop.models.layers.attention import SpatialSelfAttention as SpatialSelfAttention
from workshop.models.layers.attention import fused_attention as fused_attention
from workshop.models.layers.attention import group_norm_groups as group_norm_groups
from workshop.models.layers.backbone import BACKBONES as BACKBONES
from workshop.models.layers.backbone import resolve_backbone as resolve_backbone
from workshop.models.layers.compiled_sampling import compiled_sampling as compiled_sampling
from workshop.models.layers.conv import ConvDecoder as ConvDecoder
from workshop.models.layers.conv import ConvEncoder as ConvEncoder
from workshop.models.layers.conv import UPSAMPLINGS as UPSAMPLINGS
from workshop.models.layers.conv import Upsample as Upsample
from workshop.models.layers.conv import Upsampling as Upsampling
from workshop.models.layers.conv import depth_to_space as depth_to_space
from workshop.models.layers.conv import downsampled_sizes as downsampled_sizes
from workshop.models.layers.embedding import LabelEmbedding as LabelEmbedding
from workshop.models.layers.embedding import class_labels as class_labels
from workshop.models.layers.embedding import validate_labels as validate_labels
from workshop.models.layers.mlp import MLP as MLP
from workshop.models.layers.timestep_embedding import TimestepEmbedding as TimestepEmbedding
from workshop.models.layers.timestep_embedding import sinusoidal_embedding as sinusoidal_embedding

__all__ = [
    "BACKBONES",
    "ConvDecoder",
    "ConvEncoder",
    "LabelEmbedding",
    "MLP",
    "SpatialSelfAttention",
    "TimestepEmbedding",
    "UPSAMPLINGS",
    "Upsample",
    "Upsampling",
    "class_labels",
    "compiled_sampling",
    "depth_to_space",
    "downsampled_sizes",
    "fused_attention",
    "group_norm_groups",
    "resolve_backbone",
    "sinusoidal_embedding",
    "validate_labels",
]
