/* server.c -- the HTTP transport: libmicrohttpd, epoll event loops in a small thread pool.
 *
 * A few threads serve every connection. A request that records meter events does not wait
 * on a thread: its handler parks the connection (MHD_suspend_connection) and queues the
 * events; the writer thread wakes the connection when its batch is committed, and the
 * handler's continuation writes the answer. So thousands of requests share one fsync with
 * no thread per request and no context switch per request (measured: thread-per-connection
 * spent most of its time switching contexts). Other writes (customers, meters: rare) still
 * wait for their commit inside the handler. The path of a request:
 *   1. the body is accumulated up to max_body (a larger Content-Length is refused at once,
 *      a larger chunked body when it crosses the cap: 413);
 *   2. the route table (http/routes.c) is matched on method and path segments (404/405);
 *   3. authentication: a secret key (Bearer, or Basic with the key as user name) or, for the
 *      v2 stream, a meter event session token (401);
 *   4. parameters: query string, then the body (form for /v1, JSON for /v2 or when the
 *      Content-Type says JSON) into one tree (400 when malformed);
 *   5. Idempotency-Key (POST): replay a stored response, refuse a mismatch (400) or a twin in
 *      flight (409), else run and store the response;
 *   6. the handler; every response is JSON with Request-Id and Stripe-Version headers.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/ids.h"
#include "base/log.h"

#define DEFAULT_STRIPE_VERSION "2026-07-29.dahlia"
#define RESPONSE_CAP (64u << 20)

struct tg_server {
    struct MHD_Daemon *daemon;
    tg_service *svc;
    tg_server_config cfg;
    int parked; /* requests waiting for the writer (atomic) */
};

/* One request's state, from its first byte to its answer (MHD's per-request pointer). */
typedef struct conn_state {
    tg_server *srv;
    struct MHD_Connection *conn;
    tg_buf body;
    bool too_large;
    bool parked;
    tg_req *req; /* while handling */
    char request_id[TG_ID_MAX];
    const char *version;
    const char *idem_key;
    char request_hash[65];
    bool claimed;
} conn_state;

/* ---------------------------------------------------------------- routing */

static int split_path(const char *path, tg_arena *a, const char **segs, int max)
{
    int n = 0;
    const char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (n == max)
            return -1;
        segs[n++] = tg_arena_strndup(a, p, len);
        p += len;
    }
    return n;
}

static bool pattern_matches(const char *pattern, const char **segs, int nsegs, tg_arena *a)
{
    const char *psegs[TG_MAX_SEGS];
    int np = split_path(pattern, a, psegs, TG_MAX_SEGS);
    if (np != nsegs)
        return false;
    for (int i = 0; i < np; i++)
        if (psegs[i][0] != ':' && strcmp(psegs[i], segs[i]) != 0)
            return false;
    return true;
}

/* Finds the route; TG_EROUTE when no pattern matches, TG_EMETHOD when only the method differs. */
static int find_route(tg_req *req, const tg_route **out)
{
    const struct {
        const tg_route *routes;
        size_t n;
    } tables[] = {{tg_routes, tg_nroutes},
                  {tg_billing_routes, tg_nbilling_routes},
                  {tg_entitlement_routes, tg_nentitlement_routes}};
    bool path_known = false;
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
        for (size_t i = 0; i < tables[t].n; i++) {
            const tg_route *r = &tables[t].routes[i];
            if (!pattern_matches(r->pattern, req->segs, req->nsegs, &req->arena))
                continue;
            path_known = true;
            if (strcmp(r->method, req->method) == 0) {
                *out = r;
                return TG_OK;
            }
        }
    if (path_known)
        return tg_err_set(&req->err, TG_EMETHOD, NULL, "Method %s is not allowed for %s.",
                          req->method, req->path);
    return tg_err_set(&req->err, TG_EROUTE, NULL, "Unrecognized request URL (%s: %s).",
                      req->method, req->path);
}

/* ---------------------------------------------------------------- authentication */

static int base64_decode(const char *in, char *out, size_t outsz)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (const char *p = in; *p && *p != '='; p++) {
        const char *k = strchr(tbl, *p);
        if (!k || !*p)
            return -1;
        acc = (acc << 6) | (unsigned)(k - tbl);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n + 1 >= outsz)
                return -1;
            out[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[n] = '\0';
    return 0;
}

/* Extracts the credential from Authorization: "Bearer X" or "Basic base64(X:)". */
static const char *credential(struct MHD_Connection *c, char *buf, size_t bufsz)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h)
        return NULL;
    if (strncasecmp(h, "Bearer ", 7) == 0) {
        snprintf(buf, bufsz, "%s", h + 7);
        return buf;
    }
    if (strncasecmp(h, "Basic ", 6) == 0 && base64_decode(h + 6, buf, bufsz) == 0) {
        char *colon = strchr(buf, ':');
        if (colon)
            *colon = '\0';
        return buf;
    }
    return "";
}

static int authenticate(tg_req *req, struct MHD_Connection *c, int flags)
{
    char buf[512];
    const char *cred = credential(c, buf, sizeof buf);
    if (!cred)
        return tg_err_set(&req->err, TG_EAUTHMISSING, NULL,
                          "You did not provide an API key. You need to provide your API key in "
                          "the Authorization header, using Bearer auth (e.g. 'Authorization: "
                          "Bearer YOUR_SECRET_KEY').");
    if (flags & TG_ROUTE_SESSION)
        return tg_session_authenticate(req->svc, cred, &req->scope, &req->err);
    char masked[16];
    snprintf(masked, sizeof masked, "%.8s", cred);
    if ((strncmp(cred, "sk_test_", 8) != 0 && strncmp(cred, "sk_live_", 8) != 0) ||
        tg_key_authenticate(req->svc, cred, &req->scope, &req->err) == TG_EAUTHINVALID) {
        tg_err_clear(&req->err);
        return tg_err_set(&req->err, TG_EAUTHINVALID, NULL, "Invalid API Key provided: %s***",
                          masked);
    }
    return req->err.code;
}

/* ---------------------------------------------------------------- parameters */

typedef struct query_ctx {
    tg_req *req;
    int rc;
} query_ctx;

static enum MHD_Result add_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    query_ctx *q = cls;
    (void)kind;
    if (q->rc)
        return MHD_NO;
    q->rc = tg_params_add_pair(q->req->params, key, value ? value : "", &q->req->arena,
                               &q->req->err);
    return q->rc ? MHD_NO : MHD_YES;
}

static int decode_params(tg_req *req, struct MHD_Connection *c, const tg_route *route,
                         const tg_buf *body)
{
    req->params = tg_params_new(&req->arena);
    if (!req->params)
        return tg_err_set(&req->err, TG_ENOMEM, NULL, NULL);
    query_ctx q = {req, 0};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, add_query_arg, &q);
    if (q.rc)
        return q.rc;
    if (!body->len)
        return TG_OK;
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    bool json = (route->flags & TG_ROUTE_JSON) ||
                (ct && strncasecmp(ct, "application/json", 16) == 0);
    if (json)
        return tg_params_parse_json(req->params, body->data, body->len, &req->arena, &req->err);
    return tg_params_parse_form(req->params, body->data, body->len, &req->arena, &req->err);
}

/* ---------------------------------------------------------------- responses */

static enum MHD_Result send_json(struct MHD_Connection *c, int status, const char *body,
                                 size_t len, const char *request_id, const char *version,
                                 bool should_retry, const char *idem_key, bool replayed)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(r, "Request-Id", request_id);
    MHD_add_response_header(r, "Stripe-Version", version);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache, no-store");
    if (should_retry)
        MHD_add_response_header(r, "Stripe-Should-Retry", "true");
    if (idem_key)
        MHD_add_response_header(r, "Idempotency-Key", idem_key);
    if (replayed)
        MHD_add_response_header(r, "Idempotent-Replayed", "true");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Errors of parameter validation are not stored under an idempotency key (Stripe stores a
 * result only once the endpoint's work begins); nor are transient ones a retry should redo. */
static bool idem_storable(int status, int code)
{
    if (status == 200)
        return true;
    switch (code) {
    case TG_EINVAL:
    case TG_EMISSING:
    case TG_EUNKNOWN:
    case TG_EINTEGER:
    case TG_EEXCLUSIVE:
    case TG_EMALFORMED:
    case TG_EBUSY:
    case TG_ESHUTDOWN:
    case TG_ESTORE:
    case TG_ENOMEM:
        return false;
    }
    return status < 500;
}

static void free_req(conn_state *st)
{
    if (!st->req)
        return;
    tg_buf_free(&st->req->out);
    tg_arena_free(&st->req->arena);
    free(st->req);
    st->req = NULL;
}

/* Stores the answer under the idempotency key (if claimed), sends it, frees the request. */
static enum MHD_Result answer(conn_state *st, int status)
{
    tg_req *req = st->req;
    if (req->out.failed) {
        tg_err_clear(&req->err);
        tg_buf_reset(&req->out);
        tg_err_set(&req->err, TG_ENOMEM, NULL, "The response is too large.");
        status = tg_reply_error(req);
    }
    if (st->claimed)
        tg_idem_finish(st->srv->svc, &req->scope, st->idem_key, st->request_hash, status,
                       req->out.data, req->out.len, idem_storable(status, req->err.code));
    tg_log(TG_LOG_DEBUG, "%s %s -> %d %s", req->method, req->path, status, st->request_id);
    enum MHD_Result r = send_json(st->conn, status, req->out.data ? req->out.data : "{}",
                                  req->out.len, st->request_id, st->version,
                                  req->should_retry_header, st->idem_key, false);
    free_req(st);
    return r;
}

static void park(void *ctx)
{
    conn_state *st = ctx;
    st->parked = true;
    __atomic_add_fetch(&st->srv->parked, 1, __ATOMIC_SEQ_CST);
    MHD_suspend_connection(st->conn);
}

/* From the writer thread: the events are committed (or failed); back to the event loop. */
static void wake(void *ctx, int rc)
{
    conn_state *st = ctx;
    st->req->record_rc = rc;
    MHD_resume_connection(st->conn);
}

static enum MHD_Result handle(tg_server *srv, struct MHD_Connection *c, const char *url,
                              const char *method, conn_state *st)
{
    tg_req *req = calloc(1, sizeof *req);
    if (!req)
        return MHD_NO;
    st->req = req;
    req->svc = srv->svc;
    req->cfg = &srv->cfg;
    req->method = method;
    req->path = url;
    req->park = park;
    req->wake = wake;
    req->transport_ctx = st;
    tg_arena_init(&req->arena, 64u << 20);
    tg_buf_init(&req->out, RESPONSE_CAP);
    jw_init(&req->jw, &req->out);

    tg_id_random(st->request_id, sizeof st->request_id, "req_", 14);
    st->version = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Stripe-Version");
    if (!st->version || strlen(st->version) > 64)
        st->version = DEFAULT_STRIPE_VERSION;
    const tg_route *route = NULL;

    req->nsegs = split_path(url, &req->arena, req->segs, TG_MAX_SEGS);
    if (req->nsegs < 0) {
        tg_err_set(&req->err, TG_EROUTE, NULL, "Unrecognized request URL (%s: %s).", method, url);
        goto fail;
    }
    if (find_route(req, &route))
        goto fail;
    if (st->too_large) {
        tg_err_set(&req->err, TG_ETOOLARGE, NULL, "Request body exceeds the maximum of %zu bytes.",
                   srv->cfg.max_body);
        goto fail;
    }
    if (!(route->flags & TG_ROUTE_PUBLIC) && authenticate(req, c, route->flags))
        goto fail;
    if (decode_params(req, c, route, &st->body))
        goto fail;

    st->idem_key = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Idempotency-Key");
    if (st->idem_key && strcmp(method, "POST") != 0)
        st->idem_key = NULL; /* no effect on GET and DELETE, as in Stripe */
    if (st->idem_key) {
        if (strlen(st->idem_key) > 255 || !*st->idem_key) {
            tg_err_set(&req->err, TG_EINVAL, NULL,
                       "Invalid Idempotency-Key: must be 1 to 255 characters.");
            st->idem_key = NULL;
            goto fail;
        }
        tg_buf h;
        tg_buf_init(&h, srv->cfg.max_body + 4096);
        tg_buf_printf(&h, "%s %s\n", method, url);
        tg_buf_append(&h, st->body.data ? st->body.data : "", st->body.len);
        tg_sha256_hex(h.data ? h.data : "", h.len, st->request_hash);
        tg_buf_free(&h);
        tg_idem stored;
        bool replayed = false;
        if (tg_idem_claim(srv->svc, &req->scope, st->idem_key, st->request_hash, &req->arena,
                          &replayed, &stored, &req->err))
            goto fail;
        if (replayed) {
            enum MHD_Result r = send_json(c, stored.status, stored.body, stored.body_len,
                                          st->request_id, st->version, false, st->idem_key, true);
            free_req(st);
            return r;
        }
        st->claimed = true;
    }

    int status = route->handler(req);
    if (status == TG_HTTP_DEFERRED)
        return MHD_YES; /* parked: the continuation answers (see on_request) */
    return answer(st, status);

fail:
    return answer(st, tg_reply_error(req));
}

/* ---------------------------------------------------------------- libmicrohttpd glue */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    tg_server *srv = cls;
    (void)version;
    conn_state *st = *con_cls;
    if (st && st->parked) {
        /* Woken by the writer: the continuation writes the answer. */
        st->parked = false;
        __atomic_sub_fetch(&srv->parked, 1, __ATOMIC_SEQ_CST);
        return answer(st, st->req->resume(st->req));
    }
    if (!st) {
        st = calloc(1, sizeof *st);
        if (!st)
            return MHD_NO;
        st->srv = srv;
        st->conn = c;
        tg_buf_init(&st->body, srv->cfg.max_body);
        *con_cls = st;
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
        if (cl && strtoull(cl, NULL, 10) > srv->cfg.max_body) {
            st->too_large = true;
            /* A client that waits for "100 Continue" gets the 413 before sending the body.
             * Others have started sending: the body is read and dropped, so the client is not
             * cut off mid-upload and can read the answer. */
            if (expect && strcasecmp(expect, "100-continue") == 0)
                return handle(srv, c, url, method, st);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!st->too_large && tg_buf_append(&st->body, upload_data, *upload_data_size)) {
            st->too_large = true;
            tg_buf_free(&st->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    return handle(srv, c, url, method, st);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    conn_state *st = *con_cls;
    if (st) {
        free_req(st);
        tg_buf_free(&st->body);
        free(st);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    tg_log(TG_LOG_DEBUG, "http: %s", msg);
}

static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen)
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return -1;
    size_t hl = (size_t)(colon - listen);
    if (hl >= sizeof host)
        return -1;
    memcpy(host, listen, hl);
    host[hl] = '\0';
    memset(ss, 0, sizeof *ss);
    if (host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return -1;
        *len = sizeof *a6;
        return AF_INET6;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return -1;
    *len = sizeof *a4;
    return AF_INET;
}

int tg_server_start(tg_server **out, tg_service *svc, const char *listen,
                    const tg_server_config *cfg, tg_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int family = parse_listen(listen, &ss, &sslen);
    if (family < 0)
        return tg_err_set(err, TG_EINVAL, "listen", "Invalid listen address '%s' (HOST:PORT).",
                          listen);
    tg_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    srv->svc = svc;
    srv->cfg = *cfg;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    unsigned threads = cfg->threads ? cfg->threads : 2;
    if (family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv,
                                   MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                                   MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                                   MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096,
                                   MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
                                   MHD_OPTION_THREAD_POOL_SIZE, threads,
                                   MHD_OPTION_THREAD_STACK_SIZE, (size_t)(1u << 20),
                                   MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
                                   MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                                   MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                   MHD_OPTION_END);
    if (!srv->daemon) {
        free(srv);
        return tg_err_set(err, TG_EINVAL, "listen", "Cannot listen on %s.", listen);
    }
    *out = srv;
    return TG_OK;
}

void tg_server_stop(tg_server *srv)
{
    if (!srv)
        return;
    /* Stop accepting, let parked requests get their commit and answer, then stop. */
    MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    for (int i = 0; i < 3000 && __atomic_load_n(&srv->parked, __ATOMIC_SEQ_CST) > 0; i++)
        usleep(10000);
    MHD_stop_daemon(srv->daemon);
    free(srv);
}
