/* webhook_routes.c -- the handlers of Stripe's /v1/webhook_endpoints: create, retrieve,
 * update, list, delete. The delivery itself is http/webhook_sender.c's.
 *
 * Same three steps as routes.c. The signing secret is written by the create only, as Stripe
 * does. Tollgate sends its events in one API version and has no connected accounts, so
 * `api_version` other than that version and `connect=true` are refused rather than ignored.
 */
#include <stdio.h>
#include <string.h>

#include "core/webhooks.h"
#include "http/api.h"

static void render_endpoint(tg_jw *w, const tg_webhook_endpoint *e, bool with_secret)
{
    jw_obj(w);
    jw_kstr(w, "id", e->id);
    jw_kstr(w, "object", "webhook_endpoint");
    jw_kstr(w, "api_version", e->api_version);
    jw_knull(w, "application");
    jw_kint(w, "created", e->created);
    jw_kstr(w, "description", e->description);
    jw_key(w, "enabled_events");
    jw_arr(w);
    for (const char *p = e->enabled_events; p && *p;) {
        const char *end = strchr(p, ' ');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char type[128];
        snprintf(type, sizeof type, "%.*s", (int)n, p);
        jw_str(w, type);
        p = end ? end + 1 : p + n;
    }
    jw_aend(w);
    jw_kbool(w, "livemode", e->livemode);
    jw_key(w, "metadata");
    tg_render_metadata(w, &e->metadata);
    if (with_secret)
        jw_kstr(w, "secret", e->secret);
    jw_kstr(w, "status", e->disabled ? "disabled" : "enabled");
    jw_kstr(w, "url", e->url);
    jw_end(w);
}

/* The parameters a create and an update share; false when one is invalid. */
static bool endpoint_params(tg_req *req, tg_webhook_patch *p, bool create)
{
    static const char *const bools[] = {"false", "true", NULL};
    memset(p, 0, sizeof *p);
    p->disabled = -1;
    p_str(req, NULL, "url", NULL, 0, &p->url);
    p_opt_str(req, NULL, "description", 5000, &p->description);
    p_string_map(req, NULL, "metadata", !create, &p->metadata, &p->metadata_clear);
    tg_param *ev = tg_param_get(req->params, "enabled_events");
    if (ev) {
        const char **list = tg_arena_alloc(&req->arena, TG_WEBHOOK_EVENTS_MAX * sizeof *list);
        tg_param_use_all(ev);
        bool ok = list && ev->kind == TG_PARAM_ARRAY;
        for (tg_param *e = ok ? ev->first : NULL; e; e = e->next) {
            if (e->kind != TG_PARAM_STRING || !e->value || !*e->value ||
                p->nevents >= TG_WEBHOOK_EVENTS_MAX) {
                ok = false;
                break;
            }
            list[p->nevents++] = e->value;
        }
        if (!ok || !p->nevents)
            tg_err_set(&req->err, TG_EINVAL, "enabled_events",
                       "Invalid enabled_events: an array of 1 to %d event types, or ['*'].",
                       TG_WEBHOOK_EVENTS_MAX);
        p->events = list;
    }
    if (create) {
        int connect = 0;
        const char *version = NULL;
        p_enum(req, NULL, "connect", NULL, bools, &connect);
        p_str(req, NULL, "api_version", NULL, 64, &version);
        p->api_version = version;
        if (connect == 1)
            tg_err_set(&req->err, TG_EINVAL, "connect",
                       "Invalid connect: Tollgate has no connected accounts.");
        if (version && strcmp(version, TG_STRIPE_VERSION) != 0)
            tg_err_set(&req->err, TG_EINVAL, "api_version",
                       "Invalid api_version: Tollgate sends events in %s only.",
                       TG_STRIPE_VERSION);
    } else {
        p_enum(req, NULL, "disabled", NULL, bools, &p->disabled);
    }
    p_expand(req, "webhook_endpoint");
    return tg_req_params_done(req);
}

static int h_endpoint_create(tg_req *req)
{
    tg_webhook_patch p;
    if (!endpoint_params(req, &p, true))
        return tg_reply_error(req);
    tg_webhook_endpoint e;
    if (tg_webhook_endpoint_create(req->svc, &req->scope, &p, &req->arena, &e, &req->err))
        return tg_reply_error(req);
    render_endpoint(&req->jw, &e, true);
    return 200;
}

static int h_endpoint_update(tg_req *req)
{
    tg_webhook_patch p;
    if (!endpoint_params(req, &p, false))
        return tg_reply_error(req);
    tg_webhook_endpoint e;
    if (tg_webhook_endpoint_update(req->svc, &req->scope, tg_seg(req, 2), &p, &req->arena, &e,
                                   &req->err))
        return tg_reply_error(req);
    render_endpoint(&req->jw, &e, false);
    return 200;
}

static int h_endpoint_retrieve(tg_req *req)
{
    p_expand(req, "webhook_endpoint");
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    tg_webhook_endpoint e;
    if (tg_webhook_endpoint_retrieve(req->svc, &req->scope, tg_seg(req, 2), &req->arena, &e,
                                     &req->err))
        return tg_reply_error(req);
    render_endpoint(&req->jw, &e, false);
    return 200;
}

static int h_endpoint_list(tg_req *req)
{
    tg_page page;
    if (!p_page(req, &page, "webhook_endpoint") || !tg_req_params_done(req))
        return tg_reply_error(req);
    tg_webhook_endpoint *items;
    size_t n;
    bool more;
    if (tg_webhook_endpoint_list(req->svc, &req->scope, &page, &req->arena, &items, &n, &more,
                                 &req->err))
        return tg_reply_error(req);
    tg_list_begin(req, "/v1/webhook_endpoints");
    for (size_t i = 0; i < n; i++)
        render_endpoint(&req->jw, &items[i], false);
    tg_list_end(req, more);
    return 200;
}

static int h_endpoint_delete(tg_req *req)
{
    if (!tg_req_params_done(req))
        return tg_reply_error(req);
    if (tg_webhook_endpoint_delete(req->svc, &req->scope, tg_seg(req, 2), &req->err))
        return tg_reply_error(req);
    return tg_reply_deleted(req, tg_seg(req, 2), "webhook_endpoint");
}

/* Only the routes that make an object name `creates`; the others leave it NULL. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
const tg_route tg_webhook_routes[] = {
    {"POST", "/v1/webhook_endpoints", h_endpoint_create, TG_ROUTE_SECRET, "we_"},
    {"GET", "/v1/webhook_endpoints", h_endpoint_list, TG_ROUTE_SECRET},
    {"GET", "/v1/webhook_endpoints/:id", h_endpoint_retrieve, TG_ROUTE_SECRET},
    {"POST", "/v1/webhook_endpoints/:id", h_endpoint_update, TG_ROUTE_SECRET},
    {"DELETE", "/v1/webhook_endpoints/:id", h_endpoint_delete, TG_ROUTE_SECRET},
};
#pragma GCC diagnostic pop
const size_t tg_nwebhook_routes = sizeof tg_webhook_routes / sizeof tg_webhook_routes[0];
