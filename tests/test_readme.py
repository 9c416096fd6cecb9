"""The README is part of the contract: its quick start and its configuration reference."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from featurepull.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def setting_env_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += setting_env_names(annotation, f"{prefix}{name}__")
        else:
            names.append(f"FEATUREPULL_{prefix}{name}".upper())
    return names


def quick_start_commands() -> list[str]:
    """The commands of the README's quick start (tests/test_demo.py runs the first)."""
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_every_setting_is_in_the_configuration_reference() -> None:
    reference = README.split("## Configuration", 1)[1]
    missing = [env for env in setting_env_names(Settings) if f"`{env}`" not in reference]
    assert missing == []
