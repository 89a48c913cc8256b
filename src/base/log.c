/* log.c -- stderr logging (see log.h). One fprintf per record keeps lines whole across
 * threads, because stdio locks the stream for the call. */
#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static int min_level = TG_LOG_INFO;

void tg_log_set_level(int level)
{
    min_level = level;
}

void tg_log(int level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    char msg[1024], ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %s %s\n", ts, now.tv_nsec / 1000000, names[level & 3], msg);
}
