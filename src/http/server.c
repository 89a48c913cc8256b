/* server.c -- the HTTP transport: one epoll event loop per thread, HTTP/1.1 with keep-alive
 * and pipelining, and requests that wait for the writer without holding a thread.
 *
 * Each loop thread owns its connections from accept to close (the listening socket is in
 * every loop's epoll set with EPOLLEXCLUSIVE, so one loop takes each new connection). A
 * connection is edge-triggered and registered once: reading, writing and parking a request
 * cost no epoll_ctl. Its input is framed by http/http1.c; requests are answered in order, and
 * the answers of every request that arrived together (pipelined) go out in one send().
 *
 * A request that records meter events does not wait on a thread: its handler parks the
 * connection and queues the events; the writer thread, once their batch is committed, puts
 * the connection on its loop's wake list and signals the loop's eventfd (once per batch and
 * loop, not per request), and the loop runs the handler's continuation and writes the answer.
 * So thousands of requests share one fsync with no thread and no system call per request for
 * the wait. (libmicrohttpd, the first transport, suspended and resumed each request with a
 * system call and an epoll_ctl of its own, and served pipelined requests one at a time:
 * measured in BENCHMARKS.md, "Where the time goes".)
 *
 * The path of a request:
 *   1. the head, up to 64 KiB (431 beyond); the body by Content-Length or chunked, up to
 *      max_body: a larger body is read and dropped and answered 413 (at once, before the body,
 *      for a client that sent "Expect: 100-continue");
 *   2. the route table (http/routes.c and the others) is matched on method and path segments
 *      (404/405);
 *   3. authentication: a secret key (Bearer, or Basic with the key as user name) or, for the
 *      v2 stream, a meter event session token (401);
 *   4. parameters: query string, then the body (form for /v1, JSON for /v2 or when the
 *      Content-Type says JSON) into one tree (400 when malformed);
 *   5. Idempotency-Key (POST): replay a stored response, refuse a mismatch (400) or a twin in
 *      flight (409), else run and store the response;
 *   6. the handler; every response is JSON with Request-Id and Stripe-Version headers.
 * A malformed head is answered 400 (or 414, 431, 501, 505) and the connection closed, since
 * where the next request would start is unknown. Idle connections are closed after 300 s.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/ids.h"
#include "base/log.h"
#include "http/http1.h"

#define DEFAULT_STRIPE_VERSION "2026-07-29.dahlia"
#define RESPONSE_CAP (64u << 20)
#define MAX_CONNECTIONS 4096
#define IDLE_TIMEOUT_S 300
#define READ_CHUNK (64u << 10)   /* bytes read at a time */
#define OUT_HIGH_WATER (1u << 20) /* stop answering pipelined requests above this unsent */

typedef struct loop loop;
typedef struct conn conn;

struct tg_server {
    tg_service *svc;
    tg_server_config cfg;
    int listen_fd;
    loop *loops;
    unsigned nloops;
    int parked; /* requests waiting for the writer (atomic) */
    int nconns; /* open connections (atomic) */
};

struct loop {
    tg_server *srv;
    pthread_t thread;
    bool started;
    int epfd, wakefd;
    pthread_mutex_t mu; /* guards woken and stop */
    conn *woken;        /* connections whose events are committed */
    bool stop;
    conn *conns;        /* every open connection of this loop */
    conn *closed;       /* closed in this iteration, freed at its end */
    time_t now;
    char date[40]; /* the Date header's value, for `now` */
};

enum conn_phase { READ_HEAD, READ_BODY, PARKED, CLOSING };

/* A connection and the one request it is reading or answering (requests on a connection are
 * answered in order, so one at a time is all there is). */
struct conn {
    loop *lp;
    int fd;
    conn *prev, *next, *next_woken, *next_closed;
    time_t last_active;
    bool readable, eof, closed, close_after;
    int phase;
    /* input: in[in_off..in_len) is unread by the framing */
    char *in;
    size_t in_off, in_len, in_alloc, scanned;
    /* output: out[out_off..out_len) is unsent */
    char *out;
    size_t out_off, out_len, out_alloc;
    /* the request */
    char *head_copy; /* the head, parsed in place: h points into it */
    tg_http1_head h;
    tg_http1_chunked chunk;
    uint64_t body_left;
    tg_buf body;
    bool too_large;
    tg_req *req; /* while handling */
    char request_id[TG_ID_MAX];
    const char *version;
    const char *idem_key;
    char request_hash[65];
    bool claimed;
};

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

/* Matches a pattern ("/v1/customers/:id") against the request's segments without copying:
 * ":name" matches any one segment, anything else itself. */
static bool pattern_matches(const char *pattern, const char **segs, int nsegs)
{
    const char *p = pattern;
    for (int i = 0; i < nsegs; i++) {
        while (*p == '/')
            p++;
        if (!*p)
            return false;
        size_t len = strcspn(p, "/");
        if (*p != ':' && (strlen(segs[i]) != len || memcmp(p, segs[i], len) != 0))
            return false;
        p += len;
    }
    while (*p == '/')
        p++;
    return *p == '\0';
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
            if (!pattern_matches(r->pattern, req->segs, req->nsegs))
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
static const char *credential(const char *h, char *buf, size_t bufsz)
{
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

static int authenticate(tg_req *req, const char *authorization, int flags)
{
    char buf[512];
    const char *cred = credential(authorization, buf, sizeof buf);
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

static int decode_params(tg_req *req, conn *c, const tg_route *route)
{
    req->params = tg_params_new(&req->arena);
    if (!req->params)
        return tg_err_set(&req->err, TG_ENOMEM, NULL, NULL);
    int rc = tg_params_parse_form(req->params, c->h.query, strlen(c->h.query), &req->arena,
                                  &req->err);
    if (rc || !c->body.len)
        return rc;
    const char *ct = tg_http1_header_value(&c->h, "Content-Type");
    bool json = (route->flags & TG_ROUTE_JSON) ||
                (ct && strncasecmp(ct, "application/json", 16) == 0);
    if (json)
        return tg_params_parse_json(req->params, c->body.data, c->body.len, &req->arena,
                                    &req->err);
    return tg_params_parse_form(req->params, c->body.data, c->body.len, &req->arena, &req->err);
}

/* ---------------------------------------------------------------- responses */

static bool out_reserve(conn *c, size_t n)
{
    if (c->out_len + n <= c->out_alloc)
        return true;
    if (c->out_off) { /* slide the unsent part to the front first */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_len + n <= c->out_alloc)
            return true;
    }
    size_t alloc = c->out_alloc ? c->out_alloc : 4096;
    while (alloc < c->out_len + n)
        alloc *= 2;
    char *p = realloc(c->out, alloc);
    if (!p)
        return false;
    c->out = p;
    c->out_alloc = alloc;
    return true;
}

static void out_append(conn *c, const char *s, size_t n)
{
    if (out_reserve(c, n)) {
        memcpy(c->out + c->out_len, s, n);
        c->out_len += n;
    } else {
        c->close_after = true; /* out of memory: this answer is lost, so is the connection */
    }
}

/* Appends one JSON response. Headers are Stripe's: Request-Id, Stripe-Version, no caching. */
static void send_json(conn *c, int status, const char *body, size_t len, const char *request_id,
                      const char *version, bool should_retry, const char *idem_key,
                      bool replayed)
{
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\n"
                     "Date: %s\r\n"
                     "Content-Type: application/json\r\n"
                     "Content-Length: %zu\r\n"
                     "Request-Id: %s\r\n"
                     "Stripe-Version: %s\r\n"
                     "Cache-Control: no-cache, no-store\r\n"
                     "%s%s%s%s%s"
                     "\r\n",
                     status, tg_http1_reason(status), c->lp->date, len, request_id, version,
                     should_retry ? "Stripe-Should-Retry: true\r\n" : "",
                     idem_key ? "Idempotency-Key: " : "", idem_key ? idem_key : "",
                     idem_key ? "\r\n" : "", replayed ? "Idempotent-Replayed: true\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof head) { /* cannot happen: every part is bounded */
        c->close_after = true;
        return;
    }
    if (c->close_after) /* say so: "Connection: close" goes before the blank line */
        n -= 2, n += snprintf(head + n, sizeof head - (size_t)n, "Connection: close\r\n\r\n");
    out_append(c, head, (size_t)n);
    out_append(c, body, len);
}

/* Answers before a request exists (a malformed head, a transport limit) and closes after. */
static void send_transport_error(conn *c, int status, int code, const char *msg)
{
    tg_err err = {0};
    tg_err_set(&err, code, NULL, "%s", msg);
    tg_buf b;
    tg_buf_init(&b, 4096);
    bool retry;
    tg_render_error(&err, &b, &retry);
    char request_id[TG_ID_MAX];
    tg_id_random(request_id, sizeof request_id, "req_", 14);
    c->close_after = true;
    send_json(c, status, b.data ? b.data : "{}", b.len, request_id, DEFAULT_STRIPE_VERSION,
              retry, NULL, false);
    tg_buf_free(&b);
    c->phase = CLOSING;
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

static void free_req(conn *c)
{
    if (!c->req)
        return;
    tg_buf_free(&c->req->out);
    tg_arena_free(&c->req->arena);
    free(c->req);
    c->req = NULL;
}

/* The request is answered: forget it, and read the next one (or close, if it said so). */
static void request_done(conn *c)
{
    free_req(c);
    free(c->head_copy);
    c->head_copy = NULL;
    tg_buf_reset(&c->body);
    if (c->body.alloc > (64u << 10))
        tg_buf_free(&c->body);
    c->too_large = false;
    c->claimed = false;
    c->idem_key = NULL;
    c->phase = c->close_after ? CLOSING : READ_HEAD;
}

/* Stores the answer under the idempotency key (if claimed) and appends it to the output. */
static void answer(conn *c, int status)
{
    tg_req *req = c->req;
    if (req->out.failed) {
        tg_err_clear(&req->err);
        tg_buf_reset(&req->out);
        tg_err_set(&req->err, TG_ENOMEM, NULL, "The response is too large.");
        status = tg_reply_error(req);
    }
    if (c->claimed)
        tg_idem_finish(c->lp->srv->svc, &req->scope, c->idem_key, c->request_hash, status,
                       req->out.data, req->out.len, idem_storable(status, req->err.code));
    tg_log(TG_LOG_DEBUG, "%s %s -> %d %s", req->method, req->path, status, c->request_id);
    send_json(c, status, req->out.data ? req->out.data : "{}", req->out.len, c->request_id,
              c->version, req->should_retry_header, c->idem_key, false);
    request_done(c);
}

static void park(void *ctx)
{
    conn *c = ctx;
    c->phase = PARKED;
    __atomic_add_fetch(&c->lp->srv->parked, 1, __ATOMIC_SEQ_CST);
}

/* From the writer thread: the events are committed (or failed). The connection goes on its
 * loop's wake list; the loop is signalled when the list was empty, so one batch costs one
 * eventfd write per loop however many requests it answers. */
static void wake(void *ctx, int rc)
{
    conn *c = ctx;
    loop *lp = c->lp;
    c->req->record_rc = rc;
    pthread_mutex_lock(&lp->mu);
    bool was_empty = !lp->woken;
    c->next_woken = lp->woken;
    lp->woken = c;
    pthread_mutex_unlock(&lp->mu);
    if (was_empty) {
        uint64_t one = 1;
        if (write(lp->wakefd, &one, sizeof one) < 0) {
            /* the counter cannot overflow at one write per empty list; nothing to do */
        }
    }
}

/* Runs one complete request: route, authenticate, decode, idempotency, handler. The answer is
 * appended to the output, or the connection is parked until its events are committed. */
static void handle(conn *c)
{
    tg_server *srv = c->lp->srv;
    tg_req *req = calloc(1, sizeof *req);
    if (!req) {
        send_transport_error(c, 500, TG_ENOMEM, "Out of memory.");
        return;
    }
    c->req = req;
    req->svc = srv->svc;
    req->cfg = &srv->cfg;
    req->method = c->h.method;
    req->path = c->h.path;
    req->park = park;
    req->wake = wake;
    req->transport_ctx = c;
    tg_arena_init(&req->arena, 64u << 20);
    tg_buf_init(&req->out, RESPONSE_CAP);
    jw_init(&req->jw, &req->out);

    tg_id_random(c->request_id, sizeof c->request_id, "req_", 14);
    c->version = tg_http1_header_value(&c->h, "Stripe-Version");
    if (!c->version || !*c->version || strlen(c->version) > 64)
        c->version = DEFAULT_STRIPE_VERSION;
    const char *method = req->method, *url = req->path;
    const tg_route *route = NULL;

    req->nsegs = split_path(url, &req->arena, req->segs, TG_MAX_SEGS);
    if (req->nsegs < 0) {
        tg_err_set(&req->err, TG_EROUTE, NULL, "Unrecognized request URL (%s: %s).", method, url);
        goto fail;
    }
    if (find_route(req, &route))
        goto fail;
    if (c->too_large) {
        tg_err_set(&req->err, TG_ETOOLARGE, NULL, "Request body exceeds the maximum of %zu bytes.",
                   srv->cfg.max_body);
        goto fail;
    }
    if (!(route->flags & TG_ROUTE_PUBLIC) &&
        authenticate(req, tg_http1_header_value(&c->h, "Authorization"), route->flags))
        goto fail;
    if (decode_params(req, c, route))
        goto fail;

    c->idem_key = tg_http1_header_value(&c->h, "Idempotency-Key");
    if (c->idem_key && strcmp(method, "POST") != 0)
        c->idem_key = NULL; /* no effect on GET and DELETE, as in Stripe */
    if (c->idem_key) {
        if (strlen(c->idem_key) > 255 || !*c->idem_key) {
            tg_err_set(&req->err, TG_EINVAL, NULL,
                       "Invalid Idempotency-Key: must be 1 to 255 characters.");
            c->idem_key = NULL;
            goto fail;
        }
        tg_buf h;
        tg_buf_init(&h, srv->cfg.max_body + 4096);
        tg_buf_printf(&h, "%s %s\n", method, url);
        tg_buf_append(&h, c->body.data ? c->body.data : "", c->body.len);
        tg_sha256_hex(h.data ? h.data : "", h.len, c->request_hash);
        tg_buf_free(&h);
        tg_idem stored;
        bool replayed = false;
        if (tg_idem_claim(srv->svc, &req->scope, c->idem_key, c->request_hash, &req->arena,
                          &replayed, &stored, &req->err))
            goto fail;
        if (replayed) {
            send_json(c, stored.status, stored.body, stored.body_len, c->request_id, c->version,
                      false, c->idem_key, true);
            request_done(c);
            return;
        }
        c->claimed = true;
    }

    int status = route->handler(req);
    if (status == TG_HTTP_DEFERRED)
        return; /* parked: the loop runs the continuation when woken (see run_woken) */
    answer(c, status);
    return;

fail:
    answer(c, tg_reply_error(req));
}

/* ---------------------------------------------------------------- connections */

static void conn_close(conn *c)
{
    if (c->closed)
        return;
    loop *lp = c->lp;
    c->closed = true;
    close(c->fd); /* also leaves the epoll set */
    if (c->prev)
        c->prev->next = c->next;
    else
        lp->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next_closed = lp->closed; /* freed at the end of the loop's iteration: events for it */
    lp->closed = c;              /* may still be in the array epoll_wait returned */
    __atomic_sub_fetch(&lp->srv->nconns, 1, __ATOMIC_SEQ_CST);
}

static void conn_free(conn *c)
{
    free_req(c);
    free(c->head_copy);
    tg_buf_free(&c->body);
    free(c->in);
    free(c->out);
    free(c);
}

/* Reads what the socket has into the input buffer. Returns false when the connection failed. */
static bool conn_read(conn *c)
{
    if (c->in_off == c->in_len)
        c->in_off = c->in_len = 0;
    if (c->in_alloc - c->in_len < 4096 && c->in_off) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (c->in_alloc - c->in_len < 4096) {
        /* a head may need TG_HTTP1_MAX_HEAD bytes; a body passes through in READ_CHUNKs */
        size_t alloc = c->in_alloc ? c->in_alloc * 2 : 16384;
        if (alloc > TG_HTTP1_MAX_HEAD + READ_CHUNK)
            return true; /* full: the framing consumes before more is read */
        char *p = realloc(c->in, alloc);
        if (!p)
            return false;
        c->in = p;
        c->in_alloc = alloc;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_alloc - c->in_len, 0);
    if (n > 0) {
        c->in_len += (size_t)n;
        c->last_active = c->lp->now;
    } else if (n == 0) {
        c->eof = true;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        c->readable = false; /* edge-triggered: epoll says when there is more */
    } else if (errno != EINTR) {
        return false;
    }
    return true;
}

/* Sends the unsent output. Returns false when the connection failed. */
static bool conn_flush(conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0)
            c->out_off += (size_t)n;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true; /* EPOLLOUT comes when the socket drains */
        else if (n < 0 && errno != EINTR)
            return false;
    }
    c->out_off = c->out_len = 0;
    if (c->out_alloc > (1u << 20)) { /* a large answer went out: do not keep its memory */
        free(c->out);
        c->out = NULL;
        c->out_alloc = 0;
    }
    return true;
}

/* A head is complete in data[0..n): parse it and get ready for its body. */
static void start_request(conn *c, const char *data, size_t n)
{
    const tg_server *srv = c->lp->srv;
    c->head_copy = malloc(n + 1);
    if (!c->head_copy) {
        send_transport_error(c, 500, TG_ENOMEM, "Out of memory.");
        return;
    }
    memcpy(c->head_copy, data, n);
    c->head_copy[n] = '\0';
    const char *why;
    int status = tg_http1_parse_head(c->head_copy, n, &c->h, &why);
    if (status) {
        send_transport_error(c, status, status == 414 || status == 431 ? TG_ETOOLARGE : TG_EMALFORMED,
                             why);
        return;
    }
    if (!c->h.keep_alive)
        c->close_after = true;
    c->body_left = c->h.content_length;
    memset(&c->chunk, 0, sizeof c->chunk);
    c->too_large = c->h.content_length > srv->cfg.max_body;
    c->phase = READ_BODY;
    if (c->h.expect_continue && (c->h.chunked || c->body_left)) {
        if (c->too_large) {
            /* refused before the body is sent; a body sent anyway is not read */
            c->close_after = true;
            handle(c);
        } else if (c->in_off == c->in_len) {
            out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        }
    }
}

/* Moves body bytes from the input; handles the request once the body is complete. Returns
 * true when it consumed anything or changed phase. */
static bool read_body(conn *c, const char *data, size_t avail)
{
    tg_buf *sink = c->too_large ? NULL : &c->body; /* too large: read and dropped */
    size_t used;
    if (c->h.chunked) {
        bool done;
        long n = tg_http1_chunked_decode(&c->chunk, data, avail, sink, &done);
        if (n < 0) {
            send_transport_error(c, 400, TG_EMALFORMED, "Malformed chunked request body.");
            return true;
        }
        used = (size_t)n;
        c->body_left = !done;
    } else {
        used = avail < c->body_left ? avail : (size_t)c->body_left;
        if (sink)
            tg_buf_append(sink, data, used);
        c->body_left -= used;
    }
    c->in_off += used;
    if (c->body.failed) {
        c->too_large = true;
        tg_buf_free(&c->body);
    }
    if (c->body_left)
        return used > 0;
    handle(c);
    return true;
}

/* Makes the progress the buffered input allows: a head, body bytes, a request handled.
 * Returns true when something changed. */
static bool advance(conn *c)
{
    const char *data = c->in + c->in_off;
    size_t avail = c->in_len - c->in_off;
    if (c->phase == READ_BODY)
        return read_body(c, data, avail);
    /* READ_HEAD; empty lines between requests are ignored (RFC 9112 section 2.2) */
    if (c->scanned == 0)
        while (avail && (*data == '\r' || *data == '\n'))
            data++, avail--, c->in_off++;
    size_t n = tg_http1_head_end(data, avail, &c->scanned);
    if (!n) {
        if (avail < TG_HTTP1_MAX_HEAD)
            return false;
        send_transport_error(c, 431, TG_ETOOLARGE, "The request head is larger than 64 KiB.");
        return true;
    }
    c->in_off += n;
    c->scanned = 0;
    start_request(c, data, n);
    return true;
}

/* Runs the connection as far as it goes: read, frame, handle, send. Closes it when it is done
 * (the peer finished, an error, or "Connection: close" once the answer is out). */
static void conn_process(conn *c)
{
    bool starved = false;
    for (;;) {
        while (c->phase == READ_HEAD || c->phase == READ_BODY) {
            if (c->out_len - c->out_off > OUT_HIGH_WATER)
                break; /* the peer is not reading its answers: stop making more */
            if (advance(c))
                continue;
            if (!c->readable || c->eof) {
                starved = true;
                break;
            }
            if (!conn_read(c)) {
                conn_close(c);
                return;
            }
        }
        size_t unsent = c->out_len - c->out_off;
        if (!conn_flush(c)) {
            conn_close(c);
            return;
        }
        /* go on only if the high-water mark stopped us and sending lowered it */
        if (starved || unsent <= OUT_HIGH_WATER || c->out_len - c->out_off > OUT_HIGH_WATER ||
            c->phase == PARKED || c->phase == CLOSING)
            break;
    }
    if (c->out_off == c->out_len && (c->phase == CLOSING || (starved && c->eof)))
        conn_close(c);
}

/* ---------------------------------------------------------------- event loops */

static int listen_mark, wake_mark; /* epoll data for the listening socket and the eventfd */

static void accept_connections(loop *lp)
{
    tg_server *srv = lp->srv;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                tg_log(TG_LOG_WARN, "http: accept: %s", strerror(errno));
            return;
        }
        if (__atomic_add_fetch(&srv->nconns, 1, __ATOMIC_SEQ_CST) > MAX_CONNECTIONS) {
            __atomic_sub_fetch(&srv->nconns, 1, __ATOMIC_SEQ_CST);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn *c = calloc(1, sizeof *c);
        if (!c) {
            __atomic_sub_fetch(&srv->nconns, 1, __ATOMIC_SEQ_CST);
            close(fd);
            continue;
        }
        c->lp = lp;
        c->fd = fd;
        c->last_active = lp->now;
        tg_buf_init(&c->body, srv->cfg.max_body);
        c->next = lp->conns;
        if (lp->conns)
            lp->conns->prev = c;
        lp->conns = c;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, fd, &ev))
            conn_close(c);
    }
}

/* Answers the requests whose events the writer has committed. */
static void run_woken(loop *lp)
{
    uint64_t count;
    if (read(lp->wakefd, &count, sizeof count) < 0) {
        /* EAGAIN: another wake already drained it; the list is what matters */
    }
    pthread_mutex_lock(&lp->mu);
    conn *list = lp->woken;
    lp->woken = NULL;
    pthread_mutex_unlock(&lp->mu);
    for (conn *c = list, *next; c; c = next) {
        next = c->next_woken;
        __atomic_sub_fetch(&lp->srv->parked, 1, __ATOMIC_SEQ_CST);
        c->last_active = lp->now;
        answer(c, c->req->resume(c->req));
        conn_process(c);
    }
}

static void tick(loop *lp, time_t now)
{
    lp->now = now;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(lp->date, sizeof lp->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    for (conn *c = lp->conns, *next; c; c = next) {
        next = c->next;
        if (c->phase != PARKED && now - c->last_active > IDLE_TIMEOUT_S)
            conn_close(c);
    }
}

static void *loop_main(void *arg)
{
    loop *lp = arg;
    struct epoll_event evs[256];
    while (!__atomic_load_n(&lp->stop, __ATOMIC_SEQ_CST)) {
        int n = epoll_wait(lp->epfd, evs, 256, 1000);
        if (n < 0 && errno != EINTR) {
            tg_log(TG_LOG_ERROR, "http: epoll_wait: %s", strerror(errno));
            break;
        }
        time_t now = time(NULL);
        if (now != lp->now)
            tick(lp, now);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &listen_mark) {
                accept_connections(lp);
            } else if (p == &wake_mark) {
                run_woken(lp);
            } else {
                conn *c = p;
                if (c->closed)
                    continue;
                if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                    c->readable = true;
                conn_process(c);
            }
        }
        while (lp->closed) {
            conn *c = lp->closed;
            lp->closed = c->next_closed;
            conn_free(c);
        }
    }
    return NULL;
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

static void loops_free(tg_server *srv)
{
    for (unsigned i = 0; i < srv->nloops; i++) {
        loop *lp = &srv->loops[i];
        for (conn *c = lp->conns, *next; c; c = next) {
            next = c->next;
            bool parked = c->phase == PARKED;
            conn_close(c);
            if (parked) /* the writer may still wake it: leave it be */
                lp->closed = c->next_closed;
        }
        while (lp->closed) {
            conn *c = lp->closed;
            lp->closed = c->next_closed;
            conn_free(c);
        }
        if (lp->epfd >= 0)
            close(lp->epfd);
        if (lp->wakefd >= 0)
            close(lp->wakefd);
        pthread_mutex_destroy(&lp->mu);
    }
    free(srv->loops);
}

static int loop_init(loop *lp, tg_server *srv)
{
    lp->srv = srv;
    pthread_mutex_init(&lp->mu, NULL);
    lp->epfd = epoll_create1(EPOLL_CLOEXEC);
    lp->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (lp->epfd < 0 || lp->wakefd < 0)
        return -1;
    struct epoll_event wake_ev = {.events = EPOLLIN, .data.ptr = &wake_mark};
    struct epoll_event listen_ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &listen_mark};
    if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->wakefd, &wake_ev) ||
        epoll_ctl(lp->epfd, EPOLL_CTL_ADD, srv->listen_fd, &listen_ev))
        return -1;
    tick(lp, time(NULL));
    return 0;
}

int tg_server_start(tg_server **out, tg_service *svc, const char *listen_at,
                    const tg_server_config *cfg, tg_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int family = parse_listen(listen_at, &ss, &sslen);
    if (family < 0)
        return tg_err_set(err, TG_EINVAL, "listen", "Invalid listen address '%s' (HOST:PORT).",
                          listen_at);
    tg_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    srv->svc = svc;
    srv->cfg = *cfg;
    srv->nloops = cfg->threads ? cfg->threads : 2;
    srv->listen_fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (srv->listen_fd < 0 ||
        setsockopt(srv->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(srv->listen_fd, (struct sockaddr *)&ss, sslen) || listen(srv->listen_fd, 1024)) {
        if (srv->listen_fd >= 0)
            close(srv->listen_fd);
        free(srv);
        return tg_err_set(err, TG_EINVAL, "listen", "Cannot listen on %s: %s.", listen_at,
                          strerror(errno));
    }
    srv->loops = calloc(srv->nloops, sizeof *srv->loops);
    bool ok = srv->loops != NULL;
    if (!ok)
        srv->nloops = 0;
    for (unsigned i = 0; ok && i < srv->nloops; i++) {
        srv->loops[i].epfd = srv->loops[i].wakefd = -1;
        ok = loop_init(&srv->loops[i], srv) == 0 &&
             pthread_create(&srv->loops[i].thread, NULL, loop_main, &srv->loops[i]) == 0;
        if (ok)
            srv->loops[i].started = true;
        else
            srv->nloops = i + 1; /* tear down what was made */
    }
    if (!ok) {
        tg_server_stop(srv);
        return tg_err_set(err, TG_ENOMEM, NULL, "Cannot start the HTTP threads.");
    }
    *out = srv;
    return TG_OK;
}

void tg_server_stop(tg_server *srv)
{
    if (!srv)
        return;
    /* Stop accepting, let parked requests get their commit and answer, then stop. */
    for (unsigned i = 0; i < srv->nloops; i++)
        if (srv->loops[i].epfd >= 0)
            epoll_ctl(srv->loops[i].epfd, EPOLL_CTL_DEL, srv->listen_fd, NULL);
    close(srv->listen_fd);
    for (int i = 0; i < 3000 && __atomic_load_n(&srv->parked, __ATOMIC_SEQ_CST) > 0; i++)
        usleep(10000);
    for (unsigned i = 0; i < srv->nloops; i++) {
        loop *lp = &srv->loops[i];
        if (!lp->started)
            continue;
        __atomic_store_n(&lp->stop, true, __ATOMIC_SEQ_CST);
        uint64_t one = 1;
        if (write(lp->wakefd, &one, sizeof one) < 0) {
            /* the loop also wakes once a second and sees the flag */
        }
        pthread_join(lp->thread, NULL);
    }
    if (srv->loops)
        loops_free(srv);
    free(srv);
}
