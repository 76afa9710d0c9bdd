// The WASM reference adapter: the Rust signer (conformance/adapters/rust, built for
// wasm32-unknown-unknown) run by Node's WebAssembly, speaking conformance/PROTOCOL.md.
// Usage: node host.mjs path/to/flk_pcs.wasm
// The module exports flk_alloc(len) -> ptr, flk_handle(ptr, len) -> (ptr << 32 | len) as a
// BigInt, flk_free(ptr, cap); it imports nothing. Lines are passed as raw bytes (UTF-8), so
// the Rust code sees exactly what the runner sent.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

const path = process.argv[2];
if (!path) {
  process.stderr.write("usage: node host.mjs flk_pcs.wasm\n");
  process.exit(2);
}
const { instance } = await WebAssembly.instantiate(readFileSync(path), {});
const { memory, flk_alloc, flk_handle, flk_free } = instance.exports;

function handle(line) {
  const request = Buffer.from(line, "utf8");
  const ptr = flk_alloc(request.length);
  new Uint8Array(memory.buffer, ptr, request.length).set(request);
  const packed = flk_handle(ptr, request.length);
  flk_free(ptr, request.length);
  const outPtr = Number(packed >> 32n);
  const outLen = Number(packed & 0xffffffffn);
  const answer = Buffer.from(new Uint8Array(memory.buffer, outPtr, outLen)).toString("utf8");
  flk_free(outPtr, outLen);
  return answer;
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === "") continue;
  process.stdout.write(handle(line) + "\n");
}
