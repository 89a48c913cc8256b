/* test_usage_sessions.c -- usage sessions against the real service (writer thread, SQLite
 * store) with a fake clock: the entitlement registry keeps live sessions only, so its memory
 * and the walk every check makes follow the calls in progress, not every call a customer ever
 * made; and sessions whose heartbeats stopped are stored as expired when their customer is
 * loaded again, so later loads no longer read them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/billing.h"
#include "core/entitlements.h"
#include "core/service.h"
#include "core/service_internal.h"
#include "store/sqlite.h"

#define T0 INT64_C(1767225600) /* 2026-01-01T00:00:00Z */

typedef struct fixture {
    char dir[64];
    int64_t now; /* read by the writer thread too: accessed atomically */
    tg_clock clock;
    tg_service *svc;
    tg_scope scope;
    char customer[TG_ID_MAX];
    tg_meter meter;
    tg_arena a;
} fixture;

static int64_t fake_now(void *ctx)
{
    return __atomic_load_n((int64_t *)ctx, __ATOMIC_SEQ_CST);
}

static void set_now(fixture *f, int64_t t)
{
    __atomic_store_n(&f->now, t, __ATOMIC_SEQ_CST);
}

static void rm_dir(const char *dir)
{
    const char *names[] = {"tollgate.db", "tollgate.db-wal", "tollgate.db-shm",
                           "tollgate.db-journal"};
    char path[256];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void open_service(fixture *f)
{
    tg_service_config cfg = {0, 0, 2, false};
    tg_err err = {0};
    if (tg_service_open(&f->svc, tg_store_sqlite_factory(f->dir), &f->clock, &cfg, &err))
        fail_msg("tg_service_open: %s", err.msg);
}

#define OK(call)                                                                              \
    do {                                                                                      \
        tg_err err_ = {0};                                                                    \
        int rc_ = (call)(&err_);                                                              \
        if (rc_)                                                                              \
            fail_msg("%s: %d %s", #call, rc_, err_.msg);                                      \
    } while (0)

/* A customer subscribed to a product granting the unlimited feature "calls", and a meter
 * summing call seconds. */
static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/tg-usess-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    f->now = T0;
    f->clock.now = fake_now;
    f->clock.ctx = &f->now;
    tg_arena_init(&f->a, 0);
    open_service(f);
    tg_err err = {0};
    char secret[TG_ID_MAX];
    if (tg_key_create(f->svc, false, secret, &err) ||
        tg_key_authenticate(f->svc, secret, &f->scope, &err))
        fail_msg("key: %s", err.msg);

    tg_meter spec;
    memset(&spec, 0, sizeof spec);
    snprintf(spec.display_name, sizeof spec.display_name, "Call seconds");
    snprintf(spec.event_name, sizeof spec.event_name, "call_seconds");
    snprintf(spec.customer_key, sizeof spec.customer_key, "stripe_customer_id");
    snprintf(spec.value_key, sizeof spec.value_key, "value");
    if (tg_meter_create(f->svc, &f->scope, &spec, &f->meter, &err))
        fail_msg("meter: %s", err.msg);

    tg_customer_patch cp;
    memset(&cp, 0, sizeof cp);
    cp.default_payment_method = (tg_opt_str){true, "pm_card_visa"};
    tg_customer cu;
    if (tg_customer_create(f->svc, &f->scope, &cp, &f->a, &cu, &err))
        fail_msg("customer: %s", err.msg);
    snprintf(f->customer, sizeof f->customer, "%s", cu.id);

    tg_product_patch pp;
    memset(&pp, 0, sizeof pp);
    pp.name = (tg_opt_str){true, "Calls"};
    pp.active = -1;
    tg_product prod;
    if (tg_product_create(f->svc, &f->scope, &pp, &f->a, &prod, &err))
        fail_msg("product: %s", err.msg);

    tg_price ps;
    memset(&ps, 0, sizeof ps);
    ps.active = true;
    snprintf(ps.currency, sizeof ps.currency, "usd");
    snprintf(ps.product, sizeof ps.product, "%s", prod.id);
    ps.recurring = true;
    ps.interval = TG_INTERVAL_MONTH;
    ps.interval_count = 1;
    ps.unit_amount_set = true;
    ps.pricing.scheme = TG_SCHEME_PER_UNIT;
    ps.pricing.unit_amount = tg_dec_from_int(1000);
    tg_price price;
    if (tg_price_create(f->svc, &f->scope, &ps, NULL, false, &f->a, &price, &err))
        fail_msg("price: %s", err.msg);

    tg_metadata none = {0};
    tg_feature feat;
    if (tg_feature_create(f->svc, &f->scope, "Calls", "calls", &none, &f->a, &feat, &err))
        fail_msg("feature: %s", err.msg);
    tg_usage_limit nolimit = {0};
    tg_product_feature pf;
    if (tg_product_feature_attach(f->svc, &f->scope, prod.id, feat.id, &nolimit, &f->a, &pf,
                                  &err))
        fail_msg("attach: %s", err.msg);

    tg_sub_params sp;
    memset(&sp, 0, sizeof sp);
    sp.anchor_day = sp.anchor_month = sp.anchor_hour = sp.anchor_minute = sp.anchor_second = -1;
    sp.trial_end_behavior = -1;
    sp.cancel_at_period_end = -1;
    sp.proration = -1;
    sp.send_invoice = -1;
    sp.customer = f->customer;
    sp.items[0].price = price.id;
    sp.nitems = 1;
    sp.has_items = true;
    tg_subscription sub;
    if (tg_subscription_create(f->svc, &f->scope, &sp, &f->a, &sub, &err))
        fail_msg("subscription: %s", err.msg);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    tg_service_close(f->svc);
    tg_arena_free(&f->a);
    rm_dir(f->dir);
    free(f);
    return 0;
}

static size_t registry_sessions(fixture *f)
{
    return tg_ent_registry_sessions(*tg_service_entitlements(f->svc));
}

static void start(fixture *f, int64_t timeout, tg_usage_session *out)
{
    tg_usage_session_params p;
    memset(&p, 0, sizeof p);
    p.customer = f->customer;
    p.feature = "calls";
    p.event_name = "call_seconds";
    p.heartbeat_timeout = timeout;
    tg_err err = {0};
    if (tg_usage_session_start(f->svc, &f->scope, &p, &f->a, out, &err))
        fail_msg("start: %s", err.msg);
    assert_int_equal(out->status, TG_USESS_ACTIVE);
}

static void beat(fixture *f, const char *id, bool end, tg_usage_session *out)
{
    tg_err err = {0};
    if (tg_usage_session_heartbeat(f->svc, &f->scope, id, end, &f->a, out, &err))
        fail_msg("heartbeat: %s", err.msg);
}

static void test_ended_sessions_leave_the_registry(void **state)
{
    fixture *f = *state;
    tg_usage_session s, e;
    for (int i = 0; i < 200; i++) {
        start(f, 30, &s);
        assert_int_equal(registry_sessions(f), 1);
        set_now(f, f->now + 5);
        beat(f, s.id, true, &e);
        assert_int_equal(e.status, TG_USESS_ENDED);
        assert_int_equal(e.recorded, 5);
        assert_int_equal(registry_sessions(f), 0);
    }
}

static void test_stopped_sessions_leave_the_registry(void **state)
{
    fixture *f = *state;
    tg_usage_session s, live;
    for (int i = 0; i < 50; i++)
        start(f, 10, &s);
    assert_int_equal(registry_sessions(f), 50);
    set_now(f, f->now + 11); /* every heartbeat stopped longer than its timeout ago */
    start(f, 60, &live);
    assert_int_equal(registry_sessions(f), 1);

    /* After a restart, loading the customer stores the stopped sessions as expired: they are
     * not in the registry, and a retrieve shows what is stored. */
    tg_service_close(f->svc);
    f->svc = NULL;
    open_service(f);
    tg_ent_check c;
    tg_err err = {0};
    if (tg_entitlement_check(f->svc, &f->scope, f->customer, "calls", 0, &c, &err))
        fail_msg("check: %s", err.msg);
    assert_true(c.entitled);
    assert_int_equal(registry_sessions(f), 1);
    tg_usage_session g;
    if (tg_usage_session_retrieve(f->svc, &f->scope, s.id, &f->a, &g, &err))
        fail_msg("retrieve: %s", err.msg);
    assert_int_equal(g.status, TG_USESS_EXPIRED);
    assert_int_equal(g.ended_at, T0);
    set_now(f, f->now + 10);
    beat(f, live.id, false, &g);
    assert_int_equal(g.status, TG_USESS_ACTIVE);
    assert_int_equal(g.recorded, 10);
    assert_int_equal(registry_sessions(f), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ended_sessions_leave_the_registry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopped_sessions_leave_the_registry, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
