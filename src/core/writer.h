/* writer.h -- the single writer thread and its group commit.
 *
 * Every write of the server goes through one thread that owns the only writing store
 * connection. Requests submit jobs to a bounded queue and wait; the writer takes everything
 * queued (up to a batch limit), runs it in ONE transaction, commits, and only then wakes the
 * submitters. The cost of a commit (an fsync) is shared by every job in the batch, which is
 * what makes durable acknowledgement fast. When the queue is full, submission fails at once
 * with TG_EBUSY (the HTTP layer answers 429 with Stripe-Should-Retry: true): memory stays
 * bounded.
 *
 * Two kinds of jobs:
 *   - event jobs: meter events to insert (deduplicated by identifier) and fold into minute
 *     buckets; each event gets its own result (TG_OK or TG_EDUPLICATE);
 *   - function jobs: any other write, run inside a savepoint so that its failure undoes
 *     only itself.
 * A failed commit fails every job of the batch: nothing of it is acknowledged.
 */
#ifndef TG_WRITER_H
#define TG_WRITER_H

#include <pthread.h>
#include <stdbool.h>

#include "core/clock.h"
#include "core/store.h"

typedef struct tg_writer tg_writer;
typedef struct tg_job tg_job;

typedef int (*tg_job_fn)(tg_store *s, void *arg, tg_err *err);

struct tg_job {
    /* event job: */
    const tg_scope *scope;
    tg_event *events;
    size_t nevents;
    int *results;               /* nevents results, filled by the writer */
    const tg_meter_error *errors; /* refusal counts to add in the same transaction */
    size_t nerrors;
    bool report_duplicates;     /* count duplicates as duplicate_meter_event errors */
    /* function job (fn != NULL): */
    tg_job_fn fn;
    void (*on_failure)(void *arg); /* called by the writer if the batch does not commit */
    void *arg;
    /* completion: */
    bool detached; /* nobody waits: the writer calls on_done, then frees the job and arg */
    void (*on_done)(void *arg, int rc);
    bool done;
    int rc;
    tg_err err;
    tg_job *next;
};

typedef struct tg_writer_config {
    size_t queue_max_events; /* events admitted but not yet committed */
    size_t batch_max_events; /* events per transaction */
} tg_writer_config;

/* Starts the writer thread on store s (the writer takes ownership of s). */
int tg_writer_start(tg_writer **out, tg_store *s, const tg_clock *clock,
                    const tg_writer_config *cfg, tg_err *err);

/* Finishes every queued job, stops the thread, closes the store. NULL is a no-op. */
void tg_writer_stop(tg_writer *w);

/* Queues job and waits until its batch is committed (or failed). Returns job->rc; TG_EBUSY
 * without queuing when the queue is full (event jobs only: a waited-for function job is
 * bounded by the connections waiting on it, so it is always admitted). */
int tg_writer_run(tg_writer *w, tg_job *job);

/* Queues a heap-allocated job nobody waits for (job->detached is set; the writer frees job
 * and job->arg). Returns TG_EBUSY (and frees nothing) when the queue is full. */
int tg_writer_post(tg_writer *w, tg_job *job);

/* Recomputes the (meter, customer, minute) bucket from the counted raw events. For use inside
 * function jobs (cancellations), which run after the batch's bucket table is flushed. */
int tg_writer_rebuild_bucket(tg_store *s, const tg_scope *scope, const char *meter_id,
                             const char *customer_id, int64_t minute, tg_err *err);

/* Number of events waiting in the queue (for metrics). */
size_t tg_writer_backlog(tg_writer *w);

#endif
