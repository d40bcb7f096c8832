"""The autoregressive family: "pixelcnn", "transformer" and "wavenet".

Importing this package registers the three model types with
`workshop.core.registry`; `workshop.models.factories.create_autoregressive`
builds them. Each gives an exact `log_prob` in nats and a `generate` compiled
as one loop.
"""

from workshop.models.autoregressive.attention import CausalSelfAttention as CausalSelfAttention
from workshop.models.autoregressive.attention import KVCache as KVCache
from workshop.models.autoregressive.masked_conv import GatedMaskedConv2D as GatedMaskedConv2D
from workshop.models.autoregressive.masked_conv import MaskedConv2D as MaskedConv2D
from workshop.models.autoregressive.masked_conv import autoregressive_mask as autoregressive_mask
from workshop.models.autoregressive.pixelcnn import PixelCNN as PixelCNN
from workshop.models.autoregressive.pixelcnn import PixelCNNParameters as PixelCNNParameters
from workshop.models.autoregressive.quantization import mu_law_decode as mu_law_decode
from workshop.models.autoregressive.quantization import mu_law_encode as mu_law_encode
from workshop.models.autoregressive.transformer import Transformer as Transformer
from workshop.models.autoregressive.transformer import TransformerParameters as TransformerParameters
from workshop.models.autoregressive.wavenet import WaveNet as WaveNet
from workshop.models.autoregressive.wavenet import WaveNetParameters as WaveNetParameters

__all__ = [
    "CausalSelfAttention",
    "GatedMaskedConv2D",
    "KVCache",
    "MaskedConv2D",
    "PixelCNN",
    "PixelCNNParameters",
    "Transformer",
    "TransformerParameters",
    "WaveNet",
    "WaveNetParameters",
    "autoregressive_mask",
    "mu_law_decode",
    "mu_law_encode",
]
