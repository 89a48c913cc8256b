/* loadgen.c -- a load generator for Tollgate's meter event endpoints.
 *
 *   loadgen setup --port P --key K --customers N --meters M --out FILE
 *       creates M sum meters and N customers through the API and writes them to FILE, one a
 *       line: "meter EVENT_NAME", "meterid mtr_… EVENT_NAME", "customer cus_…".
 *   loadgen run --port P --key K --setup FILE --scenario v1|v2 [--batch N] [--conns C]
 *               [--threads T] [--pipeline DEPTH] [--rate R] [--seconds S | --events E]
 *               [--spread-days D] [--run-id ID]
 *       sends meter events with unique identifiers over C keep-alive connections (split over T
 *       epoll threads) and prints one JSON line: acknowledged events per second, p50/p99/p99.9
 *       acknowledgement latency, and counts. Each connection keeps up to DEPTH requests in
 *       flight (default 1), written back to back (HTTP/1.1 pipelining) and answered in order;
 *       a request's latency runs from when it was written (or queued behind a full socket) to
 *       the end of its response. With --rate R the events are paced at R a second in all:
 *       each connection sends on a fixed schedule (staggered as in `checks`) and latency runs
 *       from the scheduled send, so a stall is not hidden by the pacing. Without it (default
 *       0) a connection sends as soon as it has room in its pipeline.
 *   loadgen query --port P --key K --setup FILE [--reps N] [--customer-index I] [--meter-index M]
 *       times N repetitions (after 3 untimed warm-ups, one keep-alive connection) of
 *       GET /v1/billing/meters/{id}/event_summaries for one customer (setup line I) and meter
 *       (meter M) over the last 30 days -- end_time the next hour boundary, start_time 30 days
 *       earlier, so both are hour- and minute-aligned -- once without grouping and once with
 *       value_grouping_window=hour. Each query pages with limit=100 and starting_after until
 *       has_more is false; the whole walk counts as one query. Prints p50/p99 ms as one JSON line.
 *   loadgen checks --port P --key K --setup FILE [--rate R] [--seconds S] [--conns C]
 *                  [--subscribers N] [--check-port Q]
 *       gives N customers of the setup a plan whose feature has a hard usage limit on the
 *       setup's first meter, then sends GET /v1/entitlements/check at R requests a second in
 *       all (default 10,000; paced per connection on a fixed schedule, latency measured from
 *       the scheduled send, so a stall is not hidden by the pacing) over C keep-alive
 *       connections for S seconds, and prints the achieved rate and p50/p99/p99.9 latency as
 *       one JSON line. Also printed: the same less the client's own oversleep ("net_": how
 *       much later than due its timer woke it to send; a send delayed by a slow previous
 *       answer stays counted), and the oversleep's own percentiles. With --check-port the
 *       checks go to another server on port Q (bench/floorserver.c, the baseline); the
 *       plan is still set up on P.
 *
 * Only 200 responses count as acknowledged. A connection the server closes is counted
 * ("conn_closed"), every request in flight on it counts as failed, and it is reopened. Events
 * cycle over the customers and meters with decimal values ("12.345"); with --spread-days D
 * their timestamps are spread evenly over the last D days (at most 34; a hash of run id, thread
 * and sequence number picks the second), otherwise they carry the current time. The HTTP
 * client is minimal and strict: it parses the status line and Content-Length and treats
 * anything else as an error. Written for loopback benchmarking only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define MAX_IDS 100000

typedef struct setup {
    char **customers, **meters; /* meters: event names */
    char **meter_ids;           /* mtr_… ids, parallel to meters (from "meterid" lines) */
    int ncustomers, nmeters;
} setup;

typedef struct options {
    int port, conns, threads, batch, pipeline, spread_days, reps, customer_index, meter_index;
    int check_port; /* checks: where they go (default: port) */
    const char *key, *setup_file, *scenario, *run_id;
    double seconds, rate;
    long long events;
} options;

static options opt = {.port = 12111, .conns = 64, .threads = 1, .batch = 100, .pipeline = 1,
                      .reps = 200, .scenario = "v2", .run_id = "r", .seconds = 10};
static setup st;
static char session_token[256];
static volatile int stop_flag;
static long long events_budget; /* remaining events to send when --events is given */
static pthread_mutex_t budget_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t run_h; /* run_hash_of(opt.run_id), once options are read */

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a))
        die("connect: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Sends one request on a fresh connection and returns the body (malloc'd); *status set. */
static char *http_call_once(const char *method, const char *path, const char *ctype,
                            const char *body, const char *bearer, int *status);

/* One blocking request; retried (at most 5 times, reported on stderr) only when the server
 * closed the connection without sending a byte. */
static char *http_call(const char *method, const char *path, const char *ctype, const char *body,
                       const char *bearer, int *status)
{
    for (int attempt = 1;; attempt++) {
        char *r = http_call_once(method, path, ctype, body, bearer, status);
        if (*status != 0 || attempt == 5)
            return r;
        fprintf(stderr, "loadgen: %s %s: connection closed without a response, retrying\n",
                method, path);
        free(r);
        usleep(100000);
    }
}

static char *http_call_once(const char *method, const char *path, const char *ctype,
                            const char *body, const char *bearer, int *status)
{
    int fd = connect_to(opt.port);
    char *req;
    int n = asprintf(&req,
                     "%s %s HTTP/1.1\r\nHost: loadgen\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     method, path, bearer, ctype, strlen(body), body);
    if (n < 0 || write(fd, req, (size_t)n) != n)
        die("write failed");
    free(req);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    close(fd);
    buf[len] = '\0';
    *status = len > 12 ? atoi(buf + 9) : 0;
    char *b = strstr(buf, "\r\n\r\n");
    char *out = strdup(b ? b + 4 : "");
    free(buf);
    return out;
}

/* Extracts "id":"…" from a JSON object (the first occurrence). */
static char *json_id(const char *body, const char *field)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", field);
    const char *p = strstr(body, pat);
    if (!p)
        die("no %s in %s", field, body);
    p += strlen(pat);
    const char *e = strchr(p, '"');
    return strndup(p, (size_t)(e - p));
}

static void cmd_setup(int ncustomers, int nmeters, const char *out)
{
    FILE *f = fopen(out, "w");
    if (!f)
        die("cannot write %s", out);
    for (int i = 0; i < nmeters; i++) {
        char body[256];
        int status;
        snprintf(body, sizeof body,
                 "display_name=Bench%%20%d&event_name=bench_%s_%d&default_aggregation[formula]=sum",
                 i, opt.run_id, i);
        char *r = http_call("POST", "/v1/billing/meters", "application/x-www-form-urlencoded",
                            body, opt.key, &status);
        if (status != 200)
            die("meter create: %d %s", status, r);
        char *name = json_id(r, "event_name"), *id = json_id(r, "id");
        fprintf(f, "meter %s\nmeterid %s %s\n", name, id, name);
        free(name);
        free(id);
        free(r);
    }
    for (int i = 0; i < ncustomers; i++) {
        char body[128];
        int status;
        snprintf(body, sizeof body, "name=bench-%d", i);
        char *r = http_call("POST", "/v1/customers", "application/x-www-form-urlencoded", body,
                            opt.key, &status);
        if (status != 200)
            die("customer create: %d %s", status, r);
        char *id = json_id(r, "id");
        fprintf(f, "customer %s\n", id);
        free(id);
        free(r);
    }
    fclose(f);
}

static void load_setup(const char *file)
{
    FILE *f = fopen(file, "r");
    if (!f)
        die("cannot read %s", file);
    st.customers = calloc(MAX_IDS, sizeof(char *));
    st.meters = calloc(64, sizeof(char *));
    st.meter_ids = calloc(64, sizeof(char *));
    char line[512], kind[32], id[256], name[256];
    while (fgets(line, sizeof line, f)) {
        int n = sscanf(line, "%31s %255s %255s", kind, id, name);
        if (n < 2)
            continue;
        if (strcmp(kind, "meter") == 0 && st.nmeters < 64) {
            st.meters[st.nmeters++] = strdup(id);
        } else if (strcmp(kind, "meterid") == 0 && n == 3) {
            for (int i = 0; i < st.nmeters; i++)
                if (strcmp(st.meters[i], name) == 0)
                    st.meter_ids[i] = strdup(id);
        } else if (strcmp(kind, "customer") == 0 && st.ncustomers < MAX_IDS) {
            st.customers[st.ncustomers++] = strdup(id);
        }
    }
    fclose(f);
    if (!st.ncustomers || !st.nmeters)
        die("setup file %s has no customers or meters", file);
}

/* ---------------------------------------------------------------- the load */

typedef struct sent { /* a request written and not yet answered */
    int events;
    double t0; /* when it was written or queued to be (with --rate: when it was scheduled) */
} sent;

typedef struct conn {
    int fd;
    bool want_out; /* EPOLLOUT is in the interest set: output waits for room in the socket */
    char *out;     /* request bytes not yet written, back to back */
    size_t out_len, out_cap;
    char in[8192]; /* response bytes not yet consumed */
    size_t in_len;
    long body_left; /* -1 while reading headers */
    int status;
    sent *inflight; /* a ring of opt.pipeline slots; the oldest request at head */
    int head, ninflight;
    double next_send; /* with --rate: when the next request is due */
} conn;

typedef struct worker {
    int id;
    pthread_t thread;
    conn *conns;
    int nconns;
    bool spent; /* the --events budget is used up */
    unsigned long long seq;
    long long acked, failed, requests, closed;
    long long status_counts[6];
    uint32_t *lat_us;
    size_t nlat, caplat;
    char *scratch;
    size_t scratch_cap;
} worker;

static double pace_interval; /* with --rate: seconds between two requests of one connection */

static int64_t wall_now(void)
{
    return (int64_t)time(NULL);
}

static int take_budget(int want)
{
    if (!opt.events)
        return want;
    pthread_mutex_lock(&budget_mu);
    int got = events_budget >= want ? want : (int)events_budget;
    events_budget -= got;
    pthread_mutex_unlock(&budget_mu);
    return got;
}

static void event_fields(worker *w, unsigned long long k, const char **meter, const char **cust,
                         char *value, int64_t *ts)
{
    int m, c;
    bench_event(run_h, w->id, k, st.nmeters, st.ncustomers, opt.spread_days, wall_now(), &m, &c,
                value, ts);
    *meter = st.meters[m];
    *cust = st.customers[c];
}

/* Appends the next request to c->out and to the requests in flight, with latency counted from
 * t0; returns false when the event budget is spent. */
static bool build_request(worker *w, conn *c, double t0)
{
    int n = take_budget(opt.batch);
    if (n <= 0)
        return false;
    size_t need = (size_t)n * 400 + 1024;
    if (w->scratch_cap < need) {
        w->scratch = realloc(w->scratch, need);
        w->scratch_cap = need;
    }
    char *b = w->scratch;
    size_t len = 0;
    const char *meter, *cust;
    char value[32];
    int64_t ts;
    bool v1 = strcmp(opt.scenario, "v1") == 0;
    if (v1) {
        unsigned long long k = w->seq++;
        event_fields(w, k, &meter, &cust, value, &ts);
        char *p = b;
        p = put_str(p, "event_name=");
        p = put_str(p, meter);
        p = put_str(p, "&identifier=");
        p = put_identifier(p, opt.run_id, w->id, k);
        p = put_str(p, "&payload[stripe_customer_id]=");
        p = put_str(p, cust);
        p = put_str(p, "&payload[value]=");
        p = put_str(p, value);
        p = put_str(p, "&timestamp=");
        if (ts < 0)
            *p++ = '-';
        p = put_u64(p, (unsigned long long)(ts < 0 ? -ts : ts));
        len = (size_t)(p - b);
    } else {
        char *p = put_str(b, "{\"events\":[");
        for (int i = 0; i < n; i++) {
            unsigned long long k = w->seq++;
            event_fields(w, k, &meter, &cust, value, &ts);
            p = put_str(p, i ? ",{\"event_name\":\"" : "{\"event_name\":\"");
            p = put_str(p, meter);
            p = put_str(p, "\",\"identifier\":\"");
            p = put_identifier(p, opt.run_id, w->id, k);
            p = put_str(p, "\",\"payload\":{\"stripe_customer_id\":\"");
            p = put_str(p, cust);
            p = put_str(p, "\",\"value\":\"");
            p = put_str(p, value);
            p = put_str(p, "\"},\"timestamp\":\"");
            p = put_utc(p, ts, 'T');
            p = put_str(p, "Z\"}");
        }
        p = put_str(p, "]}");
        len = (size_t)(p - b);
    }
    char head[1024];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: loadgen\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: %s\r\nStripe-Version: 2026-07-29.dahlia\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      v1 ? "/v1/billing/meter_events" : "/v2/billing/meter_event_stream",
                      v1 ? opt.key : session_token,
                      v1 ? "application/x-www-form-urlencoded" : "application/json", len);
    if (hl >= (int)sizeof head)
        die("request header too long (the key?)");
    if (c->out_cap < c->out_len + (size_t)hl + len) {
        c->out_cap = 2 * (c->out_len + (size_t)hl + len);
        c->out = realloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, head, (size_t)hl);
    memcpy(c->out + c->out_len + hl, b, len);
    c->out_len += (size_t)hl + len;
    c->inflight[(c->head + c->ninflight++) % opt.pipeline] = (sent){n, t0};
    return true;
}

/* Adds the requests that are due to c->out: while c has room in its pipeline and, with --rate,
 * only those whose scheduled time has come. */
static void fill(worker *w, conn *c)
{
    while (c->ninflight < opt.pipeline && !stop_flag && !w->spent) {
        double t0 = now_s();
        if (pace_interval > 0) {
            if (t0 < c->next_send)
                return;
            t0 = c->next_send;
            c->next_send += pace_interval;
        }
        if (!build_request(w, c, t0))
            w->spent = true;
    }
}

/* Writes what the socket takes of c->out; returns NULL, or why the connection is gone. */
static const char *flush_out(conn *c)
{
    size_t done = 0;
    while (done < c->out_len) {
        ssize_t r = write(c->fd, c->out + done, c->out_len - done);
        if (r < 0 && errno == EAGAIN)
            break;
        if (r < 0)
            return strerror(errno);
        done += (size_t)r;
    }
    c->out_len -= done;
    memmove(c->out, c->out + done, c->out_len);
    return NULL;
}

/* Records the response to the oldest request in flight (its status in c->status). */
static void record(worker *w, conn *c)
{
    sent s = c->inflight[c->head];
    c->head = (c->head + 1) % opt.pipeline;
    c->ninflight--;
    double us = (now_s() - s.t0) * 1e6;
    if (w->nlat == w->caplat) {
        w->caplat = w->caplat ? w->caplat * 2 : 1 << 16;
        w->lat_us = realloc(w->lat_us, w->caplat * sizeof *w->lat_us);
    }
    w->lat_us[w->nlat++] = (uint32_t)(us > 4e9 ? 4e9 : us);
    w->requests++;
    int cls = c->status / 100;
    if (cls >= 0 && cls < 6)
        w->status_counts[cls]++;
    if (c->status == 200)
        w->acked += s.events;
    else
        w->failed += s.events;
}

static void consume(conn *c, size_t n)
{
    c->in_len -= n;
    memmove(c->in, c->in + n, c->in_len);
}

/* Consumes what has arrived of the next response; returns true when the whole of it is in. */
static bool parse_response(conn *c)
{
    if (c->body_left < 0) {
        c->in[c->in_len] = '\0';
        char *end = strstr(c->in, "\r\n\r\n");
        if (!end) {
            if (c->in_len == sizeof c->in - 1)
                die("a response header longer than %zu bytes", sizeof c->in - 1);
            return false;
        }
        c->status = atoi(c->in + 9);
        char *cl = strcasestr(c->in, "\r\nContent-Length:");
        c->body_left = cl && cl < end ? strtol(cl + 17, NULL, 10) : 0;
        consume(c, (size_t)(end + 4 - c->in));
    }
    size_t n = c->in_len < (size_t)c->body_left ? c->in_len : (size_t)c->body_left;
    consume(c, n);
    c->body_left -= (long)n;
    if (c->body_left > 0)
        return false;
    c->body_left = -1;
    return true;
}

/* Reads what has arrived and records every whole response (pipelined responses may share a
 * read); returns NULL, or why the connection is gone. */
static const char *read_responses(worker *w, conn *c)
{
    for (;;) {
        size_t room = sizeof c->in - 1 - c->in_len;
        ssize_t r = read(c->fd, c->in + c->in_len, room);
        if (r == 0)
            return "EOF";
        if (r < 0)
            return errno == EAGAIN ? NULL : strerror(errno);
        c->in_len += (size_t)r;
        while (c->ninflight > 0 && parse_response(c))
            record(w, c);
        if ((size_t)r < room)
            return NULL; /* drained: epoll reports what comes next */
    }
}

/* Connects c afresh, with nothing in flight; its first turn comes when it is writable. */
static void open_conn(conn *c, int ep)
{
    c->fd = connect_to(opt.port);
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->want_out = true;
    c->out_len = c->in_len = 0;
    c->body_left = -1;
    c->ninflight = 0;
}

static void close_conn(conn *c, int ep)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

/* The server closed (or reset) a connection: the requests in flight on it are not
 * acknowledged, so their events count as failed; the connection is reopened and the load goes
 * on. Reported as "conn_closed" in the JSON line and, for the first few, on stderr. Returns
 * false when there is nothing more to send, so the connection stays closed. */
static bool reopen(worker *w, conn *c, int ep, const char *why)
{
    long long events = 0;
    for (int i = 0; i < c->ninflight; i++)
        events += c->inflight[(c->head + i) % opt.pipeline].events;
    w->closed++;
    w->failed += events;
    if (w->closed <= 5)
        fprintf(stderr,
                "loadgen: connection closed by the server (%s) with %d requests (%lld events) "
                "in flight, %zu request bytes unsent, %s\n",
                why, c->ninflight, events, c->out_len,
                c->body_left >= 0 ? "inside a response body" : "between responses or in a header");
    close_conn(c, ep);
    if (stop_flag || w->spent)
        return false;
    open_conn(c, ep);
    return true;
}

/* One turn of a connection: reads the responses that have arrived (epoll's events, or 0 for
 * none), sends the requests that are due, and reopens it if the server closed it. Returns false
 * once it is closed for good: nothing in flight and nothing more to send. */
static bool conn_turn(worker *w, conn *c, int ep, uint32_t events)
{
    const char *gone = NULL;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        gone = read_responses(w, c);
    if (!gone) {
        fill(w, c);
        gone = flush_out(c);
    }
    if (gone)
        return reopen(w, c, ep, gone);
    if (c->ninflight == 0 && (stop_flag || w->spent)) {
        close_conn(c, ep);
        return false;
    }
    if (c->want_out != (c->out_len > 0)) {
        c->want_out = c->out_len > 0;
        struct epoll_event ev = {.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0u),
                                 .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    return true;
}

/* How long epoll may wait: with --rate, until the next request of a connection with room in
 * its pipeline is due; at most 100 ms, so that the end of the run is noticed. */
static struct timespec wait_time(const worker *w)
{
    double wait = 0.1, now = now_s();
    for (int i = 0; pace_interval > 0 && i < w->nconns; i++) {
        const conn *c = &w->conns[i];
        if (c->fd >= 0 && c->ninflight < opt.pipeline && c->next_send - now < wait)
            wait = c->next_send - now;
    }
    if (wait < 0)
        wait = 0;
    return (struct timespec){0, (long)(wait * 1e9)};
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    int ep = epoll_create1(0);
    for (int i = 0; i < w->nconns; i++)
        open_conn(&w->conns[i], ep);
    int active = w->nconns;
    struct epoll_event evs[256];
    while (active > 0) {
        struct timespec timeout = wait_time(w);
        int n = epoll_pwait2(ep, evs, 256, &timeout, NULL);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->fd >= 0 && !conn_turn(w, c, ep, evs[i].events))
                active--;
        }
        /* Paced: the connections whose next request has come due without an event. */
        for (int i = 0; pace_interval > 0 && i < w->nconns; i++) {
            conn *c = &w->conns[i];
            if (c->fd >= 0 && !conn_turn(w, c, ep, 0))
                active--;
        }
    }
    close(ep);
    return NULL;
}

static void cmd_run(void)
{
    load_setup(opt.setup_file);
    if (strcmp(opt.scenario, "v1") == 0) {
        opt.batch = 1; /* one event per request */
    } else {
        int status;
        char *r = http_call("POST", "/v2/billing/meter_event_session", "application/json", "{}",
                            opt.key, &status);
        if (status != 200)
            die("session: %d %s", status, r);
        char *tok = json_id(r, "authentication_token");
        snprintf(session_token, sizeof session_token, "%s", tok);
        free(tok);
        free(r);
    }
    events_budget = opt.events;
    if (opt.rate > 0)
        pace_interval = opt.conns * opt.batch / opt.rate;
    worker *ws = calloc((size_t)opt.threads, sizeof *ws);
    int per = opt.conns / opt.threads, first = 0;
    double t0 = now_s();
    for (int i = 0; i < opt.threads; i++) {
        ws[i].id = i;
        ws[i].nconns = per + (i < opt.conns % opt.threads);
        ws[i].conns = calloc((size_t)ws[i].nconns, sizeof(conn));
        for (int j = 0; j < ws[i].nconns; j++, first++) {
            conn *c = &ws[i].conns[j];
            c->inflight = calloc((size_t)opt.pipeline, sizeof *c->inflight);
            /* Paced connections start staggered over one interval so sends interleave evenly. */
            c->next_send = t0 + pace_interval * first / opt.conns;
        }
        pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
    }
    if (!opt.events) {
        while (now_s() - t0 < opt.seconds)
            usleep(10000);
        stop_flag = 1;
    }
    long long acked = 0, failed = 0, reqs = 0, st2 = 0, st4 = 0, st5 = 0, closed = 0;
    size_t nlat = 0;
    for (int i = 0; i < opt.threads; i++) {
        pthread_join(ws[i].thread, NULL);
        acked += ws[i].acked, failed += ws[i].failed, reqs += ws[i].requests;
        closed += ws[i].closed;
        st2 += ws[i].status_counts[2], st4 += ws[i].status_counts[4], st5 += ws[i].status_counts[5];
        nlat += ws[i].nlat;
    }
    double elapsed = now_s() - t0;
    uint32_t *all = malloc((nlat ? nlat : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < opt.threads; i++) {
        memcpy(all + k, ws[i].lat_us, ws[i].nlat * sizeof *all);
        k += ws[i].nlat;
    }
    qsort(all, nlat, sizeof *all, cmp_u32);
#define PCT(p) (nlat ? all[(size_t)((double)(nlat - 1) * (p))] / 1000.0 : 0.0)
    printf("{\"scenario\":\"%s\",\"batch\":%d,\"conns\":%d,\"pipeline\":%d,"
           "\"rate_target\":%.0f,\"seconds\":%.3f,\"requests\":%lld,\"acked_events\":%lld,"
           "\"failed_events\":%lld,\"events_per_sec\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"p999_ms\":%.3f,\"status_2xx\":%lld,\"status_4xx\":%lld,\"status_5xx\":%lld,"
           "\"conn_closed\":%lld}\n",
           opt.scenario, opt.batch, opt.conns, opt.pipeline, opt.rate, elapsed, reqs, acked,
           failed, (double)acked / elapsed, PCT(0.50), PCT(0.99), PCT(0.999), st2, st4, st5,
           closed);
}

/* ---------------------------------------------------------------- summary queries */

/* One GET on a keep-alive connection; returns the body (in *buf, grown as needed) and status. */
static int http_get_keepalive(int fd, const char *path, char **buf, size_t *cap, size_t *body_len)
{
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: loadgen\r\nAuthorization: Bearer %s\r\n"
                     "Stripe-Version: 2026-07-29.dahlia\r\n\r\n",
                     path, opt.key);
    if (n >= (int)sizeof req || write(fd, req, (size_t)n) != n)
        die("query write failed");
    size_t len = 0, header_len = 0;
    long content_length = -1;
    for (;;) {
        if (len + 1 >= *cap)
            *buf = realloc(*buf, *cap *= 2);
        ssize_t r = read(fd, *buf + len, *cap - len - 1);
        if (r == 0)
            die("server closed the query connection");
        if (r < 0)
            die("query read: %s", strerror(errno));
        len += (size_t)r;
        (*buf)[len] = '\0';
        if (content_length < 0) {
            char *end = strstr(*buf, "\r\n\r\n");
            if (!end)
                continue;
            header_len = (size_t)(end + 4 - *buf);
            char *cl = strcasestr(*buf, "\r\nContent-Length:");
            if (!cl || cl > end)
                die("query response without Content-Length");
            content_length = strtol(cl + 17, NULL, 10);
        }
        if (len >= header_len + (size_t)content_length)
            break;
    }
    int status = atoi(*buf + 9);
    memmove(*buf, *buf + header_len, (size_t)content_length);
    (*buf)[content_length] = '\0';
    *body_len = (size_t)content_length;
    return status;
}

/* Walks every page of one summary query; returns the number of summary objects. */
static int summary_walk(int fd, const char *meter_id, const char *customer, int64_t start,
                        int64_t end, bool hourly, char **buf, size_t *cap)
{
    char after[128] = "", path[768];
    int objects = 0;
    for (;;) {
        snprintf(path, sizeof path,
                 "/v1/billing/meters/%s/event_summaries?customer=%s&start_time=%lld"
                 "&end_time=%lld&limit=100%s%s%s",
                 meter_id, customer, (long long)start, (long long)end,
                 hourly ? "&value_grouping_window=hour" : "", after[0] ? "&starting_after=" : "",
                 after);
        size_t len;
        int status = http_get_keepalive(fd, path, buf, cap, &len);
        if (status != 200)
            die("summary query: %d %s", status, *buf);
        const char *p = *buf, *last = NULL;
        while ((p = strstr(p, "\"id\":\"mtrusg_")) != NULL) {
            last = p + 6;
            objects++;
            p += 6;
        }
        if (!strstr(*buf, "\"has_more\":true"))
            return objects;
        if (!last)
            die("has_more without objects: %s", *buf);
        const char *e = strchr(last, '"');
        snprintf(after, sizeof after, "%.*s", (int)(e - last), last);
    }
}

static void cmd_query(void)
{
    load_setup(opt.setup_file);
    int mi = opt.meter_index % st.nmeters;
    const char *meter_id = st.meter_ids[mi];
    const char *customer = st.customers[opt.customer_index % st.ncustomers];
    if (!meter_id)
        die("setup file has no meterid line for %s (rerun loadgen setup)", st.meters[mi]);
    int64_t end = ((int64_t)time(NULL) / 3600 + 1) * 3600, start = end - 30 * 86400;
    int fd = connect_to(opt.port);
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    double *ms[2] = {calloc((size_t)opt.reps, sizeof(double)),
                     calloc((size_t)opt.reps, sizeof(double))};
    int objects[2] = {0, 0};
    for (int g = 0; g < 2; g++) {
        for (int i = -3; i < opt.reps; i++) { /* three untimed warm-ups */
            double t0 = now_s();
            objects[g] = summary_walk(fd, meter_id, customer, start, end, g == 1, &buf, &cap);
            if (i >= 0)
                ms[g][i] = (now_s() - t0) * 1e3;
        }
        qsort(ms[g], (size_t)opt.reps, sizeof(double), cmp_dbl);
    }
    close(fd);
#define QP(g, p) (ms[g][(int)((double)(opt.reps - 1) * (p))])
    printf("{\"mode\":\"query\",\"reps\":%d,\"plain_p50_ms\":%.3f,\"plain_p99_ms\":%.3f,"
           "\"hourly_p50_ms\":%.3f,\"hourly_p99_ms\":%.3f,\"hourly_rows\":%d}\n",
           opt.reps, QP(0, 0.50), QP(0, 0.99), QP(1, 0.50), QP(1, 0.99), objects[1]);
}

/* A plan with a capped feature, and N subscribers: what the checks ask about. */
static void checks_setup(int subscribers)
{
    char body[512], *r, *feat, *prod, *price;
    int status;
    snprintf(body, sizeof body, "name=Bench%%20voice&lookup_key=bench_voice_%s", opt.run_id);
    r = http_call("POST", "/v1/entitlements/features", "application/x-www-form-urlencoded", body,
                  opt.key, &status);
    if (status != 200)
        die("feature create: %d %s", status, r);
    feat = json_id(r, "id");
    free(r);
    r = http_call("POST", "/v1/products", "application/x-www-form-urlencoded", "name=Bench",
                  opt.key, &status);
    if (status != 200)
        die("product create: %d %s", status, r);
    prod = json_id(r, "id");
    free(r);
    snprintf(body, sizeof body,
             "entitlement_feature=%s&usage_limit[meter]=%s&usage_limit[quantity]=1000000000",
             feat, st.meter_ids[0]);
    char path[256];
    snprintf(path, sizeof path, "/v1/products/%s/features", prod);
    r = http_call("POST", path, "application/x-www-form-urlencoded", body, opt.key, &status);
    if (status != 200)
        die("product feature: %d %s", status, r);
    free(r);
    snprintf(body, sizeof body,
             "currency=usd&unit_amount=14900&product=%s&recurring[interval]=month", prod);
    r = http_call("POST", "/v1/prices", "application/x-www-form-urlencoded", body, opt.key,
                  &status);
    if (status != 200)
        die("price create: %d %s", status, r);
    price = json_id(r, "id");
    free(r);
    for (int i = 0; i < subscribers && i < st.ncustomers; i++) {
        snprintf(body, sizeof body, "customer=%s&items[0][price]=%s", st.customers[i], price);
        r = http_call("POST", "/v1/subscriptions", "application/x-www-form-urlencoded", body,
                      opt.key, &status);
        if (status != 200)
            die("subscription create: %d %s", status, r);
        free(r);
    }
    free(feat);
    free(prod);
    free(price);
}

typedef struct check_worker {
    int index, nconns, subscribers;
    double interval; /* seconds between sends on one connection */
    double *lat;     /* ms, from the scheduled send */
    double *net;     /* ms, the same less the client's own oversleep (see check_main) */
    double *late;    /* ms, the client's oversleep: how late its timer woke it */
    long n, cap;
} check_worker;

static void *check_main(void *arg)
{
    check_worker *w = arg;
    int fd = connect_to(opt.check_port ? opt.check_port : opt.port);
    size_t cap = 1 << 14;
    char *buf = malloc(cap), path[512];
    double start = now_s(), end = start + opt.seconds;
    /* Connections start staggered over one interval so sends interleave evenly. */
    double next = start + w->interval * w->index / w->nconns, prev_done = 0;
    for (long k = 0;; k++) {
        if (next >= end)
            break;
        double now = now_s();
        if (now < next) {
            struct timespec ts = {0, (long)((next - now) * 1e9)};
            nanosleep(&ts, NULL);
        }
        /* The send was due at next, or when the previous answer came if that was later (a
         * slow answer delays the next send: that wait is the server's and stays counted).
         * Anything past that is the client oversleeping its timer. */
        double sent_at = now_s(), ready = next > prev_done ? next : prev_done;
        double oversleep = sent_at > ready ? sent_at - ready : 0;
        const char *cust = st.customers[(w->index + k * w->nconns) % w->subscribers];
        snprintf(path, sizeof path,
                 "/v1/entitlements/check?customer=%s&feature=bench_voice_%s&quantity=60", cust,
                 opt.run_id);
        size_t len;
        int status = http_get_keepalive(fd, path, &buf, &cap, &len);
        if (status != 200)
            die("check: %d %s", status, buf);
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat = realloc(w->lat, (size_t)w->cap * sizeof(double));
            w->net = realloc(w->net, (size_t)w->cap * sizeof(double));
            w->late = realloc(w->late, (size_t)w->cap * sizeof(double));
            if (!w->lat || !w->net || !w->late)
                die("out of memory");
        }
        prev_done = now_s();
        w->lat[w->n] = (prev_done - next) * 1e3; /* from the scheduled send */
        w->net[w->n] = (prev_done - next - oversleep) * 1e3;
        w->late[w->n++] = oversleep * 1e3;
        next += w->interval;
    }
    close(fd);
    free(buf);
    return NULL;
}

static void cmd_checks(double rate, int subscribers)
{
    load_setup(opt.setup_file);
    if (!st.meter_ids[0])
        die("setup file has no meterid line (rerun loadgen setup)");
    if (subscribers > st.ncustomers)
        subscribers = st.ncustomers;
    checks_setup(subscribers);
    int nconns = opt.conns;
    check_worker *ws = calloc((size_t)nconns, sizeof *ws);
    pthread_t *th = calloc((size_t)nconns, sizeof *th);
    for (int i = 0; i < nconns; i++) {
        ws[i] = (check_worker){.index = i, .nconns = nconns, .subscribers = subscribers, .interval = nconns / rate};
        pthread_create(&th[i], NULL, check_main, &ws[i]);
    }
    long total = 0;
    for (int i = 0; i < nconns; i++) {
        pthread_join(th[i], NULL);
        total += ws[i].n;
    }
    /* Percentiles of each series over all connections. */
    double *all[3];
    for (int s = 0; s < 3; s++) {
        all[s] = malloc((size_t)(total ? total : 1) * sizeof(double));
        if (!all[s])
            die("out of memory");
        long k = 0;
        for (int i = 0; i < nconns; i++) {
            double *src = s == 0 ? ws[i].lat : s == 1 ? ws[i].net : ws[i].late;
            memcpy(all[s] + k, src, (size_t)ws[i].n * sizeof(double));
            k += ws[i].n;
        }
        qsort(all[s], (size_t)total, sizeof(double), cmp_dbl);
    }
#define CP(s, p) (total ? all[s][(long)((double)(total - 1) * (p))] : 0)
    printf("{\"mode\":\"checks\",\"rate_target\":%.0f,\"checks\":%ld,\"rate\":%.1f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,"
           "\"net_p50_ms\":%.3f,\"net_p99_ms\":%.3f,\"net_p999_ms\":%.3f,"
           "\"oversleep_p50_ms\":%.3f,\"oversleep_p99_ms\":%.3f,\"oversleep_p999_ms\":%.3f}\n",
           rate, total, (double)total / opt.seconds, CP(0, 0.50), CP(0, 0.99), CP(0, 0.999),
           CP(1, 0.50), CP(1, 0.99), CP(1, 0.999), CP(2, 0.50), CP(2, 0.99), CP(2, 0.999));
    for (int s = 0; s < 3; s++)
        free(all[s]);
    for (int i = 0; i < nconns; i++) {
        free(ws[i].lat);
        free(ws[i].net);
        free(ws[i].late);
    }
    free(ws);
    free(th);
}

int main(int argc, char **argv)
{
    bench_prog = "loadgen";
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2)
        die("usage: loadgen setup|run|query|checks [options] (see the comment at the top of "
            "loadgen.c)");
    int ncustomers = 3000, nmeters = 3, subscribers = 200;
    const char *out = "setup.txt";
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--port")) opt.port = atoi(v);
        else if (!strcmp(a, "--key")) opt.key = v;
        else if (!strcmp(a, "--setup")) opt.setup_file = v;
        else if (!strcmp(a, "--scenario")) opt.scenario = v;
        else if (!strcmp(a, "--batch")) opt.batch = atoi(v);
        else if (!strcmp(a, "--conns")) opt.conns = atoi(v);
        else if (!strcmp(a, "--threads")) opt.threads = atoi(v);
        else if (!strcmp(a, "--seconds")) opt.seconds = atof(v);
        else if (!strcmp(a, "--events")) opt.events = atoll(v);
        else if (!strcmp(a, "--spread-days")) opt.spread_days = atoi(v);
        else if (!strcmp(a, "--run-id")) opt.run_id = v;
        else if (!strcmp(a, "--customers")) ncustomers = atoi(v);
        else if (!strcmp(a, "--meters")) nmeters = atoi(v);
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--reps")) opt.reps = atoi(v);
        else if (!strcmp(a, "--customer-index")) opt.customer_index = atoi(v);
        else if (!strcmp(a, "--meter-index")) opt.meter_index = atoi(v);
        else if (!strcmp(a, "--pipeline")) opt.pipeline = atoi(v);
        else if (!strcmp(a, "--rate")) opt.rate = atof(v);
        else if (!strcmp(a, "--subscribers")) subscribers = atoi(v);
        else if (!strcmp(a, "--check-port")) opt.check_port = atoi(v);
        else die("unknown option %s", a);
    }
    if (!opt.key)
        die("--key is required");
    run_h = run_hash_of(opt.run_id);
    if (opt.conns < opt.threads)
        opt.conns = opt.threads;
    if (opt.pipeline < 1)
        die("--pipeline must be at least 1");
    if (!strcmp(argv[1], "setup"))
        cmd_setup(ncustomers, nmeters, out);
    else if (!strcmp(argv[1], "run"))
        cmd_run();
    else if (!strcmp(argv[1], "query"))
        cmd_query();
    else if (!strcmp(argv[1], "checks"))
        cmd_checks(opt.rate > 0 ? opt.rate : 10000, subscribers);
    else
        die("unknown command %s", argv[1]);
    return 0;
}
