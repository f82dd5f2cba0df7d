import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from backlitfix import config as config_mod
from backlitfix.config import COMMAND_LINE, Config, ConfigError, config_keys, load_config, user_config_path

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Never read the developer's real user config."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APPDATA", str(tmp_path / "appdata"))


# ---- the shipped file --------------------------------------------------------------------------


def test_package_defaults_load_and_are_typed():
    cfg = load_config(user_config=None)
    assert isinstance(cfg, Config)
    assert cfg.mode == "fast" and cfg.device == "auto" and cfg.precision == "auto"
    assert cfg.model is None and cfg.jobs == 0
    assert cfg.strength == "auto" and cfg.burst.gap_seconds == 2.0  # issue 12: auto strength by default
    assert cfg.fast.guide_radius == 2 and cfg.fast.guide_eps == pytest.approx(0.001)
    assert cfg.exact.tile == 384
    assert cfg.input.recursive is False and cfg.input.max_pixels == 250_000_000
    assert cfg.output.dir is None and cfg.output.suffix == "" and cfg.output.format == "auto"
    assert cfg.output.jpeg_quality == 95 and cfg.output.overwrite is False


def test_config_is_frozen():
    cfg = load_config(user_config=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.mode = "exact"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.output.jpeg_quality = 1


def test_package_symlink_points_at_repo_config():
    import importlib.resources

    shipped = importlib.resources.files("backlitfix") / "config.yaml"
    assert shipped.read_text(encoding="utf-8") == REPO_CONFIG.read_text(encoding="utf-8")


def test_shipped_config_lists_exactly_the_schema_keys():
    data = yaml.safe_load(REPO_CONFIG.read_text(encoding="utf-8"))

    def flatten(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flatten(v, f"{prefix}{k}.")
            else:
                yield prefix + k

    assert sorted(flatten(data)) == sorted(config_keys())


def test_every_key_in_shipped_config_has_a_comment():
    key_line = re.compile(r"^(\s*)([A-Za-z_][\w]*)\s*:(.*)$")
    seen = []
    for line in REPO_CONFIG.read_text(encoding="utf-8").splitlines():
        m = key_line.match(line)
        if not m:
            continue
        rest = m.group(3)
        # strip a quoted scalar so a '#' inside quotes would not count
        value_and_comment = re.sub(r'"[^"]*"|\'[^\']*\'', '""', rest)
        assert "#" in value_and_comment, f"key without a comment: {line!r}"
        comment = value_and_comment.split("#", 1)[1].strip()
        assert len(comment) >= 8, f"comment too short to document anything: {line!r}"
        seen.append(m.group(2))
    leaves = {k.rsplit(".", 1)[-1] for k in config_keys()}
    assert leaves <= set(seen)


def test_choice_keys_document_their_allowed_values():
    text = REPO_CONFIG.read_text(encoding="utf-8")
    for key in ("device", "mode", "precision", "format"):
        line = next(l for l in text.splitlines() if re.match(rf"\s*{key}:", l))
        leaf = config_mod._LEAVES[next(k for k in config_keys() if k.rsplit(".", 1)[-1] == key)]
        comment = line.split("#", 1)[1]
        for choice in leaf.choices:
            assert choice in comment, (key, choice)


# ---- precedence --------------------------------------------------------------------------------


def test_precedence_defaults_user_file_flags(tmp_path):
    user = write(tmp_path / "user.yaml", "mode: exact\njobs: 3\nstrength: 0.5\noutput:\n  jpeg_quality: 80\n")
    cli_file = write(tmp_path / "cli.yaml", "jobs: 5\noutput:\n  jpeg_quality: 70\n")
    cfg = load_config(cli_file, {"output.jpeg_quality": 60, "mode": None}, user_config=user)
    assert cfg.device == "auto"  # default
    assert cfg.strength == 0.5  # user
    assert cfg.mode == "exact"  # user (the flag was None = not given)
    assert cfg.jobs == 5  # --config beats user
    assert cfg.output.jpeg_quality == 60  # flag beats everything
    assert cfg.output.format == "auto"  # sibling in a partially overridden section keeps its default


def test_default_user_config_location_is_read(tmp_path):
    write(tmp_path / "xdg" / "backlitfix" / "config.yaml", "mode: exact\n")
    assert load_config().mode == "exact"
    assert load_config(user_config=None).mode == "fast"


def test_missing_user_config_is_fine(tmp_path):
    assert load_config(user_config=tmp_path / "nope.yaml").mode == "fast"


def test_empty_config_file_changes_nothing(tmp_path):
    f = write(tmp_path / "c.yaml", "# nothing here\n")
    assert load_config(f, user_config=None) == load_config(user_config=None)


def test_output_dir_becomes_path(tmp_path):
    cfg = load_config(overrides={"output.dir": tmp_path / "out"}, user_config=None)
    assert cfg.output.dir == tmp_path / "out"
    cfg = load_config(write(tmp_path / "c.yaml", "output:\n  dir: ~/fixed\n"), user_config=None)
    assert cfg.output.dir == Path("~/fixed").expanduser()


def test_command_line_text_values_are_coerced_but_file_values_are_not(tmp_path):
    cfg = load_config(overrides={"jobs": "4", "input.recursive": "yes", "strength": "1.5"}, user_config=None)
    assert (cfg.jobs, cfg.input.recursive, cfg.strength) == (4, True, 1.5)
    with pytest.raises(ConfigError, match=r"jobs.*c\.yaml.*'4'.*integer"):
        load_config(write(tmp_path / "c.yaml", 'jobs: "4"\n'), user_config=None)


# ---- unknown keys ------------------------------------------------------------------------------


def test_unknown_nested_key_suggests(tmp_path):
    f = write(tmp_path / "c.yaml", "output:\n  jpeg_qualty: 90\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f, user_config=None)
    msg = str(ei.value)
    assert "output.jpeg_qualty" in msg and str(f) in msg
    assert "did you mean output.jpeg_quality?" in msg
    assert ei.value.key == "output.jpeg_qualty" and ei.value.source == str(f)


def test_unknown_top_level_key_in_wrong_section_suggests(tmp_path):
    f = write(tmp_path / "c.yaml", "tile: 256\n")
    with pytest.raises(ConfigError, match=r"unknown key tile .*did you mean exact\.tile\?"):
        load_config(f, user_config=None)


def test_unknown_key_in_user_config_names_that_file(tmp_path):
    user = write(tmp_path / "u.yaml", "modee: exact\n")
    with pytest.raises(ConfigError, match=re.escape(str(user)) + r".*did you mean mode\?"):
        load_config(user_config=user)


def test_unknown_override_key():
    with pytest.raises(ConfigError,
                       match=r"unknown key output\.fromat on the command line; did you mean output\.format"):
        load_config(overrides={"output.fromat": "png"}, user_config=None)


def test_duplicate_key_in_file(tmp_path):
    f = write(tmp_path / "c.yaml", "mode: fast\nmode: exact\n")
    with pytest.raises(ConfigError, match=r"twice"):
        load_config(f, user_config=None)


# ---- bad values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "yaml_text, key, allowed",
    [
        ("mode: exactt\n", "mode", "one of fast, exact"),  # not in the allowed set
        ("device: gpu\n", "device", "one of auto, cpu, cuda, mps"),
        ("strength: 2.5\n", "strength", "a number from 0 to 2"),  # out of range
        ("strength: -0.1\n", "strength", "a number from 0 to 2"),
        ("strength: .nan\n", "strength", "a number from 0 to 2"),
        ("strength: strong\n", "strength", "a number"),  # wrong type
        ("jobs: -1\n", "jobs", "an integer >= 0"),
        ("jobs: 2.5\n", "jobs", "an integer"),
        ("jobs: true\n", "jobs", "an integer"),  # bool is not an int here
        ("memory_budget_mb: -5\n", "memory_budget_mb", "an integer >= 0"),
        ("memory_budget_mb: 1.5GB\n", "memory_budget_mb", "an integer"),
        ("exact:\n  tile: 32\n", "exact.tile", "an integer >= 64"),
        ("fast:\n  guide_eps: 0\n", "fast.guide_eps", "a number > 0"),
        ("output:\n  jpeg_quality: 101\n", "output.jpeg_quality", "an integer from 1 to 100"),
        ("output:\n  jpeg_quality: 0\n", "output.jpeg_quality", "an integer from 1 to 100"),
        ("output:\n  overwrite: 1\n", "output.overwrite", "true or false"),
        ("output:\n  format: gif\n", "output.format", "one of auto, jpeg, tiff, png"),
        ("output:\n  suffix: 2024\n", "output.suffix", "a string"),
        ("output:\n  suffix: a/b\n", "output.suffix", "a string"),
        ("output:\n  dir: 5\n", "output.dir", "a folder path"),
        ("input:\n  recursive: null\n", "input.recursive", "true or false"),
        ("input: 3\n", "input", "a section"),
    ],
)
def test_bad_values_in_file(tmp_path, yaml_text, key, allowed):
    f = write(tmp_path / "bad.yaml", yaml_text)
    with pytest.raises(ConfigError) as ei:
        load_config(f, user_config=None)
    msg = str(ei.value)
    assert f"invalid value for {key} in {f}" in msg
    shown = yaml_text.rsplit(":", 1)[1].strip()
    if shown not in (".nan",):
        assert shown in msg or shown.lower() in msg  # the value is quoted back
    assert "allowed: " + allowed in msg
    assert ei.value.key == key


def test_bad_value_on_command_line_is_named_so():
    with pytest.raises(ConfigError) as ei:
        load_config(overrides={"output.jpeg_quality": 150}, user_config=None)
    assert str(ei.value).startswith("invalid value for output.jpeg_quality on the command line: 150")
    assert ei.value.source == COMMAND_LINE


def test_choice_typo_suggests():
    with pytest.raises(ConfigError, match=r"did you mean exact\?"):
        load_config(overrides={"mode": "exactt"}, user_config=None)


# ---- broken files ------------------------------------------------------------------------------


def test_missing_config_file_is_an_error(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match="not found: " + re.escape(str(missing))):
        load_config(missing, user_config=None)


def test_unparsable_config_file_names_file(tmp_path):
    f = write(tmp_path / "broken.yaml", "mode: [fast\n")
    with pytest.raises(ConfigError, match="cannot parse config file " + re.escape(str(f))):
        load_config(f, user_config=None)


def test_config_file_that_is_not_a_mapping(tmp_path):
    f = write(tmp_path / "list.yaml", "- mode\n- fast\n")
    with pytest.raises(ConfigError, match=re.escape(str(f)) + ".*key: value"):
        load_config(f, user_config=None)


def test_config_file_that_is_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path, user_config=None)


def test_broken_user_config_is_an_error(tmp_path):
    user = write(tmp_path / "u.yaml", "output: {jpeg_quality: }\n")
    with pytest.raises(ConfigError, match=r"output\.jpeg_quality in " + re.escape(str(user))):
        load_config(user_config=user)


# ---- user config location ----------------------------------------------------------------------


def test_user_config_path_linux(monkeypatch):
    monkeypatch.setenv("HOME", "/h")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert user_config_path(platform="linux") == Path("/h/.config/backlitfix/config.yaml")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/x")
    assert user_config_path(platform="linux") == Path("/x/backlitfix/config.yaml")
    # relative XDG values are invalid per the spec and ignored
    monkeypatch.setenv("XDG_CONFIG_HOME", "rel")
    assert user_config_path(platform="linux") == Path("/h/.config/backlitfix/config.yaml")


def test_user_config_path_macos_and_windows(monkeypatch):
    import platformdirs.windows

    monkeypatch.setenv("HOME", "/Users/u")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert user_config_path(platform="darwin") == Path("/Users/u/Library/Application Support/backlitfix/config.yaml")
    # the Windows shell API cannot run here: platformdirs' own fallback reads the environment instead
    monkeypatch.setattr(platformdirs.windows, "get_win_folder", platformdirs.windows.get_win_folder_from_env_vars)
    monkeypatch.setenv("APPDATA", "C:/Users/u/AppData/Roaming")
    win = user_config_path(platform="win32")
    assert win.parts[-2:] == ("backlitfix", "config.yaml")
    assert str(win).startswith("C:/Users/u/AppData/Roaming")


def test_user_config_path_default_uses_environment(tmp_path):
    assert user_config_path(platform="linux") == tmp_path / "xdg" / "backlitfix" / "config.yaml"
