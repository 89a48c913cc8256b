/* expand.c -- expand[] paths: checked against a map of the objects' fields, then followed by
 * the renderers (see expand.h).
 *
 * The map lists, for each object type, the fields a path may name: an expandable id (the
 * field becomes the object it names, whose own fields a longer path may name in turn), or a
 * nested object or list on the way to one. A path is checked field by field from the
 * response's object (a list's paths start with "data"); a field the map does not list, or a
 * path that ends on a field that is not expandable, is refused as Stripe refuses it: 400
 * "This property cannot be expanded (path)." Naming a path also expands every expandable
 * field on the way ("latest_invoice.customer" expands the invoice too), as on Stripe.
 *
 * While rendering, `at` holds the dotted path of the value being written; an expandable
 * field is expanded when a requested path is at + field, or starts with at + field + ".".
 * Requests without expand[] pay one comparison per expandable field.
 */
#include "http/expand.h"

#include <string.h>

#include "base/log.h"
#include "http/api.h"

typedef struct field_link {
    const char *type, *field;
    const char *to; /* the type the field leads to; a "list:" prefix for a list of them */
    bool expandable; /* the field is an id that becomes the object */
} field_link;

static const field_link links[] = {
    {"customer", "test_clock", "test_helpers.test_clock", true},
    {"subscription", "customer", "customer", true},
    {"subscription", "latest_invoice", "invoice", true},
    {"subscription", "schedule", "subscription_schedule", true},
    {"subscription", "test_clock", "test_helpers.test_clock", true},
    {"subscription", "items", "list:subscription_item", false},
    {"subscription_item", "price", "price", false},
    {"price", "product", "product", true},
    {"price", "tiers", NULL, true},
    {"invoice", "customer", "customer", true},
    {"invoice", "test_clock", "test_helpers.test_clock", true},
    {"invoice", "lines", "list:line_item", false},
    {"invoice", "parent", "invoice.parent", false},
    {"invoice.parent", "subscription_details", "invoice.parent.subscription_details", false},
    {"invoice.parent.subscription_details", "subscription", "subscription", true},
    {"line_item", "pricing", "line_item.pricing", false},
    {"line_item.pricing", "price_details", "line_item.pricing.price_details", false},
    {"line_item.pricing.price_details", "price", "price", true},
    {"subscription_schedule", "customer", "customer", true},
    {"subscription_schedule", "subscription", "subscription", true},
    {"subscription_schedule", "test_clock", "test_helpers.test_clock", true},
    {"entitlements.active_entitlement", "feature", "entitlements.feature", true},
    /* Expandable on Stripe, and null, empty or an opaque reference here (no payment methods,
     * sources, discounts, Connect, tax ids): accepted, and shown as they are. */
    {"customer", "default_source", NULL, true},
    {"customer", "invoice_settings", "customer.invoice_settings", false},
    {"customer.invoice_settings", "default_payment_method", NULL, true},
    {"subscription", "application", NULL, true},
    {"subscription", "default_payment_method", NULL, true},
    {"subscription", "default_source", NULL, true},
    {"subscription", "discounts", NULL, true},
    {"subscription", "on_behalf_of", NULL, true},
    {"subscription", "pending_setup_intent", NULL, true},
    {"subscription_item", "discounts", NULL, true},
    {"invoice", "account_tax_ids", NULL, true},
    {"invoice", "application", NULL, true},
    {"invoice", "default_payment_method", NULL, true},
    {"invoice", "default_source", NULL, true},
    {"invoice", "discounts", NULL, true},
    {"invoice", "latest_revision", NULL, true},
    {"invoice", "on_behalf_of", NULL, true},
    {"line_item", "discounts", NULL, true},
    {"product", "default_price", NULL, true},
    {"product", "tax_code", NULL, true},
    {"subscription_schedule", "application", NULL, true},
};

static const field_link *link_of(const char *type, const char *field, size_t len)
{
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
        if (strcmp(links[i].type, type) == 0 && strlen(links[i].field) == len &&
            memcmp(links[i].field, field, len) == 0)
            return &links[i];
    return NULL;
}

/* Whether path, from an object of `type` (a list of them when list), names an expandable
 * field, through at most TG_EXPAND_DEPTH of them. */
static bool path_valid(const char *type, bool list, const char *path)
{
    const char *p = path;
    bool last_expandable = false;
    int expanded = 0;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (!type) /* past a field with nothing inside (tiers) */
            return false;
        if (list) {
            if (len != 4 || memcmp(p, "data", 4) != 0)
                return false;
            list = false;
            last_expandable = false;
        } else {
            const field_link *l = link_of(type, p, len);
            if (!l || (l->expandable && ++expanded > TG_EXPAND_DEPTH))
                return false;
            last_expandable = l->expandable;
            type = l->to;
            if (type && strncmp(type, "list:", 5) == 0) {
                type += 5;
                list = true;
            }
        }
        if (!dot)
            break;
        if (!dot[1])
            return false;
        p = dot + 1;
    }
    return last_expandable;
}

static bool refuse(tg_req *req, const char *path)
{
    tg_err_set(&req->err, TG_EINVAL, "expand", "This property cannot be expanded (%s).", path);
    return false;
}

bool tg_expand_read(tg_req *req, const char *type, bool list)
{
    tg_expand *x = &req->expand;
    x->n = 0;
    x->total_count = false;
    tg_param *p = tg_param_get(req->params, "expand");
    if (!p)
        return true;
    tg_param_use_all(p);
    tg_param one = *p;
    one.next = NULL;
    tg_param *first = p->kind == TG_PARAM_STRING ? &one : p->kind == TG_PARAM_ARRAY ? p->first
                                                                                    : NULL;
    if (!first && p->kind != TG_PARAM_ARRAY) {
        tg_err_set(&req->err, TG_EINVAL, "expand", "Invalid expand: must be an array of strings.");
        return false;
    }
    for (tg_param *e = first; e; e = e->next) {
        if (e->kind != TG_PARAM_STRING || !e->value) {
            tg_err_set(&req->err, TG_EINVAL, "expand",
                       "Invalid expand: must be an array of strings.");
            return false;
        }
        if (!*e->value)
            continue; /* expand= (empty): nothing */
        if (x->search && strcmp(e->value, "total_count") == 0) {
            x->total_count = true;
            continue;
        }
        if (strlen(e->value) >= sizeof x->at || !path_valid(type, list, e->value))
            return refuse(req, e->value);
        if (x->n == TG_EXPAND_MAX) {
            tg_err_set(&req->err, TG_EINVAL, "expand", "Invalid expand: at most %d paths.",
                       TG_EXPAND_MAX);
            return false;
        }
        x->paths[x->n++] = e->value;
    }
    return true;
}

static tg_expand *expansion(tg_jw *w)
{
    tg_req *req = w->ctx;
    return req && req->expand.n ? &req->expand : NULL;
}

static bool wanted(const tg_expand *x, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < x->n && !x->lost; i++) {
        const char *p = x->paths[i];
        if (strncmp(p, x->at, x->at_len) == 0 && strncmp(p + x->at_len, key, klen) == 0 &&
            (p[x->at_len + klen] == '\0' || p[x->at_len + klen] == '.'))
            return true;
    }
    return false;
}

bool tg_expand_wants(tg_jw *w, const char *key)
{
    tg_expand *x = expansion(w);
    return x && wanted(x, key);
}

void tg_expand_enter(tg_jw *w, const char *key)
{
    tg_expand *x = expansion(w);
    if (!x)
        return;
    size_t len = strlen(key);
    if (x->lost || x->depth == TG_EXPAND_NEST || x->at_len + len + 2 > sizeof x->at) {
        x->lost++; /* deeper than any path can name: nothing in there is expanded */
        return;
    }
    x->marks[x->depth++] = x->at_len;
    memcpy(x->at + x->at_len, key, len);
    x->at_len += len;
    x->at[x->at_len++] = '.';
    x->at[x->at_len] = '\0';
}

void tg_expand_leave(tg_jw *w)
{
    tg_expand *x = expansion(w);
    if (!x)
        return;
    if (x->lost) {
        x->lost--;
    } else if (x->depth) {
        x->at_len = x->marks[--x->depth];
        x->at[x->at_len] = '\0';
    }
}

void tg_expand_ref(tg_jw *w, const char *key, const char *id, tg_expander fn)
{
    jw_key(w, key);
    tg_expand *x = expansion(w);
    if (id && *id && x && wanted(x, key)) {
        tg_req *req = w->ctx;
        tg_expand_enter(w, key);
        bool done = fn(req, id);
        tg_expand_leave(w);
        if (done)
            return;
        /* Gone since (a deleted object): its id, as Stripe shows it. Anything else (the store
         * failing) cannot fail an answer half written: logged, and the id shown. */
        if (req->err.code != TG_ENOTFOUND)
            tg_log(TG_LOG_WARN, "expand %s%s (%s): %s", req->expand.at, key, id, req->err.msg);
        tg_err_clear(&req->err);
    }
    jw_str(w, id && *id ? id : NULL);
}
