import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unet_pipeline.core.geometry import Box, Coordinate, UNetGeometry, grid_indices, plan_tiles, tile_shape


def test_paper_sizes():
    geometry = UNetGeometry(depth=4)
    assert geometry.output_size(572) == 388
    assert geometry.input_size(388) == 572
    assert geometry.halo == 92


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_valid_sizes_round_trip(depth):
    geometry = UNetGeometry(depth=depth)
    for size in range(1, 300):
        out = geometry.smallest_output_at_least(size)
        assert out >= size and out - geometry.stride < max(size, 4)
        assert geometry.output_size(geometry.input_size(out)) == out
        assert (geometry.input_size(out) - out) == 2 * geometry.halo


def test_invalid_input_size_is_rejected_with_reason():
    with pytest.raises(ValueError, match="odd"):
        UNetGeometry(depth=4).output_size(571)
    with pytest.raises(ValueError, match="not valid"):
        UNetGeometry(depth=4).input_size(387)


def test_tile_shape_is_multiple_of_chunk_and_stride():
    geometry = UNetGeometry(depth=3)
    assert tile_shape(geometry, (1, 12, 20), (3, 100, 100)) == (3, 96, 80)
    assert tile_shape(geometry, (2, 12, 20), (1, 10, 10)) == (2, 24, 40)


def test_a_tile_larger_than_the_volume_is_clipped_to_it():
    geometry = UNetGeometry(depth=2)  # stride 4, halo 20
    tile = tile_shape(geometry, (1, 32, 32), (1, 256, 256), (5, 128, 100))
    assert tile == (1, 128, 128)  # x: the volume rounded up to whole chunks
    (only,) = plan_tiles(geometry, (1, 128, 100), tile)
    assert only.network_output == (1, 128, 128) and only.input.shape == (1, 168, 168)


@settings(max_examples=60, deadline=None)
@given(
    volume=st.tuples(st.integers(1, 6), st.integers(1, 90), st.integers(1, 90)),
    chunks=st.tuples(st.integers(1, 4), st.integers(1, 40), st.integers(1, 40)),
    requested=st.tuples(st.integers(1, 8), st.integers(1, 120), st.integers(1, 120)),
    depth=st.integers(1, 4),
)
def test_plan_covers_volume_once_and_tasks_own_their_chunks(volume, chunks, requested, depth):
    geometry = UNetGeometry(depth=depth)
    tiles = plan_tiles(geometry, volume, tile_shape(geometry, chunks, requested))
    covered = {}
    owner = {}
    for index, tile in enumerate(tiles):
        for voxel in itertools.product(*(range(a, b) for a, b in zip(tile.output.start, tile.output.stop))):
            assert voxel not in covered, f"voxel {voxel} written twice"
            covered[voxel] = index
        for chunk in tile.output.units(chunks):
            assert owner.setdefault(chunk, index) == index, f"chunk {chunk} written by two tasks"
        # the output starts on the network's translation grid and its input holds the halo
        assert all(s % geometry.stride == 0 for s in tile.output.start[1:])
        assert tile.input.start[1:] == tuple(s - geometry.halo for s in tile.output.start[1:])
        assert tile.input.shape[1:] == tuple(geometry.input_size(o) for o in tile.network_output[1:])
        assert all(o >= s for o, s in zip(tile.network_output, tile.output.shape))
    assert len(covered) == volume[0] * volume[1] * volume[2]


def test_box_rejects_inverted_bounds():
    with pytest.raises(ValueError):
        Box((0, 5), (1, 4))


def test_coordinate_arithmetic_is_element_wise():
    a = Coordinate((3, 10, 17))
    assert a + (1, 2, 3) == (4, 12, 20) and a + 1 == (4, 11, 18)  # adds, never concatenates
    assert a - 3 == (0, 7, 14) and a * (2, 1, 0) == (6, 10, 0) and a // 4 == (0, 2, 4)
    assert a.ceil_division(4) == (1, 3, 5) and a.round_up((2, 4, 8)) == (4, 12, 24)
    assert a.minimum((5, 5, 5)) == (3, 5, 5) and a.maximum(11) == (11, 11, 17)
    assert (0,) + a == (0, 3, 10, 17)  # a plain tuple on the left still concatenates
    with pytest.raises(ValueError, match="differ in rank"):
        a + (1, 2)


boxes = st.integers(1, 3).flatmap(lambda rank: st.tuples(
    st.lists(st.integers(-20, 20), min_size=rank, max_size=rank),
    st.lists(st.integers(0, 20), min_size=rank, max_size=rank)))


def voxels(box):
    return set(itertools.product(*(range(a, b) for a, b in zip(box.start, box.stop))))


@settings(max_examples=200, deadline=None)
@given(boxes, boxes)
def test_intersection_holds_exactly_the_shared_voxels(first, second):
    rank = min(len(first[0]), len(second[0]))
    a = Box(first[0][:rank], [s + n for s, n in zip(first[0], first[1])][:rank])
    b = Box(second[0][:rank], [s + n for s, n in zip(second[0], second[1])][:rank])
    assert voxels(a.intersect(b)) == voxels(a) & voxels(b)
    volume = tuple(abs(s) + 1 for s in b.stop)
    assert voxels(a.clip(volume)) == voxels(a) & voxels(Box.of_shape(volume))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3).flatmap(lambda rank: st.tuples(
    st.lists(st.integers(1, 12), min_size=rank, max_size=rank),
    st.lists(st.integers(1, 5), min_size=rank, max_size=rank),
    st.lists(st.integers(0, 12), min_size=rank, max_size=rank))))
def test_units_tile_a_volume_and_a_box_touches_exactly_the_units_it_overlaps(case):
    volume, unit, corner = case
    owner = {}
    for index in grid_indices(volume, unit):
        for voxel in voxels(Box.unit(index, unit, volume)):
            assert voxel not in owner
            owner[voxel] = index
    assert set(owner) == voxels(Box.of_shape(volume))
    box = Box([min(c, n - 1) for c, n in zip(corner, volume)], volume)
    assert set(box.units(unit)) == {owner[v] for v in voxels(box)}
