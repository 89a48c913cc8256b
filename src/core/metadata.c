/* metadata.c -- string maps: limits, patching and storage encoding (see metadata.h).
 * Maps are small (<= 50 keys), so linear scans beat any index here. */
#include "core/metadata.h"

#include <stdio.h>
#include <string.h>

int tg_metadata_validate(const tg_metadata *md, const char *param, tg_err *err)
{
    if (md->n > TG_METADATA_KEYS_MAX)
        return tg_err_set(err, TG_EINVAL, param, "Invalid %s: at most %d keys are allowed.",
                          param, TG_METADATA_KEYS_MAX);
    for (size_t i = 0; i < md->n; i++) {
        const char *k = md->items[i].key, *v = md->items[i].value;
        char p[160];
        snprintf(p, sizeof p, "%s[%s]", param, k);
        if (!*k || strlen(k) > TG_METADATA_KEY_MAX || strpbrk(k, "[]"))
            return tg_err_set(err, TG_EINVAL, p,
                              "Invalid %s key: keys must be 1 to %d characters without brackets.",
                              param, TG_METADATA_KEY_MAX);
        if (v && strlen(v) > TG_METADATA_VALUE_MAX)
            return tg_err_set(err, TG_EINVAL, p, "Invalid %s value: at most %d characters.", param,
                              TG_METADATA_VALUE_MAX);
    }
    return TG_OK;
}

const char *tg_metadata_get(const tg_metadata *md, const char *key)
{
    for (size_t i = 0; i < md->n; i++)
        if (strcmp(md->items[i].key, key) == 0)
            return md->items[i].value;
    return NULL;
}

int tg_metadata_apply(const tg_metadata *base, bool clear, const tg_metadata *patch, tg_arena *a,
                      tg_metadata *out)
{
    size_t cap = (clear ? 0 : base->n) + patch->n;
    out->items = tg_arena_alloc(a, (cap ? cap : 1) * sizeof(tg_kv));
    out->n = 0;
    if (!out->items)
        return TG_ENOMEM;
    if (!clear)
        for (size_t i = 0; i < base->n; i++)
            out->items[out->n++] = base->items[i];
    for (size_t i = 0; i < patch->n; i++) {
        const tg_kv *p = &patch->items[i];
        size_t j = 0;
        while (j < out->n && strcmp(out->items[j].key, p->key) != 0)
            j++;
        if (p->value) {
            if (j == out->n)
                out->n++;
            out->items[j] = *p;
        } else if (j < out->n) {
            memmove(&out->items[j], &out->items[j + 1], (out->n - j - 1) * sizeof(tg_kv));
            out->n--;
        }
    }
    return TG_OK;
}

int tg_metadata_merge(tg_metadata *md, bool clear, const tg_metadata *patch, tg_arena *a,
                      const char *param, tg_err *err)
{
    tg_metadata merged;
    if (tg_metadata_apply(md, clear, patch, a, &merged))
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    if (merged.n > TG_METADATA_KEYS_MAX)
        return tg_err_set(err, TG_EINVAL, param, "Invalid %s: at most %d keys are allowed.",
                          param, TG_METADATA_KEYS_MAX);
    *md = merged;
    return TG_OK;
}

int tg_metadata_encode(const tg_metadata *md, tg_buf *b)
{
    for (size_t i = 0; i < md->n; i++) {
        tg_buf_append(b, md->items[i].key, strlen(md->items[i].key) + 1);
        const char *v = md->items[i].value ? md->items[i].value : "";
        tg_buf_append(b, v, strlen(v) + 1);
    }
    return b->failed ? TG_ENOMEM : TG_OK;
}

int tg_metadata_decode(const void *data, size_t len, tg_arena *a, tg_metadata *out)
{
    const char *p = data, *end = p + len;
    size_t nul = 0;
    for (size_t i = 0; i < len; i++)
        nul += p[i] == '\0';
    if (nul % 2 || (len && p[len - 1] != '\0'))
        return -1;
    out->n = 0;
    out->items = tg_arena_alloc(a, (nul / 2 + 1) * sizeof(tg_kv));
    if (!out->items)
        return -1;
    while (p < end) {
        const char *k = p;
        p += strlen(p) + 1;
        const char *v = p;
        p += strlen(p) + 1;
        out->items[out->n].key = tg_arena_strdup(a, k);
        out->items[out->n].value = tg_arena_strdup(a, v);
        if (!out->items[out->n].key || !out->items[out->n].value)
            return -1;
        out->n++;
    }
    return 0;
}
