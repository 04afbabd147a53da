"""YAML loading that keeps line/column positions for error messages.

Only `yaml.safe_load` semantics: the node tree is composed with SafeLoader and every
scalar is constructed by SafeConstructor, so no tag can build a Python object.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class Position:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class YamlDocument:
    """A parsed YAML document plus the position of every mapping key and value."""

    def __init__(self, file: str, data, positions: dict[tuple, Position]):
        self.file = file
        self.data = data
        self._positions = positions

    def position(self, path) -> Position:
        """Best position for a JSON path (tuple of keys/indexes): the deepest known prefix."""
        path = tuple(path)
        while path:
            if path in self._positions:
                return self._positions[path]
            path = path[:-1]
        return self._positions.get((), Position(self.file, 1, 1))


class YamlError(Exception):
    def __init__(self, position: Position, message: str):
        super().__init__(f"{position}: {message}")
        self.position = position
        self.message = message


def load_yaml(file: str, text: str) -> YamlDocument:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # the reader refuses control characters before any parsing
        pos = exc.position if isinstance(exc.position, int) else 0
        line, col = text.count("\n", 0, pos) + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character or "\0")
        raise YamlError(Position(file, line, col), f"invalid YAML: character #x{char:04x} is not allowed "
                                                   f"({exc.reason})") from None
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Position(file, mark.line + 1, mark.column + 1) if mark else Position(file, 1, 1)
        raise YamlError(pos, f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlError(Position(file, 1, 1), f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    positions: dict[tuple, Position] = {}
    if node is None:
        return YamlDocument(file, None, {(): Position(file, 1, 1)})
    constructor = yaml.SafeLoader("")
    try:
        data = _build(node, (), positions, file, constructor)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise YamlError(Position(file, mark.line + 1, mark.column + 1), str(exc.problem)) from None
    return YamlDocument(file, data, positions)


def _mark(node, file) -> Position:
    return Position(file, node.start_mark.line + 1, node.start_mark.column + 1)


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}


def _build(node, path, positions, file, constructor):
    positions.setdefault(path, _mark(node, file))
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        raise YamlError(_mark(node, file), f"tag '{node.tag}' is not allowed (plain YAML only)")
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)
        out = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                raise YamlError(_mark(key_node, file), "mapping keys must be plain scalars")
            if key in out:
                raise YamlError(_mark(key_node, file), f"duplicate key '{key}'")
            child = path + (key,)
            positions[child] = _mark(key_node, file)
            out[key] = _build(value_node, child, positions, file, constructor)
            # a scalar value's own position is more useful than its key's for value errors
            if not isinstance(value_node, (yaml.MappingNode, yaml.SequenceNode)):
                positions[child] = _mark(value_node, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), positions, file, constructor) for i, item in enumerate(node.value)]
    value = constructor.construct_object(node, deep=True)
    # YAML timestamps become ISO strings, as JSON Schema and FHIR expect
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value
