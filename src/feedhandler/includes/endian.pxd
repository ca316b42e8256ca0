# Cython view of csrc/include/fh/endian.h.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "fh/endian.h" nogil:
    uint16_t fh_load_be16(const uint8_t *p)
    uint32_t fh_load_be32(const uint8_t *p)
    uint64_t fh_load_be48(const uint8_t *p)
    uint64_t fh_load_be64(const uint8_t *p)
    uint16_t fh_load_le16(const uint8_t *p)
    uint32_t fh_load_le32(const uint8_t *p)
    uint64_t fh_load_le64(const uint8_t *p)
    void fh_store_be16(uint8_t *p, uint16_t v)
    void fh_store_be32(uint8_t *p, uint32_t v)
    void fh_store_be48(uint8_t *p, uint64_t v)
    void fh_store_be64(uint8_t *p, uint64_t v)
    void fh_store_le16(uint8_t *p, uint16_t v)
    void fh_store_le32(uint8_t *p, uint32_t v)
    void fh_store_le64(uint8_t *p, uint64_t v)
