# distutils: sources = csrc/record.c
"""Native side of feedhandler.records: hands the C descriptor table of every record layout to Python."""
from feedhandler.includes.record cimport fh_record_descs, fh_record_desc, fh_field_desc, FH_TICK_SIZE


def record_layouts():
    """Return [(name, rtype, size, dbn_length, [(field, offset, size, count, kind), ...]), ...]."""
    cdef size_t n = 0
    cdef const fh_record_desc *d = fh_record_descs(&n)
    cdef const fh_field_desc *f
    out = []
    for i in range(n):
        fields = []
        for j in range(d[i].nfields):
            f = &d[i].fields[j]
            fields.append((f.name.decode(), f.offset, f.size, f.count, chr(f.kind)))
        out.append((d[i].name.decode(), d[i].rtype, d[i].size, d[i].dbn_length, fields))
    return out


TICK_SIZE = FH_TICK_SIZE
