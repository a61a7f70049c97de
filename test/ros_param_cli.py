"""`ros2 param list | describe | set | dump | load` as the ros2 CLI does them, for tests where the CLI is absent.

Not a test module. The ros2 CLI (ros2cli's ros2param) is not installable here; these functions follow
its source (ros2/ros2cli, ros2param/api/__init__.py and verb/{list,describe,set,dump,load}.py; identical
on the jazzy branch and on rolling, which Kilted branched from) step by step, with the same rclpy calls:
- set: the value string is parsed by rclpy.parameter.get_parameter_value (YAML rules, as the CLI does),
  then one SetParameters request with one parameter;
- dump: ListParameters (no prefixes, unlimited depth), GetParameters of the sorted names, values through
  parameter_value_to_python, names split at '.' into nested dicts, yaml.dump(default_flow_style=False)
  under {<node full name>: {ros__parameters: ...}};
- load: rclpy's AsyncParameterClient.load_parameter_file (parameter_dict_from_yaml_file with the
  node's name as target, wildcard on like the CLI's default) = one non-atomic SetParameters request
  with every parameter of the file; the CLI prints each result ("Set parameter X successful" or
  "... failed: reason") and does not stop at a failure.
What differs: the CLI first waits for the node in the graph (wait_for_node) and runs its own node;
here the caller's Probe node is used and the services are awaited directly.
"""
from __future__ import annotations

import yaml


def _client(probe, node_name: str):
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(probe.node, node_name)
    probe.spin_until(lambda: client.services_are_ready(), 20, f"parameter services of {node_name}")
    return client


def _result(probe, future, what: str, timeout: float = 60.0):
    probe.spin_until(future.done, timeout, what)
    if future.result() is None:
        raise RuntimeError(f"{what}: {future.exception()}")
    return future.result()


def list_names(probe, node_name: str) -> list[str]:
    client = _client(probe, node_name)
    return sorted(_result(probe, client.list_parameters(), "ListParameters").result.names)


def describe(probe, node_name: str, names: list[str]) -> dict:
    """name -> ParameterDescriptor."""
    client = _client(probe, node_name)
    reply = _result(probe, client.describe_parameters(names), "DescribeParameters")
    return dict(zip(names, reply.descriptors, strict=True))


def set_value(probe, node_name: str, name: str, value: str) -> tuple[bool, str]:
    """`ros2 param set NODE NAME VALUE`: (successful, reason)."""
    from rcl_interfaces.msg import Parameter
    from rclpy.parameter import get_parameter_value

    client = _client(probe, node_name)
    parameter = Parameter(name=name, value=get_parameter_value(string_value=value))
    reply = _result(probe, client.set_parameters([parameter]), f"SetParameters {name}")
    assert len(reply.results) == 1
    return reply.results[0].successful, reply.results[0].reason


def _insert(dictionary: dict, key: str, value) -> None:
    head, dot, rest = key.partition(".")
    if dot:
        _insert(dictionary.setdefault(head, {}), rest, value)
    else:
        dictionary[key] = value


def dump(probe, node_name: str) -> str:
    """`ros2 param dump NODE`: the YAML text it prints."""
    from rclpy.parameter import parameter_value_to_python

    client = _client(probe, node_name)
    names = sorted(_result(probe, client.list_parameters(), "ListParameters").result.names)
    values = _result(probe, client.get_parameters(names), "GetParameters").values
    output = {node_name: {"ros__parameters": {}}}
    for name, value in zip(names, values, strict=True):
        _insert(output[node_name]["ros__parameters"], name, parameter_value_to_python(value))
    return yaml.dump(output, default_flow_style=False)


def load(probe, node_name: str, path, use_wildcard: bool = True) -> list[tuple[str, bool, str]]:
    """`ros2 param load NODE FILE`: (name, successful, reason) per parameter of the file, in its order."""
    from rclpy.parameter import parameter_dict_from_yaml_file

    client = _client(probe, node_name)
    future = client.load_parameter_file(str(path), use_wildcard)
    names = list(parameter_dict_from_yaml_file(str(path), use_wildcard, target_nodes=[node_name]))
    reply = _result(probe, future, "SetParameters (load)")
    assert len(reply.results) == len(names), "Not all parameters set"
    return [(name, r.successful, r.reason) for name, r in zip(names, reply.results, strict=True)]
