/* request.c -- parameter getters, Stripe error objects and list envelopes (see api.h).
 *
 * Error mapping (the one place codes become HTTP): parameter and event problems are 400
 * invalid_request_error, unknown ids 404, idempotency conflicts 400/409 idempotency_error,
 * authentication 401, a saturated writer 429 rate_limit_error with Stripe-Should-Retry: true,
 * storage failures 500 api_error. The `code` is the error table's reason name.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/metadata.h"
#include "http/api.h"

/* ---------------------------------------------------------------- errors */

int tg_render_error(const tg_err *err, tg_buf *buf, bool *should_retry)
{
    int status = 400;
    const char *type = "invalid_request_error";
    *should_retry = false;
    switch (err->code) {
    case TG_ENOTFOUND:
    case TG_EROUTE: status = 404; break;
    case TG_EMETHOD: status = 405; break;
    case TG_ETOOLARGE: status = 413; break;
    case TG_ENOENTITLEMENT:
    case TG_ELIMIT: status = 402; break;
    case TG_EAUTHMISSING:
    case TG_EAUTHINVALID: status = 401; break;
    case TG_ESESSION: status = 401, type = "temporary_session_expired"; break;
    case TG_EIDEMMISMATCH:
    case TG_EIDEMLOST: type = "idempotency_error"; break;
    case TG_EIDEMBUSY: status = 409, type = "idempotency_error"; break;
    case TG_EBUSY: status = 429, type = "rate_limit_error", *should_retry = true; break;
    case TG_ESHUTDOWN: status = 503, type = "api_error", *should_retry = true; break;
    case TG_ESTORE:
    case TG_ENOMEM: status = 500, type = "api_error"; break;
    default: break;
    }
    tg_buf_reset(buf);
    tg_jw w;
    jw_init(&w, buf);
    jw_obj(&w);
    jw_key(&w, "error");
    jw_obj(&w);
    jw_kstr(&w, "type", type);
    jw_kstr(&w, "code", tg_err_reason(err->code));
    jw_kstr(&w, "message", err->msg[0] ? err->msg : tg_strerror(err->code));
    jw_kstr(&w, "param", err->param[0] ? err->param : NULL);
    jw_kstr(&w, "doc_url", NULL);
    if (err->code == TG_ENOENTITLEMENT || err->code == TG_ELIMIT)
        jw_kbool(&w, "upgrade", true); /* a plan with the feature (or more of it) would do */
    jw_end(&w);
    jw_end(&w);
    return status;
}

int tg_reply_error(tg_req *req)
{
    if (!req->err.code)
        tg_err_set(&req->err, TG_ESTORE, NULL, "internal error");
    return tg_render_error(&req->err, &req->out, &req->should_retry_header);
}

/* ---------------------------------------------------------------- getters */

static tg_param *lookup(tg_req *req, tg_param *parent, const char *name)
{
    return tg_param_get(parent ? parent : req->params, name);
}

static bool expect_string(tg_req *req, tg_param *p, const char *path)
{
    if (p->kind == TG_PARAM_STRING)
        return true;
    tg_err_set(&req->err, TG_EINVAL, path, "Invalid %s: must be a string.", path);
    return false;
}

bool p_str(tg_req *req, tg_param *parent, const char *name, const char *path, size_t max_len,
           const char **out)
{
    *out = NULL;
    if (!path)
        path = name;
    tg_param *p = lookup(req, parent, name);
    if (!p || tg_req_failed(req))
        return false;
    if (!expect_string(req, p, path))
        return false;
    if (!p->value || !*p->value)
        return false;
    if (max_len && strlen(p->value) > max_len) {
        tg_err_set(&req->err, TG_EINVAL, path, "Invalid %s: must be at most %zu characters.",
                   path, max_len);
        return false;
    }
    *out = p->value;
    return true;
}

bool p_str_required(tg_req *req, tg_param *parent, const char *name, const char *path,
                    size_t max_len, const char **out)
{
    if (!path)
        path = name;
    if (p_str(req, parent, name, path, max_len, out))
        return true;
    if (!tg_req_failed(req))
        tg_err_set(&req->err, TG_EMISSING, path, "Missing required param: %s.", path);
    return false;
}

bool p_opt_str(tg_req *req, tg_param *parent, const char *name, size_t max_len, tg_opt_str *out)
{
    out->set = false;
    out->value = NULL;
    tg_param *p = lookup(req, parent, name);
    if (!p || tg_req_failed(req) || !expect_string(req, p, name))
        return false;
    out->set = true;
    if (p->value && *p->value) {
        if (max_len && strlen(p->value) > max_len) {
            tg_err_set(&req->err, TG_EINVAL, name, "Invalid %s: must be at most %zu characters.",
                       name, max_len);
            return false;
        }
        out->value = p->value;
    }
    return true;
}

/* Parses a decimal integer strictly: optional '-', digits, no blanks or '+'. */
static bool parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return false;
    const char *p = s;
    bool neg = *p == '-';
    if (neg)
        p++;
    if (!*p || strspn(p, "0123456789") != strlen(p) || strlen(p) > 18)
        return false;
    int64_t v = 0;
    for (; *p; p++)
        v = v * 10 + (*p - '0');
    *out = neg ? -v : v;
    return true;
}

bool p_int(tg_req *req, tg_param *parent, const char *name, const char *path, int64_t min,
           int64_t max, int64_t *out)
{
    if (!path)
        path = name;
    tg_param *p = lookup(req, parent, name);
    if (!p || tg_req_failed(req) || !expect_string(req, p, path))
        return false;
    if (!p->value || !*p->value)
        return false;
    if (!parse_i64(p->value, out)) {
        tg_err_set(&req->err, TG_EINTEGER, path, "Invalid integer: %.64s", p->value);
        return false;
    }
    if (*out < min || *out > max) {
        tg_err_set(&req->err, TG_EINVAL, path,
                   "Invalid %s: must be between %" PRId64 " and %" PRId64 ".", path, min, max);
        return false;
    }
    return true;
}

bool p_enum(tg_req *req, tg_param *parent, const char *name, const char *path,
            const char *const *words, int *out)
{
    const char *v;
    if (!path)
        path = name;
    if (!p_str(req, parent, name, path, 0, &v))
        return false;
    for (int i = 0; words[i]; i++)
        if (strcmp(words[i], v) == 0) {
            *out = i;
            return true;
        }
    char allowed[256] = "";
    for (int i = 0; words[i]; i++) {
        size_t l = strlen(allowed);
        snprintf(allowed + l, sizeof allowed - l, "%s%s", i ? ", " : "", words[i]);
    }
    tg_err_set(&req->err, TG_EINVAL, path, "Invalid %s: must be one of %s.", path, allowed);
    return false;
}

bool p_string_map(tg_req *req, tg_param *parent, const char *name, bool allow_remove,
                  tg_metadata *out, bool *clear)
{
    out->n = 0;
    out->items = NULL;
    if (clear)
        *clear = false;
    tg_param *p = lookup(req, parent, name);
    if (!p || tg_req_failed(req))
        return false;
    if (p->kind == TG_PARAM_STRING && (!p->value || !*p->value)) {
        if (clear)
            *clear = true;
        return true;
    }
    if (p->kind != TG_PARAM_HASH) {
        tg_err_set(&req->err, TG_EINVAL, name, "Invalid %s: must be a hash of strings.", name);
        return false;
    }
    tg_param_use_all(p);
    out->items = tg_arena_alloc(&req->arena, (p->count ? p->count : 1) * sizeof(tg_kv));
    if (!out->items) {
        tg_err_set(&req->err, TG_ENOMEM, NULL, NULL);
        return false;
    }
    for (tg_param *c = p->first; c; c = c->next) {
        if (c->kind != TG_PARAM_STRING) {
            char path[200];
            snprintf(path, sizeof path, "%s[%s]", name, c->key);
            tg_err_set(&req->err, TG_EINVAL, path, "Invalid %s: must be a string.", path);
            return false;
        }
        const char *v = c->value;
        if (!v || !*v)
            v = allow_remove ? NULL : "";
        out->items[out->n].key = c->key;
        out->items[out->n].value = v;
        out->n++;
    }
    return true;
}

bool p_expand(tg_req *req, const char *type)
{
    return tg_expand_read(req, type, false);
}

bool p_time_range(tg_req *req, const char *name, tg_time_range *out)
{
    static const char *const ops[] = {"gt", "gte", "lt", "lte"};
    const int64_t top = 253402300799LL; /* 9999-12-31, as every time parameter */
    tg_param *c = tg_param_get(req->params, name);
    int64_t *min = &out->min, *max = &out->max;
    out->set = false;
    *min = 0;
    *max = top;
    if (!c)
        return true;
    int64_t v;
    if (c->kind == TG_PARAM_STRING) {
        if (!p_int(req, NULL, name, NULL, 0, top, &v))
            return false;
        *min = *max = v;
    } else if (c->kind == TG_PARAM_HASH) {
        for (int i = 0; i < 4; i++) {
            char path[48];
            snprintf(path, sizeof path, "%s[%s]", name, ops[i]);
            if (!p_int(req, c, ops[i], path, 0, top, &v))
                continue;
            if (i == 0 && v + 1 > *min)
                *min = v + 1;
            else if (i == 1 && v > *min)
                *min = v;
            else if (i == 2 && v - 1 < *max)
                *max = v - 1;
            else if (i == 3 && v < *max)
                *max = v;
        }
    } else {
        c->used = true;
        tg_err_set(&req->err, TG_EINVAL, name, "Invalid %s: a timestamp, or %s[gt|gte|lt|lte].",
                   name, name);
    }
    out->set = true;
    return !tg_req_failed(req);
}

bool p_created(tg_req *req, tg_time_range *out)
{
    return p_time_range(req, "created", out);
}

bool p_page(tg_req *req, tg_page *out, const char *type)
{
    int64_t limit = 10;
    memset(out, 0, sizeof *out);
    if (!p_int(req, NULL, "limit", NULL, 1, TG_LIST_MAX, &limit) && tg_req_failed(req))
        return false;
    out->limit = (int)limit;
    p_str(req, NULL, "starting_after", NULL, 255, &out->starting_after);
    p_str(req, NULL, "ending_before", NULL, 255, &out->ending_before);
    if (tg_req_failed(req))
        return false;
    if (out->starting_after && out->ending_before) {
        tg_err_set(&req->err, TG_EEXCLUSIVE, NULL,
                   "You may only specify one of these parameters: starting_after, ending_before.");
        return false;
    }
    return tg_expand_read(req, type, true);
}

bool tg_req_params_done(tg_req *req)
{
    if (tg_req_failed(req))
        return false;
    char path[256];
    if (tg_params_first_unused(req->params, path, sizeof path)) {
        tg_err_set(&req->err, TG_EUNKNOWN, path, "Received unknown parameter: %s", path);
        return false;
    }
    return true;
}

bool tg_req_parse_body(tg_req *req)
{
    return !req->body_len || tg_params_parse_json(req->params, req->body, req->body_len,
                                                  &req->arena, &req->err) == TG_OK;
}

/* ---------------------------------------------------------------- deferred recording */

int tg_req_record_events(tg_req *req, tg_event *events, size_t n, int *results,
                         const tg_meter_error *errors, size_t nerrors, tg_continuation then)
{
    req->resume = then;
    req->record_rc = TG_OK;
    /* Park first: the writer may finish before tg_events_submit even returns. */
    req->park(req->transport_ctx);
    int rc = tg_events_submit(req->svc, &req->scope, events, n, results, errors, nerrors,
                              &req->record, req->wake, req->transport_ctx, &req->err);
    if (rc)
        req->wake(req->transport_ctx, rc); /* refused at once (queue full): answer now */
    return TG_HTTP_DEFERRED;
}

bool tg_req_record_failed(tg_req *req)
{
    if (!req->record_rc)
        return false;
    if (!req->err.code)
        tg_events_submit_error(&req->record, &req->err);
    return true;
}

/* ---------------------------------------------------------------- lists */

int tg_reply_deleted(tg_req *req, const char *id, const char *object)
{
    jw_obj(&req->jw);
    jw_kstr(&req->jw, "id", id);
    jw_kstr(&req->jw, "object", object);
    jw_kbool(&req->jw, "deleted", true);
    jw_end(&req->jw);
    return 200;
}

void tg_list_begin(tg_req *req, const char *url)
{
    tg_jw *w = &req->jw;
    jw_obj(w);
    jw_kstr(w, "object", "list");
    jw_kstr(w, "url", url);
    jw_key(w, "data");
    jw_arr(w);
    tg_expand_enter(w, "data");
}

void tg_list_end(tg_req *req, bool has_more)
{
    tg_jw *w = &req->jw;
    tg_expand_leave(w);
    jw_aend(w);
    jw_kbool(w, "has_more", has_more);
    jw_end(w);
}

/* ---------------------------------------------------------------- objects */

void tg_render_dec(tg_jw *w, tg_dec d)
{
    char s[TG_DEC_STR_MAX];
    tg_dec_format(d, s);
    jw_raw(w, s);
}

void tg_render_metadata(tg_jw *w, const tg_metadata *md)
{
    jw_obj(w);
    for (size_t i = 0; i < md->n; i++)
        jw_kstr(w, md->items[i].key, md->items[i].value ? md->items[i].value : "");
    jw_end(w);
}

/* key: the address under prefix in contact ({city, country, ...}, absent fields null), or
 * null when it has none. */
static void render_address(tg_jw *w, const char *key, const tg_metadata *contact,
                           const char *prefix)
{
    static const char *const fields[] = TG_ADDRESS_FIELDS;
    const char *v[sizeof fields / sizeof fields[0]];
    bool any = false;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char k[64];
        snprintf(k, sizeof k, "%s%s", prefix, fields[i]);
        any |= (v[i] = tg_metadata_get(contact, k)) != NULL;
    }
    if (!any) {
        jw_knull(w, key);
        return;
    }
    jw_key(w, key);
    jw_obj(w);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        jw_kstr(w, fields[i], v[i]);
    jw_end(w);
}

void tg_render_contact(tg_jw *w, const tg_metadata *contact, const char *address_key,
                       const char *phone_key, const char *shipping_key)
{
    render_address(w, address_key, contact, "address.");
    jw_kstr(w, phone_key, tg_metadata_get(contact, "phone"));
    const char *name = tg_metadata_get(contact, "shipping.name");
    if (!name) {
        jw_knull(w, shipping_key);
        return;
    }
    jw_key(w, shipping_key);
    jw_obj(w);
    render_address(w, "address", contact, "shipping.address.");
    jw_kstr(w, "name", name);
    jw_kstr(w, "phone", tg_metadata_get(contact, "shipping.phone"));
    jw_end(w);
}

void tg_render_customer(tg_jw *w, const tg_customer *c)
{
    jw_obj(w);
    jw_kstr(w, "id", c->id);
    jw_kstr(w, "object", "customer");
    if (c->deleted) {
        jw_kbool(w, "deleted", true);
        jw_end(w);
        return;
    }
    tg_render_contact(w, &c->contact, "address", "phone", "shipping");
    jw_kint(w, "balance", 0);
    jw_kint(w, "created", c->created);
    jw_knull(w, "currency");
    jw_knull(w, "default_source");
    jw_kbool(w, "delinquent", false);
    jw_kstr(w, "description", c->description);
    jw_kstr(w, "email", c->email);
    jw_knull(w, "invoice_prefix");
    jw_key(w, "invoice_settings");
    jw_obj(w);
    jw_knull(w, "custom_fields");
    jw_kstr(w, "default_payment_method", c->default_payment_method);
    jw_knull(w, "footer");
    jw_knull(w, "rendering_options");
    jw_end(w);
    jw_kbool(w, "livemode", c->livemode);
    jw_key(w, "metadata");
    tg_render_metadata(w, &c->metadata);
    jw_kstr(w, "name", c->name);
    jw_key(w, "preferred_locales");
    jw_arr(w);
    jw_aend(w);
    jw_kstr(w, "tax_exempt", "none");
    tg_expand_ref(w, "test_clock", c->test_clock, tg_expand_test_clock);
    jw_end(w);
}

void tg_render_meter(tg_jw *w, const tg_meter *m)
{
    static const char *const formulas[] = {"sum", "count", "last"};
    jw_obj(w);
    jw_kstr(w, "id", m->id);
    jw_kstr(w, "object", "billing.meter");
    jw_kint(w, "created", m->created);
    jw_key(w, "customer_mapping");
    jw_obj(w);
    jw_kstr(w, "event_payload_key", m->customer_key);
    jw_kstr(w, "type", "by_id");
    jw_end(w);
    jw_key(w, "default_aggregation");
    jw_obj(w);
    jw_kstr(w, "formula", formulas[m->formula]);
    jw_end(w);
    jw_kstr(w, "display_name", m->display_name);
    jw_kstr(w, "event_name", m->event_name);
    jw_kstr(w, "event_time_window", m->event_time_window == TG_WINDOW_HOUR  ? "hour"
                                    : m->event_time_window == TG_WINDOW_DAY ? "day"
                                                                            : NULL);
    jw_kbool(w, "livemode", m->livemode);
    jw_kstr(w, "status", m->active ? "active" : "inactive");
    jw_key(w, "status_transitions");
    jw_obj(w);
    jw_kint_or_null(w, "deactivated_at", m->deactivated_at);
    jw_end(w);
    jw_kint(w, "updated", m->updated);
    jw_key(w, "value_settings");
    jw_obj(w);
    jw_kstr(w, "event_payload_key", m->value_key);
    jw_end(w);
    jw_end(w);
}
