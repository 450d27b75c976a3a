"""docs/CONFIG.md is generated from lightning_stacks/config.py and must match it."""

from __future__ import annotations

import inspect
from pathlib import Path

from lightning_stacks import docs_config

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = "python -m lightning_stacks.docs_config > docs/CONFIG.md"


def test_config_reference_is_up_to_date():
    written = (ROOT / "docs" / "CONFIG.md").read_text()
    assert written == docs_config.render(), f"docs/CONFIG.md is out of date with lightning_stacks/config.py; run: {REGENERATE}"


def test_every_config_key_is_in_the_reference():
    import dataclasses

    from lightning_stacks.config import Config

    text = docs_config.render()
    for f in dataclasses.fields(Config):
        assert f"`{f.name}" in text or f"`{f.name}." in text, f.name
    for section in ("model", "data", "reduce", "trainer", "rounds[i]"):
        assert f"## `{section}`" in text


def test_callback_keywords_match_its_signature():
    from lightning_stacks.callbacks import ReductionCallback

    params = inspect.signature(ReductionCallback.__init__).parameters
    own = {name for name, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert own == set(docs_config.CALLBACK_OWN), "update CALLBACK_OWN in lightning_stacks/docs_config.py, then " + REGENERATE
    assert set(ReductionCallback.CLI_ONLY) == set(docs_config.CALLBACK_CLI_ONLY)
    for name, (_, default, _) in docs_config.CALLBACK_OWN.items():
        expected = params[name].default
        expected = [] if expected == () else expected
        assert default == repr(expected).replace("'", '"'), name
