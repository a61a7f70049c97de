"""The demo world: deterministic, exact labels, domains that really differ."""
from __future__ import annotations

import numpy as np
import pytest

from semla_ros.demo import world


@pytest.mark.parametrize("domain", world.DOMAINS)
def test_same_seed_same_frame_other_seed_other_frame(domain):
    a, b, c = world.render(domain, 7), world.render(domain, 7), world.render(domain, 8)
    assert a.image.shape == (*world.DEFAULT_SIZE, 3) and a.image.dtype == np.uint8
    assert a.labels.shape == world.DEFAULT_SIZE and a.labels.dtype == np.uint8
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_labels_are_exact_painted_masks(monkeypatch):
    """Labels come only from the object masks, in painting order: replaying every recorded
    `paint(mask, cls)` reproduces the label map pixel for pixel, and light/weather (the
    appearance pass) leaves it untouched."""
    calls = []
    original = world.Scene.paint

    def recording_paint(self, mask, cls, colour, depth):
        calls.append((np.array(mask, bool), cls))
        original(self, mask, cls, colour, depth)

    monkeypatch.setattr(world.Scene, "paint", recording_paint)
    for domain in world.DOMAINS:
        for seed in range(3):
            calls.clear()
            frame = world.render(domain, seed)
            replay = np.full(frame.labels.shape, world.SKY, np.uint8)
            for mask, cls in calls:
                replay[mask] = cls
            assert len(calls) > 3
            np.testing.assert_array_equal(replay, frame.labels)


def test_occlusion_writes_the_nearest_object():
    """A car is painted after the road under it, so the car's pixels are labelled car, and its
    surface colour came from the car palette, not the road's."""
    found = 0
    for seed in range(20):
        scene = world.render_layout("clear", seed)
        car = scene.labels == world.CAR
        if car.sum() < 20:
            continue
        found += 1
        road_colour = scene.albedo[scene.labels == world.ROAD].mean(axis=0)
        car_colour = scene.albedo[car].mean(axis=0)
        assert np.abs(car_colour - road_colour).max() > 0.02
        # Cars stand on the ground: road pixels are below the horizon only.
        rows = np.nonzero((scene.labels == world.ROAD).any(axis=1))[0]
        assert rows.min() > scene.horizon - 1
    assert found >= 10


def test_every_class_appears_and_tunnel_layout_differs():
    counts = np.zeros(len(world.CLASS_NAMES), int)
    for seed in range(12):
        counts += np.bincount(world.render("clear", seed).labels.ravel(), minlength=len(counts))
    assert (counts > 0).all(), dict(zip(world.CLASS_NAMES, counts, strict=True))
    sky_frac = {d: np.mean([(world.render(d, s).labels == world.SKY).mean() for s in range(6)])
                for d in ("clear", "tunnel")}
    veg_tunnel = np.mean([(world.render("tunnel", s).labels == world.VEGETATION).mean() for s in range(6)])
    assert sky_frac["clear"] > 0.08 and sky_frac["tunnel"] < 0.02 and veg_tunnel == 0.0


def test_domains_share_layout_but_not_appearance():
    """Street domains differ in pixels only: same seed -> same labels, different image stats."""
    seed = 3
    base = world.render("clear", seed)
    means = {}
    for d in world.DOMAINS:
        f = world.render(d, seed)
        if world.DOMAIN_LAYOUT[d] == "street":
            np.testing.assert_array_equal(f.labels, base.labels)
        means[d] = f.image.reshape(-1, 3).mean(axis=0)
    assert means["night"].mean() < 0.4 * means["clear"].mean()
    assert means["fog"].mean() > means["clear"].mean()
    assert means["snow"].mean() > means["clear"].mean()


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown domain 'mars'"):
        world.render("mars", 0)
    with pytest.raises(ValueError, match="too small"):
        world.render("clear", 0, size=(8, 8))
