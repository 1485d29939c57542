"""Benchmarks for streamrelay against hand-written relays, library peers and a raw-socket floor.

Run ``python -m bench`` (or ``make bench``); ``python -m bench --quick`` for a short run.
The pieces, each a plain module:

- :mod:`bench.upstream`: a fast OpenAI-compatible upstream whose tokens carry send timestamps;
- :mod:`bench.relays`: the relays under test, each an ASGI app;
- :mod:`bench.serve`: runs one relay in its own uvicorn process;
- :mod:`bench.client`: the load-client process (raw asyncio sockets);
- :mod:`bench.procs`: starting, pinning and measuring those processes;
- :mod:`bench.runner`: the measurements, alternating relays round by round;
- :mod:`bench.micro`: micro-benchmarks of streamrelay's sans-I/O core;
- :mod:`bench.profiling`: a py-spy profile of a relay process under load;
- :mod:`bench.report`: JSON, the markdown report and the chart.
"""
