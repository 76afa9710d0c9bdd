#!/usr/bin/env node
// Node.js reference adapter for the flk conformance kit (conformance/PROTOCOL.md).
//
// Why this file exists: it is the proof that PCS protocol v1 can be implemented
// byte for byte outside Python, with nothing but node's own `crypto` -- no npm
// packages. It is also a worked example for SDK authors in JavaScript/TypeScript:
//
// * JSON numbers are kept as their source text (a tiny parser below), because
//   `JSON.parse` cannot tell `7` from `7.0` (epoch must be an integer) and
//   loses digits of large integers (seeds are uint64).
// * fmt9 rounds half-to-even from the EXACT binary value of the double, using
//   BigInt. `Number.prototype.toFixed(9)` is not a substitute: it rounds ties
//   away from zero (e.g. (2**-11).toFixed(9) gives "0.000488282", the correct
//   answer is "0.000488281") and -0 must print as 0.000000000.
// * Strings are escaped as RFC 8785 (only `"`, `\` and U+0000..U+001F);
//   lone surrogates are rejected, never replaced by U+FFFD.
// * HMAC-SHA256 is over the canonical bytes; Ed25519 signs SHA-256 of them.
// * Base64 is strict: standard alphabet, padding, canonical trailing bits.
//
// * build_pcs is not offered (answered `unsupported`): its `r` needs the exact
//   compressed length of madler zlib, and node bundles Chromium's zlib fork,
//   whose DEFLATE output differs in length (SPEC.md 7.4).
//
// Protocol: one JSON request per line on stdin, one JSON response per line on
// stdout; nothing else on stdout. Logs (none by default) go to stderr.

import crypto from "node:crypto";

const NAME = "flk-node-reference";
const VERSION = "1.0.0";
const PROFILES = ["v1", "legacy-0.1"];

class InvalidInput extends Error {
  constructor(field, message) {
    super(`${field}: ${message}`);
    this.kind = "invalid_input";
  }
}
class Unsupported extends Error {
  constructor(message) {
    super(message);
    this.kind = "unsupported";
  }
}

// ---------------------------------------------------------------- JSON parsing
// Numbers become Num objects holding their text; everything else is plain JS.
class Num {
  constructor(text, value, isInt) {
    this.text = text; // source text, or null for a decoded {"f64": hex}
    this.value = value; // the nearest double (correctly rounded by Number())
    this.isInt = isInt; // written as an integer literal (no fraction, no exponent)
  }
}

const NUMBER_RE = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

function parseJSON(text) {
  let i = 0;
  const fail = (msg) => {
    throw new InvalidInput("request", `not JSON: ${msg} at offset ${i}`);
  };
  const ws = () => {
    while (i < text.length && " \t\n\r".includes(text[i])) i++;
  };
  const value = () => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const obj = Object.create(null);
      ws();
      if (text[i] === "}") {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail("expected a key");
        const k = string();
        ws();
        if (text[i] !== ":") fail("expected ':'");
        i++;
        obj[k] = value();
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return obj;
        }
        fail("expected ',' or '}'");
      }
    }
    if (c === "[") {
      i++;
      const arr = [];
      ws();
      if (text[i] === "]") {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value());
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return arr;
        }
        fail("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    if (text.startsWith("true", i)) {
      i += 4;
      return true;
    }
    if (text.startsWith("false", i)) {
      i += 5;
      return false;
    }
    if (text.startsWith("null", i)) {
      i += 4;
      return null;
    }
    NUMBER_RE.lastIndex = i;
    const m = NUMBER_RE.exec(text);
    if (!m) fail("unexpected character");
    i += m[0].length;
    return new Num(m[0], Number(m[0]), /^-?\d+$/.test(m[0]));
  };
  const ESC = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
  const string = () => {
    i++; // opening quote
    let out = "";
    for (;;) {
      if (i >= text.length) fail("unterminated string");
      const c = text[i++];
      if (c === '"') return out;
      if (c === "\\") {
        const e = text[i++];
        if (e === "u") {
          const h = text.slice(i, i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(h)) fail("bad \\u escape");
          out += String.fromCharCode(parseInt(h, 16)); // surrogates kept as they come
          i += 4;
        } else if (e in ESC) out += ESC[e];
        else fail("bad escape");
      } else if (c < " ") fail("control character in string");
      else out += c;
    }
  };
  const v = value();
  ws();
  if (i !== text.length) fail("trailing data");
  return v;
}

// -------------------------------------------------------------- input helpers
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Num);

function f64FromHex(hex, where) {
  if (typeof hex !== "string" || !/^[0-9a-f]{16}$/.test(hex)) {
    throw new InvalidInput(where, "f64 must be 16 lowercase hexadecimal digits");
  }
  const dv = new DataView(new ArrayBuffer(8));
  dv.setBigUint64(0, BigInt("0x" + hex));
  return new Num(null, dv.getFloat64(0), false);
}

// Replace every {"f64": hex} object (and only those) by a Num.
function decodeInput(v, where = "input") {
  if (Array.isArray(v)) return v.map((x, k) => decodeInput(x, `${where}[${k}]`));
  if (isObj(v)) {
    const keys = Object.keys(v);
    if (keys.length === 1 && keys[0] === "f64") return f64FromHex(v.f64, where);
    const out = Object.create(null);
    for (const k of keys) out[k] = decodeInput(v[k], `${where}.${k}`);
    return out;
  }
  return v;
}

function field(inp, name) {
  if (!isObj(inp)) throw new InvalidInput("input", "must be an object");
  if (!(name in inp)) throw new InvalidInput(name, "missing");
  return inp[name];
}

function finite(v, name) {
  if (!(v instanceof Num)) throw new InvalidInput(name, "must be a number");
  if (!Number.isFinite(v.value)) throw new InvalidInput(name, "NaN and Infinity are not allowed");
  return v.value;
}

// coh_star and r are shares: in [0, 1]
function unit(v, name) {
  const x = finite(v, name);
  if (!(x >= 0 && x <= 1)) throw new InvalidInput(name, "must be in [0, 1]");
  return x;
}

function integer(v, name, lo, hi) {
  if (!(v instanceof Num) || !v.isInt) throw new InvalidInput(name, "must be an integer");
  const b = BigInt(v.text);
  if (b < lo || (hi !== undefined && b > hi)) throw new InvalidInput(name, `out of range`);
  return b;
}

const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function b64Strict(text, name, length) {
  if (typeof text !== "string" || !B64_RE.test(text)) {
    throw new InvalidInput(name, "not strict standard base64");
  }
  const raw = Buffer.from(text, "base64");
  if (raw.toString("base64") !== text) throw new InvalidInput(name, "non-canonical base64");
  if (length !== undefined && raw.length !== length) {
    throw new InvalidInput(name, `decodes to ${raw.length} bytes, expected ${length}`);
  }
  return raw;
}

function b64List(v, name, length) {
  if (!Array.isArray(v)) throw new InvalidInput(name, "must be a list of base64 strings");
  return v.map((x, k) => b64Strict(x, `${name}[${k}]`, length));
}

// ----------------------------------------------------------------------- fmt9
const TEN9 = 1000000000n;

// Exact value of a finite double as m * 2^e (m, e BigInt; m >= 0) plus its sign.
function exactParts(x) {
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, x);
  const bits = dv.getBigUint64(0);
  const neg = bits >> 63n === 1n;
  const bexp = Number((bits >> 52n) & 0x7ffn);
  const frac = bits & ((1n << 52n) - 1n);
  if (bexp === 0) return { neg, m: frac, e: -1074 };
  return { neg, m: frac | (1n << 52n), e: bexp - 1075 };
}

// Nine fractional digits, rounded half-to-even from the exact binary value.
function fmt9(x) {
  const { neg, m, e } = exactParts(x);
  let q;
  if (e >= 0) q = (m << BigInt(e)) * TEN9;
  else {
    const num = m * TEN9;
    const den = 1n << BigInt(-e);
    q = num / den;
    const r2 = (num % den) * 2n;
    if (r2 > den || (r2 === den && (q & 1n) === 1n)) q += 1n;
  }
  if (q === 0n) return "0.000000000"; // -0 and whatever rounds to it
  const s = q.toString().padStart(10, "0");
  return (neg ? "-" : "") + s.slice(0, -9) + "." + s.slice(-9);
}

// ----------------------------------------------------- legacy-0.1 numbers
// Python's repr(float): shortest round-trip digits, fixed for 1e-4 <= |x| < 1e16.
function pyRepr(x) {
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const [mant, ex] = Math.abs(x).toExponential().split("e");
  const digits = mant.replace(".", "");
  const exp10 = parseInt(ex, 10);
  const sign = x < 0 ? "-" : "";
  if (exp10 < -4 || exp10 >= 16) {
    const e = (exp10 < 0 ? "-" : "+") + String(Math.abs(exp10)).padStart(2, "0");
    return sign + digits[0] + (digits.length > 1 ? "." + digits.slice(1) : "") + "e" + e;
  }
  const decpt = exp10 + 1;
  if (decpt <= 0) return sign + "0." + "0".repeat(-decpt) + digits;
  if (decpt >= digits.length) return sign + digits + "0".repeat(decpt - digits.length) + ".0";
  return sign + digits.slice(0, decpt) + "." + digits.slice(decpt);
}

// The seed agent's float: half-up on the shortest decimal string, then repr.
function legacyFloat(x) {
  if (x === 0) return pyRepr(x);
  const [mant, ex] = Math.abs(x).toExponential().split("e");
  const digits = mant.replace(".", "");
  const k = parseInt(ex, 10) - (digits.length - 1) + 9; // value*1e9 = D * 10^k
  let q = BigInt(digits);
  if (k >= 0) q *= 10n ** BigInt(k);
  else {
    const den = 10n ** BigInt(-k);
    const r = q % den;
    q /= den;
    if (r * 2n >= den) q += 1n;
  }
  return pyRepr(Number((x < 0 ? "-" : "") + q.toString() + "e-9"));
}

// ------------------------------------------------------------ canonical bytes
const SIGNED_FIELDS = ["D_hat", "budget", "coh_star", "epoch", "merkle_root", "pcs_id", "r", "shard_id"];
const FLOAT_FIELDS = new Set(["D_hat", "budget", "coh_star", "r"]);
const EPOCH_MAX = 2n ** 53n - 1n;
const SHORT_ESC = { '"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function hex4(c) {
  return c.toString(16).padStart(4, "0");
}

// RFC 8785 string serialization (quotes included); lone surrogates rejected.
function escapeV1(s, name) {
  if (typeof s !== "string") throw new InvalidInput(name, "must be a string");
  let out = '"';
  for (let k = 0; k < s.length; k++) {
    const ch = s[k];
    const c = s.charCodeAt(k);
    if (ch in SHORT_ESC) out += SHORT_ESC[ch];
    else if (c < 0x20) out += "\\u" + hex4(c);
    else if (c >= 0xd800 && c <= 0xdbff) {
      const d = s.charCodeAt(k + 1);
      if (!(d >= 0xdc00 && d <= 0xdfff)) throw new InvalidInput(name, "lone surrogate");
      out += ch + s[k + 1];
      k++;
    } else if (c >= 0xdc00 && c <= 0xdfff) throw new InvalidInput(name, "lone surrogate");
    else out += ch;
  }
  return out + '"';
}

// Python json.dumps(s, ensure_ascii=True): everything outside ' '..'~' escaped.
function escapeLegacy(s, name) {
  if (typeof s !== "string") throw new InvalidInput(name, "must be a string");
  let out = '"';
  for (let k = 0; k < s.length; k++) {
    const ch = s[k];
    const c = s.charCodeAt(k);
    if (ch in SHORT_ESC) out += SHORT_ESC[ch];
    else if (c < 0x20 || c > 0x7e) out += "\\u" + hex4(c);
    else out += ch;
  }
  return out + '"';
}

function epochOf(v) {
  return integer(v, "epoch", 0n, EPOCH_MAX).toString();
}

function canonicalBytes(subset, profile) {
  if (!isObj(subset)) throw new InvalidInput("subset", "must be an object");
  for (const key of SIGNED_FIELDS) {
    if (!(key in subset)) throw new InvalidInput(key, "missing from the signed subset");
  }
  const parts = [];
  for (const key of SIGNED_FIELDS) {
    const v = subset[key];
    let text;
    if (FLOAT_FIELDS.has(key)) {
      const x = finite(v, key);
      text = profile === "v1" ? fmt9(x) : legacyFloat(x);
    } else if (key === "epoch") text = epochOf(v);
    else text = profile === "v1" ? escapeV1(v, key) : escapeLegacy(v, key);
    parts.push(`"${key}":${text}`);
  }
  return Buffer.from("{" + parts.join(",") + "}", "utf8");
}

function subsetOf(inp) {
  const s = field(inp, "subset");
  if (!isObj(s)) throw new InvalidInput("subset", "must be an object");
  return s;
}

// ------------------------------------------------------------------- signing
const sha256 = (buf) => crypto.createHash("sha256").update(buf).digest();
const PKCS8_ED25519 = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_ED25519 = Buffer.from("302a300506032b6570032100", "hex");

function nonEmptyKeys(keys, name) {
  if (keys.some((k) => k.length === 0)) throw new InvalidInput(name, "HMAC keys must be non-empty");
  return keys;
}

function sigBytes(sig, length) {
  try {
    return b64Strict(sig, "sig", length);
  } catch (e) {
    if (e instanceof InvalidInput) return null; // a malformed signature is simply not valid
    throw e;
  }
}

// ------------------------------------------------------------------- Merkle
const leafHash = (d) => sha256(Buffer.concat([Buffer.from([0]), d]));
const nodeHash = (l, r) => sha256(Buffer.concat([Buffer.from([1]), l, r]));

function rfc6962(leaves) {
  if (leaves.length === 1) return leaves[0];
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return nodeHash(rfc6962(leaves.slice(0, k)), rfc6962(leaves.slice(k)));
}

function merkleRoot(chunks, profile) {
  if (chunks.length === 0) return sha256(Buffer.alloc(0)).toString("hex");
  if (profile === "v1") return rfc6962(chunks.map(leafHash)).toString("hex");
  let level = chunks.map((c) => sha256(c).toString("hex"));
  while (level.length > 1) {
    if (level.length % 2) level.push(level[level.length - 1]);
    const next = [];
    for (let k = 0; k < level.length; k += 2) next.push(sha256(Buffer.from(level[k] + level[k + 1], "ascii")).toString("hex"));
    level = next;
  }
  return level[0];
}

// ------------------------------------------------------------------- signals
function intList(v, name, min) {
  if (!Array.isArray(v)) throw new InvalidInput(name, "must be a list of integers");
  return v.map((x, k) => Number(integer(x, `${name}[${k}]`, BigInt(min))));
}

function dHat(scales, counts, profile) {
  const s = intList(scales, "scales", 2);
  const n = intList(counts, "N_j", 1);
  if (s.length < 2 || s.length > 64) throw new InvalidInput("scales", "needs between 2 and 64 scales");
  if (n.length !== s.length) throw new InvalidInput("N_j", "one count per scale");
  for (let k = 1; k < s.length; k++) if (s[k] <= s[k - 1]) throw new InvalidInput("scales", "must be strictly increasing");
  const xs = s.map(Math.log2);
  const ys = n.map(Math.log2);
  const slopes = [];
  for (let a = 0; a < xs.length; a++) for (let b = a + 1; b < xs.length; b++) slopes.push((ys[b] - ys[a]) / (xs[b] - xs[a]));
  slopes.sort((p, q) => p - q);
  const m = slopes.length;
  if (profile === "legacy-0.1" || m % 2 === 1) return slopes[Math.floor(m / 2)];
  return (slopes[m / 2 - 1] + slopes[m / 2]) / 2.0;
}

// Python's max(a, b) / min(a, b): the first argument unless the second is strictly better.
const pyMax = (a, b) => (b > a ? b : a);
const pyMin = (a, b) => (b < a ? b : a);
const BUDGET_DEFAULTS = { base: 0.1, alpha: 0.3, beta: 0.5, gamma: 0.2, d0: 2.2 };

function budget(inp) {
  const p = { ...BUDGET_DEFAULTS };
  const params = "params" in inp ? inp.params : null;
  if (params !== null) {
    if (!isObj(params)) throw new InvalidInput("params", "must be an object");
    for (const k of Object.keys(params)) {
      if (!(k in BUDGET_DEFAULTS)) throw new InvalidInput(`params.${k}`, "unknown budget parameter");
      p[k] = finite(params[k], `params.${k}`);
      if (["alpha", "beta", "gamma"].includes(k) && p[k] < 0) throw new InvalidInput(`params.${k}`, "must be >= 0");
    }
  }
  const d = finite(field(inp, "D_hat"), "D_hat");
  const c = unit(field(inp, "coh_star"), "coh_star");
  const r = unit(field(inp, "r"), "r");
  const v = p.base + p.alpha * (1.0 - r) + p.beta * pyMax(0.0, d - p.d0) + p.gamma * c;
  return pyMin(1.0, pyMax(0.0, v));
}

function regime(inp) {
  const d = finite(field(inp, "D_hat"), "D_hat");
  const c = unit(field(inp, "coh_star"), "coh_star");
  if (c >= 0.7 && d <= 1.5) return "sticky";
  if (d >= 2.6) return "non_sticky";
  return "mixed";
}

// coh-star: SplitMix64 directions, left-to-right projections, histogram shares.
const MASK64 = (1n << 64n) - 1n;

function splitmix(seed) {
  let state = seed;
  return () => {
    state = (state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    z = z ^ (z >> 31n);
    return Number(z >> 11n) * 2 ** -53;
  };
}

function points2d(v) {
  if (!Array.isArray(v)) throw new InvalidInput("points", "must be a numeric array of shape (n, d)");
  const rows = v.map((row) => (Array.isArray(row) ? row : [row]));
  const dim = rows.length ? rows[0].length : 1;
  if (dim < 1 || dim > 8) throw new InvalidInput("points", "must have shape (n, d) with 1 <= d <= 8");
  return rows.map((row, k) => {
    if (row.length !== dim || row.some(Array.isArray) || (Array.isArray(v[k]) !== Array.isArray(v[0]))) {
      throw new InvalidInput("points", "must be a numeric array of shape (n, d)");
    }
    return row.map((x) => {
      if (x instanceof Num) {
        if (!Number.isFinite(x.value)) throw new InvalidInput("points", "NaN and Infinity are not allowed");
        return x.value;
      }
      throw new InvalidInput("points", "must be numbers");
    });
  });
}

function coherence(inp) {
  const pts = points2d(field(inp, "points"));
  const seed = integer(field(inp, "seed"), "seed", 0n, MASK64);
  const nDir = "n_directions" in inp ? Number(integer(inp.n_directions, "n_directions", 1n, 10000n)) : 100;
  const bins = "bins" in inp ? Number(integer(inp.bins, "bins", 1n, 10000n)) : 20;
  const n = pts.length;
  const dim = n ? pts[0].length : 1;
  // per-dimension min-max normalisation; a zero-width dimension maps to 0
  const u = pts.map((row) => row.slice());
  for (let k = 0; k < dim && n; k++) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const row of pts) {
      lo = Math.min(lo, row[k]);
      hi = Math.max(hi, row[k]);
    }
    const width = hi - lo;
    if (!Number.isFinite(width)) throw new InvalidInput("points", "coordinate range overflows binary64");
    for (let a = 0; a < n; a++) u[a][k] = width > 0 ? (pts[a][k] - lo) / width : 0;
  }
  const next = splitmix(seed);
  const dirs = [];
  for (let k = 0; k < nDir; k++) {
    let c;
    let s;
    for (;;) {
      c = [];
      for (let j = 0; j < dim; j++) c.push(2.0 * next() - 1.0);
      s = 0.0;
      for (const x of c) s += x * x;
      if (s > 0.0 && s <= 1.0) break;
    }
    const norm = Math.sqrt(s);
    dirs.push(c.map((x) => x / norm));
  }
  if (n === 0) return 0.0;
  let best = -1.0;
  for (const v of dirs) {
    const p = u.map((row) => {
      let acc = row[0] * v[0];
      for (let k = 1; k < dim; k++) acc = acc + row[k] * v[k];
      return acc;
    });
    let lo = Infinity;
    let hi = -Infinity;
    for (const x of p) {
      lo = Math.min(lo, x);
      hi = Math.max(hi, x);
    }
    let share;
    if (hi === lo) share = 1.0;
    else {
      const counts = new Array(bins).fill(0);
      for (const x of p) counts[Math.min(Math.floor(((x - lo) / (hi - lo)) * bins), bins - 1)]++;
      share = Math.max(...counts) / n;
    }
    if (share > best) best = share;
  }
  return best;
}

// ------------------------------------------------------------------------ ops
const HEX64_RE = /^[0-9a-f]{64}$/;
const SHARD_RE = /^[A-Za-z0-9._:-]{1,128}$/;

const OPS = {
  canonical_bytes: (inp, profile) => ({ bytes_b64: canonicalBytes(subsetOf(inp), profile).toString("base64") }),
  fmt9: (inp, profile) => {
    if (profile !== "v1") throw new Unsupported("fmt9 is defined for profile v1 only");
    return { text: fmt9(finite(field(inp, "x"), "x")) };
  },
  sign_hmac: (inp, profile) => {
    const key = b64Strict(field(inp, "key_b64"), "key_b64");
    if (key.length === 0) throw new InvalidInput("key_b64", "HMAC key must be non-empty");
    const msg = canonicalBytes(subsetOf(inp), profile);
    return { sig: crypto.createHmac("sha256", key).update(msg).digest("base64") };
  },
  verify_hmac: (inp, profile) => {
    const keys = nonEmptyKeys(b64List(field(inp, "keys_b64"), "keys_b64"), "keys_b64");
    const sig = field(inp, "sig");
    const msg = canonicalBytes(subsetOf(inp), profile);
    const raw = sigBytes(sig, 32);
    if (raw === null) return { valid: false };
    let ok = false;
    for (const key of keys) ok = crypto.timingSafeEqual(crypto.createHmac("sha256", key).update(msg).digest(), raw) || ok;
    return { valid: ok };
  },
  sign_ed25519: (inp, profile) => {
    const seed = b64Strict(field(inp, "private_key_b64"), "private_key_b64", 32);
    const key = crypto.createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: "der", type: "pkcs8" });
    const digest = sha256(canonicalBytes(subsetOf(inp), profile));
    return { sig: crypto.sign(null, digest, key).toString("base64") };
  },
  verify_ed25519: (inp, profile) => {
    // RFC 8032 section 5.1.3: y >= p, or x = 0 with the sign bit set, is not a key. OpenSSL decodes
    // y mod p, so the check is made here; a non-canonical key verifies nothing.
    const P = (1n << 255n) - 19n;
    const canonical = (k) => {
      let y = 0n;
      for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(i === 31 ? k[i] & 0x7f : k[i]);
      return y < P && !(k[31] >> 7 && (y === 1n || y === P - 1n));
    };
    const keys = b64List(field(inp, "public_keys_b64"), "public_keys_b64", 32);
    const sig = field(inp, "sig");
    const digest = sha256(canonicalBytes(subsetOf(inp), profile));
    const raw = sigBytes(sig, 64);
    if (raw === null) return { valid: false };
    let ok = false;
    for (const k of keys) {
      let pub;
      try {
        pub = crypto.createPublicKey({ key: Buffer.concat([SPKI_ED25519, k]), format: "der", type: "spki" });
      } catch {
        throw new InvalidInput("public_keys_b64", "not a valid Ed25519 public key");
      }
      if (canonical(k) && crypto.verify(null, digest, pub, raw)) ok = true;
    }
    return { valid: ok };
  },
  pcs_id: (inp) => {
    const root = field(inp, "merkle_root");
    if (typeof root !== "string" || !HEX64_RE.test(root)) throw new InvalidInput("merkle_root", "must be 64 lowercase hex");
    const epoch = epochOf(field(inp, "epoch"));
    const shard = field(inp, "shard_id");
    if (typeof shard !== "string" || !SHARD_RE.test(shard)) throw new InvalidInput("shard_id", "must match ^[A-Za-z0-9._:-]{1,128}$");
    return { pcs_id: sha256(Buffer.from(`${root}|${epoch}|${shard}`, "utf8")).toString("hex") };
  },
  merkle_root: (inp, profile) => ({ root: merkleRoot(b64List(field(inp, "chunks_b64"), "chunks_b64"), profile) }),
  d_hat: (inp, profile) => ({ d_hat: fmt9(dHat(field(inp, "scales"), field(inp, "n_j"), profile)) }),
  budget: (inp) => ({ budget: fmt9(budget(inp)) }),
  regime: (inp) => ({ regime: regime(inp) }),
  coherence: (inp) => ({ coh_star: fmt9(coherence(inp)) }),
};

function handle(req) {
  if (!isObj(req)) return { id: null, ok: false, error: { kind: "invalid_input", message: "request must be an object" } };
  let id = "id" in req ? req.id : null;
  if (id instanceof Num) id = id.isInt ? Number(id.text) : id.value;
  try {
    const op = req.op;
    const profile = "profile" in req ? req.profile : "v1";
    if (op === "hello") return { id, ok: true, output: { name: NAME, version: VERSION, ops: Object.keys(OPS), profiles: PROFILES } };
    if (typeof op !== "string" || !Object.hasOwn(OPS, op)) throw new Unsupported(`op ${JSON.stringify(op)} is not supported`);
    if (!PROFILES.includes(profile)) throw new Unsupported(`profile ${JSON.stringify(profile)} is not supported`);
    const inp = decodeInput("input" in req ? req.input : Object.create(null));
    if (!isObj(inp)) throw new InvalidInput("input", "must be an object");
    return { id, ok: true, output: OPS[op](inp, profile) };
  } catch (e) {
    const kind = e instanceof InvalidInput || e instanceof Unsupported ? e.kind : "internal";
    return { id, ok: false, error: { kind, message: String(e && e.message ? e.message : e) } };
  }
}

// ---------------------------------------------------------------- main loop
let pending = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  pending += chunk;
  let nl;
  while ((nl = pending.indexOf("\n")) >= 0) {
    const line = pending.slice(0, nl);
    pending = pending.slice(nl + 1);
    if (!line.trim()) continue;
    let response;
    try {
      response = handle(parseJSON(line));
    } catch (e) {
      response = { id: null, ok: false, error: { kind: "invalid_input", message: String(e.message) } };
    }
    process.stdout.write(JSON.stringify(response) + "\n");
  }
});
process.stdin.on("end", () => process.exit(0));
