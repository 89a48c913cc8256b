/* billing_internal.h -- what the billing use-case files (catalog.c, billing.c) share: one
 * context for a job, loading and saving objects through the store's object table, and
 * recording events. Not for the edges.
 */
#ifndef TG_BILLING_INTERNAL_H
#define TG_BILLING_INTERNAL_H

#include "base/buf.h"
#include "core/billing.h"
#include "core/billing_records.h"
#include "core/record.h"
#include "core/service_internal.h"
#include "core/store.h"

#define KIND_PRODUCT "product"
#define KIND_PRICE "price"
#define KIND_CLOCK "test_clock"
#define KIND_SUB "subscription"
#define KIND_INVOICE "invoice"
#define KIND_SCHEDULE "subscription_schedule"
#define KIND_EVENT "event"

/* One unit of billing work: a connection (the writer's inside a job, else a reader), the
 * caller's scope, the arena results go to, and the time of the world the work happens in. */
typedef struct bctx {
    tg_service *svc;
    tg_store *s;
    const tg_scope *scope;
    tg_arena *a;
    int64_t now;
    tg_err *err;
    bool touched_registry; /* the job changed the entitlement registry in a way only a
                            * fresh start undoes (see bill_write_job) */
    const char *installed_for; /* the customer whose registry entry the job wrote first */
    tg_scope installed_scope;  /* ... and its scope (a job may work in several) */
    bool installed_many;       /* the job wrote the entries of more than one customer */
    /* The record of each product, price and subscription as the job first loaded it, then
     * as its last *.updated event showed it: what the next *.updated event about it says
     * its previous_attributes were (bill_emit). */
    struct bill_snapshot {
        tg_obj_kind kind;
        char id[TG_ID_MAX];
        const void *rec; /* in the job's arena */
        size_t len;
    } snaps[8];
    size_t nsnaps;
    bool automatic; /* running what was due (renewals, trial ends): no request caused it */
    bool queued_webhooks; /* the job queued deliveries: the sender is nudged after its commit */
} bctx;

/* Runs fn with a context on a reader (bill_read) or as a writer job (bill_write); c->now is
 * the server's time, and use cases on a customer's objects move it to the customer's. */
typedef int (*bill_fn)(bctx *c, void *arg);
int bill_read(tg_service *svc, const tg_scope *scope, tg_arena *a, bill_fn fn, void *arg,
              tg_err *err);
int bill_write(tg_service *svc, const tg_scope *scope, tg_arena *a, bill_fn fn, void *arg,
               tg_err *err);

/* Loads kind/id and decodes it with decode(); TG_ENOTFOUND (recorded, naming param) when
 * absent. */
typedef int (*tg_decode_fn)(const void *data, size_t len, tg_arena *a, void *out);
int bill_load(bctx *c, const char *kind, const char *id, const char *param, tg_decode_fn decode,
              void *out);

/* The record decoders of the kinds several files list and load, as tg_decode_fn. */
int bill_decode_product(const void *d, size_t n, tg_arena *a, void *out);
int bill_decode_price(const void *d, size_t n, tg_arena *a, void *out);
int bill_decode_sub(const void *d, size_t n, tg_arena *a, void *out);
int bill_decode_invoice(const void *d, size_t n, tg_arena *a, void *out);

/* Reads kind/id on a reader: the retrieve use cases. */
int bill_retrieve(tg_service *svc, const tg_scope *scope, const char *kind, const char *id,
                  tg_decode_fn decode, tg_arena *a, void *out, tg_err *err);

/* Stores an encoded object with its index columns (o->body and o->len are filled here). */
int bill_save(bctx *c, tg_obj *o, tg_buf *body);

int bill_load_product(bctx *c, const char *id, const char *param, tg_product *out);
int bill_load_price(bctx *c, const char *id, const char *param, tg_price *out);
int bill_save_product(bctx *c, const tg_product *p);
int bill_save_price(bctx *c, const tg_price *p);
int bill_load_clock(bctx *c, const char *id, tg_test_clock *out);
int bill_save_clock(bctx *c, const tg_test_clock *k);

/* Records an event of `type` with a snapshot of obj (of kind) at c->now. */
/* Takes obj (a product, price or subscription) as the state the job's next *.updated event
 * about it compares with (see bctx.snaps). */
void bill_snapshot_object(bctx *c, tg_obj_kind kind, const void *obj);
int bill_emit(bctx *c, const char *type, tg_obj_kind kind, const void *obj);

/* Lists objects of kind matching f into decoded items of size `size` (page semantics of
 * tg_page; has_more set). */
int bill_list(bctx *c, const char *kind, const tg_obj_filter *f, const tg_page *page,
              tg_decode_fn decode, size_t size, void **out, size_t *n, bool *has_more);

/* Every page of a list, for the engine's own reads (items decoded as bill_list does, whose
 * structs start with their id). fn returns non-zero to stop. */
int bill_each(bctx *c, const char *kind, const tg_obj_filter *f, tg_decode_fn decode,
              size_t size, int (*fn)(bctx *c, void *item, void *arg), void *arg);

/* An arena array of n items of size bytes with room for one more: items itself, or a copy
 * with twice the capacity (*cap updated); NULL when out of memory. */
void *bill_arena_room(bctx *c, void *items, size_t n, size_t *cap, size_t size);

/* Runs everything due on test clock `clock` up to `until`, in time order (billing.c). */
int bill_run_clock(bctx *c, const char *clock, int64_t until);
/* Cancels every live subscription of a clock being deleted (billing.c). */
int bill_cancel_clock_subscriptions(bctx *c, const char *clock);
/* The shortest billing interval among a clock's live subscriptions, in seconds (0: none). */
int bill_clock_shortest_interval(bctx *c, const char *clock, int64_t *seconds);

/* Recomputes a customer's grants from its subscriptions (entitlements.c): stores them,
 * records the summary event when the features change, and installs them in the check
 * registry. Called by every change that can alter them, inside its writer job. */
int ent_refresh(bctx *c, const char *customer);

/* Queues the deliveries of a recorded event to the scope's endpoints that take it, and counts
 * an event's queued deliveries into e->pending_webhooks (webhooks.c). */
int bill_queue_webhooks(bctx *c, const tg_billing_event *e);
int bill_pending_webhooks(bctx *c, tg_billing_event *e);

/* Random ids with Stripe's prefixes. */
int bill_new_id(bctx *c, char *out, const char *prefix);

#endif
