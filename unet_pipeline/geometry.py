"""Block and halo arithmetic: valid U-Net sizes, boxes and overlap-tile plans.

Everything here is pure integer arithmetic on tuples, testable on its own.
Axis order is always the array's (z, y, x); a 2D model works on the last two
axes and treats z like a batch axis (no halo, no size constraint).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

from .errors import ConfigError

Shape = tuple[int, ...]


def ceil_division(values: Sequence[int], divisors: Sequence[int]) -> Shape:
    """Element-wise ceil(values / divisors): e.g. how many blocks of shape `divisors` cover shape `values`."""
    return tuple(-(-int(v) // int(d)) for v, d in zip(values, divisors))


def round_up(values: Sequence[int], steps: Sequence[int]) -> Shape:
    """Element-wise: the smallest multiple of each step that is at least the value."""
    return tuple(n * s for n, s in zip(ceil_division(values, steps), steps))


@dataclass(frozen=True)
class Box:
    """A half-open box [start, stop) in voxel coordinates; may reach outside a volume."""

    start: Shape
    stop: Shape

    def __post_init__(self) -> None:
        if len(self.start) != len(self.stop):
            raise ValueError(f"box start {self.start} and stop {self.stop} differ in rank")
        if any(b < a for a, b in zip(self.start, self.stop)):
            raise ValueError(f"box stop {self.stop} lies before start {self.start}")

    @property
    def shape(self) -> Shape:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    def grow(self, before: Shape, after: Shape) -> "Box":
        """The box extended by `before` voxels below start and `after` above stop."""
        return Box(
            tuple(a - g for a, g in zip(self.start, before)),
            tuple(b + g for b, g in zip(self.stop, after)),
        )

    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    def relative_to(self, outer: "Box") -> tuple[slice, ...]:
        """Slices that cut this box out of an array holding `outer`."""
        return tuple(slice(a - o, b - o) for a, b, o in zip(self.start, self.stop, outer.start))

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
    for start in itertools.product(*(range(0, n, t) for n, t in zip(volume, tile))):
        output = Box(start, tuple(min(s + t, n) for s, t, n in zip(start, tile, volume)))
        network_box = Box(start, tuple(s + o for s, o in zip(start, network_output)))
        yield Tile(output, network_box.grow(halo, halo), network_output)


def chunk_indices(box: Box, chunks: Shape) -> Iterator[Shape]:
    """Grid indices of the chunks a box touches."""
    return itertools.product(
        *(range(a // c, -(-b // c)) for a, b, c in zip(box.start, box.stop, chunks))
    )
