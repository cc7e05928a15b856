"""A bound on the work of decoding one record, checked before fastavro reads it (contract rule 6).

Avro lets the bytes say how many items an array or map block holds, and an item of a type that
takes no bytes (null, a fixed of size 0, a record of only such fields) costs nothing to claim: a
writer schema from the registry with an ``array<null>`` and a block count of 2^62 keeps fastavro
busy for millennia on a record of twelve bytes. A recursive type nested a million levels deep
exhausts the stack. Neither can be stopped once fastavro runs, so every record that fastavro
decodes is first walked here, as its writer schema says, without building a value:

* a block count is checked before a single item is read: items that take bytes must fit in the
  bytes left, and the items of all blocks of the record together are at most MAX_ITEMS;
* nesting (records, arrays, maps, unions) is at most MAX_DEPTH deep;
* everything else is bounded by the record's size, since every other value takes at least a byte.

A record over a bound raises Unbounded, whose message says which bound (never a value), and the
record is dead-lettered as undecodable. The walk follows a program compiled once per schema
(``program``): nodes of small integer codes instead of the schema's dicts.
"""

from __future__ import annotations

from typing import Any, Final

MAX_ITEMS: Final = 100_000  # array items and map entries per record, all blocks together
MAX_DEPTH: Final = 32  # LeadEvent needs 3 (record, union, map)

# Node codes. A node is a list [code, argument, zero]: ``zero`` is True for a type that always
# takes no bytes. Lists, so that a recursive named type can point at its own node. Booleans,
# floats and doubles are fixed sizes to the walk.
_NULL, _LONG, _BYTES, _FIXED, _ENUM, _UNION, _RECORD, _ARRAY, _MAP = range(9)
_PRIMITIVES: Final = {
    "null": (_NULL, None),
    "boolean": (_FIXED, 1),
    "int": (_LONG, None),
    "long": (_LONG, None),
    "float": (_FIXED, 4),
    "double": (_FIXED, 8),
    "bytes": (_BYTES, None),
    "string": (_BYTES, None),
}

Node = list[Any]


class Unbounded(ValueError):
    """The record would take more work to decode than any LeadEvent needs."""


def program(schema: Any) -> Node:
    """The walk of ``schema`` (as fastavro's parse_schema returns it)."""
    named = schema.get("__named_schemas", {}) if isinstance(schema, dict) else {}
    return _compile(schema, named, {})


def _compile(schema: Any, named: dict[str, Any], built: dict[str, Node]) -> Node:
    if isinstance(schema, list):
        return [_UNION, [_compile(branch, named, built) for branch in schema], False]
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            code, argument = _PRIMITIVES[schema]
            return [code, argument, code == _NULL]
        if schema in built:  # a named type seen before, or being built (recursion)
            return built[schema]
        return _compile(named[schema], named, built)
    kind = schema["type"]
    if not isinstance(kind, str) or kind in _PRIMITIVES:  # a logical type, or {"type": "string"}
        return _compile(kind, named, built)
    node: Node
    if kind == "fixed":
        node = [_FIXED, int(schema["size"]), int(schema["size"]) == 0]
    elif kind == "enum":
        node = [_ENUM, len(schema["symbols"]), False]
    elif kind == "array":
        items = _compile(schema["items"], named, built)
        node = [_ARRAY, items, False]
    elif kind == "map":
        values = _compile(schema["values"], named, built)
        node = [_MAP, values, False]
    elif kind in {"record", "error"}:
        # Registered before its fields, so a field of its own type points back here. Not zero
        # while being built: a record that contains itself is stopped by MAX_DEPTH instead.
        node = [_RECORD, [], False]
        built[schema["name"]] = node
        node[1] = [_compile(f["type"], named, built) for f in schema["fields"]]
        node[2] = all(field[2] for field in node[1])
    else:
        raise Unbounded(f"unknown Avro type {kind!r} in the writer schema")
    if "name" in schema:
        built.setdefault(schema["name"], node)
    return node


def check(walk: Node, data: bytes) -> None:
    """Raises Unbounded when decoding ``data`` with the walk's schema would exceed a bound;
    ValueError when the bytes end early (fastavro would refuse them too)."""
    budget = [MAX_ITEMS]
    _value(walk, data, 0, len(data), 0, budget)


def _long(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A zigzag varint of at most 10 bytes."""
    n = 0
    shift = 0
    while True:
        if pos >= end:
            raise ValueError("the record ends inside a number")
        if shift > 63:
            raise ValueError("a number longer than 10 bytes")
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return (n >> 1) ^ -(n & 1), pos


def _value(node: Node, data: bytes, pos: int, end: int, depth: int, budget: list[int]) -> int:
    code = node[0]
    if code == _NULL:
        return pos
    if code == _LONG:
        return _long(data, pos, end)[1]
    if code == _BYTES:
        size, pos = _long(data, pos, end)
        if size < 0 or size > end - pos:
            raise ValueError("a string or bytes value longer than the record")
        return pos + size
    if code == _FIXED:
        width: int = node[1]
        if width > end - pos:
            raise ValueError("the record ends inside a value")
        return pos + width
    if code == _ENUM:
        return _long(data, pos, end)[1]  # fastavro checks the index
    if depth >= MAX_DEPTH:
        raise Unbounded(f"nested deeper than {MAX_DEPTH} levels")
    if code == _UNION:
        branch, pos = _long(data, pos, end)
        branches = node[1]
        if not 0 <= branch < len(branches):
            raise ValueError("a union branch the writer schema does not have")
        return _value(branches[branch], data, pos, end, depth + 1, budget)
    if code == _RECORD:
        for field in node[1]:
            pos = _value(field, data, pos, end, depth + 1, budget)
        return pos
    return _blocks(node, data, pos, end, depth, budget)


def _blocks(node: Node, data: bytes, pos: int, end: int, depth: int, budget: list[int]) -> int:
    """An array or map: blocks of items until a count of 0."""
    item = node[1]
    is_map = node[0] == _MAP
    # The least bytes one item takes: a map entry's key is a string (at least its length byte).
    least = (1 if is_map else 0) + (0 if item[2] else 1)
    while True:
        count, pos = _long(data, pos, end)
        if count == 0:
            return pos
        if count < 0:  # a block written with its size in bytes after the count
            count = -count
            _, pos = _long(data, pos, end)
        if least and count > (end - pos) // least:
            raise Unbounded(f"a block claims {count} items, more than the {end - pos} bytes left can hold")
        budget[0] -= count
        if budget[0] < 0:
            raise Unbounded(f"more than {MAX_ITEMS} array items and map entries in one record")
        if least == 0:  # items of no bytes: nothing to read
            continue
        for _ in range(count):
            if is_map:
                pos = _value(_KEY, data, pos, end, depth + 1, budget)
            pos = _value(item, data, pos, end, depth + 1, budget)


_KEY: Final[Node] = [_BYTES, None, False]
