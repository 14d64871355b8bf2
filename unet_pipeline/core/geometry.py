"""Block and halo arithmetic: valid U-Net sizes, boxes and overlap-tile plans.

Everything here is pure integer arithmetic on `Coordinate`s (tuples with
element-wise operators) and `Box`es, testable on its own.
Axis order is always the array's (z, y, x); a 2D model works on the last two
axes and treats z like a batch axis (no halo, no size constraint).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from .errors import ConfigError

Shape = tuple[int, ...]


class Coordinate(tuple):
    """An immutable integer vector in array axis order, with element-wise arithmetic.

    `+`, `-`, `*`, `//` and the methods below work axis by axis; the other
    operand is a sequence of the same length or one int for every axis.
    Unlike a tuple, `+` adds instead of concatenating. A Coordinate equals the
    plain tuple of its values.
    """

    def __new__(cls, values: Iterable[int]) -> "Coordinate":
        return super().__new__(cls, map(int, values))

    def _pairs(self, other: "int | Sequence[int]") -> Iterator[tuple[int, int]]:
        others = (int(other),) * len(self) if isinstance(other, (int, np.integer)) else tuple(other)
        if len(others) != len(self):
            raise ValueError(f"{tuple(self)} and {others} differ in rank")
        return zip(self, others)

    def __add__(self, other: "int | Sequence[int]") -> "Coordinate":  # type: ignore[override]
        return Coordinate(a + b for a, b in self._pairs(other))

    def __sub__(self, other: "int | Sequence[int]") -> "Coordinate":
        return Coordinate(a - b for a, b in self._pairs(other))

    def __mul__(self, other: "int | Sequence[int]") -> "Coordinate":  # type: ignore[override]
        return Coordinate(a * b for a, b in self._pairs(other))

    def __floordiv__(self, other: "int | Sequence[int]") -> "Coordinate":
        return Coordinate(a // b for a, b in self._pairs(other))

    def ceil_division(self, other: "int | Sequence[int]") -> "Coordinate":
        """ceil(self / other): e.g. how many blocks of shape `other` cover shape `self`."""
        return Coordinate(-(-a // b) for a, b in self._pairs(other))

    def round_up(self, other: "int | Sequence[int]") -> "Coordinate":
        """The smallest multiple of `other` that is at least `self`."""
        return self.ceil_division(other) * other

    def minimum(self, other: "int | Sequence[int]") -> "Coordinate":
        return Coordinate(min(a, b) for a, b in self._pairs(other))

    def maximum(self, other: "int | Sequence[int]") -> "Coordinate":
        return Coordinate(max(a, b) for a, b in self._pairs(other))


def ceil_division(values: Sequence[int], divisors: Sequence[int]) -> Coordinate:
    """Element-wise ceil(values / divisors): e.g. how many blocks of shape `divisors` cover shape `values`."""
    return Coordinate(values).ceil_division(divisors)


def round_up(values: Sequence[int], steps: Sequence[int]) -> Coordinate:
    """Element-wise: the smallest multiple of each step that is at least the value."""
    return Coordinate(values).round_up(steps)


def grid_indices(shape: Sequence[int], unit: Sequence[int]) -> Iterator[Coordinate]:
    """The grid index of every block of shape `unit` (a chunk, shard or block) covering `shape`, in C order."""
    return map(Coordinate, itertools.product(*map(range, ceil_division(shape, unit))))


@dataclass(frozen=True)
class Box:
    """A half-open box [start, stop) in voxel coordinates; may reach outside a volume."""

    start: Coordinate
    stop: Coordinate

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", Coordinate(self.start))
        object.__setattr__(self, "stop", Coordinate(self.stop))
        if len(self.start) != len(self.stop):
            raise ValueError(f"box start {self.start} and stop {self.stop} differ in rank")
        if any(b < a for a, b in zip(self.start, self.stop)):
            raise ValueError(f"box stop {self.stop} lies before start {self.start}")

    @staticmethod
    def of_shape(shape: Sequence[int]) -> "Box":
        """The box [0, shape): a whole volume."""
        return Box(Coordinate((0,) * len(shape)), Coordinate(shape))

    @staticmethod
    def unit(index: Sequence[int], unit: Sequence[int], volume: Sequence[int]) -> "Box":
        """Grid unit (chunk, shard or block) `index` of shape `unit`, clipped to `volume`."""
        start = Coordinate(index) * unit
        return Box(start, (start + unit).minimum(volume))

    @property
    def shape(self) -> Coordinate:
        return self.stop - self.start

    def grow(self, before: "int | Sequence[int]", after: "int | Sequence[int]") -> "Box":
        """The box extended by `before` voxels below start and `after` above stop."""
        return Box(self.start - before, self.stop + after)

    def intersect(self, other: "Box") -> "Box":
        """The part of this box inside `other` (empty, at the nearer face, where they do not overlap)."""
        start = self.start.maximum(other.start).minimum(other.stop)
        return Box(start, self.stop.minimum(other.stop).maximum(start))

    def clip(self, volume: Sequence[int]) -> "Box":
        """The part of this box inside a volume of shape `volume`."""
        return self.intersect(Box.of_shape(volume))

    def units(self, unit: Sequence[int]) -> Iterator[Coordinate]:
        """Grid indices of the units (chunks, shards, blocks) of shape `unit` that this box touches."""
        first, last = self.start // unit, self.stop.ceil_division(unit)
        return map(Coordinate, itertools.product(*map(range, first, last)))

    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    def relative_to(self, outer: "Box") -> tuple[slice, ...]:
        """Slices that cut this box out of an array holding `outer`."""
        return Box(self.start - outer.start, self.stop - outer.start).slices()

    @staticmethod
    def union(boxes: "list[Box]") -> "Box":
        """The smallest box holding all `boxes`."""
        return Box(tuple(map(min, zip(*(b.start for b in boxes)))), tuple(map(max, zip(*(b.stop for b in boxes)))))


@dataclass(frozen=True)
class UNetGeometry:
    """Sizes of a U-Net with 3x3 convolutions (two per level) and 2x2 pooling.

    `depth` is the number of pooling steps; the model convolves the last
    `ndim` axes of a volume. With `padding="valid"` (the paper's) the network
    output shrinks by the halo on each side. With `padding="same"` the network
    keeps the size, but only the centre, at least a receptive-field radius away
    from the tile border, is exact. That radius is the valid halo plus
    stride - 1 (the pooling windows sit differently); the same-padded halo is
    it rounded up to the stride, and predict crops it off. Either way tiled
    inference equals whole-volume inference.
    """

    depth: int
    ndim: int = 2
    padding: str = "valid"

    def __post_init__(self) -> None:
        if self.padding not in ("valid", "same"):
            raise ConfigError(f"padding must be 'valid' or 'same', got {self.padding!r}")
        if self.depth < 0 or self.ndim not in (2, 3):
            raise ConfigError(f"need depth >= 0 and ndim 2 or 3, got depth {self.depth}, ndim {self.ndim}")

    @property
    def stride(self) -> int:
        """Translation period of the network: tile origins must be multiples of it."""
        return 2**self.depth

    @property
    def halo(self) -> int:
        """Context each output voxel needs on each side (the same for every valid size)."""
        valid_halo = 3 * 2 ** (self.depth + 1) - 4
        if self.padding == "valid":
            return valid_halo
        return math.ceil((valid_halo + self.stride - 1) / self.stride) * self.stride

    def output_size(self, input_size: int) -> int:
        """Exact output length for an input length, or ValueError if that input is not valid."""
        if self.padding == "same":
            if input_size % self.stride or input_size <= 2 * self.halo:
                raise ConfigError(f"input size {input_size} is not valid for a same-padded depth-{self.depth} "
                                 f"U-Net: it must be a multiple of {self.stride} above {2 * self.halo}")
            return input_size - 2 * self.halo
        n = input_size
        for level in range(self.depth):
            n -= 4
            if n <= 0 or n % 2:
                raise ValueError(
                    f"input size {input_size} is not valid for a depth-{self.depth} U-Net: "
                    f"level {level} would pool an odd or empty size {n}"
                )
            n //= 2
        n -= 4
        for _ in range(self.depth):
            n = 2 * n - 4
        if n < 4:
            raise ConfigError(f"input size {input_size} is too small for a depth-{self.depth} U-Net")
        return n

    def smallest_output_at_least(self, size: int) -> int:
        """The smallest valid output length that covers `size` voxels.

        Valid outputs are stride * m + 4 (m >= 0; the bottom level keeps at least
        4 voxels), or stride * m (m >= 1) with same padding.
        """
        if self.padding == "same":
            return self.stride * max(1, math.ceil(size / self.stride))
        return self.stride * max(0, math.ceil((size - 4) / self.stride)) + 4

    def input_size(self, output_size: int) -> int:
        """Input length that yields exactly `output_size` (which must be valid)."""
        if output_size != self.smallest_output_at_least(output_size):
            raise ValueError(
                f"output size {output_size} is not valid for a {self.padding}-padded depth-{self.depth} U-Net "
                f"(nearest valid: {self.smallest_output_at_least(output_size)})"
            )
        return output_size + 2 * self.halo


@dataclass(frozen=True)
class Tile:
    """One task: the output region it writes and the input region it reads."""

    output: Box
    input: Box
    network_output: Shape  # the model's output shape, cropped to `output` on write


def tile_shape(geometry: UNetGeometry, chunks: Shape, requested: Shape, volume: Shape | None = None) -> Shape:
    """The largest tile no bigger than `requested` (per axis) that is a multiple of
    the chunk shape and, on model axes, of the network's stride; no bigger than
    `volume` (rounded up to that multiple) either, so an oversize request never
    runs the network on more than the volume needs."""
    spatial0 = len(chunks) - geometry.ndim
    shape = []
    for axis, (chunk, want) in enumerate(zip(chunks, requested)):
        step = chunk if axis < spatial0 else math.lcm(chunk, geometry.stride)
        if volume is not None:
            want = min(want, -(-volume[axis] // step) * step)
        shape.append(max(step, want // step * step))
    return tuple(shape)


def plan_tiles(geometry: UNetGeometry, volume: Shape, tile: Shape) -> list[Tile]:
    """Every tile of `iter_tiles`, as a list."""
    return list(iter_tiles(geometry, volume, tile))


def tile_count(volume: Shape, tile: Shape) -> int:
    """How many tiles of shape `tile` cover `volume`."""
    return math.prod(ceil_division(volume, tile))


def iter_tiles(geometry: UNetGeometry, volume: Shape, tile: Shape) -> Iterator[Tile]:
    """Cover `volume` with non-overlapping output tiles of shape `tile` (clipped at the end), lazily.

    Each tile's input region is its output region grown by the halo on model
    axes, plus the extra the network needs to reach a valid output size; it may
    reach outside the volume, where the reader mirrors.
    """
    if len(volume) != len(tile):
        raise ValueError(f"volume {volume} and tile {tile} differ in rank")
    spatial0 = len(volume) - geometry.ndim
    if spatial0 < 0:
        raise ValueError(f"a {geometry.ndim}D model needs at least {geometry.ndim} axes, got volume {volume}")
    network_output = tuple(
        t if axis < spatial0 else geometry.smallest_output_at_least(t) for axis, t in enumerate(tile)
    )
    halo = tuple(0 if axis < spatial0 else geometry.halo for axis in range(len(volume)))
    for index in grid_indices(volume, tile):
        output = Box.unit(index, tile, volume)
        network_box = Box(output.start, output.start + network_output)
        yield Tile(output, network_box.grow(halo, halo), network_output)
