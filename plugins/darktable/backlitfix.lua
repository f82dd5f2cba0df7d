--[[
  backlitfix.lua - fix backlit photos from darktable's lighttable with the backlitfix CLI

  Copyright (C) 2026 the backlitfix authors

  Permission is hereby granted, free of charge, to any person obtaining a copy of this software
  and associated documentation files, to deal in the software without restriction (MIT licence,
  the same as backlitfix). The software is provided "as is", without warranty of any kind.
]]

--[[
  backlitfix

  Run backlitfix on the selected images: it brightens a subject that is dark against a bright
  sky or window and leaves the background alone. Each result is written next to its original
  (<name>_backlitfix.<ext>; RAW files become 16-bit TIFF), imported, grouped with the original,
  and given the original's tags, rating and colour labels. Images whose result already exists
  are skipped.

  ADDITIONAL SOFTWARE NEEDED FOR THIS SCRIPT
  * backlitfix (pip install backlitfix); set its full path in preferences > lua options when
    darktable does not see it on PATH (macOS apps started from the Finder never do).

  USAGE
  * copy this file to <darktable config>/lua/contrib/backlitfix.lua (or run
    `backlitfix plugins install darktable`), then start it in script_manager, or add
    require "contrib/backlitfix"
    to luarc
  * preferences > lua options: backlitfix executable, model (empty = the default model),
    strength (auto: as much as each photo's light calls for, well-lit photos left alone and a
    burst given one look; or fixed: 0 = original, 1 = the model's correction), auto's lean
    (negative leaves more photos alone, positive corrects more) and output format
  * select images in the lighttable, then "fix backlight" in the "actions on selection" module,
    or bind a key to "backlitfix: fix selected images" in preferences > shortcuts > lua
  * the original file is corrected, not darktable's edit of it

  BUGS, COMMENTS, SUGGESTIONS
  * the backlitfix issue tracker; start darktable with -d lua to see this script's log

  CHANGES
  * 2026: first version (Lua API 7.0.0 and later; tested on darktable 4.2 = API 9.0.0)
]]

local dt = require "darktable"
local has_du, du = pcall(require, "lib/dtutils")  -- lua-scripts' helpers; optional

local MODULE = "backlitfix"
local MIN_API = "7.0.0"
local DEFAULT_SUFFIX = "_backlitfix"

-- The check lua-scripts uses; done by hand when lua-scripts itself is not installed.
if has_du then
  du.check_min_api_version(MIN_API, MODULE)
else
  local want = {}
  for n in MIN_API:gmatch("%d+") do want[#want + 1] = tonumber(n) end
  local have = { dt.configuration.api_version_major, dt.configuration.api_version_minor,
                 dt.configuration.api_version_patchlevel }
  for i = 1, 3 do
    if have[i] ~= want[i] then
      if have[i] < want[i] then
        error(string.format("%s: darktable Lua API %s or newer is required, this is %s",
                            MODULE, MIN_API, dt.configuration.api_version_string))
      end
      break
    end
  end
end

local gettext = dt.gettext
local function _(msg)
  return gettext.gettext(msg)
end

local script_data = {}

script_data.metadata = {
  name = "backlitfix",
  purpose = _("fix backlit photos with backlitfix"),
  author = "the backlitfix authors",
  help = "https://github.com/backlitfix/backlitfix/tree/main/plugins"
}

script_data.destroy = nil -- set below, once something is registered
script_data.destroy_method = nil -- nothing stays behind: the action and the event are removed
script_data.restart = nil
script_data.show = nil

local bf = {}  -- the script's functions, reachable as script_data.backlitfix (tests use them)

local IS_WINDOWS = dt.configuration.running_os == "windows"
local SEP = package.config:sub(1, 1)

------------------------------------------------------------------------------------------------
-- Quoting. dt.control.execute hands one string to /bin/sh -c (cmd.exe on Windows), so every
-- word, file names above all, is quoted; a name can never become shell syntax.
------------------------------------------------------------------------------------------------

-- POSIX sh: inside '...' nothing is special; a ' is written as '\'' (close, escaped ', reopen).
function bf.quote_posix(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- A line of a .bat file: "..." protects spaces, & | < > ^ ( ); % must still be doubled because
-- batch files expand %...% even inside quotes. " and newlines cannot occur in Windows file
-- names; in another value they are refused rather than guessed at.
function bf.quote_batch(s)
  if s:find('["\r\n]') then
    return nil, string.format("%s: cannot pass %q to a Windows command", MODULE, s)
  end
  return '"' .. s:gsub("%%", "%%%%") .. '"'
end

-- One command line from an argument list: the list is the only form callers build.
function bf.command_line(argv, windows)
  local words = {}
  for i, a in ipairs(argv) do
    local q, err
    if windows then q, err = bf.quote_batch(a) else q = bf.quote_posix(a) end
    if not q then return nil, err end
    words[i] = q
  end
  return table.concat(words, " ")
end

------------------------------------------------------------------------------------------------
-- Output names: the rule of backlitfix's planner for one folder and -o that folder, so the
-- script knows each result's name before the run (to skip it, then to import it).
------------------------------------------------------------------------------------------------

local FORMAT_OF = {
  [".jpg"] = "jpeg", [".jpeg"] = "jpeg", [".jpe"] = "jpeg", [".png"] = "png",
  [".tif"] = "tiff", [".tiff"] = "tiff", [".webp"] = "webp",
  [".heic"] = "heif", [".heif"] = "heif", [".hif"] = "heif",
}
for ext in ("dng cr2 cr3 crw nef nrw arw srf sr2 raf orf rw2 rwl pef ptx srw x3f 3fr fff iiq mos mrw erf "
            .. "kdc dcr mef raw"):gmatch("%S+") do
  FORMAT_OF["." .. ext] = "raw"
end
local OUTPUT_EXT = { jpeg = ".jpg", png = ".png", tiff = ".tif", webp = ".webp", heif = ".heic" }
local AUTO_OUTPUT = { jpeg = "jpeg", png = "png", tiff = "tiff", webp = "webp", heif = "heif", raw = "tiff" }

local function split_ext(name)
  local ext = name:match("(%.[^.]*)$")
  if not ext or #ext == #name then return name, "" end  -- ".jpg" alone is a hidden file, no extension
  return name:sub(1, #name - #ext), ext
end

-- The file name backlitfix gives the result of `filename` in format `fmt` (auto|jpeg|png|tiff),
-- or nil and a reason when backlitfix does not read that file type.
function bf.output_name(filename, fmt, suffix)
  local stem, ext = split_ext(filename)
  local src = FORMAT_OF[ext:lower()]
  if not src then return nil, "not a file type backlitfix reads" end
  local out = fmt == "auto" and AUTO_OUTPUT[src] or fmt
  return stem .. suffix .. (out == src and ext or OUTPUT_EXT[out])
end

------------------------------------------------------------------------------------------------
-- Running backlitfix
------------------------------------------------------------------------------------------------

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- Strength with a dot whatever the locale (string.format follows LC_NUMERIC); "auto" (or no
-- strength) lets backlitfix decide per photo, and gives the frames of a burst one look.
local function strength_arg(x)
  if type(x) ~= "number" then return "auto" end
  local n = math.floor(x * 100 + 0.5)
  return string.format("%d.%02d", n // 100, n % 100)
end

-- Auto strength's lean (--auto-bias), signed, with a dot whatever the locale.
local function bias_arg(x)
  return (x < 0 and "-" or "") .. strength_arg(math.abs(x))
end

-- The argument list for one folder's images; paths come after "--".
function bf.build_argv(opts, outdir, paths)
  local argv = { opts.executable ~= "" and opts.executable or "backlitfix", "run",
                 "--output", outdir, "--suffix", opts.suffix, "--format", opts.format,
                 "--strength", strength_arg(opts.strength), "--skip-existing" }
  if type(opts.strength) ~= "number" and type(opts.auto_bias) == "number" and opts.auto_bias ~= 0 then
    argv[#argv + 1] = "--auto-bias"
    argv[#argv + 1] = bias_arg(opts.auto_bias)
  end
  if opts.model ~= "" then
    argv[#argv + 1] = "--model"
    argv[#argv + 1] = opts.model
  end
  argv[#argv + 1] = "--"
  for _, p in ipairs(paths) do argv[#argv + 1] = p end
  return argv
end

local function temp_name(ext)
  return string.format("%s%sbacklitfix-%d-%06d%s", dt.configuration.tmp_dir, SEP, os.time(),
                       math.random(0, 999999), ext)
end

-- A shell command's exit code. In the GUI, dt.control.execute runs it as a background job so
-- darktable stays responsive (it returns a wait status on POSIX). darktable-cli does not wait for
-- such a job: it finishes its export and exits mid-run, so there the blocking os.execute is used.
local function shell(cmd)
  if dt.configuration.has_gui then
    local rc = dt.control.execute(cmd)
    if rc and rc >= 256 then rc = rc // 256 end
    return rc
  end
  local _, how, code = os.execute(cmd)
  return how == "exit" and code or 128 + (code or 0)
end

-- Run argv with stdout and stderr in log_path; returns backlitfix's exit code, or nil and a
-- message when the command could not even be built.
function bf.execute(argv, log_path)
  local rc
  if IS_WINDOWS then
    -- cmd.exe takes one quoted item only, so the command goes into a batch file (in UTF-8)
    local line, err = bf.command_line(argv, true)
    if not line then return nil, err end
    local log_q = assert(bf.quote_batch(log_path))
    local bat = temp_name(".bat")
    local f = assert(io.open(bat, "wb"))
    f:write("@echo off\r\nchcp 65001 >nul\r\n", line, " > ", log_q, " 2>&1\r\nexit /b %errorlevel%\r\n")
    f:close()
    rc = shell('"' .. bat .. '"')
    os.remove(bat)
  else
    local line = bf.command_line(argv, false)
    rc = shell(line .. " > " .. bf.quote_posix(log_path) .. " 2>&1")
  end
  return rc
end

local function read_lines(path)
  local lines = {}
  local f = io.open(path, "rb")
  if f then
    for line in f:lines() do lines[#lines + 1] = line end
    f:close()
  end
  return lines
end

------------------------------------------------------------------------------------------------
-- Bringing results back
------------------------------------------------------------------------------------------------

local LABELS = { "red", "yellow", "green", "blue", "purple" }

function bf.copy_metadata(from, to)
  for _, tag in ipairs(dt.tags.get_tags(from)) do
    if not tag.name:find("^darktable|") then  -- darktable's own tags describe the file, not the photo
      dt.tags.attach(tag, to)
    end
  end
  to.rating = from.rating
  for _, label in ipairs(LABELS) do to[label] = from[label] end
end

local function adopt(original, output_path)
  local new = dt.database.import(output_path)
  if not new then return nil end
  new:group_with(original.group_leader)
  bf.copy_metadata(original, new)
  return new
end

------------------------------------------------------------------------------------------------
-- Processing
------------------------------------------------------------------------------------------------

local function say(msg)
  dt.print_log(MODULE .. ": " .. msg)
  if dt.configuration.has_gui then dt.print(msg) end
end

-- Process `images` (darktable images) with `opts` = {executable, model, strength, format,
-- suffix}. Returns a summary: done, skipped, failed (counts) and imported = {{original, image,
-- path}, ...}.
function bf.process(images, opts)
  local summary = { done = 0, skipped = 0, failed = 0, imported = {} }
  local folders, order, claimed = {}, {}, {}
  for _, img in ipairs(images) do
    local name, why = bf.output_name(img.filename, opts.format, opts.suffix)
    local stem = split_ext(img.filename)
    if not name then
      summary.skipped = summary.skipped + 1
      dt.print_log(string.format("%s: skipped %s: %s", MODULE, img.filename, why))
    elseif stem:sub(-#opts.suffix) == opts.suffix then
      summary.skipped = summary.skipped + 1  -- already a backlitfix result
    else
      local out = img.path .. SEP .. name
      if exists(out) then
        summary.skipped = summary.skipped + 1
      elseif claimed[out:lower()] then
        -- two selected files would get one result name (e.g. a.jpg and a.JPG): the first wins
        summary.failed = summary.failed + 1
        say(string.format(_("backlitfix: %s: its result would be named like that of another selected image"),
                          img.filename))
      else
        claimed[out:lower()] = true
        if not folders[img.path] then
          folders[img.path] = {}
          order[#order + 1] = img.path
        end
        table.insert(folders[img.path], { image = img, input = img.path .. SEP .. img.filename, output = out })
      end
    end
  end

  local job
  if dt.configuration.has_gui and #order > 0 then
    job = dt.gui.create_job(_("backlitfix"), true)
  end
  for i, folder in ipairs(order) do
    local items = folders[folder]
    local paths = {}
    for k, item in ipairs(items) do paths[k] = item.input end
    local log_path = temp_name(".log")
    local rc, err = bf.execute(bf.build_argv(opts, folder, paths), log_path)
    for _, line in ipairs(read_lines(log_path)) do
      dt.print_log(MODULE .. ": " .. line)
      if line:find("^error:") or line:find("^backlitfix: error:") then say(line) end
    end
    os.remove(log_path)
    if not rc then say(err) end
    for _, item in ipairs(items) do
      local new = exists(item.output) and adopt(item.image, item.output)
      if new then
        summary.done = summary.done + 1
        table.insert(summary.imported, { original = item.image, image = new, path = item.output })
      else
        summary.failed = summary.failed + 1
      end
    end
    if rc == 127 then say(_("backlitfix: executable not found; set its path in preferences > lua options")) end
    if job then job.percent = i / #order end
  end
  if job then job.valid = false end
  say(string.format(_("backlitfix: %d fixed, %d skipped, %d failed"), summary.done, summary.skipped,
                    summary.failed))
  return summary
end

------------------------------------------------------------------------------------------------
-- Preferences and the lighttable action (GUI only: darktable-cli has neither)
------------------------------------------------------------------------------------------------

function bf.options_from_preferences()
  return {
    executable = dt.preferences.read(MODULE, "executable", "file"),
    model = dt.preferences.read(MODULE, "model", "string"),
    strength = dt.preferences.read(MODULE, "strength_mode", "enum") == "fixed"
      and dt.preferences.read(MODULE, "strength", "float") or "auto",
    auto_bias = dt.preferences.read(MODULE, "auto_bias", "float"),
    format = dt.preferences.read(MODULE, "format", "enum"),
    suffix = DEFAULT_SUFFIX,
  }
end

local function fix(images)
  if #images == 0 then
    dt.print(_("backlitfix: select images first"))
    return
  end
  bf.process(images, bf.options_from_preferences())
end

if dt.configuration.has_gui then
  dt.preferences.register(MODULE, "executable", "file", _("backlitfix: executable"),
    _("the backlitfix program; a full path when darktable does not find it on PATH"), "backlitfix")
  dt.preferences.register(MODULE, "model", "string", _("backlitfix: model"),
    _("a model name or a checkpoint path; empty = the default model"), "")
  dt.preferences.register(MODULE, "strength_mode", "enum", _("backlitfix: strength"),
    _("auto: each photo as much as its light calls for (well-lit ones are left alone, a burst gets one look); "
      .. "fixed: the strength below for every photo"), "auto", "auto", "fixed")
  dt.preferences.register(MODULE, "strength", "float", _("backlitfix: fixed strength"),
    _("with strength 'fixed': 0 = the original, 1 = the model's correction, up to 2"), 1.0, 0.0, 2.0, 0.05)
  dt.preferences.register(MODULE, "auto_bias", "float", _("backlitfix: auto lean"),
    _("with strength 'auto': -1 leaves more photos alone (well-lit ones almost never touched, backlit ones "
      .. "get less), +0.5 corrects more; 0 = as calibrated"), 0.0, -3.0, 3.0, 0.25)
  dt.preferences.register(MODULE, "format", "enum", _("backlitfix: output format"),
    _("auto keeps the photo's format (RAW becomes 16-bit TIFF)"), "auto", "auto", "tiff", "jpeg", "png")

  dt.gui.libs.image.register_action(MODULE .. "_fix", _("fix backlight"),
    function(event, images) fix(images) end, _("run backlitfix on the selected images"))
  dt.register_event(MODULE .. "_fix", "shortcut",
    function(event, shortcut) fix(dt.gui.action_images) end, _("backlitfix: fix selected images"))

  script_data.destroy = function()
    dt.gui.libs.image.destroy_action(MODULE .. "_fix")
    dt.destroy_event(MODULE .. "_fix", "shortcut")
  end
else
  script_data.destroy = function() end  -- darktable-cli: nothing was registered
end

script_data.backlitfix = bf

return script_data
