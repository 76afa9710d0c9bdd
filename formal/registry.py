"""Every proof, by ID, and the manifest that pins what each must return.

``formal/manifest.json`` records per proof: the expected status (``proved``,
or ``counterexample`` for a search that must find the bug it hunts), the
tiers it runs in, a time budget per tier, and what the proof covers. ``flk
prove`` fails when a result differs from the manifest or exceeds its budget.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from flk.impl.core import textdata

from . import merge, ring, rounding, signals, verifier
from .result import ProofResult

PROOFS: dict[str, Callable[[str], ProofResult]] = {
    "INV-ROUND.idempotent": lambda tier: rounding.prove_idempotent(tier),
    "INV-ROUND.monotonic": lambda tier: rounding.prove_monotonic(tier),
    "INV-ROUND.shortcut-c": lambda tier: rounding.search_shortcut_c(tier),
    "INV-ROUND.shortcut-halfup": lambda tier: rounding.search_shortcut_halfup(tier),
    "INV-BUDGET-BOUNDS.real": lambda tier: signals.prove_budget_real(tier),
    "INV-BUDGET-BOUNDS.float": lambda tier: signals.prove_budget_fp(tier),
    "INV-REGIME-PARTITION": lambda tier: signals.prove_regime(tier),
    "INV-CONVERGENCE.merge-semilattice": lambda tier: merge.prove_semilattice(tier),
    "INV-CONVERGENCE.merge-earliest": lambda tier: merge.prove_earliest(tier),
    "INV-RING-OWNER": lambda tier: ring.prove_ring(tier),
    "INV-VERIFY-BEFORE-DEDUP": lambda tier: verifier.prove(tier, "INV-VERIFY-BEFORE-DEDUP"),
    "INV-FWW": lambda tier: verifier.prove(tier, "INV-FWW"),
}


def load_manifest() -> dict:
    text = resources.files("flk.formal").joinpath("manifest.json").read_text(encoding="utf-8")
    return textdata.json_loads(text)
