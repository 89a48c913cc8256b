/* writer.c -- the single writer thread (see writer.h).
 *
 * Queue: a singly linked FIFO under one mutex. Each submitter waits on its own job's
 * semaphore, which the writer posts when the batch is finished: no shared wake-up, so a batch
 * of many jobs does not make every waiter fight for the queue's mutex.
 *
 * A batch, in order:
 *   1. BEGIN; run the jobs. Fast-path events: look the identifier up in the batch's own set,
 *      then in the identifier index (confirming candidates against stored blocks), append to
 *      the scope's block and add (value, 1) to the batch's delta table. Row events: insert
 *      with the table's unique index (and the identifier index, for block-stored twins), then
 *      recompute their minute bucket. Function jobs run in savepoints; a cancellation adds a
 *      negative delta.
 *   2. Write each scope's block, as rows of up to PART_EVENTS events; COMMIT.
 *   3. Only now: add the identifiers to the index, merge the batch's deltas into the overlay,
 *      and wake the submitters. A failed commit discards the batch's blocks, deltas and
 *      identifiers, so nothing uncommitted is ever visible or acknowledged.
 * Folding: each batch's transaction also folds the overlay shards that are due (round-robin,
 * so the whole overlay is folded about every cfg.checkpoint_ms) into storage: usually as
 * spills (one row per pair, written without reading; see "spilling" below), every fourth
 * time into the stored day pages together with the spills. Each page and spill records the
 * last block and cancellation it includes. The batch commits while
 * holding those shards' write locks and empties them once committed, so readers see a pair
 * either in the overlay or in its pages, never both. There is no stop-the-world checkpoint:
 * the work is spread over the batches. At start-up an event is replayed into the overlay only
 * if its block is newer than its page's mark (likewise cancellations).
 *
 * Priority: the writer is the one serial stage of ingest, and on a machine with fewer cores
 * than busy threads (the request loops, the clients) the scheduler let it wait for a core
 * after being woken: 260-300 ms a second of batches of 100 on the 2-core benchmark machine,
 * while the request loops, their requests in its batch, had nothing to do. After a batch of
 * at least BOOST_FROM_EVENTS events the writer raises its priority (nice BOOST_NICE below
 * the process's) and drops back after a smaller one: queued waiting fell to 144-172 ms a
 * second and batches of 100 rose 11% (BENCHMARKS.md). Small batches keep the normal
 * priority because there a short wait is what lets a batch gather more requests: boosted
 * always, single events (v1) fell 10-20%. Raising a priority needs CAP_SYS_NICE or a
 * RLIMIT_NICE allowance for the whole BOOST_NICE; without it the writer says so once and
 * runs unboosted; with cfg.no_priority_boost (`--no-priority-boost`) it never tries, for a
 * machine shared with work that should not wait behind ingest. The nice value it drops back
 * to is the one it had when it rose, so a renice from outside between boosts holds.
 *
 * Identifier retention: the identifier index is in memory, so it cannot hold every identifier
 * ever stored (10.55 bytes each: a year at 10,000 events a second would be 3.3 GB, and
 * start-up would index them all). An identifier stays in it for at least cfg.identifier_days
 * (default TG_IDENTIFIER_DAYS, 36) after its block was written; by then a retry carrying the
 * event's timestamp is refused anyway, for being more than 35 days old (Stripe keeps
 * identifiers unique for 24 hours). Blocks are numbered in the order they are written, so
 * age is a block number: the writer notes the first block of each hour it writes (marks),
 * and once an hour has passed out of the window, so has every block below the next mark's.
 * A sweep then prunes the index's 64 partitions, one per writer turn (a batch, or an idle
 * second): 3.5 ms each at 30M identifiers (dedupe.c), never a stop of the whole index.
 * "Now" for ageing is the wall clock, but never later than the start-up's reference time
 * plus the time elapsed since on a clock that is never stepped (tg_clock.elapsed): a wall
 * clock set weeks ahead and back again would otherwise have emptied the index, and the
 * identifiers would not come back. The reference is the wall clock at start-up, but never
 * later than TRUST_DOWNTIME past the newest block stored (written with the fold marks), so
 * a server started with its clock ahead indexes the blocks of the window before that block,
 * and a longer downtime counts as TRUST_DOWNTIME (its identifiers are kept longer).
 * Start-up indexes only the blocks written within the window, and reads older ones only while
 * their usage may not be folded yet (see "start-up marks"). Row-stored events stay indexed
 * (they are few), and the blocks themselves, with their events, are kept.
 */
#include "core/writer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "core/daypage.h"
#include "core/dedupe.h"
#include "core/eventblock.h"
#include "core/metering.h"

#define MAX_SCOPES 8      /* distinct scopes in one batch; more wait for the next batch */
/* Recent blocks are kept to confirm retried identifiers without a read: the last 128 (of at
 * most PART_EVENTS events, about 40 KB each), within 4 MiB. */
#define BLOCK_CACHE 128
#define BLOCK_CACHE_BYTES (4u << 20)
/* Events in one stored block at most. A lookup whose tag matches reads a whole block, and a
 * new identifier meets a stored tag once in 9,000 lookups at 30M identifiers (dedupe.h),
 * more as they grow: with a batch's 10,000 events in one block of 400 KB, reading and
 * decoding those blocks was 12% of the writer's time at 30M. */
#define PART_EVENTS 1024
#define BLOCK_CAP (256u << 20)
#define OVERLAY_FOLD_BYTES (48u << 20)
#define SPILLS_PER_FOLD 3
#define BOOST_FROM_EVENTS 256
#define BOOST_NICE 10
#define NO_SWEEP TG_DEDUPE_PARTITIONS /* sweep_part when no sweep is running */
/* Downtime counted toward identifiers' age at most. Less than a day: a wall clock that far
 * ahead at start-up, set right later, must not have aged an identifier by more than the day
 * the window keeps past the 35 days a timestamp may lag (and the 5 minutes it may lead). */
#define TRUST_DOWNTIME (12 * 3600)

/* Batch tables are cleared by moving to a new generation, not by memset: a slot is in use
 * only when its gen equals the table's, so a small batch after a large one costs nothing. */
typedef struct delta_slot {
    int64_t meter_seq, customer_seq, minute;
    tg_dec sum;
    int64_t count;
    uint32_t gen;
} delta_slot;
_Static_assert(sizeof(delta_slot) == 64, "a delta slot is one cache line");

typedef struct seen_slot {
    uint64_t h;
    const char *identifier;
    const tg_scope *scope;
    uint32_t gen;
} seen_slot;

typedef struct pending_id {
    uint64_t h;
    int scope_index; /* -1: row-stored */
    uint32_t part;   /* which of the scope's stored blocks holds it (see write_blocks) */
} pending_id;

/* A scope's events in a batch: one block in memory, stored as blocks of at most PART_EVENTS
 * events each (see write_blocks). */
typedef struct batch_scope {
    tg_scope scope;
    tg_block block;
    int64_t created;
    size_t *part_at; /* body offset where part k starts */
    int64_t *seqs;   /* part k's block number, once written */
    size_t cap_parts;
} batch_scope;

/* The first block written in an hour (see "Identifier retention"). */
typedef struct retain_mark {
    int64_t first_seq, hour;
} retain_mark;

typedef struct cached_block {
    int64_t seq;
    tg_scope scope;
    int64_t created;
    unsigned char *data;
    size_t len;
} cached_block;

struct tg_writer {
    tg_store *store;
    const tg_clock *clock;
    tg_writer_config cfg;
    tg_overlay *overlay;
    tg_dedupe *index;
    uint64_t seed;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    tg_job *head, *tail;
    size_t queued_events, queued_bytes;
    bool stopping;

    /* batch state (writer thread only) */
    delta_slot *deltas;
    size_t ndelta_slots, ndeltas;
    uint32_t *delta_used; /* the slots in use, in insertion order: ndeltas of them */
    uint32_t delta_gen;
    seen_slot *seen;
    size_t nseen_slots, seen_mask;
    uint32_t seen_gen;
    pending_id *pending;
    size_t npending, cap_pending;
    batch_scope scopes[MAX_SCOPES];
    int nscopes;

    cached_block cache[BLOCK_CACHE];
    size_t cache_next, cache_bytes;
    int64_t last_block, last_cancel; /* highest committed */
    /* folding: shards are folded round-robin so that the whole overlay is folded about once
     * per cfg.checkpoint_ms; `credit` accumulates shards due since the last fold */
    double fold_credit;
    int next_shard;
    /* spilling: a shard's live usage is spilled SPILLS_PER_FOLD times, then folded into its
     * pages together with the spills; fold_kind[] records what a fold did until its commit */
    int spills[TG_OVERLAY_SHARDS];
    enum { FOLD_NOTHING, FOLD_SPILLED, FOLD_TO_PAGES } fold_kind[TG_OVERLAY_SHARDS];
    int64_t spill_seq;
    int64_t last_fold_ms, last_prune;
    /* priority (see the top): the nice value before the boost, and where the writer stands */
    int base_nice;
    bool boosted, boost_refused;
    /* identifier retention (see the top): marks, oldest first; the running sweep's cutoff
     * (blocks below it leave the index) and next partition; the last finished sweep's cutoff */
    retain_mark *marks;
    size_t nmarks, cap_marks;
    bool marks_lost; /* a mark could not be kept: no sweep until a restart */
    int64_t sweep_cutoff, swept_cutoff;
    int sweep_part;
    size_t sweep_removed;
    int64_t newest_created;            /* the newest block's time */
    int64_t trust_ref, trust_elapsed0; /* ageing's "now" (see the top) at start-up */
    /* what start-up may leave unread (see "start-up marks"): each shard's marks as of its
     * last committed fold (at start-up, as stored), the running fold's marks, when the marks
     * were last stored, and the identifier window's first block as last stored */
    int64_t shard_block[TG_OVERLAY_SHARDS], shard_cancel[TG_OVERLAY_SHARDS];
    int64_t fold_block, fold_cancel;
    int64_t stored_ms, stored_window;
    bool marks_unstored;               /* shard marks moved since they were last stored */
    bool storing_marks, storing_window; /* written in the transaction now committing */
    bool unstored_after;               /* marks_unstored once it commits */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t job_weight(const tg_job *j)
{
    return j->fn ? 1 : j->nevents + j->nerrors;
}

static uint64_t mix3(int64_t a, int64_t b, int64_t c)
{
    uint64_t h = (uint64_t)a * 0x9E3779B97F4A7C15ULL;
    h ^= (uint64_t)b + 0x632BE59BD9B4E019ULL + (h << 6) + (h >> 2);
    h ^= (uint64_t)c * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 29;
    return h * 0x94d049bb133111ebULL;
}

/* ================================================================ batch delta table */

static int delta_add(tg_writer *w, int64_t m, int64_t c, int64_t minute, tg_dec sum,
                     int64_t count)
{
    if ((w->ndeltas + 1) * 2 > w->ndelta_slots) {
        size_t n = w->ndelta_slots ? w->ndelta_slots * 2 : 4096;
        /* One slot a cache line (64 bytes, aligned): a probe, and its prefetch, touch one. */
        delta_slot *t = aligned_alloc(64, n * sizeof *t);
        uint32_t *used = malloc(n / 2 * sizeof *used);
        if (t)
            memset(t, 0, n * sizeof *t);
        if (!t || !used) {
            free(t);
            free(used);
            return TG_ENOMEM;
        }
        for (size_t i = 0; i < w->ndeltas; i++) {
            const delta_slot *d = &w->deltas[w->delta_used[i]];
            size_t k = mix3(d->meter_seq, d->customer_seq, d->minute) & (n - 1);
            while (t[k].gen == w->delta_gen)
                k = (k + 1) & (n - 1);
            t[k] = *d;
            used[i] = (uint32_t)k;
        }
        free(w->deltas);
        free(w->delta_used);
        w->deltas = t;
        w->delta_used = used;
        w->ndelta_slots = n;
    }
    size_t mask = w->ndelta_slots - 1;
    size_t k = mix3(m, c, minute) & mask;
    for (; w->deltas[k].gen == w->delta_gen; k = (k + 1) & mask) {
        delta_slot *d = &w->deltas[k];
        if (d->meter_seq == m && d->customer_seq == c && d->minute == minute) {
            if (tg_dec_add(d->sum, sum, &d->sum))
                return TG_EINVAL;
            d->count += count;
            return TG_OK;
        }
    }
    delta_slot *d = &w->deltas[k];
    d->gen = w->delta_gen;
    d->meter_seq = m;
    d->customer_seq = c;
    d->minute = minute;
    d->sum = sum;
    d->count = count;
    w->delta_used[w->ndeltas++] = (uint32_t)k;
    return TG_OK;
}

/* Prefetches the slot delta_add of (m, c, minute) starts at (a table grown meanwhile makes it
 * useless, not wrong). */
static void delta_prefetch(const tg_writer *w, int64_t m, int64_t c, int64_t minute)
{
    if (w->ndelta_slots)
        __builtin_prefetch(&w->deltas[mix3(m, c, minute) & (w->ndelta_slots - 1)]);
}

/* ================================================================ identifiers */

/* Starts the batch's identifier set, for up to n events: a new generation over the first
 * `want` slots of the table (grown when needed). */
static int seen_reset(tg_writer *w, size_t n)
{
    size_t want = 1024;
    while (want < n * 2)
        want *= 2;
    if (want > w->nseen_slots) {
        free(w->seen);
        w->seen = calloc(want, sizeof *w->seen);
        if (!w->seen) {
            w->nseen_slots = 0;
            return TG_ENOMEM;
        }
        w->nseen_slots = want;
        w->seen_gen = 0;
    }
    if (++w->seen_gen == 0) { /* wrapped: old generations could look current */
        memset(w->seen, 0, w->nseen_slots * sizeof *w->seen);
        w->seen_gen = 1;
    }
    w->seen_mask = want - 1;
    return TG_OK;
}

static bool same_scope(const tg_scope *a, const tg_scope *b)
{
    return a->livemode == b->livemode && strcmp(a->account, b->account) == 0;
}

/* True when the identifier was already taken in this batch; otherwise records it. */
static bool seen_check_add(tg_writer *w, uint64_t h, const tg_scope *scope, const char *id)
{
    size_t mask = w->seen_mask;
    size_t k = (size_t)h & mask;
    for (; w->seen[k].gen == w->seen_gen; k = (k + 1) & mask)
        if (w->seen[k].h == h && same_scope(w->seen[k].scope, scope) &&
            strcmp(w->seen[k].identifier, id) == 0)
            return true;
    w->seen[k].h = h;
    w->seen[k].identifier = id;
    w->seen[k].scope = scope;
    w->seen[k].gen = w->seen_gen;
    return false;
}

static int pending_add(tg_writer *w, uint64_t h, int scope_index, uint32_t part)
{
    if (w->npending == w->cap_pending) {
        size_t cap = w->cap_pending ? w->cap_pending * 2 : 4096;
        pending_id *p = realloc(w->pending, cap * sizeof *p);
        if (!p)
            return TG_ENOMEM;
        w->pending = p;
        w->cap_pending = cap;
    }
    w->pending[w->npending].h = h;
    w->pending[w->npending].scope_index = scope_index;
    w->pending[w->npending].part = part;
    w->npending++;
    return TG_OK;
}

/* Finds a block: from the cache of recent blocks, else the store (copied into a). */
static int block_load(tg_writer *w, int64_t seq, tg_arena *a, tg_scope *scope, int64_t *created,
                      const void **data, size_t *len, tg_err *err)
{
    for (size_t i = 0; i < BLOCK_CACHE; i++)
        if (w->cache[i].data && w->cache[i].seq == seq) {
            *scope = w->cache[i].scope;
            *created = w->cache[i].created;
            *data = w->cache[i].data;
            *len = w->cache[i].len;
            return TG_OK;
        }
    return w->store->ops->block_get(w->store, seq, a, scope, created, data, len, err);
}

static void cache_drop(tg_writer *w, cached_block *c)
{
    if (!c->data)
        return;
    w->cache_bytes -= c->len;
    free(c->data);
    c->data = NULL;
    c->len = 0;
}

static void cache_put(tg_writer *w, int64_t seq, const tg_scope *scope, int64_t created,
                      const void *data, size_t len)
{
    if (len > BLOCK_CACHE_BYTES)
        return;
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        return;
    memcpy(copy, data, len);
    /* The slot to fill holds the oldest block, the slots after it the next oldest: those go
     * too, oldest first, until the new block fits in the byte budget. */
    size_t at = w->cache_next++ % BLOCK_CACHE;
    cache_drop(w, &w->cache[at]);
    for (size_t k = 1; k < BLOCK_CACHE && w->cache_bytes + len > BLOCK_CACHE_BYTES; k++)
        cache_drop(w, &w->cache[(at + k) % BLOCK_CACHE]);
    cached_block *c = &w->cache[at];
    c->seq = seq;
    c->scope = *scope;
    c->created = created;
    c->data = copy;
    c->len = len;
    w->cache_bytes += len;
}

/* Drops the cached blocks newer than seq: blocks of a batch that failed to commit, whose
 * sequence numbers the next blocks will take again. */
static void cache_forget_after(tg_writer *w, int64_t seq)
{
    for (size_t i = 0; i < BLOCK_CACHE; i++)
        if (w->cache[i].data && w->cache[i].seq > seq)
            cache_drop(w, &w->cache[i]);
}

/* Looks for identifier in a stored block of the same scope. 1: found (index and event set). */
static int block_find(const void *data, size_t len, const char *identifier, int64_t *index,
                      tg_block_event *ev)
{
    tg_block_reader r;
    if (tg_block_open(&r, data, len))
        return -1;
    size_t n = strlen(identifier);
    int rc;
    int64_t i = 0;
    while ((rc = tg_block_next(&r, ev)) == 1) {
        if (ev->identifier_len == n && memcmp(ev->identifier, identifier, n) == 0) {
            *index = i;
            return 1;
        }
        i++;
    }
    return rc;
}

/* The identifier index keeps 32 bits of where an event is stored (dedupe.h), so block
 * numbers wrap around: a locator stands for every block numbered loc + k * LOCATOR_SPAN, which
 * is one block until about 4.3 billion (a server writing a thousand blocks a second, a
 * thousand small commits or a million events, gets there in fifty days), and a lookup reads
 * them newest first. */
#define LOCATOR_SPAN (TG_DEDUPE_ROW - 1)

static uint64_t block_locator(int64_t seq)
{
    return (uint64_t)(seq - 1) % LOCATOR_SPAN + 1;
}

/* Looks for identifier in block seq. TG_OK: found, *out set; TG_ENOTFOUND: not there. */
static int lookup_in_block(tg_writer *w, int64_t seq, const tg_scope *scope,
                           const char *identifier, tg_arena *a, tg_found *out, tg_err *err)
{
    tg_scope bscope;
    int64_t created;
    const void *data;
    size_t len;
    tg_err load = {0};
    int rc = block_load(w, seq, a, &bscope, &created, &data, &len, &load);
    if (rc == TG_ENOTFOUND)
        return rc; /* no block has this number: locators stand for several */
    if (rc)
        return tg_err_set(err, rc, NULL, "%s", load.msg);
    if (!same_scope(&bscope, scope))
        return TG_ENOTFOUND;
    tg_block_event ev;
    int64_t index = 0;
    rc = block_find(data, len, identifier, &index, &ev);
    if (rc < 0)
        return tg_err_set(err, TG_ESTORE, NULL, "Corrupt event block %lld.", (long long)seq);
    if (rc == 0)
        return TG_ENOTFOUND;
    out->in_block = true;
    out->block = seq;
    out->index = index;
    out->created = created;
    out->ev.meter_seq = (int64_t)ev.meter_seq;
    out->ev.customer_seq = (int64_t)ev.customer_seq;
    out->ev.timestamp = ev.timestamp;
    out->ev.value = ev.value;
    out->ev.created = created;
    snprintf(out->ev.identifier, sizeof out->ev.identifier, "%s", identifier);
    return TG_OK;
}

int tg_writer_lookup(tg_writer *w, const tg_scope *scope, const char *identifier, tg_arena *a,
                     tg_found *out, tg_err *err)
{
    uint64_t h = tg_dedupe_hash(w->seed, scope->account, scope->livemode, identifier);
    uint64_t cands[TG_DEDUPE_MAX_CANDIDATES];
    int n = tg_dedupe_find(w->index, h, cands, TG_DEDUPE_MAX_CANDIDATES);
    memset(out, 0, sizeof *out);
    for (int i = 0; i < n; i++) {
        if (cands[i] == TG_DEDUPE_ROW) {
            tg_err lookup = {0};
            int rc = w->store->ops->event_get(w->store, scope, identifier, a, &out->ev, &lookup);
            if (rc == TG_ENOTFOUND)
                continue;
            if (rc)
                return tg_err_set(err, rc, NULL, "%s", lookup.msg);
            out->in_block = false;
            out->created = out->ev.created;
            return TG_OK;
        }
        const int64_t loc = (int64_t)cands[i], span = (int64_t)LOCATOR_SPAN;
        if (loc > w->last_block)
            continue;
        for (int64_t seq = loc + (w->last_block - loc) / span * span; seq > 0; seq -= span) {
            int rc = lookup_in_block(w, seq, scope, identifier, a, out, err);
            if (rc != TG_ENOTFOUND)
                return rc;
        }
    }
    return TG_ENOTFOUND;
}

/* True when this identifier is already stored (or taken earlier in the batch). */
static int is_duplicate(tg_writer *w, const tg_scope *scope, const char *identifier, uint64_t h,
                        bool *dup, tg_err *err)
{
    *dup = seen_check_add(w, h, scope, identifier);
    if (*dup)
        return TG_OK;
    uint64_t cands[1];
    if (tg_dedupe_find(w->index, h, cands, 1) == 0)
        return TG_OK; /* the common case: no tag matches, no read */
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_found f;
    int rc = tg_writer_lookup(w, scope, identifier, &a, &f, err);
    tg_arena_free(&a);
    if (rc == TG_OK)
        *dup = true;
    return rc == TG_ENOTFOUND ? TG_OK : rc;
}

/* ================================================================ row-stored events */

typedef struct rebuild_ctx {
    tg_bucket b;
} rebuild_ctx;

static int rebuild_add(void *ctx, int64_t ts, int64_t seq, tg_dec value)
{
    rebuild_ctx *r = ctx;
    return tg_bucket_add(&r->b, ts, seq, value);
}

/* Recomputes one minute bucket of a row-stored meter from its counted events. */
static int bucket_rebuild(tg_store *s, int64_t meter_seq, int64_t customer_seq, int64_t minute,
                          tg_err *err)
{
    rebuild_ctx r;
    memset(&r, 0, sizeof r);
    int rc = s->ops->event_each_in_range(s, meter_seq, customer_seq, minute, minute + 60,
                                         rebuild_add, &r, err);
    if (rc)
        return rc == TG_EINVAL ? tg_err_set(err, TG_ESTORE, NULL, "bucket overflow") : rc;
    r.b.minute = minute;
    return s->ops->bucket_put(s, meter_seq, customer_seq, &r.b, err);
}

/* A row-stored event: meters with formula last, or with a pre-aggregation window, where
 * within a window only the most recently received event of a customer counts. The previous
 * survivor is superseded and both minute buckets are recomputed from the rows. */
static int apply_row_event(tg_writer *w, const tg_scope *scope, tg_event *e, int *result,
                           tg_err *err)
{
    tg_store *s = w->store;
    bool dup = false;
    int rc = s->ops->event_insert(s, scope, e, &dup, err);
    if (rc || dup) {
        *result = dup ? TG_EDUPLICATE : rc;
        return rc;
    }
    if (e->window != TG_WINDOW_NONE) {
        int64_t start = tg_window_start(e->timestamp, tg_window_seconds(e->window));
        int64_t old_seq, old_ts;
        rc = s->ops->window_get(s, e->meter_seq, e->customer_seq, start, &old_seq, &old_ts, err);
        if (rc == TG_OK) {
            /* Only a survivor that still counts is superseded: a canceled one stays so. */
            bool changed = false;
            rc = s->ops->event_set_state(s, scope, old_seq, TG_EVENT_COUNTED, TG_EVENT_SUPERSEDED,
                                         &changed, err);
            if (!rc && changed)
                rc = bucket_rebuild(s, e->meter_seq, e->customer_seq,
                                    tg_window_start(old_ts, 60), err);
        } else if (rc == TG_ENOTFOUND) {
            rc = TG_OK;
        }
        if (!rc)
            rc = s->ops->window_put(s, e->meter_seq, e->customer_seq, start, e->seq,
                                    e->timestamp, err);
    }
    if (!rc)
        rc = bucket_rebuild(s, e->meter_seq, e->customer_seq, tg_window_start(e->timestamp, 60),
                            err);
    *result = rc;
    return rc;
}

/* ================================================================ event jobs */

/* Counts a repeated identifier of an asynchronously validated event where refusals are
 * reported, so a client that reuses identifiers by mistake sees it. */
static int report_duplicate(tg_writer *w, const tg_scope *scope, const tg_event *e, tg_err *err)
{
    tg_meter_error me;
    memset(&me, 0, sizeof me);
    if (tg_id_random(me.id, sizeof me.id, "mtrerr_", 24))
        return tg_err_set(err, TG_ESTORE, NULL, "random generator failed");
    snprintf(me.meter_id, sizeof me.meter_id, "%s", e->meter_id);
    snprintf(me.code, sizeof me.code, "%s", tg_err_reason(TG_EDUPLICATE));
    snprintf(me.last_message, sizeof me.last_message,
             "An event already exists with identifier %.100s.", e->identifier);
    me.count = 1;
    me.last_seen = tg_clock_now(w->clock);
    return w->store->ops->meter_error_add(w->store, scope, &me, err);
}

/* Part k of b's block starts here (at the body's end). */
static int part_start(batch_scope *b, size_t k)
{
    if (k == b->cap_parts) {
        size_t cap = b->cap_parts ? b->cap_parts * 2 : 16;
        size_t *at = realloc(b->part_at, cap * sizeof *at);
        if (!at)
            return TG_ENOMEM;
        b->part_at = at;
        int64_t *seqs = realloc(b->seqs, cap * sizeof *seqs);
        if (!seqs)
            return TG_ENOMEM;
        b->seqs = seqs;
        b->cap_parts = cap;
    }
    b->part_at[k] = b->block.body.len;
    return TG_OK;
}

static int scope_index(tg_writer *w, const tg_scope *scope, int64_t created)
{
    for (int i = 0; i < w->nscopes; i++)
        if (same_scope(&w->scopes[i].scope, scope))
            return i;
    if (w->nscopes == MAX_SCOPES)
        return -1;
    batch_scope *b = &w->scopes[w->nscopes];
    b->scope = *scope;
    b->created = created;
    tg_buf_reset(&b->block.body);
    b->block.count = 0;
    return w->nscopes++;
}

/* Hashes are computed a few events ahead and their index slots prefetched: with millions of
 * identifiers every lookup misses the cache, and overlapping the misses hides most of it. */
#define PREFETCH_AHEAD 8

static int apply_event(tg_writer *w, tg_job *j, size_t i, uint64_t h, tg_err *err);

static int apply_events(tg_writer *w, tg_job *j, tg_err *err)
{
    uint64_t ring[PREFETCH_AHEAD];
    for (size_t i = 0; i < j->nevents + PREFETCH_AHEAD; i++) {
        /* Event i - AHEAD uses ring slot i % AHEAD, which event i then takes over: apply
         * before hashing. */
        if (i >= PREFETCH_AHEAD) {
            size_t at = i - PREFETCH_AHEAD;
            int rc = apply_event(w, j, at, ring[at % PREFETCH_AHEAD], err);
            if (rc)
                return rc;
        }
        if (i < j->nevents) {
            const tg_event *e = &j->events[i];
            /* Hashed when prepared, if it was prepared for this job's scope (the service's
             * seed is the writer's: see tg_service_open). */
            uint64_t ah = e->id_hash_scope == j->scope
                              ? e->id_hash
                              : tg_dedupe_hash(w->seed, j->scope->account, j->scope->livemode,
                                               e->identifier);
            ring[i % PREFETCH_AHEAD] = ah;
            tg_dedupe_prefetch(w->index, ah);
            delta_prefetch(w, e->meter_seq, e->customer_seq, tg_window_start(e->timestamp, 60));
        }
    }
    for (size_t i = 0; i < j->nerrors; i++) {
        int rc = w->store->ops->meter_error_add(w->store, j->scope, &j->errors[i], err);
        if (rc)
            return rc;
    }
    return TG_OK;
}

/* Stores event i of job j (h: its identifier hash). */
static int apply_event(tg_writer *w, tg_job *j, size_t i, uint64_t h, tg_err *err)
{
    tg_event *e = &j->events[i];
    bool dup = false;
    int rc = is_duplicate(w, j->scope, e->identifier, h, &dup, err);
    if (rc)
        return rc;
    if (dup) {
        j->results[i] = TG_EDUPLICATE;
        if (j->report_duplicates && (rc = report_duplicate(w, j->scope, e, err)))
            return rc;
        return TG_OK;
    }
    if (!e->additive) {
        rc = apply_row_event(w, j->scope, e, &j->results[i], err);
        if (rc)
            return rc;
        if (j->results[i] == TG_EDUPLICATE) {
            if (j->report_duplicates && (rc = report_duplicate(w, j->scope, e, err)))
                return rc;
            return TG_OK;
        }
        if ((rc = pending_add(w, h, -1, 0)))
            return tg_err_set(err, rc, NULL, NULL);
        return TG_OK;
    }
    int si = scope_index(w, j->scope, e->created);
    if (si < 0)
        return tg_err_set(err, TG_EBUSY, NULL, "Too many scopes in one batch.");
    batch_scope *b = &w->scopes[si];
    if (e->created > b->created)
        b->created = e->created;
    size_t part = b->block.count / PART_EVENTS;
    if (b->block.count % PART_EVENTS == 0 && part_start(b, part))
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    if (tg_block_add(&b->block, e->identifier, (uint64_t)e->meter_seq,
                     (uint64_t)e->customer_seq, e->timestamp, e->value, &e->extras))
        return tg_err_set(err, TG_ENOMEM, NULL, "Event block full.");
    if ((rc = pending_add(w, h, si, (uint32_t)part)) ||
        (rc = delta_add(w, e->meter_seq, e->customer_seq, tg_window_start(e->timestamp, 60),
                        e->value, 1)))
        return tg_err_set(err, rc == TG_EINVAL ? TG_ESTORE : rc, NULL,
                          rc == TG_EINVAL ? "Aggregate overflow." : NULL);
    j->results[i] = TG_OK;
    return TG_OK;
}

int tg_writer_cancel(tg_writer *w, const tg_scope *scope, const tg_found *f, tg_err *err)
{
    tg_store *s = w->store;
    if (!f->in_block) {
        bool changed = false;
        if (f->ev.state == TG_EVENT_CANCELED)
            return tg_err_set(err, TG_EINVAL, "cancel[identifier]",
                              "The meter event with identifier '%s' is already canceled.",
                              f->ev.identifier);
        bool counted = f->ev.state == TG_EVENT_COUNTED;
        int rc = s->ops->event_set_state(s, scope, f->ev.seq, f->ev.state, TG_EVENT_CANCELED,
                                         &changed, err);
        if (!rc && counted && changed)
            rc = bucket_rebuild(s, f->ev.meter_seq, f->ev.customer_seq,
                                tg_window_start(f->ev.timestamp, 60), err);
        return rc;
    }
    int64_t id;
    bool dup;
    int rc = s->ops->cancel_put(s, f->block, f->index, tg_clock_now(w->clock), &id, &dup, err);
    if (rc)
        return rc;
    if (dup)
        return tg_err_set(err, TG_EINVAL, "cancel[identifier]",
                          "The meter event with identifier '%s' is already canceled.",
                          f->ev.identifier);
    rc = delta_add(w, f->ev.meter_seq, f->ev.customer_seq, tg_window_start(f->ev.timestamp, 60),
                   -f->ev.value, -1);
    if (rc)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    /* Raised only now: a failed job's savepoint drops the row, and the number comes back for
     * the next cancellation, which a fold marked "through" it would count as absorbed. */
    if (id > w->last_cancel)
        w->last_cancel = id;
    return TG_OK;
}

/* ================================================================ folding */

/* Folding proceeds one (pair, day) at a time: the overlay hands out each pair's
 * deltas in minute order, so consecutive deltas of one day are collected and merged into that
 * day's page with one read and one write. */
typedef struct fold_ctx {
    tg_writer *w;
    tg_err *err;
    int64_t through_block, through_cancel; /* the marks written on every page folded */
    uint64_t meter_seq, customer_seq;
    int64_t day;
    tg_delta_vec v; /* the deltas collected */
    tg_buf page;
    int shard;       /* spilling: the shard, and the spill's seq */
    int64_t seq;
} fold_ctx;

static int fold_flush(fold_ctx *f)
{
    if (!f->v.n)
        return TG_OK;
    tg_store *s = f->w->store;
    tg_arena a;
    tg_arena_init(&a, 0);
    const void *old = NULL;
    size_t oldlen = 0;
    int rc = s->ops->day_get(s, (int64_t)f->meter_seq, (int64_t)f->customer_seq, f->day, &a,
                             &old, &oldlen, f->err);
    if (rc == TG_ENOTFOUND)
        rc = TG_OK;
    tg_buf_reset(&f->page);
    if (!rc && tg_daypage_merge(f->day, old, oldlen, f->v.d, f->v.n, &f->page))
        rc = tg_err_set(f->err, TG_ESTORE, NULL, "Cannot merge the day page of meter %llu.",
                        (unsigned long long)f->meter_seq);
    if (!rc)
        rc = s->ops->day_put(s, (int64_t)f->meter_seq, (int64_t)f->customer_seq, f->day,
                             f->page.data, f->page.len, f->through_block, f->through_cancel,
                             f->err);
    tg_arena_free(&a);
    f->v.n = 0;
    return rc;
}

/* Appends d to f's deltas (of one pair, or of one pair and day). */
static int fold_push(fold_ctx *f, const tg_delta *d)
{
    return tg_delta_vec_push(&f->v, d) ? tg_err_set(f->err, TG_ENOMEM, NULL, NULL) : TG_OK;
}

static int fold_delta(void *ctx, uint64_t meter_seq, uint64_t customer_seq, const tg_delta *d)
{
    fold_ctx *f = ctx;
    int64_t day = tg_window_start(d->minute, 86400);
    if (f->v.n && (meter_seq != f->meter_seq || customer_seq != f->customer_seq || day != f->day)) {
        int rc = fold_flush(f);
        if (rc)
            return rc;
    }
    f->meter_seq = meter_seq;
    f->customer_seq = customer_seq;
    f->day = day;
    return fold_push(f, d);
}

/* ---------------------------------------------------------------- spilling
 *
 * Folding a shard rewrites the day page of every (pair, day) it has deltas for, and a page
 * costs what it holds, not what changes: usage spread over many days (a backfill) rewrites
 * nearly every page at each fold, so the cost of a fold grew with the stored data (at 30M
 * backfilled events, pages of ~110 entries took ~17 us each to read, merge and write). So a
 * fold usually spills the shard instead: one row per pair, holding that pair's deltas of all
 * days as a delta run (core/daypage.h), written without reading anything. Every
 * (SPILLS_PER_FOLD + 1)th fold of a shard merges its spills and its live usage into the
 * pages and deletes the spills, in one transaction. A spill carries the marks a page would,
 * so start-up replays only what neither pages nor spills include; readers add a pair's
 * spills to its pages under the same shard lock. */

static int spill_flush(fold_ctx *f)
{
    if (!f->v.n)
        return TG_OK;
    tg_buf_reset(&f->page);
    if (tg_deltarun_put(&f->page, f->v.d, f->v.n))
        return tg_err_set(f->err, TG_ESTORE, NULL, "Cannot spill the live usage of meter %llu.",
                          (unsigned long long)f->meter_seq);
    tg_spill row = {f->shard, (int64_t)f->meter_seq, (int64_t)f->customer_seq, f->seq,
                    f->through_block, f->through_cancel, f->page.data, f->page.len};
    f->v.n = 0;
    tg_store *s = f->w->store;
    return s->ops->spill_put(s, &row, f->err);
}

static int spill_delta(void *ctx, uint64_t meter_seq, uint64_t customer_seq, const tg_delta *d)
{
    fold_ctx *f = ctx;
    if (f->v.n && (meter_seq != f->meter_seq || customer_seq != f->customer_seq)) {
        int rc = spill_flush(f);
        if (rc)
            return rc;
    }
    f->meter_seq = meter_seq;
    f->customer_seq = customer_seq;
    return fold_push(f, d);
}

/* A shard's spills, read pair by pair (in key order) as its fold into pages goes: the pairs
 * seen, and the current pair's deltas, all its rows merged into one minute-ascending list
 * d[start, end). Each pair is folded once its rows are read, so memory follows one pair,
 * not the shard (a backfill's shard held ~190,000 spilled deltas). */
typedef struct spilled_pair {
    uint64_t meter_seq, customer_seq;
    size_t start, end;
} spilled_pair;

typedef struct spilled {
    tg_writer *w;
    fold_ctx *f;
    spilled_pair *p;
    size_t np, pcap;
    tg_delta *d, *tmp; /* tmp: room for merging a row into its pair's list */
    size_t n, cap;
} spilled;

static int fold_spilled_pair(spilled *sp, const spilled_pair *p);

static int spilled_reserve(spilled *sp, size_t more)
{
    if (sp->n + more <= sp->cap)
        return TG_OK;
    size_t cap = sp->cap ? sp->cap : 4096;
    while (cap < sp->n + more)
        cap *= 2;
    tg_delta *d = realloc(sp->d, cap * sizeof *d);
    if (d)
        sp->d = d;
    tg_delta *t = d ? realloc(sp->tmp, cap * sizeof *t) : NULL;
    if (t)
        sp->tmp = t;
    if (!d || !t)
        return TG_ENOMEM;
    sp->cap = cap;
    return TG_OK;
}

/* Merges the minute-ascending lists a[0..na) and b[0..nb) into out (equal minutes stay
 * side by side: the page merge adds them up). */
static void merge_deltas(const tg_delta *a, size_t na, const tg_delta *b, size_t nb,
                         tg_delta *out)
{
    size_t i = 0, k = 0;
    while (i < na || k < nb)
        *out++ = k == nb || (i < na && a[i].minute <= b[k].minute) ? a[i++] : b[k++];
}

/* Reads one spill row (spill_each visits a shard's rows pair by pair); a row of a new pair
 * first folds the pair before it. */
static int fold_spill_row(void *ctx, const tg_spill *row)
{
    spilled *sp = ctx;
    tg_err *err = sp->f->err;
    bool same = sp->np && sp->p[sp->np - 1].meter_seq == (uint64_t)row->meter_seq &&
                sp->p[sp->np - 1].customer_seq == (uint64_t)row->customer_seq;
    if (!same) {
        if (sp->np) {
            int rc = fold_spilled_pair(sp, &sp->p[sp->np - 1]);
            if (rc)
                return rc;
            sp->n = 0;
        }
        if (sp->np == sp->pcap) {
            size_t cap = sp->pcap ? sp->pcap * 2 : 256;
            spilled_pair *p = realloc(sp->p, cap * sizeof *p);
            if (!p)
                return tg_err_set(err, TG_ENOMEM, NULL, NULL);
            sp->p = p;
            sp->pcap = cap;
        }
        sp->p[sp->np++] = (spilled_pair){(uint64_t)row->meter_seq, (uint64_t)row->customer_seq,
                                         0, 0};
    }
    spilled_pair *pair = &sp->p[sp->np - 1];
    /* a run's entries take at least 3 bytes each: len / 3 bounds the row's deltas */
    if (spilled_reserve(sp, row->len / 3 + 1))
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    tg_daypage_reader r;
    tg_deltarun_open(&r, row->data, row->len);
    size_t n = sp->n;
    int rc = 0;
    while (n < sp->cap && (rc = tg_deltarun_next(&r, &sp->d[n])) == 1)
        n++;
    if (rc < 0 || r.p != r.end)
        return tg_err_set(err, TG_ESTORE, NULL, "Corrupt spilled usage of meter %lld.",
                          (long long)row->meter_seq);
    if (same) { /* merge the row's run into the pair's list */
        size_t na = sp->n - pair->start, nb = n - sp->n;
        merge_deltas(&sp->d[pair->start], na, &sp->d[sp->n], nb, sp->tmp);
        memcpy(&sp->d[pair->start], sp->tmp, (na + nb) * sizeof *sp->tmp);
    }
    sp->n = n;
    pair->end = n;
    return TG_OK;
}

/* Live usage of the pairs that have no spills, for fold_shard_to_pages. */
typedef struct live_only_ctx {
    fold_ctx *f;
    const spilled *sp;
    uint64_t meter_seq, customer_seq; /* the last pair looked up, and whether it has spills */
    bool looked_up, has_spills;
} live_only_ctx;

static bool has_spills(const spilled *sp, uint64_t m, uint64_t c)
{
    size_t lo = 0, hi = sp->np;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const spilled_pair *p = &sp->p[mid];
        if (p->meter_seq == m && p->customer_seq == c)
            return true;
        if (p->meter_seq < m || (p->meter_seq == m && p->customer_seq < c))
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static int fold_live_only(void *ctx, uint64_t meter_seq, uint64_t customer_seq,
                          const tg_delta *d)
{
    live_only_ctx *l = ctx;
    if (!l->looked_up || meter_seq != l->meter_seq || customer_seq != l->customer_seq) {
        l->meter_seq = meter_seq;
        l->customer_seq = customer_seq;
        l->looked_up = true;
        l->has_spills = has_spills(l->sp, meter_seq, customer_seq);
    }
    return l->has_spills ? TG_OK : fold_delta(l->f, meter_seq, customer_seq, d);
}

/* Folds one pair's spilled list and its live deltas into its pages. */
static int fold_spilled_pair(spilled *sp, const spilled_pair *p)
{
    tg_writer *w = sp->w;
    fold_ctx *f = sp->f;
    tg_delta *live = NULL;
    void *lock = tg_overlay_rdlock(w->overlay, p->meter_seq, p->customer_seq);
    long nlive = tg_overlay_read(w->overlay, p->meter_seq, p->customer_seq, INT64_MIN,
                                 INT64_MAX, &live);
    tg_overlay_unlock(lock);
    if (nlive < 0)
        return TG_ENOMEM;
    int rc = TG_OK;
    size_t i = p->start;
    long k = nlive - 1; /* live is newest first */
    while (!rc && (i < p->end || k >= 0)) {
        const tg_delta *d = k < 0 || (i < p->end && sp->d[i].minute <= live[k].minute)
                                ? &sp->d[i++]
                                : &live[k--];
        rc = fold_delta(f, p->meter_seq, p->customer_seq, d);
    }
    free(live);
    return rc;
}

/* Folds one shard's spills and live usage into its day pages and deletes the spills. */
static int fold_shard_to_pages(tg_writer *w, int shard, fold_ctx *f)
{
    tg_store *s = w->store;
    spilled sp;
    memset(&sp, 0, sizeof sp);
    sp.w = w;
    sp.f = f;
    int rc = s->ops->spill_each(s, shard, -1, -1, fold_spill_row, &sp, f->err);
    if (!rc && sp.np)
        rc = fold_spilled_pair(&sp, &sp.p[sp.np - 1]);
    live_only_ctx l = {f, &sp, 0, 0, false, false};
    if (!rc)
        rc = tg_overlay_each_in_shard(w->overlay, shard, fold_live_only, &l);
    if (!rc)
        rc = fold_flush(f);
    if (!rc && sp.np)
        rc = s->ops->spill_delete_shard(s, shard, f->err);
    free(sp.p);
    free(sp.d);
    free(sp.tmp);
    return rc;
}

/* Folds shards [first, first + n) (mod TG_OVERLAY_SHARDS) inside the current transaction,
 * each into spills or into its day pages (see spilling above), marking what it writes with
 * the given block and cancellation. */
static int fold_shards(tg_writer *w, int first, int n, int64_t through_block,
                       int64_t through_cancel, tg_err *err)
{
    fold_ctx f;
    memset(&f, 0, sizeof f);
    f.w = w;
    f.err = err;
    f.through_block = through_block;
    f.through_cancel = through_cancel;
    w->fold_block = through_block;
    w->fold_cancel = through_cancel;
    tg_buf_init(&f.page, 64u << 20);
    int rc = TG_OK;
    for (int i = 0; i < n && !rc; i++) {
        int shard = (first + i) % TG_OVERLAY_SHARDS;
        /* an idle shard's spills go to its pages at its next fold */
        bool idle = tg_overlay_shard_size(w->overlay, shard) == 0;
        w->fold_kind[shard] = idle && !w->spills[shard]              ? FOLD_NOTHING
                              : idle || w->spills[shard] >= SPILLS_PER_FOLD ? FOLD_TO_PAGES
                                                                          : FOLD_SPILLED;
        if (w->fold_kind[shard] == FOLD_TO_PAGES) {
            rc = fold_shard_to_pages(w, shard, &f);
        } else if (w->fold_kind[shard] == FOLD_SPILLED) {
            f.shard = shard;
            f.seq = ++w->spill_seq;
            rc = tg_overlay_each_in_shard(w->overlay, shard, spill_delta, &f);
            if (!rc)
                rc = spill_flush(&f);
        }
        if (rc == TG_ENOMEM && !err->code)
            tg_err_set(err, rc, NULL, "Out of memory while folding live usage.");
    }
    free(f.v.d);
    tg_buf_free(&f.page);
    return rc;
}

/* Whether a fold has anything to do: live usage, or spills to take to their pages. */
static bool fold_pending(tg_writer *w)
{
    if (tg_overlay_size(w->overlay))
        return true;
    for (int i = 0; i < TG_OVERLAY_SHARDS; i++)
        if (w->spills[i])
            return true;
    return false;
}

/* How many shards are due for folding now (0..TG_OVERLAY_SHARDS). */
static int shards_due(tg_writer *w)
{
    int64_t now = mono_ms();
    w->fold_credit += (double)TG_OVERLAY_SHARDS * (double)(now - w->last_fold_ms) /
                      (double)w->cfg.checkpoint_ms;
    w->last_fold_ms = now;
    if (w->fold_credit > TG_OVERLAY_SHARDS)
        w->fold_credit = TG_OVERLAY_SHARDS;
    /* Memory bound: past OVERLAY_FOLD_BYTES (a backfill spread over many days makes about one
     * delta per event, most of them frozen at about 8 bytes) the overlay is folded at least
     * four times faster. */
    if (tg_overlay_bytes(w->overlay) > OVERLAY_FOLD_BYTES &&
        w->fold_credit < 0.04 * TG_OVERLAY_SHARDS * 4)
        w->fold_credit += (double)TG_OVERLAY_SHARDS / 16;
    return (int)w->fold_credit;
}

/* Commits the current transaction; shards [first, first + n) were folded into it, so they are
 * locked across the commit and emptied once it succeeded. */
static void store_start_marks(tg_writer *w, int first, int n);

static int commit_folded(tg_writer *w, int first, int n, tg_err *err)
{
    store_start_marks(w, first, n);
    for (int i = 0; i < n; i++)
        tg_overlay_lock_shard(w->overlay, (first + i) % TG_OVERLAY_SHARDS);
    int rc = w->store->ops->commit(w->store, err);
    for (int i = 0; i < n; i++) {
        int shard = (first + i) % TG_OVERLAY_SHARDS;
        if (!rc)
            tg_overlay_clear_shard_locked(w->overlay, shard);
        tg_overlay_unlock_shard(w->overlay, shard);
    }
    if (!rc) {
        for (int i = 0; i < n; i++) {
            int shard = (first + i) % TG_OVERLAY_SHARDS;
            if (w->fold_kind[shard] == FOLD_TO_PAGES)
                w->spills[shard] = 0;
            else if (w->fold_kind[shard] == FOLD_SPILLED)
                w->spills[shard]++;
            w->shard_block[shard] = w->fold_block;
            w->shard_cancel[shard] = w->fold_cancel;
        }
        w->marks_unstored = w->unstored_after; /* what store_start_marks wrote committed */
        if (w->storing_marks)
            w->stored_ms = mono_ms();
        if (w->storing_window)
            w->stored_window = w->swept_cutoff;
        w->next_shard = (first + n) % TG_OVERLAY_SHARDS;
        w->fold_credit -= n;
        if (w->fold_credit < 0)
            w->fold_credit = 0;
    }
    return rc;
}

/* Folds the due shards (all of them when `all`) in a transaction of their own: when idle, and
 * at shutdown. */
static void fold_now(tg_writer *w, bool all)
{
    int n = all ? TG_OVERLAY_SHARDS : shards_due(w);
    if (n <= 0 || !fold_pending(w))
        return;
    tg_store *s = w->store;
    tg_err err = {0};
    int first = w->next_shard;
    int rc = s->ops->begin(s, &err);
    if (!rc)
        rc = fold_shards(w, first, n, w->last_block, w->last_cancel, &err);
    if (!rc)
        rc = commit_folded(w, first, n, &err);
    if (rc) {
        s->ops->rollback(s);
        tg_log(TG_LOG_ERROR, "folding live usage failed (will retry): %s", err.msg);
    }
}

/* ================================================================ batches */

static void batch_reset(tg_writer *w)
{
    if (++w->delta_gen == 0) { /* wrapped: old generations could look current */
        if (w->deltas)
            memset(w->deltas, 0, w->ndelta_slots * sizeof *w->deltas);
        w->delta_gen = 1;
    }
    w->ndeltas = 0;
    w->npending = 0;
    w->nscopes = 0;
}

/* Writes each scope's events as block rows of PART_EVENTS events (the last part fewer). */
static int write_blocks(tg_writer *w, tg_err *err)
{
    tg_buf out;
    tg_buf_init(&out, BLOCK_CAP);
    int rc = TG_OK;
    for (int i = 0; i < w->nscopes && !rc; i++) {
        batch_scope *b = &w->scopes[i];
        for (size_t k = 0, first = 0; first < b->block.count && !rc; k++, first += PART_EVENTS) {
            size_t n = b->block.count - first < PART_EVENTS ? b->block.count - first : PART_EVENTS;
            size_t to = first + n < b->block.count ? b->part_at[k + 1] : b->block.body.len;
            tg_buf_reset(&out);
            rc = tg_block_finish_part(&b->block, n, b->part_at[k], to, &out) ? TG_ENOMEM : TG_OK;
            if (!rc)
                rc = w->store->ops->block_append(w->store, &b->scope, b->created, n, out.data,
                                                 out.len, &b->seqs[k], err);
            if (!rc) {
                cache_put(w, b->seqs[k], &b->scope, b->created, out.data, out.len);
                if (b->seqs[k] > w->last_block)
                    w->last_block = b->seqs[k];
            }
        }
    }
    tg_buf_free(&out);
    return rc == TG_ENOMEM ? tg_err_set(err, rc, NULL, NULL) : rc;
}

static void note_block(tg_writer *w, int64_t seq, int64_t created);

/* After a commit: the batch's identifiers and deltas become visible. */
static void publish_batch(tg_writer *w)
{
    for (int i = 0; i < w->nscopes; i++)
        if (w->scopes[i].block.count)
            note_block(w, w->scopes[i].seqs[0], w->scopes[i].created);
    for (size_t i = 0; i < w->npending; i++) {
        if (i + PREFETCH_AHEAD < w->npending)
            tg_dedupe_prefetch(w->index, w->pending[i + PREFETCH_AHEAD].h);
        int si = w->pending[i].scope_index;
        uint64_t loc =
            si < 0 ? TG_DEDUPE_ROW : block_locator(w->scopes[si].seqs[w->pending[i].part]);
        if (tg_dedupe_insert(w->index, w->pending[i].h, loc))
            tg_log(TG_LOG_ERROR, "identifier index: out of memory; retries may be recounted");
    }
    /* Each add reads its delta slot, then walks a bucket slot, a pair and its deltas: four
     * dependent cache misses, prefetched in four steps, a few deltas apart. */
    for (size_t i = 0; i < w->ndeltas; i++) {
        if (i + 12 < w->ndeltas)
            __builtin_prefetch(&w->deltas[w->delta_used[i + 12]]);
        for (int step = 0; step < 3; step++) {
            size_t ahead = i + (size_t)(3 - step) * 3;
            if (ahead < w->ndeltas) {
                const delta_slot *a = &w->deltas[w->delta_used[ahead]];
                tg_overlay_prefetch(w->overlay, (uint64_t)a->meter_seq,
                                    (uint64_t)a->customer_seq, step);
            }
        }
        const delta_slot *d = &w->deltas[w->delta_used[i]];
        if (tg_overlay_add(w->overlay, (uint64_t)d->meter_seq, (uint64_t)d->customer_seq,
                           d->minute, d->sum, d->count))
            tg_log(TG_LOG_ERROR, "overlay: cannot add a delta (out of memory or overflow)");
        if (w->cfg.on_usage)
            w->cfg.on_usage(w->cfg.usage_ctx, d->meter_seq, d->customer_seq, d->minute, d->sum);
    }
}

static void run_function_job(tg_writer *w, tg_job *j)
{
    tg_store *s = w->store;
    j->rc = s->ops->savepoint(s, &j->err);
    if (j->rc)
        return;
    size_t mark_pending = w->npending;
    j->rc = j->fn(s, j->arg, &j->err);
    if (j->rc) {
        if (!j->err.code)
            tg_err_set(&j->err, j->rc, NULL, NULL);
        s->ops->rollback_to(s);
        w->npending = mark_pending;
    } else {
        j->rc = s->ops->release(s, &j->err);
    }
}

static void fail_batch(tg_job *batch, const tg_err *err)
{
    for (tg_job *j = batch; j; j = j->next) {
        /* Every function job's, failed ones too: one that failed at its savepoint's release
         * had run to the end and may have published what is now rolled back. */
        if (j->fn && j->on_failure)
            j->on_failure(j->arg);
        j->rc = err->code ? err->code : TG_ESTORE;
        j->err = *err;
        for (size_t i = 0; i < j->nevents; i++)
            j->results[i] = j->rc;
    }
}

static void run_batch(tg_writer *w, tg_job *batch, size_t events)
{
    tg_store *s = w->store;
    tg_err err = {0};
    int64_t last_block = w->last_block, last_cancel = w->last_cancel;
    batch_reset(w);
    int rc = seen_reset(w, events + 1);
    if (!rc)
        rc = s->ops->begin(s, &err);
    for (tg_job *j = batch; j && !rc; j = j->next) {
        if (j->fn) {
            run_function_job(w, j);
            if (j->rc == TG_ESTORE) /* the connection is in trouble: give up the batch */
                rc = j->rc, err = j->err;
        } else {
            rc = apply_events(w, j, &err);
            j->rc = rc;
        }
    }
    /* Fold the due overlay shards in this same transaction. Their deltas come from blocks
     * committed before this batch: the pages are marked with the batch's starting marks. */
    int fold_first = w->next_shard, fold_n = 0;
    if (!rc && fold_pending(w)) {
        fold_n = shards_due(w);
        if (fold_n)
            rc = fold_shards(w, fold_first, fold_n, last_block, last_cancel, &err);
    }
    if (!rc)
        rc = write_blocks(w, &err);
    if (!rc)
        rc = commit_folded(w, fold_first, fold_n, &err);
    if (rc) {
        s->ops->rollback(s);
        cache_forget_after(w, last_block);
        w->last_block = last_block;
        w->last_cancel = last_cancel;
        if (!err.code)
            tg_err_set(&err, rc, NULL, NULL);
        tg_log(TG_LOG_ERROR, "writer: batch failed, nothing acknowledged: %s", err.msg);
        fail_batch(batch, &err);
        return;
    }
    publish_batch(w);
}

static void prune_if_due(tg_writer *w)
{
    int64_t now = tg_clock_now(w->clock);
    if (now - w->last_prune < 3600)
        return;
    w->last_prune = now;
    tg_err err = {0};
    /* Idempotency keys are kept 48 hours (Stripe promises 24); expired sessions a day. */
    if (w->store->ops->prune(w->store, now - 48 * 3600, now - 86400, &err))
        tg_log(TG_LOG_WARN, "writer: prune failed: %s", err.msg);
}

/* ================================================================ identifier retention */

/* How long identifiers stay indexed, in seconds; -1: for as long as their events are stored. */
static int64_t retention_seconds(const tg_writer *w)
{
    int days = w->cfg.identifier_days;
    if (days < 0)
        return -1;
    return (int64_t)(days > TG_IDENTIFIER_DAYS ? days : TG_IDENTIFIER_DAYS) * 86400;
}

/* Notes block seq, written at created, in the marks (called in block order). */
static void note_block(tg_writer *w, int64_t seq, int64_t created)
{
    if (created > w->newest_created)
        w->newest_created = created;
    int64_t hour = created - created % 3600;
    if (retention_seconds(w) < 0 || (w->nmarks && w->marks[w->nmarks - 1].hour >= hour))
        return; /* a clock that went back leaves its blocks in the latest mark's later
                 * hour: they are kept longer */
    if (w->nmarks == w->cap_marks) {
        size_t cap = w->cap_marks ? w->cap_marks * 2 : 64;
        retain_mark *m = realloc(w->marks, cap * sizeof *m);
        if (!m) {
            /* Without this mark, this hour's blocks would age out with the previous hour's. */
            if (!w->marks_lost)
                tg_log(TG_LOG_WARN, "identifier index: out of memory for retention marks; "
                       "identifiers are kept until a restart");
            w->marks_lost = true;
            return;
        }
        w->marks = m;
        w->cap_marks = cap;
    }
    w->marks[w->nmarks++] = (retain_mark){seq, hour};
}

/* The block below which every block was written before now - retention (0: none yet), with
 * the marks of those blocks dropped. The blocks from one mark to the next were written within
 * the first one's hour (a later hour would have made a mark), so once that hour has passed
 * out of the window, so have they. */
static int64_t retention_cutoff(tg_writer *w, int64_t now)
{
    int64_t keep = retention_seconds(w);
    size_t k = 0; /* marks whose whole hour is out of the window */
    while (keep >= 0 && !w->marks_lost && k < w->nmarks && w->marks[k].hour + 3600 <= now - keep)
        k++;
    if (k == 0)
        return 0;
    int64_t cutoff = k < w->nmarks ? w->marks[k].first_seq : w->last_block + 1;
    memmove(w->marks, w->marks + k, (w->nmarks - k) * sizeof *w->marks);
    w->nmarks -= k;
    return cutoff;
}

/* Whether an index entry stays: row-stored, or in a block at or above the sweep's cutoff
 * (a locator stands for its newest block, as in tg_writer_lookup: never pruned too early). */
static bool locator_kept(uint64_t locator, void *ctx)
{
    const tg_writer *w = ctx;
    const int64_t loc = (int64_t)locator, span = (int64_t)LOCATOR_SPAN;
    if (locator == TG_DEDUPE_ROW || loc > w->last_block)
        return true;
    return loc + (w->last_block - loc) / span * span >= w->sweep_cutoff;
}

/* Ageing's "now": the wall clock, but no later than the start-up's reference plus the time
 * elapsed since (see the top). */
static int64_t trusted_now(const tg_writer *w)
{
    int64_t now = tg_clock_now(w->clock);
    int64_t bound = w->trust_ref + (tg_clock_elapsed(w->clock) - w->trust_elapsed0);
    return bound < now ? bound : now;
}

/* One turn of the retention sweep: starts one when an hour has aged out, else prunes the
 * next partition of the running one. */
static void retention_step(tg_writer *w)
{
    if (w->sweep_part == NO_SWEEP) {
        int64_t cutoff = retention_cutoff(w, trusted_now(w));
        if (cutoff <= w->swept_cutoff)
            return;
        w->sweep_cutoff = cutoff;
        w->sweep_part = 0;
        w->sweep_removed = 0;
    }
    w->sweep_removed += tg_dedupe_prune(w->index, w->sweep_part, locator_kept, w);
    if (++w->sweep_part < NO_SWEEP)
        return;
    w->sweep_part = NO_SWEEP;
    w->swept_cutoff = w->sweep_cutoff;
    tg_log(TG_LOG_INFO, "identifier index: %zu identifiers older than %lld days left it "
           "(blocks below %lld); %zu remain", w->sweep_removed,
           (long long)(retention_seconds(w) / 86400), (long long)w->sweep_cutoff,
           tg_dedupe_count(w->index));
}

/* ================================================================ the thread */

/* Runs the writer boosted or not (see "Priority" at the top); a refusal is final. */
static void set_boost(tg_writer *w, bool on)
{
    if (on == w->boosted || w->boost_refused || w->cfg.no_priority_boost)
        return;
    if (on)
        w->base_nice = getpriority(PRIO_PROCESS, (id_t)gettid()); /* -1 is a valid answer */
    int nice = on ? w->base_nice - BOOST_NICE : w->base_nice;
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), nice) != 0) {
        tg_log(TG_LOG_INFO, "writer: cannot set its priority to nice %d (%s), so it stays "
               "at nice %d: allow it with CAP_SYS_NICE or RLIMIT_NICE", nice, strerror(errno),
               getpriority(PRIO_PROCESS, (id_t)gettid()));
        w->boost_refused = true;
        return;
    }
    w->boosted = on;
}

static void *writer_main(void *arg)
{
    tg_writer *w = arg;
    pthread_setname_np(pthread_self(), "tg-writer"); /* as top -H and perf show it */
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stopping) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&w->work_cv, &w->mu, &until);
            if (!w->head && !w->stopping) {
                pthread_mutex_unlock(&w->mu);
                if (fold_pending(w))
                    fold_now(w, false); /* idle: keep folding on schedule */
                retention_step(w);
                pthread_mutex_lock(&w->mu);
            }
        }
        if (!w->head && w->stopping)
            break;
        /* Detach up to batch_max_events events' worth of jobs. */
        tg_job *batch = w->head, *last = w->head;
        size_t weight = job_weight(last);
        while (last->next && weight + job_weight(last->next) <= w->cfg.batch_max_events) {
            last = last->next;
            weight += job_weight(last);
        }
        w->head = last->next;
        if (!w->head)
            w->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&w->mu);

        run_batch(w, batch, weight);
        set_boost(w, weight >= BOOST_FROM_EVENTS);

        pthread_mutex_lock(&w->mu);
        w->queued_events -= weight;
        for (tg_job *j = batch, *next; j; j = next) {
            next = j->next;
            w->queued_bytes -= j->bytes;
            if (j->detached) {
                if (j->rc)
                    tg_log(TG_LOG_WARN, "writer: background write failed: %s", j->err.msg);
                if (j->on_done)
                    j->on_done(j->arg, j->rc);
                free(j->arg);
                free(j);
            } else if (j->on_complete) {
                j->on_complete(j);
            } else {
                sem_post(&j->done);
            }
        }
        pthread_mutex_unlock(&w->mu);

        prune_if_due(w);
        retention_step(w);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    fold_now(w, true);
    return NULL;
}

/* ================================================================ start-up marks */

/* Start-up reads only the blocks it needs (see recover): those after some shard's last fold
 * (their usage may not be in storage yet) or within the identifier window (their
 * identifiers go in the index). Both bounds are settings rows, written here, in the
 * transaction of a fold, so they are committed with what they describe:
 * - "fold_marks": the number of shards, the newest block's time (the reference of ageing, see
 *   the top), then each shard's block and cancellation marks as they will be once this fold
 *   commits: every block and cancellation at or below them has its usage for that shard's
 *   pairs in pages or spills, or netted to nothing in the overlay before the fold (an event
 *   and its cancellation meet there, and a frozen shard drops the zero minute; no page then
 *   records either, so start-up must judge both by the same shard's marks, or it replays one
 *   without the other). Rewritten at most once a second, and at a fold of every shard
 *   (shutdown): a row rewritten with every batch would cost each commit another page. Older
 *   marks are a consistent earlier state and only make start-up read more. Until a sweep has
 *   stored the window below, start-up reads every block (only cancellations are skipped).
 * - "identifier_window": the first block of the identifier window (the last finished sweep's
 *   cutoff) and the window's days, once a sweep finishes.
 * A failed write is logged and leaves the older row, which is safe for the same reason. */
static void store_start_marks(tg_writer *w, int first, int n)
{
    int64_t block[TG_OVERLAY_SHARDS], cancel[TG_OVERLAY_SHARDS];
    bool moved = false;
    for (int s = 0; s < TG_OVERLAY_SHARDS; s++) {
        bool folding = (s - first + TG_OVERLAY_SHARDS) % TG_OVERLAY_SHARDS < n;
        block[s] = folding ? w->fold_block : w->shard_block[s];
        cancel[s] = folding ? w->fold_cancel : w->shard_cancel[s];
        moved |= block[s] != w->shard_block[s] || cancel[s] != w->shard_cancel[s];
    }
    w->unstored_after = w->marks_unstored || moved;
    w->storing_marks = w->unstored_after &&
                       (n == TG_OVERLAY_SHARDS || mono_ms() - w->stored_ms >= 1000);
    w->storing_window = w->swept_cutoff != w->stored_window;
    tg_err err = {0};
    if (w->storing_marks) {
        char value[48 + TG_OVERLAY_SHARDS * 42];
        size_t len = (size_t)snprintf(value, sizeof value, "%d %lld", TG_OVERLAY_SHARDS,
                                      (long long)w->newest_created);
        for (int s = 0; s < TG_OVERLAY_SHARDS; s++)
            len += (size_t)snprintf(value + len, sizeof value - len, " %lld %lld",
                                    (long long)block[s], (long long)cancel[s]);
        w->storing_marks = !w->store->ops->setting_put(w->store, "fold_marks", value, &err);
        w->unstored_after = !w->storing_marks;
    }
    if (w->storing_window) {
        char value[48];
        snprintf(value, sizeof value, "%lld %lld", (long long)w->swept_cutoff,
                 (long long)(retention_seconds(w) / 86400));
        w->storing_window = !w->store->ops->setting_put(w->store, "identifier_window", value,
                                                        &err);
    }
    if (err.code)
        tg_log(TG_LOG_WARN, "writer: cannot store the start-up marks: %s", err.msg);
}

/* Reads a settings row of exactly n non-negative integers in digits, each followed by one
 * space but the last, into f: true, or false for anything else (no row, a sign, a number out
 * of range, other spaces, a row cut short or running on). */
static bool read_numbers(const char *v, int64_t *f, size_t n)
{
    size_t i = 0;
    bool ok = v != NULL;
    while (ok && i < n) {
        if (*v < '0' || *v > '9')
            return false;
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        ok = !errno && (*end == ' ' || *end == '\0');
        f[i++] = x;
        v = end + (*end == ' ');
    }
    return ok && i == n && *v == '\0';
}

/* Reads the stored fold marks ("SHARDS NEWEST B0 C0 ... B63 C63") into each shard's. A row
 * read_numbers refuses, or of another shard count, loads as all 0 and start-up reads
 * everything. Returns the newest block's time, or 0. */
static int64_t fold_marks_load(tg_writer *w, const char *v)
{
    enum { FIELDS = 2 + 2 * TG_OVERLAY_SHARDS };
    int64_t f[FIELDS];
    bool ok = read_numbers(v, f, FIELDS) && f[0] == TG_OVERLAY_SHARDS;
    for (int s = 0; s < TG_OVERLAY_SHARDS; s++) {
        w->shard_block[s] = ok ? f[2 + 2 * s] : 0;
        w->shard_cancel[s] = ok ? f[3 + 2 * s] : 0;
    }
    return ok ? f[1] : 0;
}

/* Reads the start-up marks (store_start_marks) and returns the blocks and cancellations
 * start-up may leave unread: at or below every shard's fold marks, and for blocks also below
 * the stored identifier window, when that window was at least as long as this one. */
static void start_marks_load(tg_writer *w, int64_t keep, int64_t *skip_block,
                             int64_t *skip_cancel)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    char *v = NULL;
    tg_err ignore = {0};
    int64_t window[2]; /* the window's first block and its days */
    int64_t newest = fold_marks_load(
        w, w->store->ops->setting_get(w->store, "fold_marks", &a, &v, &ignore) ? NULL : v);
    int64_t now = tg_clock_now(w->clock);
    w->newest_created = newest;
    w->trust_ref = newest > 0 && newest < now - TRUST_DOWNTIME ? newest + TRUST_DOWNTIME : now;
    w->trust_elapsed0 = tg_clock_elapsed(w->clock);
    bool window_read =
        !w->store->ops->setting_get(w->store, "identifier_window", &a, &v, &ignore) &&
        read_numbers(v, window, 2) && window[0] >= 1 && window[1] >= 1;
    int64_t from = window_read ? window[0] : 0, days = window_read ? window[1] : 0;
    tg_arena_free(&a);
    int64_t b = INT64_MAX, c = INT64_MAX;
    for (int s = 0; s < TG_OVERLAY_SHARDS; s++) {
        b = w->shard_block[s] < b ? w->shard_block[s] : b;
        c = w->shard_cancel[s] < c ? w->shard_cancel[s] : c;
    }
    bool window_holds = keep >= 0 && days && keep / 86400 <= days;
    w->stored_window = window_holds ? from : 0;
    int64_t old = window_holds ? from - 1 : 0;
    *skip_block = b < old ? b : old;
    *skip_cancel = c;
}

/* ================================================================ recovery */

/* The marks of every stored day page and spill, for start-up replay: an event is replayed
 * into the overlay only when neither its page nor its pair's spills have absorbed its block
 * (likewise cancellations). */
typedef struct page_mark {
    int64_t meter_seq, customer_seq, day;
    int64_t through_block, through_cancel;
    bool used;
} page_mark;

typedef struct recover_ctx {
    tg_writer *w;
    tg_err *err;
    int64_t index_from; /* blocks written before this time are not indexed (retention) */
    size_t events, replayed, indexed;
    page_mark *marks;
    size_t nmarks, cap; /* cap: a power of two */
} recover_ctx;

static page_mark *mark_slot(recover_ctx *r, int64_t m, int64_t c, int64_t day)
{
    size_t mask = r->cap - 1;
    for (size_t k = mix3(m, c, day) & mask;; k = (k + 1) & mask)
        if (!r->marks[k].used || (r->marks[k].meter_seq == m && r->marks[k].customer_seq == c &&
                                  r->marks[k].day == day))
            return &r->marks[k];
}

/* Records marks for (m, c, day); a key seen before keeps the highest of each. */
static int mark_put(recover_ctx *r, int64_t m, int64_t c, int64_t day, int64_t tb, int64_t tc)
{
    if ((r->nmarks + 1) * 2 > r->cap) {
        size_t oldcap = r->cap;
        page_mark *old = r->marks;
        r->cap = oldcap ? oldcap * 2 : 4096;
        r->marks = calloc(r->cap, sizeof *r->marks);
        if (!r->marks)
            return tg_err_set(r->err, TG_ENOMEM, NULL, NULL);
        for (size_t i = 0; i < oldcap; i++)
            if (old[i].used)
                *mark_slot(r, old[i].meter_seq, old[i].customer_seq, old[i].day) = old[i];
        free(old);
    }
    page_mark *p = mark_slot(r, m, c, day);
    if (p->used) {
        if (tb > p->through_block)
            p->through_block = tb;
        if (tc > p->through_cancel)
            p->through_cancel = tc;
        return TG_OK;
    }
    p->used = true;
    p->meter_seq = m;
    p->customer_seq = c;
    p->day = day;
    p->through_block = tb;
    p->through_cancel = tc;
    r->nmarks++;
    return TG_OK;
}

static int add_page_mark(void *ctx, int64_t m, int64_t c, int64_t day, int64_t tb, int64_t tc)
{
    return mark_put(ctx, m, c, day, tb, tc);
}

/* A pair's spills are marked under this day: a spill holds the pair's deltas of every day. */
#define SPILL_MARK_DAY INT64_MIN

static int add_spill_mark(void *ctx, const tg_spill *row)
{
    recover_ctx *r = ctx;
    tg_writer *w = r->w;
    if (row->seq > w->spill_seq)
        w->spill_seq = row->seq;
    if (row->shard >= 0 && row->shard < TG_OVERLAY_SHARDS)
        w->spills[row->shard] = SPILLS_PER_FOLD; /* its next fold goes to the pages */
    return mark_put(r, row->meter_seq, row->customer_seq, SPILL_MARK_DAY, row->through_block,
                    row->through_cancel);
}

/* Whether the stored usage of (m, c) at minute already includes the block `id` (cancel:
 * the cancellation `id`): its shard's stored fold marks, its day page's marks or its
 * spills' say so. */
static bool absorbed(recover_ctx *r, int64_t m, int64_t c, int64_t minute, int64_t id,
                     bool cancel)
{
    /* The pair's shard was folded after it (see "start-up marks"): in pages or spills, or
     * netted to nothing with its cancellation (or its event). */
    int shard = tg_overlay_shard((uint64_t)m, (uint64_t)c);
    if (id <= (cancel ? r->w->shard_cancel[shard] : r->w->shard_block[shard]))
        return true;
    if (!r->cap)
        return false;
    const page_mark *marks[2] = {mark_slot(r, m, c, tg_window_start(minute, 86400)),
                                 mark_slot(r, m, c, SPILL_MARK_DAY)};
    for (int i = 0; i < 2; i++)
        if (marks[i]->used &&
            id <= (cancel ? marks[i]->through_cancel : marks[i]->through_block))
            return true;
    return false;
}

static int recover_block(void *ctx, int64_t seq, const tg_scope *scope, int64_t created,
                         const void *data, size_t len)
{
    recover_ctx *r = ctx;
    tg_writer *w = r->w;
    tg_block_reader rd;
    tg_block_event ev;
    bool indexed = created >= r->index_from;
    note_block(w, seq, created);
    if (tg_block_open(&rd, data, len))
        return tg_err_set(r->err, TG_ESTORE, NULL, "Corrupt event block %lld.", (long long)seq);
    char id[TG_NAME_MAX + 1];
    int rc;
    while ((rc = tg_block_next(&rd, &ev)) == 1) {
        size_t n = ev.identifier_len < TG_NAME_MAX ? ev.identifier_len : TG_NAME_MAX;
        memcpy(id, ev.identifier, n);
        id[n] = '\0';
        if (indexed && tg_dedupe_insert(w->index, tg_dedupe_hash(w->seed, scope->account,
                                                                 scope->livemode, id),
                                        block_locator(seq)))
            return tg_err_set(r->err, TG_ENOMEM, NULL, "identifier index: out of memory");
        r->indexed += indexed;
        int64_t minute = tg_window_start(ev.timestamp, 60);
        if (!absorbed(r, (int64_t)ev.meter_seq, (int64_t)ev.customer_seq, minute, seq, false)) {
            if (tg_overlay_add(w->overlay, ev.meter_seq, ev.customer_seq, minute, ev.value, 1))
                return tg_err_set(r->err, TG_ENOMEM, NULL, "overlay: out of memory");
            r->replayed++;
        }
        r->events++;
    }
    if (rc < 0)
        return tg_err_set(r->err, TG_ESTORE, NULL, "Corrupt event block %lld.", (long long)seq);
    if (seq > w->last_block)
        w->last_block = seq;
    return TG_OK;
}

static int recover_row(void *ctx, const tg_scope *scope, const char *identifier)
{
    recover_ctx *r = ctx;
    if (tg_dedupe_insert(r->w->index,
                         tg_dedupe_hash(r->w->seed, scope->account, scope->livemode, identifier),
                         TG_DEDUPE_ROW))
        return tg_err_set(r->err, TG_ENOMEM, NULL, "identifier index: out of memory");
    return TG_OK;
}

static int recover_cancel(void *ctx, int64_t id, int64_t block, int64_t index)
{
    recover_ctx *r = ctx;
    tg_writer *w = r->w;
    if (id > w->last_cancel)
        w->last_cancel = id;
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_scope scope;
    int64_t created;
    const void *data;
    size_t len;
    int rc = w->store->ops->block_get(w->store, block, &a, &scope, &created, &data, &len, r->err);
    tg_block_reader rd;
    tg_block_event ev;
    if (!rc && tg_block_open(&rd, data, len))
        rc = TG_ESTORE;
    for (int64_t i = 0; !rc && i <= index; i++)
        if (tg_block_next(&rd, &ev) != 1)
            rc = TG_ESTORE;
    if (!rc) {
        int64_t minute = tg_window_start(ev.timestamp, 60);
        if (!absorbed(r, (int64_t)ev.meter_seq, (int64_t)ev.customer_seq, minute, id, true) &&
            tg_overlay_add(w->overlay, ev.meter_seq, ev.customer_seq, minute, -ev.value, -1))
            rc = TG_ENOMEM;
    }
    tg_arena_free(&a);
    if (rc && !r->err->code)
        tg_err_set(r->err, rc, NULL, "Cannot replay cancellation %lld.", (long long)id);
    return rc;
}

static int recover(tg_writer *w, tg_err *err)
{
    recover_ctx r;
    memset(&r, 0, sizeof r);
    r.w = w;
    r.err = err;
    int64_t keep = retention_seconds(w);
    int64_t t0 = mono_ms(), skip_block, skip_cancel;
    start_marks_load(w, keep, &skip_block, &skip_cancel);
    r.index_from = keep < 0 ? INT64_MIN : w->trust_ref - keep;
    w->last_block = skip_block;
    w->last_cancel = skip_cancel;
    int rc = w->store->ops->day_marks_each(w->store, add_page_mark, &r, err);
    if (!rc)
        rc = w->store->ops->spill_each(w->store, -1, -1, -1, add_spill_mark, &r, err);
    if (!rc)
        rc = w->store->ops->block_each(w->store, skip_block, recover_block, &r, err);
    if (!rc)
        rc = w->store->ops->event_each_identifier(w->store, recover_row, &r, err);
    if (!rc)
        rc = w->store->ops->cancel_each(w->store, skip_cancel, recover_cancel, &r, err);
    free(r.marks);
    if (rc)
        return rc;
    /* Every block a sweep would prune now was left out above, as were those below the
     * stored window's first block (start_marks_load). */
    int64_t cutoff = retention_cutoff(w, w->trust_ref);
    w->swept_cutoff = cutoff > w->stored_window ? cutoff : w->stored_window;
    char kept[32] = "forever";
    if (keep >= 0)
        snprintf(kept, sizeof kept, "%lld days", (long long)(keep / 86400));
    tg_log(TG_LOG_INFO,
           "recovered %zu stored events of blocks after %lld (%zu replayed into live usage, "
           "%zu identifiers indexed, kept %s) in %lld ms; identifier index %zu MiB",
           r.events, (long long)skip_block, r.replayed, r.indexed, kept,
           (long long)(mono_ms() - t0), tg_dedupe_bytes(w->index) >> 20);
    return TG_OK;
}

/* ================================================================ public */

static void scopes_free(tg_writer *w)
{
    for (int i = 0; i < MAX_SCOPES; i++) {
        tg_block_free(&w->scopes[i].block);
        free(w->scopes[i].part_at);
        free(w->scopes[i].seqs);
    }
}

int tg_writer_start(tg_writer **out, tg_store *s, const tg_clock *clock,
                    const tg_writer_config *cfg, tg_overlay *overlay, uint64_t seed, tg_err *err)
{
    tg_writer *w = calloc(1, sizeof *w);
    if (!w)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    w->store = s;
    w->clock = clock;
    w->cfg = *cfg;
    w->overlay = overlay;
    w->seed = seed;
    w->sweep_part = NO_SWEEP;
    if (w->cfg.batch_max_events == 0)
        w->cfg.batch_max_events = 1;
    if (w->cfg.checkpoint_ms <= 0)
        w->cfg.checkpoint_ms = 10000;
    for (int i = 0; i < MAX_SCOPES; i++)
        tg_block_init(&w->scopes[i].block, BLOCK_CAP);
    w->index = tg_dedupe_new();
    int rc = w->index ? recover(w, err) : tg_err_set(err, TG_ENOMEM, NULL, NULL);
    if (!rc) {
        w->last_fold_ms = mono_ms();
        pthread_mutex_init(&w->mu, NULL);
        pthread_cond_init(&w->work_cv, NULL);
        if (pthread_create(&w->thread, NULL, writer_main, w))
            rc = tg_err_set(err, TG_ENOMEM, NULL, "cannot start the writer thread");
    }
    if (rc) {
        tg_dedupe_free(w->index);
        scopes_free(w);
        free(w->marks);
        free(w);
        return rc;
    }
    *out = w;
    return TG_OK;
}

void tg_writer_stop(tg_writer *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = true;
    pthread_cond_signal(&w->work_cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    w->store->ops->close(w->store);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->work_cv);
    free(w->deltas);
    free(w->delta_used);
    free(w->seen);
    free(w->pending);
    scopes_free(w);
    for (size_t i = 0; i < BLOCK_CACHE; i++)
        free(w->cache[i].data);
    tg_dedupe_free(w->index);
    free(w->marks);
    free(w);
}

/* Appends job unless the queue is full or stopping. Call with w->mu held. */
static int enqueue_locked(tg_writer *w, tg_job *job)
{
    size_t weight = job_weight(job);
    if (w->stopping)
        return tg_err_set(&job->err, TG_ESHUTDOWN, NULL, "The server is shutting down.");
    /* A job is always admitted into an empty queue, however large, so no request can be
     * refused forever. Only events are bounded: function jobs are catalog writes, whose
     * callers wait, and idempotency records (tg_writer_post), one per answered request. */
    bool bounded = !job->fn;
    bool full = w->queued_events + weight > w->cfg.queue_max_events ||
                (w->cfg.queue_max_bytes && w->queued_bytes + job->bytes > w->cfg.queue_max_bytes);
    if (bounded && w->queued_events && full)
        return tg_err_set(&job->err, TG_EBUSY, NULL,
                          "Too many events are waiting to be written; retry shortly.");
    job->next = NULL;
    job->rc = TG_OK;
    if (w->tail)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    w->queued_events += weight;
    w->queued_bytes += job->bytes;
    pthread_cond_signal(&w->work_cv);
    return TG_OK;
}

int tg_writer_run(tg_writer *w, tg_job *job)
{
    job->detached = false;
    job->on_complete = NULL;
    sem_init(&job->done, 0, 0);
    pthread_mutex_lock(&w->mu);
    int rc = enqueue_locked(w, job);
    pthread_mutex_unlock(&w->mu);
    if (!rc) {
        while (sem_wait(&job->done) && errno == EINTR)
            ;
        rc = job->rc;
    }
    sem_destroy(&job->done);
    return rc;
}

int tg_writer_submit(tg_writer *w, tg_job *job)
{
    job->detached = false;
    pthread_mutex_lock(&w->mu);
    int rc = enqueue_locked(w, job);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

int tg_writer_post(tg_writer *w, tg_job *job)
{
    job->detached = true;
    pthread_mutex_lock(&w->mu);
    int rc = enqueue_locked(w, job);
    pthread_mutex_unlock(&w->mu);
    return rc;
}
