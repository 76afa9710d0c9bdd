//! PCS protocol v1 in Rust: canonical bytes, fmt9, HMAC-SHA256 and Ed25519 signatures, strict
//! base64, pcs_id, RFC 6962 Merkle roots and the signals (`signals.rs`: D-hat, budget, regime,
//! coh-star) -- every op of profiles v1 and legacy-0.1 -- and the conformance adapter protocol
//! (conformance/PROTOCOL.md) over them. Ed25519 is `ed25519.rs` (RFC 8032 on the packaged
//! `sha2`'s SHA-512): Debian packages no Ed25519 crate usable offline for wasm32.
//!
//! Built natively (`src/main.rs`, a stdin/stdout adapter) and for `wasm32-unknown-unknown`
//! (the exports at the end, driven by `conformance/adapters/wasm/host.mjs` under Node).
//! Crates: `hmac`, `sha2`, `base64`, `serde_json` as Debian packages them. The pitfalls a
//! Rust signer meets are handled here explicitly:
//! * `format!("{:.9}", x)` is not the spec's rounding for every value: fmt9 is computed
//!   exactly from the binary64 (mantissa * 2^exponent) with half-to-even, big integers
//!   for values >= 2^53; -0 (and anything rounding to 0) is written `0.000000000`;
//! * `serde_json` without `arbitrary_precision` turns `7.0` into an epoch of 7 and loses
//!   digits of large integers: number literals are kept as text;
//! * struct fields serialize in declaration order: the eight keys are written sorted by hand;
//! * the `base64` decoder's leniency is not trusted: a signature must re-encode to itself.

use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

const FIELDS: [&str; 8] = ["D_hat", "budget", "coh_star", "epoch", "merkle_root", "pcs_id", "r", "shard_id"];
const FLOAT_FIELDS: [&str; 4] = ["D_hat", "budget", "coh_star", "r"];
const OPS: [&str; 12] = ["canonical_bytes", "fmt9", "sign_hmac", "verify_hmac", "sign_ed25519", "verify_ed25519",
                         "pcs_id", "merkle_root", "d_hat", "budget", "regime", "coherence"];

pub mod ed25519;
pub mod signals;

/// The input violates the spec (answered with kind `invalid_input`).
#[derive(Debug)]
pub struct Invalid(pub String);

pub(crate) fn invalid<T>(why: &str) -> Result<T, Invalid> {
    Err(Invalid(why.to_string()))
}

// -- fmt9 ----------------------------------------------------------------------------------
/// Fixed point, nine fractional digits, half-to-even from the exact binary64 value.
pub fn fmt9(x: f64) -> Result<String, Invalid> {
    if !x.is_finite() {
        return invalid("not a finite number");
    }
    let bits = x.to_bits();
    let negative = bits >> 63 == 1;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1u64 << 52) - 1);
    let (mantissa, e) = if exp == 0 { (frac, -1074) } else { (frac | (1u64 << 52), exp - 1075) };
    let text = if e >= 0 {
        format!("{}.000000000", big_decimal(mantissa, e as u32))
    } else {
        let q = (-e) as u32;
        let num = mantissa as u128 * 1_000_000_000u128; // < 2^83
        let scaled = if q >= 128 {
            0 // below 2^-44: rounds to zero (never a tie: num holds the factor 5^9)
        } else {
            let int = num >> q;
            let rem = num & ((1u128 << q) - 1);
            let half = 1u128 << (q - 1);
            if rem > half || (rem == half && int & 1 == 1) { int + 1 } else { int }
        };
        format!("{}.{:09}", scaled / 1_000_000_000, scaled % 1_000_000_000)
    };
    let zero = text.bytes().all(|b| b == b'0' || b == b'.');
    Ok(if negative && !zero { format!("-{}", text) } else { text })
}

/// The decimal digits of mantissa * 2^shift (little-endian u32 limbs).
fn big_decimal(mantissa: u64, shift: u32) -> String {
    let mut limbs: Vec<u32> = vec![mantissa as u32, (mantissa >> 32) as u32];
    let (words, bits) = ((shift / 32) as usize, shift % 32);
    let mut shifted = vec![0u32; words];
    let mut carry = 0u32;
    for limb in limbs.drain(..) {
        shifted.push(if bits == 0 { limb } else { (limb << bits) | carry });
        carry = if bits == 0 { 0 } else { limb >> (32 - bits) };
    }
    shifted.push(carry);
    let mut chunks = Vec::new();
    while shifted.iter().any(|&l| l != 0) {
        let mut rem = 0u64;
        for limb in shifted.iter_mut().rev() {
            let cur = (rem << 32) | *limb as u64;
            *limb = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        chunks.push(rem as u32);
    }
    let mut out = chunks.pop().map(|c| c.to_string()).unwrap_or_else(|| "0".to_string());
    for c in chunks.iter().rev() {
        out.push_str(&format!("{:09}", c));
    }
    out
}

/// A float input: a JSON number (its literal parsed as binary64) or {"f64": "<16 hex digits>"}.
pub(crate) fn number(v: &Value) -> Result<f64, Invalid> {
    match v {
        Value::Number(n) => match n.to_string().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => invalid("not a finite number"),
        },
        Value::Object(m) if m.len() == 1 => match m.get("f64") {
            Some(Value::String(h)) if h.len() == 16 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
                Ok(f64::from_bits(u64::from_str_radix(h, 16).map_err(|_| Invalid("f64".into()))?))
            }
            _ => invalid("f64 must be 16 lowercase hex digits"),
        },
        _ => invalid("not a number"),
    }
}

// -- canonical bytes -------------------------------------------------------------------------
/// RFC 8785 string escaping: raw UTF-8, only '"', '\\' and U+0000..U+001F escaped.
fn escape(s: &str, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn epoch(v: &Value) -> Result<u64, Invalid> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        _ => return invalid("epoch must be an integer"),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return invalid("epoch must be an integer literal in [0, 2^53-1]");
    }
    match text.parse::<u64>() {
        Ok(e) if e < (1u64 << 53) => Ok(e),
        _ => invalid("epoch out of range"),
    }
}

// -- profile legacy-0.1: Python's json.dumps(sort_keys=True) of half-up-rounded floats ---------------
/// Python's json.dumps escaping (ensure_ascii): everything outside ' '..'~' as lowercase \uXXXX
/// UTF-16 units (an astral character is its surrogate pair).
fn escape_ascii(s: &str, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(ch),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            }
        }
    }
    out.push('"');
}

fn split_exp(text: &str) -> (String, i32) {
    let (mantissa, exponent) = text.split_once('e').expect("LowerExp writes an exponent");
    (mantissa.replace('.', ""), exponent.parse().expect("an integer exponent"))
}

/// Does the decimal 0.d1d2... * 10^(exponent+1) read back as `x`?
fn round_trips(digits: &str, exponent: i32, x: f64) -> bool {
    format!("{}.{}e{}", &digits[..1], &digits[1..], exponent).parse::<f64>() == Ok(x)
}

/// The shortest round-trip digits of |x| (x != 0) and the decimal exponent of the first digit,
/// as Python's repr chooses them: of two shortest candidates equally near the exact value, the
/// one ending in an even digit (Rust's writer may take the other: 562949953421312.25 -> ".3").
fn shortest(x: f64) -> (String, i32) {
    let x = x.abs();
    let (digits, exponent) = split_exp(&format!("{:e}", x));
    // the exact binary value has at most 767 significant digits: this expansion does not round
    let (exact, exact_exponent) = split_exp(&format!("{:.800e}", x));
    let exact = exact.trim_end_matches('0');
    if exact_exponent != exponent || exact.len() != digits.len() + 1 || !exact.ends_with('5') {
        return (digits, exponent); // not a tie between two shortest candidates
    }
    let down = exact[..digits.len()].to_string();
    let mut up = down.clone().into_bytes();
    let mut i = up.len();
    while i > 0 {
        i -= 1;
        if up[i] == b'9' {
            up[i] = b'0';
        } else {
            up[i] += 1;
            break;
        }
    }
    let up = String::from_utf8(up).expect("ASCII digits");
    if up.bytes().all(|b| b == b'0') {
        return (digits, exponent); // the carry lengthens it: no tie at this length
    }
    let even = if (down.as_bytes()[down.len() - 1] - b'0') % 2 == 0 { down } else { up };
    if round_trips(&even, exponent, x) { (even, exponent) } else { (digits, exponent) }
}

/// Python's repr(float): positional for 1e-4 <= |x| < 1e16, else d.ddde+XX.
fn python_repr(x: f64) -> String {
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if x == 0.0 {
        return format!("{}0.0", sign);
    }
    let (digits, exponent) = shortest(x);
    if !(-4..16).contains(&exponent) {
        let body = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        return format!("{}{}e{}{:02}", sign, body, if exponent < 0 { '-' } else { '+' }, exponent.abs());
    }
    let point = exponent + 1;
    if point <= 0 {
        format!("{}0.{}{}", sign, "0".repeat((-point) as usize), digits)
    } else if point as usize >= digits.len() {
        format!("{}{}{}.0", sign, digits, "0".repeat(point as usize - digits.len()))
    } else {
        format!("{}{}.{}", sign, &digits[..point as usize], &digits[point as usize..])
    }
}

/// legacy-0.1 floats: half-up on the shortest decimal string to nine decimals, then repr.
fn legacy_float(x: f64) -> String {
    if x == 0.0 {
        return python_repr(x);
    }
    let (digits, exponent) = shortest(x);
    let shift = exponent - (digits.len() as i32 - 1) + 9; // x * 1e9 = digits * 10^shift
    if shift >= 0 {
        return python_repr(x); // nothing beyond the ninth decimal: the value is unchanged
    }
    let keep = digits.len() as i32 + shift; // digits kept before the rounding position
    let q: u64 = if keep < 0 {
        0
    } else {
        let (head, tail) = digits.split_at(keep as usize);
        let q = if head.is_empty() { 0 } else { head.parse::<u64>().expect("at most 17 digits") };
        q + (tail.as_bytes()[0] >= b'5') as u64
    };
    let sign = if x < 0.0 { "-" } else { "" };
    python_repr(format!("{}{}e-9", sign, q).parse::<f64>().expect("a decimal literal"))
}

/// The canonical bytes of the eight signed fields (keys sorted by code point).
pub fn canonical(subset: &Value, legacy: bool) -> Result<Vec<u8>, Invalid> {
    let s = match subset {
        Value::Object(m) => m,
        _ => return invalid("subset must be an object"),
    };
    let mut out = String::from("{");
    for (i, key) in FIELDS.iter().enumerate() {
        let v = s.get(*key).ok_or_else(|| Invalid(format!("{} missing", key)))?;
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        if FLOAT_FIELDS.contains(key) {
            let x = number(v)?;
            if !x.is_finite() {
                return invalid("NaN and Infinity are not allowed");
            }
            out.push_str(&if legacy { legacy_float(x) } else { fmt9(x)? });
        } else if *key == "epoch" {
            out.push_str(&epoch(v)?.to_string());
        } else {
            match v {
                Value::String(text) if legacy => escape_ascii(text, &mut out),
                Value::String(text) => escape(text, &mut out),
                _ => return invalid("merkle_root, pcs_id and shard_id must be strings"),
            }
        }
    }
    out.push('}');
    Ok(out.into_bytes())
}

// -- base64 and HMAC ---------------------------------------------------------------------------
/// Strict standard base64: the text must be exactly what encoding its bytes gives.
pub fn b64_strict(v: &Value) -> Option<Vec<u8>> {
    let text = v.as_str()?;
    let raw = base64::decode(text).ok()?;
    if base64::encode(&raw) == text { Some(raw) } else { None }
}

fn key(v: &Value) -> Result<Vec<u8>, Invalid> {
    match b64_strict(v) {
        Some(k) if !k.is_empty() => Ok(k),
        _ => invalid("key must be non-empty strict base64"),
    }
}

fn mac(key: &[u8], msg: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m
}

pub fn sign_hmac(subset: &Value, key: &[u8], legacy: bool) -> Result<String, Invalid> {
    let msg = canonical(subset, legacy)?;
    Ok(base64::encode(mac(key, &msg).finalize().into_bytes()))
}

pub fn verify_hmac(subset: &Value, sig: &Value, keys: &Value, legacy: bool) -> Result<bool, Invalid> {
    let msg = canonical(subset, legacy)?;
    let keys = match keys {
        Value::Array(list) => list.iter().map(key).collect::<Result<Vec<_>, _>>()?,
        _ => return invalid("keys_b64 must be a list"),
    };
    let raw = match b64_strict(sig) {
        Some(r) if r.len() == 32 => r,
        _ => return Ok(false), // a malformed signature is a verdict, not an error
    };
    // verify_slice compares in constant time
    Ok(keys.iter().any(|k| mac(k, &msg).verify_slice(&raw).is_ok()))
}

// -- Ed25519 over SHA-256(canonical bytes) ---------------------------------------------------------
fn b64_exact<const N: usize>(v: &Value, name: &str) -> Result<[u8; N], Invalid> {
    match b64_strict(v) {
        Some(raw) if raw.len() == N => Ok(raw.try_into().expect("length checked")),
        _ => Err(Invalid(format!("{} must be strict base64 of {} bytes", name, N))),
    }
}

fn ed25519_message(subset: &Value) -> Result<Vec<u8>, Invalid> {
    Ok(sha256(&[&canonical(subset, false)?]))
}

pub fn sign_ed25519(subset: &Value, seed: &[u8; 32]) -> Result<String, Invalid> {
    Ok(base64::encode(ed25519::sign(seed, &ed25519_message(subset)?)))
}

pub fn verify_ed25519(subset: &Value, sig: &Value, keys: &Value) -> Result<bool, Invalid> {
    let keys = match keys {
        Value::Array(list) => list.iter().map(|k| b64_exact::<32>(k, "public_keys_b64")).collect::<Result<Vec<_>, _>>()?,
        _ => return invalid("public_keys_b64 must be a list"),
    };
    let msg = ed25519_message(subset)?;
    let raw: [u8; 64] = match b64_exact(sig, "sig") {
        Ok(r) => r,
        Err(_) => return Ok(false), // a malformed signature is a verdict, not an error
    };
    Ok(keys.iter().any(|k| ed25519::verify(k, &msg, &raw)))
}

// -- pcs_id and Merkle roots ------------------------------------------------------------------------
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{:02x}", b)).collect()
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    use sha2::Digest;
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().to_vec()
}

/// Hex SHA-256 of `merkle_root|epoch|shard_id`, after the field checks of SPEC.md section 5.
pub fn pcs_id(merkle_root: &Value, epoch_value: &Value, shard_id: &Value) -> Result<String, Invalid> {
    let root = match merkle_root.as_str() {
        Some(r) if r.len() == 64 && r.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => r,
        _ => return invalid("merkle_root must be 64 lowercase hexadecimal characters"),
    };
    let e = epoch(epoch_value)?;
    let shard = match shard_id.as_str() {
        Some(s) if (1..=128).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) => s,
        _ => return invalid("shard_id must match ^[A-Za-z0-9._:-]{1,128}$"),
    };
    Ok(hex(&sha256(&[format!("{}|{}|{}", root, e, shard).as_bytes()])))
}

/// RFC 6962 Merkle tree hash: leaves SHA-256(0x00 || chunk), nodes SHA-256(0x01 || left || right),
/// split at the largest power of two below n; no chunks: SHA-256 of the empty string.
fn rfc6962(leaves: &[Vec<u8>]) -> Vec<u8> {
    if leaves.len() == 1 {
        return leaves[0].clone();
    }
    let mut k = 1;
    while k * 2 < leaves.len() {
        k *= 2;
    }
    sha256(&[&[1u8], &rfc6962(&leaves[..k]), &rfc6962(&leaves[k..])])
}

/// legacy-0.1: hex SHA-256 leaves; a level pairs hex strings (SHA-256 of their concatenation,
/// hex), the last one paired with itself when the level is odd.
fn legacy_tree(chunks: &[Vec<u8>]) -> String {
    let mut level: Vec<String> = chunks.iter().map(|c| hex(&sha256(&[c]))).collect();
    while level.len() > 1 {
        if level.len() % 2 == 1 {
            level.push(level[level.len() - 1].clone());
        }
        level = level.chunks(2).map(|p| hex(&sha256(&[p[0].as_bytes(), p[1].as_bytes()]))).collect();
    }
    level.pop().unwrap_or_else(|| hex(&sha256(&[])))
}

pub fn merkle_root(chunks: &Value, legacy: bool) -> Result<String, Invalid> {
    let list = match chunks {
        Value::Array(list) => list,
        _ => return invalid("chunks_b64 must be a list"),
    };
    let mut raws = Vec::with_capacity(list.len());
    for c in list {
        raws.push(b64_strict(c).ok_or_else(|| Invalid("chunk must be strict base64".into()))?);
    }
    if legacy {
        return Ok(legacy_tree(&raws));
    }
    let leaves: Vec<Vec<u8>> = raws.iter().map(|raw| sha256(&[&[0u8], raw])).collect();
    Ok(hex(&if leaves.is_empty() { sha256(&[]) } else { rfc6962(&leaves) }))
}

// -- the adapter protocol ----------------------------------------------------------------------------
pub(crate) fn field<'a>(input: &'a Value, name: &str) -> Result<&'a Value, Invalid> {
    input.get(name).ok_or_else(|| Invalid(format!("{} missing", name)))
}

fn op(name: &str, input: &Value, legacy: bool) -> Result<Value, Invalid> {
    if legacy && name.ends_with("_ed25519") {
        return invalid("Ed25519 is defined for profile v1 only"); // legacy-0.1 is HMAC only
    }
    Ok(match name {
        "canonical_bytes" => json!({"bytes_b64": base64::encode(canonical(field(input, "subset")?, legacy)?)}),
        "fmt9" => json!({"text": fmt9(number(field(input, "x")?)?)?}),
        "sign_hmac" => json!({"sig": sign_hmac(field(input, "subset")?, &key(field(input, "key_b64")?)?, legacy)?}),
        "verify_hmac" => json!({"valid": verify_hmac(field(input, "subset")?, field(input, "sig")?,
                                                     field(input, "keys_b64")?, legacy)?}),
        "sign_ed25519" => json!({"sig": sign_ed25519(field(input, "subset")?,
                                                     &b64_exact(field(input, "private_key_b64")?, "private_key_b64")?)?}),
        "verify_ed25519" => json!({"valid": verify_ed25519(field(input, "subset")?, field(input, "sig")?,
                                                           field(input, "public_keys_b64")?)?}),
        "d_hat" | "budget" | "regime" | "coherence" => signals::op(name, input, legacy)?,
        "pcs_id" => json!({"pcs_id": pcs_id(field(input, "merkle_root")?, field(input, "epoch")?,
                                           field(input, "shard_id")?)?}),
        "merkle_root" => json!({"root": merkle_root(field(input, "chunks_b64")?, legacy)?}),
        _ => unreachable!(),
    })
}

fn error(id: Value, kind: &str, message: &str) -> Value {
    json!({"id": id, "ok": false, "error": {"kind": kind, "message": message}})
}

/// The request id read from the raw line (when it is not JSON this crate accepts, e.g. a lone surrogate).
fn raw_id(line: &[u8]) -> Value {
    let text = String::from_utf8_lossy(line);
    let after = match text.find("\"id\"") {
        Some(i) => text[i + 4..].trim_start().trim_start_matches(':').trim_start(),
        None => return Value::Null,
    };
    let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse::<u64>().map(Value::from).unwrap_or(Value::Null)
}

/// One request line in, one response line out (no newline). Never panics on bad input.
pub fn handle_line(line: &[u8]) -> String {
    let request: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => return error(raw_id(line), "invalid_input", &format!("request is not JSON this adapter reads: {}", e)).to_string(),
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let name = request.get("op").and_then(Value::as_str).unwrap_or("");
    let profile = request.get("profile").and_then(Value::as_str).unwrap_or("v1");
    let empty = Value::Object(Map::new());
    let input = request.get("input").unwrap_or(&empty);
    let response = if name == "hello" {
        json!({"id": id, "ok": true, "output": {"name": "flk-rust", "version": env!("CARGO_PKG_VERSION"),
                                               "ops": OPS, "profiles": ["v1", "legacy-0.1"]}})
    } else if !OPS.contains(&name) || !["v1", "legacy-0.1"].contains(&profile)
        || (profile != "v1" && (name == "fmt9" || name == "coherence"))
    {
        error(id, "unsupported", &format!("{} / {}", name, profile))
    } else {
        match op(name, input, profile == "legacy-0.1") {
            Ok(output) => json!({"id": id, "ok": true, "output": output}),
            Err(Invalid(why)) => error(id, "invalid_input", &why),
        }
    };
    response.to_string()
}

// -- wasm32 exports (conformance/adapters/wasm/host.mjs) ---------------------------------------------
/// Memory for the host to write a request into.
#[no_mangle]
pub extern "C" fn flk_alloc(len: usize) -> *mut u8 {
    let mut buf = Vec::<u8>::with_capacity(len.max(1));
    let ptr = buf.as_mut_ptr();
    std::mem::forget(buf);
    ptr
}

/// Give back memory from `flk_alloc` or a response of `flk_handle`.
///
/// # Safety
/// `ptr` and `cap` must come from `flk_alloc(cap)` or from `flk_handle`'s answer.
#[no_mangle]
pub unsafe extern "C" fn flk_free(ptr: *mut u8, cap: usize) {
    drop(Vec::from_raw_parts(ptr, 0, cap.max(1)));
}

/// Handle the request at `ptr`/`len`; the answer is (pointer << 32) | length, its capacity its length.
///
/// # Safety
/// `ptr` must point to `len` readable bytes allocated by `flk_alloc`.
#[no_mangle]
pub unsafe extern "C" fn flk_handle(ptr: *const u8, len: usize) -> u64 {
    let line = std::slice::from_raw_parts(ptr, len);
    let mut out = handle_line(line).into_bytes();
    out.shrink_to_fit();
    let (p, n) = (out.as_mut_ptr() as u64, out.len() as u64);
    std::mem::forget(out);
    (p << 32) | n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_floats_are_pythons_repr_of_the_half_up_value() {
        assert_eq!(python_repr(562949953421312.25), "562949953421312.2"); // tie: the even digit, as repr
        assert_eq!(python_repr(562949953421312.75), "562949953421312.8");
        assert_eq!(python_repr(1e16), "1e+16");
        assert_eq!(python_repr(1.5e-323), "1.5e-323");
        assert_eq!(python_repr(0.0001), "0.0001");
        assert_eq!(python_repr(-0.0), "-0.0");
        assert_eq!(legacy_float(0.1234567895), "0.12345679");
        assert_eq!(legacy_float(1e-10), "0.0");
    }

    #[test]
    fn fmt9_rounds_half_to_even_from_the_exact_value() {
        assert_eq!(fmt9(0.0009765625).unwrap(), "0.000976562");
        assert_eq!(fmt9(-0.0).unwrap(), "0.000000000");
        assert_eq!(fmt9(1e21).unwrap(), "1000000000000000000000.000000000");
        assert_eq!(fmt9(0.2610426485).unwrap(), "0.261042648");
    }
}
