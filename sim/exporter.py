"""What one simulated region's process counts for its ``/metrics``, as ``flk serve``'s worker does.

Why this module exists: a scrape of a simulated region must show what a scrape of
``flk serve`` would, and the surest way is to count with the same objects at the
same places. :class:`ProcessMetrics` belongs to one incarnation of a region's
process (a restart makes a new one, so its counters start at zero, as a new
process's do):

* the verifier's counters (``flk_ingest_total``, ``flk_accepted_total``,
  ``flk_signature_errors_total``, ``flk_dedup_hits_total``, ``flk_rejected_total``, ...)
  are the shipped :class:`flk.impl.verifier.metrics.Metrics`, handed to the
  verification core as its sink, as the server's batch driver hands it (tenant labels,
  ``_unknown``, the top-N ``_other`` included); the start-up replay feeds it nothing,
  as in the server;
* the HTTP layer, which the simulator does not run, is counted where ``flk serve``'s
  ``app.py`` counts it: every answer in ``flk_http_requests_total``; a submission the
  concurrency limit sheds (429 before the batch driver) in ``flk_overloaded_total`` and
  nowhere else; every answer of the batch driver in ``flk_http_latency_seconds`` (its
  time from arrival to answer, bucketed by ``HTTP_LATENCY_BUCKETS``).

Only a run that is scraped (:class:`flk.sim.alerts.Scraper`, a scenario's operators)
counts: :meth:`flk.sim.world.World.export_metrics` switches it on.
"""

from __future__ import annotations

from bisect import bisect_left

from flk.impl.verifier.metrics import HTTP_LATENCY_BUCKETS, Metrics
from flk.impl.verifier.problems import SUBMIT_STATUSES

SUBMIT = "/v1/pcs/submit"
# the verifier's families a scrape shows (flk_verify_latency_seconds is wall-clock time: not simulated)
PIPELINE_SAMPLES = frozenset({
    "flk_ingest_total", "flk_dedup_hits_total", "flk_accepted_total", "flk_escalated_total",
    "flk_signature_errors_total", "flk_wal_errors_total", "flk_dedup_conflicts_total", "flk_rejected_total",
    "flk_dedup_unavailable_total"})
_BUCKET_KEYS = tuple(("flk_http_latency_seconds_bucket", (("le", repr(le)),)) for le in HTTP_LATENCY_BUCKETS)
_INF_KEY = ("flk_http_latency_seconds_bucket", (("le", "+Inf"),))


class ProcessMetrics:
    """One region process's counters (see the module docstring)."""

    def __init__(self) -> None:
        self.pipeline = Metrics()  # the verification core's sink, as flk serve's
        self.requests: dict[int, float] = dict.fromkeys(SUBMIT_STATUSES, 0.0)  # at 0 from the start
        self.latency = [0] * (len(HTTP_LATENCY_BUCKETS) + 1)  # per bucket (not cumulative), +Inf last
        self.latency_sum = 0.0
        self.overloaded = 0

    def shed(self) -> None:
        """A submission the concurrency limit refused (429 before the batch driver)."""
        self.requests[429] = self.requests.get(429, 0.0) + 1.0
        self.overloaded += 1

    def answered(self, status: int, seconds: float) -> None:
        """A submission the batch driver answered ``status``, ``seconds`` after it arrived."""
        self.requests[status] = self.requests.get(status, 0.0) + 1.0
        self.latency[bisect_left(HTTP_LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def samples(self) -> dict:
        """``{(name, labels): value}``: the samples of these counters in a scrape now."""
        out: dict = {("flk_overloaded_total", ()): float(self.overloaded), ("flk_wal_quarantined_total", ()): 0.0}
        for status, n in self.requests.items():
            out[("flk_http_requests_total", (("route", SUBMIT), ("status", str(status))))] = n
        total = 0
        for key, n in zip(_BUCKET_KEYS, self.latency, strict=False):
            total += n
            out[key] = float(total)
        total += self.latency[-1]
        out[_INF_KEY] = float(total)
        out[("flk_http_latency_seconds_count", ())] = float(total)
        out[("flk_http_latency_seconds_sum", ())] = self.latency_sum
        for family in self.pipeline.registry.collect():  # folds the pending counts first (Tally)
            for s in family.samples:
                if s.name in PIPELINE_SAMPLES:
                    out[(s.name, tuple(s.labels.items()))] = s.value
        return out
