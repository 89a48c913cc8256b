/* main.c -- the `tollgate` command: subcommands over the same service the server uses.
 *
 *   tollgate serve [--data DIR] [--listen HOST:PORT] [--max-body BYTES]
 *                  [--max-stream-events N] [--batch-events N] [--queue-events N] [--queue-bytes BYTES]
 *                  [--http-threads N] [--check-lane-realtime] [--no-priority-boost]
 *                  [--identifier-days N|forever]
 *                  [--invoice-grace SECONDS] [--request-timeout SECONDS]
 *                  [--webhook-retry-unit SECONDS]
 *   tollgate keys create [--data DIR] [--live]
 *   tollgate keys revoke SECRET_KEY [--data DIR]
 *   tollgate bill run [--data DIR] [--invoice-grace SECONDS]
 *
 * The CLI and the server both call core/service.h; neither goes through the other. Exit codes:
 * 0 success, 1 runtime failure, 2 usage error. `serve` blocks SIGTERM and SIGINT in every
 * thread and waits for them in main: on either, it stops accepting, lets in-flight requests
 * finish, drains the writer (every queued write commits) and exits 0. `serve` and `bill run`
 * hold the data directory (DIR/tollgate.lock) until they exit: one refuses to start while the
 * other runs, since each keeps in memory what it has written (identifiers, live usage).
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "core/billing.h"
#include "core/service.h"
#include "http/server.h"
#include "http/webhook_sender.h"
#include "store/sqlite.h"

static int64_t real_now(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

/* Never stepped, and unlike CLOCK_MONOTONIC it counts time the machine spent suspended. */
static int64_t boot_seconds(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (int64_t)ts.tv_sec;
}

static const tg_clock real_clock = {real_now, NULL, boot_seconds};

typedef struct options {
    const char *data, *listen;
    bool live, check_lane_realtime, no_priority_boost;
    size_t max_body, max_stream_events, batch_events, queue_events, http_threads;
    size_t request_timeout; /* seconds */
    size_t queue_bytes;
    long long invoice_grace; /* seconds, -1 = the default */
    int identifier_days;     /* 0 = the default, -1 = forever */
    size_t webhook_retry_unit; /* seconds, 0 = the default (core/webhooks.h) */
} options;

static int usage(void)
{
    fprintf(stderr,
            "usage: tollgate serve [--data DIR] [--listen HOST:PORT] [--max-body BYTES]\n"
            "                      [--max-stream-events N] [--batch-events N] [--queue-events N]\n"
            "                      [--queue-bytes BYTES]\n"
            "                      [--http-threads N] [--check-lane-realtime]\n"
            "                      [--no-priority-boost] [--identifier-days N|forever]\n"
            "                      [--invoice-grace SECONDS] [--request-timeout SECONDS]\n"
            "                      [--webhook-retry-unit SECONDS]\n"
            "       tollgate keys create [--data DIR] [--live]\n"
            "       tollgate keys revoke SECRET_KEY [--data DIR]\n"
            "       tollgate bill run [--data DIR] [--invoice-grace SECONDS]\n");
    return 2;
}

static bool parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') /* strtoull takes " -1" (spaces, a sign) and wraps it */
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0)
        return false;
    *out = (size_t)v;
    return true;
}

/* 0 .. 72 hours, in seconds (Stripe's range for the finalization grace period). */
static bool parse_grace(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || !*s || v < 0 || v > TG_GRACE_MAX)
        return false;
    *out = v;
    return true;
}

/* TG_IDENTIFIER_DAYS .. 36,500 days, or "forever" (-1): fewer days than the event window
 * would let a retry that carries its event's timestamp be counted twice. */
static bool parse_identifier_days(const char *s, int *out)
{
    if (strcmp(s, "forever") == 0) {
        *out = -1;
        return true;
    }
    size_t days;
    if (!parse_size(s, &days) || days < TG_IDENTIFIER_DAYS || days > 36500)
        return false;
    *out = (int)days;
    return true;
}

static int parse_options(int argc, char **argv, int first, options *o)
{
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--live") == 0) {
            o->live = true;
            continue;
        }
        if (strcmp(a, "--check-lane-realtime") == 0) {
            o->check_lane_realtime = true;
            continue;
        }
        if (strcmp(a, "--no-priority-boost") == 0) {
            o->no_priority_boost = true;
            continue;
        }
        if (!v)
            return usage();
        if (strcmp(a, "--data") == 0)
            o->data = v;
        else if (strcmp(a, "--listen") == 0)
            o->listen = v;
        else if (strcmp(a, "--max-body") == 0 && parse_size(v, &o->max_body))
            ;
        else if (strcmp(a, "--max-stream-events") == 0 && parse_size(v, &o->max_stream_events))
            ;
        else if (strcmp(a, "--batch-events") == 0 && parse_size(v, &o->batch_events))
            ;
        else if (strcmp(a, "--queue-events") == 0 && parse_size(v, &o->queue_events))
            ;
        else if (strcmp(a, "--queue-bytes") == 0 && parse_size(v, &o->queue_bytes))
            ;
        else if (strcmp(a, "--http-threads") == 0 && parse_size(v, &o->http_threads) &&
                 o->http_threads <= 64)
            ;
        else if (strcmp(a, "--invoice-grace") == 0 && parse_grace(v, &o->invoice_grace))
            ;
        else if (strcmp(a, "--request-timeout") == 0 && parse_size(v, &o->request_timeout) &&
                 o->request_timeout <= 3600)
            ;
        else if (strcmp(a, "--webhook-retry-unit") == 0 &&
                 parse_size(v, &o->webhook_retry_unit) && o->webhook_retry_unit <= 3600)
            ;
        else if (strcmp(a, "--identifier-days") == 0 &&
                 parse_identifier_days(v, &o->identifier_days))
            ;
        else
            return usage();
        i++;
    }
    return 0;
}

/* Holds the data directory for the life of the process (the lock goes with it, however it
 * exits); 1 when another process holds it. */
static int hold_data(const char *data)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tollgate.lock", data);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "tollgate: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) == 0)
        return 0; /* fd stays open until exit */
    fprintf(stderr, "tollgate: %s is in use by another tollgate process (a running server "
            "closes due billing periods by itself; stop it to run this)\n", data);
    close(fd);
    return 1;
}

static int open_service(const options *o, bool scheduler, tg_service **svc)
{
    if (mkdir(o->data, 0700) && errno != EEXIST) {
        fprintf(stderr, "tollgate: cannot create %s: %s\n", o->data, strerror(errno));
        return 1;
    }
    if (hold_data(o->data))
        return 1;
    tg_service_config cfg = {.queue_max_events = o->queue_events,
                             .batch_max_events = o->batch_events,
                             .readers = 8,
                             .no_billing_scheduler = !scheduler,
                             .queue_max_bytes = o->queue_bytes,
                             .no_priority_boost = o->no_priority_boost,
                             .identifier_days = o->identifier_days,
                             .webhook_retry_unit = (int)o->webhook_retry_unit};
    tg_err err = {0};
    if (tg_service_open(svc, tg_store_sqlite_factory(o->data), &real_clock, &cfg, &err)) {
        fprintf(stderr, "tollgate: %s\n", err.msg);
        return 1;
    }
    if (o->invoice_grace >= 0)
        tg_billing_set_grace(*svc, o->invoice_grace);
    return 0;
}

/* Closes every billing period (and finalizes every draft) due by now, as the server's
 * scheduler does; running it twice never bills a period twice (each step moves its object's
 * due time in the same commit). It refuses to start while a server holds the data directory
 * (see hold_data). */
static int cmd_bill_run(const options *o)
{
    tg_service *svc;
    if (open_service(o, false, &svc))
        return 1;
    tg_err err = {0};
    int n = tg_billing_run_due(svc, real_now(NULL), &err);
    tg_service_close(svc);
    if (n < 0) {
        fprintf(stderr, "tollgate: %s\n", err.msg);
        return 1;
    }
    printf("%d billing step%s run\n", n, n == 1 ? "" : "s");
    return 0;
}

static int cmd_keys_create(const options *o)
{
    if (mkdir(o->data, 0700) && errno != EEXIST) {
        fprintf(stderr, "tollgate: cannot create %s: %s\n", o->data, strerror(errno));
        return 1;
    }
    char secret[TG_ID_MAX];
    tg_err err = {0};
    if (tg_key_create_offline(tg_store_sqlite_factory(o->data), &real_clock, o->live, secret,
                              &err)) {
        fprintf(stderr, "tollgate: %s\n", err.msg);
        return 1;
    }
    printf("%s\n", secret);
    return 0;
}

/* Safe while the server runs: it looks keys up again within a second or two. */
static int cmd_keys_revoke(const options *o, const char *secret)
{
    char db[4096];
    snprintf(db, sizeof db, "%s/tollgate.db", o->data);
    if (access(db, F_OK) != 0) {
        fprintf(stderr, "tollgate: no data directory at %s\n", o->data);
        return 1;
    }
    tg_err err = {0};
    if (tg_key_revoke_offline(tg_store_sqlite_factory(o->data), &real_clock, secret, &err)) {
        fprintf(stderr, "tollgate: %s\n", err.msg);
        return 1;
    }
    printf("revoked %.12s...\n", secret);
    return 0;
}

static int cmd_serve(const options *o)
{
    /* glibc gives each thread its own malloc arena, and each keeps the memory of the large
     * request bodies it once held; two arenas bound that retained memory (measured: peak RSS
     * of a 30M-event run above 512 MiB without it).
     * glibc's thresholds are pinned rather than left to adapt: each request's and each
     * batch's memory (bodies, decoded events, blocks: up to a few hundred KiB) comes from the
     * heap, not from mmap (below 1 MiB), and freed memory stays in the arena for the next
     * requests unless 16 MiB of it lies free at the top. Adapting, glibc starts at 128 KiB and
     * 256 KiB; with 8 MiB the same 2,000 pages were still handed back and faulted in again
     * every few hundred milliseconds, as a burst of acknowledged requests freed more than
     * that at once. On the benchmark's VM a fault costs about 7 us: the request threads took
     * 7-10 faults per 1,000 events in batches of 100 (0.05-0.07 us an event), with 16 or
     * 32 MiB 0.5-0.7 (batches of 1,000 on 32 connections: 1.0); the smaller bounds what two
     * arenas can hold back. */
    mallopt(M_ARENA_MAX, 2);
    mallopt(M_MMAP_THRESHOLD, 1 << 20);
    mallopt(M_TRIM_THRESHOLD, 16 << 20);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by every thread started below */
    signal(SIGPIPE, SIG_IGN);

    if (!tg_server_listen_valid(o->listen)) { /* before recovering the store, not after */
        fprintf(stderr, "tollgate: Invalid listen address '%s' (HOST:PORT).\n", o->listen);
        return 2;
    }
    tg_service *svc;
    if (open_service(o, true, &svc))
        return 1;
    tg_server_config cfg = {o->max_body, o->max_stream_events, (unsigned)o->http_threads,
                            o->check_lane_realtime, (unsigned)o->request_timeout,
                            o->no_priority_boost};
    tg_server *srv;
    tg_webhook_sender *hooks = NULL;
    tg_err err = {0};
    /* The sender first: its curl_global_init runs before the HTTP threads exist. */
    if (tg_webhook_sender_start(svc, &hooks, &err) ||
        tg_server_start(&srv, svc, o->listen, &cfg, &err)) {
        fprintf(stderr, "tollgate: %s\n", err.msg);
        if (hooks)
            tg_webhook_sender_stop(hooks);
        tg_service_close(svc);
        return 1;
    }
    tg_log(TG_LOG_INFO, "tollgate listening on http://%s (data in %s)", o->listen, o->data);
    int sig = 0;
    sigwait(&set, &sig);
    tg_log(TG_LOG_INFO, "received %s: finishing in-flight requests", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    tg_webhook_sender_stop(hooks);
    tg_server_stop(srv);
    tg_service_close(svc);
    tg_log(TG_LOG_INFO, "stopped cleanly");
    return 0;
}

int main(int argc, char **argv)
{
    const char *lvl = getenv("TOLLGATE_LOG");
    if (lvl)
        tg_log_set_level(strcmp(lvl, "debug") == 0 ? TG_LOG_DEBUG
                         : strcmp(lvl, "warn") == 0 ? TG_LOG_WARN
                         : strcmp(lvl, "error") == 0 ? TG_LOG_ERROR
                                                     : TG_LOG_INFO);
    options o = {.data = "./data",
                 .listen = "127.0.0.1:12111",
                 .max_body = 1u << 20,
                 .max_stream_events = 100,
                 .batch_events = 10000,
                 .queue_events = 200000,
                 .http_threads = 2,
                 .request_timeout = 30,
                 .invoice_grace = -1};
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) {
        if (parse_options(argc, argv, 2, &o))
            return 2;
        return cmd_serve(&o);
    }
    if (argc >= 3 && strcmp(argv[1], "keys") == 0 && strcmp(argv[2], "create") == 0) {
        if (parse_options(argc, argv, 3, &o))
            return 2;
        return cmd_keys_create(&o);
    }
    if (argc >= 4 && strcmp(argv[1], "keys") == 0 && strcmp(argv[2], "revoke") == 0) {
        if (parse_options(argc, argv, 4, &o))
            return 2;
        return cmd_keys_revoke(&o, argv[3]);
    }
    if (argc >= 3 && strcmp(argv[1], "bill") == 0 && strcmp(argv[2], "run") == 0) {
        if (parse_options(argc, argv, 3, &o))
            return 2;
        return cmd_bill_run(&o);
    }
    return usage();
}
