/* checkbench.c -- the server-side cost of one entitlement check, in process.
 *
 *   checkbench [--customers N] [--events E] [--checks C] [--dir DIR]
 *
 * Opens Tollgate's service on a fresh SQLite data directory (the same code the server runs,
 * without HTTP), creates a sum meter, N customers subscribed to a plan whose feature has a hard
 * usage limit on that meter, and records E events spread over the customers and the current
 * month. Then it times C calls of tg_entitlement_check (round robin over the customers, asking
 * for 60 more units) twice: with the service idle, and with a thread recording events in
 * batches of 100 at the same time. The baseline, in the same run, is what a check costs
 * without counters: the customer's usage over the period read as a month summary
 * (tg_summary_list with no grouping), the exact query a DB-only design runs per check.
 * Prints one JSON line: nanoseconds per check (idle, under ingest), per baseline query, and
 * the events the ingest thread recorded meanwhile.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/billing.h"
#include "core/entitlements.h"
#include "core/service.h"
#include "store/sqlite.h"

static int64_t real_now(void *ctx)
{
    (void)ctx;
    return (int64_t)time(NULL);
}

static const tg_clock clock_real = {real_now, NULL, NULL};

static void fail(const char *what, const tg_err *err)
{
    fprintf(stderr, "checkbench: %s: %s\n", what, err->msg);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct world {
    tg_service *svc;
    tg_scope scope;
    tg_meter meter;
    char (*customers)[TG_ID_MAX];
    int ncustomers;
    atomic_int stop;
    atomic_long ingested;
} world;

/* Records n events (batches of 100), values 1..5, timestamps in the last hour. */
static void ingest(world *w, long n, unsigned seed)
{
    tg_event ev[100];
    int results[100];
    tg_kv kv[100][2];
    char values[100][8];
    for (long done = 0; done < n && !atomic_load(&w->stop); done += 100) {
        for (int i = 0; i < 100; i++) {
            memset(&ev[i], 0, sizeof ev[i]);
            int c = (int)((seed + (unsigned)(done + i)) % (unsigned)w->ncustomers);
            snprintf(values[i], sizeof values[i], "%d", 1 + (int)((done + i) % 5));
            kv[i][0] = (tg_kv){"stripe_customer_id", w->customers[c]};
            kv[i][1] = (tg_kv){"value", values[i]};
            ev[i].payload = (tg_metadata){kv[i], 2};
            snprintf(ev[i].event_name, sizeof ev[i].event_name, "%s", w->meter.event_name);
            ev[i].timestamp = real_now(NULL) - (done + i) % 3600;
            tg_err err = {0};
            if (tg_event_prepare(w->svc, &w->scope, &ev[i], NULL, &err))
                fail("event", &err);
        }
        tg_err err = {0};
        if (tg_events_record(w->svc, &w->scope, ev, 100, results, NULL, 0, &err))
            fail("record", &err);
        atomic_fetch_add(&w->ingested, 100);
    }
}

static void *ingest_main(void *arg)
{
    world *w = arg;
    for (unsigned seed = 7; !atomic_load(&w->stop); seed += 100)
        ingest(w, 1000, seed);
    return NULL;
}

static double time_checks(world *w, long n)
{
    tg_ent_check r;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        tg_err err = {0};
        if (tg_entitlement_check(w->svc, &w->scope, w->customers[i % w->ncustomers],
                                 "bench_voice", 60 * TG_DEC_ONE, &r, &err))
            fail("check", &err);
    }
    return (now_s() - t0) / (double)n * 1e9;
}

int main(int argc, char **argv)
{
    int ncustomers = 200;
    long events = 200000, checks = 200000;
    char dir[] = "/tmp/tollgate-checkbench-XXXXXX";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--customers")) ncustomers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--events")) events = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--checks")) checks = atol(argv[i + 1]);
        else {
            fprintf(stderr, "usage: checkbench [--customers N] [--events E] [--checks C]\n");
            return 2;
        }
    }
    if (!mkdtemp(dir))
        return 1;
    world w = {0};
    tg_err err = {0};
    tg_service_config cfg = {.readers = 4, .no_billing_scheduler = true};
    if (tg_service_open(&w.svc, tg_store_sqlite_factory(dir), &clock_real, &cfg, &err))
        fail("open", &err);
    char secret[TG_ID_MAX];
    if (tg_key_create(w.svc, false, secret, &err) ||
        tg_key_authenticate(w.svc, secret, &w.scope, &err))
        fail("key", &err);
    tg_arena a;
    tg_arena_init(&a, 0);
    tg_meter spec = {0};
    snprintf(spec.display_name, sizeof spec.display_name, "Voice seconds");
    snprintf(spec.event_name, sizeof spec.event_name, "voice_seconds");
    snprintf(spec.customer_key, sizeof spec.customer_key, "stripe_customer_id");
    snprintf(spec.value_key, sizeof spec.value_key, "value");
    if (tg_meter_create(w.svc, &w.scope, &spec, &w.meter, &err))
        fail("meter", &err);
    tg_feature feature;
    tg_metadata none = {0};
    if (tg_feature_create(w.svc, &w.scope, "Voice", "bench_voice", &none, &a, &feature, &err))
        fail("feature", &err);
    tg_product_patch pp = {.name = {true, "Bench plan"}, .active = -1};
    tg_product product;
    if (tg_product_create(w.svc, &w.scope, &pp, &a, &product, &err))
        fail("product", &err);
    tg_usage_limit limit = {.set = true, .quantity = (tg_dec)1000000000 * TG_DEC_ONE, .hard = true};
    snprintf(limit.meter, sizeof limit.meter, "%s", w.meter.id);
    tg_product_feature pf;
    if (tg_product_feature_attach(w.svc, &w.scope, product.id, feature.id, &limit, &a, &pf, &err))
        fail("product feature", &err);
    tg_price ps = {0}, price;
    ps.active = ps.recurring = true;
    ps.interval = TG_INTERVAL_MONTH;
    ps.interval_count = 1;
    ps.unit_amount_set = true;
    ps.pricing.unit_amount = 14900 * TG_DEC_ONE;
    snprintf(ps.currency, sizeof ps.currency, "usd");
    snprintf(ps.product, sizeof ps.product, "%s", product.id);
    if (tg_price_create(w.svc, &w.scope, &ps, NULL, false, &a, &price, &err))
        fail("price", &err);
    w.ncustomers = ncustomers;
    w.customers = calloc((size_t)ncustomers, sizeof *w.customers);
    for (int i = 0; i < ncustomers; i++) {
        tg_customer_patch cp = {0};
        tg_customer c;
        tg_subscription s;
        if (tg_customer_create(w.svc, &w.scope, &cp, &a, &c, &err))
            fail("customer", &err);
        snprintf(w.customers[i], TG_ID_MAX, "%s", c.id);
        tg_sub_params sp = {.customer = c.id, .nitems = 1, .anchor_day = -1, .anchor_month = -1,
                            .anchor_hour = -1, .anchor_minute = -1, .anchor_second = -1,
                            .trial_end_behavior = -1, .cancel_at_period_end = -1,
                            .proration = -1, .send_invoice = -1};
        sp.items[0].price = price.id;
        if (tg_subscription_create(w.svc, &w.scope, &sp, &a, &s, &err))
            fail("subscription", &err);
    }
    ingest(&w, events, 1);
    long warm = checks / 10 + 1;
    time_checks(&w, warm); /* every customer is in the registry from here on */
    double idle_ns = time_checks(&w, checks);

    /* The baseline: the month's usage of the customer, read as a summary. */
    int64_t end = (real_now(NULL) / 60 + 1) * 60, start = end - 30 * 86400;
    long reps = checks / 20 + 1;
    double t0 = now_s();
    for (long i = 0; i < reps; i++) {
        tg_arena qa;
        tg_arena_init(&qa, 0);
        tg_summary *out;
        size_t n;
        bool more;
        if (tg_summary_list(w.svc, &w.scope, w.meter.id, w.customers[i % ncustomers], start, end,
                            TG_WINDOW_NONE, 1, 0, 0, &qa, &out, &n, &more, &err))
            fail("summary", &err);
        tg_arena_free(&qa);
    }
    double summary_ns = (now_s() - t0) / (double)reps * 1e9;

    pthread_t th;
    atomic_store(&w.ingested, 0);
    pthread_create(&th, NULL, ingest_main, &w);
    usleep(200000);
    long before = atomic_load(&w.ingested);
    double t1 = now_s();
    double busy_ns = time_checks(&w, checks);
    double span = now_s() - t1;
    long during = atomic_load(&w.ingested) - before;
    atomic_store(&w.stop, 1);
    pthread_join(th, NULL);
    printf("{\"mode\":\"checkbench\",\"customers\":%d,\"events\":%ld,\"check_ns\":%.0f,"
           "\"check_ns_under_ingest\":%.0f,\"ingest_events_per_sec\":%.0f,"
           "\"summary_ns\":%.0f,\"ratio\":%.1f}\n",
           ncustomers, events, idle_ns, busy_ns, (double)during / span, summary_ns,
           summary_ns / idle_ns);
    tg_service_close(w.svc);
    tg_arena_free(&a);
    free(w.customers);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) ? 1 : 0;
}
