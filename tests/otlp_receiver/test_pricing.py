"""The model price table: lookup, cost arithmetic and operator price files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from otlp_receiver.errors import ConfigError
from otlp_receiver.pricing import ModelPrice, PriceTable

GPT_4O = ModelPrice(2.5, 10.0, 1.25, None)
SONNET = ModelPrice(3.0, 15.0, 0.3, 3.75)


@pytest.fixture
def prices() -> PriceTable:
    return PriceTable.default()


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", GPT_4O),
        ("GPT-4o", GPT_4O),
        ("gpt-4o-2024-08-06", GPT_4O),
        ("gpt-4o-2024-05-13", ModelPrice(5.0, 15.0, None, None)),  # a dated variant with its own price
        ("gpt-4o-mini-2024-07-18", ModelPrice(0.15, 0.6, 0.075, None)),  # longest prefix wins
        ("openai/gpt-4o", GPT_4O),
        ("claude-sonnet-4-5-20250929", SONNET),
        ("claude-3-5-sonnet@20240620", SONNET),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", SONNET),
        ("anthropic/claude-3.5-sonnet", SONNET),
        ("claude-opus-4-5-20251101", ModelPrice(5.0, 25.0, 0.5, 6.25)),
        ("claude-opus-4-20250514", ModelPrice(15.0, 75.0, 1.5, 18.75)),
        ("models/gemini-2.0-flash-001", ModelPrice(0.1, 0.4, 0.025, None)),
        ("gemini-2.0-flash-lite-001", ModelPrice(0.075, 0.3, None, None)),
        ("o3-mini-2025-01-31", ModelPrice(1.1, 4.4, 0.55, None)),
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", ModelPrice(0.88, 0.88, None, None)),
        ("meta.llama3-1-8b-instruct-v1:0", ModelPrice(0.22, 0.22, None, None)),
    ],
)
def test_lookup_exact_then_longest_prefix(prices: PriceTable, model: str, expected: ModelPrice) -> None:
    assert prices.lookup(model) == expected


@pytest.mark.parametrize("model", ["o3x", "gpt-4o2", "gpt-5.9", "my-private-model", "", "   "])
def test_lookup_misses_without_a_separator_after_the_prefix(prices: PriceTable, model: str) -> None:
    assert prices.lookup(model) is None


@pytest.mark.parametrize(
    "family",
    ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini", "claude-sonnet-4",
     "claude-opus-4", "claude-haiku-4-5", "claude-3-5-sonnet", "claude-3-5-haiku", "gemini-2.5-pro",
     "gemini-2.5-flash", "gemini-2.0-flash", "mistral-large", "llama-3.3-70b-versatile"],
)  # fmt: skip
def test_default_table_prices_the_common_families(prices: PriceTable, family: str) -> None:
    price = prices.lookup(family)
    assert price is not None
    assert price.input_per_mtok > 0 and price.output_per_mtok > 0


def test_cost_bills_cached_tokens_inside_input() -> None:
    table = PriceTable({"m": ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0, cache_read_per_mtok=0.3,
                                        cache_write_per_mtok=3.75)})  # fmt: skip
    cost = table.cost("m", tokens_in=1_000_000, tokens_out=100_000, cache_read=600_000, cache_write=100_000)
    assert cost == pytest.approx(0.3 * 3.0 + 0.6 * 0.3 + 0.1 * 3.75 + 0.1 * 15.0)


def test_cost_without_cache_prices_falls_back_to_input_price() -> None:
    table = PriceTable({"m": ModelPrice(2.0, 8.0)})
    assert table.cost("m", tokens_in=1_000_000, tokens_out=0, cache_read=500_000) == pytest.approx(2.0)


def test_cost_when_cache_counts_were_reported_outside_input() -> None:
    table = PriceTable({"m": ModelPrice(3.0, 15.0, 0.3, 3.75)})
    # Anthropic's native usage: input_tokens excludes the 2M cached tokens
    cost = table.cost("m", tokens_in=1_000_000, tokens_out=0, cache_read=2_000_000)
    assert cost == pytest.approx(3.0 + 2 * 0.3)


def test_cost_of_unknown_model_is_none(prices: PriceTable) -> None:
    assert prices.cost("my-private-model", tokens_in=10, tokens_out=10) is None


def test_cost_clamps_negative_counts() -> None:
    assert PriceTable({"m": ModelPrice(1.0, 1.0)}).cost("m", tokens_in=-5, tokens_out=-1) == 0.0


def _write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def test_load_merges_operator_prices_over_defaults(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {"models": {"GPT-4o": {"input": 1.0, "output": 2.0}, "acme-llm": {"input": 0.5, "output": 0.5,
                                                                          "cache_read": None}}},
    )  # fmt: skip
    table = PriceTable.load(path)
    assert table.lookup("gpt-4o-2024-08-06") == ModelPrice(1.0, 2.0, None, None)
    assert table.lookup("acme-llm-v2") == ModelPrice(0.5, 0.5, None, None)
    assert table.lookup("claude-3-5-haiku-20241022") == PriceTable.default().lookup("claude-3-5-haiku")


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("{not json", "not valid JSON"),
        ([], 'expected an object with a "models" object'),
        ({"prices": {}}, 'expected an object with a "models" object'),
        ({"models": {}, "extra": 1}, "unknown top-level keys ['extra']"),
        ({"models": {}, "currency": "EUR"}, "currency must be USD"),
        ({"models": {"m": [1, 2]}}, "model 'm': expected an object, got list"),
        ({"models": {"m": {"input": 1}}}, "model 'm': 'output' must be a non-negative number, got None"),
        ({"models": {"m": {"input": -1, "output": 1}}}, "'input' must be a non-negative number, got -1"),
        ({"models": {"m": {"input": "1", "output": 1}}}, "'input' must be a non-negative number, got '1'"),
        ({"models": {"m": {"input": True, "output": 1}}}, "'input' must be a non-negative number"),
        ({"models": {"m": {"input": 1, "output": 1, "cache_reads": 1}}}, "unknown keys ['cache_reads']"),
        ({"models": {" ": {"input": 1, "output": 1}}}, "model names must not be blank"),
    ],
)
def test_load_rejects_bad_files_naming_path_and_problem(tmp_path: Path, document: Any, problem: str) -> None:
    path = _write(tmp_path, document)
    with pytest.raises(ConfigError) as caught:
        PriceTable.load(path)
    assert str(path) in caught.value.message
    assert problem in caught.value.message
    assert caught.value.details == {"path": str(path)}


def test_load_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.json"
    with pytest.raises(ConfigError, match="cannot read price file") as caught:
        PriceTable.load(path)
    assert str(path) in caught.value.message


def test_default_table_is_shared_and_well_formed() -> None:
    table = PriceTable.default()
    assert table is PriceTable.default()
    assert len(table.models) >= 60
    for price in table.models.values():
        assert price.input_per_mtok >= 0 and price.output_per_mtok >= 0
