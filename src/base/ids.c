/* ids.c -- random ids and hashing (see ids.h). Rejection sampling keeps base62 uniform. */
#include "base/ids.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* Writes prefix and n base62 characters drawn from random bytes that fill() supplies 32 at a
 * time (fill returns false on failure). */
static int make_id(char *out, size_t outsz, const char *prefix, size_t n,
                   bool (*fill)(unsigned char bytes[32]))
{
    size_t plen = strlen(prefix);
    if (plen + n + 1 > outsz)
        return -1;
    memcpy(out, prefix, plen);
    size_t i = 0;
    while (i < n) {
        unsigned char rnd[32];
        if (!fill(rnd))
            return -1;
        for (size_t j = 0; j < sizeof rnd && i < n; j++)
            if (rnd[j] < 248) /* 248 = 4 * 62: keeps the distribution uniform */
                out[plen + i++] = alphabet[rnd[j] % 62];
    }
    out[plen + n] = '\0';
    return 0;
}

static bool fill_csprng(unsigned char bytes[32])
{
    return RAND_bytes(bytes, 32) == 1;
}

int tg_id_random(char *out, size_t outsz, const char *prefix, size_t n)
{
    return make_id(out, outsz, prefix, n, fill_csprng);
}

/* SHA-256 through a digest context per thread over an algorithm fetched once. EVP_Digest with
 * EVP_sha256() fetches the algorithm from OpenSSL 3's provider on every call, under shared
 * locks and reference counts: measured (1M digests of an API key per thread, bench machine)
 * 311-365 ns a digest on one thread and 1,220-1,470 ns on each of two at once; this way
 * 76-116 ns on one or two. API keys (once a connection: http/server.c), meter event session
 * tokens (every stream request), idempotent requests and their keys are hashed with it. */
static EVP_MD *sha256_md;
static pthread_key_t sha256_ctx_key;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void sha256_init(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (pthread_key_create(&sha256_ctx_key, sha256_ctx_free) && sha256_md) {
        EVP_MD_free(sha256_md);
        sha256_md = NULL;
    }
}

/* The digest by the thread's own context; false when OpenSSL could not provide one. */
static bool sha256_fast(const void *data, size_t len, unsigned char md[32])
{
    pthread_once(&sha256_once, sha256_init);
    if (!sha256_md)
        return false;
    EVP_MD_CTX *ctx = pthread_getspecific(sha256_ctx_key);
    if (!ctx) {
        ctx = EVP_MD_CTX_new();
        if (!ctx || pthread_setspecific(sha256_ctx_key, ctx)) {
            EVP_MD_CTX_free(ctx);
            return false;
        }
    }
    unsigned int mdlen = 0;
    return EVP_DigestInit_ex2(ctx, sha256_md, NULL) && EVP_DigestUpdate(ctx, data, len) &&
           EVP_DigestFinal_ex(ctx, md, &mdlen) && mdlen == 32;
}

static void hex32(const unsigned char md[32], char out[65])
{
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

void tg_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!sha256_fast(data, len, md))
        EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    hex32(md, out);
}

void tg_hmac_sha256_hex(const void *key, size_t key_len, const void *data, size_t len,
                        char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, data, len, md, &mdlen) || mdlen != 32)
        memset(md, 0, sizeof md); /* a signature nobody can verify: the delivery fails */
    hex32(md, out);
}

/* xoshiro256** (Blackman and Vigna), one state per thread. */
static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next_unique(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* xoshiro256** output, from a per-thread state seeded once from the CSPRNG. */
static bool fill_unique(unsigned char bytes[32])
{
    static _Thread_local uint64_t state[4];
    static _Thread_local bool seeded;
    if (!seeded) {
        if (RAND_bytes((unsigned char *)state, sizeof state) != 1)
            return false;
        state[0] |= 1; /* the all-zero state is the one the generator never leaves */
        seeded = true;
    }
    for (int k = 0; k < 4; k++) {
        uint64_t x = next_unique(state);
        memcpy(bytes + 8 * k, &x, 8);
    }
    return true;
}

int tg_id_unique(char *out, size_t outsz, const char *prefix, size_t n)
{
    return make_id(out, outsz, prefix, n, fill_unique);
}
