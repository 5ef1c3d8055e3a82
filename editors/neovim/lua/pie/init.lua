--- pie-lsp for Neovim: starts the server, shows its inline completions as ghost text.
---
--- Neovim 0.12+: native inline completion (`vim.lsp.inline_completion`).
--- Neovim 0.10/0.11 (or `ghost_text = "extmark"`): this plugin's own extmark ghost text.
local M = {}

local uv = vim.uv or vim.loop

---@class pie.Keymaps
---@field accept string|false
---@field accept_word string|false
---@field accept_line string|false
---@field dismiss string|false
---@field next string|false
---@field prev string|false
---@field invoke string|false
---@field panel string|false

---@class pie.Options
---@field cmd? string[] Server command; default: the first `pie-lsp` found (see `find_cmd`)
---@field filetypes? string[] Filetypes to attach to; nil: every normal buffer
---@field root_markers? string[]
---@field settings? table Server configuration, sent as `initializationOptions`
---@field ghost_text? "auto"|"native"|"extmark"
---@field debounce_ms? integer Extmark path: quiet time before a request (native: Neovim's own 200 ms)
---@field keymaps? pie.Keymaps|false

---@type pie.Options
M.defaults = {
  cmd = nil,
  filetypes = nil,
  root_markers = { '.git', 'pyproject.toml', 'setup.py', 'package.json', 'Cargo.toml', 'go.mod' },
  settings = {},
  ghost_text = 'auto',
  debounce_ms = 150,
  keymaps = {
    accept = '<Tab>',
    accept_word = '<M-w>',
    accept_line = '<M-l>',
    dismiss = '<C-]>',
    next = '<M-]>',
    prev = '<M-[>',
    invoke = '<M-\\>',
    panel = '<M-CR>',
  },
}

M.name = 'pie'
---@type pie.Options
M.options = vim.deepcopy(M.defaults)
M.last_latency_ms = nil ---@type number?

--- Whether this Neovim has native LSP inline completion.
function M.has_native()
  return vim.lsp.inline_completion ~= nil and vim.fn.has('nvim-0.12') == 1
end

--- Which ghost text path is in use: "native" or "extmark".
function M.mode()
  local want = M.options.ghost_text
  if want == 'extmark' or (want == 'auto' and not M.has_native()) then
    return 'extmark'
  end
  if not M.has_native() then
    return 'extmark' -- asked for native on an older Neovim: fall back
  end
  return 'native'
end

--- The server command: `pie-lsp` from a project `.venv`, then from PATH.
---@param root? string
---@return string[]
function M.find_cmd(root)
  local candidates = {}
  if root then
    table.insert(candidates, root .. '/.venv/bin/pie-lsp')
  end
  table.insert(candidates, vim.fn.getcwd() .. '/.venv/bin/pie-lsp')
  for _, path in ipairs(candidates) do
    if vim.fn.executable(path) == 1 then
      return { path }
    end
  end
  return { 'pie-lsp' }
end

--- The pie-lsp clients (optionally of one buffer).
---@param bufnr? integer
---@return vim.lsp.Client[]
function M.clients(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr })
end

--- Send a request to a client on 0.10 (dot call) and 0.11+ (method call) alike.
---@return boolean, integer?
function M.request(client, method, params, handler, bufnr)
  if vim.fn.has('nvim-0.11') == 1 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

--- Report an accepted (or partly accepted) suggestion to the server (`pie.accept`).
---@param client_id integer
---@param command? lsp.Command the item's command
---@param kind? "full"|"word"|"line"
---@param chars? integer
function M.report_accept(client_id, command, kind, chars)
  local client = vim.lsp.get_client_by_id(client_id)
  if not client or not command or command.command ~= 'pie.accept' then
    return
  end
  local arg = vim.deepcopy((command.arguments or {})[1] or {})
  arg.kind = kind or 'full'
  arg.chars = chars
  M.request(client, 'workspace/executeCommand', { command = 'pie.accept', arguments = { arg } }, function() end)
end

--- The part of `text` to insert for a partial accept: the next word or the rest of the line.
---@param text string what is left of the suggestion
---@param kind "word"|"line"
---@return string
function M.partial(text, kind)
  if kind == 'line' then
    local nl = text:find('\n', 1, true)
    if nl == 1 then
      -- At the end of a line: take the newline and the next line.
      local second = text:find('\n', 2, true)
      return second and text:sub(1, second - 1) or text
    end
    return nl and text:sub(1, nl - 1) or text
  end
  local word = text:match('^%s*[%w_]+') or text:match('^%s*[^%w_%s]+') or text:match('^%s+')
  return word or text
end

--- Insert text at the cursor (insert mode), moving the cursor after it.
---@param text string
function M.insert_at_cursor(text)
  local win = vim.api.nvim_get_current_win()
  local buf = vim.api.nvim_win_get_buf(win)
  local row, col = unpack(vim.api.nvim_win_get_cursor(win))
  local lines = vim.split(text, '\n', { plain = true })
  vim.api.nvim_buf_set_text(buf, row - 1, col, row - 1, col, lines)
  local last = #lines == 1 and col + #lines[1] or #lines[#lines]
  vim.api.nvim_win_set_cursor(win, { row + #lines - 1, last })
end

--- Text typed since a suggestion was requested at `start` (same line only), or nil when
--- the cursor left that line or moved before `start`.
---@param bufnr integer
---@param start_row integer 0-based
---@param start_col integer 0-based byte column
---@return string?
function M.typed_since(bufnr, start_row, start_col)
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  if row - 1 ~= start_row or col < start_col then
    return nil
  end
  local line = vim.api.nvim_buf_get_lines(bufnr, start_row, start_row + 1, true)[1] or ''
  return line:sub(start_col + 1, col)
end

----- Native path (0.12+) -----

local native = {}

--- The native completor of a buffer (Neovim internals; nil when they change).
local function native_completor(bufnr)
  local ok, cap = pcall(require, 'vim.lsp._capability')
  if not ok or type(cap) ~= 'table' or not cap.all then
    return nil
  end
  local class = cap.all['inline_completion']
  return class and class.active and class.active[bufnr or vim.api.nvim_get_current_buf()] or nil
end

function native.visible()
  local c = native_completor()
  return c ~= nil and c.current ~= nil
end

function native.accept()
  -- Neovim inserts the item, then runs its command: the server counts the accept.
  return vim.lsp.inline_completion.get()
end

function native.accept_partial(kind)
  local c = native_completor()
  local item = c and c.current
  if not item then
    return false
  end
  local text = type(item.insert_text) == 'string' and item.insert_text or item.insert_text.value
  local start_row, start_col = vim.api.nvim_win_get_cursor(0)[1] - 1, vim.api.nvim_win_get_cursor(0)[2]
  if item.range then
    start_row, start_col = item.range.start.row, item.range.start.col
  end
  local typed = M.typed_since(vim.api.nvim_get_current_buf(), start_row, start_col) or ''
  if text:sub(1, #typed) ~= typed then
    return false
  end
  local rest = text:sub(#typed + 1)
  if rest == '' then
    return false
  end
  return vim.lsp.inline_completion.get({
    on_accept = function(it)
      local part = M.partial(rest, kind)
      M.insert_at_cursor(part)
      if part == rest then
        M.report_accept(it.client_id, it.command, 'full', #text)
      else
        M.report_accept(it.client_id, it.command, kind, #part)
      end
    end,
  })
end

function native.dismiss()
  local bufnr = vim.api.nvim_get_current_buf()
  if not native.visible() then
    return false
  end
  -- Re-enabling drops the shown item and pending requests; typing asks again.
  vim.lsp.inline_completion.enable(false, { bufnr = bufnr })
  vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  return true
end

function native.invoke()
  local c = native_completor()
  if c and c.request then
    c:request(vim.lsp.protocol.InlineCompletionTriggerKind.Invoked)
    return true
  end
  return false
end

function native.cycle(count)
  local c = native_completor()
  if c and c.current and c.count_items and c:count_items() > 1 then
    vim.lsp.inline_completion.select({ count = count })
    return true
  end
  return native.invoke() -- one suggestion so far: ask for alternatives
end

----- Dispatch -----

local function path()
  return M.mode() == 'native' and native or require('pie.ghost')
end

--- Whether a suggestion is shown in the current buffer.
function M.visible()
  return path().visible()
end

--- Accept the whole suggestion. Returns false when none is shown.
function M.accept()
  return path().accept()
end

--- Accept the next word of the suggestion.
function M.accept_word()
  return path().accept_partial('word')
end

--- Accept the rest of the suggestion's current line.
function M.accept_line()
  return path().accept_partial('line')
end

--- Hide the suggestion.
function M.dismiss()
  return path().dismiss()
end

--- Ask for suggestions explicitly (several, to cycle through).
function M.invoke()
  return path().invoke()
end

--- Show the next (count > 0) or previous suggestion.
function M.cycle(count)
  return path().cycle(count)
end

----- Keymaps -----

local function termcodes(keys)
  return vim.api.nvim_replace_termcodes(keys, true, false, true)
end

local function set_keymaps(bufnr)
  local maps = M.options.keymaps
  if not maps then
    return
  end
  local function map(lhs, fn, desc, fallback)
    if not lhs then
      return
    end
    vim.keymap.set('i', lhs, function()
      if not fn() and fallback then
        vim.api.nvim_feedkeys(termcodes(lhs), 'n', false)
      end
    end, { buffer = bufnr, desc = 'pie: ' .. desc, silent = true })
  end
  map(maps.accept, M.accept, 'accept suggestion', true)
  map(maps.accept_word, M.accept_word, 'accept a word', true)
  map(maps.accept_line, M.accept_line, 'accept a line', true)
  map(maps.dismiss, M.dismiss, 'dismiss suggestion', true)
  map(maps.next, function()
    return M.cycle(1)
  end, 'next suggestion', false)
  map(maps.prev, function()
    return M.cycle(-1)
  end, 'previous suggestion', false)
  map(maps.invoke, M.invoke, 'ask for suggestions', false)
  map(maps.panel, function()
    require('pie.panel').open()
    vim.schedule(function()
      vim.cmd('stopinsert')
    end)
    return true
  end, 'open the suggestions panel', false)
end

----- Status and restart -----

--- Ask the server for `pie/stats`; `callback(err, stats)`.
function M.stats(callback)
  local client = M.clients(vim.api.nvim_get_current_buf())[1] or M.clients()[1]
  if not client then
    callback('pie-lsp is not running', nil)
    return
  end
  M.request(client, 'pie/stats', nil, function(err, result)
    callback(err and (err.message or vim.inspect(err)) or nil, result)
  end)
end

--- `pie/stats` as lines for humans.
---@param s table
---@return string[]
function M.format_stats(s)
  local model, t = s.model or {}, s.totals or {}
  local lines = {
    ('pie-lsp %s · model %s (%s) on %s %s%s · %s'):format(
      s.server and s.server.version or '?',
      tostring(model.id),
      tostring(model.status),
      tostring(model.device),
      tostring(model.dtype),
      (model.quantize and model.quantize ~= 'none') and (' ' .. model.quantize) or '',
      tostring(model.promptFormat or '')
    ),
  }
  if model.error then
    table.insert(lines, 'model error: ' .. tostring(model.error))
  end
  local completions = t.completions or 0
  table.insert(
    lines,
    ('completions %d · prefill %.0f ms avg · decode %.0f ms avg · last latency %s'):format(
      completions,
      completions > 0 and (t.prefillMs or 0) / completions or 0,
      completions > 0 and (t.decodeMs or 0) / completions or 0,
      M.last_latency_ms and ('%.0f ms'):format(M.last_latency_ms) or '-'
    )
  )
  table.insert(
    lines,
    ('suggested %d · accepted %d · partly accepted %d · cancelled %d · errors %d'):format(
      t.suggested or 0,
      t.accepted or 0,
      t.partiallyAccepted or 0,
      t.cancelled or 0,
      t.errors or 0
    )
  )
  table.insert(
    lines,
    ('cache: %.1f MB · %d tokens re-encoded · %d refreshes · %d evictions'):format(
      (t.cacheBytes or 0) / 1048576,
      t.tokensReencoded or 0,
      t.refreshes or 0,
      t.evictions or 0
    )
  )
  for _, d in ipairs(s.documents or {}) do
    table.insert(
      lines,
      ('  %s: %d tokens, %d stale (%s)'):format(vim.fn.fnamemodify(vim.uri_to_fname(d.uri), ':~:.'), d.tokens, d.staleTokens, d.strategy)
    )
  end
  return lines
end

--- :PieStatus
function M.status()
  M.stats(function(err, s)
    if err then
      vim.notify('pie: ' .. err, vim.log.levels.WARN)
      return
    end
    vim.notify(table.concat(M.format_stats(s), '\n'), vim.log.levels.INFO)
  end)
end

--- :PieRestart: stop the server and start it again for the buffers it served.
function M.restart()
  local buffers = {}
  for _, client in ipairs(M.clients()) do
    for bufnr in pairs(client.attached_buffers or {}) do
      buffers[bufnr] = true
    end
    vim.lsp.stop_client(client.id, true)
  end
  vim.wait(5000, function()
    return #M.clients() == 0
  end, 20)
  for bufnr in pairs(buffers) do
    if vim.api.nvim_buf_is_valid(bufnr) then
      M.start(bufnr)
    end
  end
end

----- Starting the server -----

--- A copy of `settings` that encodes as a JSON object, also when it is empty: Neovim
--- encodes an empty Lua table as `[]`, which the server rejects ("options must be an
--- object"). Empty sub-tables become objects too; non-empty lists stay lists.
---@param settings? table
---@return table
local function as_object(settings)
  if type(settings) ~= 'table' or next(settings) == nil then
    return vim.empty_dict()
  end
  local out = {}
  for key, value in pairs(settings) do
    out[key] = type(value) == 'table' and as_object(value) or value
  end
  return out
end

--- The LSP client configuration.
---@param root? string
function M.client_config(root)
  local opts = M.options
  return {
    name = M.name,
    cmd = opts.cmd or M.find_cmd(root),
    root_dir = root,
    init_options = as_object(opts.settings),
    handlers = M.handlers,
  }
end

--- The client's handlers for what the server sends.
M.handlers = {
  -- Our own notification, sent after every synced edit: nothing to do.
  ['$/pie/documentSynced'] = function() end,
  -- The panel's partial results; work-done progress (the model's load) as usual.
  ['$/progress'] = function(err, result, ctx, config)
    if require('pie.panel').on_progress(result) then
      return
    end
    return vim.lsp.handlers['$/progress'](err, result, ctx, config)
  end,
}

--- Whether a buffer gets the server: a file with a filetype (one of `filetypes` if set).
local function wanted(bufnr)
  if vim.bo[bufnr].buftype ~= '' or vim.bo[bufnr].filetype == '' then
    return false
  end
  local fts = M.options.filetypes
  return fts == nil or vim.tbl_contains(fts, vim.bo[bufnr].filetype)
end

--- The workspace root of a buffer: its root marker's folder, else the current directory
--- (one server for everything outside projects).
local function root_of(bufnr)
  return vim.fs.root(bufnr, M.options.root_markers) or vim.fn.getcwd()
end

--- Start (or reuse) the server for a buffer.
---@param bufnr integer
function M.start(bufnr)
  if not wanted(bufnr) then
    return
  end
  local config = M.client_config(root_of(bufnr))
  if vim.lsp.config and vim.lsp.enable then
    config = vim.tbl_deep_extend('force', vim.lsp.config[M.name] or {}, config)
  end
  vim.lsp.start(config, { bufnr = bufnr })
end

local function on_attach(bufnr, client)
  if M.mode() == 'native' then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  else
    require('pie.ghost').attach(bufnr, client.id, M.options.debounce_ms)
  end
  set_keymaps(bufnr)
end

--- Configure and start. Options: see `M.defaults` and `:h pie`.
---@param opts? pie.Options
function M.setup(opts)
  M.options = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  if opts and opts.keymaps == false then
    M.options.keymaps = false
  end
  local group = vim.api.nvim_create_augroup('pie', { clear = true })
  vim.api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == M.name then
        on_attach(ev.buf, client)
      end
    end,
  })
  -- Time every inline completion round trip (for :PieStatus and the benchmark).
  local sent = {}
  vim.api.nvim_create_autocmd('LspRequest', {
    group = group,
    callback = function(ev)
      local r = ev.data and ev.data.request
      if not r or r.method ~= 'textDocument/inlineCompletion' then
        return
      end
      if r.type == 'pending' then
        sent[ev.data.request_id] = uv.hrtime()
      elseif sent[ev.data.request_id] then
        if r.type == 'complete' then
          M.last_latency_ms = (uv.hrtime() - sent[ev.data.request_id]) / 1e6
        end
        sent[ev.data.request_id] = nil
      end
    end,
  })
  if vim.lsp.config and vim.lsp.enable then
    -- 0.11+: the standard way; `:checkhealth vim.lsp` lists it.
    vim.lsp.config(M.name, {
      cmd = M.options.cmd or function(dispatchers, config)
        return vim.lsp.rpc.start(M.find_cmd(config and config.root_dir), dispatchers)
      end,
      filetypes = M.options.filetypes,
      root_dir = function(bufnr, on_dir)
        if wanted(bufnr) then
          on_dir(root_of(bufnr))
        end
      end,
      init_options = as_object(M.options.settings),
      handlers = M.handlers,
    })
    vim.lsp.enable(M.name)
  else
    vim.api.nvim_create_autocmd('FileType', {
      group = group,
      callback = function(ev)
        M.start(ev.buf)
      end,
    })
    for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
      if vim.api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype ~= '' then
        M.start(bufnr)
      end
    end
  end
  vim.api.nvim_create_user_command('PieStatus', M.status, { desc = 'pie-lsp: model, device, cache figures' })
  vim.api.nvim_create_user_command('PieRestart', M.restart, { desc = 'pie-lsp: restart the server' })
  vim.api.nvim_create_user_command('PiePanel', function(cmd)
    require('pie.panel').open({ count = tonumber(cmd.args) })
  end, { nargs = '?', desc = 'pie-lsp: a panel of suggestions for the cursor (optional count, 1-10)' })
end

--- Send new server settings (`workspace/didChangeConfiguration`).
---@param settings table
function M.update_settings(settings)
  M.options.settings = vim.tbl_deep_extend('force', M.options.settings or {}, settings)
  for _, client in ipairs(M.clients()) do
    local params = { settings = { pie = as_object(M.options.settings) } }
    if vim.fn.has('nvim-0.11') == 1 then
      client:notify('workspace/didChangeConfiguration', params)
    else
      client.notify('workspace/didChangeConfiguration', params)
    end
  end
end

return M
