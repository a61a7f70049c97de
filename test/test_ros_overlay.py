"""Overlay colours: stable palette, exact blend."""
import numpy as np

from semla_ros.ros.overlay import blend, palette


def test_palette_is_distinct_and_stable():
    colours = palette(300)
    assert colours.shape == (300, 3) and colours.dtype == np.uint8
    assert np.array_equal(colours[:19], palette(19))  # appending classes keeps existing colours
    assert len({tuple(c) for c in colours[:50]}) == 50
    assert tuple(colours[0]) == (128, 64, 128)  # Cityscapes road


def test_blend_weights_colour_and_image():
    image = np.full((2, 3, 3), 100, np.uint8)
    ids = np.array([[0, 1, 2], [2, 1, 0]])
    colours = palette(3)
    assert np.array_equal(blend(image, ids, colours, 0.0), image)
    assert np.array_equal(blend(image, ids, colours, 1.0), colours[ids])
    half = blend(image, ids, colours, 0.5)
    assert np.array_equal(half, np.floor(0.5 * colours[ids].astype(float) + 50 + 0.5).astype(np.uint8))
