"""The operator's state machines as tables: the controller executes them, the docs are drawn from them.

Rules (theory of operation):

* one state machine per resource kind; a resource is in exactly one phase;
* each phase names its *ensure* action: the idempotent effect that makes the
  deployment reflect the phase (issued on entry and re-issued on every
  reconcile until the deployment shows it, so a controller killed between
  persisting its status and carrying out the action resumes by issuing it
  again -- never by skipping it);
* rows are tried in table order for the current phase; the first whose guard
  holds fires: the phase changes, one audit record is written, the new phase's
  ensure action is issued. No row fires: the ensure action (or the phase's
  work, a copy or verify batch) is issued again;
* a ``gated`` phase evaluates the health gates first: a breach (with
  ``auto_rollback``) fires the rollback row before any progress row.

ShardMigration phases map onto ``flk dedup-migrate``'s state file
(:mod:`flk.impl.dedup.migrate`): the seeds list DualWrite after Verifying; here
dual writes start *before* the copy (a write during the copy would otherwise be
missed behind its cursor), as the existing migration requires.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    kind: str
    source: str
    guard: str
    target: str
    why: str


@dataclass(frozen=True)
class Phase:
    kind: str
    name: str
    ensure: str  # the action issued while in the phase ("" none)
    gated: bool = False
    terminal: bool = False
    doc: str = ""


PHASES: tuple[Phase, ...] = (
    Phase("ShardMigration", "Pending", "", doc="accepted, nothing done"),
    Phase("ShardMigration", "Planning", "migration.plan", doc="write the migration state (old ring decides)"),
    Phase("ShardMigration", "DualWrite", "migration.phase:dual_write", gated=True,
          doc="every write mirrored to the new ring"),
    Phase("ShardMigration", "Copying", "migration.copy", gated=True, doc="copy the keys that change owner"),
    Phase("ShardMigration", "Verifying", "migration.verify", gated=True,
          doc="every old-ring key is in the new ring with the same outcome"),
    Phase("ShardMigration", "Cutover", "migration.phase:cut_over", gated=True,
          doc="the new ring decides, the old ring is mirrored; soak"),
    Phase("ShardMigration", "Cleanup", "migration.cleanup",
          doc="catch-up (old-ring keys the new ring lacks are copied), then the old ring is no longer written"),
    Phase("ShardMigration", "Pruning", "migration.prune",
          doc="delete the copies moved keys left in shards that no longer own them (each once its owner holds "
              "the same outcome): every shard's count is its own keys again"),
    Phase("ShardMigration", "Completed", "", terminal=True),
    Phase("ShardMigration", "RollingBack", "migration.rollback",
          doc="the old ring decides again: from cut_over first back to verified (both rings mirrored), "
              "then rolled_back once every server decides on the old ring"),
    Phase("ShardMigration", "RolledBack", "", terminal=True, doc="failed safe: the old ring decides, nothing lost"),
    Phase("CRRPolicy", "Pending", ""),
    Phase("CRRPolicy", "Applying", "crr.apply", doc="push the policy's generation to every region"),
    Phase("CRRPolicy", "Active", "", gated=True, doc="every region runs this generation"),
    Phase("CRRPolicy", "Degraded", "", gated=True, doc="a gate (replication lag) is breached"),
    Phase("TieringPolicy", "Pending", ""),
    Phase("TieringPolicy", "Configuring", "tier.configure", doc="push TTLs to the store"),
    Phase("TieringPolicy", "Active", "tier.cycle", doc="each cycle: forecast, pre-warm under the budget"),
)

ROWS: tuple[Row, ...] = (
    Row("ShardMigration", "Pending", "always", "Planning", "start"),
    Row("ShardMigration", "Planning", "observed_planned", "DualWrite", "the migration state exists"),
    Row("ShardMigration", "DualWrite", "gate_breach", "RollingBack", "a health gate breached"),
    Row("ShardMigration", "DualWrite", "all_servers_dual_write", "Copying",
        "every server mirrors writes (no write can land behind the copy cursor unmirrored)"),
    Row("ShardMigration", "Copying", "gate_breach", "RollingBack", "a health gate breached"),
    Row("ShardMigration", "Copying", "copy_done", "Verifying", "this round's copy finished"),
    Row("ShardMigration", "Verifying", "gate_breach", "RollingBack", "a health gate breached"),
    Row("ShardMigration", "Verifying", "verify_clean_gates_ok", "Cutover", "verify clean and gates ok"),
    Row("ShardMigration", "Verifying", "verify_dirty_rounds_left", "Copying", "verify found missing keys: copy again"),
    Row("ShardMigration", "Verifying", "verify_dirty_no_rounds", "RollingBack", "verify stayed dirty"),
    Row("ShardMigration", "Cutover", "gate_breach", "RollingBack", "a health gate breached"),
    Row("ShardMigration", "Cutover", "soaked", "Cleanup",
        "every server cut over and the gates stayed ok for soak_s"),
    Row("ShardMigration", "Cleanup", "all_servers_cleaned", "Pruning", "every server stopped writing the old ring"),
    Row("ShardMigration", "Pruning", "prune_done", "Completed", "the prune walked every shard of the new ring"),
    Row("ShardMigration", "RollingBack", "all_servers_rolled_back", "RolledBack", "every server decides on the old ring"),
    Row("CRRPolicy", "Pending", "always", "Applying", "start"),
    Row("CRRPolicy", "Applying", "crr_applied", "Active", "every region reports this generation"),
    Row("CRRPolicy", "Active", "spec_changed", "Applying", "the spec changed (a new generation)"),
    Row("CRRPolicy", "Active", "gate_breach", "Degraded", "a health gate breached"),
    Row("CRRPolicy", "Degraded", "spec_changed", "Applying", "the spec changed (a new generation)"),
    Row("CRRPolicy", "Degraded", "gates_ok", "Active", "the gates are ok again"),
    Row("TieringPolicy", "Pending", "always", "Configuring", "start"),
    Row("TieringPolicy", "Configuring", "tier_configured", "Active", "the store runs this generation's TTLs"),
    Row("TieringPolicy", "Active", "spec_changed", "Configuring", "the spec changed (a new generation)"),
)


def phase(kind: str, name: str) -> Phase:
    for p in PHASES:
        if p.kind == kind and p.name == name:
            return p
    raise KeyError(f"{kind} has no phase {name!r}")


def rows_from(kind: str, source: str) -> list[Row]:
    return [r for r in ROWS if r.kind == kind and r.source == source]


def first_phase(kind: str) -> str:
    return next(p.name for p in PHASES if p.kind == kind)


def markdown() -> str:
    """The phases and transitions of every kind (spec/OPERATOR.md embeds this text)."""
    out = []
    for kind in dict.fromkeys(p.kind for p in PHASES):
        out += [f"### {kind}", "", "| phase | ensure action | gated | terminal | meaning |", "|---|---|---|---|---|"]
        for p in PHASES:
            if p.kind == kind:
                out.append(f"| {p.name} | {p.ensure and '`' + p.ensure + '`' or '--'} | {'yes' if p.gated else ''} | "
                           f"{'yes' if p.terminal else ''} | {p.doc} |")
        out += ["", "| from | guard | to | why |", "|---|---|---|---|"]
        out += [f"| {r.source} | `{r.guard}` | {r.target} | {r.why} |" for r in ROWS if r.kind == kind]
        out.append("")
    return "\n".join(out)
