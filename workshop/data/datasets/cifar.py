"""CIFAR-10 and CIFAR-100 read from their official python or binary batches.

Krizhevsky (2009), "Learning Multiple Layers of Features from Tiny Images"
(tech. report, U. Toronto; https://www.cs.toronto.edu/~kriz/cifar.html).
32x32 RGB images, 50000 for training and 10000 for test; CIFAR-10 has 10
classes, CIFAR-100 100 fine classes grouped into 20 coarse ones. The two
official layouts, as unpacked from the tarballs:

    cifar-10-batches-py/   data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-10-batches-bin/  data_batch_1.bin .. data_batch_5.bin, test_batch.bin,
                           batches.meta.txt
    cifar-100-python/      train, test, meta
    cifar-100-binary/      train.bin, test.bin, fine_label_names.txt,
                           coarse_label_names.txt

A python batch is a Python 2 pickle of a dict with byte-string keys: `data`,
uint8 `[n, 3072]` (1024 red, then green, then blue values of a row-major 32x32
image), and `labels` (CIFAR-10) or `fine_labels` / `coarse_labels` (CIFAR-100),
lists of ints. A binary record is `<label byte>` (CIFAR-10) or `<coarse byte>
<fine byte>` (CIFAR-100) followed by the same 3072 bytes.

Pickles can run arbitrary code when loaded, so `load_cifar_pickle` uses an
unpickler that admits only the globals these files contain and refuses
anything else: numpy's array reconstructor, `numpy.ndarray` and `numpy.dtype`
(the official files, and protocols 2-4 from Python 3), numpy's `_frombuffer`
(protocol 5), and, for byte strings written by Python 3 at protocol 2,
`_codecs.encode` restricted to latin-1 text and `bytes()` restricted to no
arguments. Keys written as `str` are read as the same `bytes`. Labels must be
integers in range as stored: they are checked before the cast to int32.
"""

from __future__ import annotations

import os
import pathlib
import pickle

import numpy as np

from workshop.data.datasets.labelled_images import LabelledImages
from workshop.data.idx import DatasetFormatError

__all__ = [
    "CIFAR100Dataset",
    "CIFAR10Dataset",
    "CIFAR10_CLASS_NAMES",
    "RestrictedUnpickler",
    "load_cifar_pickle",
]

CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_IMAGE_BYTES = 32 * 32 * 3
_COARSE_CLASSES = 20



def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """`_codecs.encode` as Python 3 pickles bytes at protocol 2: latin-1 text only.

    The real `_codecs.encode` looks up any codec by name; only the one call
    `pickle` writes, `encode(<str>, "latin1")`, is admitted.
    """
    if type(text) is not str or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError(
            f"_codecs.encode is allowed only as encode(<str>, 'latin1'), the form pickle writes for bytes; "
            f"found encode({type(text).__name__}, {encoding!r})"
        )
    return text.encode("latin-1")


def _empty_bytes(*args):
    """`bytes()` as Python 3 pickles `b""` at protocol 2; any argument is refused."""
    if args:
        raise pickle.UnpicklingError(f"bytes is allowed only with no arguments (b''), found {len(args)}")
    return b""


# (module, name) -> object: everything a CIFAR pickle may name. numpy 2 moved
# `numpy.core` to `numpy._core`; files re-saved by it name the new module.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,  # pylint: disable=protected-access
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,  # pylint: disable=protected-access
    # Protocol 5 rebuilds an array from its raw buffer: `_frombuffer(buf, dtype, shape, order)`.
    ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,  # pylint: disable=protected-access
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,  # pylint: disable=protected-access
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array globals; others raise.

    Dicts, lists, tuples, numbers and strings need no globals, so a CIFAR batch
    loads; a pickle naming e.g. `os.system` or `builtins.eval` is refused before
    anything is called.
    """

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a CIFAR batch "
                f"(allowed: {', '.join(sorted('.'.join(k) for k in _ALLOWED_GLOBALS))})"
            ) from None


def load_cifar_pickle(path: str | os.PathLike) -> dict:
    """Loads one CIFAR python batch without executing code from it.

    Args:
      path: a file such as `cifar-10-batches-py/data_batch_1`.

    Returns:
      The batch dict; keys are bytes, as Python 2 wrote them (`b"data"`, ...);
      `str` keys written by Python 3 scripts are encoded to the same bytes.

    Raises:
      FileNotFoundError: no such file.
      DatasetFormatError: truncated, corrupt, or naming a disallowed global;
        the message names the file and the expected format.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR python batch not found: {path}")
    expected = "expected a CIFAR python batch (a Python 2 pickle of a dict with b'data' and labels)"
    try:
        with open(path, "rb") as f:
            batch = RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DatasetFormatError(f"{path}: {expected}; refused or corrupt: {e}") from e
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise DatasetFormatError(f"{path}: {expected}; the pickle is truncated or corrupt ({e!r})") from e
    if not isinstance(batch, dict):
        raise DatasetFormatError(f"{path}: {expected}; found a {type(batch).__name__}")
    return {k.encode("utf-8") if isinstance(k, str) else k: v for k, v in batch.items()}


def _integer_array(values, path: pathlib.Path, field: str) -> np.ndarray:
    """A list or array of integers -> int64 `[...]`, refusing floats, bools and ints beyond int64."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as e:
        raise DatasetFormatError(f"{path}: expected {field} as a list or array of integers ({e})") from e
    if array.dtype == object and array.size and all(type(v) is int for v in array.flat):
        # Python ints beyond int64: certainly out of range; keep one to name it.
        return array
    if array.size and (array.dtype.kind not in "iu"):
        raise DatasetFormatError(f"{path}: expected {field} as integers, found dtype {array.dtype}")
    return array


def _check_labels(values, num_classes: int, path: pathlib.Path, field: str) -> np.ndarray:
    """Checks labels on their stored values (before any cast) and returns int32 `[N]`."""
    labels = _integer_array(values, path, field)
    if labels.size:
        low, high = min(labels.flat), max(labels.flat)
        if not 0 <= low <= high < num_classes:
            raise DatasetFormatError(f"{path}: expected {field} in 0..{num_classes - 1}, found {low}..{high}")
    return labels.astype(np.int32)


def _to_images(data, path: pathlib.Path) -> np.ndarray:
    """uint8 `[n, 3072]` channel-planar rows -> uint8 `[n, 32, 32, 3]`.

    Nested lists or wider integer arrays are accepted when every value is a
    byte (0..255), as scripts that rebuild batches from lists write them.
    """
    data = np.asarray(data) if isinstance(data, np.ndarray) else _integer_array(data, path, "b'data'")
    if data.ndim != 2 or data.shape[1] != _IMAGE_BYTES or data.dtype.kind not in "iu":
        raise DatasetFormatError(
            f"{path}: expected b'data' uint8 [N, {_IMAGE_BYTES}], found {data.dtype} {list(data.shape)}"
        )
    if data.dtype != np.uint8:
        if data.size and not 0 <= data.min() <= data.max() <= 255:
            raise DatasetFormatError(f"{path}: expected b'data' pixel values in 0..255, found {data.min()}..{data.max()}")
        data = data.astype(np.uint8)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


class CIFAR10Dataset(LabelledImages):
    """CIFAR-10 from `cifar-10-batches-py` (preferred) or `cifar-10-batches-bin`.

    Attributes:
      images: uint8 `[N, 32, 32, 3]` RGB.
      labels: int32 `[N]` in `0 .. num_classes - 1`.
      class_names: one name per label.
      files: the batch files read, in order.
      skipped: `(path, problem)` of each bad file left out (`skip_bad_files=True`).
    """

    name = "cifar10"
    _folders = {"py": "cifar-10-batches-py", "bin": "cifar-10-batches-bin"}
    _splits = {
        ("py", True): [f"data_batch_{i}" for i in range(1, 6)],
        ("py", False): ["test_batch"],
        ("bin", True): [f"data_batch_{i}.bin" for i in range(1, 6)],
        ("bin", False): ["test_batch.bin"],
    }
    _label_bytes = 1
    class_names: tuple[str, ...] = CIFAR10_CLASS_NAMES

    def __init__(self, root: str | os.PathLike, train: bool = True, *, skip_bad_files: bool = False):
        """Reads the training (`train=True`, 50000) or test (10000) split.

        Args:
          root: the folder holding `cifar-10-batches-py` / `-bin`, or one of them.
          train: the training split, else the test split.
          skip_bad_files: leave out unreadable batch files (listed in `skipped`)
            instead of raising; at least one file must still be read.

        Raises:
          FileNotFoundError: no batch folder or a batch file is missing; the
            message lists the paths tried.
          DatasetFormatError: a batch is truncated or corrupt, or a pickle names
            a disallowed global (never executed).
        """
        self.train = train
        self.data_dir, self.format = self._locate(pathlib.Path(root))
        self.files = [self.data_dir / f for f in self._splits[(self.format, train)]]
        self.skipped: list[tuple[pathlib.Path, str]] = []
        images, labels = [], []
        for path in self.files:
            try:
                if not path.is_file():
                    raise FileNotFoundError(f"CIFAR batch not found: {path} (expected in the official {self.format} layout)")
                read = self._read_pickle if self.format == "py" else self._read_binary
                batch_images, batch_labels = read(path)
            except (FileNotFoundError, DatasetFormatError) as e:
                if not skip_bad_files:
                    raise
                self.skipped.append((path, str(e)))
                continue
            images.append(batch_images)
            labels.append(batch_labels)
        if not images:
            raise DatasetFormatError(f"{self.data_dir}: no readable batch; problems: {self.skipped}")
        self.images = np.concatenate(images)
        self.labels = np.concatenate(labels)  # int32, range-checked per file.

    def _locate(self, root: pathlib.Path) -> tuple[pathlib.Path, str]:
        tried = []
        for fmt in ("py", "bin"):
            for folder in (root / self._folders[fmt], root):
                first = folder / self._splits[(fmt, True)][0]
                tried.append(str(first))
                if first.is_file() or (folder / self._splits[(fmt, False)][0]).is_file():
                    return folder, fmt
        raise FileNotFoundError(
            f"{self.name} batches not found under {root}; tried:\n  " + "\n  ".join(tried)
            + f"\nTo fix: unpack the official python or binary tarball so that {root} holds "
            + " or ".join(self._folders.values())
        )

    def _pickle_labels(self, batch: dict, path: pathlib.Path) -> np.ndarray:
        if b"labels" not in batch:
            raise DatasetFormatError(f"{path}: expected a CIFAR-10 python batch with b'labels'; keys: {sorted(batch)}")
        return _check_labels(batch[b"labels"], self.num_classes, path, "b'labels'")

    def _read_pickle(self, path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
        batch = load_cifar_pickle(path)
        if b"data" not in batch:
            raise DatasetFormatError(f"{path}: expected a CIFAR python batch with b'data'; keys: {sorted(batch)}")
        images, labels = _to_images(batch[b"data"], path), self._pickle_labels(batch, path)
        if labels.shape != (len(images),):
            raise DatasetFormatError(f"{path}: {len(images)} images but labels of shape {list(labels.shape)}")
        return images, labels

    def _read_binary(self, path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
        record = self._label_bytes + _IMAGE_BYTES
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DatasetFormatError(
                f"{path}: expected a CIFAR binary batch of {record}-byte records "
                f"({self._label_bytes} label byte(s) + {_IMAGE_BYTES} pixel bytes); "
                f"{raw.size} bytes is not a positive multiple (truncated?)"
            )
        raw = raw.reshape(-1, record)
        labels = _check_labels(raw[:, self._label_bytes - 1], self.num_classes, path, "label bytes")
        return _to_images(raw[:, self._label_bytes:], path), labels

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}({split}, {len(self)} examples from {self.data_dir})"


class CIFAR100Dataset(CIFAR10Dataset):
    """CIFAR-100 from `cifar-100-python` (preferred) or `cifar-100-binary`.

    `labels` are the 100 fine classes; `coarse_labels` int32 `[N]` the 20
    superclasses. `class_names` / `coarse_class_names` come from the `meta`
    file (or the `*_label_names.txt` files) when present, else are numbers; a
    names file that is not UTF-8 or holds another count of names raises
    `DatasetFormatError` (with `skip_bad_files`, it is listed in `skipped` and
    the numbers are kept).
    """

    name = "cifar100"
    _folders = {"py": "cifar-100-python", "bin": "cifar-100-binary"}
    _splits = {
        ("py", True): ["train"],
        ("py", False): ["test"],
        ("bin", True): ["train.bin"],
        ("bin", False): ["test.bin"],
    }
    _label_bytes = 2  # <coarse><fine>: the fine label is the byte before the pixels.

    def __init__(self, root: str | os.PathLike, train: bool = True, *, skip_bad_files: bool = False):
        self.class_names = tuple(str(i) for i in range(100))
        self.coarse_class_names = tuple(str(i) for i in range(20))
        self._coarse: list[np.ndarray] = []
        super().__init__(root, train, skip_bad_files=skip_bad_files)
        self.coarse_labels = np.concatenate(self._coarse).astype(np.int32)
        del self._coarse
        self._skip_bad_files = skip_bad_files
        self._read_names()

    def _pickle_labels(self, batch: dict, path: pathlib.Path) -> np.ndarray:
        if b"fine_labels" not in batch or b"coarse_labels" not in batch:
            raise DatasetFormatError(
                f"{path}: expected a CIFAR-100 python batch with b'fine_labels' and b'coarse_labels'; "
                f"keys: {sorted(batch)}"
            )
        fine = _check_labels(batch[b"fine_labels"], self.num_classes, path, "b'fine_labels'")
        coarse = _check_labels(batch[b"coarse_labels"], _COARSE_CLASSES, path, "b'coarse_labels'")
        if coarse.shape != fine.shape:
            raise DatasetFormatError(f"{path}: {len(fine)} fine labels but coarse labels of shape {list(coarse.shape)}")
        self._coarse.append(coarse)
        return fine

    def _read_binary(self, path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
        images, fine = super()._read_binary(path)
        raw = np.fromfile(path, dtype=np.uint8).reshape(-1, self._label_bytes + _IMAGE_BYTES)
        self._coarse.append(_check_labels(raw[:, 0], _COARSE_CLASSES, path, "coarse label bytes"))
        return images, fine

    def _read_names(self) -> None:
        """Class names from `meta` or the `*_label_names.txt` files; a bad one raises, or is skipped (numbers kept)."""
        counts = {"class_names": self.num_classes, "coarse_class_names": _COARSE_CLASSES}
        sources = []  # (path, read() -> {attr: names})
        meta = self.data_dir / "meta"
        if self.format == "py" and meta.is_file():
            def read_meta(meta=meta):
                batch = load_cifar_pickle(meta)
                return {attr: batch[key] for attr, key in (("class_names", b"fine_label_names"),
                                                           ("coarse_class_names", b"coarse_label_names")) if key in batch}
            sources.append((meta, read_meta))
        for attr, filename in (("class_names", "fine_label_names.txt"), ("coarse_class_names", "coarse_label_names.txt")):
            path = self.data_dir / filename
            if self.format == "bin" and path.is_file():
                sources.append((path, lambda path=path, attr=attr: {
                    attr: [line.strip() for line in path.read_bytes().splitlines() if line.strip()]}))
        for path, read in sources:
            try:
                found = read()
                names = {}
                for attr, values in found.items():
                    if not isinstance(values, (list, tuple)) or len(values) != counts[attr]:
                        raise DatasetFormatError(f"{path}: expected {counts[attr]} {attr.replace('_', ' ')}, found {values!r:.80}")
                    names[attr] = tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)
            except UnicodeDecodeError as e:
                error = DatasetFormatError(f"{path}: expected UTF-8 class names; {e}")
            except DatasetFormatError as e:
                error = e
            else:
                for attr, values in names.items():
                    setattr(self, attr, values)
                continue
            if not self._skip_bad_files:
                raise error
            self.skipped.append((path, str(error)))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        """`{"x": uint8 [32, 32, 3], "label": int32 [], "coarse_label": int32 []}`."""
        return {**super().__getitem__(index), "coarse_label": self.coarse_labels[index]}

    def as_arrays(self) -> dict[str, np.ndarray]:
        """Adds `"coarse_label"` int32 `[N]` to CIFAR-10's arrays."""
        return {**super().as_arrays(), "coarse_label": self.coarse_labels}
