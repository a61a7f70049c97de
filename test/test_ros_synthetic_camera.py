"""The synthetic camera renders the demo world (one street, each domain's light and weather) and parses its
schedule with the demo sequence parser: names, open-ended segments and errors."""
from __future__ import annotations

import numpy as np
import pytest

from semla_ros.demo import world
from semla_ros.ros.synthetic_camera import DOMAINS, STREET_SEED, FrameSource, parse_schedule, render


def test_domains_are_the_demo_worlds_with_day_for_clear():
    assert set(world.DOMAINS) < set(DOMAINS) and "day" in DOMAINS
    day = render("day", 96, 128)
    assert day.shape == (96, 128, 3) and day.dtype == np.uint8
    np.testing.assert_array_equal(day, world.render("clear", STREET_SEED, (96, 128)).image)
    np.testing.assert_array_equal(render("night", 96, 128), world.render("night", STREET_SEED, (96, 128)).image)
    assert np.abs(day.astype(int) - render("night", 96, 128)).mean() > 20   # a shift the navigator sees
    with pytest.raises(ValueError, match="unknown domain 'mars'"):
        render("mars", 96, 128)


def test_frames_add_bounded_noise_to_the_domains_base():
    source = FrameSource(48, 64, noise=4, seed=0)
    base = render("fog", 48, 64).astype(int)
    a, b = source.frame("fog", 0), source.frame("fog", 1)
    assert not np.array_equal(a, b) and np.abs(a - base).max() <= 4 and np.abs(b - base).max() <= 4
    np.testing.assert_array_equal(FrameSource(48, 64, noise=0).frame("fog", 5), base)


def test_schedule_takes_demo_names_aliases_and_open_ended_segments():
    assert parse_schedule("day:0,night:2.5, snow:1", 10) == [("day", 0.0), ("night", 2.5), ("snow", 1.0)]
    for text, reason in (("day:1,mars:2", "unknown domain 'mars'"), ("day", "domain:seconds"),
                         ("day:x", "not a number"), ("day:0.01", "shorter than one frame"),
                         ("day:-1", ">= 0"), ("", "empty")):
        with pytest.raises(ValueError, match=reason):
            parse_schedule(text, 10)
