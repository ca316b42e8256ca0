#!/usr/bin/env python3
"""Generate the CME MDP 3.0 layout tables the native decoder uses, from CME's SBE schema XML.

    python tools/gen_mdp3.py [--schema-dir DIR]      # (re)write the headers
    python tools/gen_mdp3.py --check                 # exit 1 when a committed header is stale

Output (committed; tests/test_mdp3_generated.py runs --check):
  csrc/include/fh/mdp3_layout.h   types, roles (field names the decoder reads) and template kinds
  csrc/include/fh/mdp3_v<N>.h     one table per schema version: every template's root block length,
                                  group dimension layouts and, for each role, offset / primitive /
                                  null value / constant / decimal exponent
  csrc/include/fh/mdp3_schemas.h  the list of versions, for lookup by (schemaId, version)
  src/feedhandler/protocols/mdp3/_layouts.py  the same layouts for the pure-Python codec (synth, tests),
                                  so the installed package needs no XML

The decoder (src/feedhandler/protocols/mdp3/_decoder.pyx) is written once against roles; which byte
holds a role in which template of which version comes only from here. Nothing is typed by hand.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "csrc" / "include" / "fh"
PY_OUT = ROOT / "src" / "feedhandler" / "protocols" / "mdp3" / "_layouts.py"
DEFAULT_SCHEMAS = ROOT.parent / "shared" / "data" / "mdp3" / "schema"


def _load_schema_module():
    # Load by path: importing the package would need the built extensions.
    p = ROOT / "src" / "feedhandler" / "protocols" / "mdp3" / "schema.py"
    spec = importlib.util.spec_from_file_location("_fh_mdp3_schema", p)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


# Fields the decoder reads from the root block of a template.
ROOT_ROLES = [
    "TransactTime", "MatchEventIndicator", "SecurityID", "RptSeq", "LastMsgSeqNumProcessed",
    "TotNumReports", "TradeDate", "MDSecurityTradingStatus", "HighLimitPrice", "LowLimitPrice",
    "MaxPriceVariation", "NoChunks", "CurrentChunk", "SecurityGroup", "Asset", "SecurityTradingStatus",
    "HaltReason", "SecurityTradingEvent", "SecurityUpdateAction", "LastUpdateTime", "Symbol",
    "MinPriceIncrement", "DisplayFactor", "StrikePrice", "PutOrCall", "MarketSegmentID",
]
# Fields the decoder reads from the NoMDEntries and NoOrderIDEntries groups.
GROUP_ROLES = [
    "MDEntryPx", "MDEntrySize", "SecurityID", "RptSeq", "NumberOfOrders", "MDPriceLevel",
    "MDUpdateAction", "MDEntryType", "AggressorSide", "MDTradeEntryID", "OrderID", "MDOrderPriority",
    "MDDisplayQty", "ReferenceID", "OrderUpdateAction", "LastQty", "OpenCloseSettlFlag",
    "SettlPriceType", "TradingReferenceDate", "HighLimitPrice", "LowLimitPrice", "MaxPriceVariation",
    "ApplID",
]
ALIASES = {"TradeID": "MDTradeEntryID"}  # schema 5's MDIncrementalRefreshTrade36

# Template kinds by the message's description (stable across versions, unlike ids and names).
KINDS = [
    ("OTHER", []),
    ("HEARTBEAT", ["AdminHeartbeat"]),
    ("CHANNEL_RESET", ["ChannelReset"]),
    ("BOOK", ["MDIncrementalRefreshBook", "MDIncrementalRefreshBookLongQty"]),
    ("ORDER_BOOK", ["MDIncrementalRefreshOrderBook"]),
    ("TRADE_SUMMARY", ["MDIncrementalRefreshTradeSummary", "MDIncrementalRefreshTradeSummaryLongQty",
                       "MDIncrementalRefreshTrade"]),
    ("VOLUME", ["MDIncrementalRefreshVolume", "MDIncrementalRefreshVolumeLongQty"]),
    ("SESSION_STATS", ["MDIncrementalRefreshSessionStatistics",
                       "MDIncrementalRefreshSessionStatisticsLongQty"]),
    ("DAILY_STATS", ["MDIncrementalRefreshDailyStatistics"]),
    ("LIMITS", ["MDIncrementalRefreshLimitsBanding"]),
    ("STATUS", ["SecurityStatus"]),
    ("DEF_FUTURE", ["MDInstrumentDefinitionFuture"]),
    ("DEF_OPTION", ["MDInstrumentDefinitionOption"]),
    ("DEF_SPREAD", ["MDInstrumentDefinitionSpread"]),
    ("DEF_OTHER", ["MDInstrumentDefinitionFixedIncome", "MDInstrumentDefinitionRepo",
                   "MDInstrumentDefinitionFX"]),
    ("SNAPSHOT", ["SnapshotFullRefresh", "SnapshotFullRefreshLongQty"]),
    ("SNAPSHOT_ORDER_BOOK", ["SnapshotFullRefreshOrderBook"]),
]
KIND_OF = {d: k for k, ds in KINDS for d in ds}

TYPES = ["NONE", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "CHAR", "CONST"]
PRIM_TYPE = {"uint8": "U8", "int8": "I8", "uint16": "U16", "int16": "I16", "uint32": "U32",
             "int32": "I32", "uint64": "U64", "int64": "I64", "char": "CHAR"}
GROUP_ROLE = {"NoMDEntries": "ENTRIES", "NoOrderIDEntries": "ORDERS"}
MAX_TEMPLATE_ID = 128


def _i64(v: int) -> str:
    v = int(v)
    if v >= 2**63:
        v -= 2**64
    if v == -(2**63):
        return "INT64_MIN"
    return f"{v}LL"


def _field(leaf) -> str:
    if leaf.const is not None:
        c = leaf.const
        val = ord(c[0]) if isinstance(c, str) and c else int(c or 0)
        return f"{{{_i64(val)}, 0, FH_MDP3_T_CONST, 0, 0, 0}}"
    if leaf.prim not in PRIM_TYPE:
        raise SystemExit(f"unsupported primitive {leaf.prim} for {leaf.name}")
    null = 0 if leaf.null is None else leaf.null
    exp = 0 if leaf.exponent is None else leaf.exponent
    return (f"{{{_i64(null)}, {leaf.offset}, FH_MDP3_T_{PRIM_TYPE[leaf.prim]}, "
            f"{1 if leaf.null is not None else 0}, {exp}, {leaf.length}}}")


def _roles(leaves, roles) -> list[str]:
    out = []
    for leaf in leaves:
        name = ALIASES.get(leaf.name, leaf.name)
        if name in roles:
            out.append(f"            [FH_MDP3_{'R' if roles is ROOT_ROLES else 'G'}_{name}] = {_field(leaf)},")
    return out


def gen_layout(max_groups: int) -> str:
    lines = [
        "/* fh/mdp3_layout.h - GENERATED by tools/gen_mdp3.py; do not edit (run it again).",
        " *",
        " * Types of the per-version MDP 3.0 layout tables (fh/mdp3_v<N>.h). The decoder reads a field by",
        " * role: tmpl->root[FH_MDP3_R_RptSeq] says where (offset from the block start), how (primitive",
        " * type, length), what null means and the decimal exponent. type == FH_MDP3_T_NONE: the template",
        " * has no such field. Static constant data; safe from any thread.",
        " */",
        "#ifndef FH_MDP3_LAYOUT_H",
        "#define FH_MDP3_LAYOUT_H",
        "",
        "#include <stdint.h>",
        "",
    ]
    for i, t in enumerate(TYPES):
        lines.append(f"#define FH_MDP3_T_{t} {i}")
    lines.append("")
    for i, (k, _) in enumerate(KINDS):
        lines.append(f"#define FH_MDP3_K_{k} {i}")
    lines.append(f"#define FH_MDP3_NKINDS {len(KINDS)}")
    lines.append("")
    lines.append("#define FH_MDP3_GROUP_OTHER 0    /* stepped over using its dimension header */")
    lines.append("#define FH_MDP3_GROUP_ENTRIES 1  /* NoMDEntries */")
    lines.append("#define FH_MDP3_GROUP_ORDERS 2   /* NoOrderIDEntries */")
    lines.append("")
    lines.append("enum {")
    for i, r in enumerate(ROOT_ROLES):
        lines.append(f"    FH_MDP3_R_{r} = {i},")
    lines.append(f"    FH_MDP3_NROOT = {len(ROOT_ROLES)}")
    lines.append("};")
    lines.append("enum {")
    for i, r in enumerate(GROUP_ROLES):
        lines.append(f"    FH_MDP3_G_{r} = {i},")
    lines.append(f"    FH_MDP3_NGROUP = {len(GROUP_ROLES)}")
    lines.append("};")
    lines += [
        "",
        f"#define FH_MDP3_MAX_GROUPS {max_groups}",
        f"#define FH_MDP3_MAX_TEMPLATE_ID {MAX_TEMPLATE_ID} /* template ids are < this */",
        "",
        "typedef struct fh_mdp3_field {",
        "    int64_t null_or_const;  /* null value (optional fields) or the constant (FH_MDP3_T_CONST) */",
        "    int16_t offset;         /* bytes from the start of the block */",
        "    uint8_t type;           /* FH_MDP3_T_* */",
        "    uint8_t optional;       /* 1: null_or_const is the null value */",
        "    int8_t exponent;        /* decimal mantissas: value = mantissa * 10^exponent; else 0 */",
        "    uint8_t length;         /* elements (char arrays) */",
        "    uint8_t _pad[2];",
        "} fh_mdp3_field;",
        "",
        "typedef struct fh_mdp3_group {",
        "    uint16_t block_length;  /* the schema's (the wire's dimension header is authoritative) */",
        "    uint8_t dim_size;       /* bytes of the dimension header; blockLength is its uint16 at 0 */",
        "    uint8_t num_offset;     /* numInGroup position in the dimension header */",
        "    uint8_t num_size;       /* numInGroup size: 1 or 2 bytes */",
        "    uint8_t role;           /* FH_MDP3_GROUP_* */",
        "    uint8_t since_version;",
        "    uint8_t _pad;",
        "} fh_mdp3_group;",
        "",
        "typedef struct fh_mdp3_template {",
        "    const char *name;",
        "    uint16_t id;",
        "    uint16_t block_length;  /* the schema's root block length */",
        "    uint8_t kind;           /* FH_MDP3_K_* */",
        "    uint8_t ngroups;",
        "    uint8_t since_version;",
        "    fh_mdp3_group groups[FH_MDP3_MAX_GROUPS]; /* in wire order */",
        "    fh_mdp3_field root[FH_MDP3_NROOT];",
        "    fh_mdp3_field entry[FH_MDP3_NGROUP];      /* fields of the ENTRIES group */",
        "    fh_mdp3_field order[FH_MDP3_NGROUP];      /* fields of the ORDERS group */",
        "} fh_mdp3_template;",
        "",
        "typedef struct fh_mdp3_schema {",
        "    uint16_t schema_id;",
        "    uint16_t version;",
        "    const fh_mdp3_template *const *by_id; /* FH_MDP3_MAX_TEMPLATE_ID entries, NULL: unknown */",
        "} fh_mdp3_schema;",
        "",
        "#endif",
        "",
    ]
    return "\n".join(lines)


def gen_version(schema, xml_digest: str) -> str:
    v = schema.version
    lines = [
        f"/* fh/mdp3_v{v}.h - GENERATED by tools/gen_mdp3.py from {Path(schema.path).name}",
        f" * (schema id {schema.id}, version {v}, sha256 {xml_digest[:16]}); do not edit (run it again). */",
        f"#ifndef FH_MDP3_V{v}_H",
        f"#define FH_MDP3_V{v}_H",
        "",
        '#include "fh/mdp3_layout.h"',
        "",
        f"static const fh_mdp3_template fh_mdp3_v{v}_templates[] = {{",
    ]
    index = []
    for i, t in enumerate(sorted(schema.templates.values(), key=lambda t: t.id)):
        if t.id >= MAX_TEMPLATE_ID:
            raise SystemExit(f"template id {t.id} >= {MAX_TEMPLATE_ID}: raise MAX_TEMPLATE_ID")
        index.append((t.id, i))
        kind = KIND_OF.get(t.description, KIND_OF.get(t.name.rstrip("0123456789"), "OTHER"))
        lines.append(f"    {{ /* {t.name} */")
        lines.append(f'        .name = "{t.name}", .id = {t.id}, .block_length = {t.block_length},')
        lines.append(f"        .kind = FH_MDP3_K_{kind}, .ngroups = {len(t.groups)}, .since_version = {t.since_version},")
        lines.append("        .groups = {")
        for g in t.groups:
            if g.groups:
                raise SystemExit(f"{t.name}.{g.name}: nested groups are not supported by the native decoder")
            num_size = 1 if g.num_prim in ("uint8", "int8") else 2
            role = GROUP_ROLE.get(g.name, "OTHER")
            lines.append(f"            {{{g.block_length}, {g.dim_size}, {g.num_offset}, {num_size}, "
                         f"FH_MDP3_GROUP_{role}, {g.since_version}, 0}}, /* {g.name} */")
        lines.append("        },")
        lines.append("        .root = {")
        lines += _roles(t.leaves, ROOT_ROLES)
        lines.append("        },")
        for g in t.groups:
            role = GROUP_ROLE.get(g.name)
            if role is None:
                continue
            lines.append(f"        .{'entry' if role == 'ENTRIES' else 'order'} = {{")
            lines += _roles(g.leaves, GROUP_ROLES)
            lines.append("        },")
        lines.append("    },")
    lines.append("};")
    lines.append("")
    lines.append(f"static const fh_mdp3_template *const fh_mdp3_v{v}_by_id[FH_MDP3_MAX_TEMPLATE_ID] = {{")
    for tid, i in index:
        lines.append(f"    [{tid}] = &fh_mdp3_v{v}_templates[{i}],")
    lines.append("};")
    lines.append("")
    lines.append("#endif")
    lines.append("")
    return "\n".join(lines)


def gen_schemas(schemas) -> str:
    lines = [
        "/* fh/mdp3_schemas.h - GENERATED by tools/gen_mdp3.py; do not edit (run it again).",
        " * Every schema version the decoder knows, ascending. */",
        "#ifndef FH_MDP3_SCHEMAS_H",
        "#define FH_MDP3_SCHEMAS_H",
        "",
        '#include "fh/mdp3_layout.h"',
    ]
    for s in schemas:
        lines.append(f'#include "fh/mdp3_v{s.version}.h"')
    lines += ["", f"#define FH_MDP3_NSCHEMAS {len(schemas)}",
              "static const fh_mdp3_schema fh_mdp3_schemas[FH_MDP3_NSCHEMAS] = {"]
    for s in schemas:
        lines.append(f"    {{{s.id}, {s.version}, fh_mdp3_v{s.version}_by_id}},")
    lines += ["};", "", "#endif", ""]
    return "\n".join(lines)


def generate(schema_dir: Path) -> dict[Path, str]:
    mod = _load_schema_module()
    paths = sorted(schema_dir.glob("*.xml"))
    if not paths:
        raise SystemExit(f"no schema XML in {schema_dir}")
    schemas = []
    for p in paths:
        s = mod.load_schema(p)
        s._digest = hashlib.sha256(p.read_bytes()).hexdigest()
        schemas.append(s)
    schemas.sort(key=lambda s: s.version)
    max_groups = max(len(t.groups) for s in schemas for t in s.templates.values())
    files = {OUT / "mdp3_layout.h": gen_layout(max_groups)}
    for s in schemas:
        files[OUT / f"mdp3_v{s.version}.h"] = gen_version(s, s._digest)
    files[OUT / "mdp3_schemas.h"] = gen_schemas(schemas)
    files[PY_OUT] = gen_python(mod, schemas)
    return files


def gen_python(mod, schemas) -> str:
    """The Python codec's layouts (schema.schema_from_data reads them), so that the installed package
    (synth, the reference codec) needs no XML: one literal per schema, one line per template."""
    lines = [
        '"""CME MDP 3.0 layouts for the pure-Python SBE codec - GENERATED by tools/gen_mdp3.py from CME\'s',
        "templates_FixBinary.xml; do not edit (run it again). Format: see schema.schema_to_data.\"\"\"",
        "# fmt: off",
        "SCHEMAS = (",
    ]
    for s in schemas:
        src = f"{Path(s.path).name} (sha256 {s._digest[:16]})"
        sid, version, source, tdata = mod.schema_to_data(s, src)
        lines.append(f"    ({sid!r}, {version!r}, {source!r}, (")
        for t in tdata:
            lines.append(f"        {t!r},")
        lines.append("    )),")
    lines += [")", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schema-dir", type=Path, default=DEFAULT_SCHEMAS)
    ap.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    args = ap.parse_args(argv)
    files = generate(args.schema_dir)
    if args.check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run tools/gen_mdp3.py)", file=sys.stderr)
        return 1 if stale else 0
    for p, text in files.items():
        if not p.exists() or p.read_text() != text:
            p.write_text(text)
            print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
