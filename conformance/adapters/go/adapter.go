// The Go reference conformance adapter: `go run conformance/adapters/go/adapter.go`.
//
// Why this file exists: it shows an SDK author in Go how to pass every test
// vector with the standard library alone, and keeps the kit honest about
// Go's defaults (encoding/json escapes '<', '>' and '&' and turns lone
// surrogates into U+FFFD; math/big and strconv round exactly). It speaks
// conformance/PROTOCOL.md: one JSON request per line on stdin, one JSON
// response per line on stdout (flushed), nothing else on stdout.
//
// Requests are parsed by a small JSON reader of its own: numbers keep their
// literal text (an epoch written 1.0 is not the integer 1; a uint64 seed stays
// exact) and strings keep lone UTF-16 surrogates (profile v1 rejects them).
package main

import (
	"bufio"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
)

const adapterName = "flk-go-reference"
const adapterVersion = "1.0.0"

var profiles = []string{"v1", "legacy-0.1"}

// ------------------------------------------------------------------ errors

type protocolError struct {
	kind    string // "invalid_input" | "unsupported"
	message string
}

func (e *protocolError) Error() string { return e.message }

func invalid(field, message string) error {
	return &protocolError{"invalid_input", field + ": " + message}
}

func unsupported(message string) error { return &protocolError{"unsupported", message} }

// -------------------------------------------------------------- JSON input

// number keeps the literal text of a JSON number (or "" for a decoded f64).
type number struct {
	text  string
	value float64
	isInt bool
}

// jstring is a JSON string as UTF-16 code units, lone surrogates included.
type jstring []uint16

type reader struct {
	text string
	pos  int
}

func (r *reader) fail(message string) error {
	return invalid("request", fmt.Sprintf("not JSON: %s at offset %d", message, r.pos))
}

func (r *reader) skipSpace() {
	for r.pos < len(r.text) && strings.IndexByte(" \t\n\r", r.text[r.pos]) >= 0 {
		r.pos++
	}
}

func (r *reader) value() (interface{}, error) {
	r.skipSpace()
	if r.pos >= len(r.text) {
		return nil, r.fail("unexpected end")
	}
	switch c := r.text[r.pos]; {
	case c == '{':
		return r.object()
	case c == '[':
		return r.array()
	case c == '"':
		return r.str()
	case strings.HasPrefix(r.text[r.pos:], "true"):
		r.pos += 4
		return true, nil
	case strings.HasPrefix(r.text[r.pos:], "false"):
		r.pos += 5
		return false, nil
	case strings.HasPrefix(r.text[r.pos:], "null"):
		r.pos += 4
		return nil, nil
	}
	return r.number()
}

func (r *reader) object() (interface{}, error) {
	r.pos++
	out := map[string]interface{}{}
	r.skipSpace()
	if r.pos < len(r.text) && r.text[r.pos] == '}' {
		r.pos++
		return out, nil
	}
	for {
		r.skipSpace()
		if r.pos >= len(r.text) || r.text[r.pos] != '"' {
			return nil, r.fail("expected a key")
		}
		key, err := r.str()
		if err != nil {
			return nil, err
		}
		r.skipSpace()
		if r.pos >= len(r.text) || r.text[r.pos] != ':' {
			return nil, r.fail("expected ':'")
		}
		r.pos++
		v, err := r.value()
		if err != nil {
			return nil, err
		}
		out[string(utf16.Decode(key))] = v
		r.skipSpace()
		if r.pos < len(r.text) && r.text[r.pos] == ',' {
			r.pos++
			continue
		}
		if r.pos < len(r.text) && r.text[r.pos] == '}' {
			r.pos++
			return out, nil
		}
		return nil, r.fail("expected ',' or '}'")
	}
}

func (r *reader) array() (interface{}, error) {
	r.pos++
	out := []interface{}{}
	r.skipSpace()
	if r.pos < len(r.text) && r.text[r.pos] == ']' {
		r.pos++
		return out, nil
	}
	for {
		v, err := r.value()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		r.skipSpace()
		if r.pos < len(r.text) && r.text[r.pos] == ',' {
			r.pos++
			continue
		}
		if r.pos < len(r.text) && r.text[r.pos] == ']' {
			r.pos++
			return out, nil
		}
		return nil, r.fail("expected ',' or ']'")
	}
}

var shortUnescape = map[byte]uint16{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

func (r *reader) str() (jstring, error) {
	r.pos++
	out := jstring{}
	for {
		if r.pos >= len(r.text) {
			return nil, r.fail("unterminated string")
		}
		c := r.text[r.pos]
		switch {
		case c == '"':
			r.pos++
			return out, nil
		case c == '\\':
			if r.pos+1 >= len(r.text) {
				return nil, r.fail("bad escape")
			}
			e := r.text[r.pos+1]
			if e == 'u' {
				code, err := strconv.ParseUint(r.text[r.pos+2:min(r.pos+6, len(r.text))], 16, 16)
				if err != nil || r.pos+6 > len(r.text) {
					return nil, r.fail("bad \\u escape")
				}
				out = append(out, uint16(code))
				r.pos += 6
			} else if u, ok := shortUnescape[e]; ok {
				out = append(out, u)
				r.pos += 2
			} else {
				return nil, r.fail("bad escape")
			}
		case c < 0x20:
			return nil, r.fail("control character in string")
		default:
			end := r.pos + 1
			for end < len(r.text) && r.text[end] != '"' && r.text[end] != '\\' && r.text[end] >= 0x20 {
				end++
			}
			out = append(out, utf16.Encode([]rune(r.text[r.pos:end]))...)
			r.pos = end
		}
	}
}

var numberPattern = regexp.MustCompile(`^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?`)

func (r *reader) number() (interface{}, error) {
	literal := numberPattern.FindString(r.text[r.pos:])
	if literal == "" {
		return nil, r.fail("unexpected character")
	}
	r.pos += len(literal)
	value, err := strconv.ParseFloat(literal, 64)
	if err != nil && !math.IsInf(value, 0) {
		return nil, r.fail("bad number")
	}
	isInt := !strings.ContainsAny(literal, ".eE")
	return number{literal, value, isInt}, nil
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

func parseJSON(text string) (interface{}, error) {
	r := &reader{text: text}
	v, err := r.value()
	if err != nil {
		return nil, err
	}
	r.skipSpace()
	if r.pos != len(r.text) {
		return nil, r.fail("trailing data")
	}
	return v, nil
}

// decodeF64 replaces every {"f64": "<16 hex digits>"} object by its number.
func decodeF64(v interface{}, where string) (interface{}, error) {
	switch t := v.(type) {
	case map[string]interface{}:
		if hexText, ok := t["f64"]; ok && len(t) == 1 {
			text, isString := hexText.(jstring)
			s := string(utf16.Decode(text))
			if !isString || len(s) != 16 || strings.ToLower(s) != s {
				return nil, invalid(where, "f64 must be 16 lowercase hexadecimal digits")
			}
			bits, err := strconv.ParseUint(s, 16, 64)
			if err != nil {
				return nil, invalid(where, "f64 must be 16 lowercase hexadecimal digits")
			}
			return number{"", math.Float64frombits(bits), false}, nil
		}
		out := map[string]interface{}{}
		for k, item := range t {
			decoded, err := decodeF64(item, where+"."+k)
			if err != nil {
				return nil, err
			}
			out[k] = decoded
		}
		return out, nil
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, item := range t {
			decoded, err := decodeF64(item, fmt.Sprintf("%s[%d]", where, i))
			if err != nil {
				return nil, err
			}
			out[i] = decoded
		}
		return out, nil
	}
	return v, nil
}

// ----------------------------------------------------------- input helpers

type object = map[string]interface{}

func field(input object, name string) (interface{}, error) {
	v, ok := input[name]
	if !ok {
		return nil, invalid(name, "missing")
	}
	return v, nil
}

func finite(v interface{}, name string) (float64, error) {
	n, ok := v.(number)
	if !ok {
		return 0, invalid(name, "must be a number")
	}
	if math.IsNaN(n.value) || math.IsInf(n.value, 0) {
		return 0, invalid(name, "NaN and Infinity are not allowed")
	}
	return n.value, nil
}

func unit(v interface{}, name string) (float64, error) {
	x, err := finite(v, name)
	if err == nil && !(x >= 0 && x <= 1) {
		err = invalid(name, "must be in [0, 1]")
	}
	return x, err
}

func integer(v interface{}, name string, low int64, high *big.Int) (*big.Int, error) {
	n, ok := v.(number)
	if !ok || !n.isInt {
		return nil, invalid(name, "must be an integer")
	}
	value, _ := new(big.Int).SetString(n.text, 10)
	if value.Cmp(big.NewInt(low)) < 0 || (high != nil && value.Cmp(high) > 0) {
		return nil, invalid(name, "out of range")
	}
	return value, nil
}

func text(v interface{}, name string) (jstring, error) {
	s, ok := v.(jstring)
	if !ok {
		return nil, invalid(name, "must be a string")
	}
	return s, nil
}

// b64Strict: standard alphabet, padding, canonical trailing bits, no whitespace
// (Go's decoder skips '\r' and '\n' even in Strict mode, so they are refused first).
func b64Strict(v interface{}, name string, length int) ([]byte, error) {
	s, ok := v.(jstring)
	if !ok {
		return nil, invalid(name, "must be a base64 string")
	}
	textValue := string(utf16.Decode(s))
	if strings.ContainsAny(textValue, "\r\n") {
		return nil, invalid(name, "not strict standard base64")
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(textValue)
	if err != nil || base64.StdEncoding.EncodeToString(raw) != textValue {
		return nil, invalid(name, "not strict standard base64")
	}
	if length >= 0 && len(raw) != length {
		return nil, invalid(name, fmt.Sprintf("decodes to %d bytes, expected %d", len(raw), length))
	}
	return raw, nil
}

func b64List(v interface{}, name string, length int) ([][]byte, error) {
	items, ok := v.([]interface{})
	if !ok {
		return nil, invalid(name, "must be a list of base64 strings")
	}
	out := make([][]byte, len(items))
	for i, item := range items {
		raw, err := b64Strict(item, fmt.Sprintf("%s[%d]", name, i), length)
		if err != nil {
			return nil, err
		}
		out[i] = raw
	}
	return out, nil
}

// -------------------------------------------------------------------- fmt9

// fmt9: nine fractional digits, half-to-even from the exact binary64 value,
// negative zero (and anything rounding to it) written 0.000000000.
func fmt9(x float64) string {
	exact := new(big.Rat).SetFloat64(math.Abs(x))
	scaled := new(big.Rat).Mul(exact, new(big.Rat).SetInt64(1000000000))
	quotient, remainder := new(big.Int).QuoRem(scaled.Num(), scaled.Denom(), new(big.Int))
	twice := new(big.Int).Mul(remainder, big.NewInt(2))
	if c := twice.Cmp(scaled.Denom()); c > 0 || (c == 0 && quotient.Bit(0) == 1) {
		quotient.Add(quotient, big.NewInt(1))
	}
	if quotient.Sign() == 0 {
		return "0.000000000"
	}
	digits := fmt.Sprintf("%010s", quotient.String())
	sign := ""
	if x < 0 {
		sign = "-"
	}
	return sign + digits[:len(digits)-9] + "." + digits[len(digits)-9:]
}

// shortest returns the shortest round-trip digits of |x| and the decimal
// exponent of the first digit (x = 0.d1d2... * 10^(exp+1)).
func shortest(x float64) (string, int) {
	mantissa := strconv.FormatFloat(math.Abs(x), 'e', -1, 64)
	parts := strings.SplitN(mantissa, "e", 2)
	exponent, _ := strconv.Atoi(parts[1])
	return strings.Replace(parts[0], ".", "", 1), exponent
}

// pythonRepr is Python's repr(float): positional for 1e-4 <= |x| < 1e16.
func pythonRepr(x float64) string {
	if x == 0 {
		if math.Signbit(x) {
			return "-0.0"
		}
		return "0.0"
	}
	digits, exponent := shortest(x)
	sign := ""
	if x < 0 {
		sign = "-"
	}
	if exponent < -4 || exponent >= 16 {
		body := digits[:1]
		if len(digits) > 1 {
			body += "." + digits[1:]
		}
		expSign := "+"
		if exponent < 0 {
			expSign = "-"
		}
		return fmt.Sprintf("%s%se%s%02d", sign, body, expSign, abs(exponent))
	}
	point := exponent + 1
	if point <= 0 {
		return sign + "0." + strings.Repeat("0", -point) + digits
	}
	if point >= len(digits) {
		return sign + digits + strings.Repeat("0", point-len(digits)) + ".0"
	}
	return sign + digits[:point] + "." + digits[point:]
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// legacyFloat: half-up on the shortest decimal string to nine decimals, then repr.
func legacyFloat(x float64) string {
	if x == 0 {
		return pythonRepr(x)
	}
	digits, exponent := shortest(x)
	shift := exponent - (len(digits) - 1) + 9 // x * 1e9 = digits * 10^shift
	q, _ := new(big.Int).SetString(digits, 10)
	if shift >= 0 {
		q.Mul(q, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(shift)), nil))
	} else {
		den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(-shift)), nil)
		var remainder big.Int
		q.QuoRem(q, den, &remainder)
		if remainder.Mul(&remainder, big.NewInt(2)).Cmp(den) >= 0 {
			q.Add(q, big.NewInt(1))
		}
	}
	sign := ""
	if x < 0 {
		sign = "-"
	}
	y, _ := strconv.ParseFloat(sign+q.String()+"e-9", 64)
	return pythonRepr(y)
}

// --------------------------------------------------------- canonical bytes

var signedFields = []string{"D_hat", "budget", "coh_star", "epoch", "merkle_root", "pcs_id", "r", "shard_id"}
var floatFields = map[string]bool{"D_hat": true, "budget": true, "coh_star": true, "r": true}
var epochMax = new(big.Int).SetInt64(1<<53 - 1)
var shortEscape = map[uint16]string{'"': `\"`, '\\': `\\`, '\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`}

// escapeV1 is RFC 8785 string serialization: raw UTF-8; '<', '>', '&', U+2028
// and U+007F are written as they are (unlike encoding/json); lone surrogates rejected.
func escapeV1(s jstring, name string) (string, error) {
	var out strings.Builder
	out.WriteByte('"')
	for i := 0; i < len(s); i++ {
		unitValue := s[i]
		if short, ok := shortEscape[unitValue]; ok {
			out.WriteString(short)
		} else if unitValue < 0x20 {
			fmt.Fprintf(&out, `\u%04x`, unitValue)
		} else if utf16.IsSurrogate(rune(unitValue)) {
			if unitValue >= 0xDC00 || i+1 >= len(s) || s[i+1] < 0xDC00 || s[i+1] > 0xDFFF {
				return "", invalid(name, "lone surrogate cannot be encoded as UTF-8")
			}
			out.WriteRune(utf16.DecodeRune(rune(unitValue), rune(s[i+1])))
			i++
		} else {
			out.WriteRune(rune(unitValue))
		}
	}
	out.WriteByte('"')
	return out.String(), nil
}

// escapeLegacy is Python's json.dumps(s) (ensure_ascii): everything outside ' '..'~' as \uXXXX.
func escapeLegacy(s jstring) string {
	var out strings.Builder
	out.WriteByte('"')
	for _, unitValue := range s {
		if short, ok := shortEscape[unitValue]; ok {
			out.WriteString(short)
		} else if unitValue < 0x20 || unitValue > 0x7E {
			fmt.Fprintf(&out, `\u%04x`, unitValue)
		} else {
			out.WriteByte(byte(unitValue))
		}
	}
	out.WriteByte('"')
	return out.String()
}

func canonicalBytes(subset object, profile string) ([]byte, error) {
	for _, key := range signedFields {
		if _, ok := subset[key]; !ok {
			return nil, invalid(key, "missing from the signed subset")
		}
	}
	parts := make([]string, 0, len(signedFields))
	for _, key := range signedFields {
		value := subset[key]
		var written string
		switch {
		case floatFields[key]:
			x, err := finite(value, key)
			if err != nil {
				return nil, err
			}
			if profile == "v1" {
				written = fmt9(x)
			} else {
				written = legacyFloat(x)
			}
		case key == "epoch":
			epoch, err := integer(value, "epoch", 0, epochMax)
			if err != nil {
				return nil, err
			}
			written = epoch.String()
		default:
			s, err := text(value, key)
			if err != nil {
				return nil, err
			}
			if profile == "v1" {
				if written, err = escapeV1(s, key); err != nil {
					return nil, err
				}
			} else {
				written = escapeLegacy(s)
			}
		}
		parts = append(parts, `"`+key+`":`+written)
	}
	return []byte("{" + strings.Join(parts, ",") + "}"), nil
}

func subsetOf(input object) (object, error) {
	v, err := field(input, "subset")
	if err != nil {
		return nil, err
	}
	subset, ok := v.(object)
	if !ok {
		return nil, invalid("subset", "must be an object")
	}
	return subset, nil
}

func canonicalOf(input object, profile string) ([]byte, error) {
	subset, err := subsetOf(input)
	if err != nil {
		return nil, err
	}
	return canonicalBytes(subset, profile)
}

// ----------------------------------------------------------------- signing

func hmacSHA256(key, message []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write(message)
	return mac.Sum(nil)
}

// signatureBytes: a malformed signature is a verdict (not valid), not an error.
func signatureBytes(input object, length int) []byte {
	raw, err := b64Strict(input["sig"], "sig", length)
	if err != nil {
		return nil
	}
	return raw
}

func opSignHMAC(input object, profile string) (object, error) {
	keyText, err := field(input, "key_b64")
	if err != nil {
		return nil, err
	}
	key, err := b64Strict(keyText, "key_b64", -1)
	if err != nil {
		return nil, err
	}
	if len(key) == 0 {
		return nil, invalid("key_b64", "HMAC key must be non-empty")
	}
	message, err := canonicalOf(input, profile)
	if err != nil {
		return nil, err
	}
	return object{"sig": base64.StdEncoding.EncodeToString(hmacSHA256(key, message))}, nil
}

func opVerifyHMAC(input object, profile string) (object, error) {
	keysValue, err := field(input, "keys_b64")
	if err != nil {
		return nil, err
	}
	keys, err := b64List(keysValue, "keys_b64", -1)
	if err != nil {
		return nil, err
	}
	for i, key := range keys {
		if len(key) == 0 {
			return nil, invalid(fmt.Sprintf("keys_b64[%d]", i), "HMAC key must be non-empty")
		}
	}
	if _, err := field(input, "sig"); err != nil {
		return nil, err
	}
	message, err := canonicalOf(input, profile)
	if err != nil {
		return nil, err
	}
	raw := signatureBytes(input, 32)
	valid := 0
	for _, key := range keys {
		if raw != nil {
			valid |= subtle.ConstantTimeCompare(hmacSHA256(key, message), raw)
		}
	}
	return object{"valid": valid == 1}, nil
}

func ed25519Message(input object, profile string) ([]byte, error) {
	if profile != "v1" {
		return nil, invalid("profile", "Ed25519 is defined for profile v1 only")
	}
	message, err := canonicalOf(input, profile)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(message)
	return digest[:], nil
}

func opSignEd25519(input object, profile string) (object, error) {
	seedText, err := field(input, "private_key_b64")
	if err != nil {
		return nil, err
	}
	seed, err := b64Strict(seedText, "private_key_b64", 32)
	if err != nil {
		return nil, err
	}
	digest, err := ed25519Message(input, profile)
	if err != nil {
		return nil, err
	}
	signature := ed25519.Sign(ed25519.NewKeyFromSeed(seed), digest)
	return object{"sig": base64.StdEncoding.EncodeToString(signature)}, nil
}

// ed25519KeyCanonical: RFC 8032 section 5.1.3 decoding refuses y >= p and x = 0 with the sign bit
// set. crypto/ed25519 (filippo.io/edwards25519) accepts both spellings of the same point, so the
// check is made here: a non-canonical key verifies nothing.
var ed25519P = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))

func ed25519KeyCanonical(key []byte) bool {
	be := make([]byte, 32)
	for i := range key {
		be[31-i] = key[i]
	}
	sign := be[0] >> 7
	be[0] &= 0x7f
	y := new(big.Int).SetBytes(be)
	if y.Cmp(ed25519P) >= 0 {
		return false
	}
	minusOne := new(big.Int).Sub(ed25519P, big.NewInt(1))
	return !(sign == 1 && (y.Cmp(big.NewInt(1)) == 0 || y.Cmp(minusOne) == 0))
}

func opVerifyEd25519(input object, profile string) (object, error) {
	keysValue, err := field(input, "public_keys_b64")
	if err != nil {
		return nil, err
	}
	keys, err := b64List(keysValue, "public_keys_b64", 32)
	if err != nil {
		return nil, err
	}
	if _, err := field(input, "sig"); err != nil {
		return nil, err
	}
	digest, err := ed25519Message(input, profile)
	if err != nil {
		return nil, err
	}
	raw := signatureBytes(input, 64)
	valid := false
	for _, key := range keys {
		// crypto/ed25519 refuses a non-canonical S (S >= L)
		if raw != nil && ed25519KeyCanonical(key) && ed25519.Verify(ed25519.PublicKey(key), digest, raw) {
			valid = true
		}
	}
	return object{"valid": valid}, nil
}

// ------------------------------------------------------ pcs_id and Merkle

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)
var shardPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

func opPcsID(input object, _ string) (object, error) {
	rootValue, err := field(input, "merkle_root")
	if err != nil {
		return nil, err
	}
	root, ok := rootValue.(jstring)
	if !ok || !hex64.MatchString(string(utf16.Decode(root))) {
		return nil, invalid("merkle_root", "must be 64 lowercase hex")
	}
	epochValue, err := field(input, "epoch")
	if err != nil {
		return nil, err
	}
	epoch, err := integer(epochValue, "epoch", 0, epochMax)
	if err != nil {
		return nil, err
	}
	shardValue, err := field(input, "shard_id")
	if err != nil {
		return nil, err
	}
	shard, ok := shardValue.(jstring)
	if !ok || !shardPattern.MatchString(string(utf16.Decode(shard))) {
		return nil, invalid("shard_id", "must match ^[A-Za-z0-9._:-]{1,128}$")
	}
	preimage := string(utf16.Decode(root)) + "|" + epoch.String() + "|" + string(utf16.Decode(shard))
	digest := sha256.Sum256([]byte(preimage))
	return object{"pcs_id": hex.EncodeToString(digest[:])}, nil
}

func rfc6962(leaves [][]byte) []byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	split := 1
	for split*2 < len(leaves) {
		split *= 2
	}
	node := sha256.Sum256(append(append([]byte{1}, rfc6962(leaves[:split])...), rfc6962(leaves[split:])...))
	return node[:]
}

func merkleRoot(chunks [][]byte, profile string) string {
	if len(chunks) == 0 {
		empty := sha256.Sum256(nil)
		return hex.EncodeToString(empty[:])
	}
	if profile == "v1" {
		leaves := make([][]byte, len(chunks))
		for i, chunk := range chunks {
			leaf := sha256.Sum256(append([]byte{0}, chunk...))
			leaves[i] = leaf[:]
		}
		return hex.EncodeToString(rfc6962(leaves))
	}
	level := make([]string, len(chunks))
	for i, chunk := range chunks {
		digest := sha256.Sum256(chunk)
		level[i] = hex.EncodeToString(digest[:])
	}
	for len(level) > 1 {
		if len(level)%2 == 1 {
			level = append(level, level[len(level)-1])
		}
		next := make([]string, 0, len(level)/2)
		for i := 0; i < len(level); i += 2 {
			digest := sha256.Sum256([]byte(level[i] + level[i+1]))
			next = append(next, hex.EncodeToString(digest[:]))
		}
		level = next
	}
	return level[0]
}

func opMerkleRoot(input object, profile string) (object, error) {
	chunksValue, err := field(input, "chunks_b64")
	if err != nil {
		return nil, err
	}
	chunks, err := b64List(chunksValue, "chunks_b64", -1)
	if err != nil {
		return nil, err
	}
	return object{"root": merkleRoot(chunks, profile)}, nil
}

// ----------------------------------------------------------------- signals

func intList(v interface{}, name string, low int64) ([]float64, error) {
	items, ok := v.([]interface{})
	if !ok {
		return nil, invalid(name, "must be a list of integers")
	}
	out := make([]float64, len(items))
	for i, item := range items {
		value, err := integer(item, fmt.Sprintf("%s[%d]", name, i), low, nil)
		if err != nil {
			return nil, err
		}
		out[i], _ = new(big.Float).SetInt(value).Float64()
	}
	return out, nil
}

func dHat(input object, profile string) (float64, error) {
	scalesValue, err := field(input, "scales")
	if err != nil {
		return 0, err
	}
	countsValue, err := field(input, "n_j")
	if err != nil {
		return 0, err
	}
	scales, err := intList(scalesValue, "scales", 2)
	if err != nil {
		return 0, err
	}
	counts, err := intList(countsValue, "N_j", 1)
	if err != nil {
		return 0, err
	}
	if len(scales) < 2 || len(scales) > 64 {
		return 0, invalid("scales", "needs between 2 and 64 scales")
	}
	if len(counts) != len(scales) {
		return 0, invalid("N_j", "one count per scale")
	}
	for i := 1; i < len(scales); i++ {
		if scales[i] <= scales[i-1] {
			return 0, invalid("scales", "must be strictly increasing")
		}
	}
	slopes := []float64{}
	for a := range scales {
		for b := a + 1; b < len(scales); b++ {
			rise := float64(math.Log2(counts[b]) - math.Log2(counts[a]))
			slopes = append(slopes, rise/float64(math.Log2(scales[b])-math.Log2(scales[a])))
		}
	}
	sort.Float64s(slopes)
	m := len(slopes)
	if profile == "legacy-0.1" || m%2 == 1 {
		return slopes[m/2], nil
	}
	return (slopes[m/2-1] + slopes[m/2]) / 2.0, nil
}

// pyMax / pyMin are Python's max(a, b) / min(a, b): the first unless the second is strictly better.
func pyMax(a, b float64) float64 {
	if b > a {
		return b
	}
	return a
}

func pyMin(a, b float64) float64 {
	if b < a {
		return b
	}
	return a
}

func budgetParams(input object) (map[string]float64, error) {
	params := map[string]float64{"base": 0.1, "alpha": 0.3, "beta": 0.5, "gamma": 0.2, "d0": 2.2}
	raw, present := input["params"]
	if !present || raw == nil {
		return params, nil
	}
	given, ok := raw.(object)
	if !ok {
		return nil, invalid("params", "must be an object")
	}
	for name, value := range given {
		if _, known := params[name]; !known {
			return nil, invalid("params."+name, "unknown budget parameter")
		}
		x, err := finite(value, "params."+name)
		if err != nil {
			return nil, err
		}
		if (name == "alpha" || name == "beta" || name == "gamma") && x < 0 {
			return nil, invalid("params."+name, "must be >= 0")
		}
		params[name] = x
	}
	return params, nil
}

func signalInputs(input object, withR bool) (float64, float64, float64, error) {
	values := []float64{0, 0, 0}
	names := []string{"D_hat", "coh_star", "r"}
	if !withR {
		names = names[:2]
	}
	for i, name := range names {
		v, err := field(input, name)
		if err != nil {
			return 0, 0, 0, err
		}
		if i == 0 {
			values[i], err = finite(v, name)
		} else {
			values[i], err = unit(v, name)
		}
		if err != nil {
			return 0, 0, 0, err
		}
	}
	return values[0], values[1], values[2], nil
}

func opBudget(input object, _ string) (object, error) {
	params, err := budgetParams(input)
	if err != nil {
		return nil, err
	}
	dimension, coherence, ratio, err := signalInputs(input, true)
	if err != nil {
		return nil, err
	}
	// every step rounded on its own: float64(...) forbids a fused multiply-add
	value := float64(params["base"] + float64(params["alpha"]*(1.0-ratio)))
	value = float64(value + float64(params["beta"]*pyMax(0.0, dimension-params["d0"])))
	value = float64(value + float64(params["gamma"]*coherence))
	return object{"budget": fmt9(pyMin(1.0, pyMax(0.0, value)))}, nil
}

func opRegime(input object, _ string) (object, error) {
	dimension, coherence, _, err := signalInputs(input, false)
	if err != nil {
		return nil, err
	}
	switch {
	case coherence >= 0.7 && dimension <= 1.5:
		return object{"regime": "sticky"}, nil
	case dimension >= 2.6:
		return object{"regime": "non_sticky"}, nil
	}
	return object{"regime": "mixed"}, nil
}

// ---------------------------------------------------------------- coherence

// splitMix64 returns the SplitMix64 stream of SPEC.md section 7.3 as doubles in [0, 1).
func splitMix64(seed uint64) func() float64 {
	state := seed
	return func() float64 {
		state += 0x9e3779b97f4a7c15
		z := state
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		return float64(z>>11) * (1.0 / (1 << 53))
	}
}

// pointRows: n rows of d numbers (1 <= d <= 8); a list of numbers is n rows of one.
func pointRows(v interface{}) ([][]float64, error) {
	items, ok := v.([]interface{})
	shapeError := invalid("points", "must be a numeric array of shape (n, d)")
	if !ok {
		return nil, shapeError
	}
	rows := make([][]float64, len(items))
	for i, item := range items {
		cells, isList := item.([]interface{})
		if _, firstIsList := items[0].([]interface{}); isList != firstIsList {
			return nil, shapeError
		}
		if !isList {
			cells = []interface{}{item}
		}
		if len(cells) < 1 || len(cells) > 8 || (i > 0 && len(cells) != len(rows[0])) {
			return nil, invalid("points", "must have shape (n, d) with 1 <= d <= 8")
		}
		rows[i] = make([]float64, len(cells))
		for k, cell := range cells {
			x, err := finite(cell, "points")
			if err != nil {
				return nil, err
			}
			rows[i][k] = x
		}
	}
	return rows, nil
}

// normalise maps each dimension to [0, 1] by min-max; a zero-width dimension maps to 0.
func normalise(rows [][]float64) ([][]float64, error) {
	out := make([][]float64, len(rows))
	for i := range rows {
		out[i] = make([]float64, len(rows[i]))
	}
	for k := 0; len(rows) > 0 && k < len(rows[0]); k++ {
		low, high := math.Inf(1), math.Inf(-1)
		for _, row := range rows {
			low, high = math.Min(low, row[k]), math.Max(high, row[k])
		}
		width := high - low
		if math.IsInf(width, 0) {
			return nil, invalid("points", "coordinate range overflows binary64")
		}
		for i, row := range rows {
			if width > 0 {
				out[i][k] = (row[k] - low) / width
			}
		}
	}
	return out, nil
}

// directions draws unit vectors by rejection sampling in the unit ball.
func directions(next func() float64, count, dim int) [][]float64 {
	out := make([][]float64, count)
	for k := range out {
		var candidate []float64
		var squares float64
		for {
			candidate = make([]float64, dim)
			squares = 0.0
			for j := range candidate {
				candidate[j] = float64(2.0*next()) - 1.0
			}
			for _, x := range candidate {
				squares = squares + float64(x*x)
			}
			if squares > 0.0 && squares <= 1.0 {
				break
			}
		}
		norm := math.Sqrt(squares)
		for j := range candidate {
			candidate[j] /= norm
		}
		out[k] = candidate
	}
	return out
}

// largestBinShare: the largest share of projections in one of “bins“ equal bins.
func largestBinShare(points [][]float64, direction []float64, bins int) float64 {
	projections := make([]float64, len(points))
	low, high := math.Inf(1), math.Inf(-1)
	for i, row := range points {
		acc := float64(row[0] * direction[0])
		for k := 1; k < len(row); k++ {
			acc = acc + float64(row[k]*direction[k])
		}
		projections[i] = acc
		low, high = math.Min(low, acc), math.Max(high, acc)
	}
	if high == low {
		return 1.0
	}
	counts := make([]int, bins)
	largest := 0
	for _, x := range projections {
		bin := int(math.Floor(float64((x-low)/(high-low)) * float64(bins)))
		if bin > bins-1 {
			bin = bins - 1
		}
		counts[bin]++
		if counts[bin] > largest {
			largest = counts[bin]
		}
	}
	return float64(largest) / float64(len(points))
}

func optionalCount(input object, name string, fallback int) (int, error) {
	v, present := input[name]
	if !present {
		return fallback, nil
	}
	value, err := integer(v, name, 1, big.NewInt(1000000))
	if err != nil {
		return 0, err
	}
	return int(value.Int64()), nil
}

func opCoherence(input object, profile string) (object, error) {
	if profile != "v1" {
		return nil, unsupported("coherence is defined for profile v1 only")
	}
	pointsValue, err := field(input, "points")
	if err != nil {
		return nil, err
	}
	rows, err := pointRows(pointsValue)
	if err != nil {
		return nil, err
	}
	seedValue, err := field(input, "seed")
	if err != nil {
		return nil, err
	}
	seed, err := integer(seedValue, "seed", 0, new(big.Int).SetUint64(math.MaxUint64))
	if err != nil {
		return nil, err
	}
	count, err := optionalCount(input, "n_directions", 100)
	if err != nil {
		return nil, err
	}
	bins, err := optionalCount(input, "bins", 20)
	if err != nil {
		return nil, err
	}
	normalised, err := normalise(rows)
	if err != nil {
		return nil, err
	}
	dim := 1
	if len(rows) > 0 {
		dim = len(rows[0])
	}
	dirs := directions(splitMix64(seed.Uint64()), count, dim)
	if len(rows) == 0 {
		return object{"coh_star": fmt9(0.0)}, nil
	}
	best := -1.0
	for _, direction := range dirs {
		best = math.Max(best, largestBinShare(normalised, direction, bins))
	}
	return object{"coh_star": fmt9(best)}, nil
}

// --------------------------------------------------------------------- ops

type opFunc func(object, string) (object, error)

var ops = map[string]opFunc{
	"canonical_bytes": func(input object, profile string) (object, error) {
		message, err := canonicalOf(input, profile)
		if err != nil {
			return nil, err
		}
		return object{"bytes_b64": base64.StdEncoding.EncodeToString(message)}, nil
	},
	"fmt9": func(input object, profile string) (object, error) {
		if profile != "v1" {
			return nil, unsupported("fmt9 is defined for profile v1 only")
		}
		v, err := field(input, "x")
		if err != nil {
			return nil, err
		}
		x, err := finite(v, "x")
		if err != nil {
			return nil, err
		}
		return object{"text": fmt9(x)}, nil
	},
	"sign_hmac":      opSignHMAC,
	"verify_hmac":    opVerifyHMAC,
	"sign_ed25519":   opSignEd25519,
	"verify_ed25519": opVerifyEd25519,
	"pcs_id":         opPcsID,
	"merkle_root":    opMerkleRoot,
	"d_hat": func(input object, profile string) (object, error) {
		value, err := dHat(input, profile)
		if err != nil {
			return nil, err
		}
		return object{"d_hat": fmt9(value)}, nil
	},
	"budget":    opBudget,
	"regime":    opRegime,
	"coherence": opCoherence,
}

// declaredOps: the ops offered, in the order of conformance/PROTOCOL.md
// (the optional build_pcs needs the agent's stream parsers and is not offered).
var declaredOps = []string{"canonical_bytes", "fmt9", "sign_hmac", "verify_hmac", "sign_ed25519",
	"verify_ed25519", "pcs_id", "merkle_root", "d_hat", "budget", "regime", "coherence"}

func respond(id interface{}, output object, err error) object {
	if err == nil {
		return object{"id": id, "ok": true, "output": output}
	}
	kind, message := "internal", err.Error()
	if perr, ok := err.(*protocolError); ok {
		kind = perr.kind
	}
	return object{"id": id, "ok": false, "error": object{"kind": kind, "message": message}}
}

func handle(line string) object {
	parsed, err := parseJSON(line)
	if err != nil {
		return respond(nil, nil, err)
	}
	request, ok := parsed.(object)
	if !ok {
		return respond(nil, nil, invalid("request", "must be a JSON object"))
	}
	var id interface{}
	if n, isNumber := request["id"].(number); isNumber {
		id = json.Number(n.text)
	}
	op, _ := request["op"].(jstring)
	opName := string(utf16.Decode(op))
	profile := "v1"
	if p, present := request["profile"].(jstring); present {
		profile = string(utf16.Decode(p))
	}
	if opName == "hello" {
		hello := object{"name": adapterName, "version": adapterVersion, "ops": declaredOps, "profiles": profiles}
		return respond(id, hello, nil)
	}
	fn, known := ops[opName]
	if !known {
		return respond(id, nil, unsupported(fmt.Sprintf("op %q is not supported", opName)))
	}
	if profile != "v1" && profile != "legacy-0.1" {
		return respond(id, nil, unsupported(fmt.Sprintf("profile %q is not supported", profile)))
	}
	decoded, err := decodeF64(request["input"], "input")
	if err != nil {
		return respond(id, nil, err)
	}
	input, ok := decoded.(object)
	if !ok {
		return respond(id, nil, invalid("input", "must be an object"))
	}
	output, err := fn(input, profile)
	return respond(id, output, err)
}

func main() {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1024*1024), 64*1024*1024)
	out := bufio.NewWriter(os.Stdout)
	encoder := json.NewEncoder(out)
	encoder.SetEscapeHTML(false)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		if err := encoder.Encode(handle(line)); err != nil {
			fmt.Fprintln(os.Stderr, "encode:", err)
		}
		out.Flush()
	}
}
