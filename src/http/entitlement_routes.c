/* entitlement_routes.c -- the handlers of Stripe's entitlements API (features, product
 * features, active entitlements) and of Tollgate's extensions in the same conventions: usage
 * limits on product features and GET /v1/entitlements/check.
 *
 * Same three steps as routes.c. Decimal quantities (limits, usage) are written as decimal
 * strings, as Stripe writes its decimal fields.
 */
#include <stdio.h>
#include <string.h>

#include "base/str.h"
#include "core/billing.h"
#include "core/entitlements.h"
#include "http/api.h"

static void dec_string(tg_jw *w, const char *key, tg_dec d)
{
    char s[TG_DEC_STR_MAX];
    tg_dec_format(d, s);
    jw_kstr(w, key, s);
}

/* ================================================================ renderers */

void tg_render_feature(tg_jw *w, const tg_feature *f)
{
    jw_obj(w);
    jw_kstr(w, "id", f->id);
    jw_kstr(w, "object", "entitlements.feature");
    jw_kbool(w, "active", f->active);
    jw_kbool(w, "livemode", f->livemode);
    jw_kstr(w, "lookup_key", f->lookup_key);
    jw_key(w, "metadata");
    tg_render_metadata(w, &f->metadata);
    jw_kstr(w, "name", f->name);
    jw_end(w);
}

static void render_product_feature(tg_jw *w, const tg_product_feature *pf)
{
    jw_obj(w);
    jw_kstr(w, "id", pf->id);
    jw_kstr(w, "object", "product_feature");
    jw_key(w, "entitlement_feature");
    tg_render_feature(w, &pf->feature);
    jw_kbool(w, "livemode", pf->livemode);
    if (pf->limit.set) {
        jw_key(w, "usage_limit");
        jw_obj(w);
        jw_kstr(w, "enforcement", pf->limit.hard ? "hard" : "soft");
        jw_kstr(w, "meter", pf->limit.meter);
        dec_string(w, "quantity", pf->limit.quantity);
        jw_end(w);
    } else {
        jw_knull(w, "usage_limit");
    }
    jw_end(w);
}

static bool expand_feature(tg_req *req, const char *id)
{
    tg_feature f;
    if (tg_feature_retrieve(req->svc, &req->scope, id, &req->arena, &f, &req->err))
        return false;
    tg_render_feature(&req->jw, &f);
    return true;
}

static void render_entitlement(tg_jw *w, const tg_active_entitlement *e)
{
    jw_obj(w);
    jw_kstr(w, "id", e->id);
    jw_kstr(w, "object", "entitlements.active_entitlement");
    tg_expand_ref(w, "feature", e->feature, expand_feature);
    jw_kbool(w, "livemode", e->livemode);
    jw_kstr(w, "lookup_key", e->lookup_key);
    jw_end(w);
}

void tg_render_entitlement_summary(tg_jw *w, const tg_entitlement_summary *s, bool livemode)
{
    jw_obj(w);
    jw_kstr(w, "object", "entitlements.active_entitlement_summary");
    jw_kstr(w, "customer", s->customer);
    jw_key(w, "entitlements");
    jw_obj(w);
    jw_kstr(w, "object", "list");
    jw_key(w, "data");
    jw_arr(w);
    for (size_t i = 0; i < s->n; i++)
        render_entitlement(w, &s->items[i]);
    jw_aend(w);
    jw_kbool(w, "has_more", false);
    jw_kstr(w, "url", "/v1/entitlements/active_entitlements");
    jw_end(w);
    jw_kbool(w, "livemode", livemode);
    jw_end(w);
}

/* ================================================================ features */

static int feature_reply(tg_req *req, int rc, const tg_feature *f)
{
    if (rc)
        return tg_reply_error(req);
    tg_render_feature(&req->jw, f);
    return 200;
}

static int h_feature_create(tg_req *req)
{
    const char *name = NULL, *lookup_key = NULL;
    tg_metadata md;
    p_str_required(req, NULL, "name", NULL, 80, &name);
    p_str_required(req, NULL, "lookup_key", NULL, TG_LOOKUP_KEY_MAX, &lookup_key);
    p_string_map(req, NULL, "metadata", false, &md, NULL);
    p_expand(req, "entitlements.feature");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_feature f;
    return feature_reply(req, tg_feature_create(req->svc, &req->scope, name, lookup_key, &md,
                                                &req->arena, &f, &req->err), &f);
}

static int h_feature_update(tg_req *req)
{
    static const char *const words[] = {"false", "true", NULL};
    const char *name = NULL;
    int active = -1;
    tg_metadata md;
    bool clear = false;
    p_str(req, NULL, "name", NULL, 80, &name);
    p_enum(req, NULL, "active", NULL, words, &active);
    p_string_map(req, NULL, "metadata", true, &md, &clear);
    p_expand(req, "entitlements.feature");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_feature f;
    return feature_reply(req, tg_feature_update(req->svc, &req->scope, tg_seg(req, 3), name,
                                                active, clear, &md, &req->arena, &f, &req->err),
                         &f);
}

static int h_feature_retrieve(tg_req *req)
{
    p_expand(req, "entitlements.feature");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_feature f;
    return feature_reply(req, tg_feature_retrieve(req->svc, &req->scope, tg_seg(req, 3),
                                                  &req->arena, &f, &req->err), &f);
}

static int h_feature_list(tg_req *req)
{
    static const char *const words[] = {"false", "true", NULL};
    tg_page page;
    int archived = 0;
    const char *lookup_key = NULL;
    if (!p_page(req, &page, "entitlements.feature"))
        return tg_reply_error(req);
    p_enum(req, NULL, "archived", NULL, words, &archived);
    p_str(req, NULL, "lookup_key", NULL, TG_LOOKUP_KEY_MAX, &lookup_key);
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_feature *items;
    size_t n;
    bool more;
    if (tg_feature_list(req->svc, &req->scope, archived, lookup_key, &page, &req->arena, &items,
                        &n, &more, &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/entitlements/features");
    for (size_t i = 0; i < n; i++)
        tg_render_feature(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

/* ================================================================ product features */

static int h_product_feature_attach(tg_req *req)
{
    const char *feature = NULL;
    tg_usage_limit limit;
    memset(&limit, 0, sizeof limit);
    p_str_required(req, NULL, "entitlement_feature", NULL, 255, &feature);
    tg_param *ul = tg_param_get(req->params, "usage_limit");
    if (ul && !tg_req_failed(req)) {
        static const char *const words[] = {"soft", "hard", NULL};
        const char *meter = NULL, *q = NULL;
        int enforcement = 1; /* hard unless told */
        if (ul->kind != TG_PARAM_HASH) {
            tg_err_set(&req->err, TG_EINVAL, "usage_limit",
                       "Invalid usage_limit: give usage_limit[meter] and usage_limit[quantity].");
        } else {
            p_str_required(req, ul, "meter", "usage_limit[meter]", 255, &meter);
            p_str_required(req, ul, "quantity", "usage_limit[quantity]", 64, &q);
            p_enum(req, ul, "enforcement", "usage_limit[enforcement]", words, &enforcement);
            if (q && !tg_req_failed(req) &&
                (tg_dec_parse(q, strlen(q), &limit.quantity) || limit.quantity < 0))
                tg_err_set(&req->err, TG_EINVAL, "usage_limit[quantity]",
                           "Invalid usage_limit[quantity]: a non-negative decimal with at most "
                           "12 decimal places.");
            if (meter)
                tg_strlcpy(limit.meter, meter, sizeof limit.meter);
            limit.hard = enforcement == 1;
            limit.set = true;
        }
    }
    p_expand(req, "product_feature");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_product_feature pf;
    if (tg_product_feature_attach(req->svc, &req->scope, tg_seg(req, 2), feature, &limit,
                                  &req->arena, &pf, &req->err))
        return tg_reply_error(req);
    render_product_feature(&req->jw, &pf);
    return 200;
}

static int h_product_feature_list(tg_req *req)
{
    tg_page page;
    if (!p_page(req, &page, "product_feature") || !tg_req_params_done(req))
        return tg_reply_error(req);
    tg_product_feature *items;
    size_t n;
    bool more;
    if (tg_product_feature_list(req->svc, &req->scope, tg_seg(req, 2), &page, &req->arena,
                                &items, &n, &more, &req->err))
        return tg_reply_error(req);
    char url[128];
    snprintf(url, sizeof url, "/v1/products/%.64s/features", tg_seg(req, 2));
    tg_list_begin(req, url);
    for (size_t i = 0; i < n; i++)
        render_product_feature(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

static int h_product_feature_retrieve(tg_req *req)
{
    p_expand(req, "product_feature");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_product_feature pf;
    if (tg_product_feature_retrieve(req->svc, &req->scope, tg_seg(req, 2), tg_seg(req, 4),
                                    &req->arena, &pf, &req->err))
        return tg_reply_error(req);
    render_product_feature(&req->jw, &pf);
    return 200;
}

static int h_product_feature_detach(tg_req *req)
{
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    if (tg_product_feature_detach(req->svc, &req->scope, tg_seg(req, 2), tg_seg(req, 4),
                                  &req->err))
        return tg_reply_error(req);
    return tg_reply_deleted(req, tg_seg(req, 4), "product_feature");
}

/* ================================================================ active entitlements */

static int h_entitlement_list(tg_req *req)
{
    tg_page page;
    const char *customer = NULL;
    if (!p_page(req, &page, "entitlements.active_entitlement"))
        return tg_reply_error(req);
    p_str_required(req, NULL, "customer", NULL, 255, &customer);
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_active_entitlement *items;
    size_t n;
    bool more;
    if (tg_active_entitlement_list(req->svc, &req->scope, customer, &page, &req->arena, &items,
                                   &n, &more, &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/entitlements/active_entitlements");
    for (size_t i = 0; i < n; i++)
        render_entitlement(&req->jw, &items[i]);
    tg_list_end(req, more);
    return 200;
}

static int h_entitlement_retrieve(tg_req *req)
{
    p_expand(req, "entitlements.active_entitlement");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_active_entitlement e;
    if (tg_active_entitlement_retrieve(req->svc, &req->scope, tg_seg(req, 3), &req->arena, &e,
                                       &req->err))
        return tg_reply_error(req);
    render_entitlement(&req->jw, &e);
    return 200;
}

static int h_entitlement_check(tg_req *req)
{
    const char *customer = NULL, *feature = NULL, *q = NULL;
    tg_dec want = 0;
    p_str_required(req, NULL, "customer", NULL, 255, &customer);
    p_str_required(req, NULL, "feature", NULL, TG_LOOKUP_KEY_MAX, &feature);
    if (p_str(req, NULL, "quantity", NULL, 64, &q) &&
        (tg_dec_parse(q, strlen(q), &want) || want < 0))
        tg_err_set(&req->err, TG_EINVAL, "quantity",
                   "Invalid quantity: a non-negative decimal with at most 12 decimal places.");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_ent_check r;
    if (tg_entitlement_check(req->svc, &req->scope, customer, feature, want, &r, &req->err))
        return tg_reply_error(req);
    tg_jw *w = &req->jw;
    jw_obj(w);
    jw_kstr(w, "object", "entitlements.check");
    jw_kstr(w, "customer", customer);
    jw_kstr(w, "feature", feature);
    jw_kbool(w, "entitled", r.entitled);
    if (r.has_limit) {
        jw_key(w, "limit");
        jw_obj(w);
        jw_kstr(w, "enforcement", r.hard ? "hard" : "soft");
        jw_kstr(w, "meter", r.meter);
        jw_kint(w, "period_end", r.period_end);
        jw_kint(w, "period_start", r.period_start);
        dec_string(w, "quantity", r.quantity);
        dec_string(w, "remaining", r.remaining);
        dec_string(w, "reserved", r.reserved);
        dec_string(w, "used", r.used);
        jw_end(w);
    } else {
        jw_knull(w, "limit");
    }
    jw_kbool(w, "livemode", req->scope.livemode);
    jw_kstr(w, "reason", r.reason);
    jw_end(w);
    return 200;
}

/* ================================================================ usage sessions */

static void render_session(tg_jw *w, const tg_usage_session *u)
{
    static const char *const status_words[] = {"active", "limit_reached", "ended", "expired"};
    jw_obj(w);
    jw_kstr(w, "id", u->id);
    jw_kstr(w, "object", "usage_session");
    jw_kint(w, "billed_quantity", u->recorded);
    jw_kint(w, "created", u->created);
    jw_kstr(w, "customer", u->customer);
    jw_kint_or_null(w, "ended_at", u->ended_at);
    jw_kstr(w, "event_name", u->event_name);
    jw_kstr(w, "feature", u->feature);
    jw_kint(w, "granted_seconds", u->granted_seconds);
    jw_kint(w, "heartbeat_timeout", u->heartbeat_timeout);
    jw_kint(w, "last_heartbeat_at", u->last_heartbeat);
    jw_kbool(w, "livemode", u->livemode);
    jw_key(w, "payload");
    tg_render_metadata(w, &u->payload);
    if (u->limited && u->status == TG_USESS_ACTIVE)
        dec_string(w, "remaining", u->remaining);
    else
        jw_knull(w, "remaining");
    jw_kstr(w, "rounding", u->minute_up ? "minute_up" : "second");
    jw_kstr(w, "status", status_words[u->status]);
    jw_end(w);
}

static int session_reply(tg_req *req, int rc, const tg_usage_session *u)
{
    if (rc)
        return tg_reply_error(req);
    render_session(&req->jw, u);
    return 200;
}

static int h_session_start(tg_req *req)
{
    static const char *const roundings[] = {"second", "minute_up", NULL};
    tg_usage_session_params p;
    memset(&p, 0, sizeof p);
    int rounding = 0;
    p_str_required(req, NULL, "customer", NULL, 255, &p.customer);
    p_str_required(req, NULL, "feature", NULL, TG_LOOKUP_KEY_MAX, &p.feature);
    p_str_required(req, NULL, "event_name", NULL, TG_NAME_MAX, &p.event_name);
    p_string_map(req, NULL, "payload", false, &p.payload, NULL);
    p_enum(req, NULL, "rounding", NULL, roundings, &rounding);
    p_int(req, NULL, "heartbeat_timeout", NULL, 5, 3600, &p.heartbeat_timeout);
    p_expand(req, "usage_session");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    p.minute_up = rounding == 1;
    tg_usage_session u;
    return session_reply(req, tg_usage_session_start(req->svc, &req->scope, &p, &req->arena, &u,
                                                     &req->err), &u);
}

static int session_beat(tg_req *req, bool end)
{
    p_expand(req, "usage_session");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_usage_session u;
    return session_reply(req, tg_usage_session_heartbeat(req->svc, &req->scope, tg_seg(req, 2),
                                                         end, &req->arena, &u, &req->err), &u);
}

static int h_session_heartbeat(tg_req *req) { return session_beat(req, false); }
static int h_session_end(tg_req *req) { return session_beat(req, true); }

static int h_session_retrieve(tg_req *req)
{
    p_expand(req, "usage_session");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_usage_session u;
    return session_reply(req, tg_usage_session_retrieve(req->svc, &req->scope, tg_seg(req, 2),
                                                        &req->arena, &u, &req->err), &u);
}

/* ================================================================ the table */

/* Only the routes that make an object name `creates`; the others leave it NULL. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
const tg_route tg_entitlement_routes[] = {
    {"POST", "/v1/entitlements/features", h_feature_create, TG_ROUTE_SECRET, "feat_"},
    {"GET", "/v1/entitlements/features", h_feature_list, TG_ROUTE_SECRET},
    {"GET", "/v1/entitlements/features/:id", h_feature_retrieve, TG_ROUTE_SECRET},
    {"POST", "/v1/entitlements/features/:id", h_feature_update, TG_ROUTE_SECRET},
    {"POST", "/v1/products/:id/features", h_product_feature_attach, TG_ROUTE_SECRET, "prodft_"},
    {"GET", "/v1/products/:id/features", h_product_feature_list, TG_ROUTE_SECRET},
    {"GET", "/v1/products/:id/features/:fid", h_product_feature_retrieve, TG_ROUTE_SECRET},
    {"DELETE", "/v1/products/:id/features/:fid", h_product_feature_detach, TG_ROUTE_SECRET},
    {"GET", "/v1/entitlements/active_entitlements", h_entitlement_list, TG_ROUTE_SECRET},
    {"GET", "/v1/entitlements/active_entitlements/:id", h_entitlement_retrieve,
     TG_ROUTE_SECRET},
    {"GET", "/v1/entitlements/check", h_entitlement_check, TG_ROUTE_SECRET | TG_ROUTE_CHECK},
    {"POST", "/v1/usage_sessions", h_session_start, TG_ROUTE_SECRET, "usess_"},
    {"GET", "/v1/usage_sessions/:id", h_session_retrieve, TG_ROUTE_SECRET},
    {"POST", "/v1/usage_sessions/:id/heartbeat", h_session_heartbeat, TG_ROUTE_SECRET},
    {"POST", "/v1/usage_sessions/:id/end", h_session_end, TG_ROUTE_SECRET},
};
#pragma GCC diagnostic pop
const size_t tg_nentitlement_routes =
    sizeof tg_entitlement_routes / sizeof tg_entitlement_routes[0];
