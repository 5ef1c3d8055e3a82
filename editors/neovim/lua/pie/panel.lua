--- The suggestions panel: `:PiePanel` lists the drafts of `pie/panelCompletion` in a split.
---
--- Drafts stream in as the server sends them (`$/progress` partial results) and are
--- listed numbered, with their score and a mark for syntax-invalid ones; the final
--- response puts them in rank order. In the panel: `]]` / `[[` move between drafts,
--- `<CR>` accepts the one under the cursor into the source buffer at the position the
--- panel was opened for (refused if that line changed meanwhile), `gr` asks again, `q`
--- closes.
local M = {}

local NAME = 'pie://panel'
local seq = 0

---@class pie.PanelState
---@field src integer source buffer
---@field win integer source window
---@field row integer 1-based line of the position
---@field col integer 0-based byte column of the position
---@field line string that line's text when the panel was opened
---@field token string partial-result token of the request in flight
---@field items table[] drafts, in the order shown
---@field starts integer[] first panel line (1-based) of each draft
---@field done boolean the final response came
---@field buf integer panel buffer
---@field client_id integer
---@type pie.PanelState?
M.state = nil

local function panel_window(buf)
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    if vim.api.nvim_win_get_buf(win) == buf then
      return win
    end
  end
  return nil
end

--- The panel buffer, made once, with its keymaps.
local function panel_buffer()
  local buf = vim.fn.bufnr(NAME)
  if buf ~= -1 and vim.api.nvim_buf_is_valid(buf) then
    return buf
  end
  buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_name(buf, NAME)
  vim.bo[buf].buftype = 'nofile'
  vim.bo[buf].bufhidden = 'hide'
  vim.bo[buf].swapfile = false
  local function map(lhs, fn, desc)
    vim.keymap.set('n', lhs, fn, { buffer = buf, nowait = true, silent = true, desc = 'pie panel: ' .. desc })
  end
  map(']]', function()
    M.move(1)
  end, 'next draft')
  map('[[', function()
    M.move(-1)
  end, 'previous draft')
  map('<CR>', M.accept, 'accept the draft under the cursor')
  map('gr', M.refresh, 'ask again')
  map('q', M.close, 'close')
  return buf
end

--- Show the panel buffer in a bottom split (40% of the lines) if it is not shown.
local function show(buf)
  if panel_window(buf) then
    return
  end
  local src = vim.api.nvim_get_current_win()
  vim.cmd('botright split')
  local win = vim.api.nvim_get_current_win()
  vim.api.nvim_win_set_buf(win, buf)
  vim.api.nvim_win_set_height(win, math.max(5, math.floor(vim.o.lines * 0.4)))
  vim.wo[win].wrap = false
  vim.wo[win].number = false
  vim.api.nvim_set_current_win(src)
end

--- Redraw the panel from the state.
local function render()
  local s = M.state
  if not s or not vim.api.nvim_buf_is_valid(s.buf) then
    return
  end
  local name = vim.fn.fnamemodify(vim.api.nvim_buf_get_name(s.src), ':t')
  local status = s.done and ('%d drafts'):format(#s.items) or ('synthesizing... %d so far'):format(#s.items)
  local lines = {
    ('pie panel: %s for %s:%d (duplicates hidden)'):format(status, name, s.row),
    ']] / [[ move   <CR> accept   gr refresh   q close',
  }
  s.starts = {}
  for i, item in ipairs(s.items) do
    local mark = item.syntaxValid == false and '  [syntax error]' or ''
    table.insert(lines, '')
    table.insert(lines, ('── %d ── score %.2f%s'):format(i, item.score or 0, mark))
    s.starts[i] = #lines
    vim.list_extend(lines, vim.split(item.insertText, '\n', { plain = true }))
  end
  if s.done and #s.items == 0 then
    table.insert(lines, '')
    table.insert(lines, '(no suggestion here)')
  end
  vim.bo[s.buf].modifiable = true
  vim.api.nvim_buf_set_lines(s.buf, 0, -1, false, lines)
  vim.bo[s.buf].modifiable = false
  -- The cursor starts on the first draft (]] then moves to the second).
  local win = panel_window(s.buf)
  if win and s.starts[1] and vim.api.nvim_win_get_cursor(win)[1] < s.starts[1] - 1 then
    vim.api.nvim_win_set_cursor(win, { s.starts[1] - 1, 0 })
  end
end

--- Partial results for the panel's token (called by the client's `$/progress` handler).
---@return boolean handled
function M.on_progress(result)
  local s = M.state
  if not s or not result or result.token ~= s.token or type(result.value) ~= 'table' then
    return false
  end
  if not s.done then
    vim.list_extend(s.items, result.value.items or {})
    render()
  end
  return true
end

--- Open the panel for the cursor's position in the current buffer.
---@param opts? {count?: integer}
function M.open(opts)
  local pie = require('pie')
  local src = vim.api.nvim_get_current_buf()
  local client = pie.clients(src)[1]
  if not client then
    vim.notify('pie: pie-lsp is not running for this buffer', vim.log.levels.WARN)
    return
  end
  local win = vim.api.nvim_get_current_win()
  local cursor = vim.api.nvim_win_get_cursor(win)
  local params = vim.lsp.util.make_position_params(win, client.offset_encoding or 'utf-16')
  seq = seq + 1
  local token = ('pie-panel-%d'):format(seq)
  params.partialResultToken = token
  params.count = opts and opts.count or nil
  local buf = panel_buffer()
  M.state = {
    src = src,
    win = win,
    row = cursor[1],
    col = cursor[2],
    line = vim.api.nvim_buf_get_lines(src, cursor[1] - 1, cursor[1], false)[1] or '',
    token = token,
    items = {},
    starts = {},
    done = false,
    buf = buf,
    client_id = client.id,
  }
  vim.schedule(function() -- from an insert-mode mapping too: windows change after it
    show(buf)
    render()
  end)
  pie.request(client, 'pie/panelCompletion', params, function(err, result)
    local s = M.state
    if not s or s.token ~= token then
      return -- a newer panel request replaced this one
    end
    s.done = true
    if err then
      vim.notify('pie panel: ' .. (err.message or vim.inspect(err)), vim.log.levels.WARN)
    else
      s.items = (result and result.items) or {}
    end
    render()
  end, src)
end

--- The draft under the panel's cursor (its index), or nil.
local function current()
  local s = M.state
  if not s then
    return nil
  end
  local win = panel_window(s.buf)
  local row = win and vim.api.nvim_win_get_cursor(win)[1] or 0
  local found
  for i, start in ipairs(s.starts) do
    if start - 1 <= row then
      found = i
    end
  end
  return found
end

--- Move the panel's cursor to the next (1) or previous (-1) draft's header line.
function M.move(dir)
  local s = M.state
  local win = s and panel_window(s.buf)
  if not s or not win or #s.starts == 0 then
    return
  end
  local row = vim.api.nvim_win_get_cursor(win)[1]
  local target = dir > 0 and s.starts[#s.starts] - 1 or s.starts[1] - 1
  for i = 1, #s.starts do
    local header = s.starts[dir > 0 and i or #s.starts + 1 - i] - 1
    if (dir > 0 and header > row) or (dir < 0 and header < row) then
      target = header
      break
    end
  end
  vim.api.nvim_win_set_cursor(win, { target, 0 })
end

--- Insert the draft under the cursor into the source buffer, then close the panel.
---@return boolean accepted
function M.accept()
  local s = M.state
  local i = current()
  if not s or not i or not s.items[i] then
    return false
  end
  if not vim.api.nvim_buf_is_valid(s.src) then
    vim.notify('pie panel: the source buffer is gone', vim.log.levels.WARN)
    return false
  end
  local now = vim.api.nvim_buf_get_lines(s.src, s.row - 1, s.row, false)[1]
  if now ~= s.line then
    vim.notify('pie panel: line ' .. s.row .. ' changed since the panel opened; press gr to ask again', vim.log.levels.WARN)
    return false
  end
  local item = s.items[i]
  local lines = vim.split(item.insertText, '\n', { plain = true })
  vim.api.nvim_buf_set_text(s.src, s.row - 1, s.col, s.row - 1, s.col, lines)
  require('pie').report_accept(s.client_id, item.command, 'full')
  M.close()
  if vim.api.nvim_win_is_valid(s.win) then
    vim.api.nvim_set_current_win(s.win)
    local last = lines[#lines]
    local col = #lines == 1 and s.col + #last or #last
    vim.api.nvim_win_set_cursor(s.win, { s.row + #lines - 1, col })
  end
  return true
end

--- Ask again for the same position (if its line is unchanged).
function M.refresh()
  local s = M.state
  if not s or not vim.api.nvim_win_is_valid(s.win) then
    return
  end
  vim.api.nvim_set_current_win(s.win)
  vim.api.nvim_win_set_cursor(s.win, { s.row, s.col })
  M.open()
end

--- Close the panel window (the buffer is kept for the next panel).
function M.close()
  local s = M.state
  local win = s and panel_window(s.buf)
  if win and #vim.api.nvim_list_wins() > 1 then
    vim.api.nvim_win_close(win, true)
  end
end

return M
