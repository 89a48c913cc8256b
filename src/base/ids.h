/* ids.h -- object identifiers and secrets.
 *
 * Ids are a Stripe-style prefix ("cus_", "mtr_") followed by 24 random base62 characters from
 * OpenSSL's CSPRNG: about 143 bits, so collisions are not a practical concern and ids reveal
 * nothing about order or volume. Secret keys use the same alphabet with 32 characters.
 */
#ifndef TG_IDS_H
#define TG_IDS_H

#include <stddef.h>

#define TG_ID_MAX 64 /* enough for any prefix + tail + NUL */

/* Writes prefix followed by n random base62 characters into out (size outsz).
 * Returns 0, or -1 when the CSPRNG fails or out is too small. */
int tg_id_random(char *out, size_t outsz, const char *prefix, size_t n);

/* Like tg_id_random, for ids that must be unique but need not be unpredictable (request ids):
 * a per-thread xoshiro256** stream seeded once from the CSPRNG. It costs a few nanoseconds
 * where the CSPRNG costs a system call (OpenSSL checks for a fork on every call). */
int tg_id_unique(char *out, size_t outsz, const char *prefix, size_t n);

/* Writes the lowercase hex SHA-256 of data[0..len) into out (65 bytes). */
void tg_sha256_hex(const void *data, size_t len, char out[65]);

/* Writes the lowercase hex HMAC-SHA256 of data[0..len) under key into out (65 bytes): how
 * webhook deliveries are signed. */
void tg_hmac_sha256_hex(const void *key, size_t key_len, const void *data, size_t len,
                        char out[65]);

#endif
