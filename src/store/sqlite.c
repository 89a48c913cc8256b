/* sqlite.c -- the embedded storage adapter: one SQLite database in WAL mode.
 *
 * Durability: journal_mode=WAL with synchronous=FULL, so a COMMIT returns only after the WAL
 * is fsync'd; the service acknowledges a write only after its commit returns. Every
 * connection keeps its prepared statements in a table indexed by an enum, prepared on first
 * use. Migrations are numbered and applied in one transaction at open, guarded by
 * PRAGMA user_version, so concurrent opens of a fresh directory are safe (BEGIN IMMEDIATE).
 *
 * Layout: objects keep a rowid `seq` that orders lists (newest first = seq DESC) and stays
 * stable across updates (upserts use ON CONFLICT DO UPDATE, never REPLACE). Decimals are 16-byte
 * little-endian blobs (see core/decimal.h); string maps use core/metadata.h's encoding. Buckets
 * and windows are keyed by meter id, which is unique across scopes.
 */
#include "store/sqlite.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/metadata.h"

static const char *const migrations[] = {
    /* 1: the metering foundation */
    "CREATE TABLE settings(name TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE api_keys(hash TEXT PRIMARY KEY, account TEXT NOT NULL, livemode INT NOT NULL,"
    "  prefix TEXT NOT NULL, created INT NOT NULL, revoked INT NOT NULL DEFAULT 0);"
    "CREATE TABLE customers(seq INTEGER PRIMARY KEY, account TEXT NOT NULL, livemode INT NOT NULL,"
    "  id TEXT NOT NULL, created INT NOT NULL, deleted INT NOT NULL DEFAULT 0, email TEXT,"
    "  name TEXT, description TEXT, metadata BLOB, UNIQUE(account, livemode, id));"
    "CREATE TABLE meters(seq INTEGER PRIMARY KEY, account TEXT NOT NULL, livemode INT NOT NULL,"
    "  id TEXT NOT NULL, created INT NOT NULL, updated INT NOT NULL, active INT NOT NULL,"
    "  deactivated_at INT NOT NULL, formula INT NOT NULL, event_time_window INT NOT NULL,"
    "  display_name TEXT NOT NULL, event_name TEXT NOT NULL, customer_key TEXT NOT NULL,"
    "  value_key TEXT NOT NULL, UNIQUE(account, livemode, id));"
    "CREATE TABLE events(seq INTEGER PRIMARY KEY, account TEXT NOT NULL, livemode INT NOT NULL,"
    "  identifier TEXT NOT NULL, event_name TEXT NOT NULL, meter_id TEXT NOT NULL,"
    "  customer_id TEXT NOT NULL, meter_seq INT NOT NULL, customer_seq INT NOT NULL,"
    "  ts INT NOT NULL, created INT NOT NULL, value BLOB NOT NULL,"
    "  payload BLOB NOT NULL, state INT NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX events_identifier ON events(account, livemode, identifier);"
    "CREATE INDEX events_meter_customer_ts ON events(meter_seq, customer_seq, ts);"
    "CREATE TABLE event_blocks(seq INTEGER PRIMARY KEY, account TEXT NOT NULL,"
    "  livemode INT NOT NULL, created INT NOT NULL, count INT NOT NULL, data BLOB NOT NULL);"
    "CREATE TABLE cancellations(id INTEGER PRIMARY KEY, block INT NOT NULL, idx INT NOT NULL,"
    "  created INT NOT NULL, UNIQUE(block, idx));"
    "CREATE TABLE buckets(meter_seq INT NOT NULL, customer_seq INT NOT NULL, minute INT NOT NULL,"
    "  sum BLOB NOT NULL, count INT NOT NULL, last_ts INT NOT NULL, last_seq INT NOT NULL,"
    "  last_value BLOB NOT NULL, PRIMARY KEY(meter_seq, customer_seq, minute)) WITHOUT ROWID;"
    "CREATE TABLE day_pages(meter_seq INT NOT NULL, customer_seq INT NOT NULL, day INT NOT NULL,"
    "  through_block INT NOT NULL, through_cancel INT NOT NULL, data BLOB NOT NULL,"
    "  PRIMARY KEY(meter_seq, customer_seq, day)) WITHOUT ROWID;"
    "CREATE TABLE windows(meter_seq INT NOT NULL, customer_seq INT NOT NULL, start INT NOT NULL,"
    "  seq INT NOT NULL, ts INT NOT NULL, PRIMARY KEY(meter_seq, customer_seq, start))"
    "  WITHOUT ROWID;"
    "CREATE TABLE idempotency(account TEXT NOT NULL, livemode INT NOT NULL, key TEXT NOT NULL,"
    "  request_hash TEXT NOT NULL, status INT NOT NULL, body BLOB NOT NULL, created INT NOT NULL,"
    "  PRIMARY KEY(account, livemode, key));"
    "CREATE INDEX idempotency_created ON idempotency(created);"
    "CREATE TABLE sessions(token_hash TEXT PRIMARY KEY, account TEXT NOT NULL,"
    "  livemode INT NOT NULL, id TEXT NOT NULL, created INT NOT NULL, expires_at INT NOT NULL);"
    "CREATE TABLE meter_errors(seq INTEGER PRIMARY KEY, account TEXT NOT NULL,"
    "  livemode INT NOT NULL, id TEXT NOT NULL, meter_id TEXT NOT NULL, code TEXT NOT NULL,"
    "  count INT NOT NULL, last_message TEXT NOT NULL, last_seen INT NOT NULL,"
    "  UNIQUE(account, livemode, meter_id, code));",
    /* 2: billing objects; customers gain a test clock and a default payment method */
    "ALTER TABLE customers ADD COLUMN test_clock TEXT;"
    "ALTER TABLE customers ADD COLUMN default_payment_method TEXT;"
    "CREATE TABLE objects(seq INTEGER PRIMARY KEY, account TEXT NOT NULL, livemode INT NOT NULL,"
    "  kind TEXT NOT NULL, id TEXT NOT NULL, created INT NOT NULL, customer TEXT, parent TEXT,"
    "  lookup TEXT, clock TEXT, tags TEXT, active INT NOT NULL, due INT NOT NULL,"
    "  body BLOB NOT NULL,"
    "  UNIQUE(account, livemode, kind, id));"
    "CREATE INDEX objects_kind ON objects(account, livemode, kind, seq);"
    "CREATE INDEX objects_customer ON objects(account, livemode, kind, customer, seq)"
    "  WHERE customer IS NOT NULL;"
    "CREATE INDEX objects_parent ON objects(account, livemode, kind, parent, seq)"
    "  WHERE parent IS NOT NULL;"
    "CREATE INDEX objects_due ON objects(clock, due) WHERE due > 0;",
    /* 3: spilled live usage */
    "CREATE TABLE spills(shard INT NOT NULL, meter_seq INT NOT NULL, customer_seq INT NOT NULL,"
    "  seq INT NOT NULL, through_block INT NOT NULL, through_cancel INT NOT NULL,"
    "  data BLOB NOT NULL, PRIMARY KEY(shard, meter_seq, customer_seq, seq)) WITHOUT ROWID;",
    /* 4: a session remembers the key that made it (NULL before), and dies with its revocation */
    "ALTER TABLE sessions ADD COLUMN key_hash TEXT;",
    /* 5: a customer's phone, address and shipping (a map, encoded as metadata) */
    "ALTER TABLE customers ADD COLUMN contact BLOB;",
    /* 6: the queue of webhook deliveries */
    "CREATE TABLE webhook_deliveries(seq INTEGER PRIMARY KEY, account TEXT NOT NULL,"
    "  livemode INT NOT NULL, endpoint TEXT NOT NULL, event TEXT NOT NULL,"
    "  attempts INT NOT NULL, created INT NOT NULL, due INT NOT NULL);"
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries(due, seq);"
    "CREATE INDEX webhook_deliveries_event ON webhook_deliveries(account, livemode, event);"
    "CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(account, livemode,"
    "  endpoint);",
    /* 7: list pages of customers, meters and meter errors read in their scope's row order, and
     * customers by email; without these, each page read and sorted every row of the scope */
    "CREATE INDEX customers_scope ON customers(account, livemode, seq);"
    "CREATE INDEX meters_scope ON meters(account, livemode, seq);"
    "CREATE INDEX meter_errors_scope ON meter_errors(account, livemode, seq);"
    "CREATE INDEX customers_email ON customers(account, livemode, email, seq);",
};

enum {
    Q_BEGIN, Q_BEGIN_READ, Q_COMMIT, Q_ROLLBACK, Q_SAVEPOINT, Q_RELEASE, Q_ROLLBACK_TO,
    Q_SETTING_GET, Q_SETTING_PUT, Q_KEY_INSERT, Q_KEY_LOOKUP, Q_KEY_REVOKE,
    Q_CUSTOMER_PUT, Q_CUSTOMER_GET, Q_CUSTOMER_SEQ, Q_CUSTOMER_EACH,
    Q_METER_PUT, Q_METER_GET, Q_METER_SEQ, Q_METER_EACH,
    Q_EVENT_INSERT, Q_EVENT_GET, Q_EVENT_STATE, Q_EVENT_RANGE,
    Q_EVENT_IDENTS, Q_BLOCK_APPEND, Q_BLOCK_GET, Q_BLOCK_EACH, Q_CANCEL_PUT, Q_CANCEL_EACH,
    Q_BUCKET_GET, Q_BUCKET_PUT, Q_BUCKET_DEL, Q_BUCKET_EACH,
    Q_WINDOW_GET, Q_WINDOW_PUT, Q_DAY_GET, Q_DAY_PUT, Q_DAY_EACH, Q_DAY_MARKS,
    Q_SPILL_PUT, Q_SPILL_PAIR, Q_SPILL_SHARD, Q_SPILL_MARKS, Q_SPILL_DELETE,
    Q_IDEM_GET, Q_IDEM_PUT, Q_SESSION_PUT, Q_SESSION_GET,
    Q_MERR_ADD, Q_MERR_SEQ, Q_PRUNE_IDEM, Q_PRUNE_SESSIONS,
    Q_OBJ_PUT, Q_OBJ_GET, Q_OBJ_DELETE, Q_OBJ_DUE, Q_OBJ_DUE_CLOCK,
    Q_DLV_ADD, Q_DLV_DUE, Q_DLV_SET, Q_DLV_DELETE, Q_DLV_DELETE_ENDPOINT, Q_DLV_COUNT,
    Q_COUNT
};

#define CUSTOMER_COLS                                                                        \
    "id,created,deleted,email,name,description,metadata,seq,test_clock,default_payment_method," \
    "contact"
#define OBJ_COLS "account,livemode,kind,id,created,customer,parent,lookup,clock,active,due,body,seq"

static const char *const sql[Q_COUNT] = {
    [Q_BEGIN] = "BEGIN IMMEDIATE",
    [Q_BEGIN_READ] = "BEGIN",
    [Q_COMMIT] = "COMMIT",
    [Q_ROLLBACK] = "ROLLBACK",
    [Q_SAVEPOINT] = "SAVEPOINT job",
    [Q_RELEASE] = "RELEASE job",
    [Q_ROLLBACK_TO] = "ROLLBACK TO job",
    [Q_SETTING_GET] = "SELECT value FROM settings WHERE name=?1",
    [Q_SETTING_PUT] = "INSERT INTO settings(name,value) VALUES(?1,?2)"
                      " ON CONFLICT(name) DO UPDATE SET value=excluded.value",
    [Q_KEY_INSERT] = "INSERT INTO api_keys(hash,account,livemode,prefix,created) VALUES(?1,?2,?3,?4,?5)",
    [Q_KEY_LOOKUP] = "SELECT account, livemode FROM api_keys WHERE hash=?1 AND revoked=0",
    [Q_KEY_REVOKE] = "UPDATE api_keys SET revoked=?2 WHERE hash=?1 AND revoked=0",
    [Q_CUSTOMER_PUT] =
        "INSERT INTO customers(account,livemode,id,created,deleted,email,name,description,metadata,"
        "test_clock,default_payment_method,contact)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"
        " ON CONFLICT(account,livemode,id) DO UPDATE SET"
        " deleted=excluded.deleted, email=excluded.email, name=excluded.name,"
        " description=excluded.description, metadata=excluded.metadata,"
        " default_payment_method=excluded.default_payment_method, contact=excluded.contact",
    [Q_CUSTOMER_GET] = "SELECT " CUSTOMER_COLS " FROM customers"
                       " WHERE account=?1 AND livemode=?2 AND id=?3",
    [Q_CUSTOMER_SEQ] = "SELECT seq FROM customers WHERE account=?1 AND livemode=?2 AND id=?3",
    [Q_CUSTOMER_EACH] = "SELECT account, livemode, seq, id, deleted, test_clock FROM customers"
                        " ORDER BY seq",
    [Q_METER_PUT] =
        "INSERT INTO meters(account,livemode,id,created,updated,active,deactivated_at,formula,"
        "event_time_window,display_name,event_name,customer_key,value_key)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13) ON CONFLICT(account,livemode,id)"
        " DO UPDATE SET updated=excluded.updated, active=excluded.active,"
        " deactivated_at=excluded.deactivated_at, display_name=excluded.display_name",
    [Q_METER_GET] = "SELECT id,created,updated,active,deactivated_at,formula,event_time_window,"
                    "display_name,event_name,customer_key,value_key,livemode,seq FROM meters"
                    " WHERE account=?1 AND livemode=?2 AND id=?3",
    [Q_METER_SEQ] = "SELECT seq FROM meters WHERE account=?1 AND livemode=?2 AND id=?3",
    [Q_METER_EACH] = "SELECT id,created,updated,active,deactivated_at,formula,event_time_window,"
                     "display_name,event_name,customer_key,value_key,livemode,seq,account"
                     " FROM meters"
                     " ORDER BY seq",
    [Q_EVENT_INSERT] =
        "INSERT INTO events(account,livemode,identifier,event_name,meter_id,customer_id,ts,"
        "created,value,payload,meter_seq,customer_seq)"
        " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"
        " ON CONFLICT(account,livemode,identifier) DO NOTHING",
    [Q_EVENT_GET] = "SELECT seq,identifier,event_name,meter_id,customer_id,ts,created,value,"
                    "payload,state,meter_seq,customer_seq FROM events"
                    " WHERE account=?1 AND livemode=?2 AND identifier=?3",
    [Q_EVENT_STATE] = "UPDATE events SET state=?3 WHERE seq=?1 AND state=?2",
    [Q_EVENT_RANGE] = "SELECT ts,seq,value FROM events WHERE meter_seq=?1 AND customer_seq=?2"
                      " AND ts>=?3 AND ts<?4 AND state=0",
    [Q_EVENT_IDENTS] = "SELECT account,livemode,identifier FROM events",
    [Q_BLOCK_APPEND] = "INSERT INTO event_blocks(account,livemode,created,count,data)"
                       " VALUES(?1,?2,?3,?4,?5)",
    [Q_BLOCK_GET] = "SELECT account,livemode,created,data FROM event_blocks WHERE seq=?1",
    [Q_BLOCK_EACH] = "SELECT seq,account,livemode,created,data FROM event_blocks WHERE seq>?1"
                     " ORDER BY seq",
    [Q_CANCEL_PUT] = "INSERT INTO cancellations(block,idx,created) VALUES(?1,?2,?3)"
                     " ON CONFLICT(block,idx) DO NOTHING",
    [Q_CANCEL_EACH] = "SELECT id,block,idx FROM cancellations WHERE id>?1 ORDER BY id",
    [Q_BUCKET_GET] = "SELECT sum,count,last_ts,last_seq,last_value FROM buckets"
                     " WHERE meter_seq=?1 AND customer_seq=?2 AND minute=?3",
    [Q_BUCKET_PUT] = "INSERT INTO buckets(meter_seq,customer_seq,minute,sum,count,last_ts,last_seq,"
                     "last_value) VALUES(?1,?2,?3,?4,?5,?6,?7,?8)"
                     " ON CONFLICT(meter_seq,customer_seq,minute) DO UPDATE SET sum=excluded.sum,"
                     " count=excluded.count, last_ts=excluded.last_ts,"
                     " last_seq=excluded.last_seq, last_value=excluded.last_value",
    [Q_BUCKET_DEL] = "DELETE FROM buckets WHERE meter_seq=?1 AND customer_seq=?2 AND minute=?3",
    [Q_BUCKET_EACH] = "SELECT minute,sum,count,last_ts,last_seq,last_value FROM buckets"
                      " WHERE meter_seq=?1 AND customer_seq=?2 AND minute>=?3 AND minute<?4"
                      " ORDER BY minute DESC",
    [Q_DAY_GET] = "SELECT data FROM day_pages WHERE meter_seq=?1 AND customer_seq=?2 AND day=?3",
    [Q_DAY_PUT] = "INSERT INTO day_pages(meter_seq,customer_seq,day,through_block,through_cancel,"
                  "data) VALUES(?1,?2,?3,?4,?5,?6) ON CONFLICT(meter_seq,customer_seq,day)"
                  " DO UPDATE SET data=excluded.data, through_block=excluded.through_block,"
                  " through_cancel=excluded.through_cancel",
    [Q_DAY_MARKS] = "SELECT meter_seq,customer_seq,day,through_block,through_cancel FROM day_pages",
    [Q_DAY_EACH] = "SELECT day,data FROM day_pages WHERE meter_seq=?1 AND customer_seq=?2"
                   " AND day>=?3 AND day<?4 ORDER BY day DESC",
    [Q_SPILL_PUT] = "INSERT INTO spills(shard,meter_seq,customer_seq,seq,through_block,"
                    "through_cancel,data) VALUES(?1,?2,?3,?4,?5,?6,?7)",
    [Q_SPILL_PAIR] = "SELECT shard,meter_seq,customer_seq,seq,through_block,through_cancel,data"
                     " FROM spills WHERE shard=?1 AND meter_seq=?2 AND customer_seq=?3"
                     " ORDER BY seq",
    [Q_SPILL_SHARD] = "SELECT shard,meter_seq,customer_seq,seq,through_block,through_cancel,data"
                      " FROM spills WHERE shard=?1 ORDER BY meter_seq,customer_seq,seq",
    [Q_SPILL_MARKS] = "SELECT shard,meter_seq,customer_seq,seq,through_block,through_cancel"
                      " FROM spills",
    [Q_SPILL_DELETE] = "DELETE FROM spills WHERE shard=?1",
    [Q_WINDOW_GET] = "SELECT seq,ts FROM windows WHERE meter_seq=?1 AND customer_seq=?2"
                     " AND start=?3",
    [Q_WINDOW_PUT] = "INSERT INTO windows(meter_seq,customer_seq,start,seq,ts)"
                     " VALUES(?1,?2,?3,?4,?5)"
                     " ON CONFLICT(meter_seq,customer_seq,start) DO UPDATE SET seq=excluded.seq,"
                     " ts=excluded.ts",
    [Q_IDEM_GET] = "SELECT request_hash,status,body,created FROM idempotency"
                   " WHERE account=?1 AND livemode=?2 AND key=?3",
    [Q_IDEM_PUT] = "INSERT INTO idempotency(account,livemode,key,request_hash,status,body,created)"
                   " VALUES(?1,?2,?3,?4,?5,?6,?7) ON CONFLICT(account,livemode,key) DO UPDATE SET"
                   " request_hash=excluded.request_hash, status=excluded.status,"
                   " body=excluded.body, created=excluded.created",
    [Q_SESSION_PUT] = "INSERT INTO sessions(token_hash,account,livemode,id,created,expires_at,"
                      "key_hash) VALUES(?1,?2,?3,?4,?5,?6,?7)",
    [Q_SESSION_GET] = "SELECT account,livemode,expires_at FROM sessions s WHERE token_hash=?1"
                      " AND (key_hash IS NULL OR EXISTS(SELECT 1 FROM api_keys k"
                      " WHERE k.hash=s.key_hash AND k.revoked=0))",
    [Q_MERR_ADD] = "INSERT INTO meter_errors(account,livemode,id,meter_id,code,count,last_message,"
                   "last_seen) VALUES(?1,?2,?3,?4,?5,?6,?7,?8)"
                   " ON CONFLICT(account,livemode,meter_id,code) DO UPDATE SET"
                   " count=count+excluded.count, last_message=excluded.last_message,"
                   " last_seen=excluded.last_seen",
    [Q_MERR_SEQ] = "SELECT seq FROM meter_errors WHERE account=?1 AND livemode=?2 AND id=?3",
    [Q_PRUNE_IDEM] = "DELETE FROM idempotency WHERE created<?1",
    [Q_PRUNE_SESSIONS] = "DELETE FROM sessions WHERE expires_at<?1",
    [Q_OBJ_PUT] = "INSERT INTO objects(account,livemode,kind,id,created,customer,parent,lookup,"
                  "clock,active,due,body,tags) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)"
                  " ON CONFLICT(account,livemode,kind,id) DO UPDATE SET customer=excluded.customer,"
                  " parent=excluded.parent, lookup=excluded.lookup, clock=excluded.clock,"
                  " active=excluded.active, due=excluded.due, body=excluded.body,"
                  " tags=excluded.tags",
    [Q_OBJ_GET] = "SELECT " OBJ_COLS " FROM objects WHERE account=?1 AND livemode=?2 AND kind=?3"
                  " AND id=?4",
    [Q_OBJ_DELETE] = "DELETE FROM objects WHERE account=?1 AND livemode=?2 AND kind=?3 AND id=?4",
    [Q_OBJ_DUE] = "SELECT " OBJ_COLS " FROM objects WHERE clock IS NULL AND due>0 AND due<=?1"
                  " ORDER BY due, seq LIMIT ?2",
    [Q_OBJ_DUE_CLOCK] = "SELECT " OBJ_COLS " FROM objects WHERE clock=?3 AND due>0 AND due<=?1"
                        " ORDER BY due, seq LIMIT ?2",
    [Q_DLV_ADD] = "INSERT INTO webhook_deliveries(account,livemode,endpoint,event,attempts,created,"
                  "due) VALUES(?1,?2,?3,?4,?5,?6,?7)",
    [Q_DLV_DUE] = "SELECT account,livemode,seq,endpoint,event,attempts,created,due"
                  " FROM webhook_deliveries WHERE due<=?1 ORDER BY due, seq LIMIT ?2",
    [Q_DLV_SET] = "UPDATE webhook_deliveries SET attempts=?2, due=?3 WHERE seq=?1",
    [Q_DLV_DELETE] = "DELETE FROM webhook_deliveries WHERE account=?1 AND livemode=?2 AND seq=?3",
    [Q_DLV_DELETE_ENDPOINT] = "DELETE FROM webhook_deliveries WHERE account=?1 AND livemode=?2"
                              " AND endpoint=?3",
    [Q_DLV_COUNT] = "SELECT count(*) FROM webhook_deliveries WHERE account=?1 AND livemode=?2"
                    " AND event=?3",
};

/* List pages are built per filter (page_query); the connection keeps the last few prepared,
 * by their text, as it keeps the fixed statements. */
#define PAGE_STMTS 16

typedef struct sq_store {
    tg_store base; /* must be first */
    sqlite3 *db;
    sqlite3_stmt *stmts[Q_COUNT];
    struct page_stmt {
        char *sql;
        sqlite3_stmt *st;
        uint64_t used; /* page_tick at its last use: the least recent is replaced */
    } pages[PAGE_STMTS];
    uint64_t page_tick;
} sq_store;

#define SQ(s) ((sq_store *)(s))

static int db_error(sq_store *s, tg_err *err, const char *what)
{
    return tg_err_set(err, TG_ESTORE, NULL, "Storage failure (%s): %s", what,
                      sqlite3_errmsg(s->db));
}

/* Returns the prepared, reset statement q, or NULL (err set). */
static sqlite3_stmt *stmt(sq_store *s, int q, tg_err *err)
{
    sqlite3_stmt *st = s->stmts[q];
    if (!st) {
        if (sqlite3_prepare_v3(s->db, sql[q], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
            SQLITE_OK) {
            db_error(s, err, "prepare");
            return NULL;
        }
        s->stmts[q] = st;
    } else {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    return st;
}

static void bind_scope(sqlite3_stmt *st, const tg_scope *scope)
{
    sqlite3_bind_text(st, 1, scope->account, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, scope->livemode);
}

static void bind_opt_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void bind_dec(sqlite3_stmt *st, int i, tg_dec d, unsigned char tmp[16])
{
    tg_dec_to_bytes(d, tmp);
    sqlite3_bind_blob(st, i, tmp, 16, SQLITE_STATIC);
}

static tg_dec column_dec(sqlite3_stmt *st, int i)
{
    if (sqlite3_column_bytes(st, i) != 16)
        return 0;
    return tg_dec_from_bytes(sqlite3_column_blob(st, i));
}

static char *column_text(sqlite3_stmt *st, int i, tg_arena *a)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return NULL;
    return tg_arena_strndup(a, (const char *)sqlite3_column_text(st, i),
                            (size_t)sqlite3_column_bytes(st, i));
}

static void copy_text(char *dst, size_t dstsz, sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(dst, dstsz, "%s", t ? (const char *)t : "");
}

/* Runs a statement that returns no rows. */
static int exec_done(sq_store *s, sqlite3_stmt *st, tg_err *err, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return db_error(s, err, what);
    return TG_OK;
}

static int exec_q(tg_store *base, int q, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, q, err);
    if (!st)
        return TG_ESTORE;
    return exec_done(s, st, err, sql[q]);
}

/* Steps a lookup that returns at most one row: TG_OK with the row current (the caller reads
 * it, then resets st), TG_ENOTFOUND with st reset (nothing recorded in err: callers decide
 * whether absence is an error), or TG_ESTORE. */
static int step_row(sq_store *s, sqlite3_stmt *st, tg_err *err, const char *what)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return TG_OK;
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TG_ENOTFOUND : db_error(s, err, what);
}

/* ---------------------------------------------------------------- transactions */

static int sq_begin(tg_store *s, tg_err *err) { return exec_q(s, Q_BEGIN, err); }
static int sq_read_begin(tg_store *s, tg_err *err) { return exec_q(s, Q_BEGIN_READ, err); }
static int sq_commit(tg_store *s, tg_err *err) { return exec_q(s, Q_COMMIT, err); }
static int sq_savepoint(tg_store *s, tg_err *err) { return exec_q(s, Q_SAVEPOINT, err); }
static int sq_release(tg_store *s, tg_err *err) { return exec_q(s, Q_RELEASE, err); }

static void sq_rollback(tg_store *s)
{
    tg_err ignore = {0};
    if (sqlite3_get_autocommit(SQ(s)->db) == 0)
        exec_q(s, Q_ROLLBACK, &ignore);
}

static void sq_rollback_to(tg_store *s)
{
    tg_err ignore = {0};
    exec_q(s, Q_ROLLBACK_TO, &ignore);
    exec_q(s, Q_RELEASE, &ignore);
}

/* ---------------------------------------------------------------- settings and keys */

static int sq_setting_get(tg_store *base, const char *name, tg_arena *a, char **value, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_SETTING_GET, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return tg_err_set(err, TG_ENOTFOUND, NULL, "No such setting: %s", name);
    if (rc != SQLITE_ROW)
        return db_error(s, err, "setting_get");
    *value = column_text(st, 0, a);
    sqlite3_reset(st);
    return *value ? TG_OK : TG_ENOMEM;
}

static int sq_setting_put(tg_store *base, const char *name, const char *value, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_SETTING_PUT, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    return exec_done(s, st, err, "setting_put");
}

static int sq_key_insert(tg_store *base, const char *hash, const tg_scope *scope,
                         const char *prefix, int64_t created, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_KEY_INSERT, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, scope->account, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, scope->livemode);
    sqlite3_bind_text(st, 4, prefix, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, created);
    return exec_done(s, st, err, "key_insert");
}

static int sq_key_lookup(tg_store *base, const char *hash, tg_scope *scope_out, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_KEY_LOOKUP, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    int rc = step_row(s, st, err, "key_lookup");
    if (rc == TG_ENOTFOUND)
        return tg_err_set(err, TG_EAUTHINVALID, NULL, "Invalid API Key provided.");
    if (rc)
        return rc;
    copy_text(scope_out->account, sizeof scope_out->account, st, 0);
    scope_out->livemode = sqlite3_column_int(st, 1) != 0;
    sqlite3_reset(st);
    return TG_OK;
}

static int sq_key_revoke(tg_store *base, const char *hash, int64_t now, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_KEY_REVOKE, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now > 0 ? now : 1); /* nonzero: 0 means active */
    int rc = exec_done(s, st, err, "key_revoke");
    if (!rc && sqlite3_changes(s->db) == 0)
        return tg_err_set(err, TG_ENOTFOUND, NULL, "No active API key matches.");
    return rc;
}

/* ---------------------------------------------------------------- lists */

/* Resolves page cursors to seq bounds: rows with lo < seq < hi. Returns TG_ENOTFOUND (naming
 * the cursor) when a cursor id is not in scope. */
static int page_bounds(sq_store *s, int seq_q, const tg_scope *scope, const tg_page *page,
                       int64_t *lo, int64_t *hi, tg_err *err)
{
    *lo = 0;
    *hi = page->before_seq > 0 ? page->before_seq : INT64_MAX;
    const char *cursor = page->starting_after ? page->starting_after : page->ending_before;
    if (!cursor)
        return TG_OK;
    sqlite3_stmt *st = stmt(s, seq_q, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, cursor, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return db_error(s, err, "cursor");
        const char *p = page->starting_after ? "starting_after" : "ending_before";
        return tg_err_set(err, TG_ENOTFOUND, p, "No such object: '%s'", cursor);
    }
    int64_t seq = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (page->starting_after)
        *hi = seq < *hi ? seq : *hi;
    else
        *lo = seq;
    return TG_OK;
}

/* Prepares "SELECT cols FROM table WHERE scope AND extra AND seq in (lo,hi) ORDER .. LIMIT"
 * for a page: newest first, or oldest first for ending_before (the caller reverses). The SQL
 * is built per filter, which keeps filters composable, and the connection keeps the last
 * PAGE_STMTS of them prepared by their text (a created filter's bounds are in the text, so
 * each new range is a new statement). */
static sqlite3_stmt *page_query(sq_store *s, const char *cols, const char *table,
                                const char *extra, const tg_scope *scope, const tg_page *page,
                                int64_t lo, int64_t hi, tg_err *err)
{
    char q[1024];
    bool asc = page->ending_before != NULL;
    snprintf(q, sizeof q,
             "SELECT %s FROM %s WHERE account=?1 AND livemode=?2 AND seq>?3 AND seq<?4 %s"
             " ORDER BY seq %s LIMIT ?5",
             cols, table, extra, asc ? "ASC" : "DESC");
    struct page_stmt *slot = &s->pages[0];
    for (size_t i = 0; i < PAGE_STMTS; i++) {
        struct page_stmt *p = &s->pages[i];
        if (p->sql && strcmp(p->sql, q) == 0) {
            slot = p;
            break;
        }
        if (p->used < slot->used)
            slot = p;
    }
    if (!slot->sql || strcmp(slot->sql, q) != 0) {
        sqlite3_finalize(slot->st);
        free(slot->sql);
        slot->st = NULL;
        if (!(slot->sql = strdup(q))) {
            tg_err_set(err, TG_ENOMEM, NULL, NULL);
            return NULL;
        }
        if (sqlite3_prepare_v3(s->db, q, -1, SQLITE_PREPARE_PERSISTENT, &slot->st, NULL) !=
            SQLITE_OK) {
            free(slot->sql);
            slot->sql = NULL;
            db_error(s, err, "list");
            return NULL;
        }
    }
    slot->used = ++s->page_tick;
    sqlite3_stmt *st = slot->st;
    bind_scope(st, scope);
    sqlite3_bind_int64(st, 3, lo);
    sqlite3_bind_int64(st, 4, hi);
    sqlite3_bind_int(st, 5, page->limit + 1);
    return st;
}

/* Puts back a statement of page_query, for its next use. */
static void page_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Reverses n items of size sz in place (ending_before pages are read oldest first). When
 * more than limit rows came back, the extra one is the farthest from the cursor: for
 * ending_before it is the last read, i.e. the newest, and the page keeps the `limit` rows
 * nearest the cursor. */
static void reverse_items(void *items, size_t n, size_t sz)
{
    char tmp[sizeof(tg_meter) > sizeof(tg_customer) ? sizeof(tg_meter) : sizeof(tg_customer)];
    char *p = items;
    if (sz > sizeof tmp)
        return;
    for (size_t i = 0, j = n ? n - 1 : 0; i < j; i++, j--) {
        memcpy(tmp, p + i * sz, sz);
        memcpy(p + i * sz, p + j * sz, sz);
        memcpy(p + j * sz, tmp, sz);
    }
}

/* ---------------------------------------------------------------- customers */

static int sq_customer_put(tg_store *base, const tg_scope *scope, tg_customer *c, tg_err *err)
{
    sq_store *s = SQ(base);
    tg_buf md, contact;
    tg_buf_init(&md, 1 << 20);
    tg_buf_init(&contact, 1 << 20);
    int rc = tg_metadata_encode(&c->metadata, &md) || tg_metadata_encode(&c->contact, &contact)
                 ? tg_err_set(err, TG_ENOMEM, NULL, NULL)
                 : TG_OK;
    sqlite3_stmt *st = rc ? NULL : stmt(s, Q_CUSTOMER_PUT, err);
    if (!st) {
        tg_buf_free(&md);
        tg_buf_free(&contact);
        return rc ? rc : TG_ESTORE;
    }
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, c->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, c->created);
    sqlite3_bind_int(st, 5, c->deleted);
    bind_opt_text(st, 6, c->email);
    bind_opt_text(st, 7, c->name);
    bind_opt_text(st, 8, c->description);
    sqlite3_bind_blob(st, 9, md.data ? md.data : "", (int)md.len, SQLITE_STATIC);
    bind_opt_text(st, 10, c->test_clock[0] ? c->test_clock : NULL);
    bind_opt_text(st, 11, c->default_payment_method);
    if (c->contact.n)
        sqlite3_bind_blob(st, 12, contact.data, (int)contact.len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 12);
    rc = exec_done(s, st, err, "customer_put");
    tg_buf_free(&md);
    tg_buf_free(&contact);
    if (!rc && !c->seq)
        c->seq = sqlite3_last_insert_rowid(s->db);
    return rc;
}

static int read_customer(sqlite3_stmt *st, const tg_scope *scope, tg_arena *a, tg_customer *c)
{
    memset(c, 0, sizeof *c);
    copy_text(c->id, sizeof c->id, st, 0);
    c->created = sqlite3_column_int64(st, 1);
    c->deleted = sqlite3_column_int(st, 2) != 0;
    c->email = column_text(st, 3, a);
    c->name = column_text(st, 4, a);
    c->description = column_text(st, 5, a);
    c->livemode = scope->livemode;
    c->seq = sqlite3_column_int64(st, 7);
    copy_text(c->test_clock, sizeof c->test_clock, st, 8);
    c->default_payment_method = column_text(st, 9, a);
    if (tg_metadata_decode(sqlite3_column_blob(st, 10), (size_t)sqlite3_column_bytes(st, 10), a,
                           &c->contact))
        return -1;
    return tg_metadata_decode(sqlite3_column_blob(st, 6), (size_t)sqlite3_column_bytes(st, 6), a,
                              &c->metadata);
}

static int sq_customer_get(tg_store *base, const tg_scope *scope, const char *id, tg_arena *a,
                           tg_customer *out, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_CUSTOMER_GET, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
    int rc = step_row(s, st, err, "customer_get");
    if (rc == TG_ENOTFOUND)
        return tg_err_set(err, TG_ENOTFOUND, "id", "No such customer: '%s'", id);
    if (rc)
        return rc;
    rc = read_customer(st, scope, a, out);
    sqlite3_reset(st);
    return rc ? tg_err_set(err, TG_ESTORE, NULL, "corrupt customer row") : TG_OK;
}

/* " AND created>=MIN AND created<=MAX" for a set range, into out (cap bytes); its length. */
static size_t created_terms(char *out, size_t cap, const tg_time_range *r)
{
    if (!r->set)
        return 0;
    int n = snprintf(out, cap, " AND created>=%" PRId64 " AND created<=%" PRId64, r->min, r->max);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

static int sq_customer_list(tg_store *base, const tg_scope *scope, const tg_customer_filter *f,
                            const tg_page *page, tg_arena *a, tg_customer **out, size_t *n,
                            tg_err *err)
{
    sq_store *s = SQ(base);
    int64_t lo, hi;
    int rc = page_bounds(s, Q_CUSTOMER_SEQ, scope, page, &lo, &hi, err);
    if (rc)
        return rc;
    static const tg_customer_filter none = {0};
    if (!f)
        f = &none;
    char where[192];
    int wl = snprintf(where, sizeof where, "AND deleted=0%s%s",
                      f->any_clock    ? ""
                      : f->test_clock ? " AND test_clock=?6"
                                      : " AND test_clock IS NULL",
                      f->email ? " AND email=?7" : "");
    created_terms(where + wl, sizeof where - (size_t)wl, &f->created);
    sqlite3_stmt *st = page_query(s, CUSTOMER_COLS, "customers", where, scope, page, lo, hi, err);
    if (!st)
        return TG_ESTORE;
    if (f->test_clock && !f->any_clock)
        sqlite3_bind_text(st, 6, f->test_clock, -1, SQLITE_TRANSIENT);
    if (f->email)
        sqlite3_bind_text(st, 7, f->email, -1, SQLITE_TRANSIENT);
    *out = tg_arena_alloc(a, (size_t)(page->limit + 1) * sizeof(tg_customer));
    *n = 0;
    if (!*out) {
        page_done(st);
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        read_customer(st, scope, a, &(*out)[(*n)++]);
    page_done(st);
    if (rc != SQLITE_DONE)
        return db_error(s, err, "customer_list");
    if (page->ending_before)
        reverse_items(*out, *n, sizeof(tg_customer));
    return TG_OK;
}

/* ---------------------------------------------------------------- meters */

static int sq_meter_put(tg_store *base, const tg_scope *scope, tg_meter *m, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_METER_PUT, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, m->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, m->created);
    sqlite3_bind_int64(st, 5, m->updated);
    sqlite3_bind_int(st, 6, m->active);
    sqlite3_bind_int64(st, 7, m->deactivated_at);
    sqlite3_bind_int(st, 8, (int)m->formula);
    sqlite3_bind_int(st, 9, (int)m->event_time_window);
    sqlite3_bind_text(st, 10, m->display_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, m->event_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 12, m->customer_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 13, m->value_key, -1, SQLITE_STATIC);
    int rc = exec_done(s, st, err, "meter_put");
    if (!rc && !m->seq)
        m->seq = sqlite3_last_insert_rowid(s->db);
    return rc;
}

static void read_meter(sqlite3_stmt *st, tg_meter *m)
{
    memset(m, 0, sizeof *m);
    copy_text(m->id, sizeof m->id, st, 0);
    m->created = sqlite3_column_int64(st, 1);
    m->updated = sqlite3_column_int64(st, 2);
    m->active = sqlite3_column_int(st, 3) != 0;
    m->deactivated_at = sqlite3_column_int64(st, 4);
    m->formula = (tg_formula)sqlite3_column_int(st, 5);
    m->event_time_window = (tg_window)sqlite3_column_int(st, 6);
    copy_text(m->display_name, sizeof m->display_name, st, 7);
    copy_text(m->event_name, sizeof m->event_name, st, 8);
    copy_text(m->customer_key, sizeof m->customer_key, st, 9);
    copy_text(m->value_key, sizeof m->value_key, st, 10);
    m->livemode = sqlite3_column_int(st, 11) != 0;
    m->seq = sqlite3_column_int64(st, 12);
}

static int sq_meter_get(tg_store *base, const tg_scope *scope, const char *id, tg_meter *out,
                        tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_METER_GET, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
    int rc = step_row(s, st, err, "meter_get");
    if (rc == TG_ENOTFOUND)
        return tg_err_set(err, TG_ENOTFOUND, "id", "No such billing meter: '%s'", id);
    if (rc)
        return rc;
    read_meter(st, out);
    sqlite3_reset(st);
    return TG_OK;
}

static int sq_meter_list(tg_store *base, const tg_scope *scope, int status, const tg_page *page,
                         tg_arena *a, tg_meter **out, size_t *n, tg_err *err)
{
    sq_store *s = SQ(base);
    int64_t lo, hi;
    int rc = page_bounds(s, Q_METER_SEQ, scope, page, &lo, &hi, err);
    if (rc)
        return rc;
    const char *extra = status < 0 ? "" : status ? "AND active=1" : "AND active=0";
    sqlite3_stmt *st = page_query(s,
                                  "id,created,updated,active,deactivated_at,formula,"
                                  "event_time_window,display_name,event_name,customer_key,"
                                  "value_key,livemode,seq",
                                  "meters", extra, scope, page, lo, hi, err);
    if (!st)
        return TG_ESTORE;
    *out = tg_arena_alloc(a, (size_t)(page->limit + 1) * sizeof(tg_meter));
    *n = 0;
    if (!*out) {
        page_done(st);
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        read_meter(st, &(*out)[(*n)++]);
    page_done(st);
    if (rc != SQLITE_DONE)
        return db_error(s, err, "meter_list");
    if (page->ending_before)
        reverse_items(*out, *n, sizeof(tg_meter));
    return TG_OK;
}

static int sq_meter_each(tg_store *base,
                         int (*fn)(void *ctx, const tg_scope *scope, const tg_meter *m), void *ctx,
                         tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_METER_EACH, err);
    if (!st)
        return TG_ESTORE;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tg_meter m;
        tg_scope scope;
        read_meter(st, &m);
        copy_text(scope.account, sizeof scope.account, st, 13);
        scope.livemode = m.livemode;
        int frc = fn(ctx, &scope, &m);
        if (frc) {
            sqlite3_reset(st);
            return frc;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TG_OK : db_error(s, err, "meter_each");
}

/* ---------------------------------------------------------------- events */

static int sq_event_insert(tg_store *base, const tg_scope *scope, tg_event *e, bool *dup,
                           tg_err *err)
{
    sq_store *s = SQ(base);
    unsigned char v[16];
    tg_buf payload;
    tg_buf_init(&payload, 1 << 20);
    tg_metadata_encode(&e->payload, &payload);
    if (payload.failed) {
        tg_buf_free(&payload);
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    }
    sqlite3_stmt *st = stmt(s, Q_EVENT_INSERT, err);
    if (!st) {
        tg_buf_free(&payload);
        return TG_ESTORE;
    }
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, e->identifier, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, e->event_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, e->meter_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, e->customer_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, e->timestamp);
    sqlite3_bind_int64(st, 8, e->created);
    bind_dec(st, 9, e->value, v);
    sqlite3_bind_blob(st, 10, payload.data ? payload.data : "", (int)payload.len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, e->meter_seq);
    sqlite3_bind_int64(st, 12, e->customer_seq);
    int rc = exec_done(s, st, err, "event_insert");
    tg_buf_free(&payload);
    if (rc)
        return rc;
    *dup = sqlite3_changes(s->db) == 0;
    if (!*dup)
        e->seq = sqlite3_last_insert_rowid(s->db);
    return TG_OK;
}

static int sq_event_get(tg_store *base, const tg_scope *scope, const char *identifier,
                        tg_arena *a, tg_event *out, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_EVENT_GET, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, identifier, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        return tg_err_set(err, TG_ENOTFOUND, "identifier", "No such meter event: '%s'",
                          identifier);
    }
    if (rc != SQLITE_ROW)
        return db_error(s, err, "event_get");
    memset(out, 0, sizeof *out);
    out->seq = sqlite3_column_int64(st, 0);
    copy_text(out->identifier, sizeof out->identifier, st, 1);
    copy_text(out->event_name, sizeof out->event_name, st, 2);
    copy_text(out->meter_id, sizeof out->meter_id, st, 3);
    copy_text(out->customer_id, sizeof out->customer_id, st, 4);
    out->timestamp = sqlite3_column_int64(st, 5);
    out->created = sqlite3_column_int64(st, 6);
    out->value = column_dec(st, 7);
    rc = tg_metadata_decode(sqlite3_column_blob(st, 8), (size_t)sqlite3_column_bytes(st, 8), a,
                            &out->payload);
    out->state = (tg_event_state)sqlite3_column_int(st, 9);
    out->meter_seq = sqlite3_column_int64(st, 10);
    out->customer_seq = sqlite3_column_int64(st, 11);
    sqlite3_reset(st);
    return rc ? tg_err_set(err, TG_ESTORE, NULL, "corrupt event row") : TG_OK;
}

static int sq_event_set_state(tg_store *base, const tg_scope *scope, int64_t seq,
                              tg_event_state from, tg_event_state to, bool *changed, tg_err *err)
{
    sq_store *s = SQ(base);
    (void)scope;
    sqlite3_stmt *st = stmt(s, Q_EVENT_STATE, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_int(st, 2, (int)from);
    sqlite3_bind_int(st, 3, (int)to);
    int rc = exec_done(s, st, err, "event_set_state");
    if (!rc)
        *changed = sqlite3_changes(s->db) > 0;
    return rc;
}

static int sq_event_each_in_range(tg_store *base, int64_t meter_seq, int64_t customer_seq,
                                  int64_t from, int64_t to,
                                  int (*fn)(void *ctx, int64_t ts, int64_t seq, tg_dec value),
                                  void *ctx, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_EVENT_RANGE, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int64(st, 1, meter_seq);
    sqlite3_bind_int64(st, 2, customer_seq);
    sqlite3_bind_int64(st, 3, from);
    sqlite3_bind_int64(st, 4, to);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int frc = fn(ctx, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                     column_dec(st, 2));
        if (frc) {
            sqlite3_reset(st);
            return frc;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TG_OK : db_error(s, err, "event_range");
}

static int sq_customer_each(tg_store *base,
                            int (*fn)(void *ctx, const tg_scope *scope, int64_t seq,
                                      const char *id, bool deleted, const char *test_clock),
                            void *ctx, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_CUSTOMER_EACH, err);
    if (!st)
        return TG_ESTORE;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tg_scope scope;
        copy_text(scope.account, sizeof scope.account, st, 0);
        scope.livemode = sqlite3_column_int(st, 1) != 0;
        int frc = fn(ctx, &scope, sqlite3_column_int64(st, 2),
                     (const char *)sqlite3_column_text(st, 3), sqlite3_column_int(st, 4) != 0,
                     (const char *)sqlite3_column_text(st, 5));
        if (frc) {
            sqlite3_reset(st);
            return frc;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TG_OK : db_error(s, err, "customer_each");
}

static int sq_event_each_identifier(tg_store *base,
                                    int (*fn)(void *ctx, const tg_scope *scope,
                                              const char *identifier),
                                    void *ctx, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_EVENT_IDENTS, err);
    if (!st)
        return TG_ESTORE;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tg_scope scope;
        copy_text(scope.account, sizeof scope.account, st, 0);
        scope.livemode = sqlite3_column_int(st, 1) != 0;
        int frc = fn(ctx, &scope, (const char *)sqlite3_column_text(st, 2));
        if (frc) {
            sqlite3_reset(st);
            return frc;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TG_OK : db_error(s, err, "event_each_identifier");
}

/* ---------------------------------------------------------------- event blocks */

static int sq_block_append(tg_store *base, const tg_scope *scope, int64_t created, size_t count,
                           const void *data, size_t len, int64_t *seq, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_BLOCK_APPEND, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_int64(st, 3, created);
    sqlite3_bind_int64(st, 4, (int64_t)count);
    sqlite3_bind_blob(st, 5, data, (int)len, SQLITE_STATIC);
    int rc = exec_done(s, st, err, "block_append");
    if (!rc)
        *seq = sqlite3_last_insert_rowid(s->db);
    return rc;
}

static int sq_block_get(tg_store *base, int64_t seq, tg_arena *a, tg_scope *scope,
                        int64_t *created, const void **data, size_t *len, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_BLOCK_GET, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int64(st, 1, seq);
    int rc = step_row(s, st, err, "block_get");
    if (rc)
        return rc;
    copy_text(scope->account, sizeof scope->account, st, 0);
    scope->livemode = sqlite3_column_int(st, 1) != 0;
    *created = sqlite3_column_int64(st, 2);
    *len = (size_t)sqlite3_column_bytes(st, 3);
    void *copy = tg_arena_alloc(a, *len ? *len : 1);
    if (copy && *len)
        memcpy(copy, sqlite3_column_blob(st, 3), *len);
    *data = copy;
    sqlite3_reset(st);
    return copy ? TG_OK : tg_err_set(err, TG_ENOMEM, NULL, NULL);
}

static int sq_block_each(tg_store *base, int64_t after,
                         int (*fn)(void *ctx, int64_t seq, const tg_scope *scope, int64_t created,
                                   const void *data, size_t len),
                         void *ctx, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_BLOCK_EACH, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int64(st, 1, after);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tg_scope scope;
        copy_text(scope.account, sizeof scope.account, st, 1);
        scope.livemode = sqlite3_column_int(st, 2) != 0;
        int frc = fn(ctx, sqlite3_column_int64(st, 0), &scope, sqlite3_column_int64(st, 3),
                     sqlite3_column_blob(st, 4), (size_t)sqlite3_column_bytes(st, 4));
        if (frc) {
            sqlite3_reset(st);
            return frc;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TG_OK : db_error(s, err, "block_each");
}

static int sq_cancel_put(tg_store *base, int64_t block, int64_t index, int64_t created,
                         int64_t *id, bool *dup, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_CANCEL_PUT, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int64(st, 1, block);
    sqlite3_bind_int64(st, 2, index);
    sqlite3_bind_int64(st, 3, created);
    int rc = exec_done(s, st, err, "cancel_put");
    if (rc)
        return rc;
    *dup = sqlite3_changes(s->db) == 0;
    *id = *dup ? 0 : sqlite3_last_insert_rowid(s->db);
    return TG_OK;
}

static int sq_cancel_each(tg_store *base, int64_t after,
                          int (*fn)(void *ctx, int64_t id, int64_t block, int64_t index),
                          void *ctx, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_CANCEL_EACH, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int64(st, 1, after);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int frc = fn(ctx, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                     sqlite3_column_int64(st, 2));
        if (frc) {
            sqlite3_reset(st);
            return frc;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TG_OK : db_error(s, err, "cancel_each");
}

/* ---------------------------------------------------------------- buckets and windows */

static void read_bucket(sqlite3_stmt *st, int first, tg_bucket *b)
{
    b->sum = column_dec(st, first);
    b->count = sqlite3_column_int64(st, first + 1);
    b->last_ts = sqlite3_column_int64(st, first + 2);
    b->last_seq = sqlite3_column_int64(st, first + 3);
    b->last_value = column_dec(st, first + 4);
}

static void bind_mc(sqlite3_stmt *st, int64_t meter_seq, int64_t customer_seq)
{
    sqlite3_bind_int64(st, 1, meter_seq);
    sqlite3_bind_int64(st, 2, customer_seq);
}

static int sq_bucket_get(tg_store *base, int64_t meter_id, int64_t customer_id, int64_t minute,
                         tg_bucket *out, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_BUCKET_GET, err);
    if (!st)
        return TG_ESTORE;
    bind_mc(st, meter_id, customer_id);
    sqlite3_bind_int64(st, 3, minute);
    int rc = step_row(s, st, err, "bucket_get");
    if (rc)
        return rc;
    out->minute = minute;
    read_bucket(st, 0, out);
    sqlite3_reset(st);
    return TG_OK;
}

static int sq_bucket_put(tg_store *base, int64_t meter_id, int64_t customer_id,
                         const tg_bucket *b, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, b->count ? Q_BUCKET_PUT : Q_BUCKET_DEL, err);
    if (!st)
        return TG_ESTORE;
    unsigned char sum[16], last[16];
    bind_mc(st, meter_id, customer_id);
    sqlite3_bind_int64(st, 3, b->minute);
    if (b->count) {
        bind_dec(st, 4, b->sum, sum);
        sqlite3_bind_int64(st, 5, b->count);
        sqlite3_bind_int64(st, 6, b->last_ts);
        sqlite3_bind_int64(st, 7, b->last_seq);
        bind_dec(st, 8, b->last_value, last);
    }
    return exec_done(s, st, err, "bucket_put");
}

static int sq_bucket_each(tg_store *base, int64_t meter_id, int64_t customer_id, int64_t from,
                          int64_t to, int (*fn)(void *ctx, const tg_bucket *b), void *ctx,
                          tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_BUCKET_EACH, err);
    if (!st)
        return TG_ESTORE;
    bind_mc(st, meter_id, customer_id);
    sqlite3_bind_int64(st, 3, from);
    sqlite3_bind_int64(st, 4, to);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tg_bucket b;
        b.minute = sqlite3_column_int64(st, 0);
        read_bucket(st, 1, &b);
        int frc = fn(ctx, &b);
        if (frc) {
            sqlite3_reset(st);
            return frc;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TG_OK : db_error(s, err, "bucket_each");
}

static int sq_window_get(tg_store *base, int64_t meter_id, int64_t customer_id, int64_t start,
                         int64_t *seq_out, int64_t *ts_out, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_WINDOW_GET, err);
    if (!st)
        return TG_ESTORE;
    bind_mc(st, meter_id, customer_id);
    sqlite3_bind_int64(st, 3, start);
    int rc = step_row(s, st, err, "window_get");
    if (rc)
        return rc;
    *seq_out = sqlite3_column_int64(st, 0);
    *ts_out = sqlite3_column_int64(st, 1);
    sqlite3_reset(st);
    return TG_OK;
}

static int sq_window_put(tg_store *base, int64_t meter_id, int64_t customer_id, int64_t start,
                         int64_t seq, int64_t ts, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_WINDOW_PUT, err);
    if (!st)
        return TG_ESTORE;
    bind_mc(st, meter_id, customer_id);
    sqlite3_bind_int64(st, 3, start);
    sqlite3_bind_int64(st, 4, seq);
    sqlite3_bind_int64(st, 5, ts);
    return exec_done(s, st, err, "window_put");
}

/* ---------------------------------------------------------------- spilled live usage */

static int sq_spill_put(tg_store *base, const tg_spill *row, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_SPILL_PUT, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int(st, 1, row->shard);
    sqlite3_bind_int64(st, 2, row->meter_seq);
    sqlite3_bind_int64(st, 3, row->customer_seq);
    sqlite3_bind_int64(st, 4, row->seq);
    sqlite3_bind_int64(st, 5, row->through_block);
    sqlite3_bind_int64(st, 6, row->through_cancel);
    sqlite3_bind_blob(st, 7, row->len ? row->data : "", (int)row->len, SQLITE_STATIC);
    return exec_done(s, st, err, "spill_put");
}

static int sq_spill_each(tg_store *base, int shard, int64_t meter_seq, int64_t customer_seq,
                         int (*fn)(void *ctx, const tg_spill *row), void *ctx, tg_err *err)
{
    sq_store *s = SQ(base);
    bool marks = shard < 0;
    sqlite3_stmt *st = stmt(s, marks ? Q_SPILL_MARKS : meter_seq >= 0 ? Q_SPILL_PAIR : Q_SPILL_SHARD,
                            err);
    if (!st)
        return TG_ESTORE;
    if (!marks)
        sqlite3_bind_int(st, 1, shard);
    if (!marks && meter_seq >= 0) {
        sqlite3_bind_int64(st, 2, meter_seq);
        sqlite3_bind_int64(st, 3, customer_seq);
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tg_spill row = {sqlite3_column_int(st, 0), sqlite3_column_int64(st, 1),
                        sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
                        sqlite3_column_int64(st, 4), sqlite3_column_int64(st, 5), NULL, 0};
        if (!marks) {
            row.data = sqlite3_column_blob(st, 6);
            row.len = (size_t)sqlite3_column_bytes(st, 6);
        }
        int frc = fn(ctx, &row);
        if (frc) {
            sqlite3_reset(st);
            return frc;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TG_OK : db_error(s, err, "spill_each");
}

static int sq_spill_delete_shard(tg_store *base, int shard, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_SPILL_DELETE, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int(st, 1, shard);
    return exec_done(s, st, err, "spill_delete_shard");
}

/* ---------------------------------------------------------------- day pages */

static int sq_day_get(tg_store *base, int64_t meter_seq, int64_t customer_seq, int64_t day,
                      tg_arena *a, const void **data, size_t *len, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_DAY_GET, err);
    if (!st)
        return TG_ESTORE;
    bind_mc(st, meter_seq, customer_seq);
    sqlite3_bind_int64(st, 3, day);
    int rc = step_row(s, st, err, "day_get");
    if (rc)
        return rc;
    *len = (size_t)sqlite3_column_bytes(st, 0);
    void *copy = tg_arena_alloc(a, *len ? *len : 1);
    if (copy && *len)
        memcpy(copy, sqlite3_column_blob(st, 0), *len);
    *data = copy;
    sqlite3_reset(st);
    return copy ? TG_OK : tg_err_set(err, TG_ENOMEM, NULL, NULL);
}

/* An emptied page is kept (with no entries) rather than deleted: its marks still say which
 * blocks it has already absorbed. */
static int sq_day_put(tg_store *base, int64_t meter_seq, int64_t customer_seq, int64_t day,
                      const void *data, size_t len, int64_t through_block,
                      int64_t through_cancel, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_DAY_PUT, err);
    if (!st)
        return TG_ESTORE;
    bind_mc(st, meter_seq, customer_seq);
    sqlite3_bind_int64(st, 3, day);
    sqlite3_bind_int64(st, 4, through_block);
    sqlite3_bind_int64(st, 5, through_cancel);
    sqlite3_bind_blob(st, 6, len ? data : "", (int)len, SQLITE_STATIC);
    return exec_done(s, st, err, "day_put");
}

static int sq_day_marks_each(tg_store *base,
                             int (*fn)(void *ctx, int64_t meter_seq, int64_t customer_seq,
                                       int64_t day, int64_t through_block,
                                       int64_t through_cancel),
                             void *ctx, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_DAY_MARKS, err);
    if (!st)
        return TG_ESTORE;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int frc = fn(ctx, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                     sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3),
                     sqlite3_column_int64(st, 4));
        if (frc) {
            sqlite3_reset(st);
            return frc;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TG_OK : db_error(s, err, "day_marks_each");
}

static int sq_day_each(tg_store *base, int64_t meter_seq, int64_t customer_seq, int64_t from_day,
                       int64_t to_day,
                       int (*fn)(void *ctx, int64_t day, const void *data, size_t len),
                       void *ctx, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_DAY_EACH, err);
    if (!st)
        return TG_ESTORE;
    bind_mc(st, meter_seq, customer_seq);
    sqlite3_bind_int64(st, 3, from_day);
    sqlite3_bind_int64(st, 4, to_day);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int frc = fn(ctx, sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 1),
                     (size_t)sqlite3_column_bytes(st, 1));
        if (frc) {
            sqlite3_reset(st);
            return frc;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? TG_OK : db_error(s, err, "day_each");
}

/* ---------------------------------------------------------------- idempotency, sessions */

static int sq_idem_get(tg_store *base, const tg_scope *scope, const char *key, tg_arena *a,
                       tg_idem *out, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_IDEM_GET, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
    int rc = step_row(s, st, err, "idem_get");
    if (rc)
        return rc;
    copy_text(out->request_hash, sizeof out->request_hash, st, 0);
    out->status = sqlite3_column_int(st, 1);
    out->body_len = (size_t)sqlite3_column_bytes(st, 2);
    out->body = tg_arena_strndup(a, sqlite3_column_blob(st, 2) ? sqlite3_column_blob(st, 2) : "",
                                 out->body_len);
    out->created = sqlite3_column_int64(st, 3);
    sqlite3_reset(st);
    return out->body ? TG_OK : tg_err_set(err, TG_ENOMEM, NULL, NULL);
}

static int sq_idem_put(tg_store *base, const tg_scope *scope, const char *key, const tg_idem *rec,
                       tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_IDEM_PUT, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, rec->request_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, rec->status);
    sqlite3_bind_blob(st, 6, rec->body ? rec->body : "", (int)rec->body_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, rec->created);
    return exec_done(s, st, err, "idem_put");
}

static int sq_session_put(tg_store *base, const tg_scope *scope, const char *token_hash,
                          const tg_session *ses, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_SESSION_PUT, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_text(st, 1, token_hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, scope->account, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, scope->livemode);
    sqlite3_bind_text(st, 4, ses->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, ses->created);
    sqlite3_bind_int64(st, 6, ses->expires_at);
    if (ses->key_hash[0])
        sqlite3_bind_text(st, 7, ses->key_hash, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 7);
    return exec_done(s, st, err, "session_put");
}

static int sq_session_get(tg_store *base, const char *token_hash, tg_scope *scope_out,
                          int64_t *expires_out, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_SESSION_GET, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_text(st, 1, token_hash, -1, SQLITE_STATIC);
    int rc = step_row(s, st, err, "session_get");
    if (rc)
        return rc;
    copy_text(scope_out->account, sizeof scope_out->account, st, 0);
    scope_out->livemode = sqlite3_column_int(st, 1) != 0;
    *expires_out = sqlite3_column_int64(st, 2);
    sqlite3_reset(st);
    return TG_OK;
}

/* ---------------------------------------------------------------- meter errors */

static int sq_meter_error_add(tg_store *base, const tg_scope *scope, const tg_meter_error *e,
                              tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_MERR_ADD, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, e->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, e->meter_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, e->code, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, e->count);
    sqlite3_bind_text(st, 7, e->last_message, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, e->last_seen);
    return exec_done(s, st, err, "meter_error_add");
}

static int sq_meter_error_list(tg_store *base, const tg_scope *scope, const char *meter_id,
                               const tg_page *page, tg_arena *a, tg_meter_error **out, size_t *n,
                               tg_err *err)
{
    sq_store *s = SQ(base);
    int64_t lo, hi;
    int rc = page_bounds(s, Q_MERR_SEQ, scope, page, &lo, &hi, err);
    if (rc)
        return rc;
    sqlite3_stmt *st = page_query(s, "id,meter_id,code,count,last_message,last_seen",
                                  "meter_errors", meter_id ? "AND meter_id=?6" : "", scope, page,
                                  lo, hi, err);
    if (!st)
        return TG_ESTORE;
    if (meter_id)
        sqlite3_bind_text(st, 6, meter_id, -1, SQLITE_STATIC);
    *out = tg_arena_alloc(a, (size_t)(page->limit + 1) * sizeof(tg_meter_error));
    *n = 0;
    if (!*out) {
        page_done(st);
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tg_meter_error *e = &(*out)[(*n)++];
        memset(e, 0, sizeof *e);
        copy_text(e->id, sizeof e->id, st, 0);
        copy_text(e->meter_id, sizeof e->meter_id, st, 1);
        copy_text(e->code, sizeof e->code, st, 2);
        e->count = sqlite3_column_int64(st, 3);
        copy_text(e->last_message, sizeof e->last_message, st, 4);
        e->last_seen = sqlite3_column_int64(st, 5);
        e->livemode = scope->livemode;
    }
    page_done(st);
    if (rc != SQLITE_DONE)
        return db_error(s, err, "meter_error_list");
    if (page->ending_before)
        for (size_t i = 0, j = *n ? *n - 1 : 0; i < j; i++, j--) {
            tg_meter_error t = (*out)[i];
            (*out)[i] = (*out)[j];
            (*out)[j] = t;
        }
    return TG_OK;
}

static int sq_prune(tg_store *base, int64_t idem_before, int64_t session_before, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_PRUNE_IDEM, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int64(st, 1, idem_before);
    int rc = exec_done(s, st, err, "prune");
    if (rc)
        return rc;
    st = stmt(s, Q_PRUNE_SESSIONS, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int64(st, 1, session_before);
    return exec_done(s, st, err, "prune");
}

/* ---------------------------------------------------------------- billing objects */

static int sq_obj_put(tg_store *base, const tg_scope *scope, const tg_obj *o, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_OBJ_PUT, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, o->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, o->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, o->created);
    bind_opt_text(st, 6, o->customer);
    bind_opt_text(st, 7, o->parent);
    bind_opt_text(st, 8, o->lookup);
    bind_opt_text(st, 9, o->clock);
    sqlite3_bind_int(st, 10, o->active);
    sqlite3_bind_int64(st, 11, o->due);
    sqlite3_bind_blob(st, 12, o->len ? o->body : "", (int)o->len, SQLITE_STATIC);
    bind_opt_text(st, 13, o->tags);
    return exec_done(s, st, err, "obj_put");
}

/* Reads a row of OBJ_COLS; strings and the body are copied into a. */
static int read_obj(sqlite3_stmt *st, tg_arena *a, tg_obj *o)
{
    memset(o, 0, sizeof *o);
    copy_text(o->scope.account, sizeof o->scope.account, st, 0);
    o->scope.livemode = sqlite3_column_int(st, 1) != 0;
    o->kind = column_text(st, 2, a);
    copy_text(o->id, sizeof o->id, st, 3);
    o->created = sqlite3_column_int64(st, 4);
    o->customer = column_text(st, 5, a);
    o->parent = column_text(st, 6, a);
    o->lookup = column_text(st, 7, a);
    o->clock = column_text(st, 8, a);
    o->active = sqlite3_column_int(st, 9) != 0;
    o->due = sqlite3_column_int64(st, 10);
    o->seq = sqlite3_column_int64(st, 12);
    o->len = (size_t)sqlite3_column_bytes(st, 11);
    void *body = tg_arena_alloc(a, o->len ? o->len : 1);
    if (!body || !o->kind)
        return TG_ENOMEM;
    if (o->len)
        memcpy(body, sqlite3_column_blob(st, 11), o->len);
    o->body = body;
    return TG_OK;
}

static int obj_lookup(sq_store *s, const tg_scope *scope, const char *kind, const char *id,
                      tg_arena *a, tg_obj *out, int64_t *seq, tg_err *err)
{
    sqlite3_stmt *st = stmt(s, Q_OBJ_GET, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, id, -1, SQLITE_STATIC);
    int rc = step_row(s, st, err, "obj_get");
    if (rc)
        return rc;
    if (seq)
        *seq = sqlite3_column_int64(st, 12);
    rc = out ? read_obj(st, a, out) : TG_OK;
    sqlite3_reset(st);
    return rc ? tg_err_set(err, rc, NULL, NULL) : TG_OK;
}

static int sq_obj_get(tg_store *base, const tg_scope *scope, const char *kind, const char *id,
                      tg_arena *a, tg_obj *out, tg_err *err)
{
    return obj_lookup(SQ(base), scope, kind, id, a, out, NULL, err);
}

static int sq_obj_delete(tg_store *base, const tg_scope *scope, const char *kind, const char *id,
                         tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_OBJ_DELETE, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, id, -1, SQLITE_STATIC);
    return exec_done(s, st, err, "obj_delete");
}

/* Runs a prepared query of OBJ_COLS rows into an array of at most max rows. */
static int obj_rows(sq_store *s, sqlite3_stmt *st, size_t max, tg_arena *a, tg_obj **out,
                    size_t *n, tg_err *err)
{
    *out = tg_arena_alloc(a, (max ? max : 1) * sizeof(tg_obj));
    *n = 0;
    if (!*out)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    int rc;
    while (*n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
        if (read_obj(st, a, &(*out)[(*n)++]))
            return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    if (*n < max && rc != SQLITE_DONE)
        return db_error(s, err, "objects");
    return TG_OK;
}

static int sq_obj_list(tg_store *base, const tg_scope *scope, const char *kind,
                       const tg_obj_filter *f, const tg_page *page, tg_arena *a, tg_obj **out,
                       size_t *n, tg_err *err)
{
    sq_store *s = SQ(base);
    int64_t lo = 0, hi = page->before_seq > 0 ? page->before_seq : INT64_MAX;
    const char *cursor = page->starting_after ? page->starting_after : page->ending_before;
    if (cursor) {
        int64_t seq;
        int rc = obj_lookup(s, scope, kind, cursor, NULL, NULL, &seq, err);
        if (rc == TG_ENOTFOUND)
            return tg_err_set(err, TG_ENOTFOUND,
                              page->starting_after ? "starting_after" : "ending_before",
                              "No such object: '%s'", cursor);
        if (rc)
            return rc;
        if (page->starting_after)
            hi = seq < hi ? seq : hi;
        else
            lo = seq;
    }
    /* Filters become "AND col=?N" terms; parameters 6.. are bound in the same order. */
    char extra[1536];
    size_t len = (size_t)snprintf(extra, sizeof extra, "AND kind=?6");
    const char *binds[64];
    int nb = 0;
    binds[nb++] = kind;
#define TERM(fmt, v)                                                                          \
    do {                                                                                      \
        len += (size_t)snprintf(extra + len, sizeof extra - len, fmt, nb + 6);                \
        binds[nb++] = (v);                                                                    \
    } while (0)
    if (f->customer)
        TERM(" AND customer=?%d", f->customer);
    if (f->parent)
        TERM(" AND parent=?%d", f->parent);
    if (f->clock)
        TERM(" AND clock=?%d", f->clock);
#undef TERM
    if (f->lookup_prefix) {
        len += (size_t)snprintf(extra + len, sizeof extra - len,
                                " AND substr(lookup,1,length(?%d))=?%d", nb + 6, nb + 6);
        binds[nb++] = f->lookup_prefix;
    }
    if (f->lookup_min && f->lookup_max) {
        len += (size_t)snprintf(extra + len, sizeof extra - len,
                                " AND lookup>=?%d AND lookup<=?%d", nb + 6, nb + 7);
        binds[nb++] = f->lookup_min;
        binds[nb++] = f->lookup_max;
    }
    for (size_t i = 0; i < f->ntags && nb < 30; i++) {
        len += (size_t)snprintf(extra + len, sizeof extra - len, " AND instr(tags,?%d)>0",
                                nb + 6);
        binds[nb++] = f->tags[i];
    }
    if (f->without_tag) {
        len += (size_t)snprintf(extra + len, sizeof extra - len,
                                " AND coalesce(instr(tags,?%d),0)=0", nb + 6);
        binds[nb++] = f->without_tag;
    }
    if (f->no_clock)
        len += (size_t)snprintf(extra + len, sizeof extra - len, " AND clock IS NULL");
    if (f->active >= 0)
        len += (size_t)snprintf(extra + len, sizeof extra - len, " AND active=%d", f->active);
    len += created_terms(extra + len, sizeof extra - len, &f->created);
    if (f->nlookup > TG_OBJ_LOOKUP_MAX)
        return tg_err_set(err, TG_EINVAL, NULL, "At most %d lookup values.", TG_OBJ_LOOKUP_MAX);
    if (f->nlookup) {
        len += (size_t)snprintf(extra + len, sizeof extra - len, " AND lookup IN (");
        for (size_t i = 0; i < f->nlookup; i++) {
            len += (size_t)snprintf(extra + len, sizeof extra - len, "%s?%d", i ? "," : "",
                                    nb + 6);
            binds[nb++] = f->lookup_any[i];
        }
        len += (size_t)snprintf(extra + len, sizeof extra - len, ")");
    }
    sqlite3_stmt *st = page_query(s, OBJ_COLS, "objects", extra, scope, page, lo, hi, err);
    if (!st)
        return TG_ESTORE;
    for (int i = 0; i < nb; i++)
        sqlite3_bind_text(st, i + 6, binds[i], -1, SQLITE_TRANSIENT);
    int rc = obj_rows(s, st, (size_t)page->limit + 1, a, out, n, err);
    page_done(st);
    if (!rc && page->ending_before)
        for (size_t i = 0, j = *n ? *n - 1 : 0; i < j; i++, j--) {
            tg_obj t = (*out)[i];
            (*out)[i] = (*out)[j];
            (*out)[j] = t;
        }
    return rc;
}

static int sq_obj_due(tg_store *base, const char *clock, int64_t before, int limit, tg_arena *a,
                      tg_obj **out, size_t *n, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, clock ? Q_OBJ_DUE_CLOCK : Q_OBJ_DUE, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int64(st, 1, before);
    sqlite3_bind_int(st, 2, limit);
    if (clock)
        sqlite3_bind_text(st, 3, clock, -1, SQLITE_STATIC);
    int rc = obj_rows(s, st, (size_t)limit, a, out, n, err);
    sqlite3_reset(st);
    return rc;
}

/* ---------------------------------------------------------------- webhook deliveries */

static int sq_delivery_add(tg_store *base, const tg_scope *scope, tg_delivery *d, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_DLV_ADD, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, d->endpoint, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, d->event, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, d->attempts);
    sqlite3_bind_int64(st, 6, d->created);
    sqlite3_bind_int64(st, 7, d->due);
    int rc = exec_done(s, st, err, "delivery add");
    if (!rc)
        d->seq = sqlite3_last_insert_rowid(s->db);
    return rc;
}

static int sq_delivery_due(tg_store *base, int64_t before, int limit, tg_arena *a,
                           tg_delivery **out, size_t *n, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_DLV_DUE, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int64(st, 1, before);
    sqlite3_bind_int(st, 2, limit);
    tg_delivery *rows = tg_arena_alloc(a, (size_t)(limit > 0 ? limit : 1) * sizeof *rows);
    if (!rows) {
        sqlite3_reset(st);
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    }
    size_t k = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && k < (size_t)limit) {
        tg_delivery *d = &rows[k++];
        memset(d, 0, sizeof *d);
        copy_text(d->scope.account, sizeof d->scope.account, st, 0);
        d->scope.livemode = sqlite3_column_int(st, 1) != 0;
        d->seq = sqlite3_column_int64(st, 2);
        copy_text(d->endpoint, sizeof d->endpoint, st, 3);
        copy_text(d->event, sizeof d->event, st, 4);
        d->attempts = sqlite3_column_int(st, 5);
        d->created = sqlite3_column_int64(st, 6);
        d->due = sqlite3_column_int64(st, 7);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_error(s, err, "delivery due");
    *out = rows;
    *n = k;
    return TG_OK;
}

static int sq_delivery_set(tg_store *base, int64_t seq, int attempts, int64_t due, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_DLV_SET, err);
    if (!st)
        return TG_ESTORE;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_int(st, 2, attempts);
    sqlite3_bind_int64(st, 3, due);
    return exec_done(s, st, err, "delivery set");
}

static int sq_delivery_delete(tg_store *base, const tg_scope *scope, int64_t seq,
                              const char *endpoint, tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, seq ? Q_DLV_DELETE : Q_DLV_DELETE_ENDPOINT, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    if (seq)
        sqlite3_bind_int64(st, 3, seq);
    else
        sqlite3_bind_text(st, 3, endpoint, -1, SQLITE_STATIC);
    return exec_done(s, st, err, "delivery delete");
}

static int sq_delivery_count(tg_store *base, const tg_scope *scope, const char *event, int *n,
                             tg_err *err)
{
    sq_store *s = SQ(base);
    sqlite3_stmt *st = stmt(s, Q_DLV_COUNT, err);
    if (!st)
        return TG_ESTORE;
    bind_scope(st, scope);
    sqlite3_bind_text(st, 3, event, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? TG_OK : db_error(s, err, "delivery count");
}

/* ---------------------------------------------------------------- open / close */

static void sq_close(tg_store *base)
{
    sq_store *s = SQ(base);
    if (!s)
        return;
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(s->stmts[i]);
    for (size_t i = 0; i < PAGE_STMTS; i++) {
        sqlite3_finalize(s->pages[i].st);
        free(s->pages[i].sql);
    }
    sqlite3_close_v2(s->db);
    free(s);
}

static const tg_store_ops sqlite_ops = {
    .name = "sqlite",
    .close = sq_close,
    .begin = sq_begin,
    .read_begin = sq_read_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .savepoint = sq_savepoint,
    .release = sq_release,
    .rollback_to = sq_rollback_to,
    .setting_get = sq_setting_get,
    .setting_put = sq_setting_put,
    .key_insert = sq_key_insert,
    .key_lookup = sq_key_lookup,
    .key_revoke = sq_key_revoke,
    .customer_put = sq_customer_put,
    .customer_get = sq_customer_get,
    .customer_list = sq_customer_list,
    .customer_each = sq_customer_each,
    .meter_put = sq_meter_put,
    .meter_get = sq_meter_get,
    .meter_list = sq_meter_list,
    .meter_each = sq_meter_each,
    .event_insert = sq_event_insert,
    .event_get = sq_event_get,
    .event_set_state = sq_event_set_state,
    .event_each_in_range = sq_event_each_in_range,
    .event_each_identifier = sq_event_each_identifier,
    .block_append = sq_block_append,
    .block_get = sq_block_get,
    .block_each = sq_block_each,
    .cancel_put = sq_cancel_put,
    .cancel_each = sq_cancel_each,
    .bucket_get = sq_bucket_get,
    .bucket_put = sq_bucket_put,
    .bucket_each = sq_bucket_each,
    .day_get = sq_day_get,
    .day_put = sq_day_put,
    .day_each = sq_day_each,
    .day_marks_each = sq_day_marks_each,
    .spill_put = sq_spill_put,
    .spill_each = sq_spill_each,
    .spill_delete_shard = sq_spill_delete_shard,
    .window_get = sq_window_get,
    .window_put = sq_window_put,
    .idem_get = sq_idem_get,
    .idem_put = sq_idem_put,
    .session_put = sq_session_put,
    .session_get = sq_session_get,
    .meter_error_add = sq_meter_error_add,
    .meter_error_list = sq_meter_error_list,
    .prune = sq_prune,
    .obj_put = sq_obj_put,
    .obj_get = sq_obj_get,
    .obj_list = sq_obj_list,
    .obj_delete = sq_obj_delete,
    .obj_due = sq_obj_due,
    .delivery_add = sq_delivery_add,
    .delivery_due = sq_delivery_due,
    .delivery_set = sq_delivery_set,
    .delivery_delete = sq_delivery_delete,
    .delivery_count = sq_delivery_count,
};

static int migrate(sq_store *s, tg_err *err)
{
    const int latest = (int)(sizeof migrations / sizeof migrations[0]);
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return db_error(s, err, "migrate begin");
    sqlite3_stmt *st;
    int version = 0;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    for (int v = version; v < latest; v++) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d", v + 1);
        if (sqlite3_exec(s->db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(s->db, pragma, NULL, NULL, NULL) != SQLITE_OK) {
            int rc = db_error(s, err, "migrate");
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            return rc;
        }
    }
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        return db_error(s, err, "migrate commit");
    return TG_OK;
}

/* Page cache a connection, in KiB. The writer keeps the day pages it folds and the block
 * pages it appends hot. A reader answers one request at a time (a summary reads about 31 day
 * pages of one meter and customer; a list page, a few rows): 2 MiB holds the tables' interior
 * pages and a request's leaves, and keeps a pool of 8 readers within 16 MiB (at the writer's
 * 16 MiB each, a busy pool could have grown to 128 MiB). */
#define WRITER_CACHE_KIB 16384
#define READER_CACHE_KIB 2048

static int open_conn(const char *dir, int cache_kib, tg_store **out, tg_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tollgate.db", dir);
    sq_store *s = calloc(1, sizeof *s);
    if (!s)
        return tg_err_set(err, TG_ENOMEM, NULL, NULL);
    s->base.ops = &sqlite_ops;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        tg_err_set(err, TG_ESTORE, NULL, "Cannot open %s: %s", path,
                   s->db ? sqlite3_errmsg(s->db) : "out of memory");
        sq_close(&s->base);
        return TG_ESTORE;
    }
    sqlite3_busy_timeout(s->db, 10000);
    sqlite3_extended_result_codes(s->db, 1);
    char setup[192];
    snprintf(setup, sizeof setup,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;"
             " PRAGMA cache_size=-%d; PRAGMA temp_store=MEMORY;",
             cache_kib);
    int rc = TG_OK;
    if (sqlite3_exec(s->db, setup, NULL, NULL, NULL) != SQLITE_OK)
        rc = db_error(s, err, "pragma");
    if (!rc)
        rc = migrate(s, err);
    if (rc) {
        sq_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return TG_OK;
}

int tg_store_sqlite_open(const char *dir, tg_store **out, tg_err *err)
{
    return open_conn(dir, WRITER_CACHE_KIB, out, err);
}

static int factory_open(void *arg, bool reader, tg_store **out, tg_err *err)
{
    return open_conn(arg, reader ? READER_CACHE_KIB : WRITER_CACHE_KIB, out, err);
}

tg_store_factory tg_store_sqlite_factory(const char *dir)
{
    tg_store_factory f = {factory_open, (void *)dir};
    return f;
}
