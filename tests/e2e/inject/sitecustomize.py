"""Faults injected into a server started with this folder on PYTHONPATH (tests only).

``PIE_TEST_FAULT``: ``decode-once``: the first completion's decode raises mid-way;
``oom-once``: it runs out of memory (as CUDA reports it) instead;
``no-network``: every outward socket connection and name lookup fails and is written
to ``PIE_TEST_NET_LOG``.
"""

import os

FAULT = os.environ.get("PIE_TEST_FAULT", "")

if FAULT in ("decode-once", "oom-once"):
    import torch

    from completion import engine

    _original = engine.Engine._apply_rules
    _calls = {"n": 0}

    def _apply_rules(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _calls["n"] += 1
        if _calls["n"] == 1:
            if FAULT == "oom-once":
                raise torch.OutOfMemoryError("injected: CUDA out of memory")
            raise RuntimeError("injected fault in the decode")
        return _original(self, *args, **kwargs)

    engine.Engine._apply_rules = _apply_rules  # type: ignore[method-assign]

if FAULT == "no-network":
    import socket

    _log = os.environ["PIE_TEST_NET_LOG"]
    _connect = socket.socket.connect

    def _refuse(what: str) -> None:
        with open(_log, "a", encoding="utf-8") as out:
            out.write(what + "\n")
        raise OSError("network blocked by the test")

    def connect(self, address):  # type: ignore[no-untyped-def]
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _refuse(f"connect {address}")
        return _connect(self, address)

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        _refuse(f"getaddrinfo {host}")

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
