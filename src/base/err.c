/* err.c -- the error table's lookups and the first-error-wins recorder (see err.h). */
#include "base/err.h"

#include <stdio.h>
#include <string.h>

int tg_err_set(tg_err *err, int code, const char *param, const char *fmt, ...)
{
    if (!err || err->code)
        return code;
    err->code = code;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    } else {
        snprintf(err->msg, sizeof err->msg, "%s", tg_strerror(code));
    }
    return code;
}

void tg_err_clear(tg_err *err)
{
    memset(err, 0, sizeof *err);
}

const char *tg_err_reason(int code)
{
    switch (code) {
#define X(name, val, reason, msg) case val: return reason;
        TG_ERRNO_MAP(X)
#undef X
    }
    return "internal_error";
}

const char *tg_strerror(int code)
{
    switch (code) {
    case TG_OK: return "ok";
#define X(name, val, reason, msg) case val: return msg;
        TG_ERRNO_MAP(X)
#undef X
    }
    return "unknown error";
}
