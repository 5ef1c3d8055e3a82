--- Extmark ghost text: inline completion for Neovim 0.10/0.11 (or `ghost_text = "extmark"`).
---
--- Requests `textDocument/inlineCompletion` after `debounce_ms` of quiet in insert mode,
--- shows the first line inline at the cursor and the rest as virtual lines, and keeps
--- showing it while the user types characters that match it.
local M = {}

local api = vim.api
local uv = vim.uv or vim.loop
M.ns = api.nvim_create_namespace('pie.ghost')

local Automatic, Invoked = 2, 1

---@class pie.GhostState
---@field client_id integer
---@field debounce integer
---@field timer? userdata
---@field items? lsp.InlineCompletionItem[]
---@field index integer
---@field row integer 0-based row the items were requested at
---@field col integer 0-based byte column the items were requested at
---@field request_id? integer
---@field cycle_after? integer after an invoked request, show this item

---@type table<integer, pie.GhostState>
M.state = {}

local function text_of(item)
  return type(item.insertText) == 'string' and item.insertText or item.insertText.value
end

local function pie()
  return require('pie')
end

local function current(bufnr)
  local st = M.state[bufnr or api.nvim_get_current_buf()]
  if not st or not st.items or not st.items[st.index] then
    return nil, st
  end
  return st.items[st.index], st
end

--- What is left of the shown suggestion after the text typed since it was requested.
local function remaining(bufnr)
  local item, st = current(bufnr)
  if not item then
    return nil, st
  end
  local typed = pie().typed_since(bufnr, st.row, st.col)
  local text = text_of(item)
  if typed == nil or text:sub(1, #typed) ~= typed then
    return nil, st
  end
  return text:sub(#typed + 1), st, item
end

function M.hide(bufnr)
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

--- Draw the current suggestion (what is left of it) at the cursor.
function M.render(bufnr)
  M.hide(bufnr)
  local rest, st = remaining(bufnr)
  if not rest or rest == '' or api.nvim_get_current_buf() ~= bufnr then
    return false
  end
  local lines = vim.split(rest, '\n', { plain = true })
  local row, col = unpack(api.nvim_win_get_cursor(0))
  local hint = #st.items > 1 and (' (%d/%d)'):format(st.index, #st.items) or nil
  local virt_lines = {}
  for i = 2, #lines do
    table.insert(virt_lines, { { lines[i], 'Comment' } })
  end
  if hint then
    local last = #virt_lines > 0 and virt_lines[#virt_lines] or nil
    if last then
      table.insert(last, { hint, 'NonText' })
    end
  end
  local first = { { lines[1], 'Comment' } }
  if hint and #virt_lines == 0 then
    table.insert(first, { hint, 'NonText' })
  end
  api.nvim_buf_set_extmark(bufnr, M.ns, row - 1, col, {
    virt_text = first,
    virt_text_pos = 'inline',
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = 'combine',
  })
  return true
end

local function stop_timer(st)
  if st.timer then
    st.timer:stop()
    if not st.timer:is_closing() then
      st.timer:close()
    end
    st.timer = nil
  end
end

local function cancel(st)
  local client = vim.lsp.get_client_by_id(st.client_id)
  if client and st.request_id then
    if vim.fn.has('nvim-0.11') == 1 then
      client:cancel_request(st.request_id)
    else
      client.cancel_request(st.request_id)
    end
  end
  st.request_id = nil
end

--- Send a request now.
---@param bufnr integer
---@param kind integer trigger kind
function M.request(bufnr, kind)
  local st = M.state[bufnr]
  local client = st and vim.lsp.get_client_by_id(st.client_id)
  if not client or api.nvim_get_current_buf() ~= bufnr then
    return false
  end
  cancel(st)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  params.context = { triggerKind = kind }
  local row, col = unpack(api.nvim_win_get_cursor(0))
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local ok, id
  ok, id = pie().request(client, 'textDocument/inlineCompletion', params, function(err, result)
    if st.request_id == id then
      st.request_id = nil
    end
    if err or not result then
      return
    end
    -- Stale answer: the buffer or the cursor moved on while it was computed.
    local r, c = unpack(api.nvim_win_get_cursor(0))
    if api.nvim_buf_get_changedtick(bufnr) ~= tick or r ~= row or c ~= col then
      return
    end
    local items = result.items or result
    st.items, st.row, st.col = items, row - 1, col
    local want = st.cycle_after or 1 -- 0: the last one (cycling backwards)
    st.index = math.max(1, math.min(want == 0 and #items or want, #items))
    st.cycle_after = nil
    M.render(bufnr)
  end, bufnr)
  st.request_id = ok and id or nil
  return ok
end

--- Typing: keep showing a suggestion the user types through, else ask again after a pause.
function M.on_change(bufnr)
  local st = M.state[bufnr]
  if not st then
    return
  end
  if not M.render(bufnr) then
    st.items = nil
  end
  stop_timer(st)
  st.timer = uv.new_timer()
  st.timer:start(
    st.debounce,
    0,
    vim.schedule_wrap(function()
      stop_timer(st)
      if api.nvim_get_mode().mode:sub(1, 1) == 'i' then
        M.request(bufnr, Automatic)
      end
    end)
  )
end

function M.clear(bufnr)
  local st = M.state[bufnr]
  if st then
    stop_timer(st)
    cancel(st)
    st.items = nil
  end
  M.hide(bufnr)
end

---@param bufnr integer
---@param client_id integer
---@param debounce_ms integer
function M.attach(bufnr, client_id, debounce_ms)
  if M.state[bufnr] then
    M.state[bufnr].client_id = client_id
    return
  end
  M.state[bufnr] = { client_id = client_id, debounce = debounce_ms or 150, index = 1, row = 0, col = 0 }
  local group = api.nvim_create_augroup('pie.ghost.' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'InsertEnter', 'TextChangedI', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.on_change(bufnr)
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.clear(bufnr)
    end,
  })
  api.nvim_create_autocmd('BufUnload', {
    group = group,
    buffer = bufnr,
    callback = function()
      M.clear(bufnr)
      M.state[bufnr] = nil
      pcall(api.nvim_del_augroup_by_id, group)
    end,
  })
end

----- The actions the keymaps call -----

function M.visible()
  local rest = remaining(api.nvim_get_current_buf())
  return rest ~= nil and rest ~= ''
end

local function insert(bufnr, part, st, item, kind, total)
  M.clear(bufnr)
  pie().insert_at_cursor(part)
  pie().report_accept(st.client_id, item.command, kind, kind == 'full' and total or #part)
end

function M.accept()
  local bufnr = api.nvim_get_current_buf()
  local rest, st, item = remaining(bufnr)
  if not rest or rest == '' then
    return false
  end
  insert(bufnr, rest, st, item, 'full', #text_of(item))
  return true
end

---@param kind "word"|"line"
function M.accept_partial(kind)
  local bufnr = api.nvim_get_current_buf()
  local rest, st, item = remaining(bufnr)
  if not rest or rest == '' then
    return false
  end
  local part = pie().partial(rest, kind)
  local full = part == rest
  local keep = st.items
  insert(bufnr, part, st, item, full and 'full' or kind, #text_of(item))
  if not full then
    -- Keep showing the rest: the suggestion still starts where it was requested.
    st.items = keep
    M.render(bufnr)
  end
  return true
end

function M.dismiss()
  local bufnr = api.nvim_get_current_buf()
  if not M.visible() then
    return false
  end
  M.clear(bufnr)
  return true
end

function M.invoke()
  return M.request(api.nvim_get_current_buf(), Invoked)
end

function M.cycle(count)
  local bufnr = api.nvim_get_current_buf()
  local item, st = current(bufnr)
  if item and #st.items > 1 then
    st.index = (st.index - 1 + count) % #st.items + 1
    M.render(bufnr)
    return true
  end
  if st then
    st.cycle_after = count > 0 and 2 or 0
  end
  return M.request(bufnr, Invoked)
end

return M
