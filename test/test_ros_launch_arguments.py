"""segment.launch.py's arguments and parameter precedence, and demo.launch.py's steps, without launch_ros.

launch_ros is not installable here, so the precedence is tested where it is decided: the launch file
passes `node_parameters(params_file, arguments)` (semla_ros.ros.launch_arguments) to its Node, and
launch_ros turns that list into one `--params-file` per entry, in order (a dict is first written to a
temporary YAML under the node's full name, launch_ros.actions.Node._create_params_file_from_dict). The
test does the same and lets rcl parse the result in a real rclpy context, with the node's own
declaration (parameters.declare). The launch files' sources are checked to use exactly these helpers.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="ROS 2 Python packages (rclpy) not installed")

from semla_ros.engine.spec import BACKENDS  # noqa: E402
from semla_ros.ros import parameters  # noqa: E402
from semla_ros.ros.launch_arguments import ARGUMENT_BY_NAME, ARGUMENTS, NOT_GIVEN, executable, node_parameters  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
NODE = "/semla/semla_segmenter"


def _launch_values(**given) -> dict[str, str]:
    """What LaunchConfiguration.perform gives for every argument: its default unless given."""
    values = {a.name: a.default for a in ARGUMENTS}
    values.update(given)
    return values


def _as_launch_ros_passes_them(entries: list, tmp_path: Path) -> list[str]:
    """--ros-args for `parameters=entries`: a file as is, a dict written to a YAML keyed by the node's name."""
    args = ["--ros-args", "-r", "__ns:=/semla"]
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            path = tmp_path / f"launch_params_{i}.yaml"
            path.write_text(yaml.dump({NODE: {"ros__parameters": entry}}, default_flow_style=False))
            entry = str(path)
        args += ["--params-file", str(entry)]
    return args


def _declared_values(args: list[str]) -> tuple[dict, list[str]]:
    import rclpy

    context = rclpy.context.Context()
    rclpy.init(context=context, args=args)
    try:
        node = rclpy.create_node("semla_segmenter", namespace="/semla", context=context)
        values, problems = parameters.declare(node)
        node.destroy_node()
        return values, problems
    finally:
        rclpy.try_shutdown(context=context)


def test_arguments_describe_themselves_and_name_real_parameters():
    assert {"image_topic", "image_topics", "params_file", "namespace", "checkpoint", "library", "model_config",
            "navigator", "backend", "device", "log_level", "managed"} == set(ARGUMENT_BY_NAME)
    for argument in ARGUMENTS:
        assert argument.description, argument.name
        if argument.choices:
            assert argument.default in argument.choices, argument.name
        if argument.parameter:
            assert argument.parameter in parameters.SPEC_BY_NAME, argument.name
            assert argument.default == NOT_GIVEN, f"{argument.name}: a launch default would override params_file"
    assert set(ARGUMENT_BY_NAME["backend"].choices) == {NOT_GIVEN, *BACKENDS}
    assert ARGUMENT_BY_NAME["library"].parameter == "library_path"


def test_only_given_arguments_reach_the_node_and_after_the_params_file():
    assert node_parameters("/u.yaml", _launch_values()) == ["/u.yaml"]
    assert node_parameters("/u.yaml", _launch_values(device="cuda", library="/lib", image_topic="/cam")) == [
        "/u.yaml", {"device": "cuda", "library_path": "/lib"}]
    assert node_parameters("/u.yaml", _launch_values(image_topics="[front, left,'right']")) == [
        "/u.yaml", {"image_topics": ["front", "left", "right"]}]
    assert node_parameters("/u.yaml", _launch_values(image_topics="rear")) == ["/u.yaml", {"image_topics": ["rear"]}]


def test_params_file_value_wins_over_launch_defaults_and_a_given_argument_wins_over_the_file(tmp_path):
    user = tmp_path / "user.yaml"
    user.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "device": "cpu", "backend": "torch", "model_config": "tiny", "checkpoint": "/weights/model_large.pth",
        "top_k": 7}}}))

    values, problems = _declared_values(_as_launch_ros_passes_them(node_parameters(str(user), _launch_values()),
                                                                   tmp_path))
    assert not problems
    assert (values["device"], values["backend"], values["model_config"], values["checkpoint"], values["top_k"]) == (
        "cpu", "torch", "tiny", "/weights/model_large.pth", 7)

    given = _launch_values(device="cuda:1", checkpoint="/other/model.pth", navigator="tower",
                           image_topics="[front,left]")
    values, problems = _declared_values(_as_launch_ros_passes_them(node_parameters(str(user), given), tmp_path))
    assert not problems
    assert (values["device"], values["checkpoint"], values["navigator"]) == ("cuda:1", "/other/model.pth", "tower")
    assert values["image_topics"] == ["front", "left"]
    assert (values["backend"], values["model_config"], values["top_k"]) == ("torch", "tiny", 7)


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_segment_launch_uses_the_arguments_table_and_the_precedence_helper():
    source = (LAUNCH / "segment.launch.py").read_text()
    tree = ast.parse(source)
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {("semla_ros.ros.launch_arguments", "ARGUMENTS"),
            ("semla_ros.ros.launch_arguments", "node_parameters")} <= imports
    [node] = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _keyword(n, "package") is not None]
    assert {n.id for n in ast.walk(node.func) if isinstance(n, ast.Name)} >= {"LifecycleNode", "Node"}
    parameters_arg = _keyword(node, "parameters")
    assert isinstance(parameters_arg, ast.Call) and parameters_arg.func.id == "node_parameters"
    assert _keyword(node, "executable").func.id == "executable"
    [declare] = _calls(tree, "DeclareLaunchArgument")   # one declaration, in a loop over ARGUMENTS
    loop = next(n for n in ast.walk(tree) if isinstance(n, ast.ListComp))
    assert isinstance(loop.generators[0].iter, ast.Name) and loop.generators[0].iter.id == "ARGUMENTS"
    assert "LaunchConfiguration(\"device\")" not in source and "LaunchConfiguration('device')" not in source


def test_managed_argument_picks_the_lifecycle_executable_and_launch_drives_it_to_active():
    assert executable(_launch_values()) == "semla_segmenter"
    assert executable(_launch_values(managed="true")) == "semla_segmenter_managed"
    assert (REPO / "scripts" / "semla_segmenter_managed").exists()
    tree = ast.parse((LAUNCH / "segment.launch.py").read_text())
    transitions = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("TRANSITION_")}
    assert transitions == {"TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"}
    [handler] = _calls(tree, "OnStateTransition")   # activate only once a configure reached inactive
    assert (ast.literal_eval(_keyword(handler, "start_state")), ast.literal_eval(_keyword(handler, "goal_state"))) == (
        "configuring", "inactive")


def test_demo_launch_builds_assets_then_starts_camera_and_node_on_their_params_file(tmp_path):
    tree = ast.parse((LAUNCH / "demo.launch.py").read_text())
    [build] = _calls(tree, "ExecuteProcess")
    command = [ast.literal_eval(e) if isinstance(e, ast.Constant) else None for e in _keyword(build, "cmd").elts]
    assert command[:3] == ["python3", "-m", "semla_ros.demo.node_parameters"]
    nodes = {ast.literal_eval(_keyword(n, "executable")): n for n in _calls(tree, "Node")}
    assert set(nodes) == {"semla_demo_camera", "semla_segmenter"}
    params = _keyword(nodes["semla_segmenter"], "parameters")
    assert [e.id for e in params.elts] == ["PARAMS_FILE"] and command[3] is None   # the file the step writes
    assert _calls(tree, "OnProcessExit"), "camera and node must wait for the asset step"

    # What that step writes: a params file the node accepts as it is.
    from rclpy.parameter import parameter_dict_from_yaml_file, parameter_value_to_python

    from semla_ros.demo.build_assets import Assets
    from semla_ros.demo.node_parameters import node_parameters as demo_parameters
    from semla_ros.demo.node_parameters import write_params_file

    values = demo_parameters(Assets(tmp_path / "assets"))
    path = write_params_file(tmp_path / "demo.yaml", values)
    loaded = {name: parameter_value_to_python(p.value)
              for name, p in parameter_dict_from_yaml_file(str(path), use_wildcard=True).items()}
    assert set(loaded) <= set(parameters.SPEC_BY_NAME) and parameters.validate(loaded) is None
    assert loaded["library_path"] == str(tmp_path / "assets" / "loradb") and loaded["navigator"] == "tower"


def test_official_params_file_is_the_semla_set_up():
    official = yaml.safe_load((REPO / "config" / "semla_official.yaml").read_text())["/**"]["ros__parameters"]
    assert set(official) <= set(parameters.SPEC_BY_NAME) and parameters.validate(official) is None
    assert official["model_config"] == "vitl14_336" and Path(official["checkpoint"]).name == "model_large.pth"
    assert official["navigator"].startswith("openclip:ViT-L-14/openai=") and official["navigator_normalize"] is False
    assert (official["top_k"], official["temperature"], official["distance"]) == (5, 0.05, "euclidean")


def test_launch_helper_imports_with_the_standard_library_only():
    """`ros2 launch` runs on the system Python, which does not see the venv's ML packages."""
    import subprocess
    import sys

    probe = ("import sys; import semla_ros.ros.launch_arguments; "
             "print(sorted(m for m in ('rclpy', 'torch', 'numpy', 'yaml', 'launch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
