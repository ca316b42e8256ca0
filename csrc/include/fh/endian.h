/* fh/endian.h - bounds-free big-endian loads and stores for wire fields.
 *
 * Contract: every wire field is read with memcpy + beNNtoh (never through a cast pointer, since wire
 * fields are unaligned). The caller has already checked that the bytes exist; these helpers do no
 * bounds checking of their own. Pure functions, safe from any thread.
 */
#ifndef FH_ENDIAN_H
#define FH_ENDIAN_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t fh_load_be16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return be16toh(v); }
static inline uint32_t fh_load_be32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static inline uint64_t fh_load_be64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }
/* 48-bit big-endian integer (ITCH timestamps: nanoseconds since midnight). */
static inline uint64_t fh_load_be48(const uint8_t *p) {
    return ((uint64_t)fh_load_be16(p) << 32) | (uint64_t)fh_load_be32(p + 2);
}
static inline uint16_t fh_load_le16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return le16toh(v); }
static inline uint32_t fh_load_le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static inline uint64_t fh_load_le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }

static inline void fh_store_be16(uint8_t *p, uint16_t v) { v = htobe16(v); memcpy(p, &v, 2); }
static inline void fh_store_be32(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static inline void fh_store_be64(uint8_t *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }
static inline void fh_store_be48(uint8_t *p, uint64_t v) {
    fh_store_be16(p, (uint16_t)(v >> 32));
    fh_store_be32(p + 2, (uint32_t)v);
}
static inline void fh_store_le16(uint8_t *p, uint16_t v) { v = htole16(v); memcpy(p, &v, 2); }
static inline void fh_store_le32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static inline void fh_store_le64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }

#endif
