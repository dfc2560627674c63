"""Governance settings from the environment: bad values are refused at start-up, naming the variable."""

from __future__ import annotations

import pytest

from otlp_receiver.errors import ConfigError
from otlp_receiver.store.index import RunIndex
from server.governance_wiring import governance_from_settings
from server.settings import Settings


@pytest.mark.parametrize("raw", ["0", "-1", "61", "nan", "soon"])
def test_a_bad_decision_step_linger_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="TRACEWARD_DECISION_STEP_LINGER_S"):
        Settings.from_env({"TRACEWARD_DECISION_STEP_LINGER_S": raw})


def test_the_decision_step_linger_reaches_the_governance_config(tmp_path) -> None:
    settings = Settings.from_env({"TRACEWARD_DECISION_STEP_LINGER_S": "0.5", "TRACEWARD_DATA_DIR": str(tmp_path)})
    governance = governance_from_settings(settings, RunIndex(tmp_path / "index.sqlite3"), lambda *_: None)
    assert governance.config.step_linger_s == 0.5
    assert Settings().decision_step_linger_s == 1.0
