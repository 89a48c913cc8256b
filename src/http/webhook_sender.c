/* webhook_sender.c -- posts queued webhook deliveries (core/webhooks.h) to their endpoints.
 *
 * One thread. It takes up to SEND_BATCH due deliveries (a writer job that leases them), posts
 * them all at once through a libcurl multi handle, then settles them in one more writer job:
 * a 2xx answer is a delivery, anything else (another status, a redirect, a refused connection,
 * no answer within SEND_TIMEOUT_MS) a failure the queue retries on its schedule. With nothing
 * due it sleeps until a job that queued deliveries nudges it after its commit, or for
 * IDLE_WAIT_MS, so retries that come due are seen within that.
 *
 * Each post is signed as Stripe signs its own: the header
 * `Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by the whsec_
 * secret>`, so Stripe's libraries verify Tollgate's deliveries unchanged (stripe-node's
 * webhooks.constructEvent). The body is the event exactly as GET /v1/events/{id} writes it.
 * Easy handles are kept between rounds so connections to an endpoint are reused.
 */
#include "http/webhook_sender.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/ids.h"
#include "base/log.h"
#include "core/webhooks.h"
#include "http/api.h"

#define SEND_BATCH 16
#define SEND_TIMEOUT_MS 10000
#define CONNECT_TIMEOUT_MS 5000
#define IDLE_WAIT_MS 1000
#define BODY_MAX (16u << 20)

struct tg_webhook_sender {
    tg_service *svc;
    pthread_t thread;
    atomic_bool stop;
    CURLM *multi;
    CURL *easy[SEND_BATCH];
};

static size_t discard(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    (void)ctx;
    return size * n;
}

/* One post in flight: its body, headers and outcome. */
typedef struct post {
    tg_buf body;
    struct curl_slist *headers;
    bool done;      /* answered, failed or never sent: it can be settled */
    bool delivered; /* a 2xx answer */
} post;

/* Renders and signs attempt `at` into p and sets up easy handle h to send it. */
static bool prepare(CURL *h, post *p, const tg_webhook_attempt *at, int64_t now)
{
    tg_jw w;
    tg_buf_init(&p->body, BODY_MAX);
    jw_init(&w, &p->body);
    tg_render_event(&w, &at->event);
    tg_buf signed_payload;
    tg_buf_init(&signed_payload, BODY_MAX + 32);
    tg_buf_printf(&signed_payload, "%lld.", (long long)now);
    tg_buf_append(&signed_payload, p->body.data, p->body.len);
    bool ok = !p->body.failed && !signed_payload.failed;
    char mac[65] = "", header[160];
    if (ok)
        tg_hmac_sha256_hex(at->endpoint.secret, strlen(at->endpoint.secret),
                           signed_payload.data, signed_payload.len, mac);
    tg_buf_free(&signed_payload);
    snprintf(header, sizeof header, "Stripe-Signature: t=%lld,v1=%s", (long long)now, mac);
    struct curl_slist *hs = NULL, *next;
    const char *lines[] = {"Content-Type: application/json; charset=utf-8",
                           "User-Agent: Tollgate/1.0 (webhooks)", "Expect:", header};
    for (size_t i = 0; ok && i < sizeof lines / sizeof *lines; i++) {
        if (!(next = curl_slist_append(hs, lines[i])))
            ok = false;
        else
            hs = next;
    }
    p->headers = hs;
    if (!ok)
        return false;
    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, at->endpoint.url);
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, p->body.data);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)p->body.len);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)SEND_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect is a failure (Stripe) */
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_PRIVATE, p);
    return true;
}

/* Posts n attempts at once; posts[i] tells each one's outcome. A stop leaves the posts
 * still in flight not done (their leases bring them back after a restart). */
static void post_all(tg_webhook_sender *s, const tg_webhook_attempt *at, size_t n, post *posts)
{
    int64_t now = tg_service_now(s->svc);
    for (size_t i = 0; i < n; i++) {
        posts[i].delivered = posts[i].done = false;
        if (prepare(s->easy[i], &posts[i], &at[i], now)) {
            curl_multi_add_handle(s->multi, s->easy[i]);
        } else {
            tg_log(TG_LOG_ERROR, "webhooks: cannot prepare %s (out of memory)", at[i].event.id);
            posts[i].done = true; /* a failed attempt */
        }
    }
    int running = 1;
    while (running && !atomic_load(&s->stop)) {
        if (curl_multi_perform(s->multi, &running) != CURLM_OK)
            break;
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(s->multi, &left))) {
            if (m->msg != CURLMSG_DONE)
                continue;
            post *p;
            long status = 0;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&p);
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            p->delivered = m->data.result == CURLE_OK && status >= 200 && status < 300;
            p->done = true;
        }
        if (running)
            curl_multi_poll(s->multi, NULL, 0, 100, NULL);
    }
    for (size_t i = 0; i < n; i++) {
        curl_multi_remove_handle(s->multi, s->easy[i]);
        curl_slist_free_all(posts[i].headers);
        posts[i].headers = NULL;
        tg_buf_free(&posts[i].body);
    }
}

/* Settles the attempts whose posts are done, in one writer job. */
static void settle_done(tg_webhook_sender *s, const tg_webhook_attempt *at, size_t n,
                        const post *posts)
{
    int outcome[SEND_BATCH];
    for (size_t i = 0; i < n; i++)
        outcome[i] = !posts[i].done ? TG_WEBHOOK_UNSETTLED
                     : posts[i].delivered ? TG_WEBHOOK_DELIVERED
                                          : TG_WEBHOOK_FAILED;
    tg_err err = {0};
    if (tg_webhook_settle(s->svc, at, n, outcome, &err))
        tg_log(TG_LOG_ERROR, "webhooks: cannot record deliveries: %s", err.msg);
}

static void *sender_main(void *arg)
{
    tg_webhook_sender *s = arg;
    pthread_setname_np(pthread_self(), "tg-webhooks");
    uint64_t seen = 0;
    while (!atomic_load(&s->stop)) {
        tg_arena a;
        tg_arena_init(&a, 0);
        tg_err err = {0};
        tg_webhook_attempt *at;
        size_t n = 0;
        int rc = tg_webhook_take(s->svc, SEND_BATCH, &a, &at, &n, &err);
        if (rc && rc != TG_ESHUTDOWN)
            tg_log(TG_LOG_ERROR, "webhooks: cannot take due deliveries: %s", err.msg);
        if (!rc && n) {
            post posts[SEND_BATCH];
            memset(posts, 0, sizeof posts);
            post_all(s, at, n, posts);
            settle_done(s, at, n, posts);
        }
        tg_arena_free(&a);
        if (rc || n < SEND_BATCH)
            tg_webhooks_wait(s->svc, &seen, IDLE_WAIT_MS);
    }
    return NULL;
}

int tg_webhook_sender_start(tg_service *svc, tg_webhook_sender **out, tg_err *err)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return tg_err_set(err, TG_ENOMEM, NULL, "cannot initialize libcurl");
    tg_webhook_sender *s = calloc(1, sizeof *s);
    if (!s)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    s->svc = svc;
    atomic_init(&s->stop, false);
    bool ok = (s->multi = curl_multi_init()) != NULL;
    for (size_t i = 0; ok && i < SEND_BATCH; i++)
        ok = (s->easy[i] = curl_easy_init()) != NULL;
    if (!ok || pthread_create(&s->thread, NULL, sender_main, s)) {
        for (size_t i = 0; i < SEND_BATCH; i++)
            curl_easy_cleanup(s->easy[i]);
        curl_multi_cleanup(s->multi);
        free(s);
        return tg_err_set(err, TG_ENOMEM, NULL, "cannot start the webhook sender");
    }
    *out = s;
    return TG_OK;
}

void tg_webhook_sender_stop(tg_webhook_sender *s)
{
    if (!s)
        return;
    atomic_store(&s->stop, true);
    tg_webhooks_nudge(s->svc);
    pthread_join(s->thread, NULL);
    for (size_t i = 0; i < SEND_BATCH; i++)
        curl_easy_cleanup(s->easy[i]);
    curl_multi_cleanup(s->multi);
    free(s);
    curl_global_cleanup();
}
