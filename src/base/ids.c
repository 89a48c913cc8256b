/* ids.c -- random ids and hashing (see ids.h). Rejection sampling keeps base62 uniform. */
#include "base/ids.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <string.h>

static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

int tg_id_random(char *out, size_t outsz, const char *prefix, size_t n)
{
    size_t plen = strlen(prefix);
    if (plen + n + 1 > outsz)
        return -1;
    memcpy(out, prefix, plen);
    size_t i = 0;
    while (i < n) {
        unsigned char rnd[64];
        if (RAND_bytes(rnd, sizeof rnd) != 1)
            return -1;
        for (size_t j = 0; j < sizeof rnd && i < n; j++)
            if (rnd[j] < 248) /* 248 = 4 * 62: keeps the distribution uniform */
                out[plen + i++] = alphabet[rnd[j] % 62];
    }
    out[plen + n] = '\0';
    return 0;
}

void tg_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
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

int tg_id_unique(char *out, size_t outsz, const char *prefix, size_t n)
{
    static _Thread_local uint64_t state[4];
    static _Thread_local int seeded;
    if (!seeded) {
        if (RAND_bytes((unsigned char *)state, sizeof state) != 1)
            return -1;
        state[0] |= 1; /* the all-zero state is the one the generator never leaves */
        seeded = 1;
    }
    size_t plen = strlen(prefix);
    if (plen + n + 1 > outsz)
        return -1;
    memcpy(out, prefix, plen);
    size_t i = 0;
    while (i < n) {
        uint64_t x = next_unique(state);
        for (int j = 0; j < 8 && i < n; j++, x >>= 8)
            if ((x & 0xff) < 248) /* 248 = 4 * 62: keeps the distribution uniform */
                out[plen + i++] = alphabet[(x & 0xff) % 62];
    }
    out[plen + n] = '\0';
    return 0;
}
