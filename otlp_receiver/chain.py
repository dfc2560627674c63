"""Canonical JSON, payload hashes, the per-run hash chain, its verification, and signed run seals.

Pure: no I/O, no clock, no storage. Imports the standard library, orjson, cryptography and the model.

Canonical JSON (:func:`canonical_json`) is RFC 8785 (JCS) for every value Traceward stores, computed with
orjson for speed, with one documented extension. What it emits, and where that meets JCS:

* objects: keys sorted by their UTF-16 code units (JCS §3.2.3); orjson sorts by code point, which agrees
  unless keys in one object mix astral characters (U+10000+) with U+E000–U+FFFF — such objects (any
  object with a non-ASCII key, in fact) take a slow path that sorts as JCS does;
* strings: JCS escaping (``\\" \\\\ \\b \\t \\n \\f \\r``, other controls as ``\\u00xx``, everything else
  raw UTF-8) — orjson's escaping is byte-identical; lone surrogates are rejected (TypeError), as in JCS;
* floats: ECMAScript ``Number.prototype.toString`` (``1.0`` → ``1``, ``1e-6`` → ``0.000001``,
  ``1e20`` → ``100000000000000000000``, ``-0.0`` → ``0``), formatted here from Python's shortest
  round-trip ``repr`` rather than by orjson, whose float format differs; NaN/Infinity raise ValueError;
* integers: exact decimal. **Extension:** JCS only admits integers within ±(2**53-1) (IEEE doubles);
  we write any int64/uint64 exactly (``start_ns`` values are ~1.7e18), so a strict JCS library rejects
  (or rounds) these where we stay exact. Ints beyond 64 bits raise TypeError (orjson's range);
* ``true``/``false``/``null``, lists and tuples as arrays, ``str``/``int`` subclasses (StrEnum, IntEnum)
  as their plain values. Anything else (bytes, sets, datetimes, non-str keys) raises TypeError.

Equivalence with the ``rfc8785`` package's output is property-tested in tests/otlp_receiver/test_chain.py.

Chain: ``payload_hash = sha256(canonical_json(payload))``; ``chain_hash = sha256(prev_hash ‖
canonical_json(step_record))`` where ``prev_hash`` is the previous step's chain hash, or the run's
:func:`genesis_hash` for seq 0. Hashes are written ``"sha256:<64 lower-case hex>"``. A run's head hash and
step count are sealed into a tenant-wide chain of Ed25519-signed seal records (CloudTrail-digest style).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from otlp_receiver.model import RedactionMeta

HASH_PREFIX: Final = "sha256:"
RECORD_VERSION: Final = 1
_SORT: Final = orjson.OPT_SORT_KEYS
_LEAVES: Final = frozenset({str, int, bool, type(None)})


# --- canonical JSON -------------------------------------------------------------------------------------
def canonical_json(obj: object) -> bytes:
    """RFC 8785 canonical JSON of ``obj`` (see the module docstring for the one extension: exact ints).

    Raises:
        TypeError: unsupported type, non-str key, lone surrogate, or an int beyond 64 bits.
        ValueError: NaN or infinity.
    """
    try:
        return orjson.dumps(_with_float_fragments(obj), option=_SORT)
    except (_SlowPath, orjson.JSONEncodeError):
        # non-ASCII or non-str keys, Mappings that are not dicts: slow path, which raises if unsupported
        return orjson.dumps(_jcs_copy(obj))


class _SlowPath(Exception):
    """An object key that orjson's code-point sort might order differently from JCS (or not a str)."""


def _with_float_fragments(obj: object) -> object:
    """``obj`` with floats replaced by ECMAScript-formatted fragments; containers copied only on that path.

    Raises:
        _SlowPath: on a key that is not a plain ASCII str (JCS sorts keys by UTF-16 code units).
    """
    kind = type(obj)
    if kind is dict:
        copy = None
        for key, value in obj.items():  # type: ignore[attr-defined]
            if type(key) is not str or not key.isascii():
                raise _SlowPath
            if type(value) in _LEAVES:
                continue
            new = _with_float_fragments(value)
            if new is not value:
                if copy is None:
                    copy = dict(obj)  # type: ignore[call-overload]
                copy[key] = new
        return obj if copy is None else copy
    if kind is list or kind is tuple:
        items = None
        for i, value in enumerate(obj):  # type: ignore[arg-type]
            if type(value) in _LEAVES:
                continue
            new = _with_float_fragments(value)
            if new is not value:
                if items is None:
                    items = list(obj)  # type: ignore[call-overload]
                items[i] = new
        return obj if items is None else items
    if isinstance(obj, float):
        return orjson.Fragment(format_number(obj))
    if isinstance(obj, Mapping | list | tuple):
        return _with_float_fragments(dict(obj) if isinstance(obj, Mapping) else list(obj))
    return obj


def _jcs_copy(obj: object) -> object:
    """A copy with floats as ECMAScript-formatted fragments and objects in UTF-16 key order (slow path)."""
    if isinstance(obj, bool | str | int) or obj is None:
        return obj
    if isinstance(obj, float):
        return orjson.Fragment(format_number(obj))
    if isinstance(obj, Mapping):
        for key in obj:
            if not isinstance(key, str):
                raise TypeError("canonical_json: object keys must be str")
        keys = sorted(obj, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        return {str.__str__(key): _jcs_copy(obj[key]) for key in keys}
    if isinstance(obj, list | tuple):
        return [_jcs_copy(value) for value in obj]
    raise TypeError(f"canonical_json: unsupported type {type(obj).__name__}")


def format_number(value: float) -> str:
    """ECMAScript ``Number::toString`` of a finite float (RFC 8785 §3.2.2.3).

    Raises:
        ValueError: for NaN and infinities, which JSON cannot carry.
    """
    if not math.isfinite(value):
        raise ValueError("canonical_json: NaN and infinity are not JSON")
    if value == 0:
        return "0"
    text = repr(value)
    if "e" not in text:  # 1e-4 <= |value| < 1e16: Python's shortest repr is already ES's fixed layout
        return text[:-2] if text.endswith(".0") else text
    sign = "-" if value < 0 else ""
    digits, point = _shortest_digits(abs(value))
    return sign + _es_layout(digits, point)


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits ``d1..dk`` and ``n`` with ``value = 0.d1..dk × 10**n``."""
    mantissa, _, exponent = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    fraction = fraction.rstrip("0")
    raw = (whole + fraction).lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(whole + fraction) - len(raw))
    return raw.rstrip("0"), point


def _es_layout(digits: str, n: int) -> str:
    """Lay out digits per ECMA-262 Number::toString steps 6-10."""
    k = len(digits)
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    exponent = n - 1
    mark = "e+" if exponent >= 0 else "e-"
    head = digits if k == 1 else digits[0] + "." + digits[1:]
    return head + mark + str(abs(exponent))


# --- hashes ---------------------------------------------------------------------------------------------
def _sha256(data: bytes) -> str:
    """``"sha256:<hex>"`` of ``data``."""
    return HASH_PREFIX + hashlib.sha256(data).hexdigest()


def payload_hash(payload: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of a (redacted) step payload."""
    return _sha256(canonical_json(payload))


def encode_payload(payload: Mapping[str, Any]) -> tuple[str, str]:
    """The payload's canonical JSON text (to store) and its payload hash, encoded once.

    Storing exactly this text lets :func:`verify_chain` check the hash without re-encoding.
    """
    data = canonical_json(payload)
    return data.decode("utf-8"), _sha256(data)


def genesis_hash(tenant_id: str, run_id: str) -> str:
    """The ``prev_hash`` of a run's seq 0: binds the chain to its tenant and run."""
    return _sha256(canonical_json({"kind": "traceward.run_genesis", "v": RECORD_VERSION,
                                   "tenant_id": tenant_id, "run_id": run_id}))


def redaction_meta_json(meta: RedactionMeta | Mapping[str, Any] | str | bytes | None) -> dict[str, Any] | None:
    """The hashed form of redaction_meta: ``{"paths", "rules"}``, or None when nothing was redacted.

    Accepts the model object, its wire dict, its JSON text (as stored) or None, so ingest and verify agree.
    """
    if isinstance(meta, str | bytes):
        meta = orjson.loads(meta) if meta else None
    if meta is None:
        return None
    if isinstance(meta, RedactionMeta):
        paths: list[Any] = list(meta.paths)
        rules: list[Any] = [{"rule_id": r.rule_id, "reason": r.reason} for r in meta.rules]
    else:
        paths = list(meta.get("paths") or ())
        rules = [{"rule_id": r["rule_id"], "reason": r["reason"]} for r in meta.get("rules") or ()]
    return {"paths": paths, "rules": rules} if paths or rules else None


def step_record(*, seq: int, type: str, name: str, trace_id: str | None, span_id: str | None,
                parent_span_id: str | None, start_ns: int, payload_hash: str,
                redaction_meta: RedactionMeta | Mapping[str, Any] | str | None) -> dict[str, Any]:
    """The canonical step record that :func:`chain_hash` covers (everything but the payload itself)."""
    return {"v": RECORD_VERSION, "seq": int(seq), "type": str(type), "name": name, "trace_id": trace_id,
            "span_id": span_id, "parent_span_id": parent_span_id or None, "start_ns": int(start_ns),
            "payload_hash": payload_hash, "redaction_meta": redaction_meta_json(redaction_meta)}


def chain_hash(prev_hash: str, record: Mapping[str, Any]) -> str:
    """``sha256(prev_hash ‖ canonical_json(record))`` (prev_hash as its ASCII text, fixed length)."""
    return _sha256(prev_hash.encode("ascii") + canonical_json(record))


# --- verification ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place a run's chain fails to verify, and why (never carries payload values)."""

    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    """Outcome of :func:`verify_chain`: ``head_hash`` is the last hash verified (genesis if none)."""

    ok: bool
    steps_checked: int
    head_hash: str
    first_break: ChainBreak | None = None


class _RowError(Exception):
    """A stored row that cannot be checked (missing column, bad JSON): reported as a break."""


def verify_chain(tenant_id: str, run_id: str, rows: Iterable[Mapping[str, Any]], *,
                 expected_head: str | None = None, expected_count: int | None = None) -> ChainVerdict:
    """Recompute a run's chain from its stored rows, in the order they were read.

    Each row needs seq, type, name, trace_id, span_id, parent_span_id, start_ns, payload (JSON text or
    dict), payload_hash, redaction_meta (JSON text, dict or None), prev_hash and chain_hash. Seqs must run
    0, 1, 2… in read order (so swapped rows are caught). ``expected_head``/``expected_count`` (from the run
    index or a signed seal) catch a truncated tail. Never raises on bad data: that is a break.
    """
    head = genesis_hash(tenant_id, run_id)
    count = 0
    for row in rows:
        step_break, next_head = _check_row(row, count, head)
        if step_break is not None:
            return ChainVerdict(False, count, head, step_break)
        head = next_head
        count += 1
    tail_break = _check_tail(count, head, expected_head, expected_count)
    return ChainVerdict(tail_break is None, count, head, tail_break)


def _check_row(row: Mapping[str, Any], expected_seq: int, prev: str) -> tuple[ChainBreak | None, str]:
    """Verify one row against the running head; returns (break or None, the row's chain hash)."""
    try:
        seq = row["seq"]
        if seq != expected_seq:
            return ChainBreak(expected_seq, _seq_reason(expected_seq, seq)), prev
        stored_payload_hash = row["payload_hash"]
        if _hash_stored_payload(row["payload"], stored_payload_hash) != stored_payload_hash:
            return ChainBreak(seq, "payload_hash mismatch (payload altered)"), prev
        if row["prev_hash"] != prev:
            return ChainBreak(seq, "prev_hash does not link to the previous step"), prev
        computed = chain_hash(prev, _row_record(row))
        if computed != row["chain_hash"]:
            return ChainBreak(seq, "chain_hash mismatch (step record altered)"), prev
    except _RowError as exc:
        return ChainBreak(expected_seq, f"malformed row ({exc})"), prev
    except (KeyError, TypeError, ValueError) as exc:
        return ChainBreak(expected_seq, f"malformed row ({type(exc).__name__})"), prev
    return None, computed


def _seq_reason(expected: int, got: object) -> str:
    """Why a row's seq is not the next one."""
    if not isinstance(got, int) or isinstance(got, bool):
        return "seq missing or not an integer"
    if got > expected:
        return f"seq gap (expected {expected}, got {got})"
    return f"seq out of order (expected {expected}, got {got})"


def _hash_stored_payload(payload: Any, stored_hash: str) -> str:
    """The payload hash of a stored payload; canonical text (as ingest writes it) is hashed directly.

    Sound because if sha256(text) equals the stored hash, the text *is* the canonical encoding that
    was hashed at ingest (collision resistance); otherwise the text is parsed and re-canonicalized.
    """
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    if isinstance(payload, bytes):
        direct = _sha256(payload)
        if direct == stored_hash:
            return direct
        try:
            payload = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise _RowError("payload is not JSON") from exc
    if not isinstance(payload, Mapping):
        raise _RowError("payload is not a JSON object")
    return payload_hash(payload)


def _row_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The step record of a stored row."""
    try:
        meta = redaction_meta_json(row["redaction_meta"])
    except orjson.JSONDecodeError as exc:
        raise _RowError("redaction_meta is not JSON") from exc
    return step_record(seq=row["seq"], type=row["type"], name=row["name"], trace_id=row["trace_id"],
                       span_id=row["span_id"], parent_span_id=row["parent_span_id"],
                       start_ns=row["start_ns"], payload_hash=row["payload_hash"], redaction_meta=meta)


def _check_tail(count: int, head: str, expected_head: str | None,
                expected_count: int | None) -> ChainBreak | None:
    """Compare what was verified with the run index or seal (catches deleted tail steps)."""
    if expected_count is not None and count != expected_count:
        return ChainBreak(count, f"step count {count} differs from expected {expected_count} "
                                 "(steps deleted or added at the tail)")
    if expected_head is not None and head != expected_head:
        return ChainBreak(max(count - 1, 0), "head hash differs from the expected head (chain truncated "
                                             "or rewritten)")
    return None


# --- seals ----------------------------------------------------------------------------------------------
def audit_genesis_hash(tenant_id: str) -> str:
    """The ``prev_seal_hash`` of a tenant's first seal."""
    return _sha256(canonical_json({"kind": "traceward.audit_genesis", "v": RECORD_VERSION,
                                   "tenant_id": tenant_id}))


def seal_record(*, tenant_id: str, run_id: str, head_hash: str, step_count: int, sealed_ns: int,
                prev_seal_hash: str) -> dict[str, Any]:
    """A run seal for the tenant's audit chain: the run's head hash and step count, linked to the last seal."""
    return {"kind": "traceward.run_seal", "v": RECORD_VERSION, "tenant_id": tenant_id, "run_id": run_id,
            "head_hash": head_hash, "step_count": int(step_count), "sealed_ns": int(sealed_ns),
            "prev_seal_hash": prev_seal_hash}


def sign_seal(record: Mapping[str, Any], private_key: Ed25519PrivateKey, key_id: str) -> dict[str, Any]:
    """``record`` plus ``key_id`` and an Ed25519 ``signature`` (base64url, unpadded).

    The signature covers the canonical JSON of the record together with its key_id.
    """
    signed = {**record, "key_id": key_id}
    signed.pop("signature", None)
    signature = private_key.sign(canonical_json(signed))
    return {**signed, "signature": base64.urlsafe_b64encode(signature).rstrip(b"=").decode("ascii")}


def verify_seal(sealed: Mapping[str, Any], public_key: Ed25519PublicKey) -> bool:
    """True when ``sealed`` carries a valid signature by ``public_key``; False on any tampering."""
    body = dict(sealed)
    encoded = body.pop("signature", None)
    if not isinstance(encoded, str) or "key_id" not in body:
        return False
    try:
        signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        public_key.verify(signature, canonical_json(body))
    except (InvalidSignature, binascii.Error, TypeError, ValueError):
        return False
    return True


def seal_hash(sealed: Mapping[str, Any]) -> str:
    """Hash of a signed seal (signature included): the next seal's ``prev_seal_hash``."""
    return _sha256(canonical_json(sealed))
