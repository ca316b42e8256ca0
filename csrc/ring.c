/* ring.c - creation, attachment and destruction of fh_ring (the data path is inline in fh/ring.h).
 *
 * Contract: these functions are called by the control thread of each process, never concurrently
 * with the data path on the same handle. A heap ring is an anonymous private mapping; a shm ring is a
 * POSIX shared memory object (/dev/shm/<name>) that the creator initialises and then marks valid by
 * storing the magic number last (release), so a process that attaches early gets -EAGAIN instead
 * of a half-made ring. Every failure returns -errno and leaves nothing behind (no mapping, no fd,
 * no shm name).
 */
#include "fh/ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(fh_ring_shared) % FH_RING_PAD == 0, "slots start on a fresh line pair");
_Static_assert(offsetof(fh_ring_shared, head) % FH_RING_PAD == 0, "head on its own lines");
_Static_assert(offsetof(fh_ring_shared, tail) % FH_RING_PAD == 0, "tail on its own lines");
_Static_assert(offsetof(fh_ring_shared, tail_cache) % FH_RING_PAD == 0, "producer cache apart");
_Static_assert(offsetof(fh_ring_shared, head_cache) % FH_RING_PAD == 0, "consumer cache apart");

#define HEADER_SIZE ((uint64_t)sizeof(fh_ring_shared))

static int valid_capacity(uint64_t capacity) {
    return capacity >= 2 && capacity <= FH_RING_MAX_CAPACITY && (capacity & (capacity - 1)) == 0;
}

static int valid_policy(fh_ring_overflow policy) {
    return policy == FH_RING_BLOCK || policy == FH_RING_DROP;
}

/* "/x" or "x" -> "/x" in out; -EINVAL when empty, too long or holding another '/'. */
static int normalize_name(const char *name, char out[FH_RING_NAME_MAX + 1]) {
    if (name == NULL) return -EINVAL;
    const char *base = name[0] == '/' ? name + 1 : name;
    size_t len = strlen(base);
    if (len == 0 || len + 1 > FH_RING_NAME_MAX || strchr(base, '/') != NULL) return -EINVAL;
    out[0] = '/';
    memcpy(out + 1, base, len + 1);
    return 0;
}

static void init_shared(fh_ring_shared *sh, uint64_t capacity, fh_ring_overflow policy) {
    sh->version = FH_RING_VERSION;
    sh->slot_size = FH_TICK_SIZE;
    sh->capacity = capacity;
    sh->policy = (uint32_t)policy;
    sh->header_size = (uint32_t)HEADER_SIZE;
    sh->creator_pid = (uint64_t)getpid();
    atomic_store_explicit(&sh->head, 0, memory_order_relaxed);
    atomic_store_explicit(&sh->closed, 0, memory_order_relaxed);
    sh->tail_cache = 0;
    atomic_store_explicit(&sh->dropped, 0, memory_order_relaxed);
    atomic_store_explicit(&sh->producer_waits, 0, memory_order_relaxed);
    atomic_store_explicit(&sh->tail, 0, memory_order_relaxed);
    sh->head_cache = 0;
    atomic_store_explicit(&sh->consumer_empty_polls, 0, memory_order_relaxed);
    /* release: everything above is visible to an attacher that acquires the magic */
    atomic_store_explicit(&sh->magic, FH_RING_MAGIC, memory_order_release);
}

static fh_ring *new_handle(void *base, size_t map_len, uint64_t capacity, fh_ring_overflow policy) {
    fh_ring *r = calloc(1, sizeof *r);
    if (r == NULL) return NULL;
    r->sh = base;
    r->slots = (fh_tick *)((char *)base + HEADER_SIZE);
    r->capacity = capacity;
    r->mask = capacity - 1;
    r->policy = policy;
    r->map_len = map_len;
    return r;
}

int fh_ring_create(fh_ring **out, uint64_t capacity, fh_ring_overflow policy) {
    if (out == NULL || !valid_capacity(capacity) || !valid_policy(policy)) return -EINVAL;
    size_t len = (size_t)(HEADER_SIZE + capacity * FH_TICK_SIZE);
    void *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return -errno;
    init_shared(base, capacity, policy);
    fh_ring *r = new_handle(base, len, capacity, policy);
    if (r == NULL) {
        munmap(base, len);
        return -ENOMEM;
    }
    *out = r;
    return 0;
}

int fh_ring_create_shm(fh_ring **out, const char *name, uint64_t capacity, fh_ring_overflow policy) {
    char norm[FH_RING_NAME_MAX + 1];
    if (out == NULL || !valid_capacity(capacity) || !valid_policy(policy)) return -EINVAL;
    int rc = normalize_name(name, norm);
    if (rc) return rc;
    size_t len = (size_t)(HEADER_SIZE + capacity * FH_TICK_SIZE);
    int fd = shm_open(norm, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) return -errno;
    /* posix_fallocate reserves the pages now: a full /dev/shm fails here with ENOSPC instead of a
     * SIGBUS on first touch in the middle of the data path */
    rc = ftruncate(fd, (off_t)len) ? errno : posix_fallocate(fd, 0, (off_t)len);
    void *base = MAP_FAILED;
    if (rc == 0) {
        base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED) rc = errno;
    }
    close(fd);
    fh_ring *r = NULL;
    if (rc == 0) {
        init_shared(base, capacity, policy);
        r = new_handle(base, len, capacity, policy);
        if (r == NULL) rc = ENOMEM;
    }
    if (rc) {
        if (base != MAP_FAILED) munmap(base, len);
        shm_unlink(norm);
        return -rc;
    }
    r->is_shm = 1;
    r->owner = 1;
    memcpy(r->name, norm, sizeof norm);
    *out = r;
    return 0;
}

int fh_ring_attach_shm(fh_ring **out, const char *name) {
    char norm[FH_RING_NAME_MAX + 1];
    if (out == NULL) return -EINVAL;
    int rc = normalize_name(name, norm);
    if (rc) return rc;
    int fd = shm_open(norm, O_RDWR, 0);
    if (fd < 0) return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = errno;
        close(fd);
        return -rc;
    }
    if ((uint64_t)st.st_size < HEADER_SIZE) {
        close(fd);
        /* an empty object is a ring being created (ftruncate not done yet) */
        return st.st_size == 0 ? -EAGAIN : -EPROTO;
    }
    size_t len = (size_t)st.st_size;
    void *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    rc = base == MAP_FAILED ? errno : 0;
    close(fd);
    if (rc) return -rc;
    fh_ring_shared *sh = base;
    /* acquire: pairs with the creator's release store of the magic in init_shared */
    uint64_t magic = atomic_load_explicit(&sh->magic, memory_order_acquire);
    if (magic == 0) rc = EAGAIN;
    else if (magic != FH_RING_MAGIC) rc = EPROTO;
    else if (sh->version != FH_RING_VERSION) rc = EPROTONOSUPPORT;
    else if (sh->slot_size != FH_TICK_SIZE || sh->header_size != HEADER_SIZE || !valid_capacity(sh->capacity) ||
             !valid_policy((fh_ring_overflow)sh->policy) || HEADER_SIZE + sh->capacity * FH_TICK_SIZE != len)
        rc = EPROTO;
    fh_ring *r = NULL;
    if (rc == 0) {
        r = new_handle(base, len, sh->capacity, (fh_ring_overflow)sh->policy);
        if (r == NULL) rc = ENOMEM;
    }
    if (rc) {
        munmap(base, len);
        return -rc;
    }
    r->is_shm = 1;
    memcpy(r->name, norm, sizeof norm);
    *out = r;
    return 0;
}

void fh_ring_destroy(fh_ring *r) {
    if (r == NULL) return;
    munmap(r->sh, r->map_len);
    if (r->is_shm && r->owner) shm_unlink(r->name);
    free(r);
}

const char *fh_ring_strerror(int err) {
    if (err < 0) err = -err;
    switch (err) {
    case 0: return "success";
    case EINVAL: return "invalid argument (capacity must be a power of two in [2, 2**36]; a shm name is "
                        "'/name' or 'name' without another '/', at most 255 bytes)";
    case EEXIST: return "a shared memory object of that name already exists";
    case ENOENT: return "no shared memory ring of that name";
    case EAGAIN: return "the ring is still being created; try again";
    case EPROTO: return "not a feedhandler ring (bad magic, slot size or geometry)";
    case EPROTONOSUPPORT: return "the ring has another layout version";
    case ENOSPC: return "not enough shared memory for the ring";
    case ENOMEM: return "out of memory";
    default: return strerror(err);
    }
}
