"""Fast DDS transport profile for full-size camera images (see fastdds_large_images.xml for why).

Both ends need it: the camera driver's process and the node's. Processes we start ourselves
(demo, benchmarks, tests) get it through their environment; a user's camera driver gets it from
`export FASTDDS_DEFAULT_PROFILES_FILE=...` (README). An existing setting is never overridden.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping

LARGE_IMAGE_PROFILE = Path(__file__).with_name("fastdds_large_images.xml")
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def with_large_image_transport(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """`env` (default: this process's environment) with the profile set unless one is already."""
    env = os.environ if env is None else env
    if not env.get(PROFILE_VARIABLE) and os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") == "rmw_fastrtps_cpp":
        env[PROFILE_VARIABLE] = str(LARGE_IMAGE_PROFILE)
    return env
