/* test_record.c - the descriptor table covers every byte of every record exactly once. */
#include <stdio.h>
#include <string.h>
#include "fh/record.h"

int main(void) {
    size_t n = 0;
    const fh_record_desc *d = fh_record_descs(&n);
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char covered[FH_TICK_SIZE] = {0};
        if (d[i].size > FH_TICK_SIZE) { printf("FAIL %s larger than a slot\n", d[i].name); failures++; continue; }
        for (uint16_t f = 0; f < d[i].nfields; f++) {
            const fh_field_desc *fd = &d[i].fields[f];
            /* union members (mbo.attribution overlays mbo.match_number) may overlap each other */
            int overlay = strcmp(fd->name, "attribution") == 0;
            for (unsigned b = fd->offset; b < (unsigned)fd->offset + fd->size * fd->count; b++) {
                if (b >= d[i].size) { printf("FAIL %s.%s past the end\n", d[i].name, fd->name); failures++; break; }
                if (covered[b] && !overlay) { printf("FAIL %s.%s overlaps byte %u\n", d[i].name, fd->name, b); failures++; }
                covered[b] = 1;
            }
        }
        for (unsigned b = 0; b < d[i].size; b++)
            if (!covered[b]) { printf("FAIL %s byte %u not described\n", d[i].name, b); failures++; break; }
    }
    printf("test_record: %zu layouts, %d failures\n", n, failures);
    return failures != 0;
}
