/* writer.c -- the single writer thread with group commit (see writer.h).
 *
 * Queue: a singly linked FIFO under one mutex. Submitters wait on `done_cv`, which the writer
 * broadcasts after each batch; each submitter checks its own job->done.
 *
 * Batch: the writer detaches the whole queue (up to batch_max_events events), opens one
 * transaction, and runs the jobs in order. Event jobs fold their events into an in-memory
 * table of the minute buckets the batch touches, so a bucket hit by many events of a batch is
 * read once and written once. Anything that must see buckets as stored (function jobs, events
 * of pre-aggregated meters) first flushes that table.
 */
#include "core/writer.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "core/metering.h"

typedef struct bucket_slot {
    char meter_id[TG_ID_MAX];
    char customer_id[TG_ID_MAX];
    uint64_t hash;
    bool used;
    tg_bucket b;
} bucket_slot;

struct tg_writer {
    tg_store *store;
    const tg_clock *clock;
    tg_writer_config cfg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    tg_job *head, *tail;
    size_t queued_events;
    bool stopping;
    /* batch bucket table (writer thread only) */
    bucket_slot *slots;
    size_t nslots, nused;
    int64_t last_prune;
};

static size_t job_weight(const tg_job *j)
{
    return j->fn ? 1 : j->nevents + j->nerrors;
}

/* ---------------------------------------------------------------- bucket table */

static uint64_t bucket_hash(const char *meter_id, const char *customer_id, int64_t minute)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = meter_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    for (const char *p = customer_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    h ^= (uint64_t)minute * 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 29);
}

static int table_grow(tg_writer *w)
{
    size_t n = w->nslots ? w->nslots * 2 : 1024;
    bucket_slot *slots = calloc(n, sizeof *slots);
    if (!slots)
        return TG_ENOMEM;
    for (size_t i = 0; i < w->nslots; i++) {
        if (!w->slots[i].used)
            continue;
        size_t k = w->slots[i].hash & (n - 1);
        while (slots[k].used)
            k = (k + 1) & (n - 1);
        slots[k] = w->slots[i];
    }
    free(w->slots);
    w->slots = slots;
    w->nslots = n;
    return TG_OK;
}

/* Returns the batch's copy of a bucket, loading it from the store on first touch. */
static int table_bucket(tg_writer *w, const tg_scope *scope, const char *meter_id,
                        const char *customer_id, int64_t minute, tg_bucket **out, tg_err *err)
{
    if ((w->nused + 1) * 2 > w->nslots && table_grow(w))
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    uint64_t h = bucket_hash(meter_id, customer_id, minute);
    size_t k = h & (w->nslots - 1);
    for (; w->slots[k].used; k = (k + 1) & (w->nslots - 1)) {
        bucket_slot *s = &w->slots[k];
        if (s->hash == h && s->b.minute == minute && strcmp(s->meter_id, meter_id) == 0 &&
            strcmp(s->customer_id, customer_id) == 0) {
            *out = &s->b;
            return TG_OK;
        }
    }
    bucket_slot *s = &w->slots[k];
    memset(&s->b, 0, sizeof s->b);
    int rc = w->store->ops->bucket_get(w->store, scope, meter_id, customer_id, minute, &s->b, err);
    if (rc == TG_ENOTFOUND) {
        memset(&s->b, 0, sizeof s->b);
        rc = TG_OK;
    }
    if (rc)
        return rc;
    s->b.minute = minute;
    s->used = true;
    s->hash = h;
    snprintf(s->meter_id, sizeof s->meter_id, "%s", meter_id);
    snprintf(s->customer_id, sizeof s->customer_id, "%s", customer_id);
    w->nused++;
    *out = &s->b;
    return TG_OK;
}

/* Writes every touched bucket and empties the table. Scope is unused by bucket_put's key
 * (meter ids are unique), so any scope does. */
static int table_flush(tg_writer *w, tg_err *err)
{
    int rc = TG_OK;
    static const tg_scope any = {"", false};
    for (size_t i = 0; i < w->nslots && w->nused; i++) {
        bucket_slot *s = &w->slots[i];
        if (!s->used)
            continue;
        if (!rc)
            rc = w->store->ops->bucket_put(w->store, &any, s->meter_id, s->customer_id, &s->b, err);
        s->used = false;
        w->nused--;
    }
    w->nused = 0;
    return rc;
}

static void table_discard(tg_writer *w)
{
    if (w->slots)
        memset(w->slots, 0, w->nslots * sizeof *w->slots);
    w->nused = 0;
}

/* ---------------------------------------------------------------- bucket rebuild */

typedef struct rebuild_ctx {
    tg_bucket b;
} rebuild_ctx;

static int rebuild_add(void *ctx, int64_t ts, int64_t seq, tg_dec value)
{
    rebuild_ctx *r = ctx;
    return tg_bucket_add(&r->b, ts, seq, value);
}

/* Recomputes one minute bucket from the counted raw events (after a cancellation or a
 * superseded pre-aggregated event). */
static int bucket_rebuild(tg_store *s, const tg_scope *scope, const char *meter_id,
                          const char *customer_id, int64_t minute, tg_err *err)
{
    rebuild_ctx r;
    memset(&r, 0, sizeof r);
    int rc = s->ops->event_each_in_range(s, scope, meter_id, customer_id, minute, minute + 60,
                                         rebuild_add, &r, err);
    if (rc)
        return rc == TG_EINVAL ? tg_err_set(err, TG_ESTORE, NULL, "bucket overflow") : rc;
    r.b.minute = minute;
    return s->ops->bucket_put(s, scope, meter_id, customer_id, &r.b, err);
}

int tg_writer_rebuild_bucket(tg_store *s, const tg_scope *scope, const char *meter_id,
                             const char *customer_id, int64_t minute, tg_err *err)
{
    return bucket_rebuild(s, scope, meter_id, customer_id, minute, err);
}

/* ---------------------------------------------------------------- event jobs */

/* An event of a pre-aggregated meter (event_time_window hour/day): within a window only the
 * most recently received event of a customer counts. The previous survivor is marked
 * superseded and both minute buckets are recomputed from raw events. */
static int report_duplicate(tg_store *s, const tg_scope *scope, const tg_event *e,
                            const tg_clock *clock, tg_err *err);

static int apply_windowed(tg_writer *w, const tg_scope *scope, tg_event *e, int *result,
                          bool report_duplicates, tg_err *err)
{
    tg_store *s = w->store;
    int rc = table_flush(w, err);
    if (rc)
        return rc;
    bool dup = false;
    rc = s->ops->event_insert(s, scope, e, &dup, err);
    if (rc)
        return rc;
    if (dup) {
        *result = TG_EDUPLICATE;
        return report_duplicates ? report_duplicate(s, scope, e, w->clock, err) : TG_OK;
    }
    int64_t start = tg_window_start(e->timestamp, tg_window_seconds(e->window));
    int64_t old_seq, old_ts;
    rc = s->ops->window_get(s, scope, e->meter_id, e->customer_id, start, &old_seq, &old_ts, err);
    if (rc == TG_OK) {
        /* Only a survivor that still counts is superseded: a canceled one stays canceled. */
        bool changed = false;
        rc = s->ops->event_set_state(s, scope, old_seq, TG_EVENT_COUNTED, TG_EVENT_SUPERSEDED,
                                     &changed, err);
        if (!rc && changed)
            rc = bucket_rebuild(s, scope, e->meter_id, e->customer_id,
                                tg_window_start(old_ts, 60), err);
    } else if (rc == TG_ENOTFOUND) {
        rc = TG_OK;
    }
    if (!rc)
        rc = s->ops->window_put(s, scope, e->meter_id, e->customer_id, start, e->seq,
                                e->timestamp, err);
    if (!rc)
        rc = bucket_rebuild(s, scope, e->meter_id, e->customer_id,
                            tg_window_start(e->timestamp, 60), err);
    *result = rc;
    return rc;
}

/* Counts a repeated identifier of an asynchronously validated event where refusals are
 * reported, so a client that reuses identifiers by mistake sees it. */
static int report_duplicate(tg_store *s, const tg_scope *scope, const tg_event *e,
                            const tg_clock *clock, tg_err *err)
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
    me.last_seen = tg_clock_now(clock);
    return s->ops->meter_error_add(s, scope, &me, err);
}

static int apply_events(tg_writer *w, tg_job *j, tg_err *err)
{
    tg_store *s = w->store;
    for (size_t i = 0; i < j->nevents; i++) {
        tg_event *e = &j->events[i];
        int rc;
        if (e->window != TG_WINDOW_NONE) {
            rc = apply_windowed(w, j->scope, e, &j->results[i], j->report_duplicates, err);
            if (rc)
                return rc;
            continue;
        }
        bool dup = false;
        rc = s->ops->event_insert(s, j->scope, e, &dup, err);
        if (rc)
            return rc;
        if (dup) {
            j->results[i] = TG_EDUPLICATE;
            if (j->report_duplicates && (rc = report_duplicate(s, j->scope, e, w->clock, err)))
                return rc;
            continue;
        }
        tg_bucket *b = NULL;
        rc = table_bucket(w, j->scope, e->meter_id, e->customer_id,
                          tg_window_start(e->timestamp, 60), &b, err);
        if (rc)
            return rc;
        if (tg_bucket_add(b, e->timestamp, e->seq, e->value))
            return tg_err_set(err, TG_ESTORE, NULL, "Aggregate overflow for meter %s.",
                              e->meter_id);
        j->results[i] = TG_OK;
    }
    for (size_t i = 0; i < j->nerrors; i++) {
        int rc = s->ops->meter_error_add(s, j->scope, &j->errors[i], err);
        if (rc)
            return rc;
    }
    return TG_OK;
}

/* ---------------------------------------------------------------- the batch loop */

static void run_function_job(tg_writer *w, tg_job *j)
{
    tg_store *s = w->store;
    tg_err flush_err = {0};
    j->rc = table_flush(w, &flush_err);
    if (j->rc) {
        j->err = flush_err;
        return;
    }
    j->rc = s->ops->savepoint(s, &j->err);
    if (j->rc)
        return;
    j->rc = j->fn(s, j->arg, &j->err);
    if (j->rc) {
        if (!j->err.code)
            tg_err_set(&j->err, j->rc, NULL, NULL);
        s->ops->rollback_to(s);
    } else {
        j->rc = s->ops->release(s, &j->err);
    }
}

static void fail_batch(tg_job *batch, const tg_err *err)
{
    for (tg_job *j = batch; j; j = j->next) {
        if (j->fn && j->on_failure && j->rc == TG_OK)
            j->on_failure(j->arg);
        j->rc = err->code ? err->code : TG_ESTORE;
        j->err = *err;
        for (size_t i = 0; i < j->nevents; i++)
            j->results[i] = j->rc;
    }
}

static void run_batch(tg_writer *w, tg_job *batch)
{
    tg_store *s = w->store;
    tg_err err = {0};
    int rc = s->ops->begin(s, &err);
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
    if (!rc)
        rc = table_flush(w, &err);
    if (!rc)
        rc = s->ops->commit(s, &err);
    if (rc) {
        s->ops->rollback(s);
        table_discard(w);
        tg_log(TG_LOG_ERROR, "writer: batch failed, nothing acknowledged: %s", err.msg);
        fail_batch(batch, &err);
    }
}

static void prune_if_due(tg_writer *w)
{
    int64_t now = tg_clock_now(w->clock);
    if (now - w->last_prune < 3600)
        return;
    w->last_prune = now;
    tg_err err = {0};
    tg_store *s = w->store;
    /* Idempotency keys are kept 48 hours (Stripe promises 24); expired sessions a day. */
    if (s->ops->prune(s, now - 48 * 3600, now - 86400, &err))
        tg_log(TG_LOG_WARN, "writer: prune failed: %s", err.msg);
}

static void *writer_main(void *arg)
{
    tg_writer *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->work_cv, &w->mu);
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

        run_batch(w, batch);
        prune_if_due(w);

        pthread_mutex_lock(&w->mu);
        w->queued_events -= weight;
        for (tg_job *j = batch, *next; j; j = next) {
            next = j->next;
            if (j->detached) {
                if (j->rc)
                    tg_log(TG_LOG_WARN, "writer: background write failed: %s", j->err.msg);
                if (j->on_done)
                    j->on_done(j->arg, j->rc);
                free(j->arg);
                free(j);
            } else {
                j->done = true;
            }
        }
        pthread_cond_broadcast(&w->done_cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---------------------------------------------------------------- public */

int tg_writer_start(tg_writer **out, tg_store *s, const tg_clock *clock,
                    const tg_writer_config *cfg, tg_err *err)
{
    tg_writer *w = calloc(1, sizeof *w);
    if (!w)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    w->store = s;
    w->clock = clock;
    w->cfg = *cfg;
    if (w->cfg.batch_max_events == 0)
        w->cfg.batch_max_events = 1;
    w->last_prune = 0;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->work_cv, NULL);
    pthread_cond_init(&w->done_cv, NULL);
    if (pthread_create(&w->thread, NULL, writer_main, w)) {
        free(w);
        return tg_err_set(err, TG_ENOMEM, NULL, "cannot start the writer thread");
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
    pthread_cond_destroy(&w->done_cv);
    free(w->slots);
    free(w);
}

/* Appends job unless the queue is full or stopping. Call with w->mu held. */
static int enqueue_locked(tg_writer *w, tg_job *job)
{
    size_t weight = job_weight(job);
    if (w->stopping)
        return tg_err_set(&job->err, TG_ESHUTDOWN, NULL, "The server is shutting down.");
    /* A job is always admitted into an empty queue, however large, so no request can be
     * refused forever. */
    bool bounded = !job->fn || job->detached;
    if (bounded && w->queued_events && w->queued_events + weight > w->cfg.queue_max_events)
        return tg_err_set(&job->err, TG_EBUSY, NULL,
                          "Too many events are waiting to be written; retry shortly.");
    job->next = NULL;
    job->done = false;
    job->rc = TG_OK;
    if (w->tail)
        w->tail->next = job;
    else
        w->head = job;
    w->tail = job;
    w->queued_events += weight;
    pthread_cond_signal(&w->work_cv);
    return TG_OK;
}

int tg_writer_run(tg_writer *w, tg_job *job)
{
    job->detached = false;
    pthread_mutex_lock(&w->mu);
    int rc = enqueue_locked(w, job);
    if (rc) {
        pthread_mutex_unlock(&w->mu);
        return rc;
    }
    while (!job->done)
        pthread_cond_wait(&w->done_cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    return job->rc;
}

int tg_writer_post(tg_writer *w, tg_job *job)
{
    job->detached = true;
    pthread_mutex_lock(&w->mu);
    int rc = enqueue_locked(w, job);
    pthread_mutex_unlock(&w->mu);
    return rc;
}

size_t tg_writer_backlog(tg_writer *w)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->queued_events;
    pthread_mutex_unlock(&w->mu);
    return n;
}
