"""YAML in and out: a bounded safe loader (duplicate keys, alias bombs and deep nesting refused,
files read up to a limit) and the dumper of ``config.yaml`` (prompt pairs and lists of scalars in
flow style)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError



class _FlowList(list):
    """A list of scalars dumped in flow style (``[caption, filter]``, ``[1, 2, 3]``)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _FlowList,
    lambda dumper, value: dumper.represent_sequence(
        "tag:yaml.org,2002:seq", list(value), flow_style=True
    ),
)


def _flow_pairs(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _flow_pairs(v) for k, v in data.items()}
    if isinstance(data, list):
        if data and all(isinstance(x, (str, int, float, bool)) for x in data):
            return _FlowList(data)  # prompt pairs, stages
        return [_flow_pairs(v) for v in data]
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep=False):
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # let the base constructor raise its own error
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r} (first defined on line {seen[key].line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


#: Largest config file read (a config is a short text file; /dev/zero must not be read forever).
MAX_CONFIG_BYTES = 1 << 20
#: Most values (mapping keys, values, list items) a YAML document may expand to, aliases counted
#: as many times as they are used (a "billion laughs" alias bomb of < 1 KB is refused at once).
MAX_YAML_NODES = 100_000


def _yaml_children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_yaml_size(root: yaml.Node, limit: int = MAX_YAML_NODES) -> int:
    """Number of nodes ``root`` expands to with every alias copied out (memoised over the node
    graph, so linear in the document's size); raises ValueError for a recursive alias."""
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_nodes.discard(key)
            size[key] = min(limit + 1, 1 + sum(size[id(c)] for c in _yaml_children(node)))
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise ValueError("a recursive alias (an anchor used inside itself)")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _yaml_children(node) if id(c) not in size)
    return size[id(root)]


def _bounded_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` (duplicate keys refused) with the alias expansion bounded by
    :data:`MAX_YAML_NODES`; YAML errors and bombs raise ConfigError, never with the value in it."""
    loader = _UniqueKeyLoader(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            try:
                n = _expanded_yaml_size(node)
            except ValueError as exc:
                raise ConfigError(f"{source}: refused: the YAML has {exc}") from None
            if n > MAX_YAML_NODES:
                raise ConfigError(
                    f"{source}: refused: the YAML expands to more than {MAX_YAML_NODES} values once its "
                    "aliases (*name) are copied out (an alias bomb?); a config needs a few hundred")
            return loader.construct_document(node)
        except RecursionError:
            raise ConfigError(f"{source}: refused: the YAML is nested too deeply") from None
    finally:
        loader.dispose()


def _read_config_text(path: Path) -> str:
    """The config file's text, reading at most MAX_CONFIG_BYTES + 1 bytes."""
    with open(path, "rb") as f:
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES // 2**20} MB (or not a regular file); "
            "a config is a short YAML text file (see configs/*.yaml)")
    return data.decode("utf-8")


def _yaml_error_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown line"
    text = problem
    if context and "duplicate" not in problem:
        started = ""
        if context_mark is not None and mark is not None and context_mark.line != mark.line:
            started = f" started on line {context_mark.line + 1}"
        text = f"{problem} ({context}{started})"
    return f"{where}: {text}"

