"""The verifier's compiled fast paths, registered in the one registry (:mod:`flk.impl.core.accel`).

Why this module exists: ``flk.impl.verifier._fastverify`` (``_fastverify.c``, C)
answers the common case of the verify pipeline's hot steps -- strict JSON
parsing, the wire rules, step 4 for HMAC v1, step 6 and the whole accept path
with its 200 body, read off the body without a dict in the batch loop (one receive time per
batch, or one per record: a replay span) -- and hands anything else to the pure code of
:mod:`.wire` and :mod:`.pipeline`, the references. Each entry names that
reference and the differential test that proves both agree; :mod:`.wire` and
:mod:`.pipeline` obtain the compiled functions through ``accel.bind``.
"""

from __future__ import annotations

from ..core import accel

EXTENSION = "flk.impl.verifier._fastverify"
_TESTS = "tests/verifier/test_fastpath_differential.py::"

PARSE_JSON = accel.register("parse_json", EXTENSION, "flk.impl.verifier.wire:pure_parse_strict",
                            _TESTS + "test_parse_strict_is_the_same_on_both_paths")
PCS_CHECK = accel.register("pcs_check", EXTENSION, "flk.impl.verifier.wire:pure_validate_pcs",
                           _TESTS + "test_validate_pcs_is_the_same_on_both_paths")
SIGNAL_CHECK = accel.register("signal_check", EXTENSION, "flk.impl.verifier.pipeline:Verifier.pure_check_signals",
                              _TESTS + "test_check_signals_is_the_same_on_both_paths")
HMAC_AUTH_V1 = accel.register("hmac_auth_v1", EXTENSION, "flk.impl.verifier.pipeline:Verifier._verify_sig",
                              _TESTS + "test_the_pipeline_answers_the_same_on_both_paths")
ACCEPT_V1 = accel.register("accept_v1", EXTENSION, "flk.impl.verifier.pipeline:Verifier.handle",
                           _TESTS + "test_run_requests_is_the_same_on_both_paths")
_BATCH_TESTS = "tests/verifier/test_batch_differential.py::"
ACCEPT_BATCH = accel.register("accept_batch", EXTENSION, "flk.impl.verifier.pipeline:Verifier.handle",
                              _BATCH_TESTS + "test_the_batch_loop_answers_the_same_on_both_paths")
ACCEPT_EACH = accel.register("accept_each", EXTENSION, "flk.impl.verifier.pipeline:Verifier.handle",
                             _BATCH_TESTS + "test_accept_each_is_accept_v1_at_each_records_time")
ACCEPT_SCAN = accel.register("accept_scan", EXTENSION, "flk.impl.verifier.pipeline:Verifier.handle",
                             _BATCH_TESTS + "test_accept_scan_is_accept_v1_where_it_answers")
FRAME_RECORDS = accel.register("frame_records", EXTENSION, "flk.impl.storage.walformat:encode_frame",
                               _BATCH_TESTS + "test_frame_records_is_the_same_as_encode_frame")
