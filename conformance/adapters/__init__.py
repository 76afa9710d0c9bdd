"""Reference adapters of the conformance kit.

* ``python -m flk.conformance.adapters.python`` -- the reference core behind the
  stdin/stdout protocol (conformance/PROTOCOL.md).
* ``node conformance/adapters/node/adapter.mjs`` -- an independent
  implementation in JavaScript with node's own ``crypto`` and ``zlib`` only,
  the proof that the spec is implementable outside Python.
* ``go/adapter.go`` -- Go's standard library only.
* ``rust/`` (``build.sh DIR``) -- the signer ops in Rust with Debian-packaged crates,
  natively and for wasm32-unknown-unknown, the latter run by ``node wasm/host.mjs``.
"""
