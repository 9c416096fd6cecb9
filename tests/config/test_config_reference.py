"""docs/configuration.md's settings table is what scripts/config_reference.py makes from the
settings models: a field added, renamed, re-described or given a new default without
regenerating the page fails here; and the page's TOML example loads."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from featurepull.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "config_reference.py"
PAGE = ROOT / "docs" / "configuration.md"


_spec = importlib.util.spec_from_file_location("config_reference", SCRIPT)
assert _spec is not None and _spec.loader is not None
config_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(config_reference)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The script's exit code and what it printed to stderr."""
    try:
        code = config_reference.main(list(args))
    except SystemExit as exit_:
        code = 1 if exit_.code else 0
        capsys.readouterr()
        return code, str(exit_.code)
    return code, capsys.readouterr().err


def setting_env_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += setting_env_names(annotation, f"{prefix}{name}__")
        else:
            names.append(f"FEATUREPULL_{prefix}{name}".upper())
    return names


def test_the_page_is_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "--check", str(PAGE))
    assert code == 0, err


def test_a_stale_page_fails_the_check_and_write_repairs_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    description = Settings.model_fields["redis_url"].description
    assert description and description in PAGE.read_text()
    stale = tmp_path / "configuration.md"
    stale.write_text(PAGE.read_text().replace(description, "Where Redis was, once."))
    code, err = run(capsys, "--check", str(stale))
    assert code == 1
    assert "out of date" in err and "--write" in err
    assert run(capsys, "--write", str(stale))[0] == 0
    assert stale.read_text() == PAGE.read_text()


def test_every_setting_has_a_row_with_its_default_and_description() -> None:
    text = PAGE.read_text()
    rows = {row.split(" | ")[1].strip("`").split("`")[0]: row
            for row in text.splitlines() if row.startswith("| `")}
    assert sorted(rows) == sorted(setting_env_names(Settings))
    dynamo = Settings.model_fields["dynamodb"].annotation
    assert dynamo is not None
    batch_size = rows["FEATUREPULL_DYNAMODB__BATCH_SIZE"]
    assert "`100`" in batch_size and "1..100" in batch_size
    assert dynamo.model_fields["batch_size"].description in batch_size  # type: ignore[union-attr]


def test_a_page_without_the_markers_is_refused(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Configuration\n")
    code, err = run(capsys, "--check", str(page))
    assert code == 1 and "markers" in err


def test_the_toml_example_loads(tmp_path: Path) -> None:
    example = re.search(r"```toml\n(.*?)```", PAGE.read_text(), re.S)
    assert example is not None
    config = tmp_path / "featurepull.toml"
    config.write_text(example.group(1))
    settings = load_settings(config)
    assert settings.project == "fraud"
    assert settings.dynamodb.region == "eu-west-1"
    assert settings.dynamodb.max_rcu_per_s == "50%"
    assert settings.jobs.shard_size == 20000
