"""Stores for resumable streams: one module per backend (memory, Redis).

Empty for now: resumable streams (``StreamRelay(store=...)``, ``GET /streams/{id}``)
are the next step on the roadmap (``DESIGN.md``, "Resumable streams and many
workers"). A store will receive the normalized events the engine relays, in
batches of one upstream read, and replay them to a reader that comes back.
"""

__all__: list[str] = []
