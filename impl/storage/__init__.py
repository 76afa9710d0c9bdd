"""Storage: the disk, the write-ahead log and object stores.

Modules:

* :mod:`.fs`              -- the ``FileSystem`` interface and the OS file system
* :mod:`.walformat`       -- the WAL's on-disk format: frames, segment names, layout, manifests and their home answers
* :mod:`.inbox`           -- the inbox record codec (``InboxRecord``): one request as the inbox WAL stores it
* :mod:`.wal`             -- the segmented, checksummed log itself (``SegmentedLog``), its recovery and sealing
* :mod:`.checkpoint`      -- inbox WAL checkpoints (the file) and segment retention (archive / delete / keep)
* :mod:`.walinspect`      -- read-only inspection of a WAL directory (``flk wal inspect|verify``)
* :mod:`.groupcommit`     -- group commit as a pure state machine: when to fsync, whom a sync releases
* :mod:`.groupcommitter`  -- the group-commit thread driver over a log (``GroupCommitter``; the agent outbox)
* :mod:`.walhealth`       -- when a failed inbox WAL is probed again, and when it counts as dead
* :mod:`.quarantine`      -- quarantine for records whose processing fails unexpectedly (poison records)
* :mod:`.objectstore`     -- write-once object stores: memory, directory, S3
* :mod:`.threads`        -- threads the kernel knows by name (``NamedThread``: ``top -H``, ``flk bench serve``'s CPU split)
"""
