"""Naming the bug, not just the failure: every bug of a run, each reproduced byte for byte.

Why this module exists: one float-format bug fails nearly every canonical,
sign and verify case, so a per-flag tally names many pitfalls for one mistake;
and a signer with two bugs needs both named, or fixing the first leaves the
run red. For each failing case of a modelled op the diagnosis recomputes the
answer of implementations with known bugs (:mod:`flk.conformance.hypotheses`)
and names a class only when its answer equals the adapter's **byte for byte**:

1. **Refutation.** A spelling of a class that changes the answer of a case
   the adapter *passed* (same op) is not what the adapter does: an adapter
   that rounds ``round(x*1e9)`` passes the isolated half-up vector, which
   rules half-up out even though both round most ties alike.
2. **Greedy cover with residuals.** The class reproducing the most open
   failures is chosen; the failures it does not reproduce are diagnosed
   again *on top of it* (its spellings combined with each other class), so a
   second and third bug behind the first are named, not folded under it.
3. **Cases, not guesses.** A class lists only cases its combination
   reproduces; a signature or verdict that follows from a writer bug is its
   knock-on. Accepted invalid input is named from what the adapter returned
   (accepted and written, accepted as valid, or a ``valid: false`` verdict
   where ``invalid_input`` was due). What nothing reproduces is undiagnosed.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flk.impl.core import canonical

from .hypotheses import (
    BUG_CLASSES,
    CLASS_BY_NAME,
    CLASS_ORDER,
    MODELLED_OPS,
    BugClass,
    Writer,
    answer,
    b64_strict,
    js_number,
    order_of,
    search_order,
    spellings,
)
from .vectors import Case, decode_input

__all__ = ["BUG_CLASSES", "CLASS_BY_NAME", "EXTRA_CLASSES", "Diagnosis", "Writer", "answer", "candidate_classes",
           "decode_input", "describe", "diagnose", "format_diagnosis", "js_number", "pitfalls_of"]

# classes recognised from what the adapter accepted or answered rather than from recomputed output
EXTRA_CLASSES = {
    "nan-accepted": ("NaN or an infinity not refused (written, signed or verified)",
                     "SPEC.md section 3: NaN and infinities are rejected (invalid_input)", ("nan-inf",)),
    "verdict-not-error": ("a malformed subset or key answered with a verdict (valid: false) instead of an "
                          "invalid_input error",
                          "SPEC.md section 4.3 and PROTOCOL.md, Verdicts: a malformed subset or key is "
                          "invalid_input; only the signature is a verdict", ()),
    "accepts-invalid-input": ("input the spec refuses was accepted",
                              "SPEC.md section 3: the subset's types and ranges are checked before anything "
                              "is written", ()),
}
ALL_CLASSES = CLASS_ORDER + list(EXTRA_CLASSES)
SIGNATURE_CLASSES = ("prehash", "signs-other-bytes")  # a signature is where these show


@dataclass
class Diagnosis:
    """Root causes (class -> cases it reproduces directly), knock-on failures
    (signatures and verdicts that follow from it), what nothing explains."""

    root_causes: dict[str, list[str]] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    knock_on: dict[str, list[str]] = field(default_factory=dict)
    undiagnosed: list[str] = field(default_factory=list)
    details: dict[str, list[str]] = field(default_factory=dict)  # which spellings / what was accepted

    _rank: dict[str, int] = field(default_factory=dict)
    _detail_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add_root(self, name: str, case_id: str, example: str = "", rank: int = 0) -> None:
        self.root_causes.setdefault(name, []).append(case_id)
        self.set_example(name, case_id, example, rank)

    def set_example(self, name: str, case_id: str, example: str, rank: int = 0) -> None:
        """Keep the most telling example: profile v1 first, then ``rank``."""
        rank += 2 * (".v1#" in case_id)
        if example and (name not in self.examples or rank > self._rank.get(name, 0)):
            self.examples[name] = example
            self._rank[name] = rank

    def add_detail(self, name: str, text: str) -> None:
        """How the bug shows (a spelling, what was accepted), most frequent first."""
        if not text:
            return
        counts = self._detail_counts.setdefault(name, {})
        counts[text] = counts.get(text, 0) + 1
        self.details[name] = sorted(counts, key=lambda t: -counts[t])

    def count(self, name: str) -> int:
        return len(self.root_causes.get(name, [])) + len(self.knock_on.get(name, []))


def _matches(output: Any, expected_like: Mapping[str, Any] | None) -> bool:
    return isinstance(output, Mapping) and expected_like is not None and all(
        output.get(k) == v for k, v in expected_like.items()
    )


# -- examples ------------------------------------------------------------------
def _excerpts(want: str, got: str, context: int = 16) -> tuple[str, str]:
    """The two texts around their first difference."""
    start = next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))
    tail = 0
    while tail < min(len(want), len(got)) - start and want[-1 - tail] == got[-1 - tail]:
        tail += 1
    low = max(0, start - context)
    cut = "..." if low else ""

    def excerpt(text: str) -> str:
        high = min(len(text) - tail + context, start + 4 * context)
        return cut + text[low:high] + ("..." if high < len(text) else "")

    return excerpt(want), excerpt(got)


def _show(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace").replace("\n", "\\n")


def _example(case: Case, output: Mapping[str, Any], writer: Writer | None = None) -> str:
    key = next(iter(case.expected or {}), "")
    got, want = output.get(key), (case.expected or {}).get(key)
    if key == "bytes_b64":
        want, got = _excerpts(_show(base64.b64decode(want)), _show(base64.b64decode(got)))
        return f"{case.case_id}: canonical bytes `{got}` where the spec gives `{want}`"
    if key == "sig" and writer is not None:
        inp = decode_input(case.input)
        try:
            wrong = writer.canonical(inp["subset"], case.profile)
            right = Writer().canonical(inp["subset"], case.profile)
        except Exception:  # noqa: BLE001 - an example is best effort
            wrong = right = b""
        if wrong != right:
            want_t, got_t = _excerpts(_show(right), _show(wrong))
            return f"{case.case_id}: the signature is over `{got_t}` where the spec signs `{want_t}`"
        if writer.mac:
            return (f"{case.case_id}: the signature is over SHA-256 of the canonical bytes "
                    f"({'hex' if writer.mac == 'prehash-hex' else 'raw'} digest), not the bytes")
    if key == "valid":
        return f"{case.case_id}: answered valid={json.dumps(got)} where the spec gives {json.dumps(want)}"
    return (f"{case.case_id}: {key} {json.dumps(got, ensure_ascii=False)} where the spec gives "
            f"{json.dumps(want, ensure_ascii=False)}")


# -- candidates ----------------------------------------------------------------
def candidate_classes(case: Case, output: Any, base: Writer = Writer(),
                      learned: Sequence[tuple[str, ...]] = ()) -> list[str] | None:
    """Classes whose spelling (on top of ``base``) reproduces ``output``; None when
    the case is not modelled (the no-bug hypothesis does not give the expected output)."""
    inp = decode_input(case.input)
    if not _matches(answer(case.operation, inp, Writer(), case.profile), case.expected):
        return None
    if _matches(output, case.expected):
        return []  # the right answer is no bug
    return [bug.name for bug in BUG_CLASSES if any(
        _matches(output, answer(case.operation, inp, w, case.profile)) for w in spellings(bug, base, learned))]


class _Run:
    """One diagnosis: the modelled failures, the refutations, memoised answers."""

    def __init__(self, failures: list, verdicts: list) -> None:
        self.cache: dict[tuple, Any] = {}
        self.inputs: dict[str, Any] = {}
        has_bytes = any(r.case.operation == "canonical_bytes" and r.status in ("pass", "fail") for r in verdicts)
        self.learned = learn_orders(failures, search=not has_bytes)
        self.passes = [r for r in verdicts if r.status == "pass" and _modelled(r.case)]
        self.refuted: dict[tuple[str, str], list[Writer]] = {}
        self.all_spellings = {bug.name: spellings(bug, Writer(), self.learned) for bug in BUG_CLASSES}

    def answer(self, result: Any, writer: Writer) -> Any:
        case = result.case
        key = (case.case_id, writer)
        if key not in self.cache:
            if case.case_id not in self.inputs:
                self.inputs[case.case_id] = decode_input(case.input)
            self.cache[key] = answer(case.operation, self.inputs[case.case_id], writer, case.profile)
        return self.cache[key]

    def spellings(self, bug: BugClass, op: str) -> list[Writer]:
        """``bug``'s spellings not refuted by a passing case of ``op``."""
        key = (bug.name, op)
        if key not in self.refuted:
            passes = [r for r in self.passes if r.case.operation == op]
            self.refuted[key] = [w for w in self.all_spellings[bug.name] if not any(
                (got := self.answer(r, w)) is not None and not _matches(got, r.case.expected) for r in passes)]
        return self.refuted[key]


def _modelled(case: Case) -> bool:
    return case.operation in MODELLED_OPS and not case.expects_error and "self-consistent" not in case.flags


def _combine(base: Writer, spelling: Writer) -> Writer:
    """``spelling`` (one piece differs from the reference) applied on top of ``base``."""
    ref = Writer()
    changes = {f: getattr(spelling, f) for f in ref.__dataclass_fields__ if getattr(spelling, f) != getattr(ref, f)}
    return Writer(**{**{f: getattr(base, f) for f in ref.__dataclass_fields__}, **changes})


def learn_orders(failures: Iterable[Any], search: bool = True) -> list[tuple[str, ...]]:
    """Non-sorted key orders the adapter wrote, read from its canonical bytes; for a
    signer without canonical_bytes, searched from its HMAC signatures."""
    orders: dict[tuple[str, ...], None] = {}
    signs = []
    for r in failures:
        out = r.output if isinstance(r.output, Mapping) else {}
        if r.case.operation == "canonical_bytes" and isinstance(out.get("bytes_b64"), str):
            raw = b64_strict(out["bytes_b64"])
            order = order_of(raw) if raw is not None else None
            if order is not None and order != canonical.SIGNED_FIELDS:
                orders[order] = None
        elif r.case.operation == "sign_hmac" and r.case.profile == "v1" and isinstance(out.get("sig"), str):
            signs.append(r)
    if not orders and search:
        for r in signs[:2]:
            inp = decode_input(r.case.input)
            key, sig = b64_strict(inp.get("key_b64")), b64_strict(r.output["sig"])
            if key and sig and isinstance(inp.get("subset"), Mapping):
                order = search_order(inp["subset"], key, sig)
                if order is not None and order != canonical.SIGNED_FIELDS:
                    orders[order] = None
                    break
    return list(orders)


# -- the diagnosis ---------------------------------------------------------------
def diagnose(failures: Iterable[Any], verdicts: Iterable[Any] = ()) -> Diagnosis:
    """``failures``: the runner's failed CaseResults (``case``, ``output``,
    ``message``); ``verdicts``: every judged result (passes refute spellings)."""
    failures = list(failures)
    run = _Run(failures, list(verdicts))
    diagnosis = Diagnosis()
    open_: list[Any] = []
    errors: list[Any] = []
    for result in failures:
        if _special(diagnosis, result) or (result.case.expects_error and _is_verdict(result.case, result.output, False)):
            continue
        modelled = _modelled(result.case) and _matches(run.answer(result, Writer()), result.case.expected)
        if modelled and isinstance(result.output, Mapping):
            open_.append(result)
        elif modelled and result.output is None:
            errors.append(result)
        else:
            diagnosis.undiagnosed.append(result.case.case_id)
    _verdicts(diagnosis, failures)
    bases = _cover(diagnosis, run, open_)
    _errors(diagnosis, run, errors, bases)
    return diagnosis


def _cover(diagnosis: Diagnosis, run: _Run, open_: list) -> list[tuple[Writer, str]]:
    """Greedy cover: the class reproducing most open failures (on top of the
    classes already chosen) first; what it reproduces is closed; repeat.
    Returns the combinations used, each with the class it added last."""
    chosen: list[str] = []
    bases: list[tuple[Writer, str]] = [(Writer(), "")]  # each chosen class applied or not (a bug may be in one op)
    while open_:
        best, best_hits = None, []
        for bug in BUG_CLASSES:
            if bug.name in chosen:
                continue
            hits = []
            for result in open_:
                for base, _ in bases:
                    w = next((_combine(base, s) for s in run.spellings(bug, result.case.operation)
                              if _matches(result.output, run.answer(result, _combine(base, s)))), None)
                    if w is not None:
                        hits.append((result, w))
                        break
            if _better(bug, hits, best, best_hits):
                best, best_hits = bug, hits
        if best is None or not best_hits:
            break
        chosen.append(best.name)
        best_hits = _likeliest_spellings(run, best, best_hits, bases)
        used = list(dict.fromkeys(w for _, w in best_hits))[:8]
        bases = list(dict.fromkeys(bases + [(w, best.name) for w in used]))[:32]
        for result, writer in best_hits:
            _attribute(diagnosis, best, result, writer)
        closed = {id(r) for r, _ in best_hits}
        open_ = [r for r in open_ if id(r) not in closed]
    diagnosis.undiagnosed += [r.case.case_id for r in open_]
    return bases


def _likeliest_spellings(run: _Run, bug: BugClass, hits: list, bases: list[tuple[Writer, str]]) -> list:
    """Each case under the spelling that reproduces the most cases of the class (the
    implementation has one spelling; others agree with it on most records)."""
    matching = []
    for result, _ in hits:
        ws = [_combine(base, s) for base, _ in bases for s in run.spellings(bug, result.case.operation)]
        matching.append([w for w in dict.fromkeys(ws) if _matches(result.output, run.answer(result, w))])
    tally = Counter(w for ws in matching for w in ws)
    return [(result, max(ws, key=lambda w: tally[w])) for (result, _), ws in zip(hits, matching, strict=True)]


def _errors(diagnosis: Diagnosis, run: _Run, errors: list, bases: list[tuple[Writer, str]]) -> None:
    """A valid case answered with an error where a diagnosed bug's own arithmetic
    fails (``round(x*1e9)`` of 1e308 overflows): the knock-on of that bug."""
    for result in errors:
        name = next((name for w, name in bases[1:] if run.answer(result, w) is None), None)
        if name is None:
            diagnosis.undiagnosed.append(result.case.case_id)
        else:
            diagnosis.knock_on.setdefault(name, []).append(result.case.case_id)


def _better(bug: BugClass, hits: list, best: BugClass | None, best_hits: list) -> bool:
    if not hits:
        return False
    if best is None:
        return True
    key = (len(hits), not bug.general, -CLASS_ORDER.index(bug.name))
    return key > (len(best_hits), not best.general, -CLASS_ORDER.index(best.name))


def _attribute(diagnosis: Diagnosis, bug: BugClass, result: Any, writer: Writer) -> None:
    op = result.case.operation
    direct = op in ("canonical_bytes", "fmt9", "d_hat", "budget", "coherence") or (
        op.startswith("sign_") and bug.name in SIGNATURE_CLASSES) or (
        op.startswith("verify_") and bug.name == "lenient-base64")
    example = _example(result.case, result.output, writer)
    if direct:
        diagnosis.add_root(bug.name, result.case.case_id, example, rank=1 + (op == "fmt9"))
        diagnosis.add_detail(bug.name, _spelling_note(bug, writer))
    else:
        diagnosis.knock_on.setdefault(bug.name, []).append(result.case.case_id)
        diagnosis.set_example(bug.name, result.case.case_id, example)
        if op.startswith("sign_"):  # a verdict says nothing about the spelling; a signature does
            diagnosis.add_detail(bug.name, _spelling_note(bug, writer))


def _spelling_note(bug: BugClass, writer: Writer) -> str:
    from .hypotheses import B64_DECODERS, LAYOUTS

    if bug.name == "key-order":
        order = writer.order
        return "order " + (", ".join(order) if isinstance(order, tuple) else f"{order}")
    if bug.name == "signs-other-bytes":
        return LAYOUTS.get(writer.layout, writer.layout)
    if bug.name == "lenient-base64" and writer.b64 in B64_DECODERS:
        return f"decoder: {writer.b64}"
    if bug.name == "prehash":
        return {"prehash": "raw SHA-256 digest", "prehash-hex": "hex SHA-256 digest"}.get(writer.mac, writer.mac)
    for attr in ("fmt", "escape", "epoch"):
        fn = getattr(writer, attr)
        if fn is not getattr(Writer(), attr):
            return (fn.__doc__ or fn.__name__).strip().splitlines()[0].replace("``", "").rstrip(".")
    return ""


# -- what was accepted or answered instead of an error -------------------------------
EPOCH_FLAGS = {"epoch-range", "epoch-float"}


def _flag_class(flags: set[str]) -> str:
    return ("nan-accepted" if "nan-inf" in flags else "epoch" if flags & EPOCH_FLAGS
            else "lenient-base64" if "base64-strict" in flags else "accepts-invalid-input")


def _special(diagnosis: Diagnosis, result: Any) -> bool:
    """Accepted invalid input and lenient base64 of the adapter's own signature:
    named from what the adapter returned (verdicts for malformed input: :func:`_verdicts`)."""
    case, output = result.case, result.output
    flags = set(case.flags)
    if "self-consistent" in flags and isinstance(output, Mapping) and output.get("valid") is True:
        diagnosis.add_root("lenient-base64", case.case_id,
                           f"{case.case_id}: the adapter's own signature, {case.comment.split(', ', 1)[-1]}, "
                           "was accepted as valid")
        diagnosis.add_detail("lenient-base64", f"accepted: {case.comment.split(', ', 1)[-1]}")
        return True
    if not case.expects_error:
        if flags & EPOCH_FLAGS and output is None and "error" in (result.message or ""):
            diagnosis.add_root("epoch", case.case_id, f"{case.case_id}: a valid epoch ({case.comment}) was refused")
            return True
        return False
    if output is None or _is_verdict(case, output, False):
        return False
    name = _flag_class(flags)
    how = _accepted_how(case, output, _is_verdict(case, output, True))
    diagnosis.add_root(name, case.case_id, f"{case.case_id}: {case.comment} -- {how}", rank=_rewritten(how))
    if name == "accepts-invalid-input":
        diagnosis.add_detail(name, ", ".join(f for f in case.flags if f != "isolated") or case.operation)
    return True


def _is_verdict(case: Case, output: Any, value: bool) -> bool:
    return case.operation.startswith("verify_") and isinstance(output, Mapping) and output.get("valid") is value


def _verdicts(diagnosis: Diagnosis, failures: list) -> None:
    """A ``valid: false`` verdict for malformed input: the knock-on of the class that
    accepted that input elsewhere (the bytes were built, then did not verify), else
    ``verdict-not-error``."""
    for result in failures:
        case = result.case
        if not (case.expects_error and _is_verdict(case, result.output, False)):
            continue
        name = _flag_class(set(case.flags))
        if name in diagnosis.root_causes:
            diagnosis.knock_on.setdefault(name, []).append(case.case_id)
        else:
            diagnosis.add_root("verdict-not-error", case.case_id,
                               f"{case.case_id}: {case.comment} -- rejected with valid: false, where the "
                               "malformed input must be refused as invalid_input")


def _rewritten(how: str) -> bool:
    """``accepted, epoch X written as Y`` with X != Y."""
    if not how.startswith("accepted, epoch "):
        return False
    sent, _, written = how.removeprefix("accepted, epoch ").partition(" written as ")
    return sent != written


def _accepted_how(case: Case, output: Any, verdict: Any) -> str:
    if verdict is True:
        return "accepted as validly signed"
    raw = b64_strict(output.get("bytes_b64")) if isinstance(output, Mapping) else None
    if raw is not None:
        text = _show(raw)
        if "epoch" in text and set(case.flags) & EPOCH_FLAGS:
            written = text.split('"epoch":', 1)[1].split(",", 1)[0].strip()
            sent = json.dumps((case.input.get("subset") or {}).get("epoch")) if isinstance(case.input, Mapping) else "?"
            return f"accepted, epoch {sent} written as {written}"
        return f"accepted and written `{text[:80]}`"
    return "accepted, output " + json.dumps(output, ensure_ascii=False)[:80]


# -- reading a diagnosis -----------------------------------------------------------
def describe(name: str) -> tuple[str, str]:
    """(what the implementation does, the deciding rule) of a class name."""
    bug = CLASS_BY_NAME.get(name)
    if bug is not None:
        return bug.title, bug.rule
    title, rule, _flags = EXTRA_CLASSES.get(name, (name, "", ()))
    return title, rule


def class_flags(name: str) -> tuple[str, ...]:
    bug = CLASS_BY_NAME.get(name)
    return bug.flags if bug is not None else EXTRA_CLASSES.get(name, ("", "", ()))[2]


def pitfalls_of(diagnosis: Diagnosis) -> list[str]:
    """The pitfalls a run hit, from its diagnosis: the diagnosed classes (never a
    flag merely carried by a knock-on case)."""
    return _ordered(diagnosis)


def _ordered(diagnosis: Diagnosis) -> list[str]:
    names = list(dict.fromkeys(list(diagnosis.root_causes) + list(diagnosis.knock_on)))
    return sorted(names, key=lambda n: -diagnosis.count(n))


def summary_lines(diagnosis: Diagnosis) -> list[str]:
    """One line per cause: class, count, SPEC rule, one example with the differing bytes."""
    lines = []
    for name in _ordered(diagnosis):
        title, rule = describe(name)
        detail = "; ".join(diagnosis.details.get(name, [])[:3])
        lines.append(f"  {name}: {diagnosis.count(name)} case(s) -- {title}" + (f" ({detail})" if detail else "")
                     + (f" -- {rule}" if rule else "")
                     + (f" -- e.g. {diagnosis.examples[name]}" if name in diagnosis.examples else ""))
    if diagnosis.undiagnosed:
        lines.append(f"  undiagnosed: {len(diagnosis.undiagnosed)} case(s) no known bug class reproduces: "
                     + " ".join(diagnosis.undiagnosed[:6]) + (" ..." if len(diagnosis.undiagnosed) > 6 else ""))
    return lines


def format_diagnosis(diagnosis: Diagnosis, limit: int = 8) -> list[str]:
    """Each root cause with its cases and its knock-on failures."""
    lines = []
    if diagnosis.root_causes or diagnosis.knock_on:
        lines.append("root causes in detail:")
    for name in _ordered(diagnosis):
        title, rule = describe(name)
        ids = diagnosis.root_causes.get(name, [])
        lines.append(f"  {name}: {title} -- {len(ids)} case(s) {' '.join(ids[:limit])}"
                     + (" ..." if len(ids) > limit else ""))
        if diagnosis.details.get(name):
            lines.append(f"      how: {'; '.join(diagnosis.details[name][:6])}")
        if rule:
            lines.append(f"      rule: {rule}")
        if name in diagnosis.examples:
            lines.append(f"      e.g. {diagnosis.examples[name]}")
        knock = diagnosis.knock_on.get(name, [])
        if knock:
            shown = " ".join(knock[:limit]) + (" ..." if len(knock) > limit else "")
            lines.append(f"      knock-on: {len(knock)} signature/verdict case(s) it reproduces: {shown}")
    if diagnosis.undiagnosed:
        ids = diagnosis.undiagnosed
        lines.append(f"undiagnosed failures (no known bug class reproduces them): {len(ids)} case(s) "
                     + " ".join(ids[:limit]) + (" ..." if len(ids) > limit else ""))
    return lines
