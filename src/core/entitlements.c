/* entitlements.c -- features, product features, active entitlements and the in-memory check
 * (see entitlements.h).
 *
 * Storage: features and product features are billing objects; each customer's current grants
 * are one `entitlements` object (id = the customer), rewritten by ent_refresh whenever
 * something that decides them changes (a subscription saved by the billing engine, a product
 * feature attached or detached). When the set of features changes, the refresh records an
 * `entitlements.active_entitlement_summary.updated` event in the same transaction.
 *
 * The registry: per customer, its grants, and for each grant with a limit a usage counter.
 * ent_refresh (a writer job) reads the committed usage of the period and installs the grant;
 * from then on the writer adds every committed batch's deltas for that (meter, customer) to
 * the counter before the batch's submitters are answered (tg_ent_on_usage, called from the
 * writer's publish step). Events of the batch that runs the refresh are not in the committed
 * usage it reads and are added by that batch's publish, so nothing is counted twice or
 * missed. A check is then a lookup under one mutex. A job that fails drops the entry it
 * wrote, and a batch that fails to commit clears the registry (the next check reloads its
 * customer through a writer job).
 *
 * Usage sessions (stored as `usage_session` objects) hold part of a limit: a grant is a
 * reservation, kept per meter, since every hard limit on a meter counts its events whatever
 * the feature. A heartbeat is a writer job that computes the units due, caps them at the grant
 * and at what the limits leave, and stores them as pending before the meter event (identifier:
 * session and sequence number) is recorded; a later job clears them. Start-up records what a
 * crash left pending. Pending units are held until cleared, a reservation until the heartbeats
 * stop. A heartbeat whose time spans a period renewal records the time before it against the
 * ended period's limit (kept in the registry for that), counting only what other sessions
 * hold in that period. docs/DESIGN.md, "Entitlements and caps", has the reasoning.
 */
#include "core/entitlements.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/str.h"
#include "core/billing_internal.h"
#include "core/metadata.h"

#define KIND_FEATURE "feature"
#define KIND_PRODUCT_FEATURE "product_feature"
#define KIND_ENTITLEMENTS "entitlements"
#define KIND_USAGE_SESSION "usage_session"
#define ENT_BUCKETS 4096

typedef struct ent_grant {
    tg_grant g;
    int64_t meter_seq; /* limited grants */
    char event_name[TG_NAME_MAX + 1]; /* limited grants: the event their meter counts */
    tg_dec used;       /* usage of the period, committed */
} ent_grant;

/* What checks need of a customer's live usage session: what it holds of the limits counting
 * its meter (every limit on that meter, whatever the feature: they all count its events). Its
 * reservation lapses when its heartbeats stop longer than its timeout; its pending units
 * (committed, not yet recorded) are held until cleared, whatever the time. A session that
 * holds nothing any more is dropped from the list. */
typedef struct ent_session {
    char id[TG_ID_MAX];
    char event_name[TG_NAME_MAX + 1];
    int64_t last_heartbeat, timeout;
    int64_t reserved; /* units granted ahead, while the session is active */
    int64_t pending;  /* units being recorded (stamped at last_heartbeat) */
    int64_t covered;  /* the time its recorded units reach (its reservation runs from there) */
    int64_t unit;     /* seconds per unit: 1, or 60 for minute_up */
    struct ent_session *next;
} ent_session;

typedef struct ent_node {
    tg_scope scope;
    char customer[TG_ID_MAX];
    int64_t customer_seq;
    ent_grant *grants;
    size_t n;
    /* Limited grants whose period has ended, the latest of each feature, with their usage:
     * the limits of the time a call's heartbeat finds before a period boundary (its seconds
     * there were reserved under them). Kept while the customer stays in the registry. */
    ent_grant *prev;
    size_t nprev;
    ent_session *sessions;
    struct ent_node *next, *next_by_seq;
} ent_node;

struct tg_ent_registry {
    pthread_mutex_t mu;
    ent_node *by_id[ENT_BUCKETS];
    ent_node *by_seq[ENT_BUCKETS];
    atomic_int limited; /* grants with a limit: 0 lets the writer's hook return at once */
};

static uint64_t hash_str(const char *s, uint64_t h)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static size_t slot_id(const tg_scope *scope, const char *customer)
{
    uint64_t h = hash_str(scope->account, 1469598103934665603ULL) ^ (uint64_t)scope->livemode;
    return hash_str(customer, h) % ENT_BUCKETS;
}

static size_t slot_seq(int64_t seq)
{
    return (size_t)((uint64_t)seq * 0x9E3779B97F4A7C15ULL >> 52) % ENT_BUCKETS;
}

static bool same_scope(const tg_scope *a, const tg_scope *b)
{
    return a->livemode == b->livemode && strcmp(a->account, b->account) == 0;
}

struct tg_ent_registry *tg_ent_registry_new(void)
{
    struct tg_ent_registry *r = calloc(1, sizeof *r);
    if (r)
        pthread_mutex_init(&r->mu, NULL);
    return r;
}

static size_t count_limited(const ent_grant *g, size_t n);

static void node_free(ent_node *n)
{
    for (ent_session *s = n->sessions, *sn; s; s = sn) {
        sn = s->next;
        free(s);
    }
    free(n->grants);
    free(n->prev);
    free(n);
}

static void registry_clear_locked(struct tg_ent_registry *r)
{
    for (size_t i = 0; i < ENT_BUCKETS; i++) {
        for (ent_node *n = r->by_id[i], *next; n; n = next) {
            next = n->next;
            node_free(n);
        }
        r->by_id[i] = r->by_seq[i] = NULL;
    }
    atomic_store(&r->limited, 0);
}

void tg_ent_registry_clear(struct tg_ent_registry *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    registry_clear_locked(r);
    pthread_mutex_unlock(&r->mu);
}

void tg_ent_registry_forget(struct tg_ent_registry *r, const tg_scope *scope,
                            const char *customer)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    ent_node **p = &r->by_id[slot_id(scope, customer)];
    while (*p && !(strcmp((*p)->customer, customer) == 0 && same_scope(&(*p)->scope, scope)))
        p = &(*p)->next;
    ent_node *node = *p;
    if (node) {
        *p = node->next;
        ent_node **q = &r->by_seq[slot_seq(node->customer_seq)];
        while (*q != node)
            q = &(*q)->next_by_seq;
        *q = node->next_by_seq;
        atomic_fetch_sub(&r->limited, (int)(count_limited(node->grants, node->n) +
                                            count_limited(node->prev, node->nprev)));
        node_free(node);
    }
    pthread_mutex_unlock(&r->mu);
}

void tg_ent_registry_free(struct tg_ent_registry *r)
{
    if (!r)
        return;
    registry_clear_locked(r);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

static ent_node *find_locked(struct tg_ent_registry *r, const tg_scope *scope,
                             const char *customer)
{
    for (ent_node *n = r->by_id[slot_id(scope, customer)]; n; n = n->next)
        if (strcmp(n->customer, customer) == 0 && same_scope(&n->scope, scope))
            return n;
    return NULL;
}

static size_t count_limited(const ent_grant *g, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += g[i].g.limit.set;
    return k;
}

/* Has a limited grant's period ended: by now, or by the start of the period of the grant
 * replacing it (a renewal is installed at once, whatever the time of the job)? */
static bool period_ended(const ent_grant *g, const ent_grant *grants, size_t n, int64_t now)
{
    if (!g->g.limit.set)
        return false;
    for (size_t i = 0; i < n && g->g.period_end > now; i++)
        if (strcmp(grants[i].g.feature, g->g.feature) == 0)
            now = grants[i].g.period_start;
    return g->g.period_end <= now;
}

/* The grants of node whose period has ended (limited ones, with their usage) as grants (the
 * new ones) replace them, into its ended-period list, each replacing the entry of its
 * feature there. Call with r->mu held. */
static void keep_ended_locked(ent_node *node, const ent_grant *grants, size_t n, int64_t now)
{
    size_t k = 0;
    for (size_t i = 0; i < node->n; i++)
        k += period_ended(&node->grants[i], grants, n, now);
    if (!k)
        return;
    ent_grant *prev = realloc(node->prev, (node->nprev + k) * sizeof *prev);
    if (!prev)
        return; /* out of memory: those seconds are held to their reservations only */
    node->prev = prev;
    for (size_t i = 0; i < node->n; i++) {
        const ent_grant *g = &node->grants[i];
        if (!period_ended(g, grants, n, now))
            continue;
        size_t j = 0;
        while (j < node->nprev && strcmp(prev[j].g.feature, g->g.feature) != 0)
            j++;
        if (j == node->nprev)
            node->nprev++;
        prev[j] = *g;
    }
}

/* Installs a customer's grants (their counters already read), replacing what was there. */
static int registry_put(struct tg_ent_registry *r, const tg_scope *scope, const char *customer,
                        int64_t customer_seq, const ent_grant *grants, size_t n, int64_t now)
{
    ent_grant *copy = NULL;
    if (n && !(copy = malloc(n * sizeof *copy)))
        return TG_ENOMEM;
    if (n)
        memcpy(copy, grants, n * sizeof *copy);
    pthread_mutex_lock(&r->mu);
    ent_node *node = find_locked(r, scope, customer);
    if (!node) {
        if (!(node = calloc(1, sizeof *node))) {
            pthread_mutex_unlock(&r->mu);
            free(copy);
            return TG_ENOMEM;
        }
        node->scope = *scope;
        tg_strlcpy(node->customer, customer, sizeof node->customer);
        node->customer_seq = customer_seq;
        size_t k = slot_id(scope, customer);
        node->next = r->by_id[k];
        r->by_id[k] = node;
        k = slot_seq(customer_seq);
        node->next_by_seq = r->by_seq[k];
        r->by_seq[k] = node;
    }
    atomic_fetch_sub(&r->limited, (int)(count_limited(node->grants, node->n) +
                                        count_limited(node->prev, node->nprev)));
    keep_ended_locked(node, copy, n, now);
    free(node->grants);
    node->grants = copy;
    node->n = n;
    atomic_fetch_add(&r->limited, (int)(count_limited(copy, n) +
                                        count_limited(node->prev, node->nprev)));
    pthread_mutex_unlock(&r->mu);
    return TG_OK;
}

/* A time moved back to its minute. */
static int64_t minute_of(int64_t t)
{
    return t - (t % 60 + 60) % 60;
}

/* The minutes a grant's limit counts, [count_from, count_to): those its period's invoice
 * bills. Usage is kept per minute, and billing gives a minute holding a period bound to the
 * interval it starts in (billing.c, minute_up): the period ending inside a minute bills that
 * whole minute, and the renewal after it starts with the next one. A subscription's first
 * period counts the minute it starts in, as its invoice does; a later one (see
 * sub_start_minute) starts with the minute after its start's. Counting the last minute in the
 * next period instead let usage past a hard cap through for the last seconds of every period
 * that does not end on a whole minute. */
static int64_t count_from(const tg_grant *g)
{
    return g->start_minute == TG_GRANT_START_PREVIOUS ? minute_of(g->period_start + 59)
                                                      : minute_of(g->period_start);
}

static int64_t count_to(const tg_grant *g)
{
    return minute_of(g->period_end + 59);
}

static void count_usage(ent_grant *g, size_t n, int64_t meter_seq, int64_t minute, tg_dec sum)
{
    for (size_t i = 0; i < n; i++)
        if (g[i].g.limit.set && g[i].meter_seq == meter_seq &&
            minute >= count_from(&g[i].g) && minute < count_to(&g[i].g))
            tg_dec_add(g[i].used, sum, &g[i].used);
}

void tg_ent_on_usage(void *ctx, int64_t meter_seq, int64_t customer_seq, int64_t minute,
                     tg_dec sum)
{
    struct tg_ent_registry *r = ctx;
    if (!r || atomic_load_explicit(&r->limited, memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&r->mu);
    for (ent_node *n = r->by_seq[slot_seq(customer_seq)]; n; n = n->next_by_seq) {
        if (n->customer_seq != customer_seq)
            continue;
        count_usage(n->grants, n->n, meter_seq, minute, sum);
        count_usage(n->prev, n->nprev, meter_seq, minute, sum);
    }
    pthread_mutex_unlock(&r->mu);
}

static struct tg_ent_registry *registry(tg_service *svc)
{
    return *tg_service_entitlements(svc);
}

/* ---------------------------------------------------------------- objects */

static int decode_feature(const void *d, size_t n, tg_arena *a, void *out)
{
    return tg_feature_decode(d, n, a, out);
}
static int decode_product_feature(const void *d, size_t n, tg_arena *a, void *out)
{
    return tg_product_feature_decode(d, n, a, out);
}
static int save_feature(bctx *c, const tg_feature *f)
{
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_feature_encode(&b, f);
    tg_obj o = {.kind = KIND_FEATURE, .created = f->created, .active = f->active,
                .lookup = f->lookup_key};
    tg_strlcpy(o.id, f->id, sizeof o.id);
    return bill_save(c, &o, &b);
}

static int load_feature(bctx *c, const char *id, const char *param, tg_feature *out)
{
    return bill_load(c, KIND_FEATURE, id, param, decode_feature, out);
}

/* ---------------------------------------------------------------- computing grants */

typedef struct grant_set {
    tg_grant *g;
    size_t n, cap;
    const tg_subscription *sub; /* the subscription being read */
} grant_set;

/* Which period the minute holding the start of s's current period counts in: its own when it
 * is s's first, the one before when it follows one of s's (a renewal, or the paid period
 * after a trial or a pause), whose line billed that minute (billing.c, minute_up and
 * paid_from). */
static int sub_start_minute(const tg_subscription *s)
{
    return s->period_start > s->start_date ? TG_GRANT_START_PREVIOUS : TG_GRANT_START_OWN;
}

static int grant_add(bctx *c, void *item, void *arg)
{
    tg_product_feature *pf = item;
    grant_set *gs = arg;
    tg_feature f;
    int rc = load_feature(c, pf->feature.id, NULL, &f);
    if (rc == TG_ENOTFOUND) {
        tg_err_clear(c->err);
        return TG_OK;
    }
    if (rc)
        return rc;
    for (size_t i = 0; i < gs->n; i++) {
        tg_grant *g = &gs->g[i];
        if (strcmp(g->feature, f.id) != 0)
            continue;
        /* The same feature from two products: the larger limit, counted over the period of
         * the subscription that grants it; no limit beats any. */
        if (g->limit.set && (!pf->limit.set || (pf->limit.quantity > g->limit.quantity))) {
            g->limit = pf->limit;
            g->period_start = gs->sub->period_start;
            g->period_end = gs->sub->period_end;
            g->start_minute = sub_start_minute(gs->sub);
        }
        return TG_OK;
    }
    if (!(gs->g = bill_arena_room(c, gs->g, gs->n, &gs->cap, sizeof *gs->g)))
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    tg_grant *g = &gs->g[gs->n++];
    memset(g, 0, sizeof *g);
    tg_strlcpy(g->feature, f.id, sizeof g->feature);
    tg_strlcpy(g->lookup_key, f.lookup_key, sizeof g->lookup_key);
    g->limit = pf->limit;
    g->period_start = gs->sub->period_start;
    g->period_end = gs->sub->period_end;
    g->start_minute = sub_start_minute(gs->sub);
    return TG_OK;
}

static int grants_of_sub(bctx *c, void *item, void *arg)
{
    tg_subscription *s = item;
    grant_set *gs = arg;
    if (s->status != TG_SUB_TRIALING && s->status != TG_SUB_ACTIVE &&
        s->status != TG_SUB_PAST_DUE)
        return TG_OK;
    gs->sub = s;
    for (size_t i = 0; i < s->nitems; i++) {
        tg_obj_filter f = {.parent = s->items[i].price.product, .active = -1};
        int rc = bill_each(c, KIND_PRODUCT_FEATURE, &f, decode_product_feature,
                             sizeof(tg_product_feature), grant_add, gs);
        if (rc)
            return rc;
    }
    return TG_OK;
}

static bool same_features(const tg_grant *a, size_t na, const tg_grant *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++) {
        bool found = false;
        for (size_t k = 0; k < nb && !found; k++)
            found = strcmp(a[i].feature, b[k].feature) == 0;
        if (!found)
            return false;
    }
    return true;
}

static void entitlement_id(const char *feature, const char *customer, char *out, size_t cap)
{
    snprintf(out, cap, "ent_%s_%s", feature + 5, customer + 4);
}

static int summary_of(bctx *c, const char *customer, const tg_grant *g, size_t n,
                      tg_entitlement_summary *s)
{
    memset(s, 0, sizeof *s);
    tg_strlcpy(s->customer, customer, sizeof s->customer);
    if (!n)
        return TG_OK;
    if (!(s->items = tg_arena_alloc(c->a, n * sizeof *s->items)))
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        tg_active_entitlement *e = &s->items[i];
        memset(e, 0, sizeof *e);
        entitlement_id(g[i].feature, customer, e->id, sizeof e->id);
        tg_strlcpy(e->feature, g[i].feature, sizeof e->feature);
        tg_strlcpy(e->lookup_key, g[i].lookup_key, sizeof e->lookup_key);
        e->livemode = c->scope->livemode;
    }
    s->n = n;
    return TG_OK;
}

/* The customer's stored grants (none when never computed). */
static int load_grants(bctx *c, const char *customer, tg_grant **g, size_t *n)
{
    tg_obj o;
    tg_err ignore = {0};
    *g = NULL;
    *n = 0;
    int rc = c->s->ops->obj_get(c->s, c->scope, KIND_ENTITLEMENTS, customer, c->a, &o, &ignore);
    if (rc == TG_ENOTFOUND)
        return TG_OK;
    if (rc)
        return tg_err_set(c->err, rc, NULL, "%s", ignore.msg);
    if (tg_grants_decode(o.body, o.len, c->a, g, n) < 0)
        return tg_err_set(c->err, TG_ESTORE, NULL, "Corrupt entitlements of %s.", customer);
    return TG_OK;
}

/* Notes that the job wrote customer's registry entry, so that a failure of the job drops it
 * (see bill_write_job); if the job wrote several customers' entries, a failure drops them all. */
static void note_installed(bctx *c, const char *customer)
{
    if (c->installed_many)
        return;
    if (c->installed_for) {
        c->installed_many = strcmp(c->installed_for, customer) != 0 ||
                            c->installed_scope.livemode != c->scope->livemode ||
                            strcmp(c->installed_scope.account, c->scope->account) != 0;
    } else if ((c->installed_for = tg_arena_strdup(c->a, customer))) {
        c->installed_scope = *c->scope;
    } else {
        c->installed_many = true; /* out of memory: drop them all on failure */
    }
}

static int load_sessions(bctx *c, const char *customer);

/* Reads the committed usage of each limited grant and installs the customer in the registry;
 * a customer the registry did not hold comes with the holds of its stored live sessions,
 * whichever job installs it first (a check, a session, or a refresh after a restart or after
 * a failed batch cleared the registry). Runs inside a writer job (see the top comment). */
static int install(bctx *c, const char *customer, int64_t customer_seq, const tg_grant *g,
                   size_t n)
{
    ent_grant *eg = n ? tg_arena_alloc(c->a, n * sizeof *eg) : NULL;
    if (n && !eg)
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        memset(&eg[i], 0, sizeof eg[i]);
        eg[i].g = g[i];
        if (!g[i].limit.set)
            continue;
        tg_meter m;
        tg_err ignore = {0};
        if (c->s->ops->meter_get(c->s, c->scope, g[i].limit.meter, &m, &ignore) == TG_OK) {
            eg[i].meter_seq = m.seq;
            tg_strlcpy(eg[i].event_name, m.event_name, sizeof eg[i].event_name);
        }
        int rc = tg_usage_between(c->svc, c->s, c->scope, g[i].limit.meter, customer,
                                  count_from(&g[i]), count_to(&g[i]), &eg[i].used, NULL, c->err);
        if (rc && rc != TG_ENOTFOUND)
            return rc;
    }
    struct tg_ent_registry *r = registry(c->svc);
    pthread_mutex_lock(&r->mu);
    bool present = find_locked(r, c->scope, customer) != NULL;
    pthread_mutex_unlock(&r->mu);
    note_installed(c, customer);
    if (registry_put(r, c->scope, customer, customer_seq, eg, n,
                     tg_customer_now(c->svc, c->scope, customer)))
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    return present ? TG_OK : load_sessions(c, customer);
}

int ent_refresh(bctx *c, const char *customer)
{
    int64_t customer_seq = tg_customer_seq(c->svc, c->scope, customer);
    grant_set gs = {0};
    tg_obj_filter f = {.customer = customer, .active = 1};
    int rc = bill_each(c, KIND_SUB, &f, bill_decode_sub, sizeof(tg_subscription), grants_of_sub,
                         &gs);
    tg_grant *old;
    size_t nold;
    if (!rc)
        rc = load_grants(c, customer, &old, &nold);
    if (rc)
        return rc;
    tg_buf b, ob;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_buf_init(&ob, TG_RECORD_MAX);
    tg_grants_encode(&b, gs.g, gs.n);
    tg_grants_encode(&ob, old, nold);
    bool changed = b.len != ob.len || (b.len && memcmp(b.data, ob.data, b.len) != 0);
    tg_buf_free(&ob);
    if (changed) {
        tg_obj o = {.kind = KIND_ENTITLEMENTS, .created = c->now, .active = true,
                    .customer = customer};
        tg_strlcpy(o.id, customer, sizeof o.id);
        if ((rc = bill_save(c, &o, &b)))
            return rc;
    } else {
        tg_buf_free(&b);
    }
    if (!same_features(gs.g, gs.n, old, nold)) {
        tg_entitlement_summary s;
        if ((rc = summary_of(c, customer, gs.g, gs.n, &s)) ||
            (rc = bill_emit(c, "entitlements.active_entitlement_summary.updated",
                            TG_OBJ_ENTITLEMENT_SUMMARY, &s)))
            return rc;
    }
    if (!customer_seq)
        return TG_OK;
    return install(c, customer, customer_seq, gs.g, gs.n);
}

/* Refreshes every customer with a live subscription on product (its features changed). */
static int refresh_sub_customer(bctx *c, void *item, void *arg)
{
    (void)arg;
    return ent_refresh(c, ((tg_subscription *)item)->customer);
}

static int refresh_product(bctx *c, const char *product)
{
    char tag[TG_ID_MAX + 16];
    snprintf(tag, sizeof tag, " product=%s ", product);
    const char *tags[1] = {tag};
    tg_obj_filter f = {.active = 1, .tags = tags, .ntags = 1};
    return bill_each(c, KIND_SUB, &f, bill_decode_sub, sizeof(tg_subscription),
                       refresh_sub_customer, NULL);
}

/* ---------------------------------------------------------------- features */

typedef struct feature_args {
    const char *id, *name, *lookup_key, *product, *feature;
    int active;
    bool metadata_clear;
    const tg_metadata *metadata;
    const tg_usage_limit *limit;
    int archived;
    const tg_page *page;
    void *out;
    size_t *n;
    bool *has_more;
} feature_args;

static int lookup_key_free(bctx *c, const char *key)
{
    tg_obj *rows;
    size_t n;
    tg_page page = {.limit = 1};
    const char *keys[1] = {key};
    tg_obj_filter f = {.active = 1, .lookup_any = keys, .nlookup = 1};
    int rc = c->s->ops->obj_list(c->s, c->scope, KIND_FEATURE, &f, &page, c->a, &rows, &n,
                                 c->err);
    if (!rc && n)
        return tg_err_set(c->err, TG_EEXISTS, "lookup_key",
                          "An active feature (%s) already uses the lookup key '%s'; archive it "
                          "first.", rows[0].id, key);
    return rc;
}

static int feature_create_fn(bctx *c, void *arg)
{
    feature_args *fa = arg;
    tg_feature *f = fa->out;
    memset(f, 0, sizeof *f);
    int rc = lookup_key_free(c, fa->lookup_key);
    if (!rc)
        rc = bill_new_id(c, f->id, "feat_");
    if (rc)
        return rc;
    f->created = c->now;
    f->livemode = c->scope->livemode;
    f->active = true;
    f->name = fa->name;
    tg_strlcpy(f->lookup_key, fa->lookup_key, sizeof f->lookup_key);
    tg_metadata none = {0};
    if (tg_metadata_apply(&none, false, fa->metadata, c->a, &f->metadata))
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    return save_feature(c, f);
}

int tg_feature_create(tg_service *svc, const tg_scope *scope, const char *name,
                      const char *lookup_key, const tg_metadata *metadata, tg_arena *a,
                      tg_feature *out, tg_err *err)
{
    if (!name)
        return tg_err_set(err, TG_EMISSING, "name", "Missing required param: name.");
    if (!lookup_key)
        return tg_err_set(err, TG_EMISSING, "lookup_key", "Missing required param: lookup_key.");
    int rc = tg_metadata_validate(metadata, "metadata", err);
    if (rc)
        return rc;
    feature_args fa = {.name = name, .lookup_key = lookup_key, .metadata = metadata, .out = out};
    return bill_write(svc, scope, a, feature_create_fn, &fa, err);
}

static int feature_update_fn(bctx *c, void *arg)
{
    feature_args *fa = arg;
    tg_feature *f = fa->out;
    int rc = load_feature(c, fa->id, "id", f);
    if (rc)
        return rc;
    if (fa->active == 1 && !f->active)
        return tg_err_set(c->err, TG_ESTATE, "active", "An archived feature cannot be "
                                                       "unarchived.");
    if (fa->active == 0)
        f->active = false;
    if (fa->name)
        f->name = fa->name;
    rc = tg_metadata_merge(&f->metadata, fa->metadata_clear, fa->metadata, c->a, "metadata",
                           c->err);
    return rc ? rc : save_feature(c, f);
}

int tg_feature_update(tg_service *svc, const tg_scope *scope, const char *id, const char *name,
                      int active, bool metadata_clear, const tg_metadata *metadata, tg_arena *a,
                      tg_feature *out, tg_err *err)
{
    int rc = tg_metadata_validate(metadata, "metadata", err);
    if (rc)
        return rc;
    feature_args fa = {.id = id, .name = name, .active = active,
                       .metadata_clear = metadata_clear, .metadata = metadata, .out = out};
    return bill_write(svc, scope, a, feature_update_fn, &fa, err);
}

int tg_feature_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                        tg_feature *out, tg_err *err)
{
    return bill_retrieve(svc, scope, KIND_FEATURE, id, decode_feature, a, out, err);
}

static int feature_list_fn(bctx *c, void *arg)
{
    feature_args *fa = arg;
    tg_obj_filter f = {.active = fa->archived < 0 ? -1 : !fa->archived};
    if (fa->lookup_key) {
        f.lookup_any = &fa->lookup_key;
        f.nlookup = 1;
    }
    return bill_list(c, KIND_FEATURE, &f, fa->page, decode_feature, sizeof(tg_feature), fa->out,
                     fa->n, fa->has_more);
}

int tg_feature_list(tg_service *svc, const tg_scope *scope, int archived, const char *lookup_key,
                    const tg_page *page, tg_arena *a, tg_feature **out, size_t *n,
                    bool *has_more, tg_err *err)
{
    feature_args fa = {.archived = archived, .lookup_key = lookup_key, .page = page,
                       .out = out, .n = n, .has_more = has_more};
    return bill_read(svc, scope, a, feature_list_fn, &fa, err);
}

/* ---------------------------------------------------------------- product features */

static int product_feature_load(bctx *c, const char *product, const char *id,
                                tg_product_feature *pf)
{
    int rc = bill_load(c, KIND_PRODUCT_FEATURE, id, "id", decode_product_feature, pf);
    if (!rc && strcmp(pf->product, product) != 0)
        return tg_err_set(c->err, TG_ENOTFOUND, "id", "No such product feature: '%s'", id);
    if (!rc && (rc = load_feature(c, pf->feature.id, NULL, &pf->feature)) == TG_ENOTFOUND)
        tg_err_clear(c->err), rc = TG_OK;
    return rc;
}

/* Refuses a feature the product already has (any of its product features, every page). */
static int refuse_attached(bctx *c, void *item, void *arg)
{
    const tg_product_feature *other = item;
    const feature_args *fa = arg;
    if (strcmp(other->feature.id, fa->feature) == 0)
        return tg_err_set(c->err, TG_EEXISTS, "entitlement_feature",
                          "The feature %s is already attached to %s.", fa->feature, fa->product);
    return TG_OK;
}

static int attach_fn(bctx *c, void *arg)
{
    feature_args *fa = arg;
    tg_product_feature *pf = fa->out;
    memset(pf, 0, sizeof *pf);
    tg_product prod;
    int rc = bill_load_product(c, fa->product, "product", &prod);
    if (!rc)
        rc = load_feature(c, fa->feature, "entitlement_feature", &pf->feature);
    if (rc)
        return rc;
    if (!pf->feature.active)
        return tg_err_set(c->err, TG_ESTATE, "entitlement_feature",
                          "The feature %s is archived and cannot be attached.", fa->feature);
    tg_obj_filter f = {.parent = fa->product, .active = -1};
    if ((rc = bill_each(c, KIND_PRODUCT_FEATURE, &f, decode_product_feature,
                          sizeof(tg_product_feature), refuse_attached, fa)))
        return rc;
    if (fa->limit->set) {
        tg_meter m;
        tg_err ignore = {0};
        rc = c->s->ops->meter_get(c->s, c->scope, fa->limit->meter, &m, &ignore);
        if (rc == TG_ENOTFOUND)
            return tg_err_set(c->err, TG_ENOTFOUND, "usage_limit[meter]", "No such meter: '%s'",
                              fa->limit->meter);
        if (rc)
            return tg_err_set(c->err, rc, NULL, "%s", ignore.msg);
        if (m.formula == TG_FORMULA_LAST || m.event_time_window != TG_WINDOW_NONE)
            return tg_err_set(c->err, TG_EINVAL, "usage_limit[meter]",
                              "A usage limit needs a meter that adds up usage (formula sum or "
                              "count, no event_time_window).");
        pf->limit = *fa->limit;
    }
    if ((rc = bill_new_id(c, pf->id, "prodft_")))
        return rc;
    tg_strlcpy(pf->product, fa->product, sizeof pf->product);
    pf->created = c->now;
    pf->livemode = c->scope->livemode;
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_product_feature_encode(&b, pf);
    tg_obj o = {.kind = KIND_PRODUCT_FEATURE, .created = pf->created, .active = true,
                .parent = pf->product};
    tg_strlcpy(o.id, pf->id, sizeof o.id);
    if ((rc = bill_save(c, &o, &b)))
        return rc;
    /* Tollgate applies a product's feature changes to its subscribers at once. */
    return refresh_product(c, fa->product);
}

int tg_product_feature_attach(tg_service *svc, const tg_scope *scope, const char *product,
                              const char *feature, const tg_usage_limit *limit, tg_arena *a,
                              tg_product_feature *out, tg_err *err)
{
    if (!feature)
        return tg_err_set(err, TG_EMISSING, "entitlement_feature",
                          "Missing required param: entitlement_feature.");
    feature_args fa = {.product = product, .feature = feature, .limit = limit, .out = out};
    return bill_write(svc, scope, a, attach_fn, &fa, err);
}

static int pf_get_fn(bctx *c, void *arg)
{
    feature_args *fa = arg;
    return product_feature_load(c, fa->product, fa->id, fa->out);
}

int tg_product_feature_retrieve(tg_service *svc, const tg_scope *scope, const char *product,
                                const char *id, tg_arena *a, tg_product_feature *out,
                                tg_err *err)
{
    feature_args fa = {.product = product, .id = id, .out = out};
    return bill_read(svc, scope, a, pf_get_fn, &fa, err);
}

static int pf_list_fn(bctx *c, void *arg)
{
    feature_args *fa = arg;
    tg_product prod;
    int rc = bill_load_product(c, fa->product, "product", &prod);
    if (rc)
        return rc;
    tg_obj_filter f = {.parent = fa->product, .active = -1};
    rc = bill_list(c, KIND_PRODUCT_FEATURE, &f, fa->page, decode_product_feature,
                   sizeof(tg_product_feature), fa->out, fa->n, fa->has_more);
    tg_product_feature *items = *(tg_product_feature **)fa->out;
    for (size_t i = 0; !rc && i < *fa->n; i++)
        if ((rc = load_feature(c, items[i].feature.id, NULL, &items[i].feature)) ==
            TG_ENOTFOUND)
            tg_err_clear(c->err), rc = TG_OK;
    return rc;
}

int tg_product_feature_list(tg_service *svc, const tg_scope *scope, const char *product,
                            const tg_page *page, tg_arena *a, tg_product_feature **out,
                            size_t *n, bool *has_more, tg_err *err)
{
    feature_args fa = {.product = product, .page = page, .out = out, .n = n,
                       .has_more = has_more};
    return bill_read(svc, scope, a, pf_list_fn, &fa, err);
}

static int detach_fn(bctx *c, void *arg)
{
    feature_args *fa = arg;
    tg_product_feature pf;
    int rc = product_feature_load(c, fa->product, fa->id, &pf);
    if (!rc)
        rc = c->s->ops->obj_delete(c->s, c->scope, KIND_PRODUCT_FEATURE, fa->id, c->err);
    return rc ? rc : refresh_product(c, fa->product);
}

int tg_product_feature_detach(tg_service *svc, const tg_scope *scope, const char *product,
                              const char *id, tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    feature_args fa = {.product = product, .id = id};
    int rc = bill_write(svc, scope, &a, detach_fn, &fa, err);
    tg_arena_free(&a);
    return rc;
}

/* ---------------------------------------------------------------- active entitlements */

typedef struct ent_args {
    const char *customer, *id;
    const tg_page *page;
    tg_active_entitlement **out;
    size_t *n;
    bool *has_more;
} ent_args;

static int summary_read(bctx *c, const char *customer, tg_entitlement_summary *s)
{
    tg_customer cu;
    tg_err ignore = {0};
    int rc = c->s->ops->customer_get(c->s, c->scope, customer, c->a, &cu, &ignore);
    if (rc == TG_ENOTFOUND || (!rc && cu.deleted))
        return tg_err_set(c->err, TG_ENOTFOUND, "customer", "No such customer: '%s'", customer);
    if (rc)
        return tg_err_set(c->err, rc, NULL, "%s", ignore.msg);
    tg_grant *g;
    size_t n;
    rc = load_grants(c, customer, &g, &n);
    return rc ? rc : summary_of(c, customer, g, n, s);
}

static int ent_list_fn(bctx *c, void *arg)
{
    ent_args *ea = arg;
    tg_entitlement_summary s;
    int rc = summary_read(c, ea->customer, &s);
    if (rc)
        return rc;
    /* A customer has few entitlements: the page is cut from the whole list, in feature order
     * of the grants; cursors are entitlement ids. */
    size_t from = 0, to = s.n;
    const char *cursor = ea->page->starting_after ? ea->page->starting_after
                                                  : ea->page->ending_before;
    if (cursor) {
        size_t k = 0;
        while (k < s.n && strcmp(s.items[k].id, cursor) != 0)
            k++;
        if (k == s.n)
            return tg_err_set(c->err, TG_ENOTFOUND,
                              ea->page->starting_after ? "starting_after" : "ending_before",
                              "No such active entitlement: '%s'", cursor);
        if (ea->page->starting_after)
            from = k + 1;
        else
            to = k;
    }
    size_t limit = (size_t)ea->page->limit;
    *ea->has_more = to - from > limit;
    if (*ea->has_more) {
        if (ea->page->ending_before)
            from = to - limit;
        else
            to = from + limit;
    }
    *ea->out = s.items + from;
    *ea->n = to - from;
    return TG_OK;
}

int tg_active_entitlement_list(tg_service *svc, const tg_scope *scope, const char *customer,
                               const tg_page *page, tg_arena *a, tg_active_entitlement **out,
                               size_t *n, bool *has_more, tg_err *err)
{
    if (!customer)
        return tg_err_set(err, TG_EMISSING, "customer", "Missing required param: customer.");
    ent_args ea = {customer, NULL, page, out, n, has_more};
    return bill_read(svc, scope, a, ent_list_fn, &ea, err);
}

static int ent_get_fn(bctx *c, void *arg)
{
    ent_args *ea = arg;
    /* ent_<feature tail>_<customer tail> */
    const char *sep = strncmp(ea->id, "ent_", 4) == 0 ? strchr(ea->id + 4, '_') : NULL;
    char customer[TG_ID_MAX];
    if (!sep || strlen(sep + 1) + 5 > sizeof customer)
        return tg_err_set(c->err, TG_ENOTFOUND, "id", "No such active entitlement: '%s'",
                          ea->id);
    snprintf(customer, sizeof customer, "cus_%s", sep + 1);
    tg_entitlement_summary s;
    int rc = summary_read(c, customer, &s);
    if (rc == TG_ENOTFOUND)
        tg_err_clear(c->err);
    for (size_t i = 0; !rc && i < s.n; i++)
        if (strcmp(s.items[i].id, ea->id) == 0) {
            **ea->out = s.items[i];
            return TG_OK;
        }
    tg_err_clear(c->err);
    return tg_err_set(c->err, TG_ENOTFOUND, "id", "No such active entitlement: '%s'", ea->id);
}

int tg_active_entitlement_retrieve(tg_service *svc, const tg_scope *scope, const char *id,
                                   tg_arena *a, tg_active_entitlement *out, tg_err *err)
{
    ent_args ea = {NULL, id, NULL, &out, NULL, NULL};
    return bill_read(svc, scope, a, ent_get_fn, &ea, err);
}

/* ---------------------------------------------------------------- checks */

typedef struct load_args {
    const char *customer;
    int64_t customer_seq;
} load_args;

static int session_publish(bctx *c, const tg_usage_session *u);
static int session_save(bctx *c, const tg_usage_session *u);
static int decode_session(const void *d, size_t n, tg_arena *a, void *out);

/* A stored live session, into the registry; one whose heartbeats stopped longer than its
 * timeout ago (and with nothing to record) is stored as expired, as a heartbeat would, so
 * that later loads no longer read it. */
static int publish_stored_session(bctx *c, void *item, void *arg)
{
    (void)arg;
    tg_usage_session *u = item;
    if (u->status == TG_USESS_ACTIVE && !u->pending &&
        tg_customer_now(c->svc, c->scope, u->customer) - u->last_heartbeat >
            u->heartbeat_timeout) {
        u->status = TG_USESS_EXPIRED;
        u->ended_at = u->last_heartbeat;
        u->reserved = 0;
        return session_save(c, u);
    }
    return session_publish(c, u);
}

/* The holds of a customer's stored live sessions, into its registry node. */
static int load_sessions(bctx *c, const char *customer)
{
    tg_obj_filter f = {.customer = customer, .active = 1};
    return bill_each(c, KIND_USAGE_SESSION, &f, decode_session, sizeof(tg_usage_session),
                       publish_stored_session, NULL);
}

/* Installs a customer the registry does not hold yet, from its stored grants (install adds
 * the holds of its live usage sessions). */
static int load_fn(bctx *c, void *arg)
{
    load_args *la = arg;
    tg_grant *g;
    size_t n;
    int rc = load_grants(c, la->customer, &g, &n);
    if (rc)
        return rc;
    /* Grants stored before their start minute was recorded are made again from the
     * subscriptions (counting a renewal's first minute in the period before would
     * otherwise count it twice). */
    for (size_t i = 0; i < n; i++)
        if (!g[i].start_minute)
            return ent_refresh(c, la->customer);
    return install(c, la->customer, la->customer_seq, g, n);
}

/* Does a session still hold its reservation (its heartbeats have not stopped)? */
static bool reserving(const ent_session *s, int64_t now)
{
    return now - s->last_heartbeat <= s->timeout;
}

/* Units held by the live sessions recording event_name (whatever their feature: every limit
 * on that meter counts them), but `except`: their pending units, and the reservations of
 * those whose heartbeats did not stop longer than their timeout ago. */
static int64_t held_locked(const ent_node *node, const char *event_name, const char *except,
                           int64_t now)
{
    int64_t held = 0;
    for (const ent_session *s = node->sessions; s; s = s->next)
        if (strcmp(s->event_name, event_name) == 0 && (!except || strcmp(s->id, except) != 0))
            held += s->pending + (reserving(s, now) ? s->reserved : 0);
    return held;
}

/* Units held for a period that ended at `end` by the live sessions recording event_name, but
 * `except`: the pending units stamped before it, and the part of a reservation its session can
 * still record before it (none once the session has recorded its time up to `end`; a
 * reservation granted under a later period's limit is no part of the ended one). */
static int64_t held_before_locked(const ent_node *node, const char *event_name,
                                  const char *except, int64_t now, int64_t end)
{
    int64_t held = 0;
    for (const ent_session *s = node->sessions; s; s = s->next) {
        if (strcmp(s->event_name, event_name) != 0 || (except && strcmp(s->id, except) == 0))
            continue;
        if (s->last_heartbeat < end)
            held += s->pending;
        if (reserving(s, now) && s->covered < end) {
            int64_t before = (end - s->covered + s->unit - 1) / s->unit;
            held += s->reserved < before ? s->reserved : before;
        }
    }
    return held;
}

/* How much a grant's limit leaves (the limit less usage and holds on its meter). */
static tg_dec left_locked(const ent_node *node, const ent_grant *g, int64_t now)
{
    return g->g.limit.quantity - g->used -
           tg_dec_from_int(held_locked(node, g->event_name, NULL, now));
}

/* Rank of a grant's limit: a hard limit binds more than a soft one, a soft one more than none. */
static int bind_rank(const ent_grant *g)
{
    return !g->g.limit.set ? 0 : g->g.limit.hard ? 2 : 1;
}

/* The grant a check answers for when two granted features share a lookup key (an archived
 * feature and the one that took its key): the most restrictive, the one a usage session is
 * held to as well (sessions are bounded by every hard limit on their meter). */
static const ent_grant *key_grant_locked(const ent_node *node, const char *feature, int64_t now)
{
    const ent_grant *best = NULL;
    for (size_t i = 0; i < node->n; i++) {
        const ent_grant *g = &node->grants[i];
        if (strcmp(g->g.lookup_key, feature) != 0)
            continue;
        if (!best || bind_rank(g) > bind_rank(best) ||
            (bind_rank(g) == bind_rank(best) && bind_rank(g) &&
             left_locked(node, g, now) < left_locked(node, best, now)))
            best = g;
    }
    return best;
}

/* Fills out from the registry; false when the customer is not there. */
static bool check_locked(struct tg_ent_registry *r, const tg_scope *scope, const char *customer,
                         const char *feature, tg_dec want, int64_t now, tg_ent_check *out)
{
    ent_node *node = find_locked(r, scope, customer);
    if (!node)
        return false;
    memset(out, 0, sizeof *out);
    const ent_grant *g = key_grant_locked(node, feature, now);
    if (!g) {
        out->reason = "no_entitlement";
        return true;
    }
    out->entitled = true;
    if (!g->g.limit.set)
        return true;
    out->has_limit = true;
    tg_strlcpy(out->meter, g->g.limit.meter, sizeof out->meter);
    out->quantity = g->g.limit.quantity;
    out->used = g->used;
    out->hard = g->g.limit.hard;
    out->period_start = g->g.period_start;
    out->period_end = g->g.period_end;
    out->reserved = tg_dec_from_int(held_locked(node, g->event_name, NULL, now));
    tg_dec left = left_locked(node, g, now);
    out->remaining = left > 0 ? left : 0;
    bool over = want > 0 ? want > left : left <= 0;
    if (over) {
        out->reason = "limit_reached";
        out->entitled = !out->hard; /* a soft limit is reported, not enforced */
    }
    return true;
}

int tg_entitlement_check(tg_service *svc, const tg_scope *scope, const char *customer,
                         const char *feature, tg_dec want, tg_ent_check *out, tg_err *err)
{
    if (!customer)
        return tg_err_set(err, TG_EMISSING, "customer", "Missing required param: customer.");
    if (!feature)
        return tg_err_set(err, TG_EMISSING, "feature", "Missing required param: feature.");
    int64_t seq = tg_customer_seq(svc, scope, customer);
    if (!seq)
        return tg_err_set(err, TG_ENOTFOUND, "customer", "No such customer: '%s'", customer);
    struct tg_ent_registry *r = registry(svc);
    int64_t now = tg_customer_now(svc, scope, customer);
    for (int attempt = 0; attempt < 2; attempt++) {
        pthread_mutex_lock(&r->mu);
        bool found = check_locked(r, scope, customer, feature, want, now, out);
        pthread_mutex_unlock(&r->mu);
        if (found)
            return TG_OK;
        tg_arena a;
        tg_arena_init(&a, 0);
        load_args la = {customer, seq};
        int rc = bill_write(svc, scope, &a, load_fn, &la, err);
        tg_arena_free(&a);
        if (rc)
            return rc;
    }
    return tg_err_set(err, TG_ESTORE, NULL, "The entitlements of %s could not be loaded.",
                      customer);
}

/* ---------------------------------------------------------------- usage sessions */

#define SESSION_TIMEOUT_DEFAULT 30

static int decode_session(const void *d, size_t n, tg_arena *a, void *out)
{
    return tg_usage_session_decode(d, n, a, out);
}

static int64_t unit_seconds(const tg_usage_session *u)
{
    return u->minute_up ? 60 : 1;
}

/* The registry's node of a customer, installed from its stored grants when absent. Writer job
 * only. */
static int node_ensure(bctx *c, const char *customer, int64_t customer_seq)
{
    struct tg_ent_registry *r = registry(c->svc);
    pthread_mutex_lock(&r->mu);
    bool present = find_locked(r, c->scope, customer) != NULL;
    pthread_mutex_unlock(&r->mu);
    if (present)
        return TG_OK;
    load_args la = {customer, customer_seq};
    return load_fn(c, &la);
}

/* Mirrors a session's hold in the registry: adds it when new, drops it once it holds
 * nothing, and drops the customer's other sessions that hold nothing any more (nothing
 * pending, and their heartbeats stopped longer than their timeout ago), so the list keeps
 * live sessions only. */
static int session_publish(bctx *c, const tg_usage_session *u)
{
    note_installed(c, u->customer);
    int64_t now = tg_customer_now(c->svc, c->scope, u->customer);
    bool live = u->pending || (u->status == TG_USESS_ACTIVE &&
                               now - u->last_heartbeat <= u->heartbeat_timeout);
    struct tg_ent_registry *r = registry(c->svc);
    pthread_mutex_lock(&r->mu);
    ent_node *node = find_locked(r, c->scope, u->customer);
    ent_session *s = NULL;
    for (ent_session **p = node ? &node->sessions : NULL; p && *p;) {
        ent_session *e = *p;
        bool self = strcmp(e->id, u->id) == 0;
        if (self ? !live : !e->pending && !reserving(e, now)) {
            *p = e->next;
            free(e);
            continue;
        }
        if (self)
            s = e;
        p = &e->next;
    }
    if (node && !s && live && (s = calloc(1, sizeof *s))) {
        tg_strlcpy(s->id, u->id, sizeof s->id);
        tg_strlcpy(s->event_name, u->event_name, sizeof s->event_name);
        s->next = node->sessions;
        node->sessions = s;
    }
    if (s) {
        s->last_heartbeat = u->last_heartbeat;
        s->timeout = u->heartbeat_timeout;
        s->reserved = u->status == TG_USESS_ACTIVE ? u->reserved : 0;
        s->pending = u->pending;
        s->unit = unit_seconds(u);
        s->covered = u->created + u->recorded * s->unit;
    }
    pthread_mutex_unlock(&r->mu);
    /* No node: the registry was cleared meanwhile; the session comes back with its customer
     * (load_fn reads the live sessions from storage). */
    return !node || !live || s ? TG_OK : tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
}

size_t tg_ent_registry_sessions(struct tg_ent_registry *r)
{
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < ENT_BUCKETS; i++)
        for (const ent_node *node = r->by_id[i]; node; node = node->next)
            for (const ent_session *s = node->sessions; s; s = s->next)
                n++;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static int session_save(bctx *c, const tg_usage_session *u)
{
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_usage_session_encode(&b, u);
    /* Listed as live while it runs or has an event still to record (see
     * tg_usage_sessions_recover). */
    tg_obj o = {.kind = KIND_USAGE_SESSION, .created = u->created,
                .active = u->status == TG_USESS_ACTIVE || u->pending, .customer = u->customer};
    tg_strlcpy(o.id, u->id, sizeof o.id);
    int rc = bill_save(c, &o, &b);
    return rc ? rc : session_publish(c, u);
}

/* Whole units a hard limit on the session's meter leaves it, given what the others hold: a
 * count, not a decimal (a limit may leave more than an int64_t counts). */
static tg_dec units_left(const ent_grant *g, int64_t held)
{
    tg_dec left = g->g.limit.quantity - g->used - tg_dec_from_int(held);
    return left <= 0 ? 0 : left / TG_DEC_ONE;
}

/* Units the session may use at time t that nobody else holds: for every hard limit of the
 * customer counting the session's meter over a period holding t (its feature's, and any
 * other feature's on the same meter: they all count its events), the limit less the period's
 * usage and what other sessions on that meter hold, rounded down to whole units; the
 * smallest, as a count (not a decimal: it may exceed INT64_MAX). t before a current period's
 * start is counted against the limits of the period that ended there, when the registry
 * still has them, less only what other sessions hold in that period (not what they were
 * granted since, under the new period's limits). *limited false: no hard limit counts the
 * meter (the answer is then INT64_MAX). *meter: a hard limit of the session's feature
 * that counts another meter (its events could not count against it) when none of its
 * feature's hard limits counts the session's meter (two granted features may share a lookup
 * key: the session may record the meter of either), else NULL.
 * *entitled: the customer has the feature now. */
static tg_dec available_units(bctx *c, const tg_usage_session *u, int64_t t, bool *entitled,
                              bool *limited, const char **meter)
{
    struct tg_ent_registry *r = registry(c->svc);
    tg_dec avail = INT64_MAX;
    bool counted = false; /* a hard limit of the session's feature counts its meter */
    *entitled = *limited = false;
    *meter = NULL;
    pthread_mutex_lock(&r->mu);
    ent_node *node = find_locked(r, c->scope, u->customer);
    int64_t held = node ? held_locked(node, u->event_name, u->id, c->now) : 0;
    for (size_t i = 0; node && i < node->n + node->nprev; i++) {
        bool ended = i >= node->n;
        const ent_grant *g = ended ? &node->prev[i - node->n] : &node->grants[i];
        bool hard = g->g.limit.set && g->g.limit.hard; /* a soft limit is reported only */
        bool own = strcmp(g->g.lookup_key, u->feature) == 0;
        *entitled |= own && !ended;
        bool counts = ended ? t >= count_from(&g->g) && t < count_to(&g->g)
                            : t >= c->now || t >= count_from(&g->g);
        if (!hard || !counts)
            continue;
        if (strcmp(g->event_name, u->event_name) != 0) {
            if (own && !ended && !*meter)
                *meter = tg_arena_strdup(c->a, g->g.limit.meter);
            continue;
        }
        tg_dec units = units_left(g, ended ? held_before_locked(node, u->event_name, u->id,
                                                                c->now, count_to(&g->g))
                                           : held);
        if (!*limited || units < avail)
            avail = units;
        *limited = true;
        counted |= own && !ended;
    }
    pthread_mutex_unlock(&r->mu);
    if (counted)
        *meter = NULL;
    return avail;
}

/* Grants more time: a chunk ahead of what is recorded (the heartbeat timeout for seconds;
 * for minute_up the minutes that cover the heartbeat timeout from now, at least the next
 * one), within what the limit leaves. */
static void regrant(tg_usage_session *u, tg_dec avail, bool limited, int64_t elapsed)
{
    int64_t chunk = u->heartbeat_timeout;
    if (u->minute_up) {
        chunk = (elapsed + u->heartbeat_timeout + 59) / 60 - u->recorded;
        if (chunk < 1)
            chunk = 1;
    }
    if (limited) {
        tg_dec left = avail - u->pending;
        u->reserved = left < chunk ? (left > 0 ? (int64_t)left : 0) : chunk;
    } else {
        u->reserved = chunk;
    }
    u->granted_seconds = (u->recorded + u->reserved) * unit_seconds(u) - elapsed;
    if (u->granted_seconds < 0)
        u->granted_seconds = 0;
    u->remaining = limited ? (avail - u->pending - u->reserved) * TG_DEC_ONE : 0;
}

/* Units due for a call that has run until t: its seconds, or the minutes it has started. */
static int64_t units_due(const tg_usage_session *u, int64_t t)
{
    int64_t elapsed = t - u->created;
    if (!u->minute_up)
        return elapsed;
    return elapsed < 1 ? 1 : (elapsed + 59) / 60;
}

/* The earliest start of a customer's current grant periods after `after` and at most `until`,
 * moved back to its minute (usage is kept per minute, and the minute holding a boundary
 * belongs to the later period); 0 when there is none. */
static int64_t period_bound(bctx *c, const char *customer, int64_t after, int64_t until)
{
    struct tg_ent_registry *r = registry(c->svc);
    int64_t bound = 0;
    pthread_mutex_lock(&r->mu);
    const ent_node *node = find_locked(r, c->scope, customer);
    for (size_t i = 0; node && i < node->n; i++) {
        int64_t b = count_from(&node->grants[i].g);
        if (b > after && b <= until && (!bound || b < bound))
            bound = b;
    }
    pthread_mutex_unlock(&r->mu);
    return bound;
}

typedef struct session_args {
    const tg_usage_session_params *p;
    const char *id;
    bool end;
    tg_usage_session *u;
    int64_t customer_seq;
    bool deferred; /* the heartbeat waited for another one's event: nothing of it was done */
    bool split;    /* the heartbeat recorded its time up to a period boundary: the rest to do */
    bool dropped;  /* the pending units could never be recorded and were given up */
    bool sent;     /* the pending units' meter event is recorded (or was already) */
} session_args;

/* Can the session's usage still be recorded? Its meter may have been deactivated and its
 * customer deleted since it started; then the session can only end. */
static int session_recordable(bctx *c, const tg_usage_session *u)
{
    tg_meter m;
    if (!tg_meter_for_event(c->svc, c->scope, u->event_name, &m))
        return tg_err_set(c->err, TG_ENOMETER, "event_name",
                          "No active meter found for event name %s: the usage session %s can "
                          "only be ended.", u->event_name, u->id);
    if (!tg_customer_seq(c->svc, c->scope, u->customer))
        return tg_err_set(c->err, TG_ECUSTOMER, "customer",
                          "No such customer: '%s': the usage session %s can only be ended.",
                          u->customer, u->id);
    return TG_OK;
}

static int session_start_fn(bctx *c, void *arg)
{
    session_args *sa = arg;
    const tg_usage_session_params *p = sa->p;
    tg_usage_session *u = sa->u;
    memset(u, 0, sizeof *u);
    c->now = tg_customer_now(c->svc, c->scope, p->customer);
    int rc = node_ensure(c, p->customer, sa->customer_seq);
    if (!rc)
        rc = bill_new_id(c, u->id, "usess_");
    if (rc)
        return rc;
    tg_strlcpy(u->customer, p->customer, sizeof u->customer);
    tg_strlcpy(u->feature, p->feature, sizeof u->feature);
    tg_strlcpy(u->event_name, p->event_name, sizeof u->event_name);
    tg_metadata none = {0};
    if (tg_metadata_apply(&none, false, &p->payload, c->a, &u->payload))
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    u->minute_up = p->minute_up;
    u->heartbeat_timeout = p->heartbeat_timeout ? p->heartbeat_timeout : SESSION_TIMEOUT_DEFAULT;
    u->livemode = c->scope->livemode;
    u->created = u->last_heartbeat = c->now;
    bool entitled, limited;
    const char *meter;
    tg_dec avail = available_units(c, u, c->now, &entitled, &limited, &meter);
    if (!entitled)
        return tg_err_set(c->err, TG_ENOENTITLEMENT, "feature",
                          "The customer %s is not entitled to %s: a plan with this feature is "
                          "needed.", p->customer, p->feature);
    if (meter)
        return tg_err_set(c->err, TG_EINVAL, "event_name",
                          "The limit of %s counts meter %s: record its event name.", p->feature,
                          meter);
    if (limited && avail < 1)
        return tg_err_set(c->err, TG_ELIMIT, "feature",
                          "The customer %s has used all of %s for this period.", p->customer,
                          p->feature);
    u->limited = limited;
    if (u->minute_up) { /* the first minute is billed as it starts */
        u->seq = 1;
        u->pending = 1;
        u->recorded = 1;
    }
    regrant(u, avail, limited, 0);
    return session_save(c, u);
}

/* Loads a session for a change at its customer's time (attaching it to the registry). */
static int session_enter(bctx *c, const char *id, tg_usage_session *u)
{
    int rc = bill_load(c, KIND_USAGE_SESSION, id, "id", decode_session, u);
    if (rc)
        return rc;
    c->now = tg_customer_now(c->svc, c->scope, u->customer);
    int64_t seq = tg_customer_seq(c->svc, c->scope, u->customer);
    return seq ? node_ensure(c, u->customer, seq) : TG_OK;
}

static int session_heartbeat_fn(bctx *c, void *arg)
{
    session_args *sa = arg;
    tg_usage_session *u = sa->u;
    int rc = session_enter(c, sa->id, u);
    /* Over, or another heartbeat's event still to be recorded first (one in flight, or a
     * crash in between): the caller records it, then comes back. */
    sa->deferred = !rc && u->status == TG_USESS_ACTIVE && u->pending;
    if (rc || u->status != TG_USESS_ACTIVE || u->pending)
        return rc;
    if (c->now - u->last_heartbeat > u->heartbeat_timeout) {
        /* Its heartbeats stopped: it is billed to its last heartbeat. */
        u->status = TG_USESS_EXPIRED;
        u->ended_at = u->last_heartbeat;
        u->reserved = 0;
        u->granted_seconds = 0;
        return session_save(c, u);
    }
    if ((rc = session_recordable(c, u))) {
        if (!sa->end)
            return rc;
        /* It ends billed what was recorded: the time since cannot be. */
        tg_err_clear(c->err);
        u->status = TG_USESS_ENDED;
        u->ended_at = u->last_heartbeat = c->now;
        u->reserved = 0;
        u->granted_seconds = 0;
        return session_save(c, u);
    }
    int64_t elapsed = c->now - u->created;
    /* Time before a period boundary belongs to the period it was reserved in: it is recorded
     * first, stamped there and held to that period's limits (the caller then comes back for
     * the rest, once per boundary). */
    int64_t bound = period_bound(c, u->customer, u->last_heartbeat, c->now);
    while (bound && units_due(u, bound) <= u->recorded)
        bound = period_bound(c, u->customer, bound, c->now);
    int64_t due = units_due(u, bound ? bound : c->now);
    /* Never more than was granted, nor than the hard limits counting the meter leave at that
     * time: the grant was made under the limits of its time, and a downgrade since may have
     * lowered them. */
    bool entitled, limited;
    const char *meter;
    tg_dec avail = available_units(c, u, bound ? bound - 1 : c->now, &entitled, &limited,
                                   &meter);
    int64_t allowed = limited && avail < u->reserved ? (int64_t)avail : u->reserved;
    bool capped = due > u->recorded + allowed;
    if (capped)
        due = u->recorded + allowed;
    if (bound) {
        u->seq += due > u->recorded;
        u->pending = due - u->recorded;
        u->recorded = due;
        u->reserved -= u->pending;
        u->last_heartbeat = bound - 1;
        sa->split = !capped;
        if (capped) { /* cut off at the limit before the boundary: nothing after it counts */
            u->status = TG_USESS_LIMIT_REACHED;
            u->ended_at = c->now;
            u->reserved = 0;
            u->granted_seconds = 0;
        }
        return session_save(c, u);
    }
    if (due > u->recorded) {
        u->seq++;
        u->pending = due - u->recorded;
        u->recorded = due;
    }
    u->last_heartbeat = c->now;
    if (sa->end) {
        /* A call that ran past its grant ends as cut off at the limit. */
        u->status = capped ? TG_USESS_LIMIT_REACHED : TG_USESS_ENDED;
        u->ended_at = c->now;
        u->reserved = 0;
        u->granted_seconds = 0;
        return session_save(c, u);
    }
    /* The entitlement is gone, or its hard limit now counts another meter: no more time. */
    if (!entitled || meter)
        avail = 0, limited = true;
    u->limited = limited;
    regrant(u, avail, limited, elapsed);
    if (u->granted_seconds <= 0) {
        u->status = TG_USESS_LIMIT_REACHED;
        u->ended_at = c->now;
        u->reserved = 0;
    }
    return session_save(c, u);
}

/* Clears the session's pending event, unless a later heartbeat has taken its place: recorded
 * (settle), or given up because it can never be recorded (drop: the session does not claim
 * the units). */
static int session_clear(bctx *c, session_args *sa, bool drop)
{
    tg_usage_session cur;
    int rc = bill_load(c, KIND_USAGE_SESSION, sa->u->id, "id", decode_session, &cur);
    if (rc || cur.seq != sa->u->seq || !cur.pending)
        return rc;
    if (drop) {
        cur.recorded -= cur.pending;
    } else {
        cur.granted_seconds = sa->u->granted_seconds;
        cur.remaining = sa->u->remaining;
    }
    cur.pending = 0;
    *sa->u = cur;
    return session_save(c, &cur);
}

/* A start refused after its job committed: the session ends where it started, its pending
 * units given up (they were not recorded), its hold released. */
static int session_abandon_fn(bctx *c, void *arg)
{
    session_args *sa = arg;
    tg_usage_session cur;
    int rc = bill_load(c, KIND_USAGE_SESSION, sa->u->id, "id", decode_session, &cur);
    if (rc || cur.seq != sa->u->seq)
        return rc;
    cur.recorded -= cur.pending;
    cur.pending = cur.reserved = 0;
    cur.status = TG_USESS_ENDED;
    cur.ended_at = cur.last_heartbeat = cur.created;
    return session_save(c, &cur);
}

static int session_settle_fn(bctx *c, void *arg)
{
    return session_clear(c, arg, false);
}

static int session_drop_fn(bctx *c, void *arg)
{
    return session_clear(c, arg, true);
}

/* The pending event was refused for good (its meter or its customer is gone): the units are
 * given up, so that the session never shows them billed, and rc is returned. */
static int session_unrecordable(tg_service *svc, const tg_scope *scope, tg_arena *a,
                                session_args *sa, int rc)
{
    tg_err ignore = {0};
    sa->dropped = bill_write(svc, scope, a, session_drop_fn, sa, &ignore) == TG_OK;
    return rc;
}

/* Records the session's pending units as one meter event whose identifier is derived from
 * the session and its sequence number (a retry is a duplicate, never a second count), then
 * marks it recorded. */
static int session_record(tg_service *svc, const tg_scope *scope, tg_arena *a, session_args *sa,
                          tg_err *err)
{
    tg_usage_session *u = sa->u;
    if (!u->pending)
        return TG_OK;
    tg_meter m;
    if (!tg_meter_for_event(svc, scope, u->event_name, &m))
        return session_unrecordable(svc, scope, a, sa,
                                    tg_err_set(err, TG_ENOMETER, "event_name",
                                               "No active meter found for event name %s.",
                                               u->event_name));
    tg_event *e = tg_arena_alloc(a, sizeof *e);
    tg_kv *kv = tg_arena_alloc(a, (u->payload.n + 2) * sizeof *kv);
    char *value = tg_arena_alloc(a, 24);
    if (!e || !kv || !value)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    memset(e, 0, sizeof *e);
    size_t n = 0;
    for (size_t i = 0; i < u->payload.n; i++)
        if (strcmp(u->payload.items[i].key, m.customer_key) != 0 &&
            strcmp(u->payload.items[i].key, m.value_key) != 0)
            kv[n++] = u->payload.items[i];
    snprintf(value, 24, "%lld", (long long)u->pending);
    kv[n++] = (tg_kv){m.customer_key, u->customer};
    if (m.formula != TG_FORMULA_COUNT)
        kv[n++] = (tg_kv){m.value_key, value};
    e->payload = (tg_metadata){kv, n};
    tg_strlcpy(e->event_name, u->event_name, sizeof e->event_name);
    snprintf(e->identifier, sizeof e->identifier, "%s-%lld", u->id, (long long)u->seq);
    /* Stamped at the heartbeat that computed the units (the period they belong to); one
     * recorded so late that the time is out of the acceptance window is stamped now. */
    e->timestamp = u->last_heartbeat;
    int result = TG_OK;
    int rc = tg_event_prepare(svc, scope, e, NULL, err);
    if (rc == TG_ETOOOLD) {
        tg_err_clear(err);
        e->timestamp = TG_TIME_NOW;
        rc = tg_event_prepare(svc, scope, e, NULL, err);
    }
    if (rc && rc != TG_ENOMEM)
        return session_unrecordable(svc, scope, a, sa, rc);
    if (!rc)
        rc = tg_events_record(svc, scope, e, 1, &result, NULL, 0, err);
    if (rc)
        return rc;
    sa->sent = true;
    return bill_write(svc, scope, a, session_settle_fn, sa, err); /* recorded, or already */
}

int tg_usage_session_start(tg_service *svc, const tg_scope *scope,
                           const tg_usage_session_params *p, tg_arena *a,
                           tg_usage_session *out, tg_err *err)
{
    if (!p->customer)
        return tg_err_set(err, TG_EMISSING, "customer", "Missing required param: customer.");
    if (!p->feature)
        return tg_err_set(err, TG_EMISSING, "feature", "Missing required param: feature.");
    if (!p->event_name)
        return tg_err_set(err, TG_EMISSING, "event_name", "Missing required param: event_name.");
    int64_t seq = tg_customer_seq(svc, scope, p->customer);
    if (!seq)
        return tg_err_set(err, TG_ENOTFOUND, "customer", "No such customer: '%s'", p->customer);
    tg_meter m;
    if (!tg_meter_for_event(svc, scope, p->event_name, &m))
        return tg_err_set(err, TG_ENOMETER, "event_name",
                          "No active meter found for event name %s.", p->event_name);
    if (m.formula != TG_FORMULA_SUM || m.event_time_window != TG_WINDOW_NONE)
        return tg_err_set(err, TG_EINVAL, "event_name",
                          "A usage session records durations: the meter of %s must sum values "
                          "(formula sum, no event_time_window).", p->event_name);
    int rc = tg_metadata_validate(&p->payload, "payload", err);
    if (rc)
        return rc;
    session_args sa = {.p = p, .u = out, .customer_seq = seq};
    if ((rc = bill_write(svc, scope, a, session_start_fn, &sa, err)))
        return rc;
    if (!(rc = session_record(svc, scope, a, &sa, err)) || sa.sent) {
        /* Once its first minute is recorded the session has started; a failure to mark it
         * recorded is mended by its next heartbeat (the same identifier, counted once). */
        tg_err_clear(err);
        return TG_OK;
    }
    /* Its first minute could not be recorded: the start is refused, so the session is ended
     * billed nothing and holding nothing (no heartbeat or recovery records it later). */
    tg_err ignore = {0};
    if (bill_write(svc, scope, a, session_abandon_fn, &sa, &ignore))
        tg_log(TG_LOG_WARN, "usage session %s: a refused start could not be ended: %s", out->id,
               ignore.msg);
    return rc;
}

int tg_usage_session_heartbeat(tg_service *svc, const tg_scope *scope, const char *id, bool end,
                               tg_arena *a, tg_usage_session *out, tg_err *err)
{
    session_args sa = {.id = id, .end = end, .u = out};
    /* A heartbeat (or end) that meets another one's event being recorded records that event
     * too (the same identifier: it counts once) and then does its own work; it never answers
     * with the session as another request left it. Its own time up to a period boundary is
     * one more round, which does not count as meeting another. */
    for (int attempt = 0, rounds = 0; attempt < 4 && rounds < 64; rounds++) {
        sa.split = false;
        int rc = bill_write(svc, scope, a, session_heartbeat_fn, &sa, err);
        if (!rc && out->pending) {
            int64_t granted = out->granted_seconds;
            tg_dec remaining = out->remaining;
            sa.dropped = false;
            rc = session_record(svc, scope, a, &sa, err);
            out->granted_seconds = granted;
            out->remaining = remaining;
            /* Units refused for good were given up: an end still ends, and a heartbeat that
             * met another's event does its own work (and meets the same refusal). */
            if (rc && sa.dropped && (sa.deferred || sa.split || end)) {
                tg_err_clear(err);
                rc = TG_OK;
            }
        }
        if (rc || !(sa.deferred || sa.split))
            return rc;
        attempt += sa.deferred;
    }
    return tg_err_set(err, TG_EBUSY, NULL,
                      "The usage session %s is busy with other heartbeats; retry.", id);
}

static int session_get_fn(bctx *c, void *arg)
{
    session_args *sa = arg;
    tg_usage_session *u = sa->u;
    int rc = bill_load(c, KIND_USAGE_SESSION, sa->id, "id", decode_session, u);
    if (rc)
        return rc;
    int64_t now = tg_customer_now(c->svc, c->scope, u->customer);
    if (u->status == TG_USESS_ACTIVE && now - u->last_heartbeat > u->heartbeat_timeout) {
        u->status = TG_USESS_EXPIRED; /* shown as it is; stored at its next heartbeat */
        u->ended_at = u->last_heartbeat;
        u->reserved = 0;
    }
    if (u->status == TG_USESS_ACTIVE)
        u->granted_seconds = (u->recorded + u->reserved) * unit_seconds(u) - (now - u->created);
    if (u->granted_seconds < 0)
        u->granted_seconds = 0;
    return TG_OK;
}

int tg_usage_session_retrieve(tg_service *svc, const tg_scope *scope, const char *id,
                              tg_arena *a, tg_usage_session *out, tg_err *err)
{
    session_args sa = {.id = id, .u = out};
    return bill_read(svc, scope, a, session_get_fn, &sa, err);
}

/* ---------------------------------------------------------------- recovery */

typedef struct pending_list {
    tg_usage_session *u;
    size_t n, cap;
} pending_list;

static int collect_pending(bctx *c, void *item, void *arg)
{
    const tg_usage_session *u = item;
    pending_list *pl = arg;
    if (!u->pending)
        return TG_OK;
    if (!(pl->u = bill_arena_room(c, pl->u, pl->n, &pl->cap, sizeof *pl->u)))
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    pl->u[pl->n++] = *u;
    return TG_OK;
}

static int pending_list_fn(bctx *c, void *arg)
{
    tg_obj_filter f = {.active = 1};
    return bill_each(c, KIND_USAGE_SESSION, &f, decode_session, sizeof(tg_usage_session),
                       collect_pending, arg);
}

void tg_usage_sessions_recover(tg_service *svc, const char *account)
{
    for (int live = 0; live < 2; live++) {
        tg_scope scope = {.livemode = live};
        tg_strlcpy(scope.account, account, sizeof scope.account);
        tg_arena a;
        tg_arena_init(&a, 0);
        pending_list pl = {0};
        tg_err e = {0};
        if (bill_read(svc, &scope, &a, pending_list_fn, &pl, &e))
            tg_log(TG_LOG_WARN, "usage sessions: %s", e.msg);
        for (size_t i = 0; i < pl.n; i++) {
            session_args sa = {.id = pl.u[i].id, .u = &pl.u[i]};
            tg_err_clear(&e);
            if (session_record(svc, &scope, &a, &sa, &e))
                tg_log(TG_LOG_WARN, "usage session %s: its last heartbeat could not be "
                       "recorded yet: %s", pl.u[i].id, e.msg);
        }
        tg_arena_free(&a);
    }
}
