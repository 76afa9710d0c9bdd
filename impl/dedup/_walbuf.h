/* The "flk-walbuf" SQLite VFS of the compiled dedup rows (included by _fastsqlite.c): the
 * default VFS ("unix") with one change -- the frames a transaction appends to the SQLite WAL
 * (the "-wal" file) reach the kernel in one write at the transaction's commit frame, not in
 * two pwrite calls per page.
 *
 * Why: SQLite writes each WAL frame as two pwrite calls (its 24-byte header, then the page).
 * A pwrite into the page cache costs ~4.5 us of kernel time here whatever its size (ext4's
 * write path), so a batch of 14 fresh rows -- ~28 dirty pages -- spent ~250 us in 56 calls,
 * on the batch thread, between the inbox WAL's fsync and the answers. One 115 KB pwrite of
 * the same bytes took 10 us (2-core VM, ext4; microbenchmark of both patterns, 3,000 batches).
 *
 * The rule (what is held, and until when). Writes to a WAL file are held in the file
 * object's buffer only while they extend it contiguously and are, in order, the WAL header
 * (32 bytes at offset 0), a frame header (24 bytes) or the page right after a held frame
 * header. The held bytes are written (one write) before anything else happens to the file:
 * any other write (a size SQLite does not append frames with, a gap, an overwrite, more than
 * WB_CAP bytes), a read, sync, truncate, size query, lock, file control or close; and, at
 * once, with the page of a *commit* frame (a frame header whose database-size field is not
 * zero), inside that page's xWrite, whose result is the write's. SQLite publishes a
 * transaction (the wal-index header other connections read) only after its commit frame's
 * write returned, so no connection -- in this process or another -- can see a frame that is
 * still held, and a failed write (disk full) fails the commit as it did before. A commit
 * frame header is held only behind held frames of the same transaction: SQLite rewrites
 * frame headers in place (walRewriteChecksums) after a read, with nothing held, and those
 * are written through. A crash loses only held bytes, which no header published.
 *
 * Everything else -- locks, the shared-memory wal-index, the database file, the other VFS
 * methods -- is the default VFS's own code on its own file objects (the VFS struct is a copy
 * of the default with xOpen replaced): connections through this VFS and through the default
 * one (the store's Python connections, other processes) share the file as before.
 */
#include <sqlite3.h>
#include <stdint.h>
#include <string.h>

#if FLK_PLANTED_BUG /* a planted build (a module of its own in the same process) registers its own name */
#define WB_STR2(x) #x
#define WB_STR(x) WB_STR2(x)
#define WB_NAME "flk-walbuf-planted-" WB_STR(FLK_PLANTED_BUG)
#else
#define WB_NAME "flk-walbuf"
#endif
/* the most bytes held: one write per 31 pages of a large transaction. The default VFS writes at
 * most 0x1ffff bytes in one call (unix seekAndWrite masks the size with it), so a larger write
 * would come back short -- SQLITE_FULL */
#if FLK_PLANTED_BUG == 7 /* planted: more held than the default VFS writes in one call */
#define WB_CAP 0x40000
#else
#define WB_CAP 0x1ffff
#endif
#define WB_FRAME_HEADER 24
#define WB_WAL_HEADER 32

typedef struct {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file object (allocated right after this struct) */
    int wal;            /* opened as a WAL file: writes may be held */
    unsigned char *buf; /* held bytes (sqlite3_malloc, WB_CAP) */
    sqlite3_int64 off;  /* file offset of buf[0] */
    int len;
    int header_held;    /* the last held write is a frame header: its page may follow */
    int commit_held;    /* ... and that header is a commit frame's */
} WbFile;

static sqlite3_vfs *wb_root;
static sqlite3_vfs wb_vfs;
/* writes SQLite asked of WAL files through this VFS, and writes they reached the kernel in */
static uint64_t wb_writes_asked, wb_writes_made;

#define WB_REAL(f) (((WbFile *)(f))->real)
#define WB_COUNT(counter) __atomic_fetch_add(&(counter), 1, __ATOMIC_RELAXED)

static int wb_flush(WbFile *f) {
    f->header_held = f->commit_held = 0;
    if (f->len == 0)
        return SQLITE_OK;
    int len = f->len;
    f->len = 0;
    WB_COUNT(wb_writes_made);
    return f->real->pMethods->xWrite(f->real, f->buf, len, f->off);
}

static int wb_write(sqlite3_file *file, const void *data, int n, sqlite3_int64 off) {
    WbFile *f = (WbFile *)file;
    if (!f->wal)
        return f->real->pMethods->xWrite(f->real, data, n, off);
    WB_COUNT(wb_writes_asked);
    int header = f->header_held, commit = f->commit_held; /* what the last write held, consumed here */
    f->header_held = f->commit_held = 0;
    int follows = f->len > 0 && off == f->off + f->len;
    /* 1: a frame header, 2: the page after a held frame header, 3: the WAL header; 0: through */
    int kind = (n == WB_FRAME_HEADER && (follows || f->len == 0)) ? 1
               : (header && follows) ? 2
               : (n == WB_WAL_HEADER && off == 0 && f->len == 0) ? 3 : 0;
    if (kind == 1) {
        const unsigned char *h = data;
        int is_commit = (h[4] | h[5] | h[6] | h[7]) != 0;
        if (is_commit && !follows)
            kind = 0; /* a commit header with no held frames before it (a rewrite, a one-page commit) */
        commit = is_commit;
    }
    if (kind == 0 || f->len + (sqlite3_int64)n > WB_CAP) { /* (a held kind follows the held bytes or starts them) */
        int rc = wb_flush(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (kind == 0 || n > WB_CAP)
        goto through;
    if (f->buf == NULL && (f->buf = sqlite3_malloc(WB_CAP)) == NULL)
        goto through;
    if (f->len == 0)
        f->off = off;
    memcpy(f->buf + f->len, data, (size_t)n);
    f->len += n;
    if (kind == 1) {
        f->header_held = 1;
        f->commit_held = commit;
    } else if (kind == 2 && commit && FLK_PLANTED_BUG != 5) { /* planted 5: the commit frame held */
        int rc = wb_flush(f); /* the transaction's last frame: all of it, in one write, now */
        return FLK_PLANTED_BUG == 8 ? SQLITE_OK : rc; /* planted 8: a failed write reported as done */
    }
    return SQLITE_OK;
through:
    WB_COUNT(wb_writes_made);
    return f->real->pMethods->xWrite(f->real, data, n, off);
}

/* every other method: the held bytes first, then the default VFS's method */
#define WB_FLUSHED(f) do { int rc_ = wb_flush((WbFile *)(f)); if (rc_ != SQLITE_OK) return rc_; } while (0)

static int wb_close(sqlite3_file *file) {
    WbFile *f = (WbFile *)file;
    int rc = wb_flush(f);
    int rc2 = f->real->pMethods->xClose(f->real);
    sqlite3_free(f->buf);
    f->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}
static int wb_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off) {
    if (FLK_PLANTED_BUG != 6) /* planted 6: a read past held bytes */
        WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xRead(WB_REAL(f), p, n, off);
}
static int wb_truncate(sqlite3_file *f, sqlite3_int64 size) {
    WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xTruncate(WB_REAL(f), size);
}
static int wb_sync(sqlite3_file *f, int flags) {
    WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xSync(WB_REAL(f), flags);
}
static int wb_file_size(sqlite3_file *f, sqlite3_int64 *size) {
    WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xFileSize(WB_REAL(f), size);
}
static int wb_lock(sqlite3_file *f, int level) {
    WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xLock(WB_REAL(f), level);
}
static int wb_unlock(sqlite3_file *f, int level) {
    WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xUnlock(WB_REAL(f), level);
}
static int wb_check_reserved(sqlite3_file *f, int *out) {
    WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xCheckReservedLock(WB_REAL(f), out);
}
static int wb_file_control(sqlite3_file *f, int op, void *arg) {
    WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xFileControl(WB_REAL(f), op, arg);
}
static int wb_sector_size(sqlite3_file *f) {
    return WB_REAL(f)->pMethods->xSectorSize(WB_REAL(f));
}
static int wb_device(sqlite3_file *f) {
    return WB_REAL(f)->pMethods->xDeviceCharacteristics(WB_REAL(f));
}
static int wb_shm_map(sqlite3_file *f, int page, int size, int extend, void volatile **pp) {
    WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xShmMap(WB_REAL(f), page, size, extend, pp);
}
static int wb_shm_lock(sqlite3_file *f, int offset, int n, int flags) {
    WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xShmLock(WB_REAL(f), offset, n, flags);
}
static void wb_shm_barrier(sqlite3_file *f) {
    WB_REAL(f)->pMethods->xShmBarrier(WB_REAL(f));
}
static int wb_shm_unmap(sqlite3_file *f, int delete_flag) {
    WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xShmUnmap(WB_REAL(f), delete_flag);
}
static int wb_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp) {
    WB_FLUSHED(f);
    return WB_REAL(f)->pMethods->xFetch(WB_REAL(f), off, n, pp);
}
static int wb_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
    return WB_REAL(f)->pMethods->xUnfetch(WB_REAL(f), off, p);
}

static const sqlite3_io_methods wb_methods = {
    3, wb_close, wb_read, wb_write, wb_truncate, wb_sync, wb_file_size, wb_lock, wb_unlock, wb_check_reserved,
    wb_file_control, wb_sector_size, wb_device, wb_shm_map, wb_shm_lock, wb_shm_barrier, wb_shm_unmap,
    wb_fetch, wb_unfetch,
};

static int wb_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags, int *out_flags) {
    (void)vfs;
    WbFile *f = (WbFile *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)&f[1];
    int rc = wb_root->xOpen(wb_root, name, f->real, flags, out_flags);
    if (f->real->pMethods == NULL)
        return rc; /* nothing opened: our pMethods stay NULL, no xClose */
    if (f->real->pMethods->iVersion < 3) { /* a default VFS without shared memory or fetch */
        f->real->pMethods->xClose(f->real);
        return SQLITE_CANTOPEN;
    }
    f->wal = (flags & SQLITE_OPEN_WAL) != 0;
    f->base.pMethods = &wb_methods;
    return rc;
}

/* Register the VFS (once, not as the default); 0 or SQLite's error code. */
static int wb_register(void) {
    if (wb_root != NULL)
        return SQLITE_OK;
    sqlite3_vfs *root = sqlite3_vfs_find(NULL);
    if (root == NULL)
        return SQLITE_ERROR;
    wb_vfs = *root;
    wb_vfs.pNext = NULL;
    wb_vfs.zName = WB_NAME;
    wb_vfs.szOsFile = (int)sizeof(WbFile) + root->szOsFile;
    wb_vfs.xOpen = wb_open;
    wb_root = root;
    int rc = sqlite3_vfs_register(&wb_vfs, 0);
    if (rc != SQLITE_OK)
        wb_root = NULL;
    return rc;
}
