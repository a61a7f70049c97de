"""Fast DDS transport profile for full-size camera images (see fastdds_large_images.xml for why).

Both ends need it: the camera driver's process and the node's. Processes we start ourselves
(demo, benchmarks, tests) get it through their environment; a user's camera driver gets it from
`export FASTDDS_DEFAULT_PROFILES_FILE=...` (README). A user's own transport choice is never overridden:
neither a profile file nor Fast DDS's FASTDDS_BUILTIN_TRANSPORTS (e.g. LARGE_DATA; our profile would
replace the built-in transports it selects). `semla-bench large_images` measured the shipped profile
against LARGE_DATA and the defaults: the profile delivered every frame, the others few (README).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping

LARGE_IMAGE_PROFILE = Path(__file__).with_name("fastdds_large_images.xml")
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
BUILTIN_TRANSPORTS_VARIABLE = "FASTDDS_BUILTIN_TRANSPORTS"


def with_large_image_transport(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """`env` (default: this process's environment) with the profile set, unless the user chose the
    transports (a profile or FASTDDS_BUILTIN_TRANSPORTS) or another RMW."""
    env = os.environ if env is None else env
    users_own = env.get(PROFILE_VARIABLE) or env.get(BUILTIN_TRANSPORTS_VARIABLE)
    if not users_own and os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") == "rmw_fastrtps_cpp":
        env[PROFILE_VARIABLE] = str(LARGE_IMAGE_PROFILE)
    return env
