"""Reference adapters of the conformance kit.

* ``python -m flk.conformance.adapters.python`` -- the reference core behind the
  stdin/stdout protocol (conformance/PROTOCOL.md).
* ``node conformance/adapters/node/adapter.mjs`` -- an independent
  implementation in JavaScript with node's own ``crypto`` and ``zlib`` only,
  the proof that the spec is implementable outside Python.
"""
