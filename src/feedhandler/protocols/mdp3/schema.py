"""CME MDP 3.0 SBE schema loader and pure-Python SBE codec (reference and test-packet builder).

This module reads CME's ``templates_FixBinary.xml`` (any schema version) into flat layouts: every
message and repeating group becomes a list of ``Leaf`` fields with a byte offset, a primitive type,
a null value or constant, and the decimal exponent for mantissa/exponent composites. The same
layouts drive

- ``tools/gen_mdp3.py``, which writes the C tables the native decoder uses (so no layout is typed by
  hand), and
- ``encode_message`` / ``decode_message`` / ``encode_packet``, a slow but simple codec that builds
  test packets for every template and serves as the Python reference in tests.

It imports nothing from the rest of the package so that the generator can load it by path.
"""
from __future__ import annotations

import os
import re
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

PRIM = {
    # name: (struct code, size, signed)
    "char": ("s", 1, False),
    "int8": ("b", 1, True),
    "uint8": ("B", 1, False),
    "int16": ("h", 2, True),
    "uint16": ("H", 2, False),
    "int32": ("i", 4, True),
    "uint32": ("I", 4, False),
    "int64": ("q", 8, True),
    "uint64": ("Q", 8, False),
    "float": ("f", 4, True),
    "double": ("d", 8, True),
}
# SBE's default null values (used when an optional type names none)
DEFAULT_NULL = {
    "char": 0, "int8": -(2**7), "uint8": 2**8 - 1, "int16": -(2**15), "uint16": 2**16 - 1,
    "int32": -(2**31), "uint32": 2**32 - 1, "int64": -(2**63), "uint64": 2**64 - 1,
}

HEADER = struct.Struct("<HHHH")  # blockLength, templateId, schemaId, version
HEADER_SIZE = HEADER.size
PACKET_HEADER = struct.Struct("<IQ")  # MsgSeqNum, SendingTime
MSG_SIZE = struct.Struct("<H")  # MsgSize: bytes of the message including this field


@dataclass
class Leaf:
    """One primitive on the wire (or a constant that takes no bytes)."""

    name: str               # field name; composite parts other than mantissa are "Field.part"
    offset: int             # bytes from the start of the block (-1: constant)
    prim: str               # primitive type
    length: int = 1         # elements (char arrays > 1)
    null: int | None = None  # null value when optional
    const: int | str | None = None  # constant value (presence="constant")
    exponent: int | None = None     # decimal composites: the constant exponent of the mantissa
    since_version: int = 0

    @property
    def size(self) -> int:
        return 0 if self.const is not None else PRIM[self.prim][1] * self.length


@dataclass
class Group:
    name: str
    id: int
    block_length: int
    dim_size: int             # bytes of the dimension header
    num_offset: int           # where numInGroup sits in the dimension header
    num_prim: str             # numInGroup's primitive type
    leaves: list[Leaf] = field(default_factory=list)
    groups: list["Group"] = field(default_factory=list)  # nested groups (none in CME schemas so far)
    since_version: int = 0

    def leaf(self, name: str) -> Leaf | None:
        return next((x for x in self.leaves if x.name == name), None)


@dataclass
class Template:
    name: str
    id: int
    description: str
    block_length: int
    leaves: list[Leaf] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    since_version: int = 0

    def leaf(self, name: str) -> Leaf | None:
        return next((x for x in self.leaves if x.name == name), None)


@dataclass
class Schema:
    id: int
    version: int
    path: str
    templates: dict[int, Template]
    by_name: dict[str, Template]


def _strip_ns(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _int(text: str | None, prim: str) -> int | str | None:
    if text is None:
        return None
    text = text.strip()
    if prim == "char":
        return text
    return int(text)


class _Types:
    def __init__(self, root: ET.Element):
        self.types: dict[str, ET.Element] = {}
        for types in root:
            if _strip_ns(types.tag) != "types":
                continue
            for el in types:
                self.types[el.get("name")] = el

    def leaves(self, type_name: str, name: str, offset: int, since: int) -> list[Leaf]:
        """Flatten the type named type_name, placed at offset, into leaves."""
        if type_name in PRIM:
            return [self._prim_leaf(name, offset, type_name, None, since)]
        el = self.types[type_name]
        kind = _strip_ns(el.tag)
        if kind == "type":
            return [self._type_leaf(el, name, offset, since)]
        if kind in ("enum", "set"):
            enc = el.get("encodingType")
            sub = self.leaves(enc, name, offset, since)
            return sub
        if kind == "composite":
            parts = list(el)
            names = [p.get("name") for p in parts]
            if names[:2] == ["mantissa", "exponent"] and len(parts) == 2:
                m = self._type_leaf(parts[0], name, offset, since)
                e = parts[1]
                if e.get("presence") == "constant":
                    m.exponent = int(e.text.strip())
                    return [m]
                el_e = self._type_leaf(e, name + ".exponent", offset + m.size, since)
                m.name = name + ".mantissa"
                return [m, el_e]
            out, off = [], offset
            for p in parts:
                if p.get("offset") is not None:
                    off = offset + int(p.get("offset"))
                leaf = self._type_leaf(p, f"{name}.{p.get('name')}", off, since)
                out.append(leaf)
                off += leaf.size
            return out
        raise ValueError(f"unsupported type kind {kind} for {type_name}")

    def _prim_leaf(self, name, offset, prim, null, since):
        return Leaf(name, offset, prim, 1, null, None, None, since)

    def _type_leaf(self, el: ET.Element, name: str, offset: int, since: int) -> Leaf:
        if _strip_ns(el.tag) == "ref" or el.get("primitiveType") is None:
            # a reference to another named type
            return self.leaves(el.get("type"), name, offset, since)[0]
        prim = el.get("primitiveType")
        length = int(el.get("length", "1"))
        presence = el.get("presence", "required")
        if presence == "constant":
            return Leaf(name, -1, prim, length, None, _int(el.text, prim), None, since)
        null = None
        if presence == "optional":
            nv = el.get("nullValue")
            null = _int(nv, prim) if nv is not None else DEFAULT_NULL.get(prim)
            if prim == "char" and isinstance(null, str):
                null = ord(null) if null else 0
        return Leaf(name, offset, prim, length, null, None, None, since)

    def size(self, type_name: str) -> int:
        ls = self.leaves(type_name, "x", 0, 0)
        return max((x.offset + x.size for x in ls if x.const is None), default=0)


def _fields(types: _Types, parent: ET.Element, leaves: list, groups: list, group_cls_args=None):
    off = 0
    for el in parent:
        tag = _strip_ns(el.tag)
        since = int(el.get("sinceVersion", "0"))
        if tag == "field":
            if el.get("offset") is not None:
                off = int(el.get("offset"))
            new = types.leaves(el.get("type"), el.get("name"), off, since)
            # a field whose type is constant takes no bytes and keeps the running offset
            leaves.extend(new)
            real = [x for x in new if x.const is None]
            if real:
                off = max(x.offset + x.size for x in real)
            elif el.get("presence") == "constant":
                pass
        elif tag == "group":
            dim = types.types[el.get("dimensionType", "groupSizeEncoding")]
            dim_leaves = types.leaves(el.get("dimensionType", "groupSizeEncoding"), "dim", 0, 0)
            num = next(x for x in dim_leaves if x.name == "dim.numInGroup")
            g = Group(
                name=el.get("name"),
                id=int(el.get("id")),
                block_length=int(el.get("blockLength")),
                dim_size=types.size(dim.get("name")),
                num_offset=num.offset,
                num_prim=num.prim,
                since_version=since,
            )
            _fields(types, el, g.leaves, g.groups)
            groups.append(g)


def load_schema(path: str | Path) -> Schema:
    """Parse one CME SBE schema XML file."""
    root = ET.parse(str(path)).getroot()
    types = _Types(root)
    templates: dict[int, Template] = {}
    for el in root:
        if _strip_ns(el.tag) != "message":
            continue
        t = Template(
            name=el.get("name"),
            id=int(el.get("id")),
            description=el.get("description") or re.sub(r"\d+$", "", el.get("name")),
            block_length=int(el.get("blockLength", "0")),
            since_version=int(el.get("sinceVersion", "0")),
        )
        _fields(types, el, t.leaves, t.groups)
        templates[t.id] = t
    return Schema(
        id=int(root.get("id")),
        version=int(root.get("version")),
        path=str(path),
        templates=templates,
        by_name={t.name: t for t in templates.values()},
    )


def default_schema_dir() -> Path:
    """Where CME's schema XML files are: $FH_MDP3_SCHEMA_DIR, else ``shared/data/mdp3/schema`` beside a
    source checkout (found from this file in an editable install, or from the working directory when
    run from the checkout, as the tests and CI do). The first candidate that exists wins; when none
    does, the last is returned and load_schemas() says what to set.

    The XML files are CME's and are not shipped with the package: neither the native decoder nor this
    codec needs them at run time (both use tables generated from them and committed: the C headers and
    ``_layouts.py``). Only the generator and the staleness tests read them.
    """
    env = os.environ.get("FH_MDP3_SCHEMA_DIR")
    if env:
        return Path(env)
    rel = Path("shared") / "data" / "mdp3" / "schema"
    candidates = [Path(__file__).resolve().parents[4].parent / rel, Path.cwd().parent / rel, Path.cwd() / rel]
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[-1]


# ---- the layouts as plain data (what tools/gen_mdp3.py writes into _layouts.py) ------------------
# Leaf:     (name, offset, prim, length, null, const, exponent, since_version)
# Group:    (name, id, block_length, dim_size, num_offset, num_prim, since_version, leaves, groups)
# Template: (name, id, description, block_length, since_version, leaves, groups)
# Schema:   (id, version, source, templates)
def _leaf_data(x: Leaf) -> tuple:
    return (x.name, x.offset, x.prim, x.length, x.null, x.const, x.exponent, x.since_version)


def _group_data(g: Group) -> tuple:
    return (g.name, g.id, g.block_length, g.dim_size, g.num_offset, g.num_prim, g.since_version,
            tuple(_leaf_data(x) for x in g.leaves), tuple(_group_data(x) for x in g.groups))


def schema_to_data(s: Schema, source: str) -> tuple:
    """``s`` as nested tuples of literals (``source`` names the XML it came from)."""
    return (s.id, s.version, source, tuple(
        (t.name, t.id, t.description, t.block_length, t.since_version,
         tuple(_leaf_data(x) for x in t.leaves), tuple(_group_data(g) for g in t.groups))
        for t in s.templates.values()))


def _group_from(d: tuple) -> Group:
    name, id_, bl, dim_size, num_offset, num_prim, since, leaves, groups = d
    return Group(name, id_, bl, dim_size, num_offset, num_prim, [Leaf(*x) for x in leaves],
                 [_group_from(g) for g in groups], since)


def schema_from_data(d: tuple) -> Schema:
    sid, version, source, tdata = d
    templates = {}
    for name, id_, desc, bl, since, leaves, groups in tdata:
        templates[id_] = Template(name, id_, desc, bl, [Leaf(*x) for x in leaves],
                                  [_group_from(g) for g in groups], since)
    return Schema(id=sid, version=version, path=source, templates=templates,
                  by_name={t.name: t for t in templates.values()})


_GENERATED: dict[int, Schema] | None = None


def generated_schemas() -> dict[int, Schema]:
    """The layouts of every schema version the package knows, from the generated ``_layouts.py`` (made
    from CME's XML by ``tools/gen_mdp3.py`` at development time, like the native decoder's headers), so
    an installed package needs no XML file."""
    global _GENERATED
    if _GENERATED is None:
        from feedhandler.protocols.mdp3._layouts import SCHEMAS
        _GENERATED = {d[1]: schema_from_data(d) for d in SCHEMAS}
    return _GENERATED


def load_schemas(directory: str | Path | None = None) -> dict[int, Schema]:
    """Every schema keyed by version: the package's generated layouts, or, when ``directory`` (or
    ``$FH_MDP3_SCHEMA_DIR``) is given, every ``*.xml`` schema in that folder (another schema version)."""
    if directory is None and not os.environ.get("FH_MDP3_SCHEMA_DIR"):
        return generated_schemas()
    d = Path(directory) if directory else default_schema_dir()
    if not d.is_dir():
        raise FileNotFoundError(f"no MDP 3.0 schema directory at {d}: set FH_MDP3_SCHEMA_DIR to the folder "
                                "holding CME's templates_FixBinary.xml files")
    out = {}
    for p in sorted(d.glob("*.xml")):
        s = load_schema(p)
        out[s.version] = s
    return out


# ---- pure-Python codec -------------------------------------------------------------------------
def _pack_leaf(buf: bytearray, base: int, leaf: Leaf, value) -> None:
    if leaf.const is not None:
        return
    code, size, _signed = PRIM[leaf.prim]
    pos = base + leaf.offset
    if leaf.prim == "char":
        if value is None:
            value = b"\0" * leaf.length if leaf.null is None else bytes([leaf.null]) * leaf.length
        if isinstance(value, int):
            value = bytes([value])
        if isinstance(value, str):
            value = value.encode("latin-1")
        buf[pos : pos + leaf.length] = value[: leaf.length].ljust(leaf.length, b"\0")
        return
    if value is None:
        value = leaf.null if leaf.null is not None else 0
    struct.pack_into("<" + code, buf, pos, value)


def _unpack_leaf(buf, base: int, leaf: Leaf):
    if leaf.const is not None:
        return leaf.const
    code, size, _ = PRIM[leaf.prim]
    pos = base + leaf.offset
    if leaf.prim == "char":
        raw = bytes(buf[pos : pos + leaf.length])
        if leaf.length == 1:
            return None if (leaf.null is not None and raw[0] == leaf.null) else raw
        return raw.split(b"\0", 1)[0]
    v = struct.unpack_from("<" + code, buf, pos)[0]
    if leaf.null is not None and v == leaf.null:
        return None
    return v


def encode_message(schema: Schema, template: str | int, values: dict | None = None,
                   groups: dict | None = None, block_length: int | None = None,
                   version: int | None = None) -> bytes:
    """SBE message (header + root block + groups) for a template, without the MDP MsgSize field.

    values maps leaf names to ints (decimals: mantissas), bytes/str (chars) or None (null); leaves
    not given are null when optional and 0 otherwise. groups maps group names to lists of such dicts.
    block_length overrides the root block length (a newer producer with extension fields).
    """
    t = schema.templates[template] if isinstance(template, int) else schema.by_name[template]
    values = values or {}
    groups = groups or {}
    bl = t.block_length if block_length is None else block_length
    out = bytearray(HEADER.pack(bl, t.id, schema.id, schema.version if version is None else version))
    block = bytearray(max(bl, t.block_length))
    for leaf in t.leaves:
        _pack_leaf(block, 0, leaf, values.get(leaf.name))
    out += block[:bl]
    for g in t.groups:
        out += _encode_group(g, groups.get(g.name, []))
    return bytes(out)


def _encode_group(g: Group, rows: list) -> bytes:
    dim = bytearray(g.dim_size)
    struct.pack_into("<H", dim, 0, g.block_length)
    struct.pack_into("<" + PRIM[g.num_prim][0], dim, g.num_offset, len(rows))
    out = bytearray(dim)
    for row in rows:
        block = bytearray(g.block_length)
        for leaf in g.leaves:
            _pack_leaf(block, 0, leaf, row.get(leaf.name))
        out += block
        for sub in g.groups:
            out += _encode_group(sub, row.get(sub.name, []))
    return bytes(out)


def decode_message(schemas: dict[int, Schema], buf: bytes) -> dict:
    """Decode one SBE message (starting at the SBE header) into a dict; the Python reference."""
    bl, tid, sid, ver = HEADER.unpack_from(buf, 0)
    s = schemas[ver]
    t = s.templates[tid]
    out = {"_template": t.name, "_id": tid, "_version": ver}
    for leaf in t.leaves:
        out[leaf.name] = _unpack_leaf(buf, HEADER_SIZE, leaf)
    pos = HEADER_SIZE + bl
    for g in t.groups:
        rows, pos = _decode_group(g, buf, pos)
        out[g.name] = rows
    return out


def _decode_group(g: Group, buf, pos: int):
    gbl = struct.unpack_from("<H", buf, pos)[0]
    n = struct.unpack_from("<" + PRIM[g.num_prim][0], buf, pos + g.num_offset)[0]
    pos += g.dim_size
    rows = []
    for _ in range(n):
        row = {leaf.name: _unpack_leaf(buf, pos, leaf) for leaf in g.leaves}
        pos += gbl
        for sub in g.groups:
            row[sub.name], pos = _decode_group(sub, buf, pos)
        rows.append(row)
    return rows, pos


def encode_packet(seq: int, sending_time: int, messages: list[bytes]) -> bytes:
    """MDP 3.0 packet: binary packet header, then each message behind its 2-byte MsgSize."""
    out = bytearray(PACKET_HEADER.pack(seq, sending_time))
    for m in messages:
        out += MSG_SIZE.pack(len(m) + 2) + m
    return bytes(out)
