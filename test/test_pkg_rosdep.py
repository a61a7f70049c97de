"""package.xml against the rosdep and release data of ROS 2 Jazzy and Kilted (../shared/reference/rosdistro),
and every third-party import of the package against where a real install gets it.

What `rosdep install --from-paths src --ignore-src` does with each key, checked offline:
- a ROS package resolves when the distribution released it (<distro>_released_packages.txt);
- any other key needs an apt rule for Ubuntu noble in base.yaml / python.yaml (a pip rule would run pip
  against the system Python, which noble refuses (PEP 668)), and must not name one of the apt packages
  noble's archive does not carry (python3-torch, python3-torchvision: the rosdistro README's example).
Python libraries without such a key come from requirements-ros.txt (the README's pip step, same pins as
the pip world's requirements.txt) or, for backend:=tensorrt only, requirements-ros-tensorrt.txt, or, for the
offline tools (semla-relabel), requirements-ros-relabel.txt.
"""
from __future__ import annotations

import ast
import functools
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DISTROS = ("jazzy", "kilted")
UBUNTU = "noble"
# Resolve in rosdep but name apt packages Ubuntu noble does not carry (rosdistro/README.md).
NOT_IN_NOBLE = {"python3-torch", "python3-torchvision"}
DEPEND_TAGS = ("depend", "build_depend", "buildtool_depend", "build_export_depend", "exec_depend", "test_depend",
               "doc_depend")

# Where each third-party module imported under semla_ros/ comes from on a real install.
APT_KEY_OF_MODULE = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
                     "scipy": "python3-scipy", "matplotlib": "python3-matplotlib", "PIL": "python3-pil",
                     "tqdm": "python3-tqdm"}
ROS_MODULES = {"rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs", "cv_bridge"}
PIP_OF_MODULE = {"torch": "torch", "open_clip": "open_clip_torch", "peft": "peft", "safetensors": "safetensors",
                 "huggingface_hub": "huggingface_hub", "onnx": "onnx", "onnxruntime": "onnxruntime"}
TENSORRT_PIP_OF_MODULE = {"tensorrt": "tensorrt-cu13"}
# The offline tools (semla-relabel, Ray scale-out): an optional pip step of their own.
RELABEL_PIP_OF_MODULE = {"rosbags": "rosbags", "sklearn": "scikit-learn", "ray": "ray"}


def _keys() -> dict[str, str]:
    """key -> tag of every dependency in package.xml."""
    root = ET.parse(REPO / "package.xml").getroot()
    return {element.text.strip(): element.tag for tag in DEPEND_TAGS for element in root.iter(tag)}


def _released(reference_dir: Path, distro: str) -> set[str]:
    return set((reference_dir / "rosdistro" / f"{distro}_released_packages.txt").read_text().split())


@functools.lru_cache(maxsize=None)
def _rules(reference_dir: Path) -> dict:
    rules = {}
    for name in ("base.yaml", "python.yaml"):
        rules.update(yaml.safe_load((reference_dir / "rosdistro" / name).read_text()))
    return rules


def noble_apt_packages(rule) -> list[str] | None:
    """The apt packages a rosdep rule installs on Ubuntu noble; None when it has no apt rule there."""
    ubuntu = rule.get("ubuntu") if isinstance(rule, dict) else None
    if isinstance(ubuntu, dict) and not ({"apt", "pip", "source"} & set(ubuntu)):
        ubuntu = ubuntu.get(UBUNTU, ubuntu.get("*"))
    if isinstance(ubuntu, dict):   # installer form: {apt: {packages: [...]}} or {pip: ...}
        apt = ubuntu.get("apt")
        return list(apt.get("packages", [])) if isinstance(apt, dict) else (list(apt) if apt else None)
    if isinstance(ubuntu, list) and ubuntu:
        return list(ubuntu)
    return None


def _requirements(name: str) -> dict[str, str]:
    """name (lower case, - for _) -> version specifier of a requirements file."""
    pins = {}
    for line in (REPO / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            match = re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", line)
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_resolver_reads_the_rule_forms(reference_dir):
    rules = _rules(reference_dir)
    assert noble_apt_packages(rules["python3-numpy"]) == ["python3-numpy"]        # plain list
    assert noble_apt_packages(rules["python3-torch"]) == ["python3-torch"]        # '*' entry
    assert noble_apt_packages({"ubuntu": {"noble": None, "*": ["x"]}}) is None     # null for noble
    assert noble_apt_packages({"ubuntu": {"pip": {"packages": ["x"]}}}) is None    # pip only
    assert noble_apt_packages({"debian": ["x"]}) is None
    assert "python3-safetensors" not in rules


@pytest.mark.parametrize("distro", DISTROS)
def test_every_package_xml_key_resolves_on_noble(reference_dir, distro):
    released, rules = _released(reference_dir, distro), _rules(reference_dir)
    problems = []
    for key, tag in _keys().items():
        if key in released:
            continue
        packages = noble_apt_packages(rules.get(key))
        if packages is None:
            problems.append(f"<{tag}>{key}: neither released in {distro} nor an apt rule for Ubuntu {UBUNTU}")
        elif NOT_IN_NOBLE & set(packages):
            problems.append(f"<{tag}>{key}: resolves to {packages}, which Ubuntu {UBUNTU} does not carry")
    assert not problems, "\n".join(problems)


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> files, for every import under semla_ros/ (function-local ones included)."""
    found: dict[str, set[str]] = {}
    for path in (REPO / "semla_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("semla_ros", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_import_has_a_source_on_a_real_install():
    keys, ml, tensorrt = _keys(), _requirements("requirements-ros.txt"), _requirements("requirements-ros-tensorrt.txt")
    relabel = _requirements("requirements-ros-relabel.txt")
    problems = []
    for module, files in sorted(_third_party_imports().items()):
        if module in APT_KEY_OF_MODULE:
            ok = APT_KEY_OF_MODULE[module] in keys
        elif module in ROS_MODULES:
            ok = module in keys
        elif module in PIP_OF_MODULE:
            ok = PIP_OF_MODULE[module].lower().replace("_", "-") in ml
        elif module in TENSORRT_PIP_OF_MODULE:
            ok = TENSORRT_PIP_OF_MODULE[module] in tensorrt
        else:
            ok = RELABEL_PIP_OF_MODULE.get(module) in relabel
        if not ok:
            problems.append(f"{module} (imported in {', '.join(sorted(files))}) has no source on a real install")
    assert not problems, "\n".join(problems)


def test_ml_requirements_match_the_tested_pins_and_keep_numpy_for_cv_bridge():
    ml, world = _requirements("requirements-ros.txt"), _requirements("requirements.txt")
    assert ml.pop("numpy") == ">=1.26,<2"   # noble's python3-numpy, which the apt cv_bridge is built against
    assert ml and all(spec.startswith("==") for spec in ml.values())
    for name, spec in ml.items():
        assert world.get(name) == spec, f"{name}: {spec} here, {world.get(name)} in requirements.txt"
    tensorrt = _requirements("requirements-ros-tensorrt.txt")
    assert tensorrt["onnx"] == world["onnx"] and tensorrt["tensorrt-cu13"].startswith("==")
    relabel = _requirements("requirements-ros-relabel.txt")
    assert relabel and all(world.get(name) == spec for name, spec in relabel.items()), relabel
    # Nothing in the ML file that apt provides (a pip copy would shadow the apt one cv_bridge uses).
    assert not {"opencv-python", "opencv-python-headless", "cv-bridge"} & set(ml)
