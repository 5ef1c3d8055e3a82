"""Whether the editor that started the server is still running (LSP ``processId``).

The specification asks a server to exit when the process named in ``initialize``'s
``processId`` is gone: an editor that crashes or is killed never sends ``exit``, and its
stdio may stay open (a wrapper process holds it), leaving the server and its model in
memory for good.
"""

from __future__ import annotations

import os
import sys

POLL_S = 2.0
"""How often the server looks."""


def alive(pid: int, was_parent: bool) -> bool:
    """Whether process ``pid`` still runs.

    ``was_parent``: ``pid`` was this process's parent at start; a server re-parented
    since (its parent died: it now hangs off init or a subreaper) knows at once.
    """
    if was_parent and os.getppid() != pid:
        return False
    if sys.platform == "win32":
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def _alive_windows(pid: int) -> bool:
    import ctypes

    synchronize, wait_timeout = 0x00100000, 0x00000102
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(synchronize, False, pid)
    if not handle:
        return False
    try:
        return bool(kernel32.WaitForSingleObject(handle, 0) == wait_timeout)
    finally:
        kernel32.CloseHandle(handle)
