/* metadata.h -- string maps (customer metadata, event payloads): validation, patching and a
 * compact byte encoding for storage ("key\0value\0" repeated, in insertion order). */
#ifndef TG_METADATA_H
#define TG_METADATA_H

#include "base/arena.h"
#include "base/buf.h"
#include "base/err.h"
#include "core/model.h"

/* Checks Stripe's metadata limits: at most 50 keys, keys 1..40 characters without '[' or
 * ']', values at most 500 characters. param names the map ("metadata"). */
int tg_metadata_validate(const tg_metadata *md, const char *param, tg_err *err);

/* Applies patch to base: clear first if asked, then set or remove each key. The result is
 * allocated in a. */
int tg_metadata_apply(const tg_metadata *base, bool clear, const tg_metadata *patch, tg_arena *a,
                      tg_metadata *out);

/* Patches *md (tg_metadata_apply into a) and refuses a result of more than
 * TG_METADATA_KEYS_MAX keys, naming param; *md is unchanged on failure. */
int tg_metadata_merge(tg_metadata *md, bool clear, const tg_metadata *patch, tg_arena *a,
                      const char *param, tg_err *err);

/* Returns the value of key, or NULL. */
const char *tg_metadata_get(const tg_metadata *md, const char *key);

/* Appends the encoding of md to b. */
int tg_metadata_encode(const tg_metadata *md, tg_buf *b);

/* Decodes data[0..len) into out, with strings in a. Returns 0 or -1 on a corrupt blob. */
int tg_metadata_decode(const void *data, size_t len, tg_arena *a, tg_metadata *out);

#endif
