/* ids.c -- random ids and hashing (see ids.h). Rejection sampling keeps base62 uniform. */
#include "base/ids.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
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
