"""YAML loading that keeps line/column positions for error messages.

Only `yaml.safe_load` semantics: the node tree is composed with SafeLoader and every
scalar is constructed by SafeConstructor, so no tag can build a Python object.
"""

from __future__ import annotations

import datetime
import re
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
        pos, message = plain_yaml_error(file, text, exc)
        raise YamlError(pos, f"invalid YAML: {message}") from None
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
        first_seen = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                raise YamlError(_mark(key_node, file), "mapping keys must be plain scalars")
            if key in out:
                raise YamlError(_mark(key_node, file), f"duplicate key '{key}': it is already on line "
                                f"{first_seen[key]} of this mapping; remove one or merge them")
            first_seen[key] = key_node.start_mark.line + 1
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


# ---- PyYAML's errors in plain words ----------------------------------------------------------

def _line(text: str, index: int) -> str:
    lines = text.splitlines()
    return lines[index] if 0 <= index < len(lines) else ""


def _previous_content_line(text: str, index: int) -> int | None:
    """Index of the nearest line above `index` that holds something other than blanks or a comment."""
    for i in range(index - 1, -1, -1):
        stripped = _line(text, i).strip()
        if stripped and not stripped.startswith("#"):
            return i
    return None


def plain_yaml_error(file: str, text: str, exc: yaml.MarkedYAMLError) -> tuple[Position, str]:
    """The position to fix and a sentence saying what is wrong, for the common PyYAML errors.

    Anything not recognised keeps PyYAML's own words (at its own position)."""
    problem = str(exc.problem or "")
    pmark, cmark = exc.problem_mark, exc.context_mark

    def at(mark, col=None):
        if mark is None:
            return Position(file, 1, 1)
        return Position(file, mark.line + 1, (mark.column if col is None else col) + 1)

    if "'\\t'" in problem and pmark is not None:
        if not _line(text, pmark.line)[: pmark.column].strip():
            return at(pmark), f"line {pmark.line + 1} is indented with a tab; YAML indentation must be spaces"
        return at(pmark), "a tab character is not allowed here; use spaces"
    if problem == "could not find expected ':'" and cmark is not None:
        key = _line(text, cmark.line).strip()
        return at(cmark), (f"line {cmark.line + 1} ('{key[:40]}') is missing the ':' after its key "
                           "(write `key: value`)")
    if problem == "found unexpected end of stream" and exc.context == "while scanning a quoted scalar":
        quote = _line(text, cmark.line)[cmark.column: cmark.column + 1] or "quote"
        return at(cmark), (f"the {quote} quote opened on line {cmark.line + 1} is never closed; "
                           f"add the closing {quote}")
    if problem == "mapping values are not allowed here" and pmark is not None:
        line = _line(text, pmark.line)
        before = line[: pmark.column]
        if ":" in before.split("#", 1)[0] and before.strip():
            return at(pmark), ("this value contains ': ' (a colon and a space); put the whole value in quotes, "
                               "e.g. key: \"a: b\"")
        prev = _previous_content_line(text, pmark.line)
        if prev is not None:
            prev_text = _line(text, prev)
            if ":" not in prev_text and not prev_text.strip().startswith("-"):
                return (Position(file, prev + 1, len(prev_text.rstrip()) + 1),
                        f"line {prev + 1} ('{prev_text.strip()[:40]}') is missing the ':' after its key, so "
                        f"line {pmark.line + 1} cannot start a mapping under it (write `{prev_text.strip()[:40]}:`)")
        return at(pmark), (f"line {pmark.line + 1} is indented further than the line above allows: only a key "
                           "ending in ':' (with nothing after it) can have keys indented under it; check the indentation")
    if problem.startswith("expected <block end>") or problem in ("did not find expected key",
                                                                  "did not find expected '-' indicator"):
        where = f" (the block it should belong to starts on line {cmark.line + 1}, column {cmark.column + 1})" \
            if cmark is not None else ""
        return at(pmark), (f"line {pmark.line + 1} is not indented like the lines around it{where}; "
                           "keys of one mapping (and items of one list) must start in the same column")
    flow = re.match(r"expected ',' or '([}\]])', but got", problem)
    if flow and cmark is not None:
        opener = "{" if flow.group(1) == "}" else "["
        return at(pmark), (f"the '{opener}' opened on line {cmark.line + 1} is not closed with '{flow.group(1)}' "
                           f"(or two items lack a ',' between them)")
    alias = re.match(r"found undefined alias '(.*)'", problem)
    if alias:
        return at(pmark), f"'*{alias.group(1)}' refers to an anchor '&{alias.group(1)}' that is not defined above it"
    return at(pmark or cmark), problem or str(exc.context or exc)
