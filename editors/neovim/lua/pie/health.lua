--- :checkhealth pie
local M = {}

local health = vim.health

local function run(cmd, timeout)
  local ok, obj = pcall(function()
    return vim.system(cmd, { text = true }):wait(timeout)
  end)
  if not ok then
    return nil, tostring(obj)
  end
  return obj
end

function M.check()
  local pie = require('pie')
  health.start('Neovim')
  local v = vim.version()
  local version = ('%d.%d.%d'):format(v.major, v.minor, v.patch)
  if vim.fn.has('nvim-0.10') == 0 then
    health.error('Neovim ' .. version .. ' is too old: pie needs 0.10 or newer')
  elseif pie.has_native() then
    health.ok('Neovim ' .. version .. ': native inline completion (vim.lsp.inline_completion)')
  else
    health.ok('Neovim ' .. version .. ": the plugin's own extmark ghost text (0.12 has native inline completion)")
  end
  health.info('ghost text path in use: ' .. pie.mode())
  local maps = pie.options.keymaps
  local panel_key = maps and maps.panel or nil
  health.info(
    'suggestions panel: :PiePanel'
      .. (panel_key and (' or ' .. panel_key .. ' in insert mode') or ' (no keymap set)')
      .. (vim.fn.exists(':PiePanel') == 2 and '' or ' (not set up: call require("pie").setup())')
  )

  health.start('pie-lsp command')
  local cmd = pie.options.cmd or pie.find_cmd(vim.fs.root(0, pie.options.root_markers))
  local exe = cmd[1]
  -- `{ python, "-m", "lsp_server", ... }` or `{ "/path/to/pie-lsp", ... }`: the base command.
  local base = cmd[2] == '-m' and { cmd[1], cmd[2], cmd[3] } or { exe }
  local function with(...)
    return vim.list_extend(vim.deepcopy(base), { ... })
  end
  if vim.fn.executable(exe) ~= 1 then
    health.error(('`%s` is not executable'):format(exe), {
      'Install pie-lsp (`make setup` in its repository creates .venv/bin/pie-lsp)',
      'or set `cmd = { "/path/to/.venv/bin/pie-lsp" }` in require("pie").setup()',
    })
    return
  end
  local path = vim.fn.exepath(exe)
  local out, err = run(with('--version'), 20000)
  if not out or out.code ~= 0 then
    health.error(('`%s --version` failed: %s'):format(exe, err or (out and out.stderr) or '?'))
    return
  end
  health.ok(('%s (%s)'):format(vim.trim(out.stdout), path))

  health.start('Python environment')
  local python = cmd[2] == '-m' and path or (vim.fn.readfile(path, '', 1)[1] or ''):match('^#!%s*(%S+python%S*)')
  if not python then
    health.warn('could not find the interpreter of ' .. path .. ' (not a Python entry script?)')
  else
    local probe = 'import sys, torch, transformers, pygls; '
      .. 'print(sys.version.split()[0], torch.__version__, transformers.__version__, '
      .. "'cuda' if torch.cuda.is_available() else ('mps' if torch.backends.mps.is_available() else 'cpu'))"
    local res = run({ python, '-c', probe }, 60000)
    if not res or res.code ~= 0 then
      health.error('the interpreter cannot import torch/transformers/pygls: ' .. (res and res.stderr or '?'))
    else
      local py, torch, tf, device = unpack(vim.split(vim.trim(res.stdout), ' '))
      health.ok(('Python %s, torch %s, transformers %s, best device: %s (%s)'):format(py, torch, tf, device, python))
    end
  end

  health.start('Model')
  local model = (pie.options.settings or {}).model or 'default'
  local res = run(with('models', 'list'), 60000)
  if not res or res.code ~= 0 then
    health.error('`pie-lsp models list` failed: ' .. (res and res.stderr or '?'))
  else
    local found = false
    for line in vim.gsplit(res.stdout, '\n', { plain = true }) do
      local name, state = line:match('^(%S+)%s+(%S+)')
      if name == model then
        found = true
        if state == 'ready' then
          health.ok(('model %q is ready'):format(model))
        else
          health.warn(('model %q: %s'):format(model, vim.trim(line)), {
            'run `pie-lsp models prepare default` (or `models install <name>`) once',
          })
        end
      end
    end
    if not found then
      health.info(('model %q is a hub id, a directory or a .gguf: checked when the server loads it'):format(model))
    end
  end

  health.start('Server')
  local clients = pie.clients()
  if #clients == 0 then
    health.info('pie-lsp is not running in this session (it starts when a buffer is opened)')
  else
    for _, c in ipairs(clients) do
      health.ok(('running: client %d, position encoding %s'):format(c.id, c.offset_encoding))
    end
  end
end

return M
