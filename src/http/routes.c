/* routes.c -- the route table and the handlers of the metering API.
 *
 * Each handler reads its parameters, calls tg_req_params_done() (unknown parameters are
 * refused before anything is written), calls one service function and writes the object.
 * Object shapes follow Stripe's (dahlia) types field for field; /v2 objects write times as
 * ISO-8601 strings. Extensions (meter event error counts) follow the same conventions.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/ids.h"
#include "base/log.h"
#include "base/str.h"
#include "core/calendar.h"
#include "core/metering.h"
#include "http/api.h"
#include "http/stream_json.h"

/* ================================================================ customers */

/* One contact entry of a customer patch: key set to value (NULL: removed). */
static void contact_put(tg_req *req, tg_metadata *m, const char *prefix, const char *field,
                        const char *value)
{
    char key[64];
    snprintf(key, sizeof key, "%s%s", prefix, field);
    m->items[m->n].key = tg_arena_strdup(&req->arena, key);
    m->items[m->n++].value = value && *value ? value : NULL;
}

/* A string member `field` of hash h (NULL when absent or empty), at most max characters;
 * errors name it param[field]. */
static const char *hash_string(tg_req *req, tg_param *h, const char *param, const char *field,
                               size_t max)
{
    tg_param *v = tg_param_get(h, field);
    if (!v)
        return NULL;
    if (v->kind != TG_PARAM_STRING || (v->value && strlen(v->value) > max)) {
        tg_err_set(&req->err, TG_EINVAL, NULL, "Invalid %s[%s]: a string of at most %zu characters.",
                   param, field, max);
        snprintf(req->err.param, sizeof req->err.param, "%s[%s]", param, field);
        return NULL;
    }
    return v->value;
}

/* An address hash (param, under h or the top level) into contact entries under prefix: every
 * field set or removed, as the hash replaces the address; "" removes it. False when absent. */
static bool read_address(tg_req *req, tg_param *h, const char *name, const char *param,
                         const char *prefix, tg_metadata *m)
{
    static const char *const fields[] = TG_ADDRESS_FIELDS;
    tg_param *a = tg_param_get(h ? h : req->params, name);
    if (!a)
        return false;
    a->used = true;
    bool unset = a->kind == TG_PARAM_STRING && (!a->value || !*a->value);
    if (!unset && a->kind != TG_PARAM_HASH)
        tg_err_set(&req->err, TG_EINVAL, param, "Invalid %s: must be a hash.", param);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        contact_put(req, m, prefix, fields[i],
                    unset || tg_req_failed(req) ? NULL : hash_string(req, a, param, fields[i], 5000));
    return true;
}

/* phone, address and shipping of a customer patch, as contact entries. */
static void read_contact(tg_req *req, tg_customer_patch *p)
{
    static const size_t max = 16; /* phone + 6 address + name, phone and 6 shipping ones */
    p->contact.items = tg_arena_alloc(&req->arena, max * sizeof(tg_kv));
    if (!p->contact.items) {
        tg_err_set(&req->err, TG_ENOMEM, NULL, NULL);
        return;
    }
    tg_opt_str phone;
    if (p_opt_str(req, NULL, "phone", 20, &phone))
        contact_put(req, &p->contact, "", "phone", phone.value);
    read_address(req, NULL, "address", "address", "address.", &p->contact);
    tg_param *sh = tg_param_get(req->params, "shipping");
    if (!sh || tg_req_failed(req))
        return;
    bool unset = sh->kind == TG_PARAM_STRING && (!sh->value || !*sh->value);
    if (!unset && sh->kind != TG_PARAM_HASH) {
        tg_err_set(&req->err, TG_EINVAL, "shipping", "Invalid shipping: must be a hash.");
        return;
    }
    const char *name = unset ? NULL : hash_string(req, sh, "shipping", "name", 5000);
    const char *sphone = unset ? NULL : hash_string(req, sh, "shipping", "phone", 20);
    if (!unset && !tg_req_failed(req) && (!name || !*name))
        tg_err_set(&req->err, TG_EMISSING, "shipping[name]", "Missing required param: shipping[name].");
    else if (!unset && !tg_req_failed(req)) {
        tg_param *addr = tg_param_get(sh, "address");
        if (!addr || addr->kind != TG_PARAM_HASH)
            tg_err_set(&req->err, TG_EMISSING, "shipping[address]",
                       "Missing required param: shipping[address] (a hash).");
    }
    contact_put(req, &p->contact, "shipping.", "name", name);
    contact_put(req, &p->contact, "shipping.", "phone", sphone);
    if (!unset) {
        read_address(req, sh, "address", "shipping[address]", "shipping.address.", &p->contact);
        return;
    }
    static const char *const fields[] = TG_ADDRESS_FIELDS;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        contact_put(req, &p->contact, "shipping.address.", fields[i], NULL);
}

static bool customer_patch(tg_req *req, tg_customer_patch *p)
{
    memset(p, 0, sizeof *p);
    read_contact(req, p);
    p_opt_str(req, NULL, "email", 512, &p->email);
    p_opt_str(req, NULL, "name", 256, &p->name);
    p_opt_str(req, NULL, "description", 350, &p->description);
    p_string_map(req, NULL, "metadata", true, &p->metadata, &p->metadata_clear);
    tg_param *is = tg_param_get(req->params, "invoice_settings");
    if (is && !tg_req_failed(req)) {
        if (is->kind != TG_PARAM_HASH)
            tg_err_set(&req->err, TG_EINVAL, "invoice_settings",
                       "Invalid invoice_settings: must be a hash.");
        else
            p_opt_str(req, is, "default_payment_method", 255, &p->default_payment_method);
    }
    p_expand(req, "customer");
    return tg_req_params_done(req);
}

static int customer_reply(tg_req *req, int rc, const tg_customer *c)
{
    if (rc)
        return tg_reply_error(req);
    tg_render_customer(&req->jw, c);
    return 200;
}

static int h_customer_create(tg_req *req)
{
    tg_customer_patch p;
    tg_customer c;
    const char *clock = NULL;
    p_str(req, NULL, "test_clock", NULL, 255, &clock);
    if (!customer_patch(req, &p))
        return tg_reply_error(req);
    p.test_clock = clock;
    /* On create, an empty value means "not given", so nothing is removed from nothing. */
    int rc = tg_customer_create(req->svc, &req->scope, &p, &req->arena, &c, &req->err);
    return customer_reply(req, rc, &c);
}

static int h_customer_update(tg_req *req)
{
    tg_customer_patch p;
    tg_customer c;
    if (!customer_patch(req, &p))
        return tg_reply_error(req);
    int rc = tg_customer_update(req->svc, &req->scope, tg_seg(req, 2), &p, &req->arena, &c,
                                &req->err);
    return customer_reply(req, rc, &c);
}

static int h_customer_retrieve(tg_req *req)
{
    tg_customer c;
    p_expand(req, "customer");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    int rc = tg_customer_retrieve(req->svc, &req->scope, tg_seg(req, 2), &req->arena, &c,
                                  &req->err);
    return customer_reply(req, rc, &c);
}

static int h_customer_delete(tg_req *req)
{
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    const char *id = tg_seg(req, 2);
    if (tg_customer_delete(req->svc, &req->scope, id, &req->err))
        return tg_reply_error(req);
    return tg_reply_deleted(req, id, "customer");
}

static int h_customer_list(tg_req *req)
{
    tg_page page;
    tg_customer_filter f = {0};
    if (!p_page(req, &page, "customer"))
        return tg_reply_error(req);
    p_str(req, NULL, "test_clock", NULL, 255, &f.test_clock);
    p_str(req, NULL, "email", NULL, 512, &f.email);
    p_created(req, &f.created);
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_customer *items;
    size_t n;
    bool more;
    if (tg_customer_list(req->svc, &req->scope, &f, &page, &req->arena, &items, &n, &more,
                         &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/customers");
    for (size_t i = 0; i < n; i++)
        tg_render_customer(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

/* ================================================================ meters */

static const char *const formula_words[] = {"sum", "count", "last", NULL};
static const char *const window_words[] = {"hour", "day", NULL};

static int h_meter_create(tg_req *req)
{
    tg_meter m;
    memset(&m, 0, sizeof m);
    const char *display_name = NULL, *event_name = NULL, *ckey = NULL, *vkey = NULL;
    int formula = 0, window = -1, type = 0;
    p_str_required(req, NULL, "display_name", NULL, TG_DISPLAY_NAME_MAX, &display_name);
    p_str_required(req, NULL, "event_name", NULL, TG_NAME_MAX, &event_name);
    tg_param *agg = tg_param_get(req->params, "default_aggregation");
    if (!tg_req_failed(req)) {
        if (!agg || agg->kind != TG_PARAM_HASH)
            tg_err_set(&req->err, agg ? TG_EINVAL : TG_EMISSING, "default_aggregation[formula]",
                       agg ? "Invalid default_aggregation: must be a hash."
                           : "Missing required param: default_aggregation[formula].");
        else if (!p_enum(req, agg, "formula", "default_aggregation[formula]", formula_words,
                         &formula) &&
                 !tg_req_failed(req))
            tg_err_set(&req->err, TG_EMISSING, "default_aggregation[formula]",
                       "Missing required param: default_aggregation[formula].");
    }
    tg_param *cm = tg_param_get(req->params, "customer_mapping");
    if (cm && !tg_req_failed(req)) {
        static const char *const types[] = {"by_id", NULL};
        if (cm->kind != TG_PARAM_HASH)
            tg_err_set(&req->err, TG_EINVAL, "customer_mapping",
                       "Invalid customer_mapping: must be a hash.");
        p_str_required(req, cm, "event_payload_key", "customer_mapping[event_payload_key]",
                       TG_NAME_MAX, &ckey);
        if (!p_enum(req, cm, "type", "customer_mapping[type]", types, &type) &&
            !tg_req_failed(req))
            tg_err_set(&req->err, TG_EMISSING, "customer_mapping[type]",
                       "Missing required param: customer_mapping[type].");
    }
    tg_param *vs = tg_param_get(req->params, "value_settings");
    if (vs && !tg_req_failed(req)) {
        if (vs->kind != TG_PARAM_HASH)
            tg_err_set(&req->err, TG_EINVAL, "value_settings",
                       "Invalid value_settings: must be a hash.");
        p_str_required(req, vs, "event_payload_key", "value_settings[event_payload_key]",
                       TG_NAME_MAX, &vkey);
    }
    p_enum(req, NULL, "event_time_window", NULL, window_words, &window);
    p_expand(req, "billing.meter");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    snprintf(m.display_name, sizeof m.display_name, "%s", display_name);
    snprintf(m.event_name, sizeof m.event_name, "%s", event_name);
    snprintf(m.customer_key, sizeof m.customer_key, "%s", ckey ? ckey : "stripe_customer_id");
    snprintf(m.value_key, sizeof m.value_key, "%s", vkey ? vkey : "value");
    m.formula = (tg_formula)formula;
    m.event_time_window = window == 0 ? TG_WINDOW_HOUR : window == 1 ? TG_WINDOW_DAY
                                                                      : TG_WINDOW_NONE;
    tg_meter out;
    if (tg_meter_create(req->svc, &req->scope, &m, &out, &req->err))
        return tg_reply_error(req);
    tg_render_meter(&req->jw, &out);
    return 200;
}

static int meter_reply(tg_req *req, int rc, const tg_meter *m)
{
    if (rc)
        return tg_reply_error(req);
    tg_render_meter(&req->jw, m);
    return 200;
}

static int h_meter_retrieve(tg_req *req)
{
    tg_meter m;
    p_expand(req, "billing.meter");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    return meter_reply(req, tg_meter_retrieve(req->svc, &req->scope, tg_seg(req, 3), &m, &req->err),
                       &m);
}

static int h_meter_update(tg_req *req)
{
    tg_meter m;
    const char *display_name = NULL;
    tg_param *dn = tg_param_get(req->params, "display_name");
    if (dn && dn->kind == TG_PARAM_STRING && (!dn->value || !*dn->value))
        tg_err_set(&req->err, TG_EINVAL, "display_name", "Invalid display_name: must not be empty.");
    p_str(req, NULL, "display_name", NULL, TG_DISPLAY_NAME_MAX, &display_name);
    p_expand(req, "billing.meter");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    return meter_reply(req,
                       tg_meter_update(req->svc, &req->scope, tg_seg(req, 3), display_name, &m,
                                       &req->err),
                       &m);
}

static int meter_set_active(tg_req *req, bool active)
{
    tg_meter m;
    p_expand(req, "billing.meter");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    return meter_reply(req,
                       tg_meter_set_active(req->svc, &req->scope, tg_seg(req, 3), active, &m,
                                           &req->err),
                       &m);
}

static int h_meter_deactivate(tg_req *req) { return meter_set_active(req, false); }
static int h_meter_reactivate(tg_req *req) { return meter_set_active(req, true); }

static int h_meter_list(tg_req *req)
{
    static const char *const statuses[] = {"inactive", "active", NULL};
    int status = -1;
    tg_page page;
    p_enum(req, NULL, "status", NULL, statuses, &status);
    if (!p_page(req, &page, "billing.meter") || !tg_req_params_done(req))
        return tg_reply_error(req);
    tg_meter *items;
    size_t n;
    bool more;
    if (tg_meter_list(req->svc, &req->scope, status, &page, &req->arena, &items, &n, &more,
                      &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/billing/meters");
    for (size_t i = 0; i < n; i++)
        tg_render_meter(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

/* ================================================================ event summaries */

/* A summary's id: "mtrusg_", its window's start as 16 hex digits, then 8 of an FNV-1a hash
 * of the meter and customer (summary_hash), so ids differ across pairs and a cursor reads
 * back to its window's start. Written by hand: snprintf took a tenth of an hourly summary
 * page's time. */
#define SUMMARY_ID_LEN (7 + 16 + 8)

static uint32_t summary_hash(const char *meter_id, const char *customer)
{
    uint32_t h = 2166136261u;
    for (const char *p = meter_id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    for (const char *p = customer; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static void summary_id(char out[SUMMARY_ID_LEN + 1], uint32_t hash, int64_t start)
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "mtrusg_", 7);
    for (int i = 0; i < 16; i++)
        out[7 + i] = hex[((uint64_t)start >> (60 - 4 * i)) & 15];
    for (int i = 0; i < 8; i++)
        out[23 + i] = hex[(hash >> (28 - 4 * i)) & 15];
    out[SUMMARY_ID_LEN] = '\0';
}

/* Reads a summary cursor back to its window start. */
static bool summary_cursor(tg_req *req, const char *name, const char *id, int64_t *start)
{
    uint64_t v = 0;
    size_t n = id ? strlen(id) : 0;
    if (n != SUMMARY_ID_LEN || strncmp(id, "mtrusg_", 7) != 0 ||
        strspn(id + 7, "0123456789abcdef") != 24) {
        tg_err_set(&req->err, TG_ENOTFOUND, name, "No such meter event summary: '%s'",
                   id ? id : "");
        return false;
    }
    for (int i = 7; i < 23; i++)
        v = v * 16 + (uint64_t)(id[i] <= '9' ? id[i] - '0' : id[i] - 'a' + 10);
    if (v > (uint64_t)INT64_MAX / 2) { /* no window starts there (times are at most this) */
        tg_err_set(&req->err, TG_ENOTFOUND, name, "No such meter event summary: '%s'", id);
        return false;
    }
    *start = (int64_t)v;
    return true;
}

static int h_summaries(tg_req *req)
{
    const char *customer = NULL, *meter_id = tg_seg(req, 3);
    int64_t start = 0, end = 0;
    int grouping = -1;
    tg_page page;
    p_str_required(req, NULL, "customer", NULL, 5000, &customer);
    if (!p_int(req, NULL, "start_time", NULL, 0, INT64_MAX / 2, &start) && !tg_req_failed(req))
        tg_err_set(&req->err, TG_EMISSING, "start_time", "Missing required param: start_time.");
    if (!p_int(req, NULL, "end_time", NULL, 0, INT64_MAX / 2, &end) && !tg_req_failed(req))
        tg_err_set(&req->err, TG_EMISSING, "end_time", "Missing required param: end_time.");
    p_enum(req, NULL, "value_grouping_window", NULL, window_words, &grouping);
    if (!p_page(req, &page, "billing.meter_event_summary") || !tg_req_params_done(req))
        return tg_reply_error(req);
    int64_t after = 0, before = 0;
    if ((page.starting_after && !summary_cursor(req, "starting_after", page.starting_after, &after)) ||
        (page.ending_before && !summary_cursor(req, "ending_before", page.ending_before, &before)))
        return tg_reply_error(req);
    tg_window win = grouping == 0 ? TG_WINDOW_HOUR : grouping == 1 ? TG_WINDOW_DAY : TG_WINDOW_NONE;
    tg_summary *items;
    size_t n;
    bool more;
    if (tg_summary_list(req->svc, &req->scope, meter_id, customer, start, end, win, page.limit,
                        after, before, &req->arena, &items, &n, &more, &req->err))
        return tg_reply_error(req);
    char url[160];
    snprintf(url, sizeof url, "/v1/billing/meters/%s/event_summaries", meter_id);
    tg_list_begin(req, url);
    /* A page holds up to 100 summaries that differ only in their id, value and times, so the
     * rest of their JSON (the meter's id escaped once) is written once and copied into each:
     * written field by field, an hourly page spent a third of its time escaping and appending
     * the same strings again. The fields are in the order tg_jw would write them. */
    tg_buf shared;
    tg_buf_init(&shared, 4096);
    tg_jw sw;
    jw_init(&sw, &shared);
    tg_buf_puts(&shared, req->scope.livemode ? ",\"livemode\":true,\"meter\":"
                                             : ",\"livemode\":false,\"meter\":");
    jw_str(&sw, meter_id);
    tg_buf_puts(&shared, ",\"start_time\":");
    static const char object[] = "\",\"object\":\"billing.meter_event_summary\",\"aggregated_value\":";
    uint32_t hash = summary_hash(meter_id, customer);
    tg_jw *w = &req->jw;
    for (size_t i = 0; i < n && !shared.failed; i++) {
        char id[SUMMARY_ID_LEN + 1], value[TG_DEC_STR_MAX];
        summary_id(id, hash, items[i].start);
        size_t vlen = tg_dec_format(items[i].value, value);
        jw_raw(w, "{\"id\":\"");
        tg_buf_append(w->b, id, SUMMARY_ID_LEN);
        tg_buf_append(w->b, object, sizeof object - 1);
        tg_buf_append(w->b, value, vlen);
        tg_buf_puts(w->b, ",\"end_time\":");
        tg_buf_put_int(w->b, items[i].end);
        tg_buf_append(w->b, shared.data, shared.len);
        tg_buf_put_int(w->b, items[i].start);
        tg_buf_append(w->b, "}", 1);
    }
    if (shared.failed) /* out of memory: the answer fails as a whole */
        w->b->failed = true;
    tg_buf_free(&shared);
    tg_list_end(req, more);
    return 200;
}

/* ================================================================ meter events */

/* Reads one event's parameters from hash `ev` (v2: ISO-8601 times) into e. Parameter names
 * in errors are relative to ev; the stream prefixes them with the element. */
static bool read_event(tg_req *req, tg_param *ev, bool iso_time, tg_event *e)
{
    const char *event_name = NULL, *identifier = NULL;
    memset(e, 0, sizeof *e);
    p_str_required(req, ev, "event_name", NULL, 0, &event_name);
    p_str(req, ev, "identifier", NULL, 0, &identifier);
    if (!p_string_map(req, ev, "payload", false, &e->payload, NULL) && !tg_req_failed(req))
        tg_err_set(&req->err, TG_EMISSING, "payload", "Missing required param: payload.");
    e->timestamp = TG_TIME_NOW;
    if (iso_time) {
        const char *ts;
        if (p_str(req, ev, "timestamp", NULL, 64, &ts) && !tg_parse_iso_time(ts, &e->timestamp))
            tg_err_set(&req->err, TG_EINVAL, "timestamp",
                       "Invalid timestamp: must be an ISO-8601 time such as "
                       "2024-06-01T12:00:00Z.");
    } else {
        p_int(req, ev, "timestamp", NULL, INT64_MIN / 2, INT64_MAX / 2, &e->timestamp);
    }
    if (tg_req_failed(req) || tg_event_check_names(event_name, identifier, &req->err))
        return false;
    tg_strlcpy(e->event_name, event_name, sizeof e->event_name);
    tg_strlcpy(e->identifier, identifier ? identifier : "", sizeof e->identifier);
    return true;
}

/* Events sent without an identifier under an Idempotency-Key get one derived from the key
 * and their place in the request. The key's stored answer is committed after the events (by
 * a later batch), so a server that dies between the two leaves a retry nothing to replay: the
 * retry runs again, and its events then meet their identifiers instead of counting twice.
 * base (41 bytes) receives the key's part; false when there is nothing to derive from. */
static bool key_identifier_base(const tg_req *req, char *base)
{
    if (!req->idem_key)
        return false;
    char hex[65];
    tg_sha256_hex(req->idem_key, strlen(req->idem_key), hex);
    memcpy(base, hex, 40);
    base[40] = '\0';
    return true;
}

static bool key_identifier(const char *base, size_t index, tg_event *e)
{
    if (e->identifier[0])
        return false;
    snprintf(e->identifier, sizeof e->identifier, "idk_%s_%zu", base, index);
    return true;
}

/* One synchronously validated event, recorded without blocking; `then` writes the answer. */
typedef struct single_event {
    tg_event e;
    int result;
    bool key_derived; /* its identifier comes from the Idempotency-Key (see key_identifier) */
} single_event;

static single_event *new_single_event(tg_req *req)
{
    single_event *se = tg_arena_alloc(&req->arena, sizeof *se);
    if (!se)
        tg_err_set(&req->err, TG_ENOMEM, NULL, NULL);
    req->state = se;
    return se;
}

static int record_one(tg_req *req, tg_continuation then)
{
    single_event *se = req->state;
    char base[41];
    se->key_derived = key_identifier_base(req, base) && key_identifier(base, 0, &se->e);
    if (tg_event_prepare(req->svc, &req->scope, &se->e, NULL, &req->err))
        return tg_reply_error(req);
    return tg_req_record_events(req, &se->e, 1, &se->result, NULL, 0, then);
}

/* The recorded event, or NULL (req->err set) when it was refused or recording failed. */
static single_event *recorded_event(tg_req *req)
{
    single_event *se = req->state;
    if (tg_req_record_failed(req))
        return NULL;
    /* The same request under the same key, run again after its answer was lost: the event
     * it recorded is this one, so it succeeds as the first run did. */
    if (se->result == TG_EDUPLICATE && !se->key_derived) {
        tg_err_set(&req->err, TG_EDUPLICATE, "identifier",
                   "An event already exists with identifier %s.", se->e.identifier);
        return NULL;
    }
    return se;
}

static int v1_event_done(tg_req *req)
{
    single_event *se = recorded_event(req);
    if (!se)
        return tg_reply_error(req);
    tg_event *e = &se->e;
    tg_jw *w = &req->jw;
    jw_obj(w);
    jw_kstr(w, "object", "billing.meter_event");
    jw_kint(w, "created", e->created);
    jw_kstr(w, "event_name", e->event_name);
    jw_kstr(w, "identifier", e->identifier);
    jw_kbool(w, "livemode", req->scope.livemode);
    jw_key(w, "payload");
    tg_render_metadata(w, &e->payload);
    jw_kint(w, "timestamp", e->timestamp);
    jw_end(w);
    return 200;
}

static int h_meter_event_create(tg_req *req)
{
    single_event *se = new_single_event(req);
    if (!se)
        return tg_reply_error(req);
    bool ok = read_event(req, req->params, false, &se->e);
    p_expand(req, "billing.meter_event");
    if (!ok || !tg_req_params_done(req))
        return tg_reply_error(req);
    return record_one(req, v1_event_done);
}

static int v2_event_done(tg_req *req)
{
    single_event *se = recorded_event(req);
    if (!se)
        return tg_reply_error(req);
    tg_event *e = &se->e;
    tg_jw *w = &req->jw;
    jw_obj(w);
    jw_kstr(w, "object", "v2.billing.meter_event");
    jw_key(w, "created");
    jw_iso_time(w, e->created);
    jw_kstr(w, "event_name", e->event_name);
    jw_kstr(w, "identifier", e->identifier);
    jw_kbool(w, "livemode", req->scope.livemode);
    jw_key(w, "payload");
    tg_render_metadata(w, &e->payload);
    jw_key(w, "timestamp");
    jw_iso_time(w, e->timestamp);
    jw_end(w);
    return 200;
}

static int h_v2_meter_event_create(tg_req *req)
{
    single_event *se = new_single_event(req);
    if (!se)
        return tg_reply_error(req);
    if (!read_event(req, req->params, true, &se->e) || !tg_req_params_done(req))
        return tg_reply_error(req);
    return record_one(req, v2_event_done);
}

/* Reads {event_name, type: cancel, cancel: {identifier}}; returns the identifier or NULL. */
static const char *read_adjustment(tg_req *req, const char **event_name)
{
    static const char *const types[] = {"cancel", NULL};
    const char *identifier = NULL;
    int type;
    p_str_required(req, NULL, "event_name", NULL, TG_NAME_MAX, event_name);
    if (!p_enum(req, NULL, "type", NULL, types, &type) && !tg_req_failed(req))
        tg_err_set(&req->err, TG_EMISSING, "type", "Missing required param: type.");
    tg_param *cancel = tg_param_get(req->params, "cancel");
    if (!tg_req_failed(req)) {
        if (!cancel)
            tg_err_set(&req->err, TG_EMISSING, "cancel[identifier]",
                       "Missing required param: cancel[identifier].");
        else if (cancel->kind != TG_PARAM_HASH)
            tg_err_set(&req->err, TG_EINVAL, "cancel", "Invalid cancel: must be a hash.");
        else
            p_str_required(req, cancel, "identifier", "cancel[identifier]", TG_NAME_MAX,
                           &identifier);
    }
    p_expand(req, "billing.meter_event");
    if (!tg_req_params_done(req))
        return NULL;
    if (tg_event_cancel(req->svc, &req->scope, *event_name, identifier, &req->err))
        return NULL;
    return identifier;
}

static int h_adjustment_create(tg_req *req)
{
    const char *event_name = NULL, *identifier = read_adjustment(req, &event_name);
    if (!identifier)
        return tg_reply_error(req);
    tg_jw *w = &req->jw;
    jw_obj(w);
    jw_kstr(w, "object", "billing.meter_event_adjustment");
    jw_key(w, "cancel");
    jw_obj(w);
    jw_kstr(w, "identifier", identifier);
    jw_end(w);
    jw_kstr(w, "event_name", event_name);
    jw_kbool(w, "livemode", req->scope.livemode);
    jw_kstr(w, "status", "complete");
    jw_kstr(w, "type", "cancel");
    jw_end(w);
    return 200;
}

static int h_v2_adjustment_create(tg_req *req)
{
    const char *event_name = NULL, *identifier = read_adjustment(req, &event_name);
    if (!identifier)
        return tg_reply_error(req);
    char id[TG_ID_MAX];
    tg_id_random(id, sizeof id, "mtradj_", 24);
    tg_jw *w = &req->jw;
    jw_obj(w);
    jw_kstr(w, "id", id);
    jw_kstr(w, "object", "v2.billing.meter_event_adjustment");
    jw_key(w, "cancel");
    jw_obj(w);
    jw_kstr(w, "identifier", identifier);
    jw_end(w);
    jw_key(w, "created");
    jw_iso_time(w, tg_service_now(req->svc));
    jw_kstr(w, "event_name", event_name);
    jw_kbool(w, "livemode", req->scope.livemode);
    jw_kstr(w, "status", "complete");
    jw_kstr(w, "type", "cancel");
    jw_end(w);
    return 200;
}

/* ================================================================ v2 sessions and streams */

static int h_session_create(tg_req *req)
{
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_session s;
    if (tg_session_create(req->svc, &req->scope, req->key, &s, &req->err))
        return tg_reply_error(req);
    tg_jw *w = &req->jw;
    jw_obj(w);
    jw_kstr(w, "id", s.id);
    jw_kstr(w, "object", "v2.billing.meter_event_session");
    jw_kstr(w, "authentication_token", s.token);
    jw_key(w, "created");
    jw_iso_time(w, s.created);
    jw_key(w, "expires_at");
    jw_iso_time(w, s.expires_at);
    jw_kbool(w, "livemode", s.livemode);
    jw_end(w);
    return 200;
}

/* Adds one refused event to the per-(meter, reason) tallies. */
static void tally(tg_meter_error *errs, size_t *n, size_t cap, const tg_event *e, const tg_err *err,
                  int64_t now)
{
    const char *code = tg_err_reason(err->code);
    const char *meter = err->code == TG_ENOMETER ? "" : e->meter_id;
    size_t i = 0;
    while (i < *n && (strcmp(errs[i].code, code) != 0 || strcmp(errs[i].meter_id, meter) != 0))
        i++;
    if (i == *n) {
        if (*n == cap)
            return;
        memset(&errs[i], 0, sizeof errs[i]);
        tg_id_random(errs[i].id, sizeof errs[i].id, "mtrerr_", 24);
        snprintf(errs[i].meter_id, sizeof errs[i].meter_id, "%s", meter);
        snprintf(errs[i].code, sizeof errs[i].code, "%s", code);
        (*n)++;
    }
    errs[i].count++;
    errs[i].last_seen = now;
    snprintf(errs[i].last_message, sizeof errs[i].last_message, "%.180s (identifier %.60s)", err->msg,
             e->identifier[0] ? e->identifier : "none");
}

/* The stream answers {} once its valid events are committed (duplicates and refusals are
 * reported in meter_event_errors, not in the answer, as Stripe validates asynchronously). */
static int stream_done(tg_req *req)
{
    if (tg_req_record_failed(req))
        return tg_reply_error(req);
    jw_obj(&req->jw);
    jw_end(&req->jw);
    return 200;
}

bool tg_stream_events_general(tg_req *req, tg_event **out, size_t *nout)
{
    if (!tg_req_parse_body(req))
        return false;
    tg_param *events = tg_param_get(req->params, "events");
    if (!events || events->kind != TG_PARAM_ARRAY || events->count == 0) {
        tg_err_set(&req->err, events ? TG_EINVAL : TG_EMISSING, "events",
                   events ? "Invalid events: must be a non-empty array."
                          : "Missing required param: events.");
        return false;
    }
    if (events->count > req->cfg->max_stream_events) {
        tg_err_set(&req->err, TG_EINVAL, "events",
                   "Invalid events: at most %zu events per request.", req->cfg->max_stream_events);
        return false;
    }
    size_t n = events->count, i = 0;
    tg_event *evs = tg_arena_alloc(&req->arena, n * sizeof *evs);
    if (!evs) {
        tg_err_set(&req->err, TG_ENOMEM, NULL, NULL);
        return false;
    }
    for (tg_param *ev = events->first; ev; ev = ev->next, i++) {
        ev->used = true;
        if (ev->kind != TG_PARAM_HASH) {
            tg_err_set(&req->err, TG_EINVAL, "events", "Invalid events[%zu]: must be an object.", i);
            return false;
        }
        if (!read_event(req, ev, true, &evs[i])) {
            /* name the element: the getters saw only the inner key */
            char p2[sizeof req->err.param];
            snprintf(p2, sizeof p2, "events[%zu][%.120s]", i, req->err.param);
            snprintf(req->err.param, sizeof req->err.param, "%s", p2);
            return false;
        }
    }
    if (!tg_req_params_done(req))
        return false;
    *out = evs;
    *nout = n;
    return true;
}

/* Events whose customer lookups are started ahead of their validation (tg_event_prefetch). */
#define STREAM_PREFETCH_AHEAD 8

static int h_stream(tg_req *req)
{
    tg_event *evs;
    size_t n;
    bool fast = !req->params->first && req->body_len &&
                tg_stream_json_decode(req->body, req->body_len, req->cfg->max_stream_events,
                                      &req->arena, &evs, &n);
    if (!fast && !tg_stream_events_general(req, &evs, &n))
        return tg_reply_error(req);
    tg_meter_error *errs = tg_arena_alloc(&req->arena, 64 * sizeof *errs);
    int *results = tg_arena_alloc(&req->arena, n * sizeof *results);
    if (!errs || !results) {
        tg_err_set(&req->err, TG_ENOMEM, NULL, NULL);
        return tg_reply_error(req);
    }
    char base[41];
    if (key_identifier_base(req, base))
        for (size_t i = 0; i < n; i++)
            key_identifier(base, i, &evs[i]);

    /* Validation of meters, customers, values and times is asynchronous in Stripe's stream:
     * refused events are left out and counted, and the request still succeeds. */
    size_t nvalid = 0, nerrs = 0, refused = 0;
    int64_t now = tg_service_now(req->svc);
    tg_meter_memo memo = {0};
    for (size_t i = 0; i < n && i < STREAM_PREFETCH_AHEAD; i++)
        tg_event_prefetch(req->svc, &req->scope, &evs[i], &memo);
    for (size_t i = 0; i < n; i++) {
        if (i + STREAM_PREFETCH_AHEAD < n)
            tg_event_prefetch(req->svc, &req->scope, &evs[i + STREAM_PREFETCH_AHEAD], &memo);
        tg_err e = {0};
        if (tg_event_prepare(req->svc, &req->scope, &evs[i], &memo, &e)) {
            if (e.code == TG_ESTORE || e.code == TG_ENOMEM) {
                req->err = e;
                return tg_reply_error(req);
            }
            tally(errs, &nerrs, 64, &evs[i], &e, now);
            refused++;
            continue;
        }
        if (nvalid != i)
            evs[nvalid] = evs[i];
        nvalid++;
    }
    if (refused)
        for (size_t k = 0; k < nerrs; k++)
            tg_log(TG_LOG_WARN, "meter_event_stream: %" PRId64 " event(s) refused: %s (meter %s): %s",
                   errs[k].count, errs[k].code, errs[k].meter_id[0] ? errs[k].meter_id : "none",
                   errs[k].last_message);
    if (nvalid || nerrs)
        return tg_req_record_events(req, evs, nvalid, results, errs, nerrs, stream_done);
    return stream_done(req);
}

static int h_meter_errors(tg_req *req)
{
    const char *meter = NULL;
    tg_page page;
    p_str(req, NULL, "meter", NULL, TG_ID_MAX - 1, &meter);
    if (!p_page(req, &page, "billing.meter_event_error") || !tg_req_params_done(req))
        return tg_reply_error(req);
    tg_meter_error *items;
    size_t n;
    bool more;
    if (tg_meter_error_list(req->svc, &req->scope, meter, &page, &req->arena, &items, &n, &more,
                            &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/billing/meter_event_errors");
    for (size_t i = 0; i < n; i++) {
        tg_jw *w = &req->jw;
        jw_obj(w);
        jw_kstr(w, "id", items[i].id);
        jw_kstr(w, "object", "billing.meter_event_error");
        jw_kstr(w, "code", items[i].code);
        jw_kint(w, "error_count", items[i].count);
        jw_kstr(w, "last_error_message", items[i].last_message);
        jw_kint(w, "last_seen_at", items[i].last_seen);
        jw_kbool(w, "livemode", items[i].livemode);
        jw_kstr(w, "meter", items[i].meter_id[0] ? items[i].meter_id : NULL);
        jw_end(w);
    }
    tg_list_end(req, more);
    return 200;
}

static int h_healthz(tg_req *req)
{
    tg_param_use_all(req->params);
    jw_obj(&req->jw);
    jw_kstr(&req->jw, "status", "ok");
    jw_end(&req->jw);
    return 200;
}

/* ================================================================ the table */

/* Only the routes that make an object name `creates`; the others leave it NULL. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
const tg_route tg_routes[] = {
    {"GET", "/healthz", h_healthz, TG_ROUTE_PUBLIC},
    {"GET", "/v1/:resource/search", tg_handle_search, TG_ROUTE_SECRET}, /* before /v1/X/:id */
    {"POST", "/v1/customers", h_customer_create, TG_ROUTE_SECRET, "cus_"},
    {"GET", "/v1/customers", h_customer_list, TG_ROUTE_SECRET},
    {"GET", "/v1/customers/:id", h_customer_retrieve, TG_ROUTE_SECRET},
    {"POST", "/v1/customers/:id", h_customer_update, TG_ROUTE_SECRET},
    {"DELETE", "/v1/customers/:id", h_customer_delete, TG_ROUTE_SECRET},
    {"POST", "/v1/billing/meters", h_meter_create, TG_ROUTE_SECRET, "mtr_"},
    {"GET", "/v1/billing/meters", h_meter_list, TG_ROUTE_SECRET},
    {"GET", "/v1/billing/meters/:id", h_meter_retrieve, TG_ROUTE_SECRET},
    {"POST", "/v1/billing/meters/:id", h_meter_update, TG_ROUTE_SECRET},
    {"POST", "/v1/billing/meters/:id/deactivate", h_meter_deactivate, TG_ROUTE_SECRET},
    {"POST", "/v1/billing/meters/:id/reactivate", h_meter_reactivate, TG_ROUTE_SECRET},
    {"GET", "/v1/billing/meters/:id/event_summaries", h_summaries, TG_ROUTE_SECRET},
    {"POST", "/v1/billing/meter_events", h_meter_event_create, TG_ROUTE_SECRET | TG_ROUTE_RECORDS},
    {"POST", "/v1/billing/meter_event_adjustments", h_adjustment_create, TG_ROUTE_SECRET},
    {"GET", "/v1/billing/meter_event_errors", h_meter_errors, TG_ROUTE_SECRET},
    {"POST", "/v2/billing/meter_events", h_v2_meter_event_create,
     TG_ROUTE_SECRET | TG_ROUTE_JSON | TG_ROUTE_RECORDS},
    {"POST", "/v2/billing/meter_event_adjustments", h_v2_adjustment_create,
     TG_ROUTE_SECRET | TG_ROUTE_JSON},
    {"POST", "/v2/billing/meter_event_session", h_session_create,
     TG_ROUTE_SECRET | TG_ROUTE_JSON | TG_ROUTE_REPEATABLE},
    {"POST", "/v2/billing/meter_event_stream", h_stream,
     TG_ROUTE_SESSION | TG_ROUTE_JSON | TG_ROUTE_RECORDS | TG_ROUTE_OWN_BODY},
};
#pragma GCC diagnostic pop
const size_t tg_nroutes = sizeof tg_routes / sizeof tg_routes[0];
