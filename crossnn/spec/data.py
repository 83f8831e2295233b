"""Data sources: inline arrays, named generators and .npz / .csv files.

In a spec file the [data] table holds x and y, or `generator = "<name>"` with that generator's
parameters, or `path = "<file>"` (relative to the spec file). Every source yields x (N, *inputs)
(channels last: images are (N, H, W, C)) and y (N, *outputs) — or class indices (N,) for sparse
cross-entropy — as NumPy arrays; generators draw from the experiment's "data" random stream, so a
seed fixes the data set.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossnn.errors import DataError
from crossnn.spec.base import Array, Spec, SpecError, finite, positive, require


@dataclass(frozen=True, kw_only=True)
class DataSource(Spec, family="data"):
    """Where the training data comes from."""

    tag = "generator"

    def arrays(self, rng: np.random.Generator, base_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        """x and y as float64 arrays (y may hold integer class indices)."""
        raise NotImplementedError

    def array_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the largest arrays `arrays` draws, known before drawing them (for the memory
        check, crossnn.memory); empty when they are already in memory or read from a file."""
        return []

    def files(self, base_dir: Path) -> list[Path]:
        """The files `arrays` reads."""
        return []

    @classmethod
    def from_value(cls, value: Any) -> DataSource:
        if isinstance(value, DataSource):
            return value
        if isinstance(value, dict) and "generator" not in value:
            if "path" in value:
                path = value["path"]
                suffix = Path(path).suffix.lower() if isinstance(path, str) else ""
                if suffix not in _FILE_KINDS:
                    raise SpecError(f"expected a .npz or .csv file, got {path!r}", ("path",))
                return _FILE_KINDS[suffix].from_fields(value)
            if "x" in value or "y" in value:
                return InlineData.from_fields(value)
            raise SpecError("give x and y, or generator = \"<name>\", or path = \"<file.npz|.csv>\"")
        return super().from_value(value)

    def to_value(self) -> dict[str, Any]:
        return {self.tag: self.kind, **self.fields_dict()}


@dataclass(frozen=True, kw_only=True)
class InlineData(DataSource):
    """x and y written in the spec itself."""

    kind = "inline"

    x: Array
    y: Array

    def to_value(self):
        return self.fields_dict()

    def validate(self):
        require(isinstance(self.x[0], tuple), "x", "must be a list of rows, one row per sample")
        require(len(self.x) == len(self.y), "y", f"has {len(self.y)} rows but x has {len(self.x)}")

    def arrays(self, rng, base_dir):
        return np.asarray(self.x, dtype=np.float64), np.asarray(self.y)


@dataclass(frozen=True, kw_only=True)
class NpzFile(DataSource):
    """Arrays `x_key` and `y_key` of a NumPy .npz archive."""

    kind = "npz file"

    path: str
    x_key: str = "x"
    y_key: str = "y"

    def to_value(self):
        return self.fields_dict()

    def files(self, base_dir):
        return [base_dir / self.path]

    def arrays(self, rng, base_dir):
        from crossnn.files import open_npz

        path = base_dir / self.path
        try:
            with open_npz(path) as archive:
                missing = [k for k in (self.x_key, self.y_key) if k not in archive.files]
                if missing:
                    raise DataError(f"data.path: {self.path} has no array '{missing[0]}' "
                                    f"(it holds {', '.join(archive.files) or 'nothing'})")
                return np.asarray(archive[self.x_key]), np.asarray(archive[self.y_key])
        except DataError:
            raise
        except Exception as err:  # unreadable, truncated or not an archive: one line, named
            raise DataError(f"data.path: cannot read {self.path}: {_reason(err)}") from None


@dataclass(frozen=True, kw_only=True)
class CsvFile(DataSource):
    """A comma-separated file of numbers; the last `y_columns` columns are y. With header = true the
    first line is skipped."""

    kind = "csv file"

    path: str
    y_columns: int = 1
    header: bool = False

    def to_value(self):
        return self.fields_dict()

    def validate(self):
        positive(self, "y_columns")

    def files(self, base_dir):
        return [base_dir / self.path]

    def arrays(self, rng, base_dir):
        path = base_dir / self.path
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # loadtxt warns on a file without rows: said below instead
                with open(path, encoding="utf-8") as handle:  # open's own error, not loadtxt's "not found"
                    table = np.loadtxt(handle, delimiter=",", skiprows=1 if self.header else 0, ndmin=2)
        except ValueError as err:  # text where numbers should be
            hint = "" if self.header else " (if the first line holds column names, set header = true)"
            raise DataError(f"data.path: cannot read {self.path}: {_reason(err)}{hint}") from None
        except Exception as err:
            raise DataError(f"data.path: cannot read {self.path}: {_reason(err)}") from None
        if table.shape[0] == 0:
            raise DataError(f"data.path: {self.path} has no rows of data"
                            + (" after its header line" if self.header else ""))
        if table.shape[1] <= self.y_columns:
            raise DataError(f"data.y_columns: {self.path} has {table.shape[1]} columns, "
                            f"too few for {self.y_columns} y column(s) and at least one x column")
        return table[:, :-self.y_columns], table[:, -self.y_columns:]


_FILE_KINDS = {".npz": NpzFile, ".csv": CsvFile}


# ---- generators --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Adder(DataSource, kind="adder"):
    """x ~ U[low, high)^(n × inputs); y = Σ_i x_i, shape (n, 1)."""

    n: int = 100
    inputs: int = 2
    low: float = 0.0
    high: float = 10.0

    def validate(self):
        positive(self, "n", "inputs")
        finite(self, "low", "high")
        require(self.low < self.high, "high", f"must be greater than low ({self.low})")

    def array_shapes(self):
        return [(self.n, self.inputs), (self.n, 1)]

    def arrays(self, rng, base_dir):
        x = rng.uniform(self.low, self.high, size=(self.n, self.inputs))
        return x, x.sum(axis=1, keepdims=True)


@dataclass(frozen=True, kw_only=True)
class Line(DataSource, kind="line"):
    """x = linspace(start, stop, n) as a column; y = slope · x + intercept + noise · N(0, 1)."""

    n: int = 201
    start: float = -2.0
    stop: float = 2.0
    slope: float = 3.0
    intercept: float = 2.0
    noise: float = 1.0

    def validate(self):
        positive(self, "n")
        finite(self, "start", "stop", "slope", "intercept", "noise")
        require(self.noise >= 0, "noise", f"must be >= 0, got {self.noise}")

    def array_shapes(self):
        return [(self.n, 1), (self.n, 1)]

    def arrays(self, rng, base_dir):
        x = np.linspace(self.start, self.stop, self.n).reshape(-1, 1)
        return x, self.slope * x + self.intercept + self.noise * rng.standard_normal((self.n, 1))


@dataclass(frozen=True, kw_only=True)
class Circle(DataSource, kind="circle"):
    """x ~ U[0, 1)² (n points); y = 1 where (x₁ - center)² + (x₂ - center)² < radius_sq, else 0."""

    n: int = 1200
    center: float = 0.5
    radius_sq: float = 0.1

    def validate(self):
        positive(self, "n", "radius_sq")
        finite(self, "center", "radius_sq")

    def array_shapes(self):
        return [(self.n, 2), (self.n, 1)]

    def arrays(self, rng, base_dir):
        x = rng.uniform(0.0, 1.0, size=(self.n, 2))
        inside = ((x - self.center) ** 2).sum(axis=1, keepdims=True) < self.radius_sq
        return x, inside.astype(np.float64)


@dataclass(frozen=True, kw_only=True)
class RandomNormal(DataSource, kind="random_normal"):
    """x ~ N(0, 1)^(n × inputs), y ~ N(0, 1)^(n × outputs), independent: noise to fit."""

    n: int = 10
    inputs: int = 2
    outputs: int = 1

    def validate(self):
        positive(self, "n", "inputs", "outputs")

    def array_shapes(self):
        return [(self.n, self.inputs), (self.n, self.outputs)]

    def arrays(self, rng, base_dir):
        return rng.standard_normal((self.n, self.inputs)), rng.standard_normal((self.n, self.outputs))


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


@dataclass(frozen=True, kw_only=True)
class TeacherClasses(DataSource, kind="teacher_classes"):
    """A learnable classification set shaped like images: x ~ U[0, 1)^(n × inputs) (inputs a feature
    count, or a shape such as [32, 32, 3]) and the class index y = argmax(flat(x - 0.5) @ T + c) of a
    random linear teacher T ~ N(0, 1), c ~ N(0, 1), drawn from the same stream (the synthetic MNIST-
    and CIFAR-shaped data of benchmark studies: inputs = 784 or [32, 32, 3], classes = 10)."""

    n: int = 1024
    inputs: int | tuple[int, ...] = 784
    classes: int = 10

    def validate(self):
        positive(self, "n")
        shape = self._shape()
        require(len(shape) > 0 and all(k > 0 for k in shape), "inputs",
                f"must be a positive feature count or a list of positive sizes, got {self.inputs}")
        require(self.classes >= 2, "classes", f"must be >= 2, got {self.classes}")

    def _shape(self) -> tuple[int, ...]:
        return (self.inputs,) if isinstance(self.inputs, int) else tuple(self.inputs)

    def array_shapes(self):
        features = int(np.prod(self._shape()))
        return [(self.n, *self._shape()), (features, self.classes), (self.n, self.classes)]

    def arrays(self, rng, base_dir):
        shape = self._shape()
        x = rng.uniform(0.0, 1.0, size=(self.n, *shape))
        features = int(np.prod(shape))
        teacher = rng.standard_normal((features, self.classes))
        offset = rng.standard_normal(self.classes)
        return x, np.argmax((x.reshape(self.n, features) - 0.5) @ teacher + offset, axis=1)


@dataclass(frozen=True, kw_only=True)
class Textures(DataSource, kind="textures"):
    """Images of oriented stripes, one orientation per class, for convolutional networks:

        θ_k = π k / classes,  x[n, i, j, c] = gain[n, c] · sin(2π f_n (i cos θ_y + j sin θ_y) + φ_n)
                                              + noise · ε[n, i, j, c]

    with y ~ U{0..classes-1}, f_n = frequency · U(0.8, 1.2), φ_n ~ U(0, 2π), gain ~ U(0.5, 1.5) per
    sample and channel and ε ~ N(0, 1), all from the data stream. x is (n, size, size, channels) and
    y the class index. A stripe's orientation is visible anywhere in the image, so a CNN learns it
    and a linear model of the pixels does not (the phase moves the stripes)."""

    n: int = 512
    size: int = 16
    channels: int = 3
    classes: int = 4
    frequency: float = 0.15
    noise: float = 0.5

    def validate(self):
        positive(self, "n", "size", "channels", "frequency")
        require(self.classes >= 2, "classes", f"must be >= 2, got {self.classes}")
        finite(self, "frequency", "noise")
        require(self.noise >= 0, "noise", f"must be >= 0, got {self.noise}")

    def array_shapes(self):
        image = (self.n, self.size, self.size, self.channels)
        return [image, image, (self.n, self.size, self.size), (self.n,)]

    def arrays(self, rng, base_dir):
        y = rng.integers(0, self.classes, size=self.n)
        freq = self.frequency * rng.uniform(0.8, 1.2, size=self.n)
        phase = rng.uniform(0.0, 2.0 * np.pi, size=self.n)
        gain = rng.uniform(0.5, 1.5, size=(self.n, self.channels))
        theta = np.pi * y / self.classes
        i, j = np.meshgrid(np.arange(self.size), np.arange(self.size), indexing="ij")
        along = i[None] * np.cos(theta)[:, None, None] + j[None] * np.sin(theta)[:, None, None]
        wave = np.sin(2.0 * np.pi * freq[:, None, None] * along + phase[:, None, None])
        x = wave[..., None] * gain[:, None, None, :]
        x += self.noise * rng.standard_normal(x.shape)
        return x, y.astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class TokenSums(DataSource, kind="token_sums"):
    """Sequences of integer ids for embeddings and recurrent layers: x ~ U{0..vocab-1}^(n × length), each
    id k worth k - (vocab - 1)/2, and the class index y = 1 when a sequence's worth sums above 0, else
    0. The answer needs the whole sequence (every id counts), so a recurrent model must carry a sum
    through time."""

    n: int = 1000
    length: int = 12
    vocab: int = 10

    def validate(self):
        positive(self, "n", "length")
        require(self.vocab >= 2, "vocab", f"must be >= 2, got {self.vocab}")

    def array_shapes(self):
        return [(self.n, self.length), (self.n, self.length), (self.n,)]

    def arrays(self, rng, base_dir):
        ids = rng.integers(0, self.vocab, size=(self.n, self.length))
        worth = (ids - (self.vocab - 1) / 2.0).sum(axis=1)
        return ids.astype(np.float64), (worth > 0).astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class Digits(DataSource, kind="digits"):
    """scikit-learn's handwritten digits (1797 images of 8×8 pixels, classes 0-9), shipped inside
    scikit-learn, so nothing is downloaded: x = pixels · scale (values 0..16), y = class index; x is
    (N, 64) rows, or (N, 8, 8, 1) images with images = true. With shuffle the samples are permuted
    once from the seed's data stream (scikit-learn keeps them in the order they were written, so its
    last ones come from the last writers); a validation split then takes the last ones of that order."""

    scale: float = 1.0 / 16.0
    shuffle: bool = True
    images: bool = False

    def validate(self):
        finite(self, "scale")
        positive(self, "scale")

    def arrays(self, rng, base_dir):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DataError("data.generator: the digits data set needs scikit-learn "
                            "(pip install 'crossnn[digits]')") from None
        digits = load_digits()
        order = rng.permutation(len(digits.target)) if self.shuffle else np.arange(len(digits.target))
        x = digits.data[order].astype(np.float64) * self.scale
        return (x.reshape(-1, 8, 8, 1) if self.images else x), digits.target[order].astype(np.int64)
