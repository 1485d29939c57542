"""Host apps and process helpers for the host, server and nginx tests.

The app modules here are served by real ASGI servers in subprocesses (with this
directory on ``PYTHONPATH``); ``procs`` starts those servers and nginx.
"""
