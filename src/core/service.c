/* service.c -- the use cases (see service.h).
 *
 * Reads go to a pool of store connections (opened on demand up to `readers`, each used by one
 * thread at a time); writes are jobs for the writer thread (core/writer.c), so the order of
 * writes is the writer's order and a check-then-write inside one job is atomic.
 *
 * The meter registry maps (scope, event_name) to that name's meters, so validating an event
 * costs no read. It changes only inside writer jobs (which see every write in order) and is
 * reloaded from the store if a batch fails to commit. Readers take it under a rwlock.
 *
 * Idempotency: claims live in an in-memory table (RUNNING, then DONE with the response until
 * the response row is committed); stored rows answer after that. The table makes a concurrent
 * retry see 409 instead of running twice. The response is stored by a later batch than the
 * request's writes, so each write job of a bound request (tg_idem_bind) also stores, in its
 * own savepoint, a record that the writes are done: a retry after a crash in between is then
 * answered from the objects as they are, never by running the writes again.
 */
#include "core/service.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/slotlock.h"
#include "base/str.h"
#include "core/billing_records.h"
#include "core/daypage.h"
#include "core/dedupe.h"
#include "core/metadata.h"
#include "core/metering.h"
#include "core/overlay.h"
#include "core/service_internal.h"
#include "core/webhooks.h"
#include "core/writer.h"

#define REGISTRY_BUCKETS 1024
#define CRED_CACHE_SLOTS 256
#define IDEM_BUCKETS 1024

/* A direct-mapped cache of SHA-256 credential hashes and what they resolved to, trusted
 * until `recheck` (TG_KEY_RECHECK_S after the lookup), so a revoked key, and the sessions it
 * made, stop working within that. */
typedef struct cred_cache {
    pthread_rwlock_t lock;
    struct cred_entry {
        char hash[65];
        tg_scope scope;
        int64_t expires; /* sessions: the expiry; keys: 0 */
        int64_t recheck;
    } slots[CRED_CACHE_SLOTS];
} cred_cache;

typedef struct meter_node {
    tg_scope scope;
    tg_meter m;
    struct meter_node *next;       /* in reg, by event name */
    struct meter_node *next_by_id; /* in reg_by_id */
} meter_node;

/* A test clock as the event path needs it: its frozen time (INT64_MIN until read). */
typedef struct clock_node {
    tg_scope scope;
    char id[TG_ID_MAX];
    int64_t frozen;        /* INT64_MIN: not known yet */
    int64_t deletes_after; /* see tg_clock_registry_set */
    struct clock_node *next;
} clock_node;

/* A customer known to the registry: events are validated against it without a read. */
typedef struct customer_node {
    tg_scope scope;
    char id[TG_ID_MAX];
    int64_t seq;
    bool deleted;
    clock_node *clock; /* NULL: the server's clock */
    struct customer_node *next;
} customer_node;

#define CUSTOMER_BUCKETS 65536

typedef struct idem_entry {
    char key[512]; /* account \x1f mode \x1f idempotency key */
    char request_hash[65];
    bool done;
    int status;
    char *body;
    size_t body_len;
    struct idem_entry *next;
} idem_entry;

struct tg_service {
    const tg_clock *clock;
    tg_service_config cfg;
    tg_store_factory factory;
    char account[40];
    tg_writer *writer;
    tg_store *wstore; /* the writer's connection: touched only from writer jobs */
    uint64_t hash_seed; /* from the directory's identifier seed: keys every hash below */

    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;
    tg_store **pool;
    bool *pool_busy;
    int pool_n;

    tg_slotlock reg_lock; /* meters, customers, clocks: read on every event */
    meter_node *reg[REGISTRY_BUCKETS];       /* by event name: the event path */
    meter_node *reg_by_id[REGISTRY_BUCKETS]; /* by id: summaries */
    customer_node *customers[CUSTOMER_BUCKETS];
    clock_node *clocks; /* few: a list */
    tg_overlay *overlay;

    pthread_mutex_t idem_mu;
    idem_entry *idem[IDEM_BUCKETS];

    struct tg_billing *billing;    /* billing.c's scheduler and settings */
    struct tg_ent_registry *ents; /* entitlements.c's check registry */

    /* Resolved credentials, so a request costs no read for its key or session: API keys and
     * meter event sessions (the expiry cached with them), both looked up again after
     * TG_KEY_RECHECK_S, so a key's revocation ends it and its sessions. Two caches, so that
     * neither kind of credential can ever be taken for the other. */
    cred_cache keys, sessions;

    /* The webhook sender's wake-up (tg_webhooks_nudge): a count of nudges. */
    pthread_mutex_t hooks_mu;
    pthread_cond_t hooks_cv;
    uint64_t hooks_nudged;
};

static uint64_t fnv(const char *s, uint64_t h)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

int64_t tg_service_now(const tg_service *svc)
{
    return tg_clock_now(svc->clock);
}

/* ---------------------------------------------------------------- reader pool */

static int reader_get(tg_service *svc, tg_store **out, tg_err *err)
{
    pthread_mutex_lock(&svc->pool_mu);
    for (;;) {
        for (int i = 0; i < svc->pool_n; i++)
            if (!svc->pool_busy[i]) {
                svc->pool_busy[i] = true;
                *out = svc->pool[i];
                pthread_mutex_unlock(&svc->pool_mu);
                return TG_OK;
            }
        if (svc->pool_n < svc->cfg.readers) {
            int i = svc->pool_n;
            int rc = svc->factory.open(svc->factory.arg, true, &svc->pool[i], err);
            if (rc) {
                pthread_mutex_unlock(&svc->pool_mu);
                return rc;
            }
            svc->pool_busy[i] = true;
            svc->pool_n++;
            *out = svc->pool[i];
            pthread_mutex_unlock(&svc->pool_mu);
            return TG_OK;
        }
        pthread_cond_wait(&svc->pool_cv, &svc->pool_mu);
    }
}

static void reader_put(tg_service *svc, tg_store *s)
{
    pthread_mutex_lock(&svc->pool_mu);
    for (int i = 0; i < svc->pool_n; i++)
        if (svc->pool[i] == s)
            svc->pool_busy[i] = false;
    pthread_cond_signal(&svc->pool_cv);
    pthread_mutex_unlock(&svc->pool_mu);
}

/* ---------------------------------------------------------------- meter registry */

/* The registries' buckets: hashed per event, so eight bytes at a time (the identifier index's
 * keyed hash, with the directory's seed so that ids cannot be chosen to collide). */
static size_t reg_slot(const tg_service *svc, const tg_scope *scope, const char *event_name)
{
    return tg_dedupe_hash(svc->hash_seed, scope->account, scope->livemode, event_name) &
           (REGISTRY_BUCKETS - 1);
}

static bool same_scope(const tg_scope *a, const tg_scope *b)
{
    return a->livemode == b->livemode && strcmp(a->account, b->account) == 0;
}

static size_t reg_id_slot(const tg_service *svc, const tg_scope *scope, const char *id)
{
    return tg_dedupe_hash(svc->hash_seed, scope->account, scope->livemode, id) &
           (REGISTRY_BUCKETS - 1);
}

/* Inserts or replaces (by id) a meter. Caller holds the write lock. A meter's event name
 * never changes, so a meter stays in its slots. */
static int reg_put_locked(tg_service *svc, const tg_scope *scope, const tg_meter *m)
{
    size_t k = reg_slot(svc, scope, m->event_name);
    for (meter_node *n = svc->reg[k]; n; n = n->next)
        if (strcmp(n->m.id, m->id) == 0) {
            n->m = *m;
            return TG_OK;
        }
    meter_node *n = malloc(sizeof *n);
    if (!n)
        return TG_ENOMEM;
    n->scope = *scope;
    n->m = *m;
    n->next = svc->reg[k];
    svc->reg[k] = n;
    size_t j = reg_id_slot(svc, scope, m->id);
    n->next_by_id = svc->reg_by_id[j];
    svc->reg_by_id[j] = n;
    return TG_OK;
}

static int reg_put(tg_service *svc, const tg_scope *scope, const tg_meter *m)
{
    tg_slotlock_write(&svc->reg_lock);
    int rc = reg_put_locked(svc, scope, m);
    tg_slotlock_write_end(&svc->reg_lock);
    return rc;
}

/* Finds the meter for an event name: the active one if any (*found_inactive tells whether an
 * inactive one exists otherwise). */
static bool reg_find(tg_service *svc, const tg_scope *scope, const char *event_name,
                     tg_meter *out, bool *found_inactive)
{
    bool found = false;
    *found_inactive = false;
    unsigned held = tg_slotlock_read(&svc->reg_lock);
    for (meter_node *n = svc->reg[reg_slot(svc, scope, event_name)]; n; n = n->next) {
        if (!same_scope(&n->scope, scope) || strcmp(n->m.event_name, event_name) != 0)
            continue;
        if (n->m.active) {
            *out = n->m;
            found = true;
            break;
        }
        *found_inactive = true;
    }
    tg_slotlock_read_end(&svc->reg_lock, held);
    return found;
}

/* The meter with this id in scope, as the registry holds it: written there in the
 * transaction that stores it, before it commits (and reloaded if the commit fails). A
 * summary reads it so, without a store read of its own (an eighth of a summary page's
 * time when it was one). */
static bool reg_get_by_id(tg_service *svc, const tg_scope *scope, const char *id, tg_meter *out)
{
    bool found = false;
    unsigned held = tg_slotlock_read(&svc->reg_lock);
    for (meter_node *n = svc->reg_by_id[reg_id_slot(svc, scope, id)]; n; n = n->next_by_id)
        if (strcmp(n->m.id, id) == 0 && same_scope(&n->scope, scope)) {
            *out = n->m;
            found = true;
            break;
        }
    tg_slotlock_read_end(&svc->reg_lock, held);
    return found;
}

static void reg_clear_locked(tg_service *svc)
{
    for (size_t i = 0; i < REGISTRY_BUCKETS; i++) {
        meter_node *n = svc->reg[i];
        while (n) {
            meter_node *next = n->next;
            free(n);
            n = next;
        }
        svc->reg[i] = NULL;
        svc->reg_by_id[i] = NULL;
    }
}

static int reg_load_one(void *ctx, const tg_scope *scope, const tg_meter *m)
{
    return reg_put_locked(ctx, scope, m);
}

/* Rebuilds the registry from store s (start-up, or after a batch failed to commit). */
static int reg_reload(tg_service *svc, tg_store *s, tg_err *err)
{
    tg_slotlock_write(&svc->reg_lock);
    reg_clear_locked(svc);
    int rc = s->ops->meter_each(s, reg_load_one, svc, err);
    tg_slotlock_write_end(&svc->reg_lock);
    return rc;
}

static void reg_reload_after_failure(void *arg)
{
    tg_service *svc = *(tg_service **)arg; /* every registry-changing job's arg starts so */
    tg_err err = {0};
    if (reg_reload(svc, svc->wstore, &err))
        tg_log(TG_LOG_ERROR, "cannot reload the meter registry: %s", err.msg);
}

/* ---------------------------------------------------------------- customer registry */

static uint64_t cust_hash(const tg_service *svc, const tg_scope *scope, const char *id)
{
    return tg_dedupe_hash(svc->hash_seed, scope->account, scope->livemode, id);
}

static size_t cust_slot(const tg_service *svc, const tg_scope *scope, const char *id)
{
    return cust_hash(svc, scope, id) & (CUSTOMER_BUCKETS - 1);
}

/* The registry's node for a clock, created (time unknown) when absent. Caller holds reg_lock
 * for writing. */
static clock_node *clock_node_get_locked(tg_service *svc, const tg_scope *scope, const char *id)
{
    for (clock_node *c = svc->clocks; c; c = c->next)
        if (strcmp(c->id, id) == 0 && same_scope(&c->scope, scope))
            return c;
    clock_node *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->scope = *scope;
    snprintf(c->id, sizeof c->id, "%s", id);
    c->frozen = INT64_MIN;
    c->deletes_after = INT64_MAX;
    c->next = svc->clocks;
    svc->clocks = c;
    return c;
}

void tg_clock_registry_set(tg_service *svc, const tg_scope *scope, const char *id,
                           int64_t frozen_time, int64_t deletes_after)
{
    tg_slotlock_write(&svc->reg_lock);
    clock_node *c = clock_node_get_locked(svc, scope, id);
    if (c) {
        c->frozen = frozen_time;
        c->deletes_after = deletes_after;
    }
    tg_slotlock_write_end(&svc->reg_lock);
}

void tg_clock_registry_remove(tg_service *svc, const tg_scope *scope, const char *id)
{
    /* Customers of a deleted clock are deleted in the same job; the node stays (customers
     * may point at it) but forgets its time. */
    tg_clock_registry_set(svc, scope, id, INT64_MIN, INT64_MAX);
}

/* Records a customer (or its deletion). Caller holds reg_lock for writing. */
static int cust_put_locked(tg_service *svc, const tg_scope *scope, int64_t seq, const char *id,
                           bool deleted, const char *clock)
{
    clock_node *cn = NULL;
    if (clock && *clock && !(cn = clock_node_get_locked(svc, scope, clock)))
        return TG_ENOMEM;
    size_t k = cust_slot(svc, scope, id);
    for (customer_node *n = svc->customers[k]; n; n = n->next)
        if (n->seq == seq) {
            n->deleted = deleted;
            return TG_OK;
        }
    customer_node *n = malloc(sizeof *n);
    if (!n)
        return TG_ENOMEM;
    n->scope = *scope;
    snprintf(n->id, sizeof n->id, "%s", id);
    n->seq = seq;
    n->deleted = deleted;
    n->clock = cn;
    n->next = svc->customers[k];
    svc->customers[k] = n;
    return TG_OK;
}

int tg_customer_registry_put(tg_service *svc, const tg_scope *scope, const tg_customer *c)
{
    tg_slotlock_write(&svc->reg_lock);
    int rc = cust_put_locked(svc, scope, c->seq, c->id, c->deleted, c->test_clock);
    tg_slotlock_write_end(&svc->reg_lock);
    return rc;
}

/* Reads a clock's frozen time and deletion time into the registry (they were unknown);
 * returns the frozen time, or INT64_MIN. */
static int64_t clock_load(tg_service *svc, const tg_scope *scope, const char *id,
                          int64_t *deletes_after)
{
    tg_store *s;
    tg_err err = {0};
    int64_t frozen = INT64_MIN;
    if (reader_get(svc, &s, &err))
        return INT64_MIN;
    if (tg_test_clock_time(svc, s, scope, id, &frozen, deletes_after, &err) == TG_OK)
        tg_clock_registry_set(svc, scope, id, frozen, *deletes_after);
    reader_put(svc, s);
    return frozen;
}

/* The row number of a customer in scope, or 0. A deleted customer is found only with
 * include_deleted (summaries of past usage); events need a live one. *now (when not NULL)
 * is replaced by the time of the customer's world when it is on a test clock, and
 * *deletes_after (when not NULL) by when that clock is deleted (else INT64_MAX). hash: the
 * customer's cust_hash when the caller has it (tg_event_prefetch), or 0. */
static int64_t cust_find_at(tg_service *svc, const tg_scope *scope, const char *id,
                            bool include_deleted, int64_t *now, uint64_t hash,
                            int64_t *deletes_after)
{
    int64_t seq = 0, frozen = INT64_MIN, deletes = INT64_MAX;
    char clock[TG_ID_MAX] = "";
    size_t slot = (hash ? hash : cust_hash(svc, scope, id)) & (CUSTOMER_BUCKETS - 1);
    unsigned held = tg_slotlock_read(&svc->reg_lock);
    for (customer_node *n = svc->customers[slot]; n; n = n->next)
        if ((include_deleted || !n->deleted) && strcmp(n->id, id) == 0 &&
            same_scope(&n->scope, scope)) {
            seq = n->seq;
            if (n->clock) {
                frozen = n->clock->frozen;
                deletes = n->clock->deletes_after;
                memcpy(clock, n->clock->id, sizeof clock);
            }
            break;
        }
    tg_slotlock_read_end(&svc->reg_lock, held);
    if (now && clock[0]) {
        if (frozen == INT64_MIN)
            frozen = clock_load(svc, scope, clock, &deletes);
        if (frozen != INT64_MIN)
            *now = frozen;
    }
    if (deletes_after)
        *deletes_after = deletes;
    return seq;
}

static int64_t cust_find(tg_service *svc, const tg_scope *scope, const char *id,
                         bool include_deleted)
{
    return cust_find_at(svc, scope, id, include_deleted, NULL, 0, NULL);
}

int64_t tg_customer_now(tg_service *svc, const tg_scope *scope, const char *customer_id)
{
    int64_t now = tg_service_now(svc);
    cust_find_at(svc, scope, customer_id, true, &now, 0, NULL);
    return now;
}

static void cust_clear_locked(tg_service *svc)
{
    while (svc->clocks) {
        clock_node *next = svc->clocks->next;
        free(svc->clocks);
        svc->clocks = next;
    }
    for (size_t i = 0; i < CUSTOMER_BUCKETS; i++) {
        customer_node *n = svc->customers[i];
        while (n) {
            customer_node *next = n->next;
            free(n);
            n = next;
        }
        svc->customers[i] = NULL;
    }
}

static int cust_load_one(void *ctx, const tg_scope *scope, int64_t seq, const char *id,
                         bool deleted, const char *clock)
{
    return cust_put_locked(ctx, scope, seq, id, deleted, clock);
}

static int cust_reload(tg_service *svc, tg_store *s, tg_err *err)
{
    tg_slotlock_write(&svc->reg_lock);
    cust_clear_locked(svc);
    int rc = s->ops->customer_each(s, cust_load_one, svc, err);
    tg_slotlock_write_end(&svc->reg_lock);
    return rc;
}

static void cust_reload_after_failure(void *arg)
{
    tg_service *svc = *(tg_service **)arg; /* every customer job's arg starts so */
    tg_err err = {0};
    tg_ent_registry_clear(svc->ents); /* a rolled-back job may have installed grants */
    if (cust_reload(svc, svc->wstore, &err))
        tg_log(TG_LOG_ERROR, "cannot reload the customer registry: %s", err.msg);
}

/* The event name of the meter with row number seq in scope ("" when unknown). */
static void meter_name_by_seq(tg_service *svc, const tg_scope *scope, int64_t seq, char *out,
                              size_t size)
{
    out[0] = '\0';
    unsigned held = tg_slotlock_read(&svc->reg_lock);
    for (size_t i = 0; i < REGISTRY_BUCKETS && !out[0]; i++)
        for (meter_node *n = svc->reg[i]; n; n = n->next)
            if (n->m.seq == seq && same_scope(&n->scope, scope)) {
                snprintf(out, size, "%s", n->m.event_name);
                break;
            }
    tg_slotlock_read_end(&svc->reg_lock, held);
}

/* ---------------------------------------------------------------- open / close */

/* Reads a setting created once per data directory (the account id, the identifier hash
 * seed), creating it with a random value (prefix + 16 base62 characters) the first time. */
static int ensure_setting(tg_store *s, const char *name, const char *prefix, char *out,
                          size_t size, tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    char *value = NULL;
    tg_err ignore = {0};
    int rc = s->ops->setting_get(s, name, &a, &value, &ignore);
    if (rc == TG_OK) {
        snprintf(out, size, "%s", value);
        tg_arena_free(&a);
        return TG_OK;
    }
    tg_arena_free(&a);
    if (rc != TG_ENOTFOUND)
        return tg_err_set(err, rc, NULL, "%s", ignore.msg);
    char id[TG_ID_MAX];
    if (tg_id_random(id, sizeof id, prefix, 16))
        return tg_err_set(err, TG_ESTORE, NULL, "random generator failed");
    rc = s->ops->begin(s, err);
    if (!rc) {
        /* Another process may have won the race: keep whatever is stored first. */
        rc = s->ops->setting_get(s, name, &a, &value, &ignore);
        if (rc == TG_ENOTFOUND)
            rc = s->ops->setting_put(s, name, id, err);
        else if (rc == TG_OK)
            snprintf(id, sizeof id, "%s", value);
        tg_arena_free(&a);
        if (!rc)
            rc = s->ops->commit(s, err);
        else
            s->ops->rollback(s);
    }
    if (!rc)
        snprintf(out, size, "%.39s", id);
    return rc;
}

int tg_service_open(tg_service **out, tg_store_factory factory, const tg_clock *clock,
                    const tg_service_config *cfg, tg_err *err)
{
    tg_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    svc->clock = clock;
    svc->factory = factory;
    svc->cfg = *cfg;
    if (!svc->cfg.queue_max_events)
        svc->cfg.queue_max_events = 200000;
    if (!svc->cfg.queue_max_bytes)
        svc->cfg.queue_max_bytes = (size_t)256 << 20;
    if (!svc->cfg.batch_max_events)
        svc->cfg.batch_max_events = 10000;
    if (svc->cfg.readers <= 0)
        svc->cfg.readers = 8;
    if (svc->cfg.webhook_retry_unit <= 0)
        svc->cfg.webhook_retry_unit = TG_WEBHOOK_RETRY_UNIT;
    pthread_mutex_init(&svc->hooks_mu, NULL);
    pthread_cond_init(&svc->hooks_cv, NULL);
    pthread_mutex_init(&svc->pool_mu, NULL);
    pthread_cond_init(&svc->pool_cv, NULL);
    tg_slotlock_init(&svc->reg_lock);
    pthread_mutex_init(&svc->idem_mu, NULL);
    pthread_rwlock_init(&svc->keys.lock, NULL);
    pthread_rwlock_init(&svc->sessions.lock, NULL);
    svc->pool = calloc((size_t)svc->cfg.readers, sizeof *svc->pool);
    svc->pool_busy = calloc((size_t)svc->cfg.readers, sizeof *svc->pool_busy);
    if (!svc->pool || !svc->pool_busy) {
        tg_service_close(svc);
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    }
    svc->overlay = tg_overlay_new(0);
    svc->ents = tg_ent_registry_new();
    if (!svc->overlay || !svc->ents) {
        tg_service_close(svc);
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    }
    char seed[40] = "";
    int rc = factory.open(factory.arg, false, &svc->wstore, err);
    if (!rc)
        rc = ensure_setting(svc->wstore, "account_id", "acct_", svc->account, sizeof svc->account,
                            err);
    if (!rc)
        rc = ensure_setting(svc->wstore, "identifier_seed", "", seed, sizeof seed, err);
    svc->hash_seed = fnv(seed, 1469598103934665603ULL);
    if (!rc)
        rc = reg_reload(svc, svc->wstore, err);
    if (!rc)
        rc = cust_reload(svc, svc->wstore, err);
    if (!rc) {
        tg_writer_config wc = {svc->cfg.queue_max_events, svc->cfg.queue_max_bytes,
                               svc->cfg.batch_max_events, svc->cfg.fold_interval_ms,
                               tg_ent_on_usage, svc->ents, svc->cfg.no_priority_boost,
                               svc->cfg.identifier_days};
        rc = tg_writer_start(&svc->writer, svc->wstore, clock, &wc, svc->overlay, svc->hash_seed,
                             err);
    }
    if (!rc)
        rc = tg_billing_schedule_rows(svc, svc->account, err);
    if (!rc && tg_billing_start(svc, !svc->cfg.no_billing_scheduler))
        rc = tg_err_set(err, TG_ENOMEM, NULL, "cannot start the billing scheduler");
    if (!rc)
        tg_usage_sessions_recover(svc, svc->account);
    if (rc) {
        if (svc->wstore && !svc->writer)
            svc->wstore->ops->close(svc->wstore);
        svc->wstore = NULL;
        tg_service_close(svc);
        return rc;
    }
    *out = svc;
    return TG_OK;
}

void tg_service_close(tg_service *svc)
{
    if (!svc)
        return;
    tg_billing_stop(svc);
    tg_writer_stop(svc->writer); /* closes wstore */
    for (int i = 0; i < svc->pool_n; i++)
        svc->pool[i]->ops->close(svc->pool[i]);
    free(svc->pool);
    free(svc->pool_busy);
    reg_clear_locked(svc);
    cust_clear_locked(svc);
    tg_overlay_free(svc->overlay);
    tg_ent_registry_free(svc->ents);
    for (size_t i = 0; i < IDEM_BUCKETS; i++) {
        idem_entry *e = svc->idem[i];
        while (e) {
            idem_entry *next = e->next;
            free(e->body);
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&svc->pool_mu);
    pthread_cond_destroy(&svc->pool_cv);
    tg_slotlock_destroy(&svc->reg_lock);
    pthread_mutex_destroy(&svc->idem_mu);
    pthread_rwlock_destroy(&svc->keys.lock);
    pthread_rwlock_destroy(&svc->sessions.lock);
    pthread_mutex_destroy(&svc->hooks_mu);
    pthread_cond_destroy(&svc->hooks_cv);
    free(svc);
}

/* ---------------------------------------------------------------- webhook wake-up */

int64_t tg_service_webhook_retry_unit(const tg_service *svc)
{
    return svc->cfg.webhook_retry_unit;
}

void tg_webhooks_nudge(tg_service *svc)
{
    pthread_mutex_lock(&svc->hooks_mu);
    svc->hooks_nudged++;
    pthread_cond_broadcast(&svc->hooks_cv);
    pthread_mutex_unlock(&svc->hooks_mu);
}

void tg_webhooks_wait(tg_service *svc, uint64_t *seen, int ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&svc->hooks_mu);
    while (svc->hooks_nudged == *seen &&
           pthread_cond_timedwait(&svc->hooks_cv, &svc->hooks_mu, &until) == 0) {
    }
    *seen = svc->hooks_nudged;
    pthread_mutex_unlock(&svc->hooks_mu);
}

/* The request bound to this thread (tg_idem_bind); on the writer thread, the one whose job
 * runs (marked_job). */
static _Thread_local tg_idem_mark *bound_mark;

void tg_idem_bind(tg_idem_mark *m)
{
    bound_mark = m;
}

void tg_bound_request(const char **request_id, const char **idempotency_key)
{
    tg_idem_mark *m = bound_mark;
    *request_id = m ? m->request_id : NULL;
    *idempotency_key = m && m->keyed ? m->key : NULL;
}

void tg_idem_note_id(const char *id)
{
    tg_idem_mark *m = bound_mark;
    if (!m || !m->keyed || !m->created_prefix || m->created[0])
        return;
    size_t n = strlen(m->created_prefix);
    /* exactly this kind: "sub_" is not "sub_sched_" (ids' random tails have no '_') */
    if (strncmp(id, m->created_prefix, n) == 0 && !strchr(id + n, '_'))
        tg_strlcpy(m->created, id, sizeof m->created);
}

void tg_idem_note_chosen_id(const char *id)
{
    tg_idem_mark *m = bound_mark;
    if (m && m->keyed && m->created_prefix && !m->created[0])
        tg_strlcpy(m->created, id, sizeof m->created);
}

/* A bound request's write job: the job itself, then the record that its writes are done. */
typedef struct marked_call {
    tg_job_fn fn;
    void *arg;
    void (*on_failure)(void *arg);
    tg_idem_mark *mark;
    int64_t now;
} marked_call;

static int marked_job(tg_store *s, void *arg, tg_err *err)
{
    marked_call *m = arg;
    bound_mark = m->mark;
    int rc = m->fn(s, m->arg, err);
    bound_mark = NULL;
    if (rc || !m->mark->keyed)
        return rc;
    tg_idem rec = {.status = TG_IDEM_COMMITTED,
                   .body = m->mark->created,
                   .body_len = strlen(m->mark->created),
                   .created = m->now};
    tg_strlcpy(rec.request_hash, m->mark->request_hash, sizeof rec.request_hash);
    return s->ops->idem_put(s, &m->mark->scope, m->mark->key, &rec, err);
}

static void marked_failure(void *arg)
{
    marked_call *m = arg;
    if (m->on_failure)
        m->on_failure(m->arg);
}

/* Queues job on the writer, waits for its commit and passes its error on. */
static int run_job(tg_service *svc, tg_job *job, tg_err *err)
{
    marked_call call;
    if (bound_mark && job->fn) {
        call = (marked_call){job->fn, job->arg, job->on_failure, bound_mark,
                             tg_service_now(svc)};
        job->fn = marked_job;
        job->arg = &call;
        job->on_failure = marked_failure;
    }
    int rc = tg_writer_run(svc->writer, job);
    if (rc)
        tg_err_set(err, rc, job->err.param, "%s", job->err.msg);
    return rc;
}

/* Runs fn(store, arg) as a function job on the writer and waits for its commit. */
static int write_job(tg_service *svc, tg_job_fn fn, void *arg, void (*on_failure)(void *),
                     tg_err *err)
{
    tg_job job;
    memset(&job, 0, sizeof job);
    job.fn = fn;
    job.arg = arg;
    job.on_failure = on_failure;
    return run_job(svc, &job, err);
}

/* write_job for a job whose events may queue webhook deliveries (it sets *queued): the sender
 * is nudged after the commit. */
static int write_job_events(tg_service *svc, tg_job_fn fn, void *arg,
                            void (*on_failure)(void *), const bool *queued, tg_err *err)
{
    int rc = write_job(svc, fn, arg, on_failure, err);
    if (!rc && *queued)
        tg_webhooks_nudge(svc);
    return rc;
}

int tg_service_read(tg_service *svc, tg_job_fn fn, void *arg, tg_err *err)
{
    tg_store *s;
    int rc = reader_get(svc, &s, err);
    if (rc)
        return rc;
    rc = fn(s, arg, err);
    reader_put(svc, s);
    return rc;
}

struct tg_billing **tg_service_billing(tg_service *svc)
{
    return &svc->billing;
}

struct tg_ent_registry **tg_service_entitlements(tg_service *svc)
{
    return &svc->ents;
}

bool tg_meter_for_event(tg_service *svc, const tg_scope *scope, const char *event_name,
                        tg_meter *out)
{
    bool inactive;
    return reg_find(svc, scope, event_name, out, &inactive);
}

int64_t tg_customer_seq(tg_service *svc, const tg_scope *scope, const char *id)
{
    return cust_find(svc, scope, id, false);
}

int tg_service_write(tg_service *svc, tg_job_fn fn, void *arg, tg_err *err)
{
    return write_job(svc, fn, arg, cust_reload_after_failure, err);
}

/* ---------------------------------------------------------------- keys */

typedef struct key_arg {
    char hash[65];
    tg_scope scope;
    const char *prefix;
    int64_t now;
} key_arg;

static int key_insert_job(tg_store *s, void *arg, tg_err *err)
{
    key_arg *k = arg;
    return s->ops->key_insert(s, k->hash, &k->scope, k->prefix, k->now, err);
}

/* Fills k with a new secret for account (written to secret) and its digest. */
static int key_new(key_arg *k, const char *account, bool live, int64_t now, char *secret,
                   tg_err *err)
{
    k->prefix = live ? "sk_live_" : "sk_test_";
    if (tg_id_random(secret, TG_ID_MAX, k->prefix, 32))
        return tg_err_set(err, TG_ESTORE, NULL, "random generator failed");
    tg_sha256_hex(secret, strlen(secret), k->hash);
    snprintf(k->scope.account, sizeof k->scope.account, "%s", account);
    k->scope.livemode = live;
    k->now = now;
    return TG_OK;
}

int tg_key_create(tg_service *svc, bool live, char *secret, tg_err *err)
{
    key_arg k;
    int rc = key_new(&k, svc->account, live, tg_service_now(svc), secret, err);
    return rc ? rc : write_job(svc, key_insert_job, &k, NULL, err);
}

/* Runs fn(s, arg) in one transaction of s: committed if it succeeds, else rolled back. */
static int store_transaction(tg_store *s, tg_job_fn fn, void *arg, tg_err *err)
{
    int rc = s->ops->begin(s, err);
    if (rc)
        return rc;
    rc = fn(s, arg, err);
    if (!rc)
        return s->ops->commit(s, err);
    s->ops->rollback(s);
    return rc;
}

int tg_key_create_offline(tg_store_factory factory, const tg_clock *clock, bool live,
                          char *secret, tg_err *err)
{
    tg_store *s = NULL;
    char account[40];
    key_arg k;
    int rc = factory.open(factory.arg, false, &s, err);
    if (!rc)
        rc = ensure_setting(s, "account_id", "acct_", account, sizeof account, err);
    if (!rc)
        rc = key_new(&k, account, live, tg_clock_now(clock), secret, err);
    if (!rc)
        rc = store_transaction(s, key_insert_job, &k, err);
    if (s)
        s->ops->close(s);
    return rc;
}

typedef struct key_revocation {
    char hash[65];
    int64_t now;
} key_revocation;

static int key_revoke_job(tg_store *s, void *arg, tg_err *err)
{
    key_revocation *r = arg;
    return s->ops->key_revoke(s, r->hash, r->now, err);
}

int tg_key_revoke_offline(tg_store_factory factory, const tg_clock *clock, const char *secret,
                          tg_err *err)
{
    key_revocation r = {.now = tg_clock_now(clock)};
    tg_sha256_hex(secret, strlen(secret), r.hash);
    tg_store *s = NULL;
    int rc = factory.open(factory.arg, false, &s, err);
    if (!rc)
        rc = store_transaction(s, key_revoke_job, &r, err);
    if (s)
        s->ops->close(s);
    return rc;
}

static struct cred_entry *cred_slot(cred_cache *c, const char *hash)
{
    return &c->slots[fnv(hash, 1469598103934665603ULL) % CRED_CACHE_SLOTS];
}

/* True, with *scope and *expires, when hash is cached and need not be looked up again yet. */
static bool cred_cache_get(cred_cache *c, const char *hash, int64_t now, tg_scope *scope,
                           int64_t *expires)
{
    struct cred_entry *slot = cred_slot(c, hash);
    pthread_rwlock_rdlock(&c->lock);
    bool hit = now < slot->recheck && strcmp(slot->hash, hash) == 0;
    if (hit) {
        *scope = slot->scope;
        *expires = slot->expires;
    }
    pthread_rwlock_unlock(&c->lock);
    return hit;
}

static void cred_cache_put(cred_cache *c, const char *hash, int64_t now, const tg_scope *scope,
                           int64_t expires)
{
    struct cred_entry *slot = cred_slot(c, hash);
    pthread_rwlock_wrlock(&c->lock);
    memcpy(slot->hash, hash, sizeof slot->hash);
    slot->scope = *scope;
    slot->expires = expires;
    slot->recheck = now + TG_KEY_RECHECK_S;
    pthread_rwlock_unlock(&c->lock);
}

int tg_key_authenticate(tg_service *svc, const char *secret, tg_scope *scope, tg_err *err)
{
    char hash[65];
    tg_sha256_hex(secret, strlen(secret), hash);
    int64_t now = tg_service_now(svc), unused;
    if (cred_cache_get(&svc->keys, hash, now, scope, &unused))
        return TG_OK;
    tg_store *s;
    int rc = reader_get(svc, &s, err);
    if (rc)
        return rc;
    rc = s->ops->key_lookup(s, hash, scope, err);
    reader_put(svc, s);
    if (!rc)
        cred_cache_put(&svc->keys, hash, now, scope, 0);
    return rc;
}

/* ---------------------------------------------------------------- customers */

static int customer_validate(const tg_customer_patch *p, tg_err *err)
{
    static const struct {
        const char *name;
        size_t max;
        size_t off;
    } fields[] = {
        {"email", 512, offsetof(tg_customer_patch, email)},
        {"name", 256, offsetof(tg_customer_patch, name)},
        {"description", 350, offsetof(tg_customer_patch, description)},
        {"invoice_settings[default_payment_method]", 255,
         offsetof(tg_customer_patch, default_payment_method)},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const tg_opt_str *o = (const tg_opt_str *)((const char *)p + fields[i].off);
        if (o->set && o->value && strlen(o->value) > fields[i].max)
            return tg_err_set(err, TG_EINVAL, fields[i].name,
                              "Invalid %s: must be at most %zu characters.", fields[i].name,
                              fields[i].max);
    }
    return tg_metadata_validate(&p->metadata, "metadata", err);
}

static void apply_opt(const char **field, const tg_opt_str *o)
{
    if (o->set)
        *field = o->value;
}

typedef struct customer_arg {
    tg_service *svc;
    const tg_scope *scope;
    const char *id;             /* NULL: create */
    const tg_customer_patch *patch;
    bool delete;
    tg_arena *a;
    tg_customer *out;
    bool queued_webhooks; /* its event queued deliveries: the sender is nudged */
} customer_arg;

static int customer_write_job(tg_store *s, void *arg, tg_err *err)
{
    customer_arg *c = arg;
    tg_customer cur;
    if (c->id) {
        int rc = s->ops->customer_get(s, c->scope, c->id, c->a, &cur, err);
        if (rc)
            return rc;
        if (cur.deleted)
            return tg_err_set(err, TG_ENOTFOUND, "id", "No such customer: '%s'", c->id);
    } else {
        memset(&cur, 0, sizeof cur);
        if (tg_id_random(cur.id, sizeof cur.id, "cus_", 14))
            return tg_err_set(err, TG_ESTORE, NULL, "random generator failed");
        tg_idem_note_id(cur.id);
        cur.livemode = c->scope->livemode;
        cur.created = tg_service_now(c->svc);
        if (c->patch->test_clock) {
            int64_t frozen;
            int rc = tg_test_clock_time(c->svc, s, c->scope, c->patch->test_clock, &frozen, NULL,
                                        err);
            if (rc)
                return rc;
            tg_strlcpy(cur.test_clock, c->patch->test_clock, sizeof cur.test_clock);
            cur.created = frozen;
        }
    }
    const char *event = c->delete ? "customer.deleted"
                        : c->id   ? "customer.updated"
                                  : "customer.created";
    if (c->delete) {
        /* As on Stripe, its subscriptions are canceled at once (before its event). */
        int rc = tg_billing_customer_event(c->svc, s, c->scope, event, &cur, c->a,
                                           &c->queued_webhooks, err);
        if (rc)
            return rc;
        cur.deleted = true;
    } else {
        const tg_customer was = cur;
        apply_opt(&cur.email, &c->patch->email);
        apply_opt(&cur.name, &c->patch->name);
        apply_opt(&cur.description, &c->patch->description);
        apply_opt(&cur.default_payment_method, &c->patch->default_payment_method);
        int rc = tg_metadata_merge(&cur.metadata, c->patch->metadata_clear, &c->patch->metadata,
                                   c->a, "metadata", err);
        if (rc)
            return rc;
        tg_metadata contact;
        if (tg_metadata_apply(&cur.contact, false, &c->patch->contact, c->a, &contact))
            return tg_err_set(err, TG_ENOMEM, NULL, NULL);
        cur.contact = contact;
        /* Recorded before the change is saved: an update's event compares with the row. An
         * update that changes nothing records none ("whenever any property changes"). */
        if ((!c->id || !tg_customer_same(&was, &cur)) &&
            (rc = tg_billing_customer_event(c->svc, s, c->scope, event, &cur, c->a,
                                            &c->queued_webhooks, err)))
            return rc;
    }
    int rc = s->ops->customer_put(s, c->scope, &cur, err);
    if (!rc)
        rc = tg_customer_registry_put(c->svc, c->scope, &cur);
    if (!rc && c->out)
        *c->out = cur;
    return rc;
}

static int customer_write(customer_arg *c, tg_err *err)
{
    return write_job_events(c->svc, customer_write_job, c, cust_reload_after_failure,
                            &c->queued_webhooks, err);
}

int tg_customer_create(tg_service *svc, const tg_scope *scope, const tg_customer_patch *p,
                       tg_arena *a, tg_customer *out, tg_err *err)
{
    int rc = customer_validate(p, err);
    if (rc)
        return rc;
    customer_arg c = {svc, scope, NULL, p, false, a, out, false};
    return customer_write(&c, err);
}

int tg_customer_update(tg_service *svc, const tg_scope *scope, const char *id,
                       const tg_customer_patch *p, tg_arena *a, tg_customer *out, tg_err *err)
{
    int rc = customer_validate(p, err);
    if (rc)
        return rc;
    customer_arg c = {svc, scope, id, p, false, a, out, false};
    return customer_write(&c, err);
}

int tg_customer_delete(tg_service *svc, const tg_scope *scope, const char *id, tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    customer_arg c = {svc, scope, id, NULL, true, &a, NULL, false};
    int rc = customer_write(&c, err);
    tg_arena_free(&a);
    return rc;
}

int tg_customer_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                         tg_customer *out, tg_err *err)
{
    tg_store *s;
    int rc = reader_get(svc, &s, err);
    if (rc)
        return rc;
    rc = s->ops->customer_get(s, scope, id, a, out, err);
    reader_put(svc, s);
    return rc;
}

/* Finishes a list page read with up to limit+1 rows: for ending_before the store read oldest
 * first from the cursor and reversed, so the extra row is the first (the newest) and is
 * dropped; otherwise it is the last. Sets has_more and trims n to limit. */
static void page_finish(void *items, size_t size, size_t *n, const tg_page *page, bool *has_more)
{
    *has_more = *n > (size_t)page->limit;
    if (!*has_more)
        return;
    if (page->ending_before)
        memmove(items, (char *)items + size, (size_t)page->limit * size);
    *n = (size_t)page->limit;
}

int tg_customer_list(tg_service *svc, const tg_scope *scope, const tg_customer_filter *f,
                     const tg_page *page, tg_arena *a, tg_customer **out, size_t *n,
                     bool *has_more, tg_err *err)
{
    tg_store *s;
    int rc = reader_get(svc, &s, err);
    if (rc)
        return rc;
    rc = s->ops->customer_list(s, scope, f, page, a, out, n, err);
    reader_put(svc, s);
    if (rc)
        return rc;
    page_finish(*out, sizeof **out, n, page, has_more);
    return TG_OK;
}

/* ---------------------------------------------------------------- meters */

typedef struct meter_arg {
    tg_service *svc; /* first: see reg_reload_after_failure */
    const tg_scope *scope;
    tg_meter m;
    const char *id;
    const char *display_name;
    int set_active; /* -1: leave, 0/1 */
    tg_arena *a;          /* the event's */
    bool queued_webhooks; /* its event queued deliveries: the sender is nudged */
} meter_arg;

/* Runs a meter's writer job with an arena for its event (write_job_events). */
static int meter_write(meter_arg *c, tg_job_fn fn, tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    c->a = &a;
    int rc = write_job_events(c->svc, fn, c, reg_reload_after_failure, &c->queued_webhooks, err);
    tg_arena_free(&a);
    return rc;
}

static bool name_taken(tg_service *svc, const tg_scope *scope, const char *event_name,
                       const char *except_id)
{
    tg_meter other;
    bool inactive;
    return reg_find(svc, scope, event_name, &other, &inactive) && strcmp(other.id, except_id) != 0;
}

static int meter_create_job(tg_store *s, void *arg, tg_err *err)
{
    meter_arg *c = arg;
    if (name_taken(c->svc, c->scope, c->m.event_name, ""))
        return tg_err_set(err, TG_EEXISTS, "event_name",
                          "An active meter with event_name '%s' already exists.",
                          c->m.event_name);
    int rc = tg_billing_emit(c->svc, s, c->scope, c->m.created, "billing.meter.created",
                             TG_OBJ_METER, &c->m, c->a, &c->queued_webhooks, err);
    if (!rc)
        rc = s->ops->meter_put(s, c->scope, &c->m, err);
    if (!rc)
        rc = reg_put(c->svc, c->scope, &c->m);
    return rc;
}

int tg_meter_create(tg_service *svc, const tg_scope *scope, const tg_meter *spec, tg_meter *out,
                    tg_err *err)
{
    int rc = tg_meter_validate(spec, err);
    if (rc)
        return rc;
    meter_arg c;
    memset(&c, 0, sizeof c);
    c.svc = svc;
    c.scope = scope;
    c.m = *spec;
    if (tg_id_random(c.m.id, sizeof c.m.id, "mtr_", 24))
        return tg_err_set(err, TG_ESTORE, NULL, "random generator failed");
    tg_idem_note_id(c.m.id);
    c.m.created = c.m.updated = tg_service_now(svc);
    c.m.livemode = scope->livemode;
    c.m.active = true;
    c.m.deactivated_at = 0;
    rc = meter_write(&c, meter_create_job, err);
    if (!rc)
        *out = c.m;
    return rc;
}

static int meter_change_job(tg_store *s, void *arg, tg_err *err)
{
    meter_arg *c = arg;
    int rc = s->ops->meter_get(s, c->scope, c->id, &c->m, err);
    if (rc)
        return rc;
    int64_t now = tg_service_now(c->svc);
    const char *event = NULL; /* only a change records one */
    if (c->display_name && strcmp(c->m.display_name, c->display_name) != 0) {
        snprintf(c->m.display_name, sizeof c->m.display_name, "%s", c->display_name);
        event = "billing.meter.updated";
    }
    if (c->set_active == 1 && !c->m.active) {
        if (name_taken(c->svc, c->scope, c->m.event_name, c->m.id))
            return tg_err_set(err, TG_EEXISTS, "event_name",
                              "An active meter with event_name '%s' already exists.",
                              c->m.event_name);
        c->m.active = true;
        c->m.deactivated_at = 0;
        event = "billing.meter.reactivated";
    } else if (c->set_active == 0 && c->m.active) {
        c->m.active = false;
        c->m.deactivated_at = now;
        event = "billing.meter.deactivated";
    }
    if (!event) /* nothing changed: nothing is written, `updated` included */
        return TG_OK;
    c->m.updated = now;
    if ((rc = tg_billing_emit(c->svc, s, c->scope, now, event, TG_OBJ_METER, &c->m, c->a,
                              &c->queued_webhooks, err)))
        return rc;
    rc = s->ops->meter_put(s, c->scope, &c->m, err);
    if (!rc)
        rc = reg_put(c->svc, c->scope, &c->m);
    return rc;
}

static int meter_change(tg_service *svc, const tg_scope *scope, const char *id,
                        const char *display_name, int set_active, tg_meter *out, tg_err *err)
{
    meter_arg c;
    memset(&c, 0, sizeof c);
    c.svc = svc;
    c.scope = scope;
    c.id = id;
    c.display_name = display_name;
    c.set_active = set_active;
    int rc = meter_write(&c, meter_change_job, err);
    if (!rc)
        *out = c.m;
    return rc;
}

int tg_meter_update(tg_service *svc, const tg_scope *scope, const char *id,
                    const char *display_name, tg_meter *out, tg_err *err)
{
    if (display_name && !*display_name)
        return tg_err_set(err, TG_EINVAL, "display_name", "Invalid display_name: must not be empty.");
    return meter_change(svc, scope, id, display_name, -1, out, err);
}

int tg_meter_set_active(tg_service *svc, const tg_scope *scope, const char *id, bool active,
                        tg_meter *out, tg_err *err)
{
    return meter_change(svc, scope, id, NULL, active ? 1 : 0, out, err);
}

int tg_meter_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_meter *out,
                      tg_err *err)
{
    tg_store *s;
    int rc = reader_get(svc, &s, err);
    if (rc)
        return rc;
    rc = s->ops->meter_get(s, scope, id, out, err);
    reader_put(svc, s);
    return rc;
}

int tg_meter_list(tg_service *svc, const tg_scope *scope, int status, const tg_page *page,
                  tg_arena *a, tg_meter **out, size_t *n, bool *has_more, tg_err *err)
{
    tg_store *s;
    int rc = reader_get(svc, &s, err);
    if (rc)
        return rc;
    rc = s->ops->meter_list(s, scope, status, page, a, out, n, err);
    reader_put(svc, s);
    if (rc)
        return rc;
    page_finish(*out, sizeof **out, n, page, has_more);
    return TG_OK;
}

/* ---------------------------------------------------------------- meter events */

/* The active meter for an event name, from the memo or the registry (then remembered while
 * the memo has room; otherwise copied to *local); NULL when none is active. */
static const tg_meter *meter_for_event(tg_service *svc, const tg_scope *scope,
                                       const char *event_name, tg_meter_memo *memo,
                                       tg_meter *local, bool *inactive)
{
    if (memo)
        for (size_t i = 0; i < memo->n; i++) {
            struct tg_meter_memo_item *it = &memo->items[i];
            if (strcmp(it->m.event_name, event_name) == 0) {
                *inactive = it->inactive;
                return it->found ? &it->m : NULL;
            }
        }
    if (!memo || memo->n == sizeof memo->items / sizeof memo->items[0])
        return reg_find(svc, scope, event_name, local, inactive) ? local : NULL;
    struct tg_meter_memo_item *it = &memo->items[memo->n++];
    it->found = reg_find(svc, scope, event_name, &it->m, &it->inactive);
    if (!it->found)
        snprintf(it->m.event_name, sizeof it->m.event_name, "%s", event_name);
    *inactive = it->inactive;
    return it->found ? &it->m : NULL;
}

void tg_event_prefetch(tg_service *svc, const tg_scope *scope, tg_event *e,
                       tg_meter_memo *memo)
{
    tg_meter local;
    bool inactive;
    const tg_meter *mp = meter_for_event(svc, scope, e->event_name, memo, &local, &inactive);
    const char *cust = mp ? tg_metadata_get(&e->payload, mp->customer_key) : NULL;
    if (!cust)
        return;
    e->customer_hash = cust_hash(svc, scope, cust);
    /* a hint: the bucket's address only, read under the lock by tg_event_prepare */
    __builtin_prefetch(&svc->customers[e->customer_hash & (CUSTOMER_BUCKETS - 1)]);
}

int tg_event_prepare(tg_service *svc, const tg_scope *scope, tg_event *e, tg_meter_memo *memo,
                     tg_err *err)
{
    int rc = tg_event_check_names(e->event_name, e->identifier[0] ? e->identifier : NULL, err);
    if (rc)
        return rc;
    tg_meter local;
    bool inactive;
    const tg_meter *mp = meter_for_event(svc, scope, e->event_name, memo, &local, &inactive);
    if (!mp) {
        if (inactive)
            return tg_err_set(err, TG_EARCHIVED, "event_name",
                              "The meter for event name %s is inactive.", e->event_name);
        return tg_err_set(err, TG_ENOMETER, "event_name",
                          "No active meter found for event name %s.", e->event_name);
    }
    /* The time window is that of the customer's world: a test clock's customer reports
     * usage in the clock's time. */
    int64_t now = tg_service_now(svc), clock_deleted = INT64_MAX;
    const char *cust = tg_metadata_get(&e->payload, mp->customer_key);
    int64_t customer_seq =
        cust ? cust_find_at(svc, scope, cust, false, &now, e->customer_hash, &clock_deleted) : 0;
    if (e->timestamp == TG_TIME_NOW)
        e->timestamp = now;
    rc = tg_event_check(mp, e, now, err);
    if (rc)
        return rc;
    e->customer_seq = customer_seq;
    /* A test clock is deleted 30 days after its creation, with its customers, as at Stripe.
     * The clock's customers keep their rows here, but take no more events: a clock stands
     * still, so without this a retry could come with a timestamp the clock still accepts
     * after its identifier had left the index (writer.c, "Identifier retention"). */
    if (!e->customer_seq || tg_service_now(svc) >= clock_deleted) {
        char param[TG_NAME_MAX + 16];
        snprintf(param, sizeof param, "payload[%s]", mp->customer_key);
        if (e->customer_seq)
            return tg_err_set(err, TG_ECUSTOMER, param,
                              "No such customer: '%s' (its test clock was deleted at %lld: "
                              "test clocks and their customers last 30 days).",
                              e->customer_id, (long long)clock_deleted);
        return tg_err_set(err, TG_ECUSTOMER, param, "No such customer: '%s'", e->customer_id);
    }
    e->meter_seq = mp->seq;
    e->additive = mp->formula != TG_FORMULA_LAST && mp->event_time_window == TG_WINDOW_NONE;
    /* Keep what the meter does not interpret (dimensions such as agent_id) with the event:
     * the interpreted keys move to the front of the payload (at most two moves) and the rest
     * is the extras range. */
    size_t front = 0;
    for (size_t i = 0; i < e->payload.n; i++) {
        const char *k = e->payload.items[i].key;
        if (strcmp(k, mp->customer_key) != 0 &&
            (mp->formula == TG_FORMULA_COUNT || strcmp(k, mp->value_key) != 0))
            continue;
        tg_kv kv = e->payload.items[i];
        memmove(&e->payload.items[front + 1], &e->payload.items[front],
                (i - front) * sizeof kv);
        e->payload.items[front++] = kv;
    }
    e->extras.items = e->payload.items + front;
    e->extras.n = e->payload.n - front;
    if (!e->identifier[0] && tg_id_random(e->identifier, sizeof e->identifier, "", 32))
        return tg_err_set(err, TG_ESTORE, NULL, "random generator failed");
    e->id_hash = tg_dedupe_hash(svc->hash_seed, scope->account, scope->livemode, e->identifier);
    e->id_hash_scope = scope;
    e->created = tg_service_now(svc);
    return TG_OK;
}

/* Fills an event job (see writer.h); refusal counts imply asynchronous validation, where
 * duplicates are reported too. */
static void event_job_init(tg_job *job, const tg_scope *scope, tg_event *events, size_t n,
                           int *results, const tg_meter_error *errors, size_t nerrors)
{
    memset(job, 0, sizeof *job);
    job->report_duplicates = errors != NULL;
    job->scope = scope;
    job->events = events;
    job->nevents = n;
    for (size_t i = 0; i < n; i++) {
        job->bytes += sizeof events[i];
        for (size_t k = 0; k < events[i].payload.n; k++)
            job->bytes += strlen(events[i].payload.items[k].key) + sizeof(tg_kv) +
                          (events[i].payload.items[k].value
                               ? strlen(events[i].payload.items[k].value)
                               : 0);
    }
    job->results = results;
    job->errors = errors;
    job->nerrors = nerrors;
}

int tg_events_record(tg_service *svc, const tg_scope *scope, tg_event *events, size_t n,
                     int *results, const tg_meter_error *errors, size_t nerrors, tg_err *err)
{
    tg_job job;
    event_job_init(&job, scope, events, n, results, errors, nerrors);
    return run_job(svc, &job, err);
}

/* The job and its callback, inside the caller's opaque handle. */
typedef struct record_state {
    tg_job job;
    void (*done)(void *arg, int rc);
    void *arg;
} record_state;

_Static_assert(sizeof(record_state) <= sizeof(tg_record_handle), "tg_record_handle is too small");

static void record_complete(tg_job *job)
{
    record_state *st = (record_state *)job; /* job is the first member */
    st->done(st->arg, job->rc);
}

int tg_events_submit(tg_service *svc, const tg_scope *scope, tg_event *events, size_t n,
                     int *results, const tg_meter_error *errors, size_t nerrors,
                     tg_record_handle *handle, void (*done)(void *arg, int rc), void *arg,
                     tg_err *err)
{
    record_state *st = (record_state *)handle->opaque;
    event_job_init(&st->job, scope, events, n, results, errors, nerrors);
    st->job.on_complete = record_complete;
    st->done = done;
    st->arg = arg;
    int rc = tg_writer_submit(svc->writer, &st->job);
    if (rc)
        tg_err_set(err, rc, st->job.err.param, "%s", st->job.err.msg);
    return rc;
}

void tg_events_submit_error(const tg_record_handle *handle, tg_err *err)
{
    const record_state *st = (const record_state *)handle->opaque;
    tg_err_set(err, st->job.rc, st->job.err.param, "%s", st->job.err.msg);
}

typedef struct cancel_arg {
    tg_service *svc;
    const tg_scope *scope;
    const char *event_name, *identifier;
} cancel_arg;

static int cancel_job(tg_store *s, void *arg, tg_err *err)
{
    cancel_arg *c = arg;
    (void)s;
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_found f;
    tg_err lookup = {0};
    char name[TG_NAME_MAX + 1] = "";
    int rc = tg_writer_lookup(c->svc->writer, c->scope, c->identifier, &a, &f, &lookup);
    if (rc == TG_OK) {
        if (f.in_block)
            meter_name_by_seq(c->svc, c->scope, f.ev.meter_seq, name, sizeof name);
        else
            snprintf(name, sizeof name, "%s", f.ev.event_name);
    }
    if (rc == TG_ENOTFOUND || (rc == TG_OK && strcmp(name, c->event_name) != 0))
        rc = tg_err_set(err, TG_ENOTFOUND, "cancel[identifier]",
                        "No meter event with identifier '%s' for event name %s.", c->identifier,
                        c->event_name);
    else if (rc)
        rc = tg_err_set(err, rc, NULL, "%s", lookup.msg);
    else if (tg_service_now(c->svc) - f.created > TG_CANCEL_WINDOW)
        rc = tg_err_set(err, TG_EINVAL, "cancel[identifier]",
                        "You can only cancel events within 24 hours of receiving them.");
    else
        rc = tg_writer_cancel(c->svc->writer, c->scope, &f, err);
    tg_arena_free(&a);
    return rc;
}

int tg_event_cancel(tg_service *svc, const tg_scope *scope, const char *event_name,
                    const char *identifier, tg_err *err)
{
    int rc = tg_event_check_names(event_name, NULL, err);
    if (rc)
        return rc;
    if (!identifier || !*identifier)
        return tg_err_set(err, TG_EMISSING, "cancel[identifier]",
                          "Missing required param: cancel[identifier].");
    if (strlen(identifier) > TG_NAME_MAX)
        return tg_err_set(err, TG_EINVAL, "cancel[identifier]",
                          "Invalid cancel[identifier]: must be at most %d characters.",
                          TG_NAME_MAX);
    cancel_arg c = {svc, scope, event_name, identifier};
    return write_job(svc, cancel_job, &c, NULL, err);
}

/* ---------------------------------------------------------------- summaries */

typedef struct summary_ctx {
    int64_t grain;       /* window length; 0 = the whole range is one window */
    int64_t range_start; /* for grain 0 */
    int64_t range_end;
    tg_formula formula;
    tg_summary *out;
    size_t n, cap;
    size_t stop_at; /* stop after this many windows (0 = never) */
    bool have;      /* a window is open */
    tg_bucket acc;
    int64_t cur_start;
} summary_ctx;

static int summary_emit(summary_ctx *c)
{
    if (!c->have)
        return TG_OK;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        tg_summary *p = realloc(c->out, cap * sizeof *p);
        if (!p)
            return TG_ENOMEM;
        c->out = p;
        c->cap = cap;
    }
    tg_summary *s = &c->out[c->n++];
    s->start = c->grain ? c->cur_start : c->range_start;
    s->end = c->grain ? c->cur_start + c->grain : c->range_end;
    s->value = tg_bucket_value(&c->acc, c->formula);
    c->have = false;
    return TG_OK;
}

static int summary_add(void *ctx, const tg_bucket *b)
{
    summary_ctx *c = ctx;
    int64_t start = c->grain ? tg_window_start(b->minute, c->grain) : c->range_start;
    if (c->have && start != c->cur_start) {
        int rc = summary_emit(c);
        if (rc)
            return rc;
        if (c->stop_at && c->n >= c->stop_at)
            return 1; /* enough windows: stop the scan */
    }
    if (!c->have) {
        memset(&c->acc, 0, sizeof c->acc);
        c->cur_start = start;
        c->have = true;
    }
    return tg_bucket_merge(&c->acc, b) ? TG_EINVAL : TG_OK;
}

typedef struct bucket_vec {
    tg_bucket *b;
    size_t n, cap;
} bucket_vec;

static int collect_bucket(void *ctx, const tg_bucket *b)
{
    bucket_vec *v = ctx;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        tg_bucket *p = realloc(v->b, cap * sizeof *p);
        if (!p)
            return TG_ENOMEM;
        v->b = p;
        v->cap = cap;
    }
    v->b[v->n++] = *b;
    return TG_OK;
}

/* The window a minute's usage is summed into when reading additive usage: its window of
 * `grain` seconds, or 0 for one window over the whole range (grain 0). */
static int64_t window_key(int64_t grain, int64_t minute)
{
    return grain ? tg_window_start(minute, grain) : 0;
}

/* Adds d's sum and count to b: TG_OK, or TG_EINVAL when a sum overflows. A plain sum, unlike
 * tg_bucket_merge: a delta whose count is 0 can carry a sum (an event recorded and another
 * of the same minute canceled). */
static int bucket_add(tg_bucket *b, tg_dec sum, int64_t count)
{
    if (tg_dec_add(b->sum, sum, &b->sum) || __builtin_add_overflow(b->count, count, &b->count))
        return TG_EINVAL;
    return TG_OK;
}

typedef struct day_read_ctx {
    int64_t from, to;
    int64_t grain;          /* the windows usage is summed into (window_key) */
    size_t max_windows;     /* stop once more windows than this are complete (0: never) */
    size_t windows;
    int64_t stopped_at_day; /* the oldest day read when stopping early, else 0 */
    bucket_vec *out;        /* one bucket a window, newest first */
} day_read_ctx;

/* Sums a day page's minutes within [from, to) into one bucket a window (window_key; the
 * bucket's minute is the key). Days come newest first and a day's entries oldest first, so a
 * day's windows are appended in reverse. Windows of a grain (hours, days) never straddle UTC
 * days, so after a whole day every window seen is complete; the whole range's one window
 * (grain 0) takes every day's entries. A month's summary so adds up a few thousand entries
 * without storing each: it used to collect a bucket a minute and sum them afterwards. */
static int collect_day(void *ctx, int64_t day, const void *data, size_t len)
{
    day_read_ctx *c = ctx;
    tg_daypage_reader r;
    tg_delta d;
    int rc;
    size_t first = c->out->n;
    tg_daypage_open(&r, day, data, len);
    while ((rc = tg_daypage_next(&r, &d)) == 1) {
        if (d.minute < c->from || d.minute >= c->to)
            continue;
        int64_t key = window_key(c->grain, d.minute);
        if (!c->out->n || c->out->b[c->out->n - 1].minute != key) {
            tg_bucket b;
            memset(&b, 0, sizeof b);
            b.minute = key;
            if (collect_bucket(c->out, &b))
                return TG_ENOMEM;
        }
        if (bucket_add(&c->out->b[c->out->n - 1], d.sum, d.count))
            return TG_EINVAL;
    }
    if (rc < 0)
        return TG_ESTORE;
    for (size_t i = first, j = c->out->n ? c->out->n - 1 : 0; i < j; i++, j--) {
        tg_bucket t = c->out->b[i];
        c->out->b[i] = c->out->b[j];
        c->out->b[j] = t;
    }
    c->windows += c->out->n - first;
    if (c->max_windows && c->windows > c->max_windows) {
        c->stopped_at_day = day;
        return 1; /* enough: the caller needs only the newest windows */
    }
    return TG_OK;
}

/* Merges the newest-first lists a[0..na) and b[0..nb) (one delta a minute each) into out
 * (room for na + nb), adding up the deltas of a minute in both; returns how many it wrote,
 * or -1 when a sum overflows. */
static long merge_newest_first(const tg_delta *a, size_t na, const tg_delta *b, size_t nb,
                               tg_delta *out)
{
    size_t i = 0, k = 0;
    long n = 0;
    while (i < na || k < nb) {
        if (k == nb || (i < na && a[i].minute > b[k].minute)) {
            out[n++] = a[i++];
        } else if (i == na || b[k].minute > a[i].minute) {
            out[n++] = b[k++];
        } else {
            tg_delta d = a[i++];
            if (tg_dec_add(d.sum, b[k].sum, &d.sum) ||
                __builtin_add_overflow(d.count, b[k].count, &d.count))
                return -1;
            k++;
            out[n++] = d;
        }
    }
    return n;
}

/* A pair's spilled deltas (core/writer.c) with from <= minute < to, read under the pair's
 * overlay lock and added to its live deltas. */
typedef struct spill_read_ctx {
    int64_t from, to;
    tg_delta_vec v;   /* the rows read so far, newest first, one delta a minute */
    tg_delta_vec row; /* one row's deltas in range */
} spill_read_ctx;

/* Replaces v's list by its merge with d[0..n) (newest first): TG_OK, TG_ENOMEM, or
 * TG_EINVAL when a sum overflows. */
static int spill_merge(tg_delta_vec *v, const tg_delta *d, size_t n)
{
    tg_delta *out = malloc((v->n + n + 1) * sizeof *out);
    if (!out)
        return TG_ENOMEM;
    long m = merge_newest_first(v->d, v->n, d, n, out);
    if (m < 0) {
        free(out);
        return TG_EINVAL;
    }
    free(v->d);
    v->d = out;
    v->n = (size_t)m;
    v->cap = v->n;
    return TG_OK;
}

static int collect_spill(void *ctx, const tg_spill *row)
{
    spill_read_ctx *c = ctx;
    tg_daypage_reader r;
    tg_delta d;
    int rc;
    c->row.n = 0;
    tg_deltarun_open(&r, row->data, row->len);
    while ((rc = tg_deltarun_next_from(&r, c->from, &d)) == 1 && d.minute < c->to)
        if (tg_delta_vec_push(&c->row, &d))
            return TG_ENOMEM;
    if (rc < 0)
        return TG_ESTORE;
    for (size_t i = 0, k = c->row.n; i < k / 2; i++) { /* ascending to newest first */
        tg_delta t = c->row.d[i];
        c->row.d[i] = c->row.d[k - 1 - i];
        c->row.d[k - 1 - i] = t;
    }
    return c->row.n ? spill_merge(&c->v, c->row.d, c->row.n) : TG_OK;
}

/* Reads the usage of (meter, customer) in [from, to), newest first. Additive meters read their
 * day pages, spills and live overlay under the pair's overlay lock, so a concurrent fold is
 * seen entirely or not at all, and sum them into one bucket a window of `grain` (0: the whole
 * range); other meters read their minute buckets. With max_windows, reading may stop once
 * the pages read hold more than that many windows (*stopped is then set), and live deltas
 * older than the last day read are left out. */
static int read_buckets_once(tg_service *svc, tg_store *s, const tg_meter *m,
                             int64_t customer_seq, int64_t from, int64_t to, int64_t grain,
                             size_t max_windows, bucket_vec *out, bool *stopped, tg_err *err)
{
    bool additive = m->formula != TG_FORMULA_LAST && m->event_time_window == TG_WINDOW_NONE;
    void *lock = additive ? tg_overlay_rdlock(svc->overlay, (uint64_t)m->seq,
                                              (uint64_t)customer_seq)
                          : NULL;
    bucket_vec stored = {0};
    tg_delta *live = NULL;
    long nlive = 0;
    int rc;
    if (additive) {
        day_read_ctx dc;
        memset(&dc, 0, sizeof dc);
        dc.from = from;
        dc.to = to;
        dc.grain = grain;
        dc.max_windows = max_windows;
        dc.out = &stored;
        rc = s->ops->day_each(s, m->seq, customer_seq, tg_window_start(from, 86400), to,
                              collect_day, &dc, err);
        if (rc == 1) {
            rc = TG_OK;
            *stopped = true;
            if (dc.stopped_at_day > from) /* older live deltas belong to windows not read */
                from = dc.stopped_at_day;
        }
        if (rc == TG_ESTORE && !err->code)
            tg_err_set(err, rc, NULL, "Corrupt day page.");
    } else {
        rc = s->ops->bucket_each(s, m->seq, customer_seq, from, to, collect_bucket, &stored, err);
    }
    spill_read_ctx spilled = {from, to, {NULL, 0, 0}, {NULL, 0, 0}};
    if (!rc && lock)
        rc = s->ops->spill_each(s, tg_overlay_shard((uint64_t)m->seq, (uint64_t)customer_seq),
                                m->seq, customer_seq, collect_spill, &spilled, err);
    if (rc == TG_ESTORE && !err->code)
        tg_err_set(err, rc, NULL, "Corrupt spilled usage.");
    if (!rc && lock)
        nlive = tg_overlay_read(svc->overlay, (uint64_t)m->seq, (uint64_t)customer_seq, from, to,
                                &live);
    if (lock)
        tg_overlay_unlock(lock);
    if (!rc && nlive < 0)
        rc = TG_ENOMEM;
    if (!rc && spilled.v.n) { /* the spills and the live deltas, as one newest-first list */
        rc = spill_merge(&spilled.v, live, (size_t)nlive);
        free(live);
        live = spilled.v.d;
        nlive = (long)spilled.v.n;
        spilled.v.d = NULL;
    }
    free(spilled.v.d);
    free(spilled.row.d);
    /* Stored and live usage, newest first, as one bucket a window. Other meters' minute
     * buckets go as they are (summary_add merges them by their formula). */
    size_t i = 0, k = 0;
    while (!rc && !additive && i < stored.n) {
        if (stored.b[i].count)
            rc = collect_bucket(out, &stored.b[i]);
        i++;
    }
    while (!rc && additive && (i < stored.n || k < (size_t)nlive)) {
        int64_t key = i < stored.n ? stored.b[i].minute : INT64_MIN;
        if (k < (size_t)nlive && window_key(grain, live[k].minute) > key)
            key = window_key(grain, live[k].minute);
        tg_bucket b;
        memset(&b, 0, sizeof b);
        b.minute = key;
        if (i < stored.n && stored.b[i].minute == key)
            b = stored.b[i++];
        for (; !rc && k < (size_t)nlive && window_key(grain, live[k].minute) == key; k++)
            rc = bucket_add(&b, live[k].sum, live[k].count);
        if (!rc && b.count) /* a window whose events were all canceled has none */
            rc = collect_bucket(out, &b);
    }
    free(stored.b);
    free(live);
    if (rc == TG_ENOMEM)
        return tg_err_set(err, rc, NULL, NULL);
    if (rc == TG_EINVAL)
        return tg_err_set(err, TG_ESTORE, NULL, "Aggregate overflow.");
    return rc;
}

static int read_buckets(tg_service *svc, tg_store *s, const tg_meter *m, int64_t customer_seq,
                        int64_t from, int64_t to, int64_t grain, size_t max_windows,
                        bucket_vec *out, tg_err *err)
{
    bool stopped = false;
    int rc = read_buckets_once(svc, s, m, customer_seq, from, to, grain, max_windows, out,
                               &stopped, err);
    /* The early stop counted the pages' windows; if live cancellations emptied some, the
     * days read may hold fewer than needed, and older days must be read too. */
    if (!rc && stopped && out->n < max_windows) {
        out->n = 0;
        rc = read_buckets_once(svc, s, m, customer_seq, from, to, grain, 0, out, &stopped,
                               err);
    }
    return rc;
}

int tg_summary_list(tg_service *svc, const tg_scope *scope, const char *meter_id,
                    const char *customer_id, int64_t start, int64_t end, tg_window grouping,
                    int limit, int64_t after_start, int64_t before_start, tg_arena *a,
                    tg_summary **out, size_t *n, bool *has_more, tg_err *err)
{
    int rc = tg_summary_check_range(start, end, grouping, err);
    if (rc)
        return rc;
    tg_store *s;
    rc = reader_get(svc, &s, err);
    if (rc)
        return rc;
    tg_meter m;
    memset(&m, 0, sizeof m);
    if (!reg_get_by_id(svc, scope, meter_id, &m))
        rc = tg_err_set(err, TG_ENOTFOUND, "id", "No such billing meter: '%s'", meter_id);
    int64_t customer_seq = rc ? 0 : cust_find(svc, scope, customer_id, true);
    summary_ctx c;
    memset(&c, 0, sizeof c);
    c.grain = grouping == TG_WINDOW_NONE ? 0 : tg_window_seconds(grouping);
    c.range_start = start;
    c.range_end = end;
    c.formula = m.formula;
    int64_t from = start, to = end;
    if (c.grain) {
        if (after_start)
            to = after_start < to ? after_start : to;
        if (before_start >= to) /* (to <= INT64_MAX / 2: no overflow below) */
            from = to;
        else if (before_start)
            from = before_start + c.grain > from ? before_start + c.grain : from;
        if (!before_start)
            c.stop_at = (size_t)limit + 1;
    } else if (after_start || before_start) {
        from = to; /* the only window is the cursor itself: nothing before or after it */
    }
    bucket_vec buckets = {0};
    if (!rc && customer_seq && from < to)
        rc = read_buckets(svc, s, &m, customer_seq, from, to, c.grain, c.stop_at, &buckets,
                          err);
    reader_put(svc, s);
    for (size_t i = 0; !rc && i < buckets.n; i++) {
        rc = summary_add(&c, &buckets.b[i]);
        if (rc == 1) {
            rc = TG_OK;
            c.have = false; /* the open window is past the page */
            break;
        }
    }
    free(buckets.b);
    if (!rc)
        rc = summary_emit(&c);
    if (!rc && !c.grain && c.n == 0 && !after_start && !before_start) {
        /* Without grouping there is always exactly one summary, zero when nothing was used. */
        c.have = true;
        memset(&c.acc, 0, sizeof c.acc);
        rc = summary_emit(&c);
    }
    if (rc) {
        free(c.out);
        if (rc == TG_EINVAL)
            return tg_err_set(err, TG_ESTORE, NULL, "Aggregate overflow.");
        return rc == TG_ENOMEM ? tg_err_set(err, TG_ENOMEM, NULL, NULL) : rc;
    }
    /* c.out is newest first. For ending_before keep the `limit` windows nearest the cursor,
     * i.e. the oldest ones. */
    size_t first = 0;
    *has_more = c.n > (size_t)limit;
    if (*has_more && before_start)
        first = c.n - (size_t)limit;
    *n = *has_more ? (size_t)limit : c.n;
    *out = tg_arena_alloc(a, (*n ? *n : 1) * sizeof(tg_summary));
    if (!*out) {
        free(c.out);
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    }
    if (*n)
        memcpy(*out, c.out + first, *n * sizeof(tg_summary));
    free(c.out);
    return TG_OK;
}

int tg_usage_between(tg_service *svc, tg_store *s, const tg_scope *scope, const char *meter_id,
                     const char *customer_id, int64_t from, int64_t to, tg_dec *out,
                     int64_t *count, tg_err *err)
{
    *out = 0;
    if (count)
        *count = 0;
    from = tg_window_start(from, 60);
    to = tg_window_start(to, 60);
    if (from >= to)
        return TG_OK;
    tg_meter m;
    tg_err ignore = {0};
    if (s->ops->meter_get(s, scope, meter_id, &m, &ignore))
        return TG_ENOTFOUND;
    int64_t customer_seq = cust_find(svc, scope, customer_id, true);
    if (!customer_seq)
        return TG_OK;
    bucket_vec buckets = {0};
    int rc = read_buckets(svc, s, &m, customer_seq, from, to, 0, 0, &buckets, err);
    summary_ctx c;
    memset(&c, 0, sizeof c);
    c.range_start = from;
    c.range_end = to;
    c.formula = m.formula;
    for (size_t i = 0; !rc && i < buckets.n; i++)
        rc = summary_add(&c, &buckets.b[i]);
    free(buckets.b);
    if (!rc)
        rc = summary_emit(&c);
    if (!rc && c.n) {
        *out = c.out[0].value;
        if (count)
            *count = c.acc.count;
    }
    free(c.out);
    if (rc == TG_EINVAL)
        return tg_err_set(err, TG_ESTORE, NULL, "Aggregate overflow.");
    return rc == TG_ENOMEM ? tg_err_set(err, TG_ENOMEM, NULL, NULL) : rc;
}

/* ---------------------------------------------------------------- sessions, errors */

typedef struct session_arg {
    const tg_scope *scope;
    char hash[65];
    tg_session *ses;
} session_arg;

static int session_job(tg_store *s, void *arg, tg_err *err)
{
    session_arg *c = arg;
    return s->ops->session_put(s, c->scope, c->hash, c->ses, err);
}

int tg_session_create(tg_service *svc, const tg_scope *scope, const char *key, tg_session *out,
                      tg_err *err)
{
    memset(out, 0, sizeof *out);
    if (key)
        tg_sha256_hex(key, strlen(key), out->key_hash);
    if (tg_id_random(out->id, sizeof out->id, "mtrses_", 24) ||
        tg_id_random(out->token, sizeof out->token, "mes_tok_", 40))
        return tg_err_set(err, TG_ESTORE, NULL, "random generator failed");
    out->created = tg_service_now(svc);
    out->expires_at = out->created + 15 * 60;
    out->livemode = scope->livemode;
    session_arg c = {scope, "", out};
    tg_sha256_hex(out->token, strlen(out->token), c.hash);
    return write_job(svc, session_job, &c, NULL, err);
}

int tg_session_authenticate(tg_service *svc, const char *token, tg_scope *scope, tg_err *err)
{
    char hash[65];
    tg_sha256_hex(token, strlen(token), hash);
    int64_t expires = 0, now = tg_service_now(svc);
    int rc = TG_OK;
    if (!cred_cache_get(&svc->sessions, hash, now, scope, &expires)) {
        tg_store *s;
        if ((rc = reader_get(svc, &s, err)))
            return rc;
        tg_err lookup = {0};
        rc = s->ops->session_get(s, hash, scope, &expires, &lookup);
        reader_put(svc, s);
        if (rc && rc != TG_ENOTFOUND)
            return tg_err_set(err, rc, NULL, "%s", lookup.msg);
        if (!rc)
            cred_cache_put(&svc->sessions, hash, now, scope, expires);
    }
    if (rc == TG_ENOTFOUND || expires <= now)
        return tg_err_set(err, TG_ESESSION, NULL,
                          "The meter event session token is invalid or has expired; create a "
                          "new session.");
    return TG_OK;
}

int tg_meter_error_list(tg_service *svc, const tg_scope *scope, const char *meter_id,
                        const tg_page *page, tg_arena *a, tg_meter_error **out, size_t *n,
                        bool *has_more, tg_err *err)
{
    tg_store *s;
    int rc = reader_get(svc, &s, err);
    if (rc)
        return rc;
    rc = s->ops->meter_error_list(s, scope, meter_id, page, a, out, n, err);
    reader_put(svc, s);
    if (rc)
        return rc;
    page_finish(*out, sizeof **out, n, page, has_more);
    return TG_OK;
}

/* ---------------------------------------------------------------- idempotency */

static void idem_key(char *out, size_t size, const tg_scope *scope, const char *key)
{
    snprintf(out, size, "%s\x1f%d\x1f%s", scope->account, scope->livemode, key);
}

/* Finds the entry for k; *prev_next receives the link that points at it. Caller holds idem_mu. */
static idem_entry *idem_find(tg_service *svc, const char *k, idem_entry ***link_out)
{
    idem_entry **link = &svc->idem[fnv(k, 1469598103934665603ULL) & (IDEM_BUCKETS - 1)];
    while (*link && strcmp((*link)->key, k) != 0)
        link = &(*link)->next;
    if (link_out)
        *link_out = link;
    return *link;
}

int tg_idem_claim(tg_service *svc, const tg_scope *scope, const char *key,
                  const char *request_hash, tg_arena *a, bool *replay, tg_idem *stored,
                  tg_err *err)
{
    char k[512];
    idem_key(k, sizeof k, scope, key);
    *replay = false;
    int rc = TG_OK;
    pthread_mutex_lock(&svc->idem_mu);
    idem_entry **link;
    idem_entry *e = idem_find(svc, k, &link);
    if (e) {
        if (strcmp(e->request_hash, request_hash) != 0)
            rc = TG_EIDEMMISMATCH;
        else if (!e->done)
            rc = TG_EIDEMBUSY;
        else {
            *replay = true;
            snprintf(stored->request_hash, sizeof stored->request_hash, "%s", e->request_hash);
            stored->status = e->status;
            stored->body = tg_arena_strndup(a, e->body, e->body_len);
            stored->body_len = e->body_len;
            if (!stored->body)
                rc = TG_ENOMEM;
        }
        pthread_mutex_unlock(&svc->idem_mu);
        goto verdict;
    }
    /* Not in memory: register the claim first (so a concurrent twin sees it), then look in
     * the store for a response from an earlier run. */
    e = calloc(1, sizeof *e);
    if (!e) {
        pthread_mutex_unlock(&svc->idem_mu);
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    }
    snprintf(e->key, sizeof e->key, "%s", k);
    snprintf(e->request_hash, sizeof e->request_hash, "%s", request_hash);
    *link = e;
    pthread_mutex_unlock(&svc->idem_mu);

    tg_store *s;
    rc = reader_get(svc, &s, err);
    if (rc) {
        tg_idem_finish(svc, scope, key, request_hash, 0, NULL, 0, false);
        return rc;
    }
    tg_err lookup = {0};
    rc = s->ops->idem_get(s, scope, key, a, stored, &lookup);
    reader_put(svc, s);
    if (rc == TG_ENOTFOUND)
        return TG_OK; /* a new request: the claim stays until tg_idem_finish */
    bool committed = !rc && stored->status == TG_IDEM_COMMITTED &&
                     strcmp(stored->request_hash, request_hash) == 0;
    if (committed) {
        *replay = true; /* the claim stays: the caller answers, then finishes */
        return TG_OK;
    }
    tg_idem_finish(svc, scope, key, request_hash, 0, NULL, 0, false);
    if (rc)
        return tg_err_set(err, rc, NULL, "%s", lookup.msg);
    if (strcmp(stored->request_hash, request_hash) != 0)
        rc = TG_EIDEMMISMATCH;
    else
        *replay = true;

verdict:
    if (rc == TG_EIDEMMISMATCH)
        return tg_err_set(err, rc, NULL,
                          "Keys for idempotent requests can only be used with the same "
                          "parameters they were first used with. Try using a key other than "
                          "'%s' if you meant to execute a different request.",
                          key);
    if (rc == TG_EIDEMBUSY)
        return tg_err_set(err, rc, NULL,
                          "The idempotency key provided is currently being used in another "
                          "request.");
    if (rc)
        return tg_err_set(err, rc, NULL, NULL);
    return TG_OK;
}

typedef struct idem_arg {
    tg_service *svc;
    tg_scope scope;
    char key[256];
    tg_idem rec;
    char *body; /* owned; rec.body points here */
} idem_arg;

static int idem_put_job(tg_store *s, void *arg, tg_err *err)
{
    idem_arg *c = arg;
    return s->ops->idem_put(s, &c->scope, c->key, &c->rec, err);
}

/* Once the response row is committed, the in-memory copy is no longer needed: the store
 * answers from now on. If the batch failed, the copy stays and answers retries until a
 * restart (a rare loss of the disk; kept rather than let a retry run the request again). */
static void idem_stored(void *arg, int rc)
{
    idem_arg *c = arg;
    if (rc) {
        tg_log(TG_LOG_WARN, "idempotency record for %s not stored; kept in memory", c->key);
        free(c->body);
        return;
    }
    char k[512];
    idem_key(k, sizeof k, &c->scope, c->key);
    pthread_mutex_lock(&c->svc->idem_mu);
    idem_entry **link;
    idem_entry *e = idem_find(c->svc, k, &link);
    if (e && e->done) {
        *link = e->next;
        free(e->body);
        free(e);
    }
    pthread_mutex_unlock(&c->svc->idem_mu);
    free(c->body);
}

void tg_idem_finish(tg_service *svc, const tg_scope *scope, const char *key,
                    const char *request_hash, int status, const char *body, size_t body_len,
                    bool store)
{
    char k[512];
    idem_key(k, sizeof k, scope, key);
    idem_arg *arg = NULL;
    tg_job *job = NULL;
    char *copy = NULL;
    if (store) {
        arg = calloc(1, sizeof *arg);
        job = calloc(1, sizeof *job);
        copy = malloc(body_len + 1);
        char *copy2 = malloc(body_len + 1);
        if (!arg || !job || !copy || !copy2) {
            free(arg), free(job), free(copy), free(copy2);
            store = false;
            arg = NULL, job = NULL, copy = NULL;
        } else {
            memcpy(copy, body, body_len);
            copy[body_len] = '\0';
            memcpy(copy2, body, body_len);
            copy2[body_len] = '\0';
            arg->svc = svc;
            arg->scope = *scope;
            snprintf(arg->key, sizeof arg->key, "%s", key);
            snprintf(arg->rec.request_hash, sizeof arg->rec.request_hash, "%s", request_hash);
            arg->rec.status = status;
            arg->rec.body = copy2;
            arg->rec.body_len = body_len;
            arg->rec.created = tg_service_now(svc);
            arg->body = copy2;
            job->fn = idem_put_job;
            job->arg = arg;
            job->on_done = idem_stored;
        }
    }
    pthread_mutex_lock(&svc->idem_mu);
    idem_entry **link;
    idem_entry *e = idem_find(svc, k, &link);
    if (e && store) {
        e->done = true;
        e->status = status;
        e->body = copy;
        e->body_len = body_len;
        copy = NULL;
    } else if (e) {
        *link = e->next;
        free(e->body);
        free(e);
    }
    pthread_mutex_unlock(&svc->idem_mu);
    free(copy); /* not kept in memory: there was no claim */
    if (store && tg_writer_post(svc->writer, job)) {
        /* The writer is stopping: the answer stays in memory until the process ends (a
         * retry after the restart runs again; meter events then meet their identifiers). */
        tg_log(TG_LOG_WARN, "idempotency record for %s kept in memory only", key);
        free(arg->body);
        free(arg);
        free(job);
    }
}
