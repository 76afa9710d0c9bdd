"""The verification policy language: parse, check invariants, compile.

Why this module exists: tolerances, budget weights, regime thresholds and
escalation rules decide whether a PCS is accepted, escalated or rejected; an
operator must be able to change them without editing code, see exactly what
changed (``flk policy diff``), and be unable to deploy a policy that breaks
the invariants the lab proves (INV-BUDGET-BOUNDS and friends). A policy is a
small text file (grammar in ``policy.lark``, reference in spec/GOVERNANCE.md)
with a SemVer version; :func:`compile_policy` turns it into a
:class:`flk.impl.verifier.pipeline.Policy` plus the escalation table and the anomaly
thresholds, or raises :class:`PolicyError` naming ``line:column``.

Invariants enforced at compile time:

* budget weights ``base, alpha, beta, gamma`` in [0, 1] (non-negative weights
  keep the budget non-decreasing in coh-star and non-increasing in r);
* budget bounded: ``base + alpha + gamma <= 1`` (below ``d0`` the budget never
  needs the clamp) and ``0 <= d0 <= 16``;
* coherence bounds: ``0 <= tolerances.coh <= COH_EPS`` (the accepted upper
  bound ``1 + coh`` stays within ``1 + COH_EPS``) and
  ``0 <= regime.sticky_coh <= 1 + COH_EPS``;
* tolerances ``d_hat`` in [0, 1], ``budget`` in [0, 1];
* regime ``0 <= sticky_d_max < non_sticky_d_min <= 16``;
* anomaly ``0 <= alert <= reject <= 1``;
* the version is SemVer, each of its numbers at most ``2**31 - 1`` (:data:`MAX_VERSION_NUMBER`);
* escalation rules name a known reason code; ``reject`` takes 400 or 401;
  each key, section and rule appears once.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..core.errors import InvalidInput
from ..core.signals import BudgetParams, RegimeThresholds

# each number of a policy's version (MAJOR, MINOR, PATCH, a numeric pre-release identifier): what a
# 32-bit signed integer holds (Java, Go's int32, a database INTEGER column compare versions in it)
MAX_VERSION_NUMBER = 2**31 - 1
COH_EPS = 0.05
D_MAX = 16.0
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)

# reason codes a rule may name: the verifier's signal checks and governance's hooks
SIGNAL_REASONS = ("d_hat_mismatch", "coh_out_of_bounds", "r_out_of_bounds", "n_j_decreasing", "budget_mismatch",
                  "regime_mismatch")
HOOK_REASONS = {"pii_detected": 400, "anomaly_reject": 400, "vrf_invalid": 401, "vrf_missing": 401,
                "vrf_seed_mismatch": 401}
KNOWN_REASONS = SIGNAL_REASONS + tuple(HOOK_REASONS)

# section -> key -> (target field, lo, hi)
SETTINGS: dict[str, dict[str, tuple[str, float, float]]] = {
    "tolerances": {"d_hat": ("tol_d", 0.0, 1.0), "coh": ("tol_coh", 0.0, COH_EPS), "budget": ("tol_budget", 0.0, 1.0)},
    "budget": {"base": ("base", 0.0, 1.0), "alpha": ("alpha", 0.0, 1.0), "beta": ("beta", 0.0, 1.0),
               "gamma": ("gamma", 0.0, 1.0), "d0": ("d0", 0.0, D_MAX)},
    "regime": {"sticky_coh": ("sticky_coh", 0.0, 1.0 + COH_EPS), "sticky_d_max": ("sticky_d_max", 0.0, D_MAX),
               "non_sticky_d_min": ("non_sticky_d_min", 0.0, D_MAX)},
    "anomaly": {"alert": ("alert", 0.0, 1.0), "reject": ("reject", 0.0, 1.0)},
}


class PolicyError(InvalidInput):
    """A policy that does not parse or breaks an invariant; ``line``/``column`` are 1-based."""

    def __init__(self, line: int, column: int, message: str) -> None:
        self.line = line
        self.column = column
        super().__init__("policy", message)
        self.args = (f"{line}:{column}: {message}",)

    def __reduce__(self):  # pickled as __init__'s arguments (see InvalidInput)
        return type(self), (self.line, self.column, self.message)

    def __str__(self) -> str:
        return str(self.args[0])


_PARSER: Lark | None = None


def _parser() -> Lark:
    global _PARSER  # a cache of a pure value (the compiled grammar), not state
    if _PARSER is None:
        grammar = resources.files("flk.impl.verifier").joinpath("policy.lark").read_text(encoding="utf-8")
        _PARSER = Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)
    return _PARSER


@dataclass(frozen=True)
class CompiledPolicy:
    """What a policy file compiles into."""

    name: str
    version: str
    policy: Any  # flk.impl.verifier.pipeline.Policy
    reject_status: dict[str, int] = field(default_factory=dict)  # reason -> 400/401 (others escalate)
    anomaly_alert: float = 0.5
    anomaly_reject: float = 0.8
    source_sha256: str = ""

    def to_dict(self) -> dict:
        p = self.policy
        return {
            "name": self.name,
            "version": self.version,
            "tolerances": {"d_hat": p.tol_d, "coh": p.tol_coh, "budget": p.tol_budget},
            "budget": asdict(p.budget),
            "regime": asdict(p.regime),
            "anomaly": {"alert": self.anomaly_alert, "reject": self.anomaly_reject},
            "reject_status": dict(sorted(self.reject_status.items())),
            "source_sha256": self.source_sha256,
        }

    def verifier_kwargs(self) -> dict:
        """``Verifier(tenants, **compiled.verifier_kwargs(), ...)``."""
        return {"policy": self.policy, "reject_status": dict(self.reject_status)}


def _describe_expected(exc: UnexpectedInput) -> str:
    expected = sorted(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or [])
    names = {"RBRACE": "'}'", "LBRACE": "'{'", "EQUAL": "'='", "NUMBER": "a number", "KEY": "a name",
             "SEMVER": "a SemVer version (MAJOR.MINOR.PATCH)", "STRING": "a quoted name", "SECTION": "a section",
             "ACTION": "escalate or reject", "STATUS": "an HTTP status", "$END": "end of input"}
    words = [names.get(e, e.lower().strip("_") if e.isupper() else repr(e)) for e in expected]
    return ", ".join(dict.fromkeys(words)) if words else "something else"


def parse(source: str) -> Tree:
    if not isinstance(source, str):
        raise InvalidInput("policy", "must be text")
    try:
        return _parser().parse(source)
    except UnexpectedCharacters as exc:
        raise PolicyError(exc.line, exc.column, f"unexpected character {source[exc.pos_in_stream]!r}; expected "
                          + _describe_expected(exc)) from None
    except UnexpectedEOF as exc:
        lines = source.split("\n")
        raise PolicyError(len(lines), len(lines[-1]) + 1, "unexpected end of policy; expected "
                          + _describe_expected(exc)) from None
    except UnexpectedToken as exc:
        tok = exc.token
        if tok.type == "$END":
            lines = source.split("\n")
            what, line, col = "end of policy", len(lines), len(lines[-1]) + 1
        else:
            what, line, col = repr(str(tok)), exc.line or 1, exc.column or 1
        raise PolicyError(line, col, f"unexpected {what}; expected {_describe_expected(exc)}") from None
    except UnexpectedInput as exc:  # pragma: no cover - the three above are exhaustive for LALR
        raise PolicyError(getattr(exc, "line", 1), getattr(exc, "column", 1), str(exc)) from None


def _err(tok: Token, message: str) -> PolicyError:
    return PolicyError(tok.line or 1, tok.column or 1, message)


def _number(tok: Token) -> float:
    v = float(str(tok))
    if not math.isfinite(v):
        raise _err(tok, f"{tok} is not a finite number")
    return v


def _settings_section(sec, values: dict, seen_sections: dict) -> None:
    """One ``[tolerances]``/``[budget]``/... section: known keys, each once, in range."""
    sec_tok, *settings = sec.children
    section = str(sec_tok)
    if section in seen_sections:
        raise _err(sec_tok, f"section {section!r} appears twice (first at line {seen_sections[section].line})")
    seen_sections[section] = sec_tok
    known = SETTINGS[section]
    vals = values.setdefault(section, {})
    for setting in settings:
        key_tok, num_tok = setting.children
        key = str(key_tok)
        if key not in known:
            raise _err(key_tok, f"unknown setting {section}.{key}; expected one of {', '.join(known)}")
        if key in vals:
            raise _err(key_tok, f"{section}.{key} is set twice")
        v = _number(num_tok)
        _, lo, hi = known[key]
        if not lo <= v <= hi:
            raise _err(num_tok, f"{section}.{key} = {v:g} is outside [{lo:g}, {hi:g}]")
        vals[key] = (v, num_tok)


def _escalation_section(sec, seen_sections: dict, reject_status: dict, rules_seen: dict) -> None:
    """The ``[escalation]`` section: one rule per known reason code, escalate or reject 400/401."""
    if "escalation" in seen_sections:
        raise PolicyError(sec.meta.line, sec.meta.column, "section 'escalation' appears twice")
    seen_sections["escalation"] = Token("SECTION", "escalation", line=sec.meta.line, column=sec.meta.column)
    for rule in sec.children:
        key_tok, action_tok, status_tok = rule.children
        reason = str(key_tok)
        if reason not in KNOWN_REASONS:
            raise _err(key_tok, f"unknown reason code {reason!r}; expected one of {', '.join(KNOWN_REASONS)}")
        if reason in rules_seen:
            raise _err(key_tok, f"a rule for {reason!r} already exists (line {rules_seen[reason].line})")
        rules_seen[reason] = key_tok
        if str(action_tok) == "escalate":
            if status_tok is not None:
                raise _err(status_tok, "escalate takes no status")
            reject_status.pop(reason, None)
            continue
        if status_tok is None:
            raise _err(action_tok, "reject needs a status: reject 400 or reject 401")
        status = int(str(status_tok))
        if status not in (400, 401):
            raise _err(status_tok, f"reject status must be 400 or 401, got {status}")
        reject_status[reason] = status


class _Settings:
    """The parsed setting values, with the token to blame for a cross-setting error."""

    def __init__(self, values: dict, seen_sections: dict, name_tok: Token) -> None:
        self.values, self.seen_sections, self.name_tok = values, seen_sections, name_tok

    def get(self, section: str, key: str, default: float) -> float:
        return self.values.get(section, {}).get(key, (default, None))[0]

    def where(self, section: str, *keys: str) -> Token:
        for k in keys:
            if k in self.values.get(section, {}):
                return self.values[section][k][1]
        return self.seen_sections.get(section, self.name_tok)


def _bounded_params(s: _Settings) -> tuple[BudgetParams, RegimeThresholds, float, float]:
    """Budget, regime and anomaly settings, checked against each other (INV-BUDGET-BOUNDS,
    INV-REGIME-PARTITION: a policy that breaks them does not compile)."""
    d = BudgetParams()
    bp = BudgetParams(**{k: s.get("budget", k, getattr(d, k)) for k in ("base", "alpha", "beta", "gamma", "d0")})
    if bp.base + bp.alpha + bp.gamma > 1.0 + 1e-12:
        raise _err(s.where("budget", "gamma", "alpha", "base"),
                   f"budget unbounded: base + alpha + gamma = {bp.base + bp.alpha + bp.gamma:g} > 1")
    r = RegimeThresholds()
    keys = ("sticky_coh", "sticky_d_max", "non_sticky_d_min")
    rt = RegimeThresholds(**{k: s.get("regime", k, getattr(r, k)) for k in keys})
    if not rt.sticky_d_max < rt.non_sticky_d_min:
        raise _err(s.where("regime", "non_sticky_d_min", "sticky_d_max"),
                   f"regime.sticky_d_max ({rt.sticky_d_max:g}) must be < regime.non_sticky_d_min ({rt.non_sticky_d_min:g})")
    alert, reject = s.get("anomaly", "alert", 0.5), s.get("anomaly", "reject", 0.8)
    if alert > reject:
        raise _err(s.where("anomaly", "alert", "reject"),
                   f"anomaly.alert ({alert:g}) must be <= anomaly.reject ({reject:g})")
    return bp, rt, alert, reject


def _version(tok: Token) -> str:
    """The policy's SemVer version; each number in it (MAJOR, MINOR, PATCH, a numeric pre-release
    identifier) at most :data:`MAX_VERSION_NUMBER`."""
    version = str(tok)
    m = SEMVER_RE.match(version)
    if not m:
        raise _err(tok, f"version {version!r} is not SemVer (MAJOR.MINOR.PATCH[-pre][+build])")
    numbers = [*m.group(1, 2, 3), *(p for p in (m.group(4) or "").split(".") if p.isdigit())]
    for number in numbers:
        if len(number) > len(str(MAX_VERSION_NUMBER)) or int(number) > MAX_VERSION_NUMBER:  # int() of 5,000 digits refuses
            raise _err(tok, f"version {version[:60]!r}: {number[:30]}{'...' if len(number) > 30 else ''} "
                            f"is past {MAX_VERSION_NUMBER} (each number of a version is at most 2^31 - 1)")
    return version


def compile_policy(source: str) -> CompiledPolicy:
    """Parse and check ``source``; see the module docstring for the invariants."""
    from .pipeline import (
        Policy,  # late: verifier imports governance-independent modules only
    )

    tree = parse(source)
    name_tok, ver_tok, *sections = tree.children
    version = _version(ver_tok)
    values: dict[str, dict[str, tuple[float, Token]]] = {}
    seen_sections: dict[str, Token] = {}
    reject_status = dict(HOOK_REASONS)
    rules_seen: dict[str, Token] = {}
    for sec in sections:
        if sec.data == "settings":
            _settings_section(sec, values, seen_sections)
        else:
            _escalation_section(sec, seen_sections, reject_status, rules_seen)
    settings = _Settings(values, seen_sections, name_tok)
    bp, rt, alert, reject = _bounded_params(settings)
    defaults = Policy()
    policy = Policy(
        version=version,
        tol_d=settings.get("tolerances", "d_hat", defaults.tol_d),
        tol_coh=settings.get("tolerances", "coh", defaults.tol_coh),
        tol_budget=settings.get("tolerances", "budget", defaults.tol_budget),
        budget=bp,
        regime=rt,
    )
    return CompiledPolicy(
        name=str(name_tok)[1:-1],
        version=version,
        policy=policy,
        reject_status=dict(sorted(reject_status.items())),
        anomaly_alert=alert,
        anomaly_reject=reject,
        source_sha256=hashlib.sha256(source.encode()).hexdigest(),
    )


def load_policy(path: str) -> CompiledPolicy:
    """Read and compile a policy file; PolicyError messages are prefixed with the path."""
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError as exc:
        raise InvalidInput("policy", f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput("policy", f"{path}: not UTF-8 text") from None
    try:
        return compile_policy(source)
    except PolicyError as exc:
        err = PolicyError(exc.line, exc.column, exc.message)
        err.args = (f"{path}:{exc.line}:{exc.column}: {exc.message}",)
        err.path = path
        raise err from None


def compile_file(path: str):
    """The :class:`flk.impl.verifier.pipeline.Policy` of a policy file (what ``flk serve``'s
    ``POLICY`` setting loads). Escalation rules and anomaly thresholds are not in
    ``Policy``: use ``load_policy(path).verifier_kwargs()`` to get them too."""
    return load_policy(path).policy


DEFAULT_POLICY_TEXT = """\
# The default policy (SPEC defaults), written out.
policy "default" version 1.0.0 {
  tolerances { d_hat = 0.15  coh = 0.05  budget = 0.01 }
  budget     { base = 0.10  alpha = 0.30  beta = 0.50  gamma = 0.20  d0 = 2.2 }
  regime     { sticky_coh = 0.70  sticky_d_max = 1.5  non_sticky_d_min = 2.6 }
  anomaly    { alert = 0.5  reject = 0.8 }
}
"""
