/* server.c -- the HTTP transport: one epoll event loop per thread, HTTP/1.1 with keep-alive
 * and pipelining, and requests that wait for the writer without holding a thread.
 *
 * Each loop thread owns its connections from accept to close (the listening socket is in
 * every loop's epoll set with EPOLLEXCLUSIVE, so one loop takes each new connection). A
 * connection is edge-triggered and registered once: reading, writing and parking a request
 * cost no epoll_ctl. Its input is framed by http/http1.c; answers go out in the order the
 * requests came, and the answers of requests that arrived together (pipelined) go out in one
 * send(). Pipelined requests that record meter events run together, up to MAX_PIPELINE of
 * them waiting for the writer at once; any other request waits for those before it, so it
 * sees their effects as if the requests had come one at a time (see struct conn). A
 * connection whose first request is an entitlement check moves to the check lane, one more
 * loop that serves only such connections, so checks do not wait behind event batches (see
 * conn_move_to_lane).
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
 * where the next request would start is unknown; a closing connection drains what the peer
 * still sends for up to 2 s (see linger), so the answer is not lost to a reset. Idle
 * connections are closed after 300 s.
 */
#include "http/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/ids.h"
#include "base/log.h"
#include "base/str.h"
#include "http/http1.h"

#define RESPONSE_CAP (64u << 20)
#define MAX_CONNECTIONS 4096 /* or the open-file limit less a margin, if lower */
#define IDLE_TIMEOUT_S 300
#define BUSY_IDLE_TIMEOUT_S 10 /* the idle timeout once 3/4 of max_conns are open */
#define LINGER_S 2 /* how long a closing connection drains what the peer still sends */
#define READ_CHUNK (64u << 10)   /* bytes read at a time */
#define OUT_HIGH_WATER (1u << 20) /* stop answering pipelined requests above this unsent */
#define MAX_PIPELINE 32           /* requests of one connection recording events at once */
#define CHECK_LANE_NICE_BOOST 10  /* as the writer's BOOST_NICE */
#define TURN_REQUESTS 64          /* requests one connection starts before the others' turn */
#define SPARE_REQUESTS 128        /* finished requests a loop keeps for reuse */
#define SPARE_BUFFER (64u << 10)  /* a kept request keeps buffers up to this size */

typedef struct loop loop;
typedef struct conn conn;
typedef struct request request;

struct tg_server {
    tg_service *svc;
    tg_server_config cfg;
    int listen_fd;
    loop *loops;
    unsigned nloops;  /* the accepting loops, then the check lane (loops[nloops - 1]) */
    unsigned naccept;
    int parked; /* requests waiting for the writer (atomic) */
    int nconns; /* open connections (atomic) */
    int max_conns;
};

struct loop {
    tg_server *srv;
    pthread_t thread;
    bool started;
    int epfd, wakefd;
    pthread_mutex_t mu; /* guards woken and moved */
    request *woken;     /* requests whose events are committed */
    conn *moved;        /* connections handed here by another loop: accepted by it for this
                         * one, or moved to the check lane with their first request held */
    bool check_lane;    /* serves connections whose first request is a check */
    int nconns;         /* this loop's open connections (atomic) */
    bool stop;          /* atomic */
    bool draining;      /* atomic: the server is stopping (see tg_server_stop) */
    bool drained;       /* atomic: the loop has seen `draining` and stopped reading */
    int spare_fd;       /* closed to accept (and refuse) a connection when out of files */
    time_t files_logged;
    conn *conns;        /* every open connection of this loop */
    conn *closed;       /* closed in this iteration, freed at its end */
    conn *ready;        /* connections whose turn ended with requests left (see conn_process) */
    request *spare;     /* finished requests kept with their memory (see request_new) */
    unsigned nspare;
    time_t now;
    char date[40]; /* the Date header's value, for `now` */
};

/* One request, from its head to its answer. */
struct request {
    conn *c;
    request *next;        /* the connection's queue, in arrival order */
    request *next_woken;  /* the loop's wake list */
    char *head_copy;      /* the head (in rq's arena), parsed in place: h points into it */
    tg_http1_head h;
    tg_http1_chunked chunk;
    uint64_t body_left;
    tg_buf body;
    bool too_large;
    bool continue_due;    /* "Expect: 100-continue" waits for the answers before it */
    bool close_after;     /* the connection closes once this answer is out */
    const tg_route *route;
    tg_req rq;
    tg_req *req; /* &rq once prepared */
    char request_id[TG_ID_MAX];
    const char *idem_key;
    char request_hash[65];
    bool claimed;
    bool replaying; /* answering from the objects for a run whose response was lost */
    bool answered;
    tg_buf answer; /* the answer, while a request before it is still unanswered */
};

/* A connection. Requests are read one after another into `reading`; once read they are
 * handled, joining `queue`, and their answers go out in the queue's order. Several may be in
 * the queue at once only while every one of them records meter events (parked until their
 * commit): those do not depend on each other's results, while any other request must see the
 * effects of the ones before it, so it waits (`held`) until the queue is empty. */
#define AUTH_KEY_CACHED 128 /* longer keys are authenticated every time */

struct conn {
    loop *lp;
    int fd;
    conn *prev, *next, *next_closed;
    time_t last_active;
    time_t partial_since;           /* input of a request not yet whole, since (tick's view) */
    unsigned long partial_requests; /* `requests` then: a new request means progress */
    conn *next_touched; /* run_woken's list */
    conn *next_moved;
    conn *next_ready;   /* the loop's `ready` list, when `ready` */
    bool ready;         /* it used its turn with requests left: it goes on next round */
    bool move_to_lane;  /* its first request is a check: hand it to the check lane */
    unsigned long requests;
    bool touched;
    bool readable, hup, eof, closed, failed; /* hup: epoll saw the peer's FIN or an error */
    bool done_reading; /* a request said "close", or the framing failed: read no more */
    bool closing;      /* the last answer is queued: close once it is sent */
    bool lingering;    /* the last answer is sent: reading and dropping until the peer closes */
    /* input: in[in_off..in_len) is unread by the framing */
    char *in;
    size_t in_off, in_len, in_alloc, scanned;
    /* output: out.data[out_off..out.len) is unsent */
    tg_buf out;
    size_t out_off;
    request *reading, *held;
    request *queue, *queue_tail;
    int queued, parked;
    /* The secret key this connection last authenticated with, and its scope: a client sends
     * the same key with every request, and hashing it again cost ~3,400 instructions a
     * request. Trusted until key_until (the loop's clock), then authenticated again, so a
     * revoked key stops working within 2 x TG_KEY_RECHECK_S. */
    char key[AUTH_KEY_CACHED];
    tg_scope key_scope;
    time_t key_until;
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
 * ":name" matches any one segment, anything else itself. Compared a byte at a time: most
 * patterns differ within a few bytes (strcspn, strlen and memcmp a segment made the route
 * search 3,500 instructions a request). */
static bool pattern_matches(const char *p, const char **segs, int nsegs)
{
    for (int i = 0; i < nsegs; i++) {
        while (*p == '/')
            p++;
        if (!*p)
            return false;
        if (*p == ':') {
            while (*p && *p != '/')
                p++;
            continue;
        }
        const char *s = segs[i];
        while (*s && *s == *p)
            s++, p++;
        if (*s || (*p && *p != '/'))
            return false;
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
                  {tg_entitlement_routes, tg_nentitlement_routes},
                  {tg_webhook_routes, tg_nwebhook_routes}};
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
    const char *p = in;
    for (; *p && *p != '='; p++) {
        const char *k = strchr(tbl, *p);
        if (!k)
            return -1;
        acc = (acc << 6) | (unsigned)(k - tbl);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n + 1 >= outsz)
                return -1;
            out[n++] = (char)((acc >> bits) & 0xff);
            if (!out[n - 1])
                return -1; /* a NUL would cut the credential short */
        }
    }
    while (*p == '=') /* padding, and nothing after it */
        p++;
    if (*p)
        return -1;
    out[n] = '\0';
    return 0;
}

/* Extracts the credential from Authorization: "Bearer X" or "Basic base64(X:)". */
static const char *credential(const char *h, char *buf, size_t bufsz)
{
    if (!h)
        return NULL;
    if (strncasecmp(h, "Bearer ", 7) == 0) {
        tg_strlcpy(buf, h + 7, bufsz);
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

static int authenticate(conn *c, tg_req *req, const char *authorization, int flags)
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
    if (c->key[0] && c->lp->now < c->key_until && strcmp(cred, c->key) == 0) {
        req->scope = c->key_scope;
        req->key = c->key; /* unchanged while this request's handler runs */
        return TG_OK;
    }
    c->key[0] = '\0';
    if ((strncmp(cred, "sk_test_", 8) != 0 && strncmp(cred, "sk_live_", 8) != 0) ||
        tg_key_authenticate(req->svc, cred, &req->scope, &req->err) == TG_EAUTHINVALID) {
        tg_err_clear(&req->err);
        return tg_err_set(&req->err, TG_EAUTHINVALID, NULL, "Invalid API Key provided: %.8s***",
                          cred);
    }
    if (req->err.code)
        return req->err.code;
    if (strlen(cred) < sizeof c->key) {
        strcpy(c->key, cred);
        c->key_scope = req->scope;
        c->key_until = c->lp->now + TG_KEY_RECHECK_S;
        req->key = c->key;
    } else if (!(req->key = tg_arena_strdup(&req->arena, cred))) {
        return tg_err_set(&req->err, TG_ENOMEM, NULL, NULL);
    }
    return TG_OK;
}

/* ---------------------------------------------------------------- parameters */

static int decode_params(request *r)
{
    tg_req *req = r->req;
    req->params = tg_params_new(&req->arena);
    if (!req->params)
        return tg_err_set(&req->err, TG_ENOMEM, NULL, NULL);
    if (r->route->flags & TG_ROUTE_PUBLIC)
        return TG_OK; /* public routes take no parameters: no work for an anonymous body */
    int rc = tg_params_parse_form(req->params, r->h.query, strlen(r->h.query), &req->arena,
                                  &req->err);
    if (rc || !r->body.len)
        return rc;
    req->body = r->body.data;
    req->body_len = r->body.len;
    if (r->route->flags & TG_ROUTE_OWN_BODY)
        return TG_OK;
    const char *ct = tg_http1_header_value(&r->h, "Content-Type");
    bool json = (r->route->flags & TG_ROUTE_JSON) ||
                (ct && strncasecmp(ct, "application/json", 16) == 0);
    if (json)
        return tg_params_parse_json(req->params, r->body.data, r->body.len, &req->arena,
                                    &req->err);
    return tg_params_parse_form(req->params, r->body.data, r->body.len, &req->arena, &req->err);
}

/* ---------------------------------------------------------------- requests and answers */

/* Requests are recycled through their loop's spare list with their memory (the arena's first
 * chunk, the body, answer and output buffers up to SPARE_BUFFER): a request otherwise cost
 * about six mallocs and frees, some 5% of the server's time on single events. */
static request *request_new(conn *c)
{
    loop *lp = c->lp;
    request *r = lp->spare;
    if (r) {
        lp->spare = r->next;
        lp->nspare--;
        tg_arena arena = r->rq.arena;
        tg_buf body = r->body, answer = r->answer, out = r->rq.out;
        memset(r, 0, sizeof *r);
        r->rq.arena = arena;
        r->body = body;
        r->answer = answer;
        r->rq.out = out;
    } else {
        r = calloc(1, sizeof *r);
        if (!r)
            return NULL;
        tg_arena_init(&r->rq.arena, 64u << 20);
        tg_buf_init(&r->body, lp->srv->cfg.max_body);
        tg_buf_init(&r->answer, RESPONSE_CAP + 4096);
        tg_buf_init(&r->rq.out, RESPONSE_CAP);
    }
    r->c = c;
    return r;
}

static void request_destroy(request *r)
{
    tg_buf_free(&r->rq.out);
    tg_arena_free(&r->rq.arena);
    tg_buf_free(&r->body);
    tg_buf_free(&r->answer);
    free(r);
}

static void keep_buffer(tg_buf *b)
{
    if (b->alloc > SPARE_BUFFER)
        tg_buf_free(b);
    else
        tg_buf_reset(b);
}

/* Called on the loop thread that owns r's connection. */
static void request_free(request *r)
{
    if (!r)
        return;
    loop *lp = r->c->lp;
    if (lp->nspare >= SPARE_REQUESTS) {
        request_destroy(r);
        return;
    }
    tg_arena_reset(&r->rq.arena);
    keep_buffer(&r->rq.out);
    keep_buffer(&r->body);
    keep_buffer(&r->answer);
    r->next = lp->spare;
    lp->spare = r;
    lp->nspare++;
}

/* Writes one JSON response into dst. Headers are Stripe's: Request-Id, Stripe-Version, no
 * caching; "Connection: close" when the connection closes after it. */
static void format_answer(tg_buf *dst, const request *r, int status, const char *body,
                          size_t len, bool should_retry, const char *idem_key, bool replayed)
{
    /* HTTP/1.0 keeps a connection only when told; HEAD gets the headers alone */
    bool announce_keep_alive = r->h.minor == 0 && r->h.keep_alive && !r->close_after;
    bool head = r->h.method && strcmp(r->h.method, "HEAD") == 0;
    /* Appended piece by piece: one printf of it cost more than the rest of the answer. */
    tg_buf_puts(dst, "HTTP/1.1 ");
    tg_buf_put_int(dst, status);
    tg_buf_puts(dst, " ");
    tg_buf_puts(dst, tg_http1_reason(status));
    tg_buf_puts(dst, "\r\nDate: ");
    tg_buf_puts(dst, r->c->lp->date);
    tg_buf_puts(dst, "\r\nContent-Type: application/json\r\nContent-Length: ");
    tg_buf_put_int(dst, (int64_t)len);
    tg_buf_puts(dst, "\r\nRequest-Id: ");
    tg_buf_puts(dst, r->request_id);
    tg_buf_puts(dst, "\r\nStripe-Version: ");
    tg_buf_puts(dst, TG_STRIPE_VERSION); /* the shapes served, whatever was asked */
    tg_buf_puts(dst, "\r\nCache-Control: no-cache, no-store\r\n");
    if (should_retry)
        tg_buf_puts(dst, "Stripe-Should-Retry: true\r\n");
    if (idem_key) {
        tg_buf_puts(dst, "Idempotency-Key: ");
        tg_buf_puts(dst, idem_key);
        tg_buf_puts(dst, "\r\n");
    }
    if (replayed)
        tg_buf_puts(dst, "Idempotent-Replayed: true\r\n");
    if (r->close_after)
        tg_buf_puts(dst, "Connection: close\r\n");
    if (announce_keep_alive)
        tg_buf_puts(dst, "Connection: keep-alive\r\n");
    tg_buf_puts(dst, "\r\n");
    if (!head)
        tg_buf_append(dst, body, len);
}

/* Moves the answers at the front of the queue to the output, in order. */
static void queue_flush_answers(conn *c)
{
    while (c->queue && c->queue->answered) {
        request *r = c->queue;
        c->queue = r->next;
        if (!c->queue)
            c->queue_tail = NULL;
        c->queued--;
        if (r->answer.len)
            tg_buf_append(&c->out, r->answer.data, r->answer.len);
        if (r->close_after)
            c->closing = true;
        request_free(r);
    }
    if (c->out.failed) /* out of memory: the answers are lost, so is the connection */
        c->failed = true;
    request *r = c->reading;
    if (r && r->continue_due && !c->queue) {
        r->continue_due = false;
        tg_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
    }
}

/* Answers r (which is in the queue): straight into the output when r is first, else kept in r
 * until the requests before it are answered. */
static void emit(request *r, int status, const char *body, size_t len, bool should_retry,
                 const char *idem_key, bool replayed)
{
    conn *c = r->c;
    format_answer(c->queue == r ? &c->out : &r->answer, r, status, body, len, should_retry,
                  idem_key, replayed);
    r->answered = true;
    queue_flush_answers(c);
}

static void queue_push(conn *c, request *r)
{
    r->next = NULL;
    if (c->queue_tail)
        c->queue_tail->next = r;
    else
        c->queue = r;
    c->queue_tail = r;
    c->queued++;
}

/* Answers a request the transport refuses (a malformed head, a limit, no memory) and reads no
 * more from the connection: where the next request would start is unknown. */
static void refuse(conn *c, request *r, int status, int code, const char *msg)
{
    if (c->reading == r)
        c->reading = NULL;
    c->done_reading = true;
    r->close_after = true;
    tg_err err = {0};
    tg_err_set(&err, code, NULL, "%s", msg);
    tg_buf b;
    tg_buf_init(&b, 4096);
    bool retry;
    tg_render_error(&err, &b, &retry);
    tg_id_unique(r->request_id, sizeof r->request_id, "req_", 14);
    queue_push(c, r);
    emit(r, status, b.data ? b.data : "{}", b.len, retry, NULL, false);
    tg_buf_free(&b);
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

/* Stores the answer under the idempotency key (if claimed) and emits it. */
static void answer(request *r, int status)
{
    tg_req *req = r->req;
    if (req->out.failed) {
        tg_err_clear(&req->err);
        tg_buf_reset(&req->out);
        tg_err_set(&req->err, TG_ENOMEM, NULL, "The response is too large.");
        status = tg_reply_error(req);
    }
    bool store = r->replaying ? status == 200 : idem_storable(status, req->err.code);
    if (r->claimed)
        tg_idem_finish(r->c->lp->srv->svc, &req->scope, r->idem_key, r->request_hash, status,
                       req->out.data, req->out.len, store);
    tg_log(TG_LOG_DEBUG, "%s %s -> %d %s", req->method, req->path, status, r->request_id);
    emit(r, status, req->out.data ? req->out.data : "{}", req->out.len, req->should_retry_header,
         r->idem_key, r->replaying);
}

/* Index of the first ":name" segment of a route pattern, or -1. */
static int pattern_id_segment(const char *pattern)
{
    int i = 0;
    for (const char *p = pattern; *p;) {
        while (*p == '/')
            p++;
        if (*p == ':')
            return i;
        if (*p)
            i++;
        p += strcspn(p, "/");
    }
    return -1;
}

/* Answers a claimed request whose first run under the key committed its writes, but whose
 * response was lost (the server stopped before storing it): running it again would write
 * twice, so the answer is the object as it is now, from its GET route: for a route that
 * `creates`, the object noted when it was written; for others, the one the path names (up to
 * its ":id" segment). Of the request's parameters (the same as the first run's: the key
 * guarantees it) only expand[] applies. A request with no such object is refused with
 * EIDEMLOST. Only a 200 is stored under the key. */
static void replay_committed(request *r, const char *created)
{
    tg_req *req = r->req;
    const tg_route *post = r->route, *get = NULL;
    int keep = !post->creates ? pattern_id_segment(post->pattern) + 1 : *created ? req->nsegs : 0;
    r->replaying = true;
    if (keep > 0) {
        tg_buf path;
        tg_buf_init(&path, 4096);
        for (int i = 0; i < keep; i++)
            tg_buf_printf(&path, "/%s", req->segs[i]);
        if (post->creates)
            tg_buf_printf(&path, "/%s", created);
        req->method = "GET";
        req->path = path.data ? tg_arena_strdup(&req->arena, path.data) : NULL;
        tg_buf_free(&path);
        /* The retry carries the first request's parameters (its key guarantees it): the
         * answer shows the object with what its expand[] asked for. */
        tg_param *expand = tg_param_get(req->params, "expand");
        req->params = tg_params_new(&req->arena);
        if (expand && req->params)
            tg_param_move(req->params, expand);
        if (req->path && req->params) {
            req->nsegs = split_path(req->path, &req->arena, req->segs, TG_MAX_SEGS);
            if (req->nsegs < 0 || find_route(req, &get))
                get = NULL;
        }
        tg_err_clear(&req->err);
    }
    tg_log(TG_LOG_INFO, "idempotency key %s: the first run's response was lost; answering %s",
           r->idem_key, get ? req->path : "with an error");
    if (!get) {
        tg_err_set(&req->err, TG_EIDEMLOST, NULL,
                   "A request with this idempotency key ran and its changes were saved, but "
                   "its response was lost when the server stopped; it is not run again. Use "
                   "a new key to make another request.");
        answer(r, tg_reply_error(req));
        return;
    }
    answer(r, get->handler(req));
}

static void park(void *ctx)
{
    request *r = ctx;
    r->c->parked++;
    __atomic_add_fetch(&r->c->lp->srv->parked, 1, __ATOMIC_SEQ_CST);
}

/* Whether all of lp's cross-thread lists (woken requests, handed-over and moved connections)
 * are empty: whoever makes one non-empty signals the loop, once. Call with lp->mu held. */
static bool inbox_empty_locked(const loop *lp)
{
    return !lp->woken && !lp->moved;
}

/* Signals lp's eventfd; called by whoever made one of its lists non-empty. */
static void loop_signal(loop *lp)
{
    uint64_t one = 1;
    if (write(lp->wakefd, &one, sizeof one) < 0) {
        /* the counter cannot overflow at one write per empty list; nothing to do */
    }
}

/* From the writer thread: the events are committed (or failed). The request goes on its
 * loop's wake list; the loop is signalled when the list was empty, so one batch costs one
 * eventfd write per loop however many requests it answers. */
static void wake(void *ctx, int rc)
{
    request *r = ctx;
    loop *lp = r->c->lp;
    r->req->record_rc = rc;
    pthread_mutex_lock(&lp->mu);
    bool was_empty = inbox_empty_locked(lp);
    r->next_woken = lp->woken;
    lp->woken = r;
    pthread_mutex_unlock(&lp->mu);
    if (was_empty)
        loop_signal(lp);
}

/* Gives a request that has been read whole its tg_req, request id and route (or the error of
 * having none). */
/* A Stripe-Version a client may send: YYYY-MM-DD, a release name after a dot
 * ("2026-07-29.dahlia"), and betas after a semicolon ("…; embedded_connect_beta=v2", not
 * looked at). Any such version is answered with the shapes Tollgate has. */
static bool stripe_version_valid(const char *v)
{
    size_t n = strcspn(v, ";");
    if (n < 10 || n > 64)
        return false;
    for (size_t i = 0; i < 10; i++)
        if (i == 4 || i == 7 ? v[i] != '-' : v[i] < '0' || v[i] > '9')
            return false;
    if (n == 10)
        return true;
    if (v[10] != '.' || n == 11)
        return false;
    for (size_t i = 11; i < n; i++)
        if (!(v[i] >= 'a' && v[i] <= 'z') && v[i] != '_')
            return false;
    return true;
}

static void request_prepare(request *r)
{
    tg_server *srv = r->c->lp->srv;
    tg_req *req = r->req = &r->rq;
    req->svc = srv->svc;
    req->cfg = &srv->cfg;
    req->method = r->h.method;
    req->path = r->h.path;
    req->park = park;
    req->wake = wake;
    req->transport_ctx = r;
    jw_init(&req->jw, &req->out);
    req->jw.ctx = req;
    req->expand.n = req->expand.at_len = 0;
    req->expand.depth = req->expand.lost = 0;
    req->expand.at[0] = '\0';
    tg_id_unique(r->request_id, sizeof r->request_id, "req_", 14);
    const char *version = tg_http1_header_value(&r->h, "Stripe-Version");
    if (version && *version && !stripe_version_valid(version)) /* empty: as if absent */
        tg_err_set(&req->err, TG_EINVAL, NULL, "Invalid Stripe API version: %.64s", version);
    req->nsegs = split_path(req->path, &req->arena, req->segs, TG_MAX_SEGS);
    if (req->nsegs < 0)
        tg_err_set(&req->err, TG_EROUTE, NULL, "Unrecognized request URL (%s: %s).", req->method,
                   req->path);
    else if (find_route(req, &r->route) == TG_OK && r->too_large)
        tg_err_set(&req->err, TG_ETOOLARGE, NULL,
                   "Request body exceeds the maximum of %zu bytes.", srv->cfg.max_body);
}

/* Runs a prepared request: authentication, parameters, idempotency, the handler. The answer
 * is emitted, or the request is parked until its events are committed. */
static void request_run(request *r)
{
    tg_server *srv = r->c->lp->srv;
    tg_req *req = r->req;
    const char *method = req->method, *url = req->path;
    if (req->err.code)
        goto fail;
    if (!(r->route->flags & TG_ROUTE_PUBLIC) &&
        authenticate(r->c, req, tg_http1_header_value(&r->h, "Authorization"), r->route->flags))
        goto fail;
    if (decode_params(r))
        goto fail;

    r->idem_key = tg_http1_header_value(&r->h, "Idempotency-Key");
    if (r->idem_key && strcmp(method, "POST") != 0)
        r->idem_key = NULL; /* no effect on GET and DELETE, as in Stripe */
    if (r->idem_key) {
        if (strlen(r->idem_key) > 255 || !*r->idem_key) {
            tg_err_set(&req->err, TG_EINVAL, NULL,
                       "Invalid Idempotency-Key: must be 1 to 255 characters.");
            r->idem_key = NULL;
            goto fail;
        }
        /* what the request asks: method, path, query and body */
        tg_buf h;
        tg_buf_init(&h, strlen(method) + strlen(url) + strlen(r->h.query) + r->body.len + 4);
        tg_buf_printf(&h, "%s %s?%s\n", method, url, r->h.query);
        tg_buf_append(&h, r->body.data ? r->body.data : "", r->body.len);
        tg_sha256_hex(h.data ? h.data : "", h.len, r->request_hash);
        tg_buf_free(&h);
        tg_idem stored;
        bool replayed = false;
        if (tg_idem_claim(srv->svc, &req->scope, r->idem_key, r->request_hash, &req->arena,
                          &replayed, &stored, &req->err))
            goto fail;
        if (replayed && stored.status != TG_IDEM_COMMITTED) {
            emit(r, stored.status, stored.body, stored.body_len, false, r->idem_key, true);
            return;
        }
        r->claimed = true;
        req->idem_key = r->idem_key;
        if (replayed) {
            replay_committed(r, stored.body);
            return;
        }
    }

    /* The request's writes name it in the events they record, and under a key record that
     * they are done (see tg_idem_bind). Meter events need neither: they record no events,
     * and their identifiers derive from the key; repeatable routes keep no record: after a
     * lost response a second meter event session serves better than a refusal. */
    tg_idem_mark *mark = NULL;
    if (!(r->route->flags & TG_ROUTE_RECORDS)) {
        mark = tg_arena_alloc(&req->arena, sizeof *mark);
        if (!mark) {
            tg_err_set(&req->err, TG_ENOMEM, NULL, NULL);
            goto fail;
        }
        memset(mark, 0, sizeof *mark);
        mark->request_id = r->request_id;
        if (r->claimed && !(r->route->flags & TG_ROUTE_REPEATABLE)) {
            mark->keyed = true;
            mark->scope = req->scope;
            tg_strlcpy(mark->key, r->idem_key, sizeof mark->key);
            tg_strlcpy(mark->request_hash, r->request_hash, sizeof mark->request_hash);
            mark->created_prefix = r->route->creates;
        }
    }
    tg_idem_bind(mark);
    int status = r->route->handler(req);
    tg_idem_bind(NULL);
    if (status == TG_HTTP_DEFERRED)
        return; /* parked: the loop runs the continuation when woken (see run_woken) */
    answer(r, status);
    return;

fail:
    answer(r, tg_reply_error(req));
}

/* Runs the held request if it may run now (see struct conn). True when it ran. */
static bool run_held(conn *c)
{
    request *r = c->held;
    bool records = r->route && (r->route->flags & TG_ROUTE_RECORDS) && !r->req->err.code;
    if (c->queued && !(records && c->queued < MAX_PIPELINE))
        return false;
    if (__atomic_load_n(&c->lp->draining, __ATOMIC_SEQ_CST))
        return false; /* stopping: nothing new starts (it is dropped unanswered) */
    if (c->requests == 0 && !c->lp->check_lane && r->route &&
        (r->route->flags & TG_ROUTE_CHECK) && !r->req->err.code) {
        c->move_to_lane = true; /* conn_process hands it over; the lane runs the request */
        return false;
    }
    c->requests++;
    c->held = NULL;
    queue_push(c, r);
    request_run(r);
    return true;
}

/* r has been read whole. */
static void request_read(conn *c, request *r)
{
    c->reading = NULL;
    if (r->close_after)
        c->done_reading = true;
    request_prepare(r);
    c->held = r;
    run_held(c);
}

/* ---------------------------------------------------------------- connections */

static void conn_close(conn *c)
{
    if (c->closed)
        return;
    loop *lp = c->lp;
    c->closed = true;
    if (c->ready) { /* a closed connection is freed at the end of this round: not on the list */
        conn **p = &lp->ready;
        while (*p && *p != c)
            p = &(*p)->next_ready;
        if (*p)
            *p = c->next_ready;
        c->ready = false;
    }
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
    __atomic_sub_fetch(&lp->nconns, 1, __ATOMIC_SEQ_CST);
}

/* Frees a closed connection; never one with parked requests (the writer holds those). */
static void conn_free(conn *c)
{
    request_free(c->reading);
    request_free(c->held);
    for (request *r = c->queue, *next; r; r = next) {
        next = r->next;
        request_free(r);
    }
    free(c->in);
    tg_buf_free(&c->out);
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
    size_t room = c->in_alloc - c->in_len;
    ssize_t n = recv(c->fd, c->in + c->in_len, room, 0);
    if (n > 0) {
        c->in_len += (size_t)n;
        c->last_active = c->lp->now;
        if ((size_t)n < room && !c->hup)
            c->readable = false; /* drained: edge-triggered epoll reports what comes next */
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
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* EPOLLOUT comes when the socket drains; keep only what is unsent */
            memmove(c->out.data, c->out.data + c->out_off, c->out.len - c->out_off);
            c->out.len -= c->out_off;
            c->out_off = 0;
            return true;
        } else if (n < 0 && errno != EINTR) {
            return false;
        }
    }
    c->out_off = 0;
    if (c->out.alloc > (1u << 20)) /* a large answer went out: do not keep its memory */
        tg_buf_free(&c->out);
    else
        tg_buf_reset(&c->out);
    return true;
}

/* A head is complete in data[0..n): parse it into r and get ready for its body. */
static void start_request(conn *c, request *r, const char *data, size_t n)
{
    const tg_server *srv = c->lp->srv;
    if (!(r->head_copy = tg_arena_alloc(&r->rq.arena, n + 1))) {
        refuse(c, r, 500, TG_ENOMEM, "Out of memory.");
        return;
    }
    memcpy(r->head_copy, data, n);
    r->head_copy[n] = '\0';
    const char *why;
    int status = tg_http1_parse_head(r->head_copy, n, &r->h, &why);
    if (status) {
        refuse(c, r, status, status == 414 || status == 431 ? TG_ETOOLARGE : TG_EMALFORMED, why);
        return;
    }
    r->close_after = !r->h.keep_alive;
    r->body_left = r->h.content_length;
    r->too_large = r->h.content_length > srv->cfg.max_body;
    c->reading = r;
    if (r->too_large) {
        /* Refused (413) at once, not after a body of any declared size has come: the
         * connection reads no further, and what is sent anyway is dropped by linger(). */
        r->close_after = true;
        request_read(c, r);
        return;
    }
    if (r->h.expect_continue && (r->h.chunked || r->body_left)) {
        if (c->in_off == c->in_len && !c->queue) {
            tg_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        } else if (c->in_off == c->in_len) {
            r->continue_due = true; /* once the answers before it are out (queue_flush_answers) */
        }
    }
}

/* Moves body bytes from the input into the request being read (dropping them when it is too
 * large); the request runs once its body is complete. True when anything changed. */
static bool read_body(conn *c, const char *data, size_t avail)
{
    request *r = c->reading;
    if (avail)
        r->continue_due = false; /* the body comes without waiting for "100 Continue" */
    tg_buf *sink = r->too_large ? NULL : &r->body;
    size_t used;
    bool complete;
    if (r->h.chunked) {
        long n = tg_http1_chunked_decode(&r->chunk, data, avail, sink, &complete);
        if (n < 0) {
            refuse(c, r, 400, TG_EMALFORMED, "Malformed chunked request body.");
            return true;
        }
        used = (size_t)n;
    } else {
        used = avail < r->body_left ? avail : (size_t)r->body_left;
        if (sink)
            tg_buf_append(sink, data, used);
        r->body_left -= used;
        complete = r->body_left == 0;
    }
    c->in_off += used;
    if (r->body.failed) { /* a chunked body past the limit: refused as soon as it is */
        r->too_large = true;
        tg_buf_free(&r->body);
        r->close_after = true;
        request_read(c, r);
        return true;
    }
    if (!complete)
        return used > 0;
    request_read(c, r);
    return true;
}

/* Makes the progress the buffered input allows: a held request run, a head, body bytes.
 * Returns true when something changed. */
static bool advance(conn *c)
{
    if (c->held)
        return run_held(c);
    if (c->done_reading)
        return false;
    const char *data = c->in + c->in_off;
    size_t avail = c->in_len - c->in_off;
    if (c->reading)
        return read_body(c, data, avail);
    /* between requests; empty lines there are ignored (RFC 9112 section 2.2) */
    if (c->scanned == 0)
        while (avail && (*data == '\r' || *data == '\n'))
            data++, avail--, c->in_off++;
    size_t n = tg_http1_head_end(data, avail, &c->scanned);
    if (!n && avail < TG_HTTP1_MAX_HEAD)
        return false;
    request *r = request_new(c);
    if (!r) {
        c->failed = true;
        return false;
    }
    if (!n) {
        refuse(c, r, 431, TG_ETOOLARGE, "The request head is larger than 64 KiB.");
        return true;
    }
    c->in_off += n;
    c->scanned = 0;
    start_request(c, r, data, n);
    return true;
}

/* Closes a connection whose last answer is sent. Closing with unread input would make the
 * kernel reset the connection, and a reset can destroy the answer before the peer reads it
 * (a client still sending a refused body, say). So the connection says it is done sending
 * (FIN) and reads and drops what still comes until the peer closes, for at most LINGER_S. */
static void linger(conn *c)
{
    if (!c->lingering) {
        c->lingering = true;
        c->last_active = c->lp->now;
        if (shutdown(c->fd, SHUT_WR)) {
            conn_close(c);
            return;
        }
    }
    char scratch[16384];
    for (;;) {
        ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return; /* more may come: epoll says when, tick() ends the wait */
        if (n < 0 && errno == EINTR)
            continue;
        conn_close(c); /* the peer closed (or failed) */
        return;
    }
}

/* Hands c to another loop: it joins the loop's `moved` list, and the loop attaches it when it
 * runs its inbox (run_woken). */
static void conn_hand_over(loop *to, conn *c)
{
    pthread_mutex_lock(&to->mu);
    bool was_empty = inbox_empty_locked(to);
    c->next_moved = to->moved;
    to->moved = c;
    pthread_mutex_unlock(&to->mu);
    if (was_empty)
        loop_signal(to);
}

/* Hands a connection whose first request is an entitlement check to the check lane: a loop
 * of its own that serves only such connections. Checks want latency where ingest wants
 * throughput, and a loop busy parsing event batches (or answering a writer batch) made them
 * wait milliseconds; the lane's thread is mostly asleep, so the kernel's scheduler runs it
 * soon after a check arrives. Nothing of the connection is in flight (it has answered
 * nothing yet), so it moves whole: out of this loop's epoll set and list, onto the lane's. */
static void conn_move_to_lane(conn *c)
{
    loop *from = c->lp, *to = &from->srv->loops[from->srv->nloops - 1];
    c->move_to_lane = false;
    epoll_ctl(from->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->prev)
        c->prev->next = c->next;
    else
        from->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    __atomic_sub_fetch(&from->nconns, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&to->nconns, 1, __ATOMIC_SEQ_CST);
    c->lp = to; /* from now on the old loop skips its events for c (see loop_main) */
    conn_hand_over(to, c);
}

/* Runs the connection as far as it goes: read, frame, handle, send; closes it when it is
 * done (the peer finished, an error, or the answer to a request that said "close" is out).
 * A turn starts at most TURN_REQUESTS requests: a connection with more pipelined goes on the
 * loop's ready list and gets its next turn after the other connections' events, once a round
 * (measured: beside 300,000 pipelined GETs on one connection, 200 single GETs on four others
 * waited p90 7.7-15.0 ms without the budget, 1.0-1.8 ms with it; the worst case, 6-28 ms,
 * is the machine's scheduling either way). */
static void conn_process(conn *c)
{
    if (c->lingering) {
        linger(c);
        return;
    }
    unsigned long turn_end = c->requests + TURN_REQUESTS;
    bool turn_over = false;
    for (;;) {
        while (!c->failed && !c->closing && c->out.len - c->out_off <= OUT_HIGH_WATER) {
            if (advance(c)) {
                if (c->requests < turn_end)
                    continue;
                turn_over = true;
                break;
            }
            if (c->held || c->done_reading || !c->readable || c->eof)
                break;
            if (!conn_read(c))
                c->failed = true;
        }
        if (c->move_to_lane && !c->failed) {
            conn_move_to_lane(c);
            return; /* another thread's now */
        }
        size_t unsent = c->out.len - c->out_off;
        if (!c->failed && !conn_flush(c))
            c->failed = true;
        /* round again only when the high-water mark stopped us and sending lowered it */
        if (turn_over || c->failed || unsent <= OUT_HIGH_WATER ||
            c->out.len - c->out_off > OUT_HIGH_WATER)
            break;
    }
    if (turn_over && !c->failed) {
        if (!c->ready) {
            c->ready = true;
            c->next_ready = c->lp->ready;
            c->lp->ready = c;
        }
        return; /* requests are left: not done, whatever else holds */
    }
    if (c->parked)
        return; /* the writer holds requests of it: they are answered first */
    bool sent = c->out_off == c->out.len;
    if (c->failed || (sent && c->eof && !c->held))
        conn_close(c);
    else if (sent && (c->closing || (c->done_reading && c->lp->drained && !c->queue)))
        linger(c);
}

/* The server is stopping: read no new request, drop a half-read one, and close once the
 * answers of the requests already running are out. */
static void conn_drain(conn *c)
{
    c->done_reading = true;
    request_free(c->reading);
    c->reading = NULL;
    conn_process(c);
}

/* ---------------------------------------------------------------- event loops */

static int listen_mark, wake_mark; /* epoll data for the listening socket and the eventfd */

/* Puts c on lp's list and in its epoll set (edge-triggered, registered once; an fd already
 * readable reports at once). */
static void conn_attach(loop *lp, conn *c)
{
    c->next = lp->conns;
    if (lp->conns)
        lp->conns->prev = c;
    lp->conns = c;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, c->fd, &ev))
        conn_close(c);
}

/* A new connection for fd, to be served by `to` (whose connection count already includes it),
 * or NULL, the descriptor closed and counted out, when the server is stopping or out of
 * memory. Called by the accepting loop, which may be another: `now` is its clock. */
static conn *conn_new(loop *to, int fd, int64_t now)
{
    tg_server *srv = to->srv;
    conn *c = NULL;
    if (!__atomic_load_n(&to->draining, __ATOMIC_SEQ_CST))
        c = calloc(1, sizeof *c);
    if (!c) {
        __atomic_sub_fetch(&srv->nconns, 1, __ATOMIC_SEQ_CST);
        __atomic_sub_fetch(&to->nconns, 1, __ATOMIC_SEQ_CST);
        close(fd);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->lp = to;
    c->fd = fd;
    c->last_active = now;
    tg_buf_init(&c->out, SIZE_MAX / 2); /* bounded by OUT_HIGH_WATER and MAX_PIPELINE */
    return c;
}

/* Accepts new connections and gives each to the loop with the fewest. (The kernel wakes one
 * loop for the listening socket, mostly the same one: left there, every connection would
 * share one thread. Measured: 128 connections of 100-event batches on one loop, 214,429
 * events/s.) */
static void accept_connections(loop *lp)
{
    tg_server *srv = lp->srv;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
            /* Out of files: the connection would stay pending and wake the loop again at
             * once, forever. Use the spare descriptor to take it and close it. */
            if (lp->files_logged != lp->now) {
                lp->files_logged = lp->now;
                tg_log(TG_LOG_WARN, "http: out of file descriptors: refusing connections");
            }
            if (lp->spare_fd < 0)
                return;
            close(lp->spare_fd);
            fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                close(fd);
            lp->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
            continue;
        }
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                tg_log(TG_LOG_WARN, "http: accept: %s", strerror(errno));
            return;
        }
        if (__atomic_add_fetch(&srv->nconns, 1, __ATOMIC_SEQ_CST) > srv->max_conns) {
            __atomic_sub_fetch(&srv->nconns, 1, __ATOMIC_SEQ_CST);
            close(fd);
            continue;
        }
        loop *to = lp;
        for (unsigned k = 0; k < srv->naccept; k++)
            if (__atomic_load_n(&srv->loops[k].nconns, __ATOMIC_SEQ_CST) <
                __atomic_load_n(&to->nconns, __ATOMIC_SEQ_CST))
                to = &srv->loops[k];
        __atomic_add_fetch(&to->nconns, 1, __ATOMIC_SEQ_CST);
        conn *c = conn_new(to, fd, lp->now);
        if (c && to == lp)
            conn_attach(lp, c);
        else if (c)
            conn_hand_over(to, c);
    }
}

/* Takes the connections handed over by other loops, and answers the requests whose events the
 * writer has committed, then runs each of their connections once (one send for all its
 * answers). */
static void run_woken(loop *lp)
{
    uint64_t count;
    if (read(lp->wakefd, &count, sizeof count) < 0) {
        /* EAGAIN: another wake already drained it; the list is what matters */
    }
    pthread_mutex_lock(&lp->mu);
    request *list = lp->woken;
    lp->woken = NULL;
    conn *moved = lp->moved;
    lp->moved = NULL;
    pthread_mutex_unlock(&lp->mu);
    while (moved) { /* new connections, and connections moved to the check lane */
        conn *c = moved;
        moved = c->next_moved;
        conn_attach(lp, c);
        if (c->closed)
            continue;
        if (__atomic_load_n(&lp->drained, __ATOMIC_SEQ_CST))
            conn_drain(c); /* arrived after the loop's drain sweep */
        else
            conn_process(c);
    }
    request *fifo = NULL; /* the list is newest first: answer in arrival order */
    while (list) {
        request *r = list;
        list = r->next_woken;
        r->next_woken = fifo;
        fifo = r;
    }
    conn *touched = NULL;
    while (fifo) {
        request *r = fifo;
        fifo = r->next_woken;
        conn *c = r->c;
        c->parked--;
        __atomic_sub_fetch(&lp->srv->parked, 1, __ATOMIC_SEQ_CST);
        c->last_active = lp->now;
        if (!c->touched) {
            c->touched = true;
            c->next_touched = touched;
            touched = c;
        }
        answer(r, r->req->resume(r->req)); /* r may be freed here */
    }
    while (touched) {
        conn *c = touched;
        touched = c->next_touched;
        c->touched = false;
        conn_process(c);
    }
}

/* Once a second: the Date header, and the timeouts that keep slow or idle clients from
 * holding connections (the server takes at most max_conns):
 * - idle: no byte for IDLE_TIMEOUT_S, or BUSY_IDLE_TIMEOUT_S once 3/4 of max_conns are open;
 * - request: a request must arrive whole within cfg.request_timeout of its first byte, counted
 *   while the server owes the connection nothing (a few bytes now and then keep an idle
 *   connection alive, but not a request that never completes). */
static void tick(loop *lp, time_t now)
{
    lp->now = now;
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(lp->date, sizeof lp->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    tg_server *srv = lp->srv;
    time_t idle = __atomic_load_n(&srv->nconns, __ATOMIC_SEQ_CST) > srv->max_conns / 4 * 3
                      ? BUSY_IDLE_TIMEOUT_S
                      : IDLE_TIMEOUT_S;
    for (conn *c = lp->conns, *next; c; c = next) {
        next = c->next;
        if (c->parked)
            continue;
        if (now - c->last_active > (c->lingering ? LINGER_S : idle)) {
            conn_close(c);
            continue;
        }
        bool partial = !c->lingering && !c->queue && !c->held &&
                       (c->reading || c->in_len > c->in_off);
        if (!partial) {
            c->partial_since = 0;
        } else if (!c->partial_since || c->requests != c->partial_requests) {
            c->partial_since = now;
            c->partial_requests = c->requests;
        } else if (now - c->partial_since > (time_t)srv->cfg.request_timeout) {
            conn_close(c);
        }
    }
}

static void *loop_main(void *arg)
{
    loop *lp = arg;
    pthread_setname_np(pthread_self(), lp->check_lane ? "tg-checks" : "tg-http");
    if (lp->check_lane && lp->srv->cfg.check_lane_realtime) {
        /* The lowest real-time priority: the lane's thread runs as soon as a check arrives
         * instead of waiting for the scheduler to preempt a busy thread (measured beside
         * ingest on 2 saturated cores: BENCHMARKS.md). A flood of checks can then keep one
         * CPU busy, up to the kernel's real-time throttling; hence an option. */
        struct sched_param sp = {.sched_priority = 1};
        int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
        if (rc)
            tg_log(TG_LOG_WARN, "http: --check-lane-realtime: cannot use SCHED_FIFO (%s); "
                   "the check lane runs at normal priority", strerror(rc));
    } else if (lp->check_lane && !lp->srv->cfg.no_priority_boost) {
        /* Ahead of the request loops, level with the boosted writer (core/writer.c,
         * "Priority"): a check that arrives while the writer holds a core with a large batch
         * waits for neither. Beside ingest at full speed, with only the writer boosted, check
         * p99 went from 31-33 ms to 62-214 ms; with the lane too, 8.7-8.8 ms (BENCHMARKS.md). */
        if (setpriority(PRIO_PROCESS, (id_t)gettid(),
                        getpriority(PRIO_PROCESS, (id_t)gettid()) - CHECK_LANE_NICE_BOOST))
            tg_log(TG_LOG_INFO, "http: the check lane cannot raise its priority (%s): allow "
                   "it with CAP_SYS_NICE or RLIMIT_NICE", strerror(errno));
    }
    struct epoll_event evs[256];
    while (!__atomic_load_n(&lp->stop, __ATOMIC_SEQ_CST)) {
        int n = epoll_wait(lp->epfd, evs, 256, lp->ready ? 0 : 1000);
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
                if (c->lp != lp || c->closed) /* moved to the check lane, or closed */
                    continue;
                if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                    c->readable = true;
                if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                    c->hup = true; /* read on to the end: recv returns 0 or the error */
                if (!c->ready) /* else its turn comes with the ready list, once a round */
                    conn_process(c);
            }
        }
        conn *ready = lp->ready; /* their next turn; a new one puts them on a new list */
        lp->ready = NULL;
        while (ready) {
            conn *c = ready;
            ready = c->next_ready;
            c->ready = false;
            if (c->lp == lp && !c->closed)
                conn_process(c);
        }
        if (__atomic_load_n(&lp->draining, __ATOMIC_SEQ_CST) && !lp->drained) {
            __atomic_store_n(&lp->drained, true, __ATOMIC_SEQ_CST);
            for (conn *c = lp->conns, *next; c; c = next) {
                next = c->next;
                conn_drain(c);
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
            conn_close(c); /* none is parked: tg_server_stop waited for them */
        }
        while (lp->closed) {
            conn *c = lp->closed;
            lp->closed = c->next_closed;
            conn_free(c);
        }
        while (lp->moved) { /* handed over just before it stopped */
            conn *c = lp->moved;
            lp->moved = c->next_moved;
            close(c->fd);
            conn_free(c);
        }
        if (lp->spare_fd >= 0)
            close(lp->spare_fd);
        if (lp->epfd >= 0)
            close(lp->epfd);
        if (lp->wakefd >= 0)
            close(lp->wakefd);
        pthread_mutex_destroy(&lp->mu);
    }
    for (unsigned i = 0; i < srv->nloops; i++) /* after every connection: theirs land here */
        while (srv->loops[i].spare) {
            request *r = srv->loops[i].spare;
            srv->loops[i].spare = r->next;
            request_destroy(r);
        }
    free(srv->loops);
}

static int loop_init(loop *lp, tg_server *srv)
{
    lp->srv = srv;
    pthread_mutex_init(&lp->mu, NULL);
    lp->epfd = epoll_create1(EPOLL_CLOEXEC);
    lp->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    lp->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (lp->epfd < 0 || lp->wakefd < 0 || lp->spare_fd < 0)
        return -1;
    struct epoll_event wake_ev = {.events = EPOLLIN, .data.ptr = &wake_mark};
    struct epoll_event listen_ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &listen_mark};
    if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->wakefd, &wake_ev) ||
        (!lp->check_lane && epoll_ctl(lp->epfd, EPOLL_CTL_ADD, srv->listen_fd, &listen_ev)))
        return -1;
    tick(lp, time(NULL));
    return 0;
}

bool tg_server_listen_valid(const char *listen_at)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    return parse_listen(listen_at, &ss, &sslen) >= 0;
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
    if (!srv->cfg.request_timeout)
        srv->cfg.request_timeout = 30;
    srv->naccept = cfg->threads ? cfg->threads : 2;
    srv->nloops = srv->naccept + 1; /* and the check lane */
    struct rlimit files;
    srv->max_conns = MAX_CONNECTIONS;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur != RLIM_INFINITY &&
        files.rlim_cur < (rlim_t)MAX_CONNECTIONS + 128) /* the store and logs need files too */
        srv->max_conns = files.rlim_cur > 160 ? (int)files.rlim_cur - 128 : 32;
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
        srv->loops[i].epfd = srv->loops[i].wakefd = srv->loops[i].spare_fd = -1;
        srv->loops[i].check_lane = i == srv->naccept;
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
    /* Stop accepting, and tell the loops to drain: no new request starts, connections close
     * once the answers of the running ones are out. Then wait for every request the writer
     * holds to be answered, however long it takes (the writer completes or fails each one):
     * freeing the loops before would leave it waking freed memory. */
    for (unsigned i = 0; i < srv->nloops; i++)
        if (srv->loops[i].epfd >= 0)
            epoll_ctl(srv->loops[i].epfd, EPOLL_CTL_DEL, srv->listen_fd, NULL);
    close(srv->listen_fd);
    for (unsigned i = 0; i < srv->nloops; i++)
        if (srv->loops[i].started) {
            __atomic_store_n(&srv->loops[i].draining, true, __ATOMIC_SEQ_CST);
            loop_signal(&srv->loops[i]);
        }
    for (long waited_ms = 0;; waited_ms += 10) {
        bool drained = true;
        for (unsigned i = 0; i < srv->nloops; i++)
            if (srv->loops[i].started && !__atomic_load_n(&srv->loops[i].drained, __ATOMIC_SEQ_CST))
                drained = false;
        int parked = __atomic_load_n(&srv->parked, __ATOMIC_SEQ_CST);
        if (drained && parked == 0)
            break;
        if (waited_ms && waited_ms % 5000 == 0)
            tg_log(TG_LOG_WARN, "http: stopping: %d request(s) still wait for the writer", parked);
        usleep(10000);
    }
    for (unsigned i = 0; i < srv->nloops; i++) {
        loop *lp = &srv->loops[i];
        if (!lp->started)
            continue;
        __atomic_store_n(&lp->stop, true, __ATOMIC_SEQ_CST);
        loop_signal(lp);
        pthread_join(lp->thread, NULL);
    }
    if (srv->loops)
        loops_free(srv);
    free(srv);
}
