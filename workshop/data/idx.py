"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST.

An IDX file (LeCun et al., 1998, "Gradient-based learning applied to document
recognition"; format described at http://yann.lecun.com/exdb/mnist/) is

    magic   4 bytes: 0x00 0x00 <dtype code> <ndim>
    dims    ndim big-endian uint32 values
    data    prod(dims) values of the dtype, big-endian, row-major

with dtype codes 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32
and 0x0E float64. Files are often gzipped; a path ending in `.gz` is read and
written through gzip.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

__all__ = ["DatasetFormatError", "IDX_DTYPES", "read_idx", "write_idx"]

# dtype code -> big-endian numpy dtype of the data.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_BY_KIND = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}


class DatasetFormatError(ValueError):
    """A data file exists but does not hold what its format promises."""


def _format_error(path: str | os.PathLike, problem: str) -> DatasetFormatError:
    return DatasetFormatError(
        f"{os.fspath(path)}: expected an IDX file (MNIST format): {problem}"
    )


def _read_bytes(path: str | os.PathLike) -> bytes:
    if not os.path.exists(path):
        raise FileNotFoundError(f"IDX file not found: {os.fspath(path)}")
    if not os.fspath(path).endswith(".gz"):
        with open(path, "rb") as f:
            return f.read()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except EOFError as e:  # The stream stops before gzip's end marker.
        raise _format_error(path, f"the gzip stream is truncated ({e})") from e
    except (gzip.BadGzipFile, zlib.error) as e:
        raise _format_error(path, f"the gzip stream is corrupt ({e})") from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file, gzipped (path ends in `.gz`) or raw.

    Args:
      path: the file to read.

    Returns:
      An array of shape `dims` (e.g. `[N, 28, 28]` uint8 for MNIST images,
      `[N]` uint8 for labels) in native byte order, writable.

    Raises:
      FileNotFoundError: `path` does not exist.
      DatasetFormatError: bad magic number, unknown dtype code, a truncated
        gzip stream, or a data section whose size does not match the dims.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise _format_error(path, f"file has {len(raw)} bytes, fewer than the 4-byte magic")
    if raw[0] != 0 or raw[1] != 0:
        raise _format_error(
            path, f"bad magic 0x{raw[:4].hex()}; an IDX file starts with two zero bytes"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X} {IDX_DTYPES[c].name}" for c in IDX_DTYPES)
        raise _format_error(path, f"unknown dtype code 0x{code:02X}; known: {known}")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise _format_error(
            path,
            f"header of {ndim} dims needs {header_size} bytes, file has {len(raw)}",
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(raw) - header_size
    if found != expected:
        what = "truncated" if found < expected else "trailing bytes"
        raise _format_error(
            path,
            f"dims {dims} of {dtype.name} need {expected} bytes of data, "
            f"found {found} ({what})",
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes `array` as an IDX file, gzipped if `path` ends in `.gz`.

    Args:
      path: the file to write (its folder must exist).
      array: any shape with at most 255 dims, each below 2**32; dtype uint8,
        int8, int16, int32, float32 or float64.

    Raises:
      ValueError: the dtype or shape cannot be stored in IDX.
    """
    array = np.asarray(array)
    code = _CODE_BY_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        known = ", ".join(dt.name for dt in IDX_DTYPES.values())
        raise ValueError(f"IDX cannot store dtype {array.dtype}; known: {known}")
    if array.ndim > 255 or any(d >= 2**32 for d in array.shape):
        raise ValueError(f"IDX cannot store shape {array.shape} (at most 255 dims < 2**32)")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + np.ascontiguousarray(array, IDX_DTYPES[code]).tobytes()
    if os.fspath(path).endswith(".gz"):
        # mtime=0: the same array gives the same bytes, whenever it is written.
        with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
            gz.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)
