"""flk.conformance: the conformance kit for PCS implementations in any language.

Test vectors (``flk.spec`` data, :mod:`flk.conformance.vectors`), the
stdin/stdout adapter protocol (PROTOCOL.md, protocol.schema.json), the runner
behind ``flk conformance vectors`` (:mod:`flk.conformance.runner`) with its
diagnosis (:mod:`flk.conformance.hypotheses`, :mod:`flk.conformance.diagnosis`)
and self-consistent base64 probes (:mod:`flk.conformance.probes`), run
comparison (:mod:`flk.conformance.report_diff`), reference adapters
(:mod:`flk.conformance.adapters`) and a pytest plugin
(:mod:`flk.conformance.pytest_plugin`). See README.md.
"""
