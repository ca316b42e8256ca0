/* moldudp64.c - MoldUDP64 sequencing and the frame -> message framer (contract in fh/moldudp64.h).
 *
 * Invariants per session (S):
 *   next  = sequence of the next message to deliver;
 *   hi    = one past the highest sequence seen (delivered or held), hi >= next;
 *   held  = packets beyond `next`, sorted by first sequence, each a copy of its message block;
 *   ann   = announced missing ranges (FH_GAP_OPENED), sorted, all >= next; every sequence below hi
 *           that was neither delivered nor held lies in exactly one of them.
 * Every step that writes output first checks that the worst case fits (messages of one packet plus one
 * record per announced range), so a run can stop between steps and resume in the next run: held-packet
 * drains are resumable (drain_pending), incoming packets are only consumed when they fit.
 */
#include "fh/moldudp64.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "fh/endian.h"

typedef struct held {
    uint64_t seq;
    uint64_t ts;
    uint32_t count;         /* messages (0: heartbeat / end-of-session marker) */
    int32_t slot;           /* -1 when no bytes are held */
    uint16_t tsflags;
    uint8_t eos;
} held;

typedef struct range {
    uint64_t first, end;    /* [first, end) */
} range;

typedef struct session {
    char name[FH_MOLD_SESSION_LEN];
    uint16_t channel;
    uint8_t excluded;       /* channel_mask excludes it */
    uint8_t ended;
    uint8_t after_gap;
    uint8_t drain_pending;
    uint64_t next, hi;
    uint64_t held_msgs;
    uint64_t last_ts;
    uint16_t last_tsflags;
    held *held;
    uint32_t n_held;
    range *ann;
    uint32_t n_ann, ann_cap;
} session;

typedef struct slot {
    uint8_t *buf;
    uint32_t cap;
} slot;

struct fh_framer {
    fh_framer_config cfg;
    fh_framer_stats st;
    /* input */
    const fh_pkt *in;
    size_t in_n, in_pos;
    /* output of the current run */
    fh_msg *msgs;
    size_t n;
    fh_tick *recs;
    size_t nrec;
    int full;               /* the current run stopped for lack of output space */
    int finishing;
    /* sessions */
    session sess[FH_MOLD_MAX_SESSIONS];
    uint32_t n_sess;
    /* held-packet byte slots */
    slot *slots;
    int32_t *free_ids, *pending_ids;
    uint32_t n_slots, n_free, n_pending;
    /* missing ranges */
    fh_missing_range *missing;
    size_t n_missing, missing_cap;
    pthread_mutex_t missing_lock;   /* the list may be copied by a monitor thread while we append */
    uint64_t bf_seq;        /* BinaryFILE message counter */
    uint64_t first_ts;
    uint64_t cur_ts;
    uint16_t cur_tsflags;
};

static const char *const MALFORMED_NAMES[FH_MOLD_N_MALFORMED] = {
    "short_header", "truncated_message", "trailing_bytes", "too_many_sessions", "sequence_overflow",
};

const char *fh_mold_malformed_name(int reason) {
    return (reason >= 0 && reason < FH_MOLD_N_MALFORMED) ? MALFORMED_NAMES[reason] : "?";
}

fh_framer *fh_framer_new(const fh_framer_config *cfg) {
    if (cfg->reorder_window > FH_MOLD_MAX_WINDOW) return NULL;
    fh_framer *f = calloc(1, sizeof(*f));
    if (!f) return NULL;
    pthread_mutex_init(&f->missing_lock, NULL);
    f->cfg = *cfg;
    f->msgs = malloc(sizeof(fh_msg) * FH_FRAMER_MSG_CAP);
    f->recs = aligned_alloc(64, sizeof(fh_tick) * FH_FRAMER_REC_CAP);
    f->n_slots = (uint32_t)FH_MOLD_MAX_SESSIONS * (cfg->reorder_window + 2) * 2;
    f->slots = calloc(f->n_slots, sizeof(slot));
    f->free_ids = malloc(sizeof(int32_t) * f->n_slots);
    f->pending_ids = malloc(sizeof(int32_t) * f->n_slots);
    if (!f->msgs || !f->recs || !f->slots || !f->free_ids || !f->pending_ids) {
        fh_framer_free(f);
        return NULL;
    }
    for (uint32_t i = 0; i < f->n_slots; i++) f->free_ids[i] = (int32_t)(f->n_slots - 1 - i);
    f->n_free = f->n_slots;
    f->st.held_slots = f->n_slots;
    return f;
}

void fh_framer_free(fh_framer *f) {
    if (!f) return;
    for (uint32_t i = 0; i < f->n_sess; i++) {
        free(f->sess[i].held);
        free(f->sess[i].ann);
    }
    if (f->slots)
        for (uint32_t i = 0; i < f->n_slots; i++) free(f->slots[i].buf);
    free(f->slots);
    free(f->free_ids);
    free(f->pending_ids);
    free(f->missing);
    pthread_mutex_destroy(&f->missing_lock);
    free(f->msgs);
    free(f->recs);
    free(f);
}

void fh_framer_set_input(fh_framer *f, const fh_pkt *pkts, size_t n) {
    f->in = pkts;
    f->in_n = n;
    f->in_pos = 0;
}

int fh_framer_input_done(const fh_framer *f) { return f->in_pos >= f->in_n; }
const fh_framer_stats *fh_framer_stats_get(const fh_framer *f) { return &f->st; }
size_t fh_framer_n_sessions(const fh_framer *f) { return f->n_sess; }
uint64_t fh_framer_first_ts(const fh_framer *f) { return f->first_ts; }

const char *fh_framer_session(const fh_framer *f, uint16_t channel) {
    return channel < f->n_sess ? f->sess[channel].name : NULL;
}

size_t fh_framer_missing_copy(fh_framer *f, fh_missing_range *out, size_t max) {
    pthread_mutex_lock(&f->missing_lock);
    size_t n = f->n_missing;
    if (out) memcpy(out, f->missing, (n < max ? n : max) * sizeof(*out));
    pthread_mutex_unlock(&f->missing_lock);
    return n;
}

/* ---- output helpers ------------------------------------------------------------------------ */
static inline int space(const fh_framer *f, size_t msgs, size_t recs) {
    return f->n + msgs + recs <= FH_FRAMER_MSG_CAP && f->nrec + recs <= FH_FRAMER_REC_CAP;
}

static void emit_gap(fh_framer *f, session *S, uint8_t kind, uint64_t first, uint64_t count) {
    fh_tick *t = &f->recs[f->nrec++];
    memset(t, 0, sizeof(*t));
    fh_gap *g = &t->gap;
    g->hd.length = FH_OWN_LENGTH;
    g->hd.rtype = FH_RTYPE_GAP;
    g->hd.publisher_id = f->cfg.publisher_id;
    g->hd.instrument_id = 0;
    g->hd.ts_event = S->last_ts;  /* no exchange time: the capture time of the packet that told us */
    g->ts_recv = S->last_ts;
    g->first_missing = first;
    g->count = count;
    g->channel = S->channel;
    g->kind = kind;
    memcpy(g->session, S->name, FH_MOLD_SESSION_LEN);
    fh_msg *m = &f->msgs[f->n++];
    m->data = (const uint8_t *)t;
    m->len = 0;
    m->channel = S->channel;
    m->flags = FH_MSG_RECORD | (S->last_tsflags & FH_MSG_TS_MASK);
    m->ts_recv = S->last_ts;
    m->sequence = first;
    f->st.records++;
    switch (kind) {
    case FH_GAP_OPENED: f->st.gaps++; break;
    case FH_GAP_FILLED: f->st.gaps_filled++; f->st.filled_messages += count; break;
    case FH_GAP_LOST: f->st.gaps_lost++; f->st.lost_messages += count; break;
    case FH_GAP_RESET: f->st.resets++; break;
    }
}

static void add_missing(fh_framer *f, session *S, uint64_t first, uint64_t last) {
    pthread_mutex_lock(&f->missing_lock);
    if (f->n_missing == f->missing_cap) {
        size_t cap = f->missing_cap ? f->missing_cap * 2 : 64;
        fh_missing_range *m = cap <= (1u << 22) ? realloc(f->missing, cap * sizeof(*m)) : NULL;
        if (!m) {
            f->st.missing_dropped++;
            pthread_mutex_unlock(&f->missing_lock);
            return;
        }
        f->missing = m;
        f->missing_cap = cap;
    }
    fh_missing_range *r = &f->missing[f->n_missing++];
    memcpy(r->session, S->name, FH_MOLD_SESSION_LEN);
    r->channel = S->channel;
    r->first = first;
    r->last = last;
    pthread_mutex_unlock(&f->missing_lock);
}

static void announce(fh_framer *f, session *S, uint64_t first, uint64_t end) {
    if (S->n_ann == S->ann_cap) {
        /* cannot happen (n_ann <= n_held <= window + 1): merge into the last range defensively */
        S->ann[S->n_ann - 1].end = end;
    } else {
        S->ann[S->n_ann].first = first;
        S->ann[S->n_ann].end = end;
        S->n_ann++;
    }
    emit_gap(f, S, FH_GAP_OPENED, first, end - first);
}

/* More held-packet slots. A slot released during a run stays pending until the next run (the run's
 * messages may point into its bytes), so one run that holds many packets (heavy loss: most packets
 * wait behind a hole) can use more slots than the sessions' windows; the pool then doubles. Slot
 * buffers never move (the slot array does), so messages pointing into them stay valid. 0 on ENOMEM. */
static int grow_slots(fh_framer *f) {
    uint32_t n = f->n_slots * 2;
    slot *sl = realloc(f->slots, sizeof(slot) * n);
    if (!sl) return 0;
    f->slots = sl;
    memset(sl + f->n_slots, 0, sizeof(slot) * (n - f->n_slots));
    int32_t *fr = realloc(f->free_ids, sizeof(int32_t) * n);
    if (!fr) return 0;
    f->free_ids = fr;
    int32_t *pe = realloc(f->pending_ids, sizeof(int32_t) * n);
    if (!pe) return 0;
    f->pending_ids = pe;
    for (uint32_t i = n; i > f->n_slots; i--) f->free_ids[f->n_free++] = (int32_t)(i - 1);
    f->n_slots = n;
    f->st.held_slots = n;
    return 1;
}

static void release_slot(fh_framer *f, int32_t id) {
    if (id >= 0) f->pending_ids[f->n_pending++] = id;
}

/* Delivers messages [S->next, s + count) of a validated message block starting at sequence s. */
static void apply(fh_framer *f, session *S, const uint8_t *blk, uint64_t s, uint32_t count, uint64_t ts,
                  uint16_t tsflags) {
    uint64_t first = S->next, end = s + count;
    while (S->n_ann && S->ann[0].first < end) {
        uint64_t a = S->ann[0].first > first ? S->ann[0].first : first;
        uint64_t b = S->ann[0].end < end ? S->ann[0].end : end;
        emit_gap(f, S, FH_GAP_FILLED, a, b - a);
        if (b >= S->ann[0].end) {
            memmove(S->ann, S->ann + 1, (S->n_ann - 1) * sizeof(range));
            S->n_ann--;
        } else {
            S->ann[0].first = b;
        }
    }
    uint64_t skip = first - s;
    f->st.duplicate_messages += skip;
    size_t off = 0;
    for (uint32_t i = 0; i < count; i++) {
        uint16_t len = fh_load_be16(blk + off);
        if (i >= skip) {
            fh_msg *m = &f->msgs[f->n++];
            m->data = blk + off + 2;
            m->len = len;
            m->channel = S->channel;
            m->flags = (uint16_t)((tsflags & FH_MSG_TS_MASK) | (S->after_gap ? FH_MSG_AFTER_GAP : 0));
            m->ts_recv = ts;
            m->sequence = s + i;
            S->after_gap = 0;
        }
        off += 2 + (size_t)len;
    }
    f->st.messages += count - skip;
    S->next = end;
    if (S->hi < end) S->hi = end;
}

static void drop_held(fh_framer *f, session *S) {
    for (uint32_t i = 0; i < S->n_held; i++) {
        f->st.after_end_of_session++;
        release_slot(f, S->held[i].slot);
    }
    S->n_held = 0;
    S->held_msgs = 0;
    S->n_ann = 0;
}

static void apply_eos(fh_framer *f, session *S) {
    emit_gap(f, S, FH_GAP_RESET, S->next, 0);
    S->ended = 1;
    drop_held(f, S);
}

/* Gives up the hole in front of the first held packet. */
static void lose_front(fh_framer *f, session *S) {
    uint64_t h0 = S->held[0].seq;
    uint64_t first = S->next;
    emit_gap(f, S, FH_GAP_LOST, first, h0 - first);
    add_missing(f, S, first, h0 - 1);
    while (S->n_ann && S->ann[0].first < h0) {
        if (S->ann[0].end <= h0) {
            memmove(S->ann, S->ann + 1, (S->n_ann - 1) * sizeof(range));
            S->n_ann--;
        } else {
            S->ann[0].first = h0;
        }
    }
    S->next = h0;
    S->after_gap = 1;
}

/* Applies held packets that became in-order and gives up holes while the window is over its bound
 * (or always, when finishing). 1 when done, 0 when output space ran out (resumed next run). */
static int drain(fh_framer *f, session *S) {
    while (S->n_held) {
        held *h = &S->held[0];
        if (h->seq <= S->next) {
            if (!space(f, (size_t)h->count + 1, (size_t)S->n_ann + 2)) goto full;
            held cur = *h;
            memmove(S->held, S->held + 1, (S->n_held - 1) * sizeof(held));
            S->n_held--;
            S->held_msgs -= cur.count;
            S->last_ts = cur.ts;
            S->last_tsflags = cur.tsflags;
            if (cur.count == 0) {
                if (cur.eos) apply_eos(f, S);
            } else if (cur.seq + cur.count <= S->next) {
                f->st.duplicate_packets++;
                f->st.duplicate_messages += cur.count;
            } else {
                apply(f, S, f->slots[cur.slot].buf, cur.seq, cur.count, cur.ts, cur.tsflags);
                f->st.reordered++;
            }
            release_slot(f, cur.slot);
            continue;
        }
        int over = S->n_held > f->cfg.reorder_window ||
                   (f->cfg.reorder_window_msgs && S->held_msgs > f->cfg.reorder_window_msgs);
        if (!(over || f->finishing)) break;
        if (!space(f, 0, 1)) goto full;
        lose_front(f, S);
    }
    S->drain_pending = 0;
    return 1;
full:
    S->drain_pending = 1;
    f->full = 1;
    return 0;
}

/* ---- one frame ----------------------------------------------------------------------------- */
static session *find_session(fh_framer *f, const uint8_t *name, int *filtered) {
    *filtered = 0;
    for (uint32_t i = 0; i < f->n_sess; i++)
        if (memcmp(f->sess[i].name, name, FH_MOLD_SESSION_LEN) == 0) return &f->sess[i];
    if (f->cfg.n_session_filter) {
        int ok = 0;
        for (uint32_t i = 0; i < f->cfg.n_session_filter && i < FH_MOLD_MAX_FILTER; i++)
            ok |= memcmp(f->cfg.session_filter[i], name, FH_MOLD_SESSION_LEN) == 0;
        if (!ok) {
            *filtered = 1;
            return NULL;
        }
    }
    return NULL;
}

static session *new_session(fh_framer *f, const uint8_t *name, uint64_t seq) {
    session *S = &f->sess[f->n_sess];
    memset(S, 0, sizeof(*S));
    S->held = calloc(f->cfg.reorder_window + 2, sizeof(held));
    S->ann_cap = f->cfg.reorder_window + 8;
    S->ann = calloc(S->ann_cap, sizeof(range));
    if (!S->held || !S->ann) {
        free(S->held);
        free(S->ann);
        return NULL;
    }
    memcpy(S->name, name, FH_MOLD_SESSION_LEN);
    S->channel = (uint16_t)f->n_sess;
    S->excluded = f->cfg.channel_mask && (S->channel >= 64 || !((f->cfg.channel_mask >> S->channel) & 1));
    S->next = S->hi = seq;
    f->n_sess++;
    f->st.sessions++;
    return S;
}

/* Holds a packet (or a heartbeat / end-of-session marker when count == 0) beyond S->next. */
static void hold(fh_framer *f, session *S, const uint8_t *blk, uint32_t blen, uint64_t s, uint32_t count,
                 uint8_t eos) {
    uint64_t e = s + count;
    /* exact duplicate of a held packet: drop */
    uint32_t pos = 0;
    while (pos < S->n_held && S->held[pos].seq < s) pos++;
    for (uint32_t i = pos; i < S->n_held && S->held[i].seq == s; i++) {
        if (S->held[i].count >= count && S->held[i].eos == eos) {
            if (count) {
                f->st.duplicate_packets++;
                f->st.duplicate_messages += count;
            }
            return;
        }
    }
    int32_t id = -1;
    if (count) {
        if (f->n_free == 0 && !grow_slots(f)) {
            f->st.hold_failed++;   /* out of memory: its messages are reported lost with the hole */
            return;
        }
        id = f->free_ids[f->n_free - 1];
        slot *sl = &f->slots[id];
        if (sl->cap < blen) {
            uint32_t cap = blen < 2048 ? 2048 : blen;
            uint8_t *b = realloc(sl->buf, cap);
            if (!b) {
                f->st.hold_failed++;
                return;
            }
            sl->buf = b;
            sl->cap = cap;
        }
        f->n_free--;
        memcpy(sl->buf, blk, blen);
        f->st.out_of_order++;
    }
    if (s > S->hi) announce(f, S, S->hi, s);
    if (S->hi < e) S->hi = e;
    memmove(S->held + pos + 1, S->held + pos, (S->n_held - pos) * sizeof(held));
    held *h = &S->held[pos];
    h->seq = s;
    h->count = count;
    h->slot = id;
    h->ts = f->cur_ts;
    h->tsflags = f->cur_tsflags;
    h->eos = eos;
    S->n_held++;
    S->held_msgs += count;
    if (S->n_held > f->st.held_max) f->st.held_max = S->n_held;
}

/* 1 when the frame was consumed, 0 when it did not fit in this run's output. */
static int process(fh_framer *f, const fh_pkt *p) {
    if (p->linktype == FH_LINKTYPE_MESSAGE) {
        if (!space(f, 1, 0)) return 0;
        fh_msg *m = &f->msgs[f->n++];
        m->data = p->data;
        m->len = p->caplen;
        m->channel = 0;
        m->flags = FH_MSG_TS_NONE;
        m->ts_recv = 0;
        m->sequence = ++f->bf_seq;
        f->st.packets++;
        f->st.messages++;
        return 1;
    }
    fh_udp u;
    int r = fh_net_udp(p->data, p->caplen, p->linktype, &u);
    /* Parse the MoldUDP64 header and validate the message block before any side effect. */
    uint32_t count = 0, blen = 0, wire_count = 0;
    uint64_t seq = 0;
    int short_hdr = 0, truncated = 0, trailing = 0, filtered = 0;
    if (r == FH_NET_OK) {
        filtered = (f->cfg.dst_port && u.dst_port != f->cfg.dst_port) ||
                   (f->cfg.dst_ip && u.dst_ip != f->cfg.dst_ip);
        if (!filtered) {
            if (u.len < FH_MOLD_HEADER) {
                short_hdr = 1;
            } else {
                seq = fh_load_be64(u.payload + 10);
                wire_count = fh_load_be16(u.payload + 18);
                if (wire_count != FH_MOLD_END_OF_SESSION) {
                    const uint8_t *b = u.payload + FH_MOLD_HEADER;
                    uint32_t avail = u.len - FH_MOLD_HEADER, off = 0;
                    while (count < wire_count) {
                        if (avail - off < 2) break;
                        uint32_t len = fh_load_be16(b + off);
                        if (avail - off - 2 < len) break;
                        off += 2 + len;
                        count++;
                    }
                    truncated = count < wire_count;
                    trailing = !truncated && off < avail;
                    blen = off;
                }
            }
        }
    }
    /* Worst case of this frame: its messages, one FILLED per announced range, OPENED/RESET. Held
     * packets it releases are drained under their own checks (resumable). */
    size_t need_recs = 4;
    if (r == FH_NET_OK && !filtered && !short_hdr) {
        for (uint32_t i = 0; i < f->n_sess; i++)
            if (memcmp(f->sess[i].name, u.payload, FH_MOLD_SESSION_LEN) == 0) need_recs += f->sess[i].n_ann;
    }
    if (!space(f, (size_t)count + 1, need_recs)) {
        f->full = 1;
        return 0;
    }
    f->st.packets++;
    if (p->flags != FH_PKT_TS_NONE && !f->first_ts) f->first_ts = p->ts_ns;
    f->cur_ts = p->ts_ns;
    f->cur_tsflags = p->flags;
    if (r != FH_NET_OK) {
        f->st.net_reject[r]++;
        return 1;
    }
    f->st.udp_datagrams++;
    if (filtered) {
        f->st.filtered++;
        return 1;
    }
    if (short_hdr) {
        f->st.malformed[FH_MOLD_SHORT_HEADER]++;
        return 1;
    }
    f->st.mold_packets++;
    if (truncated) f->st.malformed[FH_MOLD_TRUNCATED_MESSAGE]++;
    if (trailing) f->st.malformed[FH_MOLD_TRAILING_BYTES]++;
    uint8_t eos = wire_count == FH_MOLD_END_OF_SESSION;
    if (eos) f->st.end_of_session++;
    else if (wire_count == 0) f->st.heartbeats++;
    if (seq > UINT64_MAX - 0x10000u) {
        f->st.malformed[FH_MOLD_SEQUENCE_OVERFLOW]++;
        return 1;
    }
    int name_filtered;
    session *S = find_session(f, u.payload, &name_filtered);
    if (!S) {
        if (name_filtered) {
            f->st.filtered_sessions++;
            return 1;
        }
        if (f->n_sess >= FH_MOLD_MAX_SESSIONS) {
            f->st.malformed[FH_MOLD_TOO_MANY_SESSIONS]++;
            return 1;
        }
        S = new_session(f, u.payload, seq);
        if (!S) {
            f->st.malformed[FH_MOLD_TOO_MANY_SESSIONS]++;
            return 1;
        }
        S->last_ts = p->ts_ns;
        S->last_tsflags = p->flags;
        if (S->channel > 0 && !S->excluded) emit_gap(f, S, FH_GAP_RESET, seq, 0);
    }
    if (S->excluded) {
        f->st.filtered_sessions++;
        return 1;
    }
    S->last_ts = p->ts_ns;
    S->last_tsflags = p->flags;
    if (S->ended) {
        if (!eos) f->st.after_end_of_session++;
        return 1;
    }
    const uint8_t *blk = u.payload + FH_MOLD_HEADER;
    if (!eos && count > 0 && seq == 0) f->st.zero_sequence_packets++;
    if (f->cfg.no_sequencing) {
        /* arrival order, numbered on from the session's first sequence number */
        if (eos) apply_eos(f, S);
        else if (count > 0) apply(f, S, blk, S->next, count, p->ts_ns, p->flags);
        return 1;
    }
    if (eos) {
        if (seq <= S->next) apply_eos(f, S);
        else hold(f, S, NULL, 0, seq, 0, 1);
    } else if (count == 0) {
        if (seq > S->hi) hold(f, S, NULL, 0, seq, 0, 0);
        /* (a truncated packet whose first message is cut leaves a hole the next packet reports) */
    } else if (seq + count <= S->next) {
        f->st.duplicate_packets++;
        f->st.duplicate_messages += count;
        return 1;
    } else if (seq <= S->next) {
        apply(f, S, blk, seq, count, p->ts_ns, p->flags);
    } else {
        hold(f, S, blk, blen, seq, count, 0);
    }
    drain(f, S);
    return 1;
}

static void begin_run(fh_framer *f) {
    f->n = 0;
    f->nrec = 0;
    f->full = 0;
    while (f->n_pending) f->free_ids[f->n_free++] = f->pending_ids[--f->n_pending];
}

size_t fh_framer_run(fh_framer *f, const fh_msg **msgs) {
    begin_run(f);
    for (uint32_t i = 0; i < f->n_sess && !f->full; i++) {
        session *S = &f->sess[i];
        if (S->drain_pending || (f->finishing && S->n_held)) drain(f, S);
    }
    while (!f->full && f->in_pos < f->in_n) {
        if (!process(f, &f->in[f->in_pos])) break;
        f->in_pos++;
    }
    *msgs = f->msgs;
    return f->n;
}

size_t fh_framer_finish(fh_framer *f, const fh_msg **msgs) {
    f->finishing = 1;
    return fh_framer_run(f, msgs);
}
