/* Compiled dedup rows of the SQLite store: a batch's lookups and its first-write-wins
 * upserts bound and stepped in C, on a connection of this module's own.
 *
 * Why this file exists: the verify pipeline's batch ends in one get_many (step 5) and one
 * put_many_if_absent (step 7) of up to 512 rows. Through Python's sqlite3 module every row
 * costs Python objects -- a parameter list, the stored outcome's bytes (to_bytes), a
 * multi-row statement's text per chunk size, the RETURNING rows -- about as much CPU as
 * SQLite itself. Here a Rows object holds one sqlite3 connection (opened on the store's
 * file with the store's own pragmas) and two prepared statements whose SQL text the
 * store passes in (sqlite.py is the one place that spells the schema and the SQL). A
 * batch is read into C arrays with the GIL held (each outcome's bytes are written here,
 * as StoredOutcome.to_bytes writes them, when the outcome is of the common form; any
 * other outcome's to_bytes() is called; a *fresh* row -- (tenant, pcs_id, digest, body), the
 * verifier's common 200 outcome, for which the core builds no StoredOutcome -- is written as
 * "[\"" digest + the batch's shared middle + body), the SQLite work runs with the GIL released (a
 * busy wait of another process's lock does not stop the interpreter), and the answers
 * are built with the GIL held again.
 *
 * Measured (20,000 realistic rows in batches of 512, one thread, CPU per row, load ~3.4):
 * through Python's sqlite3 a row cost ~14 us -- the multi-row upsert with RETURNING ~6-9,
 * COMMIT ~4 (writing ~400 dirty pages per batch to the WAL: two pwrite calls a page),
 * the VALUES-join lookup ~1.1-1.9, Python (to_bytes, parameter lists, key checks) ~3;
 * here ~7.3 (lookup 1.2, upsert + commit 6.0), nearly all of it SQLite's b-tree work and
 * the kernel's WAL writes, which this schema (random 64-hex keys) makes one page per row.
 * Those writes now go through the connection's VFS, "flk-walbuf" (_walbuf.h): a
 * transaction's frames reach the kernel in one write at its commit frame instead of two
 * pwrite calls a page (flk bench verify, SQLite PCS/s, two pairs: 54.2k/55.2k -> 56.9k/60.5k;
 * flk serve's finish stage per batch of ~14 rows 540-630 -> 366-395 us).
 *
 * Waiting for the other workers' write lock: the workers of one server write to one file,
 * so a batch's BEGIN IMMEDIATE often finds another worker's short transaction in progress.
 * SQLite's own busy handler (sqlite3_busy_timeout) sleeps 1, 2, 5, 10 ... ms between tries;
 * such a transaction holds the lock for some 0.1 ms, so the first sleep alone is ten times
 * the wait. rows_busy sleeps 20, 30, 50, 100, 200, 500 us, then 1 ms steps, up to the
 * store's busy timeout (flk serve, 2 workers, 32 connections, 4 interleaved rounds: the
 * batch's finish stage 565-599 -> 487-539 us, req/s median 13,746 -> 14,421).
 *
 * The pure reference is flk.impl.dedup.sqlite.SqlRows over Python's sqlite3 (the same
 * method names and answers); the entry "open_rows" of flk.impl.core.accel is registered
 * by sqlite.py; tests/dedup/test_sqlite_rows_differential.py compares both on real files.
 *
 * Parameter order of the statements the store passes in:
 *   upsert: (tenant TEXT, pcs_id TEXT, expires_at REAL, outcome BLOB, now REAL), one row;
 *           the row was written (inserted, or an expired row replaced) when it changed one row;
 *   get:    (tenant TEXT, pcs_id TEXT, now REAL) -> the live row's outcome BLOB, if any.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#ifndef FLK_PLANTED_BUG
#define FLK_PLANTED_BUG 0 /* tests build this file with 1-4 (rows), 5-8 (_walbuf.h) or 9-10 (log rows): their tests must fail */
#endif

#include "_walbuf.h"

static PyObject *open_rows(PyObject *module, PyObject *args);
static PyObject *open_log_rows(PyObject *module, PyObject *args);

static PyObject *walbuf_stats(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return Py_BuildValue("(KK)", (unsigned long long)__atomic_load_n(&wb_writes_asked, __ATOMIC_RELAXED),
                         (unsigned long long)__atomic_load_n(&wb_writes_made, __ATOMIC_RELAXED));
}

static PyMethodDef module_methods[] = {
    {"open_rows", open_rows, METH_VARARGS,
     "open_rows(path, busy_timeout_ms, setup_sql, upsert_sql, get_sql, outcome_type, vfs=WALBUF_VFS) -> Rows\n"
     "(vfs: the SQLite VFS by name; WALBUF_VFS: the default one with a transaction's WAL frames written at\n"
     "its commit in one write (see _walbuf.h); None: SQLite's default VFS)"},
    {"open_log_rows", open_log_rows, METH_VARARGS,
     "open_log_rows(path, busy_timeout_ms, setup_sql, log_sql, index, outcome_type, vfs=WALBUF_VFS) -> Rows\n"
     "of a log-layout file (log_sql: the statements since, row, insert, update, seqmax; index: a LogIndex)"},
    {NULL, NULL, 0, NULL}
};

static PyObject *Error; /* _fastsqlite.Error: SQLite failed (the store answers StoreUnavailable) */

typedef struct LogIndex LogIndex;
static PyTypeObject LogIndexType;

typedef struct {
    PyObject_HEAD
    sqlite3 *db;
    sqlite3_stmt *begin_write, *begin_read, *commit, *rollback, *upsert, *get;
    LogIndex *log; /* a log-layout file's index (NULL: the keyed layout) */
    sqlite3_stmt *lg_since, *lg_row, *lg_insert, *lg_update, *lg_seqmax;
    PyObject *outcome_type; /* StoredOutcome: only its exact instances are written here */
    int busy;               /* a call runs (its SQLite work without the GIL) */
    int closing;            /* close() came while busy: the call closes when it ends */
    double last_x;          /* the last first_seen written and its repr (a batch shares one) */
    char last_repr[40];
    Py_ssize_t last_len;
    int busy_ms;            /* how long a call waits for another connection's lock */
} Rows;

/* SQLite's busy handler for a Rows connection (see the head of this file): try again after a
 * short sleep until busy_ms have been slept, then give up (SQLITE_BUSY). */
static int rows_busy(void *arg, int count) {
    static const long sleeps_us[] = {20, 30, 50, 100, 200, 500};
    const int n = (int)(sizeof sleeps_us / sizeof sleeps_us[0]);
    long long slept = 0;
    for (int i = 0; i < count && i < n; i++)
        slept += sleeps_us[i];
    if (count > n)
        slept += (long long)(count - n) * 1000;
    if (slept >= (long long)((Rows *)arg)->busy_ms * 1000)
        return 0;
    long us = count < n ? sleeps_us[count] : 1000;
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
    return 1;
}

static PyTypeObject RowsType;

/* ---- errors and the connection ------------------------------------------------------- */

static void rows_free_db(Rows *r) {
    sqlite3_stmt **stmts[] = {&r->begin_write, &r->begin_read, &r->commit, &r->rollback, &r->upsert, &r->get,
                              &r->lg_since, &r->lg_row, &r->lg_insert, &r->lg_update, &r->lg_seqmax};
    for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++) {
        sqlite3_finalize(*stmts[i]);
        *stmts[i] = NULL;
    }
    if (r->db != NULL) {
        sqlite3_close_v2(r->db);
        r->db = NULL;
    }
}

/* the message of a failed call (GIL held); rc: SQLite's answer */
static PyObject *raise_sqlite(Rows *r, const char *what, int rc) {
    const char *msg = r->db != NULL ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc);
    PyErr_Format(Error, "%s: %s (code %d)", what, msg, rc);
    return NULL;
}

/* the error of a failed batch (GIL released), kept before its ROLLBACK resets it */
static void keep_error(Rows *r, int rc, char *msg, size_t size) {
    snprintf(msg, size, "%s", r->db != NULL ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc));
}

static int step_done(sqlite3_stmt *stmt) {
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* no statement keeps pointers into a finished call's buffers and strings (they were bound static) */
static void clear_bound(Rows *r) {
    sqlite3_stmt *stmts[] = {r->upsert, r->get, r->lg_row, r->lg_insert, r->lg_update};
    for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++)
        if (stmts[i] != NULL)
            sqlite3_clear_bindings(stmts[i]);
}

/* ROLLBACK when a transaction is open (GIL released or held) */
static void rollback_open(Rows *r) {
    if (r->db != NULL && !sqlite3_get_autocommit(r->db))
        step_done(r->rollback);
}

/* a batch's end (GIL released): COMMIT after a clean run, else its error kept and ROLLBACK;
   the bindings cleared either way. Returns the batch's result. */
static int end_batch(Rows *r, int rc, char *msg, size_t size) {
    if (rc == SQLITE_OK)
        rc = step_done(r->commit);
    if (rc != SQLITE_OK) {
        keep_error(r, rc, msg, size);
        rollback_open(r);
    }
    clear_bound(r);
    return rc;
}

/* a Rows on path with the statements of prep (their SQL; GIL held, released while SQLite works) */
static Rows *rows_open(const char *path, int busy_ms, const char *setup, const char *const *sql, size_t nsql,
                       PyObject *outcome_type, LogIndex *log, const char *vfs) {
    if (!PyType_Check(outcome_type)) {
        PyErr_SetString(PyExc_TypeError, "outcome_type must be a type");
        return NULL;
    }
    Rows *r = PyObject_New(Rows, &RowsType);
    if (r == NULL)
        return NULL;
    r->db = NULL;
    r->begin_write = r->begin_read = r->commit = r->rollback = r->upsert = r->get = NULL;
    r->lg_since = r->lg_row = r->lg_insert = r->lg_update = r->lg_seqmax = NULL;
    r->log = log;
    Py_XINCREF(log);
    r->busy = r->closing = 0;
    r->last_x = NAN;
    r->last_len = 0;
    Py_INCREF(outcome_type);
    r->outcome_type = outcome_type;
    sqlite3_stmt **targets[] = {&r->upsert, &r->get};
    sqlite3_stmt **log_targets[] = {&r->lg_since, &r->lg_row, &r->lg_insert, &r->lg_update, &r->lg_seqmax};
    sqlite3_stmt ***own = log != NULL ? log_targets : targets;
    int rc;
    const char *what = "open";
    Py_BEGIN_ALLOW_THREADS
    rc = sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, vfs);
    r->busy_ms = busy_ms;
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_handler(r->db, rows_busy, r);
    if (rc == SQLITE_OK && (what = "setup", 1))
        rc = sqlite3_exec(r->db, setup, NULL, NULL, NULL);
    struct { sqlite3_stmt **stmt; const char *sql; } prep[] = {
        {&r->begin_write, "BEGIN IMMEDIATE"}, {&r->begin_read, "BEGIN"}, {&r->commit, "COMMIT"},
        {&r->rollback, "ROLLBACK"},
    };
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof prep / sizeof prep[0]; i++) {
        what = "prepare";
        rc = sqlite3_prepare_v3(r->db, prep[i].sql, -1, SQLITE_PREPARE_PERSISTENT, prep[i].stmt, NULL);
    }
    for (size_t i = 0; rc == SQLITE_OK && i < nsql; i++) {
        what = "prepare";
        rc = sqlite3_prepare_v3(r->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, own[i], NULL);
    }
    Py_END_ALLOW_THREADS
    if (rc != SQLITE_OK) {
        raise_sqlite(r, what, rc);
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static const char *vfs_of(PyObject *vfs_obj) {
    if (vfs_obj == Py_None)
        return NULL;
    if (vfs_obj == NULL)
        return WB_NAME;
    return PyUnicode_AsUTF8(vfs_obj);
}

static PyObject *open_rows(PyObject *module, PyObject *args) {
    const char *path, *setup, *sql[2];
    int busy_ms;
    PyObject *outcome_type, *vfs_obj = NULL;
    if (!PyArg_ParseTuple(args, "sisssO|O:open_rows", &path, &busy_ms, &setup, &sql[0], &sql[1], &outcome_type,
                          &vfs_obj))
        return NULL;
    const char *vfs = vfs_of(vfs_obj);
    if (vfs == NULL && PyErr_Occurred())
        return NULL;
    return (PyObject *)rows_open(path, busy_ms, setup, sql, 2, outcome_type, NULL, vfs);
}

static PyObject *open_log_rows(PyObject *module, PyObject *args) {
    const char *path, *setup, *sql[5];
    int busy_ms;
    PyObject *outcome_type, *index, *vfs_obj = NULL;
    if (!PyArg_ParseTuple(args, "sis(sssss)OO|O:open_log_rows", &path, &busy_ms, &setup, &sql[0], &sql[1], &sql[2],
                          &sql[3], &sql[4], &index, &outcome_type, &vfs_obj))
        return NULL;
    if (!PyObject_TypeCheck(index, &LogIndexType)) {
        PyErr_SetString(PyExc_TypeError, "index must be a LogIndex");
        return NULL;
    }
    const char *vfs = vfs_of(vfs_obj);
    if (vfs == NULL && PyErr_Occurred())
        return NULL;
    return (PyObject *)rows_open(path, busy_ms, setup, sql, 5, outcome_type, (LogIndex *)index, vfs);
}

static void rows_dealloc(Rows *r) {
    rows_free_db(r);
    Py_XDECREF(r->outcome_type);
    Py_XDECREF(r->log);
    PyObject_Free(r);
}

static int rows_enter(Rows *r) {
    if (r->db == NULL || r->closing) {
        PyErr_SetString(Error, "closed: the rows connection is closed (code 21)");
        return -1;
    }
    if (r->busy) {
        PyErr_SetString(Error, "misuse: one rows connection used by two threads at once (code 21)");
        return -1;
    }
    r->busy = 1;
    return 0;
}

static void rows_leave(Rows *r) {
    r->busy = 0;
    if (r->closing)
        rows_free_db(r);
}

static PyObject *rows_close(Rows *r, PyObject *unused) {
    if (r->busy)
        r->closing = 1; /* another thread is inside a call: it closes when it leaves */
    else
        rows_free_db(r);
    Py_RETURN_NONE;
}

/* ---- a batch read into C --------------------------------------------------------------- */

typedef struct {
    const char *tenant, *pcs_id;
    Py_ssize_t tenant_len, pcs_id_len;
    Py_ssize_t out_off, out_len; /* the outcome's bytes in the batch buffer */
    PyObject *tenant_obj, *pcs_id_obj, *outcome; /* held while the GIL is released */
    int won;
    unsigned char *found; /* a loser's winner / a hit: its stored bytes (malloc) */
    int found_len;
    /* the log layout: the key's hash, the batch's first row of this key, and (on that row) the
       key's state -- stored or written by this call (st_action 1 insert, 2 update) */
    uint64_t h;
    Py_ssize_t head;
    int st_exists, st_action, st_len;
    int64_t st_seq;
    double st_exp;
    const unsigned char *st_ptr;
    unsigned char *stored; /* the stored row's bytes (malloc) */
} Row;

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Buf;

static int buf_put(Buf *b, const char *data, Py_ssize_t n) {
    if (b->len + n > b->cap) {
        Py_ssize_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n)
            cap *= 2;
        char *grown = PyMem_Realloc(b->buf, (size_t)cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->buf = grown;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, data, (size_t)n);
    b->len += n;
    return 0;
}

static int ascii_alnum(const char *s, Py_ssize_t n) {
    if (n == 0)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
            return 0;
    }
    return 1;
}

/* an ASCII str that json.dumps(ensure_ascii=True) writes between its quotes unchanged */
static const char *json_plain(PyObject *s, Py_ssize_t *n) {
    if (!PyUnicode_CheckExact(s) || !PyUnicode_IS_ASCII(s))
        return NULL;
    const char *p = (const char *)PyUnicode_DATA(s);
    *n = PyUnicode_GET_LENGTH(s);
    for (Py_ssize_t i = 0; i < *n; i++) {
        unsigned char c = (unsigned char)p[i];
#if FLK_PLANTED_BUG == 2
        if (c < 0x20 || c == '\\') /* planted: a quote goes through unescaped */
#else
        if (c < 0x20 || c == '"' || c == '\\' || c == 0x7f)
#endif
            return NULL;
    }
    return p;
}

/* repr(x) of a finite float, the last answer reused (compared bit for bit: 0.0 is not -0.0) */
static int float_repr(Rows *r, double x, const char **text, Py_ssize_t *n) {
    if (r->last_len == 0 || memcmp(&x, &r->last_x, sizeof x) != 0) {
        char *s = PyOS_double_to_string(x, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (s == NULL)
            return -1;
        size_t len = strlen(s);
        if (len >= sizeof r->last_repr) {
            PyMem_Free(s);
            return 1; /* never for a double, but the reference decides */
        }
        memcpy(r->last_repr, s, len);
        PyMem_Free(s);
        r->last_x = x;
        r->last_len = (Py_ssize_t)len;
    }
    *text = r->last_repr;
    *n = r->last_len;
    return 0;
}

static PyObject *S_digest, *S_status, *S_body, *S_first_seen, *S_region, *S_policy_version, *S_to_bytes;

/* StoredOutcome.to_bytes of the common form written into b: 0 done, 1 not the common form
 * (the caller asks to_bytes()), -1 error */
static int outcome_bytes(Rows *r, PyObject *o, Buf *b) {
    if (Py_TYPE(o) != (PyTypeObject *)r->outcome_type)
        return 1;
    PyObject *d = PyObject_GenericGetDict(o, NULL);
    if (d == NULL) {
        PyErr_Clear();
        return 1;
    }
    int res = 1;
    PyObject *digest = PyDict_GetItemWithError(d, S_digest);
    PyObject *status = digest ? PyDict_GetItemWithError(d, S_status) : NULL;
    PyObject *body = status ? PyDict_GetItemWithError(d, S_body) : NULL;
    PyObject *first_seen = body ? PyDict_GetItemWithError(d, S_first_seen) : NULL;
    PyObject *region = first_seen ? PyDict_GetItemWithError(d, S_region) : NULL;
    PyObject *version = region ? PyDict_GetItemWithError(d, S_policy_version) : NULL;
    if (version == NULL) {
        if (PyErr_Occurred())
            res = -1;
        goto done;
    }
    if (!PyUnicode_CheckExact(digest) || !PyUnicode_IS_ASCII(digest) || !PyLong_CheckExact(status)
        || !PyFloat_CheckExact(first_seen) || !PyBytes_CheckExact(body))
        goto done;
    const char *dg = (const char *)PyUnicode_DATA(digest);
    Py_ssize_t dn = PyUnicode_GET_LENGTH(digest);
    if (!ascii_alnum(dg, dn))
        goto done;
    int overflow = 0;
    long long st = PyLong_AsLongLongAndOverflow(status, &overflow);
    if (overflow || (st == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        goto done;
    }
    double fs = PyFloat_AS_DOUBLE(first_seen);
    if (!isfinite(fs))
        goto done;
    Py_ssize_t rn, vn;
    const char *rg = json_plain(region, &rn), *vs = rg ? json_plain(version, &vn) : NULL;
    if (vs == NULL)
        goto done;
    const char *ft;
    Py_ssize_t fn;
    int got = float_repr(r, fs, &ft, &fn);
    if (got != 0) {
        res = got;
        goto done;
    }
    char num[32];
    int sn = snprintf(num, sizeof num, "%lld", st);
    /* ["<digest>",<status>,<first_seen>,"<region>","<policy_version>"]\n<body> */
    if (buf_put(b, "[\"", 2) || buf_put(b, dg, dn) || buf_put(b, "\",", 2) || buf_put(b, num, sn)
        || buf_put(b, ",", 1) || buf_put(b, ft, fn) || buf_put(b, ",\"", 2) || buf_put(b, rg, rn)
        || buf_put(b, "\",\"", 3) || buf_put(b, vs, vn) || buf_put(b, "\"]\n", 3)
        || buf_put(b, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))) {
        res = -1;
        goto done;
    }
    res = 0;
done:
    Py_DECREF(d);
    return res;
}

static const char *utf8_of(PyObject *s, Py_ssize_t *n) {
    if (!PyUnicode_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "tenant and pcs_id must be str");
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(s, n); /* cached in the str; raises on a lone surrogate */
}

static void rows_release(Row *rows, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(rows[i].tenant_obj);
        Py_XDECREF(rows[i].pcs_id_obj);
        Py_XDECREF(rows[i].outcome);
        free(rows[i].found);
        free(rows[i].stored);
    }
    PyMem_Free(rows);
}

/* check_keys' common case: the tenant an exact str of the set good (tenants that passed
 * the tenant-id rule), the pcs_id an exact str of 1 to 256 characters without a newline.
 * 1 passed, 0 the reference decides, -1 error */
static int key_passes(PyObject *good, PyObject *tenant, PyObject *pcs_id) {
    if (!PyUnicode_CheckExact(tenant) || !PyUnicode_CheckExact(pcs_id))
        return 0;
    Py_ssize_t n = PyUnicode_GET_LENGTH(pcs_id);
    if (n < 1 || n > 256)
        return 0;
    Py_ssize_t nl = PyUnicode_FindChar(pcs_id, '\n', 0, n, 1);
    if (nl != -1)
        return nl == -2 ? -1 : 0;
    return PySet_Contains(good, tenant);
}

/* the keys (and outcomes) of seq read into rows (GIL held); with_outcome: items are
 * (tenant, pcs_id, outcome), their bytes written to b. good: the set of tenants known to
 * pass the tenant-id rule (None: the keys were checked): a key this check does not pass
 * sets *unchecked and reads nothing (the caller answers None: the reference checks) */
static Row *read_batch(Rows *r, PyObject *seq, Py_ssize_t n, int with_outcome, Buf *b, PyObject *good,
                       int *unchecked, PyObject *mid) {
    Row *rows = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Row));
    if (rows == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        Row *row = &rows[i];
        PyObject *item = items[i];
        Py_ssize_t item_size = (PyTuple_Check(item) || PyList_Check(item)) ? PySequence_Fast_GET_SIZE(item) : -1;
        if (item_size != (with_outcome ? 3 : 2) && !(with_outcome && item_size == 4)) {
            PyErr_SetString(PyExc_TypeError, with_outcome ? "items are (tenant, pcs_id, outcome) tuples"
                                                          : "keys are (tenant, pcs_id) tuples");
            goto fail;
        }
        PyObject **fields = PySequence_Fast_ITEMS(item);
        int fresh = 0; /* a fresh row (tenant, pcs_id, digest, body): its bytes are "[\"" digest mid body */
        if (item_size == 4) {
            if (mid == NULL) {
                PyErr_SetString(PyExc_TypeError, "items are (tenant, pcs_id, outcome) tuples");
                goto fail;
            }
            fresh = 1;
        }
        if (good != Py_None) {
            int passes = key_passes(good, fields[0], fields[1]);
            if (passes <= 0) {
                if (passes == 0)
                    *unchecked = 1;
                goto fail;
            }
        }
        row->tenant_obj = Py_NewRef(fields[0]);
        row->pcs_id_obj = Py_NewRef(fields[1]);
        if ((row->tenant = utf8_of(row->tenant_obj, &row->tenant_len)) == NULL
            || (row->pcs_id = utf8_of(row->pcs_id_obj, &row->pcs_id_len)) == NULL)
            goto fail;
        if (!with_outcome)
            continue;
        row->out_off = b->len;
        if (fresh) {
            PyObject *digest = fields[2], *body = fields[3];
            if (!PyUnicode_CheckExact(digest) || !PyUnicode_IS_ASCII(digest) || !PyBytes_CheckExact(body)
                || !ascii_alnum((const char *)PyUnicode_DATA(digest), PyUnicode_GET_LENGTH(digest))) {
                *unchecked = 1; /* not the common form: the store builds the outcome and asks put_many */
                goto fail;
            }
#if FLK_PLANTED_BUG == 4
            Py_ssize_t dn = PyUnicode_GET_LENGTH(digest) - 1; /* planted: the digest's last digit dropped */
#else
            Py_ssize_t dn = PyUnicode_GET_LENGTH(digest);
#endif
            if (buf_put(b, "[\"", 2) || buf_put(b, (const char *)PyUnicode_DATA(digest), dn)
                || buf_put(b, PyBytes_AS_STRING(mid), PyBytes_GET_SIZE(mid))
                || buf_put(b, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body)))
                goto fail;
            row->out_len = b->len - row->out_off;
            continue;
        }
        row->outcome = Py_NewRef(fields[2]);
        int got = outcome_bytes(r, row->outcome, b);
        if (got < 0)
            goto fail;
        if (got > 0) { /* not the common form: the reference's own bytes */
            PyObject *raw = PyObject_CallMethodNoArgs(row->outcome, S_to_bytes);
            if (raw == NULL)
                goto fail;
            if (!PyBytes_Check(raw)) {
                Py_DECREF(raw);
                PyErr_SetString(PyExc_TypeError, "to_bytes() did not return bytes");
                goto fail;
            }
            int put = buf_put(b, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw));
            Py_DECREF(raw);
            if (put)
                goto fail;
        }
        row->out_len = b->len - row->out_off;
    }
    return rows;
fail:
    rows_release(rows, n);
    return NULL;
}

static int bind_key(sqlite3_stmt *stmt, const Row *row) {
    int rc = sqlite3_bind_text(stmt, 1, row->tenant, (int)row->tenant_len, SQLITE_STATIC);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_text(stmt, 2, row->pcs_id, (int)row->pcs_id_len, SQLITE_STATIC);
    return rc;
}

/* the live row's outcome of row's key into row->found (GIL released); 0 / 1 found / SQLite code */
static int read_found(Rows *r, Row *row, double now) {
    sqlite3_stmt *get = r->get;
    int rc = bind_key(get, row);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_double(get, 3, now);
    if (rc != SQLITE_OK) {
        sqlite3_reset(get);
        return rc;
    }
    rc = sqlite3_step(get);
    int res = 0;
    if (rc == SQLITE_ROW) {
        const void *blob = sqlite3_column_blob(get, 0);
        int len = sqlite3_column_bytes(get, 0);
        row->found = malloc(len > 0 ? (size_t)len : 1);
        if (row->found == NULL) {
            res = SQLITE_NOMEM;
        } else {
            if (len > 0)
                memcpy(row->found, blob, (size_t)len);
            row->found_len = len;
            res = 1;
        }
    } else if (rc != SQLITE_DONE) {
        res = rc;
    }
    sqlite3_reset(get);
    return res;
}

/* ---- the log layout: rows in write order, each process's key index in memory ------------------ */
/* layout "log" of sqlite.py: one row per key in dedup_log (seq INTEGER PRIMARY KEY AUTOINCREMENT,
 * tenant, pcs_id, expires_at, outcome), rows appended in seq order, so a batch's fresh rows fill the
 * table's last pages instead of one random page of a key index per key. A LogIndex maps a key's
 * hash to the seq of its row (several slots may share a hash: a hit is checked against the row it
 * reads), complete up to `last`; every call catches it up (rows with seq > last) inside its
 * transaction, so first-write-wins rests on SQLite's write lock as in the keyed layout. One
 * LogIndex is shared by the store's threads (their Rows) under its mutex, taken after the
 * transaction began and with the GIL released. The pure reference is sqlite.py's LogRows and
 * LogIndex; tests/dedup/test_sqlite_log_layout.py compares them with the keyed store. */

typedef struct {
    uint64_t h;
    int64_t seq; /* 0: empty; -1: removed (probing goes on past it) */
} Slot;

struct LogIndex {
    PyObject_HEAD
    pthread_mutex_t mu;
    Slot *slots;
    size_t cap, used; /* used: slots not empty (removed ones included) */
    size_t live;      /* slots holding a seq */
    int64_t last;     /* the largest seq read or written */
};

static uint64_t key_hash(const char *t, Py_ssize_t tn, const char *p, Py_ssize_t pn) {
    uint64_t a = (uint64_t)_Py_HashBytes(t, tn), b = (uint64_t)_Py_HashBytes(p, pn);
    return (a * 0x9E3779B97F4A7C15ULL) ^ ((b << 1) | (b >> 63)) ^ (uint64_t)tn;
}

static int ix_grow(LogIndex *ix) {
    size_t cap = ix->cap ? ix->cap : 1024;
    while (cap < 4 * (ix->live + 1))
        cap *= 2;
    Slot *slots = calloc(cap, sizeof(Slot));
    if (slots == NULL)
        return SQLITE_NOMEM;
    for (size_t i = 0; i < ix->cap; i++) {
        Slot s = ix->slots[i];
        if (s.seq <= 0)
            continue;
        size_t j = (size_t)s.h & (cap - 1);
        while (slots[j].seq != 0)
            j = (j + 1) & (cap - 1);
        slots[j] = s;
    }
    free(ix->slots);
    ix->slots = slots;
    ix->cap = cap;
    ix->used = ix->live;
    return SQLITE_OK;
}

static int ix_add(LogIndex *ix, uint64_t h, int64_t seq) {
    if (2 * (ix->used + 1) > ix->cap) {
        int rc = ix_grow(ix);
        if (rc != SQLITE_OK)
            return rc;
    }
    size_t j = (size_t)h & (ix->cap - 1);
    while (ix->slots[j].seq > 0) {
        if (ix->slots[j].h == h && ix->slots[j].seq == seq)
            return SQLITE_OK;
        j = (j + 1) & (ix->cap - 1);
    }
    if (ix->slots[j].seq == 0)
        ix->used++;
    ix->slots[j].h = h;
    ix->slots[j].seq = seq;
    ix->live++;
    return SQLITE_OK;
}

static void ix_remove(LogIndex *ix, uint64_t h, int64_t seq) {
    if (ix->cap == 0)
        return;
    for (size_t j = (size_t)h & (ix->cap - 1); ix->slots[j].seq != 0; j = (j + 1) & (ix->cap - 1))
        if (ix->slots[j].h == h && ix->slots[j].seq == seq) {
            ix->slots[j].seq = -1;
            ix->live--;
            return;
        }
}

/* the slot after j in h's probe chain that holds a seq filed under h (from the chain's start when
   j is (size_t)-1), or (size_t)-1 at the chain's end */
static size_t ix_next(LogIndex *ix, uint64_t h, size_t j) {
    if (ix->cap == 0)
        return (size_t)-1;
    j = j == (size_t)-1 ? (size_t)h & (ix->cap - 1) : (j + 1) & (ix->cap - 1);
    for (; ix->slots[j].seq != 0; j = (j + 1) & (ix->cap - 1))
        if (ix->slots[j].seq > 0 && ix->slots[j].h == h)
            return j;
    return (size_t)-1;
}

/* rows committed since the index's last (GIL released, mutex held, a transaction open) */
static int log_catch_up(Rows *r) {
#if FLK_PLANTED_BUG == 10
    return SQLITE_OK; /* planted: the rows other connections wrote are never filed */
#endif
    LogIndex *ix = r->log;
    sqlite3_stmt *st = r->lg_since;
    int rc = sqlite3_bind_int64(st, 1, ix->last);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        const char *t = (const char *)sqlite3_column_text(st, 1), *p = (const char *)sqlite3_column_text(st, 2);
        if (t == NULL || p == NULL) {
            rc = SQLITE_CORRUPT;
            break;
        }
        rc = ix_add(ix, key_hash(t, sqlite3_column_bytes(st, 1), p, sqlite3_column_bytes(st, 2)), seq);
        if (seq > ix->last)
            ix->last = seq;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* the stored row of row's key, live or expired, into row->st_* (GIL released, mutex held):
   0 absent / 1 found / SQLite code. Slots whose row is gone are removed. */
static int log_lookup(Rows *r, Row *row) {
    LogIndex *ix = r->log;
    sqlite3_stmt *st = r->lg_row;
    for (size_t j = ix_next(ix, row->h, (size_t)-1); j != (size_t)-1; j = ix_next(ix, row->h, j)) {
        int64_t seq = ix->slots[j].seq;
        int rc = sqlite3_bind_int64(st, 1, seq);
        if (rc == SQLITE_OK)
            rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) { /* the row is gone (deleted): so is its slot */
            sqlite3_reset(st);
            ix->slots[j].seq = -1;
            ix->live--;
            continue;
        }
        if (rc != SQLITE_ROW) {
            sqlite3_reset(st);
            return rc;
        }
        const char *t = (const char *)sqlite3_column_text(st, 0), *p = (const char *)sqlite3_column_text(st, 1);
        int tn = sqlite3_column_bytes(st, 0), pn = sqlite3_column_bytes(st, 1);
        if (t != NULL && p != NULL && tn == row->tenant_len && pn == row->pcs_id_len
            && memcmp(t, row->tenant, (size_t)tn) == 0 && memcmp(p, row->pcs_id, (size_t)pn) == 0) {
            const void *blob = sqlite3_column_blob(st, 3);
            int len = sqlite3_column_bytes(st, 3);
            row->stored = malloc(len > 0 ? (size_t)len : 1);
            if (row->stored == NULL) {
                sqlite3_reset(st);
                return SQLITE_NOMEM;
            }
            if (len > 0)
                memcpy(row->stored, blob, (size_t)len);
            row->st_seq = seq;
            row->st_exp = sqlite3_column_double(st, 2);
            row->st_ptr = row->stored;
            row->st_len = len;
            row->st_exists = 1;
            sqlite3_reset(st);
            return 1;
        }
        sqlite3_reset(st);
    }
    return 0;
}

/* the first row of the batch before i with row i's key (i itself when none) */
static Py_ssize_t log_head(Row *rows, Py_ssize_t i) {
    Row *row = &rows[i];
    for (Py_ssize_t j = 0; j < i; j++) {
        Row *o = &rows[j];
        if (o->head == j && o->h == row->h && o->tenant_len == row->tenant_len && o->pcs_id_len == row->pcs_id_len
            && memcmp(o->tenant, row->tenant, (size_t)row->tenant_len) == 0
            && memcmp(o->pcs_id, row->pcs_id, (size_t)row->pcs_id_len) == 0)
            return j;
    }
    return i;
}

/* get_many of a log file (GIL released): one read transaction, the index caught up in it */
static int log_get(Rows *r, Row *rows, Py_ssize_t n, double now) {
    int rc = step_done(r->begin_read);
    if (rc != SQLITE_OK)
        return rc;
    pthread_mutex_lock(&r->log->mu);
    rc = log_catch_up(r);
    for (Py_ssize_t i = 0; rc == SQLITE_OK && i < n; i++) {
        Row *row = &rows[i];
        row->h = key_hash(row->tenant, row->tenant_len, row->pcs_id, row->pcs_id_len);
        row->head = log_head(rows, i);
        if (row->head != i) {
            Row *hd = &rows[row->head];
            if (hd->found != NULL) {
                row->found = malloc(hd->found_len > 0 ? (size_t)hd->found_len : 1);
                if (row->found == NULL) {
                    rc = SQLITE_NOMEM;
                    break;
                }
                memcpy(row->found, hd->found, (size_t)hd->found_len);
                row->found_len = hd->found_len;
            }
            continue;
        }
        int got = log_lookup(r, row);
        if (got < 0 || got > 1) {
            rc = got;
            break;
        }
        if (got == 1 && row->st_exp > now) { /* the answer takes the stored bytes */
            row->found = row->stored;
            row->found_len = row->st_len;
            row->stored = NULL;
        }
    }
    pthread_mutex_unlock(&r->log->mu);
    return rc;
}

static int log_write(Rows *r, Row *row, double expires_at) {
    sqlite3_stmt *st = row->st_action == 1 ? r->lg_insert : r->lg_update;
    int rc;
    if (row->st_action == 1) {
        rc = sqlite3_bind_int64(st, 1, row->st_seq);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_text(st, 2, row->tenant, (int)row->tenant_len, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_text(st, 3, row->pcs_id, (int)row->pcs_id_len, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_double(st, 4, expires_at);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_blob(st, 5, row->st_ptr, row->st_len, SQLITE_STATIC);
    } else {
        rc = sqlite3_bind_double(st, 1, expires_at);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_blob(st, 2, row->st_ptr, row->st_len, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 3, row->st_seq);
    }
    if (rc == SQLITE_OK)
        rc = step_done(st);
    else
        sqlite3_reset(st);
    return rc;
}

/* put_many of a log file (GIL released, the write transaction begun): items in order, of several
   with one key the first wins unless its write expired at once (as the keyed upsert); a loser
   gets the key's final bytes. *next: the largest seq this call wrote. */
static int log_put(Rows *r, Row *rows, Py_ssize_t n, const char *buf, double now, double expires_at,
                   int64_t *next) {
    LogIndex *ix = r->log;
    int rc = log_catch_up(r);
    if (rc != SQLITE_OK)
        return rc;
    int64_t top = ix->last;
    rc = sqlite3_step(r->lg_seqmax);
    if (rc == SQLITE_ROW) {
        int64_t used = sqlite3_column_int64(r->lg_seqmax, 0);
        if (used > top)
            top = used;
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_reset(r->lg_seqmax);
    for (Py_ssize_t i = 0; rc == SQLITE_OK && i < n; i++) {
        Row *row = &rows[i];
        row->h = key_hash(row->tenant, row->tenant_len, row->pcs_id, row->pcs_id_len);
        row->head = log_head(rows, i);
        Row *hd = &rows[row->head];
        if (row->head == i) {
            int got = log_lookup(r, row);
            if (got < 0 || got > 1) {
                rc = got;
                break;
            }
        }
        if (hd->st_exists && hd->st_exp > now) {
            row->won = 0;
            continue;
        }
#if FLK_PLANTED_BUG == 9
        row->won = row->head == i; /* planted: a key written again in its batch is answered as a loser */
#else
        row->won = 1;
#endif
        if (!hd->st_exists) {
            hd->st_exists = 1;
            hd->st_seq = ++top;
            hd->st_action = 1;
        } else if (hd->st_action != 1) {
            hd->st_action = 2;
        }
        hd->st_exp = expires_at;
        hd->st_ptr = (const unsigned char *)buf + row->out_off;
        hd->st_len = (int)row->out_len;
    }
    for (Py_ssize_t i = 0; rc == SQLITE_OK && i < n; i++)
        if (rows[i].head == i && rows[i].st_action)
            rc = log_write(r, &rows[i], expires_at);
    for (Py_ssize_t i = 0; rc == SQLITE_OK && i < n; i++) {
        Row *row = &rows[i], *hd = &rows[row->head];
        if (row->won)
            continue;
        if (!(hd->st_exp > now))
            return SQLITE_CORRUPT; /* a loser's winner is live: never here */
        row->found = malloc(hd->st_len > 0 ? (size_t)hd->st_len : 1);
        if (row->found == NULL)
            return SQLITE_NOMEM;
        if (hd->st_len > 0)
            memcpy(row->found, hd->st_ptr, (size_t)hd->st_len);
        row->found_len = hd->st_len;
    }
    *next = top;
    return rc;
}

/* after a committed log_put: the rows it inserted, filed (mutex held) */
static int log_file_inserts(Rows *r, Row *rows, Py_ssize_t n, int64_t next) {
    int rc = SQLITE_OK;
    for (Py_ssize_t i = 0; rc == SQLITE_OK && i < n; i++)
        if (rows[i].head == i && rows[i].st_action == 1)
            rc = ix_add(r->log, rows[i].h, rows[i].st_seq);
    if (next > r->log->last)
        r->log->last = next;
    return rc;
}

/* ---- get_many --------------------------------------------------------------------------- */

static PyObject *rows_get_many(Rows *r, PyObject *args) {
    PyObject *keys, *good = Py_None;
    double now;
    if (!PyArg_ParseTuple(args, "Od|O:get_many", &keys, &now, &good))
        return NULL;
    if (good != Py_None && !PyAnySet_Check(good)) {
        PyErr_SetString(PyExc_TypeError, "good must be a set or None");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(keys, "keys must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int unchecked = 0;
    Row *rows = read_batch(r, seq, n, 0, NULL, good, &unchecked, NULL);
    if (unchecked) {
        Py_DECREF(seq);
        Py_RETURN_NONE;
    }
    if (rows == NULL || rows_enter(r) < 0) {
        if (rows != NULL)
            rows_release(rows, n);
        Py_DECREF(seq);
        return NULL;
    }
    int rc = SQLITE_OK;
    char msg[256];
    Py_BEGIN_ALLOW_THREADS
    if (r->log != NULL)
        rc = log_get(r, rows, n, now);
    else
        rc = step_done(r->begin_read); /* one snapshot for the whole batch */
    for (Py_ssize_t i = 0; r->log == NULL && rc == SQLITE_OK && i < n; i++) {
        int got = read_found(r, &rows[i], now);
        rc = got < 0 || got > 1 ? got : SQLITE_OK;
#if FLK_PLANTED_BUG == 3
        if (got == 0 && i > 0 && rows[i - 1].found != NULL) { /* planted: a miss after a hit answers the hit */
            rows[i].found = malloc((size_t)rows[i - 1].found_len + 1);
            memcpy(rows[i].found, rows[i - 1].found, (size_t)rows[i - 1].found_len);
            rows[i].found_len = rows[i - 1].found_len;
        }
#endif
    }
    rc = end_batch(r, rc, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    PyObject *out = NULL;
    if (rc != SQLITE_OK) {
        PyErr_Format(Error, "get_many: %s (code %d)", msg, rc);
    } else if ((out = PyList_New(n)) != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *v = rows[i].found == NULL ? Py_NewRef(Py_None)
                                                : PyBytes_FromStringAndSize((char *)rows[i].found, rows[i].found_len);
            if (v == NULL) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, i, v);
        }
    }
    rows_leave(r);
    rows_release(rows, n);
    Py_DECREF(seq);
    return out;
}

/* ---- put_many ---------------------------------------------------------------------------- */

static PyObject *rows_put_many(Rows *r, PyObject *args) {
    PyObject *items, *good = Py_None, *mid = Py_None;
    double now, expires_at;
    if (!PyArg_ParseTuple(args, "Odd|OO:put_many", &items, &now, &expires_at, &good, &mid))
        return NULL;
    if (good != Py_None && !PyAnySet_Check(good)) {
        PyErr_SetString(PyExc_TypeError, "good must be a set or None");
        return NULL;
    }
    if (mid != Py_None && !PyBytes_CheckExact(mid)) {
        PyErr_SetString(PyExc_TypeError, "mid must be bytes or None");
        return NULL;
    }
    int raw_answers = mid != Py_None; /* answers: None (written) or the winner's bytes */
    PyObject *seq = PySequence_Fast(items, "items must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Buf b = {NULL, 0, 0};
    int unchecked = 0;
    Row *rows = read_batch(r, seq, n, 1, &b, good, &unchecked, raw_answers ? mid : NULL);
    if (unchecked) {
        PyMem_Free(b.buf);
        Py_DECREF(seq);
        Py_RETURN_NONE;
    }
    if (rows == NULL || rows_enter(r) < 0) {
        if (rows != NULL)
            rows_release(rows, n);
        PyMem_Free(b.buf);
        Py_DECREF(seq);
        return NULL;
    }
    int rc;
    char msg[256];
    Py_BEGIN_ALLOW_THREADS
    sqlite3_stmt *up = r->upsert;
    rc = step_done(r->begin_write);
    if (r->log != NULL && rc == SQLITE_OK) {
        int64_t next = 0;
        pthread_mutex_lock(&r->log->mu);
        rc = log_put(r, rows, n, b.buf, now, expires_at, &next);
        rc = end_batch(r, rc, msg, sizeof msg);
        if (rc == SQLITE_OK)
            rc = log_file_inserts(r, rows, n, next);
        pthread_mutex_unlock(&r->log->mu);
    } else if (r->log != NULL) {
        rc = end_batch(r, rc, msg, sizeof msg);
    }
    for (Py_ssize_t i = 0; r->log == NULL && rc == SQLITE_OK && i < n; i++) {
        Row *row = &rows[i];
        rc = bind_key(up, row);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_double(up, 3, expires_at);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_blob(up, 4, b.buf + row->out_off, (int)row->out_len, SQLITE_STATIC);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_double(up, 5, now);
        if (rc == SQLITE_OK)
            rc = step_done(up);
        if (rc != SQLITE_OK)
            break;
#if FLK_PLANTED_BUG == 1
        row->won = 1; /* planted: every row counted as written, a kept row's caller told it won */
#else
        row->won = sqlite3_changes(r->db) == 1;
#endif
        if (!row->won) { /* the winner under the write lock: it cannot change before COMMIT */
            int got = read_found(r, row, now);
            rc = got == 1 ? SQLITE_OK : got == 0 ? SQLITE_CORRUPT : got; /* a kept row is live */
        }
    }
    if (r->log == NULL)
        rc = end_batch(r, rc, msg, sizeof msg);
    Py_END_ALLOW_THREADS
    PyObject *out = NULL;
    if (rc != SQLITE_OK) {
        PyErr_Format(Error, "put_many: %s (code %d)", rc == SQLITE_CORRUPT ? "a conflicting row vanished" : msg, rc);
    } else if ((out = PyList_New(n)) != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            Row *row = &rows[i];
            PyObject *pair;
            if (raw_answers) {
                pair = row->won ? Py_NewRef(Py_None)
                                : PyBytes_FromStringAndSize((char *)row->found, row->found_len);
            } else if (row->won) {
                pair = PyTuple_Pack(2, Py_True, row->outcome);
            } else {
                PyObject *raw = PyBytes_FromStringAndSize((char *)row->found, row->found_len);
                pair = raw == NULL ? NULL : PyTuple_Pack(2, Py_False, raw);
                Py_XDECREF(raw);
            }
            if (pair == NULL) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, i, pair);
        }
    }
    rows_leave(r);
    rows_release(rows, n);
    PyMem_Free(b.buf);
    Py_DECREF(seq);
    return out;
}

/* ---- LogIndex: the object (its Python methods serve the store's own log statements) -------------- */

static PyObject *logindex_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    if (!PyArg_ParseTuple(args, ":LogIndex"))
        return NULL;
    LogIndex *ix = (LogIndex *)type->tp_alloc(type, 0);
    if (ix == NULL)
        return NULL;
    pthread_mutex_init(&ix->mu, NULL);
    ix->slots = NULL;
    ix->cap = ix->used = ix->live = 0;
    ix->last = 0;
    return (PyObject *)ix;
}

static void logindex_dealloc(LogIndex *ix) {
    pthread_mutex_destroy(&ix->mu);
    free(ix->slots);
    Py_TYPE(ix)->tp_free((PyObject *)ix);
}

/* the hash of a (tenant, pcs_id) given from Python; -1 error */
static int logindex_key(PyObject *args, uint64_t *h, int64_t *seq) {
    PyObject *t, *p;
    long long s = 0;
    if (!PyArg_ParseTuple(args, seq ? "UUL" : "UU", &t, &p, &s))
        return -1;
    Py_ssize_t tn, pn;
    const char *tc = PyUnicode_AsUTF8AndSize(t, &tn), *pc = tc ? PyUnicode_AsUTF8AndSize(p, &pn) : NULL;
    if (pc == NULL)
        return -1;
    *h = key_hash(tc, tn, pc, pn);
    if (seq)
        *seq = s;
    return 0;
}

static PyObject *logindex_lock(LogIndex *ix, PyObject *unused) {
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&ix->mu);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *logindex_unlock(LogIndex *ix, PyObject *unused) {
    pthread_mutex_unlock(&ix->mu);
    Py_RETURN_NONE;
}

static PyObject *logindex_add(LogIndex *ix, PyObject *args) {
    uint64_t h;
    int64_t seq;
    if (logindex_key(args, &h, &seq) < 0)
        return NULL;
    if (seq < 1) {
        PyErr_SetString(PyExc_ValueError, "seq must be >= 1");
        return NULL;
    }
    if (ix_add(ix, h, seq) != SQLITE_OK)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *logindex_remove(LogIndex *ix, PyObject *args) {
    uint64_t h;
    int64_t seq;
    if (logindex_key(args, &h, &seq) < 0)
        return NULL;
    ix_remove(ix, h, seq);
    Py_RETURN_NONE;
}

static PyObject *logindex_candidates(LogIndex *ix, PyObject *args) {
    uint64_t h;
    if (logindex_key(args, &h, NULL) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    for (size_t j = ix_next(ix, h, (size_t)-1); out != NULL && j != (size_t)-1; j = ix_next(ix, h, j)) {
        PyObject *v = PyLong_FromLongLong(ix->slots[j].seq);
        if (v == NULL || PyList_Append(out, v) < 0)
            Py_CLEAR(out);
        Py_XDECREF(v);
    }
    return out;
}

static PyObject *logindex_get_last(LogIndex *ix, void *unused) {
    return PyLong_FromLongLong(ix->last);
}

static int logindex_set_last(LogIndex *ix, PyObject *v, void *unused) {
    long long x = v == NULL ? -1 : PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (x < ix->last) {
        PyErr_SetString(PyExc_ValueError, "last never goes back");
        return -1;
    }
    ix->last = x;
    return 0;
}

static Py_ssize_t logindex_len(LogIndex *ix) {
    return (Py_ssize_t)ix->live;
}

static PyObject *logindex_nbytes(LogIndex *ix, void *unused) {
    return PyLong_FromSize_t(ix->cap * sizeof(Slot));
}

static PyMethodDef logindex_methods[] = {
    {"lock", (PyCFunction)logindex_lock, METH_NOARGS, "take the index (waits with the GIL released)"},
    {"unlock", (PyCFunction)logindex_unlock, METH_NOARGS, "give the index back"},
    {"add", (PyCFunction)logindex_add, METH_VARARGS, "add(tenant, pcs_id, seq): file a row"},
    {"remove", (PyCFunction)logindex_remove, METH_VARARGS, "remove(tenant, pcs_id, seq): a row that is gone"},
    {"candidates", (PyCFunction)logindex_candidates, METH_VARARGS,
     "candidates(tenant, pcs_id) -> [seq]: the rows that may be this key's (read each, compare its key)"},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef logindex_getset[] = {
    {"last", (getter)logindex_get_last, (setter)logindex_set_last, "the largest seq read or written", NULL},
    {"nbytes", (getter)logindex_nbytes, NULL, "the bytes of its slot table", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PySequenceMethods logindex_seq = {.sq_length = (lenfunc)logindex_len};

static PyTypeObject LogIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flk.impl.dedup._fastsqlite.LogIndex",
    .tp_basicsize = sizeof(LogIndex),
    .tp_dealloc = (destructor)logindex_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A log-layout file's key index, in memory: key hash -> the seq of its row (see the log layout above).",
    .tp_methods = logindex_methods,
    .tp_getset = logindex_getset,
    .tp_as_sequence = &logindex_seq,
    .tp_new = logindex_new,
};

/* ---- the type and the module --------------------------------------------------------------- */

static PyMethodDef rows_methods[] = {
    {"get_many", (PyCFunction)rows_get_many, METH_VARARGS,
     "get_many(keys, now, good=None) -> [outcome bytes of the live row, or None] in key order; None: a key\n"
     "did not pass the common-case key check against the set good (the caller checks them, then calls with None)"},
    {"put_many", (PyCFunction)rows_put_many, METH_VARARGS,
     "put_many(items, now, expires_at, good=None, mid=None) -> [(True, outcome) | (False, the winner's bytes)],\n"
     "one transaction; None: as for get_many. With mid (bytes): an item may also be a fresh row\n"
     "(tenant, pcs_id, digest, body), written as b'[\"' + digest + mid + body (a digest not of ASCII letters\n"
     "and digits answers None), and the answers are None (written) or the winner's bytes"},
    {"close", (PyCFunction)rows_close, METH_NOARGS, "close the connection"},
    {"walbuf_stats", (PyCFunction)walbuf_stats, METH_NOARGS,
     "walbuf_stats() -> (writes SQLite asked of WAL files through this module's walbuf VFS, writes they\n"
     "took), counted over every connection of the process (tests/dedup/test_sqlite_walbuf.py)"},
    {NULL, NULL, 0, NULL}
};

static PyTypeObject RowsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flk.impl.dedup._fastsqlite.Rows",
    .tp_basicsize = sizeof(Rows),
    .tp_dealloc = (destructor)rows_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One SQLite connection of the dedup store with its prepared row statements.",
    .tp_methods = rows_methods,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_fastsqlite",
    "Compiled dedup rows of the SQLite store (see _fastsqlite.c).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__fastsqlite(void) {
    if (PyType_Ready(&RowsType) < 0 || PyType_Ready(&LogIndexType) < 0)
        return NULL;
    struct { PyObject **name; const char *text; } names[] = {
        {&S_digest, "payload_digest"}, {&S_status, "status"}, {&S_body, "body"}, {&S_first_seen, "first_seen"},
        {&S_region, "region"}, {&S_policy_version, "policy_version"}, {&S_to_bytes, "to_bytes"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i].name = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    if (wb_register() != SQLITE_OK) { /* no module: the store uses its pure rows */
        PyErr_SetString(PyExc_ImportError, "_fastsqlite: could not register the flk-walbuf SQLite VFS");
        Py_DECREF(m);
        return NULL;
    }
    Error = PyErr_NewException("flk.impl.dedup._fastsqlite.Error", PyExc_Exception, NULL);
    if (Error == NULL || PyModule_AddObjectRef(m, "Error", Error) < 0
        || PyModule_AddObjectRef(m, "Rows", (PyObject *)&RowsType) < 0
        || PyModule_AddObjectRef(m, "LogIndex", (PyObject *)&LogIndexType) < 0
        || PyModule_AddStringConstant(m, "sqlite_version", sqlite3_libversion()) < 0
        || PyModule_AddStringConstant(m, "WALBUF_VFS", WB_NAME) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
