"""RFC 3161 TimeStampReq encoding and TimeStampResp parsing.

There is no network here, so there is no live-TSA test. The request encoding
is checked byte for byte against the ASN.1 structure of RFC 3161 section 2.4.1
and against `openssl ts -query`; responses come from a real OpenSSL TSA run
locally (`openssl ts -reply`) with a throwaway P-256 key.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from flk.impl.governance import audit, tsa

DIGEST = hashlib.sha256(b"flk batch root").digest()
IN_CI = os.environ.get("CI", "").lower() == "true"


def test_timestamp_request_der_structure():
    req = tsa.build_timestamp_request(DIGEST, nonce=0x0102030405060708, cert_req=True)
    sha256_alg = bytes.fromhex("300d06096086480165030402010500")  # SEQ{OID 2.16.840.1.101.3.4.2.1, NULL}
    imprint = b"\x30\x31" + sha256_alg + b"\x04\x20" + DIGEST
    body = b"\x02\x01\x01" + imprint + b"\x02\x08\x01\x02\x03\x04\x05\x06\x07\x08" + b"\x01\x01\xff"
    assert req == b"\x30" + bytes([len(body)]) + body
    # a nonce with the high bit set gets a leading zero octet (DER INTEGER is signed)
    req = tsa.build_timestamp_request(DIGEST, nonce=0x80, cert_req=False)
    assert req.endswith(b"\x02\x02\x00\x80")
    assert tsa.build_timestamp_request(DIGEST, cert_req=False) == b"\x30\x36\x02\x01\x01" + imprint
    with pytest.raises(tsa.InvalidInput):
        tsa.build_timestamp_request(b"short")


def test_der_reader_is_strict():
    with pytest.raises(tsa.TimestampError):
        tsa.der_read(b"\x30\x81\x05\x00\x00\x00\x00\x00")  # non-minimal length
    with pytest.raises(tsa.TimestampError):
        tsa.der_read(b"\x30\x05\x00")  # truncated
    assert tsa.der_read(b"\x04\x02ab") == (4, b"ab", 4)
    assert tsa._oid_text(tsa.der_oid(tsa.OID_TST_INFO)[2:]) == tsa.OID_TST_INFO


def _openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        if IN_CI:
            pytest.fail("openssl not installed")
        pytest.skip("openssl not installed")
    return path


TSA_CNF = """
[ tsa ]
default_tsa = tsa1
[ tsa1 ]
serial = {dir}/serial
crypto_device = builtin
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = flk local test TSA
[ ext ]
extendedKeyUsage = critical,timeStamping
basicConstraints = CA:FALSE
"""


@pytest.fixture(scope="module")
def local_tsa(tmp_path_factory):
    openssl = _openssl()
    d = tmp_path_factory.mktemp("tsa")
    (d / "tsa.cnf").write_text(TSA_CNF.format(dir=d))
    (d / "serial").write_text("01\n")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2",
         "-config", str(d / "tsa.cnf"), "-extensions", "ext"],
        check=True, capture_output=True,
    )

    def reply(request: bytes) -> bytes:
        (d / "req.tsq").write_bytes(request)
        subprocess.run(
            [openssl, "ts", "-reply", "-config", str(d / "tsa.cnf"), "-queryfile", str(d / "req.tsq"),
             "-inkey", str(d / "key.pem"), "-signer", str(d / "cert.pem"), "-out", str(d / "resp.tsr")],
            check=True, capture_output=True,
        )
        return (d / "resp.tsr").read_bytes()

    reply.dir = d
    reply.openssl = openssl
    return reply


def test_timestamp_request_matches_openssl_query(tmp_path):
    openssl = _openssl()
    out = tmp_path / "q.tsq"
    subprocess.run([openssl, "ts", "-query", "-digest", DIGEST.hex(), "-sha256", "-cert", "-no_nonce",
                    "-out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == tsa.build_timestamp_request(DIGEST, nonce=None, cert_req=True)


def test_timestamp_response_from_local_openssl_tsa(local_tsa):
    nonce = 0x1234567890ABCDEF
    req = tsa.build_timestamp_request(DIGEST, nonce=nonce)
    resp = local_tsa(req)
    tok = tsa.parse_timestamp_response(resp, DIGEST, nonce)
    assert tok.status == "granted" and tok.policy == "1.2.3.4.1" and tok.nonce == nonce
    assert tok.gen_time.endswith("Z") and len(tok.gen_time) >= 15 and tok.serial >= 1
    # the token we keep is the one openssl verifies against our own request
    d = local_tsa.dir
    (d / "token.der").write_bytes(tok.token_der)
    (d / "mine.tsq").write_bytes(req)
    v = subprocess.run([local_tsa.openssl, "ts", "-verify", "-queryfile", str(d / "mine.tsq"), "-in",
                        str(d / "token.der"), "-token_in", "-CAfile", str(d / "cert.pem")],
                       capture_output=True, text=True)
    assert "Verification: OK" in v.stdout, v.stdout + v.stderr
    with pytest.raises(tsa.TimestampError, match="messageImprint"):
        tsa.parse_timestamp_response(resp, hashlib.sha256(b"other").digest(), nonce)
    with pytest.raises(tsa.TimestampError, match="nonce"):
        tsa.parse_timestamp_response(resp, DIGEST, nonce + 1)
    with pytest.raises(tsa.TimestampError):
        tsa.parse_timestamp_response(resp[:-10], DIGEST, nonce)


def test_timestamp_refusal_is_reported(local_tsa):
    # a SHA-1 request is refused by a TSA configured for sha256 only -> status rejection
    sha1_alg = tsa.der_seq(tsa.der_oid("1.3.14.3.2.26"), b"\x05\x00")
    req = tsa.der_seq(tsa.der_int(1), tsa.der_seq(sha1_alg, tsa.der_tlv(0x04, b"\x00" * 20)))
    resp = local_tsa(req)
    with pytest.raises(tsa.TimestampError, match="rejection"):
        tsa.parse_timestamp_response(resp, DIGEST)


def test_anchor_with_tsa_token(tmp_path, local_tsa):
    log = audit.AuditLog(str(tmp_path / "log"), segment_entries=2)
    for i in range(4):
        log.append(tenant="t", pcs_id=f"p{i}", outcome="accepted", payload_digest="ab" * 32, now=1e9 + i)

    def timestamp(root_hex: str) -> bytes:
        digest = bytes.fromhex(root_hex)
        resp = local_tsa(tsa.build_timestamp_request(digest, nonce=7))
        return tsa.parse_timestamp_response(resp, digest, 7).token_der

    anchor = log.anchor(audit.AttestationStore(str(tmp_path / "anchors")), 1e9 + 5, tsa=timestamp)
    assert anchor["segment_roots"] and anchor["tsa_token_b64"]
    assert audit.verify_directory(str(tmp_path / "log"), str(tmp_path / "anchors")).ok
