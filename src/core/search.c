/* search.c -- Stripe's search endpoints over customers, products, prices, subscriptions and
 * invoices.
 *
 * Each resource is a table of the fields Stripe lets its search query (with their types) and
 * a function that reads one of them off a decoded object; search_query.c parses and matches.
 * A search walks the mode's objects newest first, a page of 100 at a time, on a reader, and
 * keeps the matches: a scan, not an index. That makes every object searchable the moment its
 * write commits (Stripe's search lags by up to a minute and warns against read-after-write),
 * at a cost linear in the mode's objects of that resource: a page's objects are decoded into a
 * scratch arena that is reset for the next page, so memory stays bounded, and only the
 * matches returned are read again into the answer's arena. With expand[]=total_count the walk
 * goes on past the page to count, up to 10,000 as Stripe counts.
 *
 * A walk is one read transaction, so its pages and the matches it reads again are one state
 * of the store. Every object of the mode is searched, test clock customers and canceled
 * subscriptions included (the query says what it wants); deleted customers and products are
 * not. next_page names the row number the next page starts below and a hash of the resource
 * and query: it stays good when that object is deleted, and another search refuses it.
 */
#include "core/search.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "base/str.h"
#include "core/billing_internal.h"
#include "core/metadata.h"
#include "core/search_query.h"

#define SCAN_PAGE 100

static void set_str(tg_search_value *v, const char *s)
{
    v->present = s && *s;
    v->str = s;
}

static void set_num(tg_search_value *v, int64_t n)
{
    v->present = true;
    v->num = n;
}

static void set_bool(tg_search_value *v, bool b)
{
    set_str(v, b ? "true" : "false");
}

/* ---------------------------------------------------------------- the resources */

enum { C_CREATED, C_EMAIL, C_METADATA, C_NAME, C_PHONE };
static const tg_search_field customer_fields[] = {
    [C_CREATED] = {"created", TG_SEARCH_NUMBER}, [C_EMAIL] = {"email", TG_SEARCH_STRING},
    [C_METADATA] = {"metadata", TG_SEARCH_TOKEN}, [C_NAME] = {"name", TG_SEARCH_STRING},
    [C_PHONE] = {"phone", TG_SEARCH_STRING},
};

static void customer_get(const void *obj, size_t field, const char *key, tg_search_value *v)
{
    const tg_customer *c = obj;
    switch (field) {
    case C_CREATED: set_num(v, c->created); break;
    case C_EMAIL: set_str(v, c->email); break;
    case C_METADATA: set_str(v, tg_metadata_get(&c->metadata, key)); break;
    case C_NAME: set_str(v, c->name); break;
    case C_PHONE: set_str(v, tg_metadata_get(&c->contact, "phone")); break;
    }
}

/* Products have no shippable or url here: those fields are always null. */
enum { PR_ACTIVE, PR_DESCRIPTION, PR_METADATA, PR_NAME, PR_SHIPPABLE, PR_URL };
static const tg_search_field product_fields[] = {
    [PR_ACTIVE] = {"active", TG_SEARCH_TOKEN}, [PR_DESCRIPTION] = {"description", TG_SEARCH_STRING},
    [PR_METADATA] = {"metadata", TG_SEARCH_TOKEN}, [PR_NAME] = {"name", TG_SEARCH_STRING},
    [PR_SHIPPABLE] = {"shippable", TG_SEARCH_TOKEN}, [PR_URL] = {"url", TG_SEARCH_STRING},
};

static void product_get(const void *obj, size_t field, const char *key, tg_search_value *v)
{
    const tg_product *p = obj;
    switch (field) {
    case PR_ACTIVE: set_bool(v, p->active); break;
    case PR_DESCRIPTION: set_str(v, p->description); break;
    case PR_METADATA: set_str(v, tg_metadata_get(&p->metadata, key)); break;
    case PR_NAME: set_str(v, p->name); break;
    default: break; /* shippable, url: null */
    }
}

enum { PC_ACTIVE, PC_CURRENCY, PC_LOOKUP_KEY, PC_METADATA, PC_PRODUCT, PC_TYPE };
static const tg_search_field price_fields[] = {
    [PC_ACTIVE] = {"active", TG_SEARCH_TOKEN}, [PC_CURRENCY] = {"currency", TG_SEARCH_TOKEN},
    [PC_LOOKUP_KEY] = {"lookup_key", TG_SEARCH_STRING},
    [PC_METADATA] = {"metadata", TG_SEARCH_TOKEN}, [PC_PRODUCT] = {"product", TG_SEARCH_STRING},
    [PC_TYPE] = {"type", TG_SEARCH_TOKEN},
};

static void price_get(const void *obj, size_t field, const char *key, tg_search_value *v)
{
    const tg_price *p = obj;
    switch (field) {
    case PC_ACTIVE: set_bool(v, p->active); break;
    case PC_CURRENCY: set_str(v, p->currency); break;
    case PC_LOOKUP_KEY: set_str(v, p->lookup_key); break;
    case PC_METADATA: set_str(v, tg_metadata_get(&p->metadata, key)); break;
    case PC_PRODUCT: set_str(v, p->product); break;
    case PC_TYPE: set_str(v, p->recurring ? "recurring" : "one_time"); break;
    }
}

enum { S_CREATED, S_METADATA, S_STATUS };
static const tg_search_field subscription_fields[] = {
    [S_CREATED] = {"created", TG_SEARCH_NUMBER}, [S_METADATA] = {"metadata", TG_SEARCH_TOKEN},
    [S_STATUS] = {"status", TG_SEARCH_TOKEN},
};

static void subscription_get(const void *obj, size_t field, const char *key,
                             tg_search_value *v)
{
    const tg_subscription *s = obj;
    switch (field) {
    case S_CREATED: set_num(v, s->created); break;
    case S_METADATA: set_str(v, tg_metadata_get(&s->metadata, key)); break;
    case S_STATUS: set_str(v, tg_sub_status_words[s->status]); break;
    }
}

/* Invoices have no receipt numbers here: receipt_number is always null. */
enum {
    I_CREATED, I_CURRENCY, I_CUSTOMER, I_METADATA, I_NUMBER, I_RECEIPT_NUMBER, I_STATUS,
    I_SUBSCRIPTION, I_TOTAL
};
static const tg_search_field invoice_fields[] = {
    [I_CREATED] = {"created", TG_SEARCH_NUMBER}, [I_CURRENCY] = {"currency", TG_SEARCH_TOKEN},
    [I_CUSTOMER] = {"customer", TG_SEARCH_TOKEN}, [I_METADATA] = {"metadata", TG_SEARCH_TOKEN},
    [I_NUMBER] = {"number", TG_SEARCH_STRING},
    [I_RECEIPT_NUMBER] = {"receipt_number", TG_SEARCH_STRING},
    [I_STATUS] = {"status", TG_SEARCH_STRING}, [I_SUBSCRIPTION] = {"subscription", TG_SEARCH_STRING},
    [I_TOTAL] = {"total", TG_SEARCH_NUMBER},
};

static void invoice_get(const void *obj, size_t field, const char *key, tg_search_value *v)
{
    const tg_invoice *i = obj;
    switch (field) {
    case I_CREATED: set_num(v, i->created); break;
    case I_CURRENCY: set_str(v, i->currency); break;
    case I_CUSTOMER: set_str(v, i->customer); break;
    case I_METADATA: set_str(v, tg_metadata_get(&i->metadata, key)); break;
    case I_NUMBER: set_str(v, i->number); break;
    case I_STATUS: set_str(v, tg_inv_status_words[i->status]); break;
    case I_SUBSCRIPTION: set_str(v, i->subscription); break;
    case I_TOTAL: set_num(v, i->total); break;
    default: break; /* receipt_number: null */
    }
}

typedef struct resource {
    const tg_search_field *fields;
    size_t nfields;
    tg_search_get_fn get;
    const char *kind; /* its object kind; NULL: customers (a table of their own) */
    tg_decode_fn decode;
    size_t size;
} resource;

#define FIELDS(f) f, sizeof f / sizeof *f
static const resource resources[] = {
    [TG_SEARCH_CUSTOMERS] = {FIELDS(customer_fields), customer_get, NULL, NULL,
                             sizeof(tg_customer)},
    [TG_SEARCH_PRODUCTS] = {FIELDS(product_fields), product_get, KIND_PRODUCT,
                            bill_decode_product, sizeof(tg_product)},
    [TG_SEARCH_PRICES] = {FIELDS(price_fields), price_get, KIND_PRICE, bill_decode_price,
                          sizeof(tg_price)},
    [TG_SEARCH_SUBSCRIPTIONS] = {FIELDS(subscription_fields), subscription_get, KIND_SUB,
                                 bill_decode_sub, sizeof(tg_subscription)},
    [TG_SEARCH_INVOICES] = {FIELDS(invoice_fields), invoice_get, KIND_INVOICE,
                            bill_decode_invoice, sizeof(tg_invoice)},
};

/* The walk takes an object's id from its first member. */
_Static_assert(offsetof(tg_customer, id) == 0 && offsetof(tg_product, id) == 0 &&
                   offsetof(tg_price, id) == 0 && offsetof(tg_subscription, id) == 0 &&
                   offsetof(tg_invoice, id) == 0,
               "searched objects start with their id");

/* ---------------------------------------------------------------- the walk */

typedef struct scan {
    const resource *r;
    const tg_scope *scope;
    const tg_search_query *q;
    const tg_search_request *req;
    int64_t cursor; /* the page's: matches older than this row number; 0: from the newest */
    tg_arena *a;
    tg_search_result *out;
} scan;

/* Reads one page of the walk (up to SCAN_PAGE + 1 objects, decoded, with their row numbers)
 * into scratch. */
static int read_page(const scan *sc, tg_store *s, const tg_page *page, tg_arena *scratch,
                     char **items, int64_t **seqs, size_t *n, tg_err *err)
{
    if (!sc->r->kind) {
        tg_customer_filter every = {.any_clock = true};
        tg_customer *cs;
        int rc = s->ops->customer_list(s, sc->scope, &every, page, scratch, &cs, n, err);
        if (rc)
            return rc;
        *items = (char *)cs;
        if (!(*seqs = tg_arena_alloc(scratch, (*n ? *n : 1) * sizeof **seqs)))
            return tg_err_set(err, TG_ENOMEM, NULL, NULL);
        for (size_t i = 0; i < *n; i++)
            (*seqs)[i] = cs[i].seq;
        return TG_OK;
    }
    tg_obj *rows;
    tg_obj_filter every = {.active = -1};
    int rc = s->ops->obj_list(s, sc->scope, sc->r->kind, &every, page, scratch, &rows, n, err);
    if (rc)
        return rc;
    if (!(*items = tg_arena_alloc(scratch, (*n ? *n : 1) * sc->r->size)) ||
        !(*seqs = tg_arena_alloc(scratch, (*n ? *n : 1) * sizeof **seqs)))
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    for (size_t i = 0; i < *n; i++) {
        if (sc->r->decode(rows[i].body, rows[i].len, scratch, *items + i * sc->r->size) < 0)
            return tg_err_set(err, TG_ESTORE, NULL, "Corrupt %s record.", sc->r->kind);
        (*seqs)[i] = rows[i].seq;
    }
    return TG_OK;
}

/* Reads a match again, into the answer's arena (the walk's transaction: as the page saw it). */
static int keep(const scan *sc, tg_store *s, const char *id, void *out, tg_err *err)
{
    if (!sc->r->kind)
        return s->ops->customer_get(s, sc->scope, id, sc->a, out, err);
    tg_obj o;
    int rc = s->ops->obj_get(s, sc->scope, sc->r->kind, id, sc->a, &o, err);
    if (rc == TG_ENOTFOUND)
        return tg_err_set(err, TG_ESTORE, NULL, "%s vanished during a search.", id);
    if (!rc && sc->r->decode(o.body, o.len, sc->a, out) < 0)
        rc = tg_err_set(err, TG_ESTORE, NULL, "Corrupt %s record.", sc->r->kind);
    return rc;
}

/* The walk, in one read transaction so that its pages and the matches read again are one
 * state of the store: newest first from the page's cursor, keeping up to limit matches and
 * noting whether there are more. Counting every match (total_count) walks from the top,
 * counting the matches newer than the cursor without keeping them, and goes on to the end
 * or to TG_SEARCH_TOTAL_MAX. */
static int walk(const scan *sc, tg_store *s, tg_err *err)
{
    const tg_search_request *req = sc->req;
    tg_search_result *out = sc->out;
    size_t size = sc->r->size;
    char *kept = tg_arena_alloc(sc->a, (size_t)req->limit * size);
    int64_t last_kept = 0;
    if (!kept)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    tg_page page = {.limit = SCAN_PAGE, .before_seq = req->total_count ? 0 : sc->cursor};
    tg_arena scratch;
    tg_arena_init(&scratch, 0);
    int rc = TG_OK;
    bool done = false;
    while (!rc && !done) {
        char *items = NULL;
        int64_t *seqs = NULL;
        size_t n = 0;
        tg_arena_reset(&scratch);
        if ((rc = read_page(sc, s, &page, &scratch, &items, &seqs, &n, err)))
            break;
        done = n <= SCAN_PAGE;
        for (size_t i = 0; i < n && i < SCAN_PAGE; i++) {
            const char *obj = items + i * size;
            bool match = tg_search_match(sc->q, obj, sc->r->get);
            if (match && out->total_count < TG_SEARCH_TOTAL_MAX)
                out->total_count++;
            if (!match || (sc->cursor && seqs[i] >= sc->cursor))
                continue;
            if (out->n < (size_t)req->limit) {
                if ((rc = keep(sc, s, obj, kept + out->n * size, err)))
                    break;
                out->n++;
                last_kept = seqs[i];
                continue;
            }
            out->has_more = true;
            if (!req->total_count || out->total_count == TG_SEARCH_TOTAL_MAX) {
                done = true;
                break;
            }
        }
        if (n > SCAN_PAGE)
            page.before_seq = seqs[SCAN_PAGE - 1];
    }
    tg_arena_free(&scratch);
    if (rc)
        return rc;
    out->items = kept;
    out->next_page_seq = out->has_more ? last_kept : 0;
    return TG_OK;
}

static int scan_job(tg_store *s, void *arg, tg_err *err)
{
    int rc = s->ops->read_begin(s, err);
    if (rc)
        return rc;
    rc = walk(arg, s, err);
    s->ops->rollback(s);
    return rc;
}

/* A page token names the row the next page starts below and the search it belongs to (a hash
 * of the mode, the resource and the query), so that it stays good when that row is deleted
 * and is refused with another query. */
static uint32_t search_hash(const tg_scope *scope, tg_search_resource r, const char *query)
{
    uint32_t h = 2166136261u ^ ((uint32_t)r << 1 | (scope->livemode ? 1u : 0u));
    for (const unsigned char *p = (const unsigned char *)query; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static void page_write(char *out, size_t cap, int64_t seq, uint32_t hash)
{
    snprintf(out, cap, "sp_%lld.%08x", (long long)seq, hash);
}

/* Reads a token page_write wrote for this search: only its exact spelling is taken. */
static bool page_read(const char *page, uint32_t hash, int64_t *seq)
{
    unsigned long long v;
    unsigned h;
    char again[48];
    if (strncmp(page, "sp_", 3) != 0)
        return false;
    const char *p = page + 3;
    size_t digits = strspn(p, "0123456789");
    if (*p == '0' || digits == 0 || digits > 19 || sscanf(p, "%llu.%8x", &v, &h) != 2 ||
        v > INT64_MAX || h != hash)
        return false;
    page_write(again, sizeof again, (int64_t)v, hash);
    if (strcmp(again, page) != 0)
        return false;
    *seq = (int64_t)v;
    return true;
}

int tg_search(tg_service *svc, const tg_scope *scope, tg_search_resource r,
              const tg_search_request *q, tg_arena *a, tg_search_result *out, tg_err *err)
{
    memset(out, 0, sizeof *out);
    tg_search_query query;
    int rc = tg_search_parse(q->query, resources[r].fields, resources[r].nfields, a, &query, err);
    if (rc)
        return rc;
    uint32_t hash = search_hash(scope, r, q->query);
    scan sc = {&resources[r], scope, &query, q, 0, a, out};
    if (q->page && !page_read(q->page, hash, &sc.cursor))
        return tg_err_set(err, TG_EINVAL, "page",
                          "Invalid page: '%s' is not a page of this search.", q->page);
    if ((rc = tg_service_read(svc, scan_job, &sc, err)))
        return rc;
    if (out->next_page_seq) {
        char token[48];
        page_write(token, sizeof token, out->next_page_seq, hash);
        if (!(out->next_page = tg_arena_strdup(a, token)))
            return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    }
    return TG_OK;
}
