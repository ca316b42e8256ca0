"""FIX data dictionaries (QuickFIX XML: FIX42.xml, FIX44.xml) as lookup tables for validation.

    d = FixDictionary.load("/path/FIX44.xml")
    d.fields[40]            -> FieldDef(number=40, name="OrdType", type="CHAR", enums={"1", "2", ...})
    d.messages["D"]         -> MessageDef(name="NewOrderSingle", required={11, 54, 55, ...}, ...)
    d.messages["D"].groups  -> {386: GroupDef(counter=386, delimiter=336, fields=(336, 625), ...)}

Components are expanded in place (a required component makes its required fields required), so a
message definition is a flat set of tags plus its repeating groups; groups nest. The header and trailer
are definitions of their own (``d.header``, ``d.trailer``).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FieldDef:
    number: int
    name: str
    type: str
    enums: frozenset = frozenset()


@dataclass
class GroupDef:
    counter: int                         # the NumInGroup tag
    delimiter: int                       # first field of every entry
    fields: tuple = ()                   # member tags in dictionary order (nested counters included)
    required: set = field(default_factory=set)
    groups: dict = field(default_factory=dict)   # nested: counter tag -> GroupDef


@dataclass
class MessageDef:
    name: str
    msgtype: str
    category: str                        # "admin" / "app"
    fields: tuple = ()                   # top-level tags in dictionary order (group counters included)
    required: set = field(default_factory=set)
    groups: dict = field(default_factory=dict)

    @property
    def all_tags(self) -> set:
        """Every tag that may appear in the message body, at any group depth."""
        out = set(self.fields)
        stack = list(self.groups.values())
        while stack:
            g = stack.pop()
            out.update(g.fields)
            stack.extend(g.groups.values())
        return out


# FIX types whose values must parse as integers / decimals
INT_TYPES = frozenset({"INT", "LENGTH", "NUMINGROUP", "SEQNUM", "TAGNUM", "DAYOFMONTH"})
FLOAT_TYPES = frozenset({"FLOAT", "QTY", "PRICE", "PRICEOFFSET", "AMT", "PERCENTAGE"})


class FixDictionary:
    def __init__(self, begin_string: str, fields: dict, header: MessageDef, trailer: MessageDef,
                 messages: dict):
        self.begin_string = begin_string
        self.fields: dict[int, FieldDef] = fields
        self.by_name: dict[str, int] = {f.name: n for n, f in fields.items()}
        self.header = header
        self.trailer = trailer
        self.messages: dict[str, MessageDef] = messages
        self.header_tags = header.all_tags
        self.trailer_tags = trailer.all_tags

    @classmethod
    def load(cls, path: str | Path) -> "FixDictionary":
        root = ET.parse(str(path)).getroot()
        begin = f"{root.get('type', 'FIX')}.{root.get('major')}.{root.get('minor')}"
        fields: dict[int, FieldDef] = {}
        for f in root.find("fields"):
            enums = frozenset(v.get("enum") for v in f.findall("value"))
            fields[int(f.get("number"))] = FieldDef(int(f.get("number")), f.get("name"), f.get("type"), enums)
        by_name = {f.name: n for n, f in fields.items()}
        components = {c.get("name"): c for c in (root.find("components") or [])}

        def expand(elem, required_ctx: bool):
            """-> (ordered tags, required tags, groups) of an element's children."""
            tags, req, groups = [], set(), {}
            for ch in elem:
                is_req = ch.get("required") == "Y" and required_ctx
                if ch.tag == "field":
                    n = by_name[ch.get("name")]
                    tags.append(n)
                    if is_req:
                        req.add(n)
                elif ch.tag == "group":
                    n = by_name[ch.get("name")]
                    tags.append(n)
                    if is_req:
                        req.add(n)
                    gt, greq, gg = expand(ch, True)
                    groups[n] = GroupDef(n, gt[0] if gt else 0, tuple(gt), greq, gg)
                elif ch.tag == "component":
                    ct, creq, cg = expand(components[ch.get("name")], is_req)
                    tags.extend(ct)
                    req |= creq
                    groups.update(cg)
            return tags, req, groups

        def mdef(elem, name, msgtype, cat):
            t, r, g = expand(elem, True)
            return MessageDef(name, msgtype, cat, tuple(t), r, g)

        header = mdef(root.find("header"), "header", "", "admin")
        trailer = mdef(root.find("trailer"), "trailer", "", "admin")
        messages = {}
        for m in root.find("messages"):
            messages[m.get("msgtype")] = mdef(m, m.get("name"), m.get("msgtype"), m.get("msgcat"))
        return cls(begin, fields, header, trailer, messages)

    def is_valid_format(self, tag: int, value: bytes) -> bool:
        """Value syntax check for the field's type (ints, decimals, booleans, UTC timestamps, chars)."""
        f = self.fields.get(tag)
        if f is None:
            return True
        t = f.type
        try:
            if t in INT_TYPES:
                return _INT.fullmatch(value) is not None
            elif t in FLOAT_TYPES:
                return _FLOAT.fullmatch(value) is not None
            elif t == "BOOLEAN":
                return value in (b"Y", b"N")
            elif t == "CHAR":
                return len(value) == 1
            elif t in ("UTCTIMESTAMP",):
                return _utc_ts_ok(value)
        except ValueError:
            return False
        return True


_INT = re.compile(rb"-?[0-9]+")
_FLOAT = re.compile(rb"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")


def _utc_ts_ok(v: bytes) -> bool:
    # YYYYMMDD-HH:MM:SS[.sss[sss[sss]]]
    if len(v) < 17 or v[8:9] != b"-" or v[11:12] != b":" or v[14:15] != b":":
        return False
    if not (v[:8].isdigit() and v[9:11].isdigit() and v[12:14].isdigit() and v[15:17].isdigit()):
        return False
    if len(v) > 17 and (v[17:18] != b"." or not v[18:].isdigit()):
        return False
    return True
