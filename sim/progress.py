"""Progress bars for long simulator work (runs, sweeps, benches).

Bars go to stderr and only when stderr is a terminal, so piped output, ``--json``
and tests stay clean. A run's bar follows *simulated* time through a SimPy process
that only reads ``env.now``: it records nothing, so the history (and its digest)
is the same with or without the bar.
"""

from __future__ import annotations

import sys


def wanted(quiet: bool = False) -> bool:
    """A bar is shown only on an interactive stderr and never with ``--quiet``."""
    return not quiet and sys.stderr.isatty()


def bar(total: float, desc: str, unit: str = "it", enabled: bool = True, file=None):
    """A tqdm bar with ETA on stderr (disabled bars are no-ops)."""
    from tqdm import tqdm

    shape = "{l_bar}{bar}| {n:.0f}/{total:.0f} " + unit + " [{elapsed}<{remaining}{postfix}]" if unit == "sim s" else None
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=file or sys.stderr,
                leave=False, dynamic_ncols=True, bar_format=shape)


def follow_world(world, progress_bar, steps: int = 200) -> None:
    """Advance ``progress_bar`` (total = simulated seconds) as ``world`` runs."""
    end = world.duration + world.quiescence
    step = max(end / steps, 1e-3)

    def ticker(env):
        shown = 0.0
        while env.now + step <= end:
            yield env.timeout(step)
            progress_bar.set_postfix_str(f"{world.submitted:,} submissions", refresh=False)
            progress_bar.update(env.now - shown)
            shown = env.now

    world.env.process(ticker(world.env))
