"""Model prices (USD per million tokens) and the cost of one model call.

The shipped table is ``prices.json`` beside this module; an operator file in the same format is merged
over it (``PriceTable.load``). Format::

    {"models": {"gpt-4o": {"input": 2.5, "output": 10.0, "cache_read": 1.25, "cache_write": null}},
     "currency": "USD", "updated": "...", "notes": "..."}

Model names match case-insensitively: exactly, then by the longest known prefix that ends at a
separator (``-``, ``_``, ``:``, ``@``, ``/``), so ``gpt-4o-2024-08-06`` prices as ``gpt-4o`` but
``o3x`` does not price as ``o3``. Host prefixes (``openai/…``, ``models/…``, Bedrock's
``us.anthropic.…``) are stripped as a second try.

Imports only the standard library and ``otlp_receiver.errors``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from otlp_receiver.errors import ConfigError

DEFAULT_PRICES_FILE: Final = "prices.json"
_TOP_LEVEL_KEYS: Final = frozenset({"models", "currency", "updated", "notes"})
_ENTRY_KEYS: Final = frozenset({"input", "output", "cache_read", "cache_write"})
_SEPARATORS: Final = frozenset("-_:@/")
_BEDROCK_PREFIX: Final = re.compile(
    r"^(?:[a-z]{2,4}\.)?(?:anthropic|meta|mistral|amazon|cohere|ai21|deepseek)\."
)
_PER_TOKEN: Final = 1e-6
_MEMO_LIMIT: Final = 4096


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens. Cache prices of None mean "billed as ordinary input"."""

    input_per_mtok: float
    output_per_mtok: float
    cache_read_per_mtok: float | None = None
    cache_write_per_mtok: float | None = None


class PriceTable:
    """Prices by model name, with exact-then-longest-prefix lookup."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices = {name.strip().lower(): price for name, price in prices.items()}
        self._by_length = sorted(self._prices, key=len, reverse=True)
        self._memo: dict[str, ModelPrice | None] = {}

    @classmethod
    def default(cls) -> PriceTable:
        """The table shipped with Traceward (``prices.json``)."""
        return _default_table()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PriceTable:
        """An operator price file merged over the defaults.

        Raises:
            ConfigError: the file cannot be read, is not JSON, or has a bad entry (named in the message).
        """
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise _config_error(path, f"cannot read price file: {exc}") from exc
        return cls({**_default_prices(), **parse_price_document(text, source=path)})

    @property
    def models(self) -> Mapping[str, ModelPrice]:
        """Every known model name (lower-case) and its price."""
        return dict(self._prices)

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of ``model``: exact name, then longest known prefix, then without a host prefix."""
        key = model.strip().lower()
        if key not in self._memo:
            if len(self._memo) >= _MEMO_LIMIT:  # model names come from clients: bound the memo
                self._memo.clear()
            self._memo[key] = next(filter(None, map(self._match, _candidates(key))), None)
        return self._memo[key]

    def cost(
        self, model: str, *, tokens_in: int, tokens_out: int, cache_read: int = 0, cache_write: int = 0
    ) -> float | None:
        """USD for one call; None when the model has no price.

        Cached tokens are counted *inside* ``tokens_in`` (OTel, OpenInference): the remainder is billed at
        the input price. If the cache counts exceed ``tokens_in`` the emitter evidently reported them
        separately (Anthropic's native API), so all of ``tokens_in`` is billed as uncached input.
        """
        price = self.lookup(model)
        if price is None:
            return None
        tokens_in, tokens_out = max(0, tokens_in), max(0, tokens_out)
        cache_read, cache_write = max(0, cache_read), max(0, cache_write)
        cached = cache_read + cache_write
        uncached = tokens_in - cached if cached <= tokens_in else tokens_in
        read_price = _or(price.cache_read_per_mtok, price.input_per_mtok)
        write_price = _or(price.cache_write_per_mtok, price.input_per_mtok)
        total = (
            uncached * price.input_per_mtok
            + cache_read * read_price
            + cache_write * write_price
            + tokens_out * price.output_per_mtok
        )
        return total * _PER_TOKEN

    def _match(self, key: str) -> ModelPrice | None:
        exact = self._prices.get(key)
        if exact is not None:
            return exact
        for name in self._by_length:
            if len(name) < len(key) and key.startswith(name) and key[len(name)] in _SEPARATORS:
                return self._prices[name]
        return None


def _or(value: float | None, fallback: float) -> float:
    return fallback if value is None else value


def _candidates(key: str) -> tuple[str, ...]:
    """The name, then the name after any host path (``openai/gpt-4o``), then without a Bedrock prefix."""
    tail = key.rsplit("/", 1)[-1]
    return tuple(dict.fromkeys((key, tail, _BEDROCK_PREFIX.sub("", tail))))


# --- Parsing and validation -------------------------------------------------------------------------------
def _config_error(source: str | os.PathLike[str], problem: str) -> ConfigError:
    return ConfigError(f"price file {os.fspath(source)}: {problem}", details={"path": os.fspath(source)})


def _price(source: str | os.PathLike[str], model: str, entry: Mapping[str, Any], field: str) -> float:
    value = entry.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise _config_error(
            source, f"model {model!r}: {field!r} must be a non-negative number, got {value!r}"
        )
    return float(value)


def _optional_price(
    source: str | os.PathLike[str], model: str, entry: Mapping[str, Any], field: str
) -> float | None:
    return None if entry.get(field) is None else _price(source, model, entry, field)


def _parse_entry(source: str | os.PathLike[str], model: str, entry: Any) -> ModelPrice:
    if not isinstance(entry, dict):
        raise _config_error(source, f"model {model!r}: expected an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise _config_error(
            source, f"model {model!r}: unknown keys {unknown} (allowed: {sorted(_ENTRY_KEYS)})"
        )
    if not model.strip():
        raise _config_error(source, "model names must not be blank")
    return ModelPrice(
        input_per_mtok=_price(source, model, entry, "input"),
        output_per_mtok=_price(source, model, entry, "output"),
        cache_read_per_mtok=_optional_price(source, model, entry, "cache_read"),
        cache_write_per_mtok=_optional_price(source, model, entry, "cache_write"),
    )


def parse_price_document(text: str, *, source: str | os.PathLike[str]) -> dict[str, ModelPrice]:
    """Validate a price document and return its models (names lower-cased).

    Raises:
        ConfigError: naming ``source`` and the problem.
    """
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise _config_error(source, f"not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("models"), dict):
        raise _config_error(source, 'expected an object with a "models" object')
    unknown = sorted(set(document) - _TOP_LEVEL_KEYS)
    if unknown:
        raise _config_error(source, f"unknown top-level keys {unknown} (allowed: {sorted(_TOP_LEVEL_KEYS)})")
    if document.get("currency", "USD") != "USD":
        raise _config_error(source, f"currency must be USD, got {document['currency']!r}")
    return {
        name.strip().lower(): _parse_entry(source, name, entry) for name, entry in document["models"].items()
    }


@functools.cache
def _default_prices() -> dict[str, ModelPrice]:
    text = resources.files("otlp_receiver").joinpath(DEFAULT_PRICES_FILE).read_text(encoding="utf-8")
    return parse_price_document(text, source=DEFAULT_PRICES_FILE)


@functools.cache
def _default_table() -> PriceTable:
    return PriceTable(_default_prices())
