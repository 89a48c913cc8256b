/* gateway.c -- a voice platform in miniature, metered and capped by Tollgate.
 *
 *   voice-gateway --url http://127.0.0.1:12111 --key sk_test_... --customers cus_a,cus_b
 *                 [--calls N] [--min-seconds S] [--max-seconds S] [--feature voice_minutes]
 *                 [--event-name voice_seconds] [--rounding second|minute_up] [--seed N]
 *
 * It places N concurrent calls, spread over the customers. Each call asks Tollgate for a usage
 * session (POST /v1/usage_sessions); a refusal (402: not entitled, or the cap is used) means
 * the call is never connected. A connected call heartbeats every second
 * (POST /v1/usage_sessions/{id}/heartbeat) and hangs up when Tollgate answers anything but
 * `active` (the cap is reached), or ends by itself after its planned length
 * (POST /v1/usage_sessions/{id}/end). Each call is one thread with one keep-alive connection.
 *
 * It prints one JSON line per call: {"customer","session","planned","outcome","status",
 * "billed"} where outcome is "refused", "completed" (ended by the caller) or "cut" (told to
 * hang up), and billed is the session's billed_quantity. The test in
 * tests/e2e/voice_gateway.test.mjs checks these against the meter's totals.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct options {
    const char *url, *key, *feature, *event_name, *rounding;
    char **customers;
    int ncustomers, calls, min_seconds, max_seconds;
    unsigned seed;
} options;

typedef struct call {
    const options *o;
    const char *customer;
    int planned; /* seconds the caller means to talk */
    char session[80];
    const char *outcome;
    char status[32];
    long long billed;
    char error[256];
} call;

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct body {
    char *data;
    size_t len;
} body;

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    body *b = arg;
    size_t add = size * n;
    char *d = realloc(b->data, b->len + add + 1);
    if (!d)
        return 0;
    memcpy(d + b->len, p, add);
    b->len += add;
    d[b->len] = '\0';
    b->data = d;
    return add;
}

/* POSTs form to path; returns the HTTP status (0 on a transport error) and the JSON body. */
static long post(CURL *h, const options *o, const char *path, const char *form, json_t **out)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", o->url, path);
    body b = {NULL, 0};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    long status = 0;
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    *out = b.data ? json_loads(b.data, 0, NULL) : NULL;
    free(b.data);
    return status;
}

static void take_state(call *c, json_t *j)
{
    const char *status = json_string_value(json_object_get(j, "status"));
    snprintf(c->status, sizeof c->status, "%s", status ? status : "");
    c->billed = (long long)json_integer_value(json_object_get(j, "billed_quantity"));
}

static void *run_call(void *arg)
{
    call *c = arg;
    const options *o = c->o;
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = NULL;
    char auth[256];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", o->key);
    hdr = curl_slist_append(hdr, auth);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);

    char form[512], path[160];
    snprintf(form, sizeof form,
             "customer=%s&feature=%s&event_name=%s&rounding=%s&heartbeat_timeout=10"
             "&payload[agent_id]=agent_%s",
             c->customer, o->feature, o->event_name, o->rounding, c->customer);
    json_t *j = NULL;
    long st = post(h, o, "/v1/usage_sessions", form, &j);
    if (st != 200) {
        c->outcome = "refused";
        const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
        snprintf(c->status, sizeof c->status, "%s", code ? code : "transport_error");
        json_decref(j);
        goto done;
    }
    snprintf(c->session, sizeof c->session, "%s", json_string_value(json_object_get(j, "id")));
    take_state(c, j);
    json_decref(j);
    c->outcome = "completed";
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (int beat = 1;; beat++) {
        /* Heartbeat on the second, measured from the start. */
        struct timespec next = start;
        next.tv_sec += beat;
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        bool last = beat >= c->planned;
        snprintf(path, sizeof path, "/v1/usage_sessions/%s/%s", c->session,
                 last ? "end" : "heartbeat");
        st = post(h, o, path, "", &j);
        if (st != 200) {
            snprintf(c->error, sizeof c->error, "%s answered %ld", path, st);
            json_decref(j);
            break;
        }
        take_state(c, j);
        json_decref(j);
        if (last)
            break;
        if (strcmp(c->status, "active") != 0) {
            c->outcome = "cut"; /* Tollgate says the cap is reached: hang up */
            break;
        }
    }
done:
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    pthread_mutex_lock(&out_mu);
    json_t *line = json_pack("{s:s, s:s, s:i, s:s, s:s, s:I, s:s}", "customer", c->customer,
                             "session", c->session, "planned", c->planned, "outcome",
                             c->outcome, "status", c->status, "billed", (json_int_t)c->billed,
                             "error", c->error);
    char *text = json_dumps(line, JSON_COMPACT);
    printf("%s\n", text);
    fflush(stdout);
    free(text);
    json_decref(line);
    pthread_mutex_unlock(&out_mu);
    return NULL;
}

static int usage(void)
{
    fprintf(stderr, "usage: voice-gateway --url URL --key KEY --customers ID[,ID...] [--calls N]\n"
                    "       [--min-seconds S] [--max-seconds S] [--feature KEY]\n"
                    "       [--event-name NAME] [--rounding second|minute_up] [--seed N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    options o = {NULL, NULL, "voice_minutes", "voice_seconds", "second", NULL, 0, 10, 2, 8, 1};
    char *customers = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--url") == 0) o.url = v;
        else if (strcmp(a, "--key") == 0) o.key = v;
        else if (strcmp(a, "--customers") == 0) customers = strdup(v);
        else if (strcmp(a, "--calls") == 0) o.calls = atoi(v);
        else if (strcmp(a, "--min-seconds") == 0) o.min_seconds = atoi(v);
        else if (strcmp(a, "--max-seconds") == 0) o.max_seconds = atoi(v);
        else if (strcmp(a, "--feature") == 0) o.feature = v;
        else if (strcmp(a, "--event-name") == 0) o.event_name = v;
        else if (strcmp(a, "--rounding") == 0) o.rounding = v;
        else if (strcmp(a, "--seed") == 0) o.seed = (unsigned)atoi(v);
        else return usage();
    }
    if (!o.url || !o.key || !customers || o.calls < 1 || o.calls > 1000 || o.min_seconds < 1 ||
        o.max_seconds < o.min_seconds)
        return usage();
    o.customers = calloc((size_t)o.calls + 1, sizeof *o.customers);
    for (char *save = NULL, *t = strtok_r(customers, ",", &save); t && o.ncustomers < o.calls;
         t = strtok_r(NULL, ",", &save))
        o.customers[o.ncustomers++] = t;
    if (!o.ncustomers)
        return usage();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    call *calls = calloc((size_t)o.calls, sizeof *calls);
    pthread_t *threads = calloc((size_t)o.calls, sizeof *threads);
    srand(o.seed);
    for (int i = 0; i < o.calls; i++) {
        calls[i].o = &o;
        calls[i].customer = o.customers[i % o.ncustomers];
        calls[i].planned = o.min_seconds + rand() % (o.max_seconds - o.min_seconds + 1);
        calls[i].outcome = "refused";
        pthread_create(&threads[i], NULL, run_call, &calls[i]);
    }
    for (int i = 0; i < o.calls; i++)
        pthread_join(threads[i], NULL);
    curl_global_cleanup();
    free(threads);
    free(calls);
    free(o.customers);
    free(customers);
    return 0;
}
