"""InceptionV3 in Flax NNX with the FID variant's blocks: 2048-d pool3 features from local weights.

Szegedy, Vanhoucke, Ioffe, Shlens & Wojna (2016), "Rethinking the Inception
architecture for computer vision", arXiv:1512.00567, as frozen in the
TensorFlow graph that FID was defined with (Heusel et al. 2017,
arXiv:1706.08500) and ported to PyTorch by pytorch-fid
(`FIDInceptionA/C/E_1/E_2`): the average pools in the A, C and first E blocks
exclude padding from the mean, and the last E block max-pools. Images are
resized to 299x299 (bilinear), scaled to [-1, 1], grey ones repeated to three
channels; `features` returns the global average pool of the last block,
`[B, 2048]` ("pool3").

Weights are never downloaded. `load_inception(path)` reads a `.npz` holding
pytorch-fid's `state_dict` under its own names, made once where PyTorch is
installed from pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`:

    python -c "import numpy as np, torch; sd = torch.load('pt_inception-2015-12-05-6726825d.pth'); \\
        np.savez('pt_inception_fid.npz', **{k: v.numpy() for k, v in sd.items()})"

Convolution weights `[out, in, kh, kw]` become NNX kernels `[kh, kw, in, out]`;
batch-norm `weight`, `bias`, `running_mean`, `running_var` become `scale`,
`bias`, `mean`, `var` (epsilon 0.001); `fc.*` and `num_batches_tracked` are
not used.
"""

from __future__ import annotations

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.eval.feature_net import weights_fingerprint

__all__ = ["FIDInceptionV3", "inception_state_dict", "load_inception"]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nnx.Module):
    """Convolution without bias, batch norm (inference statistics), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, *, stride=1, padding=0, rngs: nnx.Rngs):
        ph, pw = _pair(padding)
        self.conv = nnx.Conv(cin, cout, _pair(kernel), strides=_pair(stride), padding=((ph, ph), (pw, pw)),
                             use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(cout, epsilon=1e-3, use_running_average=True, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.conv(x)))


def _avg_pool_3x3_same(x):  # count_include_pad=False: the border means are over real pixels only
    return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, stride, padding=0):
    return nnx.max_pool(x, (3, 3), strides=(stride, stride), padding=((padding, padding), (padding, padding)))


class InceptionA(nnx.Module):
    def __init__(self, cin, pool_features, *, rngs):
        self.branch1x1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1, rngs=rngs)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1, rngs=rngs)
        self.branch_pool = BasicConv2d(cin, pool_features, 1, rngs=rngs)

    def __call__(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool_3x3_same(x))], -1)


class InceptionB(nnx.Module):
    def __init__(self, cin, *, rngs):
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([self.branch3x3(x), b3, _max_pool(x, 2)], -1)


class InceptionC(nnx.Module):
    def __init__(self, cin, c7, *, rngs):
        self.branch1x1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1, rngs=rngs)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return jnp.concatenate([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool_3x3_same(x))], -1)


class InceptionD(nnx.Module):
    def __init__(self, cin, *, rngs):
        self.branch3x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2, rngs=rngs)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1, rngs=rngs)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return jnp.concatenate([b3, b7, _max_pool(x, 2)], -1)


class InceptionE(nnx.Module):
    """`max_pool=False`: FIDInceptionE_1 (average pool without padding); True: FIDInceptionE_2."""

    def __init__(self, cin, *, max_pool: bool, rngs):
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1, rngs=rngs)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1, rngs=rngs)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1, rngs=rngs)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = BasicConv2d(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3_1(x)
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], -1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = jnp.concatenate([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], -1)
        pooled = _max_pool(x, 1, padding=1) if self.max_pool else _avg_pool_3x3_same(x)
        return jnp.concatenate([self.branch1x1(x), b3, d, self.branch_pool(pooled)], -1)


class FIDInceptionV3(nnx.Module):
    """`features`: `[B, H, W, 1 or 3]` images in [0, 1] -> pool3 `[B, 2048]`.

    Attributes:
      feature_dim: 2048.
      name: "inception_v3_fid", reported with every score.
    """

    feature_dim = 2048
    name = "inception_v3_fid"

    def __init__(self, *, rngs: nnx.Rngs, resize_input: bool = True):
        self.resize_input = resize_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, rngs=rngs)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, rngs=rngs)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1, rngs=rngs)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1, rngs=rngs)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, rngs=rngs)
        self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
        self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
        self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
        self.Mixed_6a = InceptionB(288, rngs=rngs)
        self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
        self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
        self.Mixed_7a = InceptionD(768, rngs=rngs)
        self.Mixed_7b = InceptionE(1280, max_pool=False, rngs=rngs)
        self.Mixed_7c = InceptionE(2048, max_pool=True, rngs=rngs)

    def feature_maps(self, x: jax.Array) -> dict[str, jax.Array]:
        """The outputs of the stem and of blocks 5d, 6e and 7c (`[B, h, w, C]`), for inspection."""
        x = jnp.asarray(x, jnp.float32)
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise ValueError(f"InceptionV3 takes images [B, H, W, 1 or 3] in [0, 1], got shape {list(x.shape)}")
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        if self.resize_input:
            x = jax.image.resize(x, (x.shape[0], 299, 299, 3), method="bilinear", antialias=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(_max_pool(x, 2)))
        stem = _max_pool(x, 2)
        x5 = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(stem)))
        x6 = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x5)))))
        x7 = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x6)))
        return {"stem": stem, "mixed_5d": x5, "mixed_6e": x6, "mixed_7c": x7}

    def features(self, x: jax.Array) -> jax.Array:
        """pool3: the spatial mean of the last block, `[B, 2048]`."""
        return jnp.mean(self.feature_maps(x)["mixed_7c"], axis=(1, 2))


_BN_NAMES = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def _torch_name(path: tuple) -> str:
    *module, leaf = (str(p) for p in path)
    if module[-1] == "conv":
        return ".".join(module) + ".weight"
    return ".".join(module) + "." + {v: k for k, v in _BN_NAMES.items()}[leaf]


def inception_state_dict(model: FIDInceptionV3) -> dict[str, np.ndarray]:
    """The model's weights under pytorch-fid's names and layouts (the inverse of `load_inception`).

    For an abstract model (`nnx.eval_shape`) the values are `jax.ShapeDtypeStruct`s.
    """
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))):
        value = var.get_value()
        if isinstance(value, jax.ShapeDtypeStruct):
            shape = value.shape
            torch_shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape
            out[_torch_name(path)] = jax.ShapeDtypeStruct(torch_shape, value.dtype)
            continue
        value = np.asarray(value)
        out[_torch_name(path)] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
    return out


def load_inception(path: str | os.PathLike, *, resize_input: bool = True) -> FIDInceptionV3:
    """The FID InceptionV3 with weights from a local `.npz` of pytorch-fid's state_dict (see the module doc).

    Raises:
      FileNotFoundError: no such file (nothing is downloaded; the message says how to make one).
      ValueError: a weight is missing or has the wrong shape (names it).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Workshop never downloads weights: convert pytorch-fid's "
            "pt_inception-2015-12-05-6726825d.pth to .npz as shown in workshop/eval/inception.py"
        )
    # Abstract (shape-only) parameters: no time is spent initialising 22M weights that are replaced.
    model = nnx.eval_shape(lambda: FIDInceptionV3(rngs=nnx.Rngs(0), resize_input=resize_input))
    with np.load(path) as stored:
        arrays = {k: stored[k] for k in stored.files}
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    loaded = []
    for parts, var in nnx.to_flat_state(state):
        name = _torch_name(parts)
        if name not in arrays:
            raise ValueError(f"{path} lacks {name!r}: is it pytorch-fid's InceptionV3 state_dict?")
        value = arrays[name]
        expected = var.get_value().shape
        value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
        if value.shape != expected:
            raise ValueError(f"{path}: {name} has shape {list(arrays[name].shape)}, which does not fit {list(expected)}")
        loaded.append((parts, var.replace(jnp.asarray(value, jnp.float32))))
    nnx.update(model, nnx.from_flat_state(loaded))
    model.fingerprint = weights_fingerprint(path)
    return model
