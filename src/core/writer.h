/* writer.h -- the single writer thread: group commit, event blocks, live aggregates.
 *
 * Every write of the server goes through one thread that owns the only writing store
 * connection. Requests submit jobs to a bounded queue and wait; the writer takes everything
 * queued (up to a batch limit), runs it in ONE transaction, commits, and only then wakes the
 * submitters. The cost of a commit (an fsync) is shared by every job in the batch. When the
 * queue is full, event submission fails at once with TG_EBUSY (HTTP 429 with
 * Stripe-Should-Retry: true): memory stays bounded.
 *
 * Events of additive meters (sum, count; no event_time_window) take the fast path: each batch
 * writes them as compact blocks, a row per scope and 1,024 events (core/eventblock.h), checks
 * identifiers against the in-memory identifier index (core/dedupe.h) instead of a table
 * index, and after the commit adds their minute deltas to the live overlay (core/overlay.h).
 * The overlay is folded into stored day pages a few shards per batch, each page recording the
 * blocks it includes; at start-up the identifier index is rebuilt from the stored blocks of
 * the identifier window (36 days by default; older identifiers leave the index as they age
 * out, see writer.c) and whatever no page has absorbed yet is replayed. Events of other
 * meters (formula last, or pre-aggregated windows) are stored one per row with exact bucket
 * recomputation; they are rare and need it.
 *
 * Function jobs run any other write inside a savepoint so that their failure undoes only
 * themselves. A failed commit fails every job of the batch: nothing of it is acknowledged.
 */
#ifndef TG_WRITER_H
#define TG_WRITER_H

#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>

#include "core/clock.h"
#include "core/overlay.h"
#include "core/store.h"

typedef struct tg_writer tg_writer;
typedef struct tg_job tg_job;

typedef int (*tg_job_fn)(tg_store *s, void *arg, tg_err *err);

struct tg_job {
    /* event job: */
    const tg_scope *scope;
    tg_event *events;
    size_t nevents;
    size_t bytes;                 /* memory its events hold while queued (payload text) */
    int *results;                 /* nevents results, filled by the writer */
    const tg_meter_error *errors; /* refusal counts to add in the same transaction */
    size_t nerrors;
    bool report_duplicates;       /* count duplicates as duplicate_meter_event errors */
    /* function job (fn != NULL): */
    tg_job_fn fn;
    void (*on_failure)(void *arg); /* called by the writer if the batch does not commit */
    void *arg;
    /* completion: */
    bool detached; /* nobody waits: the writer calls on_done, then frees the job and arg */
    void (*on_done)(void *arg, int rc);
    /* tg_writer_submit: the writer calls on_complete when the batch is finished (from the
     * writer thread; it must not block) and never frees the job. */
    void (*on_complete)(tg_job *job);
    sem_t done; /* posted by the writer when the job's batch is finished */
    int rc;
    tg_err err;
    tg_job *next;
};

typedef struct tg_writer_config {
    size_t queue_max_events; /* events admitted but not yet committed */
    size_t queue_max_bytes;  /* and the bytes they hold (tg_job.bytes); 0 = no bound */
    size_t batch_max_events; /* events per transaction */
    int checkpoint_ms;       /* live usage is folded (spilled or into pages) about this often */
    /* Called for each committed (meter, customer, minute) usage delta, after the commit and
     * before the batch is answered (the entitlement counters); may be NULL. */
    void (*on_usage)(void *ctx, int64_t meter_seq, int64_t customer_seq, int64_t minute,
                     tg_dec sum);
    void *usage_ctx;
    bool no_priority_boost; /* never raise the writer's priority (writer.c, "Priority") */
    /* An identifier is refused as a duplicate for at least this many days after its event was
     * received (writer.c, "Identifier retention"): fewer than TG_IDENTIFIER_DAYS (0 among
     * them) mean TG_IDENTIFIER_DAYS, any negative value for as long as the event is stored. */
    int identifier_days;
} tg_writer_config;

/* Where a stored event lives, as found by tg_writer_lookup. */
typedef struct tg_found {
    bool in_block;         /* block-stored (else row-stored) */
    int64_t block, index;  /* block-stored: its block and position */
    int64_t created;       /* receive time */
    tg_event ev;           /* meter_seq, customer_seq, timestamp, value; row: also the rest */
} tg_found;

/* Recovers (identifier index, overlay replay) and starts the writer thread on store s (the
 * writer takes ownership of s). overlay is shared with readers; seed keys identifier hashes. */
int tg_writer_start(tg_writer **out, tg_store *s, const tg_clock *clock,
                    const tg_writer_config *cfg, tg_overlay *overlay, uint64_t seed, tg_err *err);

/* Finishes every queued job, folds all live usage, stops the thread, closes the store.
 * NULL is a no-op. */
void tg_writer_stop(tg_writer *w);

/* Queues job and waits until its batch is committed (or failed). Returns job->rc; TG_EBUSY
 * without queuing when the queue is full (event jobs only: a waited-for function job is
 * bounded by the connections waiting on it, so it is always admitted). */
int tg_writer_run(tg_writer *w, tg_job *job);

/* Queues job and returns at once; job->on_complete(job) is called from the writer thread when
 * its batch is committed or failed (job->rc and results are then set). Returns TG_EBUSY
 * without queuing when the queue is full. */
int tg_writer_submit(tg_writer *w, tg_job *job);

/* Queues a heap-allocated job nobody waits for (job->detached is set; the writer frees job
 * and job->arg). Returns TG_EBUSY (and frees nothing) when the queue is full. */
int tg_writer_post(tg_writer *w, tg_job *job);

/* ---- for function jobs only (they run on the writer thread) ---- */

/* Finds the stored event with this identifier in scope: TG_ENOTFOUND when there is none. */
int tg_writer_lookup(tg_writer *w, const tg_scope *scope, const char *identifier,
                     tg_arena *a, tg_found *out, tg_err *err);

/* Cancels a found event: it stops counting from this transaction on. TG_EINVAL when it is
 * already canceled. */
int tg_writer_cancel(tg_writer *w, const tg_scope *scope, const tg_found *f, tg_err *err);

#endif
