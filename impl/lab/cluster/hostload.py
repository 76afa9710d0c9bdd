"""The host's CPU during a cluster run: did the real regions have to compete for it?

Why this module exists: ``flk cluster run`` puts every region's ``flk serve``, its store,
the load generator (and Prometheus) on one machine, while the simulator gives each region
time of its own. When the machine had no CPU to spare, the real run's figures include a
contention the simulator does not model: a calibration that then disagrees cannot say the
simulator is wrong, only that it does not know (``unknown``, :func:`flk.impl.lab.cluster.calibrate.compare`).

:class:`HostCpu` reads the aggregate ``cpu`` line of ``/proc/stat`` once a sampler period and
keeps each period's busy share of the machine's CPU time (every state but ``idle`` and
``iowait``; ``steal`` is time the machine did not get, so it counts as busy). A period at or
above :data:`SATURATED_BUSY` left nothing to spare; a run with at least
:data:`SATURATED_SHARE` of its periods like that is **saturated**. Where ``/proc/stat`` cannot
be read the summary says so (``measured: false``), never a guess.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["HostCpu", "parse_proc_stat", "read_proc_stat", "saturation_note", "SATURATED_BUSY", "SATURATED_SHARE"]

SATURATED_BUSY = 0.95  # a period this busy left the machine no CPU to spare
SATURATED_SHARE = 0.25  # a run with this share of its periods saturated was bound by the host's CPU

_FIELDS = 8  # user nice system idle iowait irq softirq steal (guest time is inside user and nice)


def parse_proc_stat(text: str) -> tuple[int, int] | None:
    """``(busy, total)`` jiffies of ``/proc/stat``'s aggregate ``cpu`` line; None when the line
    is absent or not what the kernel writes (at least four non-negative integers)."""
    for line in text.splitlines():
        if not line.startswith("cpu "):
            continue
        try:
            values = [int(x) for x in line.split()[1:1 + _FIELDS]]
        except ValueError:
            return None
        if len(values) < 4 or any(v < 0 for v in values):
            return None
        values += [0] * (_FIELDS - len(values))
        total = sum(values)
        return total - values[3] - values[4], total  # less idle and iowait
    return None


def read_proc_stat(path: str = "/proc/stat") -> tuple[int, int] | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return parse_proc_stat(f.read())
    except OSError:
        return None


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class HostCpu:
    """The busy share of the host's CPU, one figure per :meth:`sample` (the time between two)."""

    def __init__(self, read: Callable[[], tuple[int, int] | None] = read_proc_stat) -> None:
        self._read = read
        self._last = read()
        self.periods: list[float] = []
        self.load_before = _load_average()

    def sample(self) -> float | None:
        """The busy share since the last sample (None: not measured, or no time passed)."""
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None:
            return None
        total = now[1] - last[1]
        if total <= 0:
            return None
        share = min(1.0, max(0.0, (now[0] - last[0]) / total))
        self.periods.append(share)
        return share

    def summary(self) -> dict:
        """What a run's results say of the host (``cluster.host``)."""
        n = len(self.periods)
        out: dict = {"measured": n > 0, "cpus": os.cpu_count(), "periods": n,
                     "load_average_1m": [self.load_before, _load_average()]}
        if not n:
            return out
        saturated = sum(1 for p in self.periods if p >= SATURATED_BUSY)
        out.update(busy_share_mean=round(sum(self.periods) / n, 4), busy_share_max=round(max(self.periods), 4),
                   saturated_periods=saturated, saturated_share=round(saturated / n, 4),
                   saturated=saturated / n >= SATURATED_SHARE, saturated_busy=SATURATED_BUSY)
        return out


def saturation_note(host: dict | None) -> str | None:
    """One line for a saturated host (None otherwise): what a reader of the run must know."""
    if not host or not host.get("saturated"):
        return None
    return (f"host CPU saturated in {host['saturated_periods']} of {host['periods']} sampled seconds "
            f"(busy >= {round(100 * host['saturated_busy'])} % of {host['cpus']} CPUs; mean "
            f"{round(100 * host['busy_share_mean'])} %): the real regions competed for CPU, which the simulator "
            "does not model")
