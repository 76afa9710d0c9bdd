"""Read-only inspection of a WAL directory (``flk wal inspect|verify``).

Why this module exists: an operator must be able to ask what a log directory
holds, and what is wrong with it, without the act of asking repairing or
changing anything -- opening a :class:`flk.impl.storage.wal.SegmentedLog` would
truncate a torn tail, remove leftover files and seal segments. This module reads
the directory through the same pure format logic
(:mod:`flk.impl.storage.walformat`) and reports what the log would refuse
(``problems``) and what it would repair (``warnings``), plus the records replay
quarantined as poison (:mod:`flk.impl.storage.quarantine`).
"""

from __future__ import annotations

import posixpath

from .fs import FileSystem, OsFileSystem
from .walformat import check_manifest, manifest_name, plan_layout, scan_segment

__all__ = ["inspect_directory"]


def inspect_directory(directory: str, fs: FileSystem | None = None) -> dict:
    """Examine a log directory WITHOUT changing it.

    Returns ``{"directory", "ok", "segments": [...], "records", "first_index",
    "next_index", "problems": [{"segment", "offset", "reason"}], "warnings":
    [...], "obsolete": [...], "foreign": [...]}``. ``problems`` are what
    :class:`SegmentedLog` would refuse to open (checksum damage, a bad tail in a
    non-last segment, gaps, manifest mismatches); ``warnings`` are what it
    would repair (a torn tail of the last segment, a full segment not yet
    sealed, leftover files). ``quarantine`` lists the records replay set aside
    as poison (:mod:`flk.impl.storage.quarantine`; without their bytes).
    Raises ``FileNotFoundError``/``NotADirectoryError``."""
    fs = fs if fs is not None else OsFileSystem()
    if not fs.exists(directory):
        raise FileNotFoundError(directory)
    if not fs.isdir(directory):
        raise NotADirectoryError(directory)
    lay = plan_layout(fs.listdir(directory))
    out: dict = {"directory": directory, "segments": [], "problems": [], "warnings": [],
                 "obsolete": list(lay.obsolete), "foreign": list(lay.foreign)}
    for name in lay.obsolete:
        out["warnings"].append(f"{name}: leftover file (removed on next open)")
    expected: int | None = None
    for pos, (kind, number, name) in enumerate(lay.files):
        is_last = pos == len(lay.files) - 1
        data = fs.read(posixpath.join(directory, name))
        res = scan_segment(data, is_last)
        first = number if kind == "seg" else number - res.count
        info = {"name": name, "kind": kind, "first_index": first, "count": res.count,
                "last_index": first + res.count - 1 if res.count else None,
                "bytes": len(data), "status": res.status, "sealed": False, "manifest": "none"}
        if res.status == "corrupt":
            out["problems"].append({"segment": name, "offset": res.bad_offset, "reason": res.reason})
        elif res.status == "torn" and res.zero_tail:  # zeros written ahead of a live log's records
            info["zero_tail_bytes"] = res.size - res.valid_end
            info["status"] = "clean"  # every byte before the zeros is a whole record
        elif res.status == "torn":
            out["warnings"].append(f"{name}: torn tail at byte {res.valid_end} "
                                   f"({res.size - res.valid_end} bytes, {res.reason}); truncated on next open")
        if expected is not None and res.status != "corrupt" and first != expected:
            what = "gap before" if first > expected else "overlap at"
            out["problems"].append({"segment": name, "offset": 0,
                                    "reason": f"{what} this segment: expected first index {expected}, file starts at {first}"})
        mname = manifest_name(name)
        if mname in lay.manifests:
            info["sealed"] = True
            probs = check_manifest(fs.read(posixpath.join(directory, mname)), name, first, res.count, bytes(data))
            if res.status != "clean":
                probs.append(f"sealed segment is {res.status}")
            info["manifest"] = "ok" if not probs else "mismatch"
            for p in probs:
                out["problems"].append({"segment": name, "offset": None, "reason": p})
        elif not is_last:
            out["warnings"].append(f"{name}: not the last segment but has no manifest (sealed on next open)")
        out["segments"].append(info)
        expected = first + res.count if res.status != "corrupt" else None
    segs = out["segments"]
    out["records"] = sum(s["count"] for s in segs)
    out["first_index"] = segs[0]["first_index"] if segs else None
    out["next_index"] = segs[-1]["first_index"] + segs[-1]["count"] if segs else None
    out["ok"] = not out["problems"]
    out["quarantine"] = _inspect_quarantine(directory, fs, out)
    return out


def _inspect_quarantine(directory: str, fs: FileSystem, out: dict) -> dict:
    from .quarantine import FILE_NAME, public_view, read_entries

    if FILE_NAME in out["foreign"]:
        out["foreign"].remove(FILE_NAME)
    entries, unreadable = read_entries(posixpath.join(directory, FILE_NAME), fs)
    if entries:
        out["warnings"].append(f"{FILE_NAME}: {len(entries)} quarantined record(s) replay skipped as poison")
    if unreadable:
        out["warnings"].append(f"{FILE_NAME}: {unreadable} unreadable line(s)")
    return {"file": FILE_NAME, "count": len(entries), "unreadable_lines": unreadable,
            "entries": [public_view(e) for e in entries]}
