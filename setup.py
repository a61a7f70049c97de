"""Pip-world install of the Python package (editable, for the console scripts).

On a real ROS 2 install colcon builds this package through CMakeLists.txt (ament_cmake +
ament_cmake_python + rosidl); this file is not used there.
"""
from setuptools import find_packages, setup

setup(
    name="semla_ros",
    version="0.1.0",
    description="Domain-adaptive open-vocabulary segmentation (CAT-Seg + SemLA) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["semla_ros", "semla_ros.*"]),
    package_data={"semla_ros": ["py.typed", "ros/*.xml"]},
    entry_points={
        "console_scripts": [
            "semla-fixture-check=semla_ros.cli.fixture_check:main",
            "semla-bench=semla_ros.cli.bench:main",
            "semla-demo=semla_ros.cli.demo:main",
            "semla-library=semla_ros.cli.library:main",
            "semla-eval=semla_ros.cli.evaluate:main",
            "semla-relabel=semla_ros.cli.relabel:main",
            "semla_segmenter=semla_ros.ros.executables:segmenter",
            "semla_segmenter_managed=semla_ros.ros.executables:segmenter_managed",
            "semla_demo_camera=semla_ros.ros.executables:demo_camera",
        ],
    },
)
