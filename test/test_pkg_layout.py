"""The README's layout table is the map: every import between sub-packages (function-local ones too)
is one the table allows, there is no cycle, and everything below `ros/` imports without ROS."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "semla_ros"
ROS_FREE = ("catseg", "core", "backends", "engine", "evaluation", "training", "verify", "relabel", "demo")


def allowed_imports() -> dict[str, set[str]]:
    """{sub-package: sub-packages it may import}, read from the README's table."""
    rows = re.findall(r"^\| `semla_ros/(\w+)/` \|.*\| ([^|]+) \|$", (REPO / "README.md").read_text(), re.M)
    table, order = {}, []
    for name, allowed in rows:
        allowed = allowed.strip()
        if allowed == "all of the above":
            table[name] = set(order)
        else:
            table[name] = set() if allowed == "—" else {a.strip() for a in allowed.split(",")}
        order.append(name)
    return table


def imports_between_subpackages() -> set[tuple[str, str, str]]:
    """(importer sub-package, imported sub-package, file) for every import statement anywhere in a file."""
    edges = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if len(rel.parts) < 2:
            continue
        owner = rel.parts[0]
        module_parts = ["semla_ros", *rel.with_suffix("").parts]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module_parts[:len(module_parts) - node.level]
                    targets = [".".join(base + ([node.module] if node.module else []))]
                    if not node.module:
                        targets = [".".join(base + [a.name]) for a in node.names]
                else:
                    targets = [node.module]
            for target in targets:
                parts = target.split(".")
                if parts[0] == "semla_ros" and len(parts) > 1 and (PACKAGE / parts[1]).is_dir() \
                        and parts[1] != owner:
                    edges.add((owner, parts[1], str(rel)))
    return edges


def test_every_subpackage_is_on_the_map():
    table = allowed_imports()
    on_disk = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert on_disk == set(table), f"not on the README map: {on_disk - set(table)}; gone: {set(table) - on_disk}"


def test_imports_follow_the_map_and_run_one_way():
    table = allowed_imports()
    bad = sorted(f"{a} -> {b} ({f})" for a, b, f in imports_between_subpackages() if b not in table[a])
    assert not bad, "imports the README's table does not allow:\n" + "\n".join(bad)
    graph: dict[str, set[str]] = {}
    for a, b, _ in imports_between_subpackages():
        graph.setdefault(a, set()).add(b)

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))
    cycles = sorted(a for a in graph if reaches(a, a))
    assert not cycles, f"import cycles through {cycles}"


BLOCK_ROS = """
import importlib, pkgutil, sys
class NoRos:
    BLOCKED = ("rclpy", "rcl_interfaces", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs",
               "builtin_interfaces", "cv_bridge", "rosidl_runtime_py", "launch", "launch_ros")
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"ROS module {name} imported")
        return None
sys.meta_path.insert(0, NoRos())
import semla_ros
names = []
for sub in sys.argv[1:]:
    pkg = importlib.import_module(f"semla_ros.{sub}")
    names += [m.name for m in pkgutil.walk_packages(pkg.__path__, f"semla_ros.{sub}.")]
for name in names:
    importlib.import_module(name)
print(len(names), "modules imported without ROS")
"""


def test_everything_below_ros_imports_without_ros():
    out = subprocess.run([sys.executable, "-c", BLOCK_ROS, *ROS_FREE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "modules imported without ROS" in out.stdout
