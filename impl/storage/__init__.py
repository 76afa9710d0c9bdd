"""Storage: the disk, the write-ahead log and object stores.

Modules:

* :mod:`.fs`           -- the ``FileSystem`` interface and the OS file system
* :mod:`.wal`          -- the segmented, checksummed WAL: format, inbox codec, inspection, the log, group commit
* :mod:`.groupcommit`  -- group commit as a pure state machine: when to fsync, whom a sync releases
* :mod:`.walhealth`    -- when a failed inbox WAL is probed again, and when it counts as dead
* :mod:`.quarantine`   -- quarantine for records whose processing fails unexpectedly (poison records)
* :mod:`.objectstore`  -- write-once object stores: memory, directory, S3
"""
