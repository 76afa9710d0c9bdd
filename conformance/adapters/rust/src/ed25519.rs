//! Ed25519 (RFC 8032, pure Ed25519) over SHA-512 from the Debian-packaged `sha2` crate.
//!
//! Debian packages no Ed25519 crate that builds for wasm32 offline, so the curve arithmetic is
//! here: GF(2^255-19) in five 51-bit limbs, points in extended twisted Edwards coordinates with
//! the complete addition law (a = -1), scalars reduced mod L bit by bit. Decoding is strict
//! (SPEC.md: a verifier refuses what it cannot decode canonically):
//! * S must be < L (no malleated S + L);
//! * a public key must be a canonical encoding (y < p, no "negative zero" x) of a curve point;
//! * R is compared as bytes with the encoding of [S]B - [k]A (cofactorless equation), so a
//!   non-canonical R never verifies.
//! Signing is variable time: this is a conformance reference, not a signer for secret keys.

use sha2::{Digest, Sha512};

const MASK: u64 = (1u64 << 51) - 1;

#[derive(Clone, Copy)]
struct Fe([u64; 5]);

const ZERO: Fe = Fe([0; 5]);
const ONE: Fe = Fe([1, 0, 0, 0, 0]);

fn carry(mut h: [u128; 5]) -> Fe {
    for _ in 0..2 {
        for i in 0..4 {
            h[i + 1] += h[i] >> 51;
            h[i] &= MASK as u128;
        }
        let c = h[4] >> 51;
        h[4] &= MASK as u128;
        h[0] += c * 19;
    }
    h[1] += h[0] >> 51;
    h[0] &= MASK as u128;
    Fe([h[0] as u64, h[1] as u64, h[2] as u64, h[3] as u64, h[4] as u64])
}

impl Fe {
    fn from_bytes(b: &[u8; 32]) -> Fe {
        let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        let (w0, w1, w2, w3) = (w(0), w(1), w(2), w(3));
        Fe([
            w0 & MASK,
            ((w0 >> 51) | (w1 << 13)) & MASK,
            ((w1 >> 38) | (w2 << 26)) & MASK,
            ((w2 >> 25) | (w3 << 39)) & MASK,
            (w3 >> 12) & MASK,
        ])
    }

    /// The canonical (fully reduced) little-endian encoding.
    fn to_bytes(&self) -> [u8; 32] {
        let mut h = carry(self.0.map(|x| x as u128)).0;
        let mut q = (h[0] + 19) >> 51;
        for limb in h.iter().skip(1) {
            q = (limb + q) >> 51;
        }
        h[0] += 19 * q;
        for i in 0..4 {
            h[i + 1] += h[i] >> 51;
            h[i] &= MASK;
        }
        h[4] &= MASK;
        let words = [h[0] | (h[1] << 51), (h[1] >> 13) | (h[2] << 38), (h[2] >> 26) | (h[3] << 25),
                     (h[3] >> 39) | (h[4] << 12)];
        let mut out = [0u8; 32];
        for (i, w) in words.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    fn add(&self, o: &Fe) -> Fe {
        carry([0, 1, 2, 3, 4].map(|i| (self.0[i] + o.0[i]) as u128))
    }

    fn sub(&self, o: &Fe) -> Fe {
        // + 4p keeps every limb non-negative (inputs are carried: limbs < 2^52)
        let four_p = [0x1fffffffffffb4u64, 0x1ffffffffffffc, 0x1ffffffffffffc, 0x1ffffffffffffc, 0x1ffffffffffffc];
        carry([0, 1, 2, 3, 4].map(|i| (self.0[i] + four_p[i] - o.0[i]) as u128))
    }

    fn neg(&self) -> Fe {
        ZERO.sub(self)
    }

    fn mul(&self, o: &Fe) -> Fe {
        let a = self.0.map(|x| x as u128);
        let b = o.0.map(|x| x as u128);
        let b19 = b.map(|x| x * 19);
        carry([
            a[0] * b[0] + a[1] * b19[4] + a[2] * b19[3] + a[3] * b19[2] + a[4] * b19[1],
            a[0] * b[1] + a[1] * b[0] + a[2] * b19[4] + a[3] * b19[3] + a[4] * b19[2],
            a[0] * b[2] + a[1] * b[1] + a[2] * b[0] + a[3] * b19[4] + a[4] * b19[3],
            a[0] * b[3] + a[1] * b[2] + a[2] * b[1] + a[3] * b[0] + a[4] * b19[4],
            a[0] * b[4] + a[1] * b[3] + a[2] * b[2] + a[3] * b[1] + a[4] * b[0],
        ])
    }

    /// self^e, e little-endian.
    fn pow(&self, e: &[u8; 32]) -> Fe {
        let mut r = ONE;
        for i in (0..256).rev() {
            r = r.mul(&r);
            if (e[i / 8] >> (i % 8)) & 1 == 1 {
                r = r.mul(self);
            }
        }
        r
    }

    fn invert(&self) -> Fe {
        self.pow(&exponent(0xeb, 0x7f)) // p - 2
    }

    fn is_zero(&self) -> bool {
        self.to_bytes() == [0u8; 32]
    }

    fn eq(&self, o: &Fe) -> bool {
        self.to_bytes() == o.to_bytes()
    }

    fn is_negative(&self) -> bool {
        self.to_bytes()[0] & 1 == 1
    }
}

/// 32 little-endian bytes: `low`, then 0xff x 30, then `high`.
fn exponent(low: u8, high: u8) -> [u8; 32] {
    let mut e = [0xffu8; 32];
    e[0] = low;
    e[31] = high;
    e
}

fn small(n: u64) -> Fe {
    Fe([n, 0, 0, 0, 0])
}

fn d() -> Fe {
    small(121665).neg().mul(&small(121666).invert())
}

fn sqrt_m1() -> Fe {
    small(2).pow(&exponent(0xfb, 0x1f)) // 2^((p-1)/4)
}

#[derive(Clone, Copy)]
struct Point {
    x: Fe,
    y: Fe,
    z: Fe,
    t: Fe,
}

const IDENTITY: Point = Point { x: ZERO, y: ONE, z: ONE, t: ZERO };
const BASE: [u8; 32] = [
    0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
    0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
];

impl Point {
    /// Complete addition for a = -1 (Hisil, Wong, Carter, Dawson 2008); also doubles.
    fn add(&self, o: &Point, d2: &Fe) -> Point {
        let a = self.y.sub(&self.x).mul(&o.y.sub(&o.x));
        let b = self.y.add(&self.x).mul(&o.y.add(&o.x));
        let c = self.t.mul(d2).mul(&o.t);
        let dd = self.z.add(&self.z).mul(&o.z);
        let (e, f, g, h) = (b.sub(&a), dd.sub(&c), dd.add(&c), b.add(&a));
        Point { x: e.mul(&f), y: g.mul(&h), z: f.mul(&g), t: e.mul(&h) }
    }

    fn neg(&self) -> Point {
        Point { x: self.x.neg(), y: self.y, z: self.z, t: self.t.neg() }
    }

    /// [k]P, k little-endian (any 256-bit integer).
    fn mul(&self, k: &[u8; 32], d2: &Fe) -> Point {
        let mut r = IDENTITY;
        for i in (0..256).rev() {
            r = r.add(&r, d2);
            if (k[i / 8] >> (i % 8)) & 1 == 1 {
                r = r.add(self, d2);
            }
        }
        r
    }

    fn encode(&self) -> [u8; 32] {
        let zi = self.z.invert();
        let (x, y) = (self.x.mul(&zi), self.y.mul(&zi));
        let mut out = y.to_bytes();
        out[31] |= (x.is_negative() as u8) << 7;
        out
    }

    /// RFC 8032 section 5.1.3, strict: y must be < p; x = 0 with the sign bit set is refused.
    fn decode(b: &[u8; 32]) -> Option<Point> {
        let sign = b[31] >> 7;
        let mut yb = *b;
        yb[31] &= 0x7f;
        let y = Fe::from_bytes(&yb);
        if y.to_bytes() != yb {
            return None; // y >= p: not canonical
        }
        let yy = y.mul(&y);
        let u = yy.sub(&ONE);
        let v = d().mul(&yy).add(&ONE);
        let v3 = v.mul(&v).mul(&v);
        let v7 = v3.mul(&v3).mul(&v);
        let mut x = u.mul(&v3).mul(&u.mul(&v7).pow(&exponent(0xfd, 0x0f))); // (p-5)/8
        let vxx = v.mul(&x).mul(&x);
        if !vxx.eq(&u) {
            if vxx.eq(&u.neg()) {
                x = x.mul(&sqrt_m1());
            } else {
                return None;
            }
        }
        if x.is_zero() && sign == 1 {
            return None;
        }
        if x.is_negative() as u8 != sign {
            x = x.neg();
        }
        Some(Point { x, y, z: ONE, t: x.mul(&y) })
    }
}

// -- scalars mod L = 2^252 + 27742317777372353535851937790883648493 -----------------------------------
const L: [u64; 4] = [0x5812631a5cf5d3ed, 0x14def9dea2f79cd6, 0, 0x1000000000000000];

fn ge_l(a: &[u64; 4]) -> bool {
    for i in (0..4).rev() {
        if a[i] != L[i] {
            return a[i] > L[i];
        }
    }
    true
}

fn sub_l(a: &mut [u64; 4]) {
    let mut borrow = 0u64;
    for i in 0..4 {
        let (d1, b1) = a[i].overflowing_sub(L[i]);
        let (d2, b2) = d1.overflowing_sub(borrow);
        a[i] = d2;
        borrow = (b1 || b2) as u64;
    }
}

/// A little-endian integer (any length) mod L, as 32 little-endian bytes.
fn mod_l(bytes: &[u8]) -> [u8; 32] {
    let mut acc = [0u64; 4]; // < L < 2^253, so doubling never overflows
    for i in (0..bytes.len() * 8).rev() {
        let mut c = (bytes[i / 8] >> (i % 8)) as u64 & 1;
        for limb in acc.iter_mut() {
            let top = *limb >> 63;
            *limb = (*limb << 1) | c;
            c = top;
        }
        if ge_l(&acc) {
            sub_l(&mut acc);
        }
    }
    let mut out = [0u8; 32];
    for (i, w) in acc.iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// (r + k * a) mod L, all little-endian 32-byte integers.
fn mul_add_mod_l(k: &[u8; 32], a: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let limbs = |b: &[u8; 32]| [0, 1, 2, 3].map(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()));
    let (k, a, r) = (limbs(k), limbs(a), limbs(r));
    let mut wide = [0u128; 9];
    for i in 0..4 {
        for j in 0..4 {
            let p = k[i] as u128 * a[j] as u128;
            wide[i + j] += p & u64::MAX as u128;
            wide[i + j + 1] += p >> 64;
        }
        wide[i] += r[i] as u128;
    }
    let mut bytes = Vec::with_capacity(72);
    let mut c = 0u128;
    for w in wide.iter() {
        let v = w + c;
        bytes.extend_from_slice(&(v as u64).to_le_bytes());
        c = v >> 64;
    }
    mod_l(&bytes)
}

fn sha512(parts: &[&[u8]]) -> [u8; 64] {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 64];
    out.copy_from_slice(&h.finalize());
    out
}

/// (clamped secret scalar, prefix, encoded public key) of a 32-byte seed.
fn expand(seed: &[u8; 32]) -> ([u8; 32], [u8; 32], [u8; 32]) {
    let h = sha512(&[seed]);
    let mut a: [u8; 32] = h[..32].try_into().unwrap();
    a[0] &= 248;
    a[31] &= 63;
    a[31] |= 64;
    let prefix: [u8; 32] = h[32..].try_into().unwrap();
    let d2 = d().add(&d());
    let public = Point::decode(&BASE).expect("base point").mul(&a, &d2).encode();
    (a, prefix, public)
}

pub fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    expand(seed).2
}

pub fn sign(seed: &[u8; 32], msg: &[u8]) -> [u8; 64] {
    let (a, prefix, public) = expand(seed);
    let d2 = d().add(&d());
    let base = Point::decode(&BASE).expect("base point");
    let r = mod_l(&sha512(&[&prefix, msg]));
    let big_r = base.mul(&r, &d2).encode();
    let k = mod_l(&sha512(&[&big_r, &public, msg]));
    let s = mul_add_mod_l(&k, &mod_l(&a), &r);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&big_r);
    sig[32..].copy_from_slice(&s);
    sig
}

pub fn verify(public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    let s: [u8; 32] = sig[32..].try_into().unwrap();
    if mod_l(&s) != s {
        return false; // S >= L
    }
    let a = match Point::decode(public) {
        Some(p) => p,
        None => return false,
    };
    let d2 = d().add(&d());
    let base = Point::decode(&BASE).expect("base point");
    let k = mod_l(&sha512(&[&sig[..32], public, msg]));
    let check = base.mul(&s, &d2).add(&a.neg().mul(&k, &d2), &d2);
    check.encode()[..] == sig[..32]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn rfc8032_test_vectors_1_to_3() {
        let cases = [
            ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
             "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
             "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
            ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
             "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
             "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
            ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
             "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
             "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
        ];
        for (seed, public, msg, sig) in cases {
            let seed: [u8; 32] = unhex(seed).try_into().unwrap();
            let public: [u8; 32] = unhex(public).try_into().unwrap();
            let sig: [u8; 64] = unhex(sig).try_into().unwrap();
            assert_eq!(public_key(&seed), public);
            assert_eq!(sign(&seed, &unhex(msg)), sig);
            assert!(verify(&public, &unhex(msg), &sig));
            let mut bad = sig;
            bad[0] ^= 1;
            assert!(!verify(&public, &unhex(msg), &bad));
        }
    }

    #[test]
    fn decoding_is_strict_per_rfc8032_section_5_1_3() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut y_above_p = [0xffu8; 32]; // y = p + 1: a non-canonical encoding of the identity
        y_above_p[0] = 0xee;
        y_above_p[31] = 0x7f;
        let mut minus_zero = identity; // x = 0 with the sign bit set
        minus_zero[31] |= 0x80;
        assert!(Point::decode(&identity).is_some());
        assert!(Point::decode(&y_above_p).is_none());
        assert!(Point::decode(&minus_zero).is_none());
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&identity);
        assert!(verify(&identity, b"any", &sig)); // cofactorless: [0]B = R + [k]O
        assert!(!verify(&y_above_p, b"any", &sig));
        assert!(!verify(&minus_zero, b"any", &sig));
        let mut s_plus_l = [0u8; 32]; // S = L: not reduced
        for (i, w) in L.iter().enumerate() {
            s_plus_l[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        assert_eq!(mod_l(&s_plus_l), [0u8; 32]);
        sig[32..].copy_from_slice(&s_plus_l);
        assert!(!verify(&identity, b"any", &sig));
    }
}
