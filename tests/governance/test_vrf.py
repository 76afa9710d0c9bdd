"""ECVRF-EDWARDS25519-SHA512-TAI against every RFC 9381 appendix B.3 vector (examples 16-18),
checking each published intermediate, plus negative cases and the pipeline hook."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.governance import vrf

# RFC 9381 appendix B.3 (examples 16, 17, 18): SK, PK, alpha, x, ctr, H, k, U, V, pi, beta.
RFC9381_B3 = [
    dict(
        example=16,
        sk="9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        pk="d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        alpha="",
        x="307c83864f2833cb427a2ef1c00a013cfdff2768d980c0a3a520f006904de94f",
        ctr=0,
        h="91bbed02a99461df1ad4c6564a5f5d829d0b90cfc7903e7a5797bd658abf3318",
        k="8a49edbd1492a8ee09766befe50a7d563051bf3406cbffc20a88def030730f0f",
        u="aef27c725be964c6a9bf4c45ca8e35df258c1878b838f37d9975523f09034071",
        v="5016572f71466c646c119443455d6cb9b952f07d060ec8286d678615d55f954f",
        pi="8657106690b5526245a92b003bb079ccd1a92130477671f6fc01ad16f26f723f"
        "26f8a57ccaed74ee1b190bed1f479d9727d2d0f9b005a6e456a35d4fb0daab12"
        "68a1b0db10836d9826a528ca76567805",
        beta="90cf1df3b703cce59e2a35b925d411164068269d7b2d29f3301c03dd757876ff"
        "66b71dda49d2de59d03450451af026798e8f81cd2e333de5cdf4f3e140fdd8ae",
    ),
    dict(
        example=17,
        sk="4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        pk="3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        alpha="72",
        x="68bd9ed75882d52815a97585caf4790a7f6c6b3b7f821c5e259a24b02e502e51",
        ctr=1,
        h="5b659fc3d4e9263fd9a4ed1d022d75eaacc20df5e09f9ea937502396598dc551",
        k="d8c3a66921444cb3427d5d989f9b315aa8ca3375e9ec4d52207711a1fdb44107",
        u="1dcb0a4821a2c48bf53548228b7f170962988f6d12f5439f31987ef41f034ab3",
        v="fd03c0bf498c752161bae4719105a074630a2aa5f200ff7b3995f7bfb1513423",
        pi="f3141cd382dc42909d19ec5110469e4feae18300e94f304590abdced48aed593"
        "3bf0864a62558b3ed7f2fea45c92a465301b3bbf5e3e54ddf2d935be3b67926d"
        "a3ef39226bbc355bdc9850112c8f4b02",
        beta="eb4440665d3891d668e7e0fcaf587f1b4bd7fbfe99d0eb2211ccec90496310eb"
        "5e33821bc613efb94db5e5b54c70a848a0bef4553a41befc57663b56373a5031",
    ),
    dict(
        example=18,
        sk="c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        pk="fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        alpha="af82",
        x="909a8b755ed902849023a55b15c23d11ba4d7f4ec5c2f51b1325a181991ea95c",
        ctr=0,
        h="bf4339376f5542811de615e3313d2b36f6f53c0acfebb482159711201192576a",
        k="5ffdbc72135d936014e8ab708585fda379405542b07e3bd2c0bd48437fbac60a",
        u="2bae73e15a64042fcebf062abe7e432b2eca6744f3e8265bc38e009cd577ecd5",
        v="88cba1cb0d4f9b649d9a86026b69de076724a93a65c349c988954f0961c5d506",
        pi="9bc0f79119cc5604bf02d23b4caede71393cedfbb191434dd016d30177ccbf80"
        "96bb474e53895c362d8628ee9f9ea3c0e52c7a5c691b6c18c9979866568add7a"
        "2d41b00b05081ed0f58ee5e31b3a970e",
        beta="645427e5d00c62a23fb703732fa5d892940935942101e456ecca7bb217c61c45"
        "2118fec1219202a0edcf038bb6373241578be7217ba85a2687f7a0310b2df19f",
    ),
]

IDS = [f"example{v['example']}" for v in RFC9381_B3]


@pytest.mark.parametrize("vec", RFC9381_B3, ids=IDS)
def test_rfc9381_vector_intermediates(vec):
    sk = bytes.fromhex(vec["sk"])
    alpha = bytes.fromhex(vec["alpha"])
    assert vrf.public_key(sk).hex() == vec["pk"]
    assert vrf.secret_scalar(sk).to_bytes(32, "little").hex() == vec["x"]
    h, ctr = vrf.encode_to_curve_tai(bytes.fromhex(vec["pk"]), alpha)
    assert ctr == vec["ctr"]
    assert vrf.point_to_string(h).hex() == vec["h"]
    k = vrf.nonce(sk, vrf.point_to_string(h))
    assert k.to_bytes(32, "little").hex() == vec["k"]
    assert vrf.point_to_string(vrf._mul(k, vrf.BASE)).hex() == vec["u"]
    assert vrf.point_to_string(vrf._mul(k, h)).hex() == vec["v"]


@pytest.mark.parametrize("vec", RFC9381_B3, ids=IDS)
def test_rfc9381_vector_prove_verify(vec):
    sk, pk = bytes.fromhex(vec["sk"]), bytes.fromhex(vec["pk"])
    alpha, pi = bytes.fromhex(vec["alpha"]), bytes.fromhex(vec["pi"])
    assert vrf.prove(sk, alpha).hex() == vec["pi"]
    assert vrf.proof_to_hash(pi).hex() == vec["beta"]
    assert vrf.verify(pk, alpha, pi).hex() == vec["beta"]


@pytest.mark.parametrize("vec", RFC9381_B3, ids=IDS)
def test_rfc9381_vector_negatives(vec):
    pk, alpha, pi = (bytes.fromhex(vec[k]) for k in ("pk", "alpha", "pi"))
    for pos in (0, 31, 32, 47, 48, 79):  # Gamma, c and s each tampered
        bad = bytearray(pi)
        bad[pos] ^= 0x01
        assert vrf.verify(pk, alpha, bytes(bad)) is None, pos
    assert vrf.verify(pk, alpha + b"\x00", pi) is None
    assert vrf.verify(pk, alpha, pi[:-1]) is None
    other = next(v for v in RFC9381_B3 if v is not vec)
    assert vrf.verify(bytes.fromhex(other["pk"]), alpha, pi) is None


def test_vrf_rejects_s_not_reduced():
    vec = RFC9381_B3[0]
    pi = bytes.fromhex(vec["pi"])
    s = int.from_bytes(pi[48:], "little") + vrf.L  # same point arithmetic, non-canonical scalar
    assert s < 2**256
    bad = pi[:48] + s.to_bytes(32, "little")
    assert vrf.verify(bytes.fromhex(vec["pk"]), bytes.fromhex(vec["alpha"]), bad) is None


def test_vrf_rejects_small_order_and_noncanonical_keys():
    vec = RFC9381_B3[0]
    pi, alpha = bytes.fromhex(vec["pi"]), b""
    identity = (1).to_bytes(32, "little")
    assert vrf.verify(identity, alpha, pi) is None
    noncanonical = (vrf.P + 1).to_bytes(32, "little")  # y = p+1 encodes y = 1 non-canonically
    assert vrf.string_to_point(noncanonical) is None
    assert vrf.verify(noncanonical, alpha, pi) is None


@settings(max_examples=8, deadline=None)
@given(sk=st.binary(min_size=32, max_size=32), alpha=st.binary(max_size=40), flip=st.integers(0, 79 * 8))
def test_vrf_roundtrip_and_bitflip(sk, alpha, flip):
    pi = vrf.prove(sk, alpha)
    pk = vrf.public_key(sk)
    beta = vrf.verify(pk, alpha, pi)
    assert beta == vrf.proof_to_hash(pi)
    bad = bytearray(pi)
    bad[flip // 8] ^= 1 << (flip % 8)
    assert vrf.verify(pk, alpha, bytes(bad)) is None


def _pcs(**kw):
    pcs = {"merkle_root": "ab" * 32, "epoch": 7, "shard_id": "shard-1"}
    pcs.update(kw)
    return pcs


def test_vrf_hook_accepts_valid_and_derives_seed():
    sk = bytes.fromhex(RFC9381_B3[1]["sk"])
    proof, seed = vrf.agent_prove(sk, "ab" * 32, 7, "shard-1")
    alpha = b"abababababababababababababababababababababababababababababababab|7|shard-1"
    assert vrf.vrf_alpha("ab" * 32, 7, "shard-1") == alpha
    beta = vrf.verify(vrf.public_key(sk), alpha, bytes.fromhex(proof))
    assert seed == int.from_bytes(beta[:8], "big")
    check = vrf.check_pcs(_pcs(vrf_proof=proof, seed=seed), vrf.public_key(sk))
    assert check.reasons == () and check.seed == seed
    hook = vrf.make_vrf_hook({"t1": vrf.public_key(sk)})
    assert hook(_pcs(vrf_proof=proof), "t1") == []
    # a proof over another epoch, another tenant's key, a chosen seed, garbage: all refused
    assert hook(_pcs(vrf_proof=proof, epoch=8), "t1") == [vrf.REASON_VRF_INVALID]
    assert hook(_pcs(vrf_proof=proof), "t2") == [vrf.REASON_VRF_INVALID]
    assert hook(_pcs(vrf_proof=proof, seed=(seed + 1) % 2**64), "t1") == [vrf.REASON_VRF_SEED_MISMATCH]
    assert hook(_pcs(vrf_proof="zz"), "t1") == [vrf.REASON_VRF_INVALID]
    assert hook(_pcs(), "t1") == []
    assert vrf.make_vrf_hook({}, required=True)(_pcs(), "t1") == [vrf.REASON_VRF_MISSING]
    assert vrf.HTTP_STATUS[vrf.REASON_VRF_INVALID] == 401
