import numpy as np
import pytest

from deid_client.figures import (
    AGREEMENT_COLOUR,
    REFERENCE_COLOUR,
    SYNTHETIC_COLOUR,
    comparison_overlay,
    figure_to_array,
    heatmap_figure,
    image_grid,
    mask_overlay,
    save_figure,
)
from research.plots import histogram_figure
from tests.metadata import metadata_in


def test_comparison_overlay_colours():
    ref = np.array([[1, 1, 0, 0]], bool)
    syn = np.array([[1, 0, 1, 0]], bool)
    out = comparison_overlay(ref, syn)
    assert out[0, 0].tolist() == list(AGREEMENT_COLOUR)
    assert out[0, 1].tolist() == list(REFERENCE_COLOUR)
    assert out[0, 2].tolist() == list(SYNTHETIC_COLOUR)
    assert out[0, 3].tolist() == [0, 0, 0]
    image = np.full((1, 4, 3), 200, np.uint8)
    assert 0 < comparison_overlay(ref, syn, image)[0, 3, 0] < 200  # dimmed background
    with pytest.raises(ValueError):
        comparison_overlay(ref, syn[:, :3])


def test_mask_overlay_changes_only_the_mask(rng):
    image = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    out = mask_overlay(image, mask)
    assert np.array_equal(out[~mask], image[~mask])
    assert (out[mask] != image[mask]).any(axis=1).all()


def test_grid_layout():
    tiles = [np.full((4, 5, 3), i, np.uint8) for i in range(5)]
    grid = image_grid(tiles, ncols=2, gap=1)
    assert grid.shape == (3 * 4 + 2, 2 * 5 + 1, 3)
    assert grid[10, 0, 0] == 4 and grid[10, 8, 0] == 255  # last row: one tile, then blank
    with pytest.raises(ValueError):
        image_grid([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)], 2)


def test_plots_render_and_save_without_metadata(tmp_path, rng):
    diff = rng.normal(0, 3, (32, 32)).astype(np.float32)
    heat = figure_to_array(heatmap_figure(diff, theta=2.0))
    assert heat.ndim == 3 and heat.dtype == np.uint8 and heat.std() > 10
    path = save_figure(histogram_figure({"a": rng.normal(5, 2, 500), "b": rng.normal(8, 2, 500)}),
                       tmp_path / "hist.png")
    assert metadata_in(path.read_bytes()) == []
