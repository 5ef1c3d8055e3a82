"""The member oracle with the real jedi worker process (no model)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from completion.member_oracle import MemberOracle, MemberQuery
from completion.member_worker import OBJECT_MEMBERS, narrowed


@pytest.fixture(scope="module")
def oracle():
    o = MemberOracle()
    yield o
    o.close()


def ask(oracle: MemberOracle, text: str) -> tuple[frozenset[str] | None, str]:
    found = oracle.members(MemberQuery(text, len(text), None, "python"), budget_s=60)
    return found.names, found.reason


def test_module_members_are_known(oracle: MemberOracle) -> None:
    names, reason = ask(oracle, "import os\n\nx = os.path.")
    assert reason == "known" and names is not None and {"join", "exists"} <= names
    assert "joinpath" not in names


def test_what_jedi_cannot_know_is_unknown(oracle: MemberOracle) -> None:
    dynamic = "class A:\n    def __getattr__(self, n):\n        return n\n\nA()."
    assert ask(oracle, dynamic) == (None, "dynamic")
    assert ask(oracle, "def f(event):\n    return event.")[1] in ("empty", "object")
    unknowable = "def f(v: object, k):\n    if isinstance(v, k):\n        return v."
    assert ask(oracle, unknowable) == (None, "narrowed")  # narrowed to what?
    # jedi gives a lambda parameter the type of an outer variable of the same name (int).
    shadowed = (
        "def pick(names):\n    for idx, name in enumerate(names):\n        print(idx)\n"
        "    parse = lambda idx: (\n        int(idx."
    )
    assert ask(oracle, shadowed) == (None, "lambda")


def test_a_receiver_known_only_as_object_gets_objects_members(oracle: MemberOracle) -> None:
    names, reason = ask(oracle, "def f(value: object):\n    return value.")
    assert reason == "object" and names is not None
    assert "__class__" in names and names <= OBJECT_MEMBERS


def test_a_narrowed_receiver_gets_the_narrowed_types_members(oracle: MemberOracle) -> None:
    decimal = (
        "from decimal import Decimal\n\ndef f(value: object):\n"
        "    if isinstance(value, (Decimal, int)):\n        return value."
    )
    names, reason = ask(oracle, decimal)  # jedi alone: object's members only
    assert reason == "known" and names is not None
    assert {"is_finite", "bit_length"} <= names and "is_floating_point" not in names


def test_narrowing_is_found_above_the_access() -> None:
    def at_end(text: str) -> bool:
        return narrowed(text, len(text))

    assert at_end("if isinstance(v, int):\n    v.") == ["int"]
    assert at_end("if isinstance(v, (a.B, C)):\n    v.") == ["a.B", "C"]
    assert at_end("if type(v) is int:\n    v.") == ["int"]
    assert at_end("if isinstance(v, kinds[0]):\n    v.") == []
    assert at_end("w = isinstance(v, int)\nx.") is None
    assert at_end("a.b.") is None


def test_a_killed_worker_is_started_again(oracle: MemberOracle) -> None:
    ask(oracle, "import os\nos.")
    pid = oracle.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(1.2)  # restarts are at most once a second
    names, reason = ask(oracle, "import json\njson.")
    assert reason == "known" and names is not None and "dumps" in names
    assert oracle.pid not in (None, pid) and oracle.restarts >= 1
