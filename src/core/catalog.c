/* catalog.c -- products, prices and test clocks, and what every billing use case shares:
 * loading and saving objects through the store's object table and recording events.
 *
 * Writes run as writer jobs (a check and its write are atomic: a lookup key moves from one
 * price to another in one transaction); reads use a reader connection. Objects are stored as
 * records (billing_records.c); the object row's index columns carry what lists filter on:
 * a price's product (parent) and lookup key, a customer-owned object's customer and test
 * clock, and `active`.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/str.h"
#include "core/billing_internal.h"
#include "core/metadata.h"
#include "core/money.h"
#include "core/webhooks.h"

/* ---------------------------------------------------------------- shared helpers */

int bill_new_id(bctx *c, char *out, const char *prefix)
{
    if (tg_id_random(out, TG_ID_MAX, prefix, 24))
        return tg_err_set(c->err, TG_ESTORE, NULL, "random generator failed");
    tg_idem_note_id(out);
    return TG_OK;
}

static struct bill_snapshot *snapshot_of(bctx *c, tg_obj_kind kind, const char *id)
{
    for (size_t i = 0; i < c->nsnaps; i++)
        if (c->snaps[i].kind == kind && strcmp(c->snaps[i].id, id) == 0)
            return &c->snaps[i];
    return NULL;
}

/* Sets the snapshot of kind/id to the record rec (kept by reference: arena memory). */
static void snapshot_set(bctx *c, tg_obj_kind kind, const char *id, const void *rec, size_t len)
{
    struct bill_snapshot *s = snapshot_of(c, kind, id);
    if (!s && c->nsnaps < sizeof c->snaps / sizeof c->snaps[0]) {
        s = &c->snaps[c->nsnaps++];
        s->kind = kind;
        tg_strlcpy(s->id, id, sizeof s->id);
    }
    if (s) {
        s->rec = rec;
        s->len = len;
    }
}

int bill_load(bctx *c, const char *kind, const char *id, const char *param, tg_decode_fn decode,
              void *out)
{
    tg_obj o;
    tg_err ignore = {0};
    int rc = c->s->ops->obj_get(c->s, c->scope, kind, id, c->a, &o, &ignore);
    if (rc == TG_ENOTFOUND) {
        char name[48]; /* the kind in words: "test clock", "webhook endpoint" */
        tg_strlcpy(name, kind, sizeof name);
        for (char *p = name; *p; p++)
            *p = *p == '_' ? ' ' : *p;
        return tg_err_set(c->err, TG_ENOTFOUND, param, "No such %s: '%s'", name, id);
    }
    if (rc)
        return tg_err_set(c->err, rc, NULL, "%s", ignore.msg);
    if (decode(o.body, o.len, c->a, out) < 0)
        return tg_err_set(c->err, TG_ESTORE, NULL, "Corrupt %s record '%s'.", kind, id);
    /* The first load of an object in a job is its state before the job's changes. */
    tg_obj_kind k = strcmp(kind, KIND_SUB) == 0       ? TG_OBJ_SUBSCRIPTION
                    : strcmp(kind, KIND_PRICE) == 0   ? TG_OBJ_PRICE
                    : strcmp(kind, KIND_PRODUCT) == 0 ? TG_OBJ_PRODUCT
                                                      : TG_OBJ_INVOICE; /* not kept */
    if (k != TG_OBJ_INVOICE && !snapshot_of(c, k, id))
        snapshot_set(c, k, id, o.body, o.len);
    return TG_OK;
}

int bill_save(bctx *c, tg_obj *o, tg_buf *body)
{
    if (body->failed) {
        tg_buf_free(body);
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    }
    o->body = body->data ? body->data : "";
    o->len = body->len;
    int rc = c->s->ops->obj_put(c->s, c->scope, o, c->err);
    tg_buf_free(body);
    return rc;
}

int bill_decode_product(const void *d, size_t n, tg_arena *a, void *out)
{
    return tg_product_decode(d, n, a, out);
}
int bill_decode_price(const void *d, size_t n, tg_arena *a, void *out)
{
    return tg_price_decode(d, n, a, out);
}
int bill_decode_sub(const void *d, size_t n, tg_arena *a, void *out)
{
    return tg_subscription_decode(d, n, a, out);
}
int bill_decode_invoice(const void *d, size_t n, tg_arena *a, void *out)
{
    return tg_invoice_decode(d, n, a, out);
}
static int decode_clock(const void *d, size_t n, tg_arena *a, void *out)
{
    return tg_test_clock_decode(d, n, a, out);
}
static int decode_event(const void *d, size_t n, tg_arena *a, void *out)
{
    return tg_billing_event_decode(d, n, a, out);
}

int bill_load_product(bctx *c, const char *id, const char *param, tg_product *out)
{
    int rc = bill_load(c, KIND_PRODUCT, id, param, bill_decode_product, out);
    if (!rc && out->deleted)
        return tg_err_set(c->err, TG_ENOTFOUND, param, "No such product: '%s'", id);
    return rc;
}

int bill_load_price(bctx *c, const char *id, const char *param, tg_price *out)
{
    return bill_load(c, KIND_PRICE, id, param, bill_decode_price, out);
}

int bill_load_clock(bctx *c, const char *id, tg_test_clock *out)
{
    return bill_load(c, KIND_CLOCK, id, "test_clock", decode_clock, out);
}

int bill_save_product(bctx *c, const tg_product *p)
{
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_product_encode(&b, p);
    tg_obj o = {.kind = KIND_PRODUCT, .created = p->created, .active = p->active};
    tg_strlcpy(o.id, p->id, sizeof o.id);
    return bill_save(c, &o, &b);
}

int bill_save_price(bctx *c, const tg_price *p)
{
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_price_encode(&b, p);
    char tags[64];
    snprintf(tags, sizeof tags, " currency=%s type=%s ", p->currency,
             p->recurring ? "recurring" : "one_time");
    tg_obj o = {.kind = KIND_PRICE, .created = p->created, .active = p->active,
                .parent = p->product, .lookup = p->lookup_key, .tags = tags};
    tg_strlcpy(o.id, p->id, sizeof o.id);
    return bill_save(c, &o, &b);
}

int bill_save_clock(bctx *c, const tg_test_clock *k)
{
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_test_clock_encode(&b, k);
    tg_obj o = {.kind = KIND_CLOCK, .created = k->created, .active = !k->deleted};
    tg_strlcpy(o.id, k->id, sizeof o.id);
    return bill_save(c, &o, &b);
}

static const char *event_object_id(const tg_billing_event *e)
{
    switch (e->kind) {
    case TG_OBJ_PRODUCT: return e->object.product.id;
    case TG_OBJ_PRICE: return e->object.price.id;
    case TG_OBJ_SUBSCRIPTION: return e->object.sub.id;
    case TG_OBJ_CUSTOMER: return e->object.customer.id;
    case TG_OBJ_METER: return e->object.meter.id;
    default: return NULL;
    }
}

static bool is_update(const char *type)
{
    size_t n = strlen(type);
    return n >= 8 && strcmp(type + n - 8, ".updated") == 0;
}

/* The object of an *.updated event (a product, price, subscription, customer or meter) as it
 * was before the change the event records: as the job first loaded it or its last *.updated event
 * showed it, else as stored (a change is saved after its event). True when there is one. */
static bool load_previous(bctx *c, tg_billing_event *e)
{
    const char *id = event_object_id(e);
    if (!id || !is_update(e->type))
        return false;
    const struct bill_snapshot *snap = snapshot_of(c, e->kind, id);
    if (snap) {
        const tg_event_object none = {0};
        e->previous = none;
        switch (e->kind) {
        case TG_OBJ_PRODUCT:
            return tg_product_decode(snap->rec, snap->len, c->a, &e->previous.product) == 0;
        case TG_OBJ_PRICE:
            return tg_price_decode(snap->rec, snap->len, c->a, &e->previous.price) == 0;
        case TG_OBJ_SUBSCRIPTION:
            return tg_subscription_decode(snap->rec, snap->len, c->a, &e->previous.sub) == 0;
        default: return false; /* only those three kinds are snapshot */
        }
    }
    tg_err ignore = {0}, *saved = c->err;
    c->err = &ignore;
    int rc = TG_ENOTFOUND;
    switch (e->kind) {
    case TG_OBJ_PRODUCT:
        rc = bill_load_product(c, id, NULL, &e->previous.product);
        break;
    case TG_OBJ_PRICE: rc = bill_load_price(c, id, NULL, &e->previous.price); break;
    case TG_OBJ_SUBSCRIPTION:
        rc = bill_load(c, KIND_SUB, id, NULL, bill_decode_sub, &e->previous.sub);
        break;
    case TG_OBJ_CUSTOMER:
        rc = c->s->ops->customer_get(c->s, c->scope, id, c->a, &e->previous.customer, c->err);
        break;
    case TG_OBJ_METER:
        rc = c->s->ops->meter_get(c->s, c->scope, id, &e->previous.meter, c->err);
        break;
    default: break;
    }
    c->err = saved;
    return rc == TG_OK;
}

void bill_snapshot_object(bctx *c, tg_obj_kind kind, const void *obj)
{
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    const char *id;
    switch (kind) {
    case TG_OBJ_PRODUCT:
        tg_product_encode(&b, obj);
        id = ((const tg_product *)obj)->id;
        break;
    case TG_OBJ_PRICE:
        tg_price_encode(&b, obj);
        id = ((const tg_price *)obj)->id;
        break;
    case TG_OBJ_SUBSCRIPTION:
        tg_subscription_encode(&b, obj);
        id = ((const tg_subscription *)obj)->id;
        break;
    default: tg_buf_free(&b); return;
    }
    void *rec = b.failed ? NULL : tg_arena_alloc(c->a, b.len ? b.len : 1);
    if (rec) {
        memcpy(rec, b.data ? b.data : "", b.len);
        snapshot_set(c, kind, id, rec, b.len);
    }
    tg_buf_free(&b);
}

int bill_emit(bctx *c, const char *type, tg_obj_kind kind, const void *obj)
{
    /* Endpoints can enable every type recorded, and it is one of Stripe's. */
    assert(tg_webhook_event_type_known(type) && tg_webhook_event_type_valid(type));
    tg_billing_event *e = tg_arena_alloc(c->a, sizeof *e);
    if (!e)
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    memset(e, 0, sizeof *e);
    int rc = bill_new_id(c, e->id, "evt_");
    if (rc)
        return rc;
    e->type = type;
    e->created = c->now;
    e->livemode = c->scope->livemode;
    e->kind = kind;
    switch (kind) {
    case TG_OBJ_PRODUCT: e->object.product = *(const tg_product *)obj; break;
    case TG_OBJ_PRICE: e->object.price = *(const tg_price *)obj; break;
    case TG_OBJ_TEST_CLOCK: e->object.clock = *(const tg_test_clock *)obj; break;
    case TG_OBJ_SUBSCRIPTION: e->object.sub = *(const tg_subscription *)obj; break;
    case TG_OBJ_INVOICE: e->object.invoice = *(const tg_invoice *)obj; break;
    case TG_OBJ_FEATURE: e->object.feature = *(const tg_feature *)obj; break;
    case TG_OBJ_CUSTOMER: e->object.customer = *(const tg_customer *)obj; break;
    case TG_OBJ_METER: e->object.meter = *(const tg_meter *)obj; break;
    case TG_OBJ_ENTITLEMENT_SUMMARY:
        e->object.summary = *(const tg_entitlement_summary *)obj;
        break;
    }
    e->has_previous = load_previous(c, e);
    if (!c->automatic)
        tg_bound_request(&e->request_id, &e->idempotency_key);
    if (event_object_id(e) && is_update(e->type)) /* the state the next one compares with */
        bill_snapshot_object(c, e->kind, &e->object);
    tg_buf b;
    tg_buf_init(&b, TG_RECORD_MAX);
    tg_billing_event_encode(&b, e);
    /* Events are listed newest first by row order: an event's row is written when it
     * happens, so the order is the order of happening even on a test clock. */
    tg_obj o = {.kind = KIND_EVENT, .created = c->now, .active = true, .lookup = type};
    tg_strlcpy(o.id, e->id, sizeof o.id);
    rc = bill_save(c, &o, &b);
    return rc ? rc : bill_queue_webhooks(c, e);
}

int tg_billing_emit(tg_service *svc, tg_store *s, const tg_scope *scope, int64_t now,
                    const char *type, tg_obj_kind kind, const void *obj, tg_arena *a,
                    bool *queued, tg_err *err)
{
    bctx c = {.svc = svc, .s = s, .scope = scope, .a = a, .now = now, .err = err};
    int rc = bill_emit(&c, type, kind, obj);
    *queued = c.queued_webhooks;
    return rc;
}

int bill_list(bctx *c, const char *kind, const tg_obj_filter *f, const tg_page *page,
              tg_decode_fn decode, size_t size, void **out, size_t *n, bool *has_more)
{
    tg_obj *rows;
    size_t nrows;
    int rc = c->s->ops->obj_list(c->s, c->scope, kind, f, page, c->a, &rows, &nrows, c->err);
    if (rc)
        return rc;
    *has_more = nrows > (size_t)page->limit;
    size_t first = *has_more && page->ending_before ? 1 : 0;
    *n = *has_more ? (size_t)page->limit : nrows;
    char *items = tg_arena_alloc(c->a, (*n ? *n : 1) * size);
    if (!items)
        return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    for (size_t i = 0; i < *n; i++)
        if (decode(rows[first + i].body, rows[first + i].len, c->a, items + i * size) < 0)
            return tg_err_set(c->err, TG_ESTORE, NULL, "Corrupt %s record.", kind);
    *out = items;
    return TG_OK;
}

int bill_each(bctx *c, const char *kind, const tg_obj_filter *f, tg_decode_fn decode,
              size_t size, int (*fn)(bctx *c, void *item, void *arg), void *arg)
{
    tg_page page = {.limit = 100};
    for (;;) {
        char *items;
        size_t n;
        bool more;
        int rc = bill_list(c, kind, f, &page, decode, size, (void **)&items, &n, &more);
        for (size_t i = 0; !rc && i < n; i++)
            rc = fn(c, items + i * size, arg);
        if (rc || !more || !n)
            return rc;
        const char *last_id = (const char *)(items + (n - 1) * size); /* ids come first */
        if (!(page.starting_after = tg_arena_strdup(c->a, last_id)))
            return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
    }
}

void *bill_arena_room(bctx *c, void *items, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return items;
    size_t grown = *cap ? *cap * 2 : 8;
    void *p = tg_arena_alloc(c->a, grown * size);
    if (p && n)
        memcpy(p, items, n * size);
    if (p)
        *cap = grown;
    return p;
}

typedef struct bill_call {
    bctx c;
    bill_fn fn;
    void *arg;
} bill_call;

static int bill_call_job(tg_store *s, void *arg, tg_err *err)
{
    bill_call *call = arg;
    call->c.s = s;
    call->c.err = err;
    call->c.now = tg_service_now(call->c.svc);
    call->c.nsnaps = 0; /* (a job run again after a failed batch starts afresh) */
    call->c.automatic = false;
    return call->fn(&call->c, call->arg);
}

int bill_read(tg_service *svc, const tg_scope *scope, tg_arena *a, bill_fn fn, void *arg,
              tg_err *err)
{
    bill_call call = {{.svc = svc, .scope = scope, .a = a, .err = err}, fn, arg};
    return tg_service_read(svc, bill_call_job, &call, err);
}

/* A writer job: the service pointer comes first (tg_service_write's convention). */
typedef struct bill_write_call {
    tg_service *svc;
    bill_call call;
} bill_write_call;

/* Grants are installed in the registry as a job runs; a job that failed (it is rolled back
 * to its savepoint) may have installed what is not stored, so its customer's entry is
 * dropped (all entries if it wrote several customers'), and a billing step set aside drops
 * them all: they are loaded again from storage at their next use. This happens here, in the
 * writer thread, before the next job runs: done by the submitter after the commit, it could
 * land in the middle of a later job, between the moment that job made sure its customer was
 * loaded and its use of the grants (seen as a subscribed customer's usage session refused
 * with entitlement_required). A batch that fails to commit clears the registry too (the
 * writer's on_failure). */
static int bill_write_job(tg_store *s, void *arg, tg_err *err)
{
    bill_write_call *w = arg;
    const bctx *c = &w->call.c;
    int rc = bill_call_job(s, &w->call, err);
    struct tg_ent_registry *r = *tg_service_entitlements(w->svc);
    if (c->touched_registry || (rc && c->installed_many))
        tg_ent_registry_clear(r);
    else if (rc && c->installed_for)
        tg_ent_registry_forget(r, &c->installed_scope, c->installed_for);
    return rc;
}

int bill_write(tg_service *svc, const tg_scope *scope, tg_arena *a, bill_fn fn, void *arg,
               tg_err *err)
{
    bill_write_call w = {svc, {{.svc = svc, .scope = scope, .a = a, .err = err}, fn, arg}};
    int rc = tg_service_write(svc, bill_write_job, &w, err);
    if (!rc && w.call.c.queued_webhooks)
        tg_webhooks_nudge(svc);
    return rc;
}

typedef struct retrieve_args {
    const char *kind, *id;
    tg_decode_fn decode;
    void *out;
} retrieve_args;

static int retrieve_fn(bctx *c, void *arg)
{
    retrieve_args *r = arg;
    return bill_load(c, r->kind, r->id, "id", r->decode, r->out);
}

int bill_retrieve(tg_service *svc, const tg_scope *scope, const char *kind, const char *id,
                  tg_decode_fn decode, tg_arena *a, void *out, tg_err *err)
{
    retrieve_args r = {kind, id, decode, out};
    return bill_read(svc, scope, a, retrieve_fn, &r, err);
}

/* ---------------------------------------------------------------- products */

typedef struct product_args {
    const char *id;
    const tg_product_patch *patch;
    bool delete;
    tg_product *out;
} product_args;

static int product_apply(bctx *c, tg_product *p, const tg_product_patch *patch)
{
    if (patch->name.set) {
        if (!patch->name.value || !*patch->name.value)
            return tg_err_set(c->err, TG_EINVAL, "name", "The product name cannot be empty.");
        p->name = patch->name.value;
    }
    if (patch->description.set)
        p->description = patch->description.value;
    if (patch->active >= 0)
        p->active = patch->active;
    int rc = tg_metadata_merge(&p->metadata, patch->metadata_clear, &patch->metadata, c->a,
                               "metadata", c->err);
    if (rc)
        return rc;
    p->updated = c->now;
    return TG_OK;
}

static int product_create_fn(bctx *c, void *arg)
{
    product_args *pa = arg;
    tg_product *p = pa->out;
    memset(p, 0, sizeof *p);
    if (pa->patch->id) {
        tg_obj existing;
        tg_err ignore = {0};
        int rc = c->s->ops->obj_get(c->s, c->scope, KIND_PRODUCT, pa->patch->id, c->a, &existing,
                                    &ignore);
        if (rc == TG_OK)
            return tg_err_set(c->err, TG_EEXISTS, "id", "Product already exists.");
        if (rc != TG_ENOTFOUND)
            return tg_err_set(c->err, rc, NULL, "%s", ignore.msg);
        tg_strlcpy(p->id, pa->patch->id, sizeof p->id);
        tg_idem_note_chosen_id(p->id);
    } else {
        int rc = bill_new_id(c, p->id, "prod_");
        if (rc)
            return rc;
    }
    p->created = c->now;
    p->livemode = c->scope->livemode;
    p->active = true;
    int rc = product_apply(c, p, pa->patch);
    if (!rc)
        rc = bill_save_product(c, p);
    if (!rc)
        rc = bill_emit(c, "product.created", TG_OBJ_PRODUCT, p);
    return rc;
}

int tg_product_create(tg_service *svc, const tg_scope *scope, const tg_product_patch *p,
                      tg_arena *a, tg_product *out, tg_err *err)
{
    if (!p->name.set || !p->name.value)
        return tg_err_set(err, TG_EMISSING, "name", "Missing required param: name.");
    if (p->id && (strlen(p->id) < 1 || strlen(p->id) > 60 || strchr(p->id, '/')))
        return tg_err_set(err, TG_EINVAL, "id", "Invalid id: 1 to 60 characters, no '/'.");
    int rc = tg_metadata_validate(&p->metadata, "metadata", err);
    if (rc)
        return rc;
    product_args pa = {NULL, p, false, out};
    return bill_write(svc, scope, a, product_create_fn, &pa, err);
}

static int product_change_fn(bctx *c, void *arg)
{
    product_args *pa = arg;
    int rc = bill_load_product(c, pa->id, "id", pa->out);
    if (rc)
        return rc;
    if (pa->delete) {
        tg_obj *rows;
        size_t n;
        tg_page page = {.limit = 1};
        tg_obj_filter f = {.parent = pa->id, .active = -1};
        rc = c->s->ops->obj_list(c->s, c->scope, KIND_PRICE, &f, &page, c->a, &rows, &n, c->err);
        if (rc)
            return rc;
        if (n)
            return tg_err_set(c->err, TG_ESTATE, NULL,
                              "This product cannot be deleted because it has one or more "
                              "user-created prices.");
        /* Deleted products are gone (404), like Stripe's; their events keep a snapshot. */
        pa->out->deleted = true;
        pa->out->active = false;
        rc = c->s->ops->obj_delete(c->s, c->scope, KIND_PRODUCT, pa->id, c->err);
        return rc ? rc : bill_emit(c, "product.deleted", TG_OBJ_PRODUCT, pa->out);
    }
    rc = product_apply(c, pa->out, pa->patch);
    if (!rc)
        rc = bill_emit(c, "product.updated", TG_OBJ_PRODUCT, pa->out); /* before: see bill_emit */
    return rc ? rc : bill_save_product(c, pa->out);
}

int tg_product_update(tg_service *svc, const tg_scope *scope, const char *id,
                      const tg_product_patch *p, tg_arena *a, tg_product *out, tg_err *err)
{
    int rc = tg_metadata_validate(&p->metadata, "metadata", err);
    if (rc)
        return rc;
    product_args pa = {id, p, false, out};
    return bill_write(svc, scope, a, product_change_fn, &pa, err);
}

int tg_product_delete(tg_service *svc, const tg_scope *scope, const char *id, tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_product p;
    product_args pa = {id, NULL, true, &p};
    int rc = bill_write(svc, scope, &a, product_change_fn, &pa, err);
    tg_arena_free(&a);
    return rc;
}

int tg_product_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                        tg_product *out, tg_err *err)
{
    return bill_retrieve(svc, scope, KIND_PRODUCT, id, bill_decode_product, a, out, err);
}

typedef struct list_args {
    const char *kind;
    tg_obj_filter f;
    const tg_page *page;
    tg_decode_fn decode;
    size_t size;
    void **out;
    size_t *n;
    bool *has_more;
} list_args;

static int list_fn(bctx *c, void *arg)
{
    list_args *l = arg;
    return bill_list(c, l->kind, &l->f, l->page, l->decode, l->size, l->out, l->n, l->has_more);
}

int tg_product_list(tg_service *svc, const tg_scope *scope, const tg_catalog_filter *f,
                    const tg_page *page, tg_arena *a, tg_product **out, size_t *n,
                    bool *has_more, tg_err *err)
{
    list_args l = {KIND_PRODUCT, {.active = f->active, .created = f->created}, page,
                   bill_decode_product, sizeof **out, (void **)out, n, has_more};
    return bill_read(svc, scope, a, list_fn, &l, err);
}

/* ---------------------------------------------------------------- prices */

typedef struct price_args {
    const tg_price *spec;
    const char *product_name;
    bool transfer_lookup_key;
    const char *id;
    const tg_price_patch *patch;
    tg_price *out;
} price_args;

/* Takes lookup_key away from the active price holding it (transfer_lookup_key), or refuses. */
static int lookup_key_claim(bctx *c, const char *key, const char *self, bool transfer)
{
    tg_obj *rows;
    size_t n;
    tg_page page = {.limit = 5};
    const char *keys[1] = {key};
    tg_obj_filter f = {.active = -1, .lookup_any = keys, .nlookup = 1};
    int rc = c->s->ops->obj_list(c->s, c->scope, KIND_PRICE, &f, &page, c->a, &rows, &n, c->err);
    for (size_t i = 0; !rc && i < n; i++) {
        if (strcmp(rows[i].id, self) == 0)
            continue;
        if (!transfer)
            return tg_err_set(c->err, TG_EEXISTS, "lookup_key",
                              "A price (%s) already uses that lookup key.", rows[i].id);
        tg_price other;
        if (tg_price_decode(rows[i].body, rows[i].len, c->a, &other) < 0)
            return tg_err_set(c->err, TG_ESTORE, NULL, "Corrupt price record.");
        other.lookup_key = NULL;
        rc = bill_emit(c, "price.updated", TG_OBJ_PRICE, &other); /* before: see bill_emit */
        if (!rc)
            rc = bill_save_price(c, &other);
    }
    return rc;
}

static int price_create_fn(bctx *c, void *arg)
{
    price_args *pa = arg;
    tg_price *p = pa->out;
    *p = *pa->spec;
    int rc = bill_new_id(c, p->id, "price_");
    if (rc)
        return rc;
    p->created = c->now;
    p->livemode = c->scope->livemode;
    if (p->product[0]) {
        tg_product prod;
        if ((rc = bill_load_product(c, p->product, "product", &prod)))
            return rc;
    } else {
        tg_product_patch np = {.name = {true, pa->product_name}, .active = -1};
        product_args cpa = {NULL, &np, false, tg_arena_alloc(c->a, sizeof(tg_product))};
        if (!cpa.out)
            return tg_err_set(c->err, TG_ENOMEM, NULL, NULL);
        if ((rc = product_create_fn(c, &cpa)))
            return rc;
        tg_strlcpy(p->product, cpa.out->id, sizeof p->product);
    }
    if (p->metered) {
        tg_meter m;
        tg_err ignore = {0};
        rc = c->s->ops->meter_get(c->s, c->scope, p->meter, &m, &ignore);
        if (rc == TG_ENOTFOUND)
            return tg_err_set(c->err, TG_ENOTFOUND, "recurring[meter]", "No such meter: '%s'",
                              p->meter);
        if (rc)
            return tg_err_set(c->err, rc, NULL, "%s", ignore.msg);
        if (!m.active)
            return tg_err_set(c->err, TG_EPRICEMETER, "recurring[meter]",
                              "The meter %s is inactive; prices can only use active meters.",
                              p->meter);
    }
    if (p->lookup_key && (rc = lookup_key_claim(c, p->lookup_key, p->id, pa->transfer_lookup_key)))
        return rc;
    rc = bill_save_price(c, p);
    return rc ? rc : bill_emit(c, "price.created", TG_OBJ_PRICE, p);
}

int tg_price_create(tg_service *svc, const tg_scope *scope, const tg_price *spec,
                    const char *product_name, bool transfer_lookup_key, tg_arena *a,
                    tg_price *out, tg_err *err)
{
    if (!tg_currency_known(spec->currency))
        return tg_err_set(err, TG_EINVAL, "currency", "Invalid currency: %s.", spec->currency);
    if (!spec->product[0] && !product_name)
        return tg_err_set(err, TG_EMISSING, "product",
                          "Missing required param: product (or product_data[name]).");
    if (spec->pricing.scheme == TG_SCHEME_TIERED) {
        int bad;
        char msg[200];
        if (tg_pricing_check_tiers(spec->pricing.tiers, spec->pricing.ntiers, &bad, msg,
                                   sizeof msg)) {
            char param[32] = "tiers";
            if (bad >= 0)
                snprintf(param, sizeof param, "tiers[%d]", bad);
            return tg_err_set(err, TG_EINVAL, param, "%s", msg);
        }
    }
    int rc = tg_metadata_validate(&spec->metadata, "metadata", err);
    if (rc)
        return rc;
    price_args pa = {spec, product_name, transfer_lookup_key, NULL, NULL, out};
    return bill_write(svc, scope, a, price_create_fn, &pa, err);
}

static int price_update_fn(bctx *c, void *arg)
{
    price_args *pa = arg;
    tg_price *p = pa->out;
    int rc = bill_load_price(c, pa->id, "id", p);
    if (rc)
        return rc;
    const tg_price_patch *u = pa->patch;
    if (u->active >= 0)
        p->active = u->active;
    if (u->nickname.set)
        p->nickname = u->nickname.value;
    if (u->lookup_key.set) {
        p->lookup_key = u->lookup_key.value;
        if (p->lookup_key &&
            (rc = lookup_key_claim(c, p->lookup_key, p->id, u->transfer_lookup_key)))
            return rc;
    }
    if ((rc = tg_metadata_merge(&p->metadata, u->metadata_clear, &u->metadata, c->a, "metadata",
                                c->err)))
        return rc;
    rc = bill_emit(c, "price.updated", TG_OBJ_PRICE, p); /* before: see bill_emit */
    return rc ? rc : bill_save_price(c, p);
}

int tg_price_update(tg_service *svc, const tg_scope *scope, const char *id,
                    const tg_price_patch *p, tg_arena *a, tg_price *out, tg_err *err)
{
    int rc = tg_metadata_validate(&p->metadata, "metadata", err);
    if (rc)
        return rc;
    price_args pa = {NULL, NULL, false, id, p, out};
    return bill_write(svc, scope, a, price_update_fn, &pa, err);
}

int tg_price_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                      tg_price *out, tg_err *err)
{
    return bill_retrieve(svc, scope, KIND_PRICE, id, bill_decode_price, a, out, err);
}

int tg_price_list(tg_service *svc, const tg_scope *scope, const tg_catalog_filter *f,
                  const tg_page *page, tg_arena *a, tg_price **out, size_t *n, bool *has_more,
                  tg_err *err)
{
    if (f->nlookup_keys > 10)
        return tg_err_set(err, TG_EINVAL, "lookup_keys", "At most 10 lookup keys.");
    list_args l = {KIND_PRICE,
                   {.active = f->active, .parent = f->product, .lookup_any = f->lookup_keys,
                    .nlookup = f->nlookup_keys, .created = f->created},
                   page, bill_decode_price, sizeof **out, (void **)out, n, has_more};
    char currency[32], type[32];
    const char *tags[2];
    if (f->currency) {
        snprintf(currency, sizeof currency, " currency=%.3s ", f->currency);
        tags[l.f.ntags++] = currency;
    }
    if (f->recurring >= 0) {
        snprintf(type, sizeof type, " type=%s ", f->recurring ? "recurring" : "one_time");
        tags[l.f.ntags++] = type;
    }
    l.f.tags = tags;
    return bill_read(svc, scope, a, list_fn, &l, err);
}

/* ---------------------------------------------------------------- test clocks */

#define CLOCK_LIFETIME (30 * 86400) /* Stripe deletes test clocks 30 days after creation */

int tg_test_clock_time(tg_service *svc, tg_store *s, const tg_scope *scope, const char *id,
                       int64_t *frozen, int64_t *deletes_after, tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    bctx c = {.svc = svc, .s = s, .scope = scope, .a = &a, .err = err};
    tg_test_clock k;
    int rc = bill_load_clock(&c, id, &k);
    if (!rc && k.deleted)
        rc = tg_err_set(err, TG_ENOTFOUND, "test_clock", "No such test clock: '%s'", id);
    if (!rc)
        *frozen = k.frozen_time;
    if (!rc && deletes_after)
        *deletes_after = k.deletes_after;
    tg_arena_free(&a);
    return rc;
}

typedef struct clock_args {
    const char *id;
    int64_t frozen_time;
    const char *name;
    tg_test_clock *out;
} clock_args;

static int clock_create_fn(bctx *c, void *arg)
{
    clock_args *ca = arg;
    tg_test_clock *k = ca->out;
    memset(k, 0, sizeof *k);
    int rc = bill_new_id(c, k->id, "clock_");
    if (rc)
        return rc;
    k->created = c->now;
    k->deletes_after = c->now + CLOCK_LIFETIME;
    k->frozen_time = ca->frozen_time;
    k->name = ca->name;
    k->status = TG_CLOCK_READY;
    rc = bill_save_clock(c, k);
    if (!rc)
        rc = bill_emit(c, "test_helpers.test_clock.created", TG_OBJ_TEST_CLOCK, k);
    if (!rc)
        tg_clock_registry_set(c->svc, c->scope, k->id, k->frozen_time, k->deletes_after);
    return rc;
}

int tg_test_clock_create(tg_service *svc, const tg_scope *scope, int64_t frozen_time,
                         const char *name, tg_arena *a, tg_test_clock *out, tg_err *err)
{
    if (scope->livemode)
        return tg_err_set(err, TG_EINVAL, NULL, "Test clocks exist only in test mode.");
    if (name && strlen(name) > 300)
        return tg_err_set(err, TG_EINVAL, "name", "Invalid name: at most 300 characters.");
    clock_args ca = {NULL, frozen_time, name, out};
    return bill_write(svc, scope, a, clock_create_fn, &ca, err);
}

static int clock_get_fn(bctx *c, void *arg)
{
    clock_args *ca = arg;
    int rc = bill_load_clock(c, ca->id, ca->out);
    if (!rc && ca->out->deleted)
        return tg_err_set(c->err, TG_ENOTFOUND, "test_clock", "No such test clock: '%s'", ca->id);
    return rc;
}

int tg_test_clock_retrieve(tg_service *svc, const tg_scope *scope, const char *id, tg_arena *a,
                           tg_test_clock *out, tg_err *err)
{
    clock_args ca = {id, 0, NULL, out};
    return bill_read(svc, scope, a, clock_get_fn, &ca, err);
}

int tg_test_clock_list(tg_service *svc, const tg_scope *scope, const tg_page *page, tg_arena *a,
                       tg_test_clock **out, size_t *n, bool *has_more, tg_err *err)
{
    list_args l = {KIND_CLOCK, {.active = 1}, page, decode_clock, sizeof **out, (void **)out, n,
                   has_more};
    return bill_read(svc, scope, a, list_fn, &l, err);
}

static int clock_advance_fn(bctx *c, void *arg)
{
    clock_args *ca = arg;
    tg_test_clock *k = ca->out;
    int rc = clock_get_fn(c, ca);
    if (rc)
        return rc;
    if (ca->frozen_time <= k->frozen_time)
        return tg_err_set(c->err, TG_EINVAL, "frozen_time",
                          "The frozen time must be after the test clock's current frozen time "
                          "(%lld).", (long long)k->frozen_time);
    int64_t shortest;
    if ((rc = bill_clock_shortest_interval(c, k->id, &shortest)))
        return rc;
    int64_t limit = shortest ? 2 * shortest : 2 * 366 * 86400;
    if (ca->frozen_time - k->frozen_time > limit)
        return tg_err_set(c->err, TG_EINVAL, "frozen_time",
                          "Cannot advance more than %s in one step (to at most %lld).",
                          shortest ? "two intervals of the shortest subscription on this clock"
                                   : "two years",
                          (long long)(k->frozen_time + limit));
    if ((rc = bill_run_clock(c, k->id, ca->frozen_time)))
        return rc;
    k->frozen_time = ca->frozen_time;
    k->status = TG_CLOCK_READY;
    c->now = k->frozen_time;
    rc = bill_save_clock(c, k);
    if (!rc)
        rc = bill_emit(c, "test_helpers.test_clock.ready", TG_OBJ_TEST_CLOCK, k);
    if (!rc)
        tg_clock_registry_set(c->svc, c->scope, k->id, k->frozen_time, k->deletes_after);
    return rc;
}

int tg_test_clock_advance(tg_service *svc, const tg_scope *scope, const char *id,
                          int64_t frozen_time, tg_arena *a, tg_test_clock *out, tg_err *err)
{
    clock_args ca = {id, frozen_time, NULL, out};
    int rc = bill_write(svc, scope, a, clock_advance_fn, &ca, err);
    if (rc) /* the registry may have seen intermediate times of a job that rolled back */
        tg_clock_registry_remove(svc, scope, id);
    return rc;
}

static int clock_delete_fn(bctx *c, void *arg)
{
    clock_args *ca = arg;
    int rc = clock_get_fn(c, ca);
    if (rc)
        return rc;
    if ((rc = bill_cancel_clock_subscriptions(c, ca->id)))
        return rc;
    /* Its customers are deleted with it, each with its event as DELETE /v1/customers/{id}. */
    for (;;) {
        tg_customer *cs;
        size_t n;
        tg_page page = {.limit = 100};
        tg_customer_filter on_clock = {.test_clock = ca->id};
        rc = c->s->ops->customer_list(c->s, c->scope, &on_clock, &page, c->a, &cs, &n, c->err);
        if (rc || !n)
            break;
        for (size_t i = 0; !rc && i < n; i++) {
            rc = bill_emit(c, "customer.deleted", TG_OBJ_CUSTOMER, &cs[i]);
            cs[i].deleted = true;
            if (!rc)
                rc = c->s->ops->customer_put(c->s, c->scope, &cs[i], c->err);
            if (!rc)
                rc = tg_customer_registry_put(c->svc, c->scope, &cs[i]);
        }
        if (rc)
            break;
    }
    if (rc)
        return rc;
    ca->out->deleted = true;
    rc = bill_save_clock(c, ca->out);
    if (!rc)
        rc = bill_emit(c, "test_helpers.test_clock.deleted", TG_OBJ_TEST_CLOCK, ca->out);
    if (!rc)
        tg_clock_registry_remove(c->svc, c->scope, ca->id);
    return rc;
}

int tg_test_clock_delete(tg_service *svc, const tg_scope *scope, const char *id, tg_err *err)
{
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_test_clock k;
    clock_args ca = {id, 0, NULL, &k};
    int rc = bill_write(svc, scope, &a, clock_delete_fn, &ca, err);
    tg_arena_free(&a);
    return rc;
}

/* ---------------------------------------------------------------- events */

static int event_retrieve_fn(bctx *c, void *arg)
{
    retrieve_args *r = arg;
    int rc = retrieve_fn(c, r);
    return rc ? rc : bill_pending_webhooks(c, r->out);
}

int tg_billing_event_retrieve(tg_service *svc, const tg_scope *scope, const char *id,
                              tg_arena *a, tg_billing_event *out, tg_err *err)
{
    retrieve_args r = {KIND_EVENT, id, decode_event, out};
    return bill_read(svc, scope, a, event_retrieve_fn, &r, err);
}

static int event_list_fn(bctx *c, void *arg)
{
    list_args *l = arg;
    int rc = list_fn(c, l);
    tg_billing_event *items = *l->out;
    for (size_t i = 0; !rc && i < *l->n; i++)
        rc = bill_pending_webhooks(c, &items[i]);
    return rc;
}

int tg_billing_event_list(tg_service *svc, const tg_scope *scope, const tg_event_filter *f,
                          const tg_page *page, tg_arena *a, tg_billing_event **out, size_t *n,
                          bool *has_more, tg_err *err)
{
    list_args l = {KIND_EVENT,
                   {.active = -1, .created = f->created, .lookup_any = f->types,
                    .nlookup = f->ntypes},
                   page, decode_event, sizeof **out, (void **)out, n, has_more};
    const char *type = f->type;
    char *prefix = NULL;
    size_t len = type ? strlen(type) : 0;
    if (len >= 2 && strcmp(type + len - 2, ".*") == 0) {
        prefix = tg_arena_strndup(a, type, len - 1); /* keep the dot */
        if (!prefix)
            return tg_err_set(err, TG_ENOMEM, NULL, NULL);
        l.f.lookup_prefix = prefix;
    } else if (type) {
        l.f.lookup_any = &type;
        l.f.nlookup = 1;
    }
    return bill_read(svc, scope, a, event_list_fn, &l, err);
}
