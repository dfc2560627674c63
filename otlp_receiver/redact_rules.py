"""Redaction rules: the default rule set, validators, per-tenant configuration and compiled matchers.

A rule is a *key* rule (case-insensitive globs on attribute / JSON object keys; the whole value is masked)
or a *value* rule (an RE2 pattern; the matching part is masked, or only its ``(?P<secret>…)`` group).
Patterns are compiled with google-re2 when a policy is built, so matching is linear-time and a
catastrophic-backtracking pattern cannot stall ingest; syntax RE2 lacks (backreferences, lookaround) is
rejected with a path-hinted :class:`~otlp_receiver.errors.ConfigError`.

Pure: imports the standard library, google-re2 and ``otlp_receiver.errors``. Used by ``redact.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Final, Literal

import re2
from re2 import _re2

from otlp_receiver.errors import ConfigError

Span = tuple[int, int]
Validator = Callable[[bytes], Span | None]
"""Given the matched bytes, the sub-span to mask (relative), or None to reject the match."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print patterns to stderr
_OPTIONS.max_mem = 64 << 20  # room for the combined alternations' DFA
UNANCHORED: Final = _re2.RE2.Anchor.UNANCHORED
_ANCHOR_BOTH: Final = _re2.RE2.Anchor.ANCHOR_BOTH
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_MAX_PATTERN_CHARS: Final = 4096


@dataclass(frozen=True, slots=True)
class RedactionRule:
    """One redaction rule.

    Attributes:
        rule_id: stable id, shown in markers and ``redaction_meta`` (letters, digits, ``_.-``).
        reason: why it is redacted (``redaction_meta.rules[].reason``).
        kind: ``"key"`` (``pattern`` = ``|``-separated case-insensitive globs, ``*`` and ``?``) or
            ``"value"`` (``pattern`` = an RE2 regular expression).
        pattern: see ``kind``.
        enabled: disabled rules are kept (so they can be re-enabled) but never fire.
        validator: value rules only: a name from :data:`VALIDATORS` that confirms a match (e.g. ``luhn``).
        exclude: key rules only: globs of keys the rule must not mask (``*tokens*`` for token counts).
    """

    rule_id: str
    reason: str
    kind: Literal["key", "value"]
    pattern: str
    enabled: bool = True
    validator: str | None = None
    exclude: tuple[str, ...] = ()


# --- validators -----------------------------------------------------------------------------------------
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")  # digit → digit sum of its double


def _luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a digit string."""
    doubled = digits[-2::-2].translate(_LUHN_DOUBLED)
    return (sum(map(int, digits[-1::-2])) + sum(map(int, doubled))) % 10 == 0


def _is_card(digits: str) -> bool:
    """13-19 digits, a card-network first digit (2-6, so ns/ms timestamps never qualify), Luhn-valid."""
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and _luhn_ok(digits)


def validate_card(matched: bytes) -> Span | None:
    """Longest run of separator-delimited digit groups inside the match that is a valid card number.

    The match may carry extra digit groups (an expiry date after the number, a reference before it).
    """
    text = matched.decode("ascii")
    if text.isdigit():
        return (0, len(text)) if _is_card(text) else None
    groups = [(m.start(), m.end()) for m in _DIGIT_RUN.finditer(text)]
    best: Span | None = None
    for i in range(len(groups)):
        for j in range(len(groups) - 1, i - 1, -1):
            start, end = groups[i][0], groups[j][1]
            if best is not None and end - start <= best[1] - best[0]:
                break
            if _is_card("".join(text[s:e] for s, e in groups[i:j + 1])):
                best = (start, end)
    return best


_DIGIT_RUN = re.compile(r"\d+")


_IBAN_TABLE: Final = (  # ISO 13616 country code and IBAN length
    "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DK18 DO28 EE20 EG29 "
    "ES24 FI18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 "
    "LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 MR27 MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 "
    "QA29 RO24 RS22 SA24 SC31 SD18 SE24 SI19 SK24 SM27 ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20")
_IBAN_LENGTHS: Final = {entry[:2]: int(entry[2:]) for entry in _IBAN_TABLE.split()}


def validate_iban(matched: bytes) -> Span | None:
    """The IBAN at the start of the match: its country's length, then the ISO 13616 mod-97 check."""
    text = matched.decode("ascii", "replace")
    length = _IBAN_LENGTHS.get(text[:2])
    positions = [i for i, ch in enumerate(text) if ch.isalnum()]
    if length is None or len(positions) < length:
        return None
    compact = "".join(text[i] for i in positions[:length])
    rearranged = compact[4:] + compact[:4]
    if int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 != 1:
        return None
    return 0, positions[length - 1] + 1


def validate_us_ssn(matched: bytes) -> Span | None:
    """US SSN structure: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    area, group, serial = matched.decode("ascii").split("-")
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return None
    return 0, len(matched)


def validate_token_shape(matched: bytes) -> Span | None:
    """Looks like a credential, not a word: has a digit or symbol, or is at least 24 characters long."""
    if len(matched) >= 24 or any(not chr(c).isalpha() for c in matched):
        return 0, len(matched)
    return None


_PLACEHOLDERS: Final = frozenset({b"none", b"null", b"nil", b"true", b"false", b"undefined", b"required",
                                  b"optional", b"redacted", b"hidden", b"masked", b"empty"})


def validate_credential_value(matched: bytes) -> Span | None:
    """An assigned credential that is not a placeholder (``None``, ``null``, ``<redacted>`` …)."""
    if matched.lower().strip(b"<>()[]*.") in _PLACEHOLDERS or not matched.strip(b"*x<>.-"):
        return None
    return 0, len(matched)


VALIDATORS: Final[Mapping[str, Validator]] = {
    "luhn": validate_card, "iban": validate_iban, "us_ssn": validate_us_ssn,
    "token_shape": validate_token_shape, "credential_value": validate_credential_value,
}


# --- the default rule set -------------------------------------------------------------------------------
_ASSIGNED = r"(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?"
DEFAULT_RULES: Final[tuple[RedactionRule, ...]] = (
    RedactionRule("key.authorization", "credential header", "key", "*authorization*"),
    RedactionRule("key.cookie", "session cookie", "key", "*cookie*"),
    RedactionRule("key.api_key", "API key", "key", "*api_key*|*api-key*|*apikey*|*api.key*"),
    RedactionRule("key.password", "password", "key", "*password*|*passwd*|*passphrase*"),
    RedactionRule("key.secret", "secret", "key", "*secret*"),
    RedactionRule("key.private_key", "private key", "key", "*private_key*|*private-key*|*privatekey*"),
    RedactionRule("key.credential", "credential", "key", "*credential*"),
    RedactionRule("key.token", "access token", "key", "*token*",
                  exclude=("*tokens*", "*token_count*", "*token.count*", "*tokenizer*")),
    RedactionRule("value.private_key", "private key block", "value",
                  r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?:[\s\S]*?-----END[A-Z0-9 ]*PRIVATE KEY-----"
                  r"|[A-Za-z0-9+/=\s\\]*)"),
    RedactionRule("value.jwt", "JSON Web Token", "value",
                  r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    RedactionRule("value.sk_api_key", "API key (OpenAI / Anthropic sk-…)", "value", r"\bsk-[A-Za-z0-9_-]{20,}"),
    RedactionRule("value.aws_access_key_id", "AWS access key id", "value",
                  r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b"),
    RedactionRule("value.github_token", "GitHub token", "value",
                  r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    RedactionRule("value.slack_token", "Slack token", "value", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    RedactionRule("value.google_api_key", "Google API key", "value", r"\bAIza[0-9A-Za-z_-]{35}"),
    RedactionRule("value.bearer_token", "bearer credential", "value",
                  r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/=-]{8,})", validator="token_shape"),
    RedactionRule("value.credential_assignment", "credential assigned in text", "value",
                  r"(?i)\b[a-z0-9_-]*(?:password|passwd|passphrase|secret|api[_-]?key|token)" + _ASSIGNED
                  + r"(?P<secret>[^\s\"'\\,;&}\]]{3,})", validator="credential_value"),
    RedactionRule("value.email", "email address", "value",
                  r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    RedactionRule("value.iban", "IBAN", "value", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", validator="iban"),
    RedactionRule("value.payment_card", "payment card number", "value", r"\b(?:\d[ -]?){12,18}\d\b",
                  validator="luhn"),
    RedactionRule("value.us_ssn", "US social security number", "value", r"\b\d{3}-\d{2}-\d{4}\b",
                  validator="us_ssn"),
    RedactionRule("value.phone", "phone number", "value",
                  r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)[ .-]?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b"
                  r"|\+[1-9]\d{7,14}\b|\+\d{1,3}(?:[ .-]\d{2,5}){2,5}\b"),
)
DEFAULT_RULE_IDS: Final = frozenset(rule.rule_id for rule in DEFAULT_RULES)


# --- pattern compilation --------------------------------------------------------------------------------
_UNESCAPED = r"(?<!\\)(?:\\\\)*"
_LOOKAROUND = re.compile(_UNESCAPED + r"\(\?<?[=!]")
_BACKREF = re.compile(_UNESCAPED + r"(?:\\[1-9]|\(\?P=|\\[gk]<)")
_RAW_BOUNDARY: Final = r"(?:\b|\\[nrtbf]|\\u[0-9A-Fa-f]{4})"
_RAW_SPACE: Final = r"(?:\s|\\[nrtf])"


def compile_re2(pattern: str, where: str) -> Any:
    """Compile an RE2 pattern, translating failures into a ConfigError naming ``where``.

    Raises:
        ConfigError: unsupported syntax (backreferences, lookaround), invalid pattern, or one that
            matches the empty string (it would mask nothing and match everywhere).
    """
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{where}: pattern must be a non-empty string", details={"path": where})
    if len(pattern) > _MAX_PATTERN_CHARS:
        raise ConfigError(f"{where}: pattern longer than {_MAX_PATTERN_CHARS} characters", details={"path": where})
    compiled = _re2.RE2(pattern.encode("utf-8"), _OPTIONS)
    if not compiled.ok():
        raise ConfigError(f"{where}: {_explain(pattern, compiled.error().decode('utf-8', 'replace'))}",
                          details={"path": where})
    if compiled.Match(_ANCHOR_BOTH, b"", 0, 0)[0] != (-1, -1):
        raise ConfigError(f"{where}: pattern matches the empty string", details={"path": where})
    return compiled


def _explain(pattern: str, error: str) -> str:
    """A clear message for a pattern RE2 rejected (RE2 is linear-time, so some Perl syntax is missing)."""
    if _LOOKAROUND.search(pattern):
        return "lookahead/lookbehind is not supported (patterns run on RE2, a linear-time engine)"
    if _BACKREF.search(pattern):
        return "backreferences are not supported (patterns run on RE2, a linear-time engine)"
    return f"invalid RE2 pattern: {error}"


def rewrite_pattern(pattern: str, *, raw_json: bool, keep_groups: bool = False) -> str:
    """``pattern`` with every group made non-capturing (so patterns can be joined into one alternation).

    ``keep_groups`` leaves groups alone (for a rule's own raw-JSON regex, whose secret group is used).
    With ``raw_json``, ``\\b`` and ``\\s`` outside classes also accept a JSON escape (``\\n``, ``\\u00a0``…),
    so the pattern finds in raw JSON text everything it finds in the decoded strings.
    """
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            token = pattern[i:i + 2]
            if raw_json and not in_class and token in ("\\b", "\\s"):
                token = _RAW_BOUNDARY if token == "\\b" else _RAW_SPACE
            out.append(token)
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            for lead in ("^", "]"):  # a leading ']' (after an optional '^') is a literal
                if pattern.startswith(lead, i):
                    out.append(lead)
                    i += 1
            continue
        elif keep_groups:
            pass
        elif pattern.startswith(("(?P<", "(?<"), i):
            out.append("(?:")
            i = pattern.index(">", i) + 1
            continue
        elif ch == "(" and not pattern.startswith("(?", i):
            out.append("(?:")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _is_batchable(pattern: str) -> bool:
    """False for patterns anchored to the whole text (``\\A``, ``\\z``), which joined texts would break."""
    return "\\A" not in pattern and "\\z" not in pattern


def glob_to_re2(glob: str) -> str:
    """A case-insensitive key glob (``*``, ``?``) as an RE2 pattern body."""
    return "".join(".*" if ch == "*" else "." if ch == "?" else re2.escape(ch) for ch in glob.lower())


def glob_literal(glob: str) -> str:
    """The longest literal run of a glob (used to find candidate keys in raw JSON text)."""
    return max(re.split(r"[*?]", glob.lower()), key=len)


@dataclass(frozen=True, slots=True)
class ValueMatcher:
    """A compiled value rule: ``regex`` for decoded text, ``raw_regex`` for raw (undecoded) JSON text."""

    rule: RedactionRule
    regex: Any
    raw_regex: Any
    secret_group: int
    validator: Validator | None


@dataclass(frozen=True, slots=True)
class KeyMatcher:
    """A compiled key rule: whole-key matchers (lower-cased keys) for its globs and its exclusions."""

    rule: RedactionRule
    include: Any
    exclude: Any | None

    def matches(self, lowered_key: bytes) -> bool:
        """True if the (lower-cased, UTF-8) key is covered by this rule."""
        if self.include.Match(_ANCHOR_BOTH, lowered_key, 0, len(lowered_key))[0] == (-1, -1):
            return False
        return self.exclude is None or self.exclude.Match(_ANCHOR_BOTH, lowered_key, 0,
                                                          len(lowered_key))[0] == (-1, -1)


def compile_value_rule(rule: RedactionRule, where: str) -> ValueMatcher:
    """Compile a value rule (its raw-JSON variant too, for built-in patterns)."""
    regex = compile_re2(rule.pattern, f"{where}.pattern")
    validator = None
    if rule.validator is not None:
        validator = VALIDATORS.get(rule.validator)
        if validator is None:
            raise ConfigError(f"{where}.validator: unknown validator {rule.validator!r} "
                              f"(known: {', '.join(sorted(VALIDATORS))})", details={"path": f"{where}.validator"})
    raw_regex = regex
    if is_builtin(rule):
        raw_regex = compile_re2(rewrite_pattern(rule.pattern, raw_json=True, keep_groups=True), f"{where}.pattern")
    groups = dict(regex.NamedCapturingGroups())
    return ValueMatcher(rule, regex, raw_regex, groups.get(b"secret", 0), validator)


def compile_key_rule(rule: RedactionRule, where: str) -> KeyMatcher:
    """Compile a key rule's globs (and exclusions) into whole-key RE2 matchers."""
    globs = _split_globs(rule.pattern, f"{where}.pattern")
    include = compile_re2("|".join(glob_to_re2(g) for g in globs), f"{where}.pattern")
    exclude = None
    if rule.exclude:
        exclude_globs = [_check_glob(g, f"{where}.exclude[{i}]") for i, g in enumerate(rule.exclude)]
        exclude = compile_re2("|".join(glob_to_re2(g) for g in exclude_globs), f"{where}.exclude")
    return KeyMatcher(rule, include, exclude)


def _split_globs(pattern: str, where: str) -> list[str]:
    """The ``|``-separated globs of a key rule, each checked."""
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{where}: key pattern must be a non-empty string of globs", details={"path": where})
    return [_check_glob(g, where) for g in pattern.split("|")]


def _check_glob(glob: object, where: str) -> str:
    """A non-empty glob string, or ConfigError."""
    if not isinstance(glob, str) or not glob.strip() or not glob.isprintable():
        raise ConfigError(f"{where}: each glob must be a non-empty printable string", details={"path": where})
    return glob


def is_builtin(rule: RedactionRule) -> bool:
    """True for an unmodified default rule (whose raw-JSON variant is known to be safe)."""
    return rule.rule_id in DEFAULT_RULE_IDS and rule.pattern == _DEFAULT_PATTERNS[rule.rule_id]


_DEFAULT_PATTERNS: Final = {rule.rule_id: rule.pattern for rule in DEFAULT_RULES}


# --- policy ---------------------------------------------------------------------------------------------
class RedactionPolicy:
    """An immutable, compiled rule set (the defaults, or a tenant's configuration on top of them).

    Compiles every enabled rule when built, so bad patterns fail at load time, never on a span.
    ``detect`` is one alternation for the fast path: candidate sensitive JSON keys (group 1) or any
    value rule, with built-in patterns in their raw-JSON form, so a clean span costs one RE2 scan.
    """

    def __init__(self, rules: Iterable[RedactionRule], *, where: Mapping[str, str] | None = None) -> None:
        """Compile ``rules``; ``where`` maps rule_id → config path for error messages.

        Raises:
            ConfigError: a rule is invalid (message starts with its config path).
        """
        self.rules: tuple[RedactionRule, ...] = tuple(rules)
        where = where or {}
        seen: set[str] = set()
        values: list[ValueMatcher] = []
        keys: list[KeyMatcher] = []
        for i, rule in enumerate(self.rules):
            path = where.get(rule.rule_id, f"rules[{i}]")
            _check_rule_id(rule.rule_id, seen, f"{path}.rule_id")
            if rule.enabled and rule.kind == "value":
                values.append(compile_value_rule(rule, path))
            elif rule.enabled:
                keys.append(compile_key_rule(rule, path))
        self.value_matchers: tuple[ValueMatcher, ...] = tuple(values)
        self.key_matchers: tuple[KeyMatcher, ...] = tuple(keys)
        self.raw_json_ok = all(is_builtin(m.rule) for m in values)
        self.batchable = all(_is_batchable(m.rule.pattern) for m in values)
        keycand = _keycand_source(keys)
        self.keycand = compile_re2(keycand, "rules") if keycand is not None else None
        self.detect = _alternation(_detect_branches(keycand, values), "rules")
        self.leaf = _alternation([rewrite_pattern(m.rule.pattern, raw_json=False) for m in values], "rules")
        self.value_set = _rule_set([m.rule.pattern for m in values])
        self.raw_value_set = _rule_set([rewrite_pattern(m.rule.pattern, raw_json=True) if is_builtin(m.rule)
                                        else m.rule.pattern for m in values])

    def __repr__(self) -> str:
        """Rule ids only."""
        return f"RedactionPolicy({[r.rule_id for r in self.rules if r.enabled]})"

    @classmethod
    def default(cls) -> RedactionPolicy:
        """The built-in rule set (see :data:`DEFAULT_RULES`)."""
        return _default_policy()

    @classmethod
    def from_config(cls, doc: Mapping[str, Any], *, base: RedactionPolicy | None = None) -> RedactionPolicy:
        """A policy from a config document, applied on top of ``base`` (default: the built-in rules).

        ``doc`` keys: ``rules`` (new rules: rule_id, reason, kind, pattern, and optionally enabled,
        validator, exclude), ``override`` (rule_id → fields to change), ``disable`` / ``enable``
        (lists of rule ids).

        Raises:
            ConfigError: naming the offending path, e.g. ``rules[2].pattern: backreferences are not supported``.
        """
        if not isinstance(doc, Mapping):
            raise ConfigError("redaction config: must be a mapping", details={"path": "$"})
        unknown = sorted(set(doc) - {"rules", "override", "disable", "enable"})
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown key (expected rules, override, disable, enable)",
                              details={"path": str(unknown[0])})
        rules = list((base or cls.default()).rules)
        where: dict[str, str] = {}
        _add_rules(rules, where, doc.get("rules", []))
        _override_rules(rules, where, doc.get("override", {}))
        _toggle_rules(rules, doc.get("disable", []), "disable", enabled=False)
        _toggle_rules(rules, doc.get("enable", []), "enable", enabled=True)
        return cls(rules, where=where)

    def key_rule(self, key: str) -> RedactionRule | None:
        """The first key rule covering ``key`` (case-insensitive), or None. Uncached: callers cache."""
        lowered = key.lower().encode("utf-8", "surrogatepass")
        for matcher in self.key_matchers:
            if matcher.matches(lowered):
                return matcher.rule
        return None


_DEFAULT: list[RedactionPolicy] = []


def _default_policy() -> RedactionPolicy:
    """The default policy, compiled once per process (it is immutable)."""
    if not _DEFAULT:
        _DEFAULT.append(RedactionPolicy(DEFAULT_RULES))
    return _DEFAULT[0]


def _check_rule_id(rule_id: object, seen: set[str], where: str) -> None:
    """Rule ids are unique and marker-safe."""
    if not isinstance(rule_id, str) or not _RULE_ID.fullmatch(rule_id):
        raise ConfigError(f"{where}: rule_id must be 1-64 of letters, digits, '_', '.', '-'",
                          details={"path": where})
    if rule_id in seen:
        raise ConfigError(f"{where}: duplicate rule_id {rule_id!r}", details={"path": where})
    seen.add(rule_id)


def _keycand_source(keys: list[KeyMatcher]) -> str | None:
    """A pattern finding JSON object keys (in raw JSON text) that may be sensitive; group 1 is the key."""
    if not keys:
        return None
    literals = sorted({glob_literal(g) for m in keys for g in m.rule.pattern.split("|")})
    if "" in literals:  # a glob without literal text (e.g. "*"): every key is a candidate
        return '"([^"\\n]*)"\\s*:'
    body = "|".join(re2.escape(lit) for lit in literals)
    return f'"([^"\\n]*(?i:{body})[^"\\n]*)"\\s*:'


def _alternation(branches: list[str], where: str) -> Any | None:
    """One RE2 program for several patterns (None when there are none)."""
    if not branches:
        return None
    try:
        return compile_re2("|".join(f"(?:{b})" for b in branches), where)
    except ConfigError as exc:
        raise ConfigError(f"{where}: the combined rule set does not compile ({exc.message})",
                          details={"path": where}) from exc


def _rule_set(patterns: list[str]) -> Any | None:
    """An RE2 Set telling which patterns match a text, used only to narrow the rules tried.

    RE2::Set reports nothing if its DFA runs out of memory, so callers treat an empty answer as
    "try every rule" (never as "no match"); None if the set cannot be built.
    """
    if not patterns:
        return None
    rule_set = _re2.Set(UNANCHORED, _OPTIONS)
    for pattern in patterns:
        if rule_set.Add(pattern.encode("utf-8")) < 0:
            return None
    return rule_set if rule_set.Compile() else None


def _detect_branches(keycand: str | None, values: list[ValueMatcher]) -> list[str]:
    """Fast-path branches: every value rule (non-capturing), then keycand, whose group is group 1.

    Value rules come first so that, at one position, a value hit wins over a candidate key.

    Built-in patterns are used in their raw-JSON form; custom ones are made multi-line (``^``/``$`` also
    match at the newlines that join texts), which only widens what they find.
    """
    branches = []
    for m in values:
        if is_builtin(m.rule):
            branches.append(rewrite_pattern(m.rule.pattern, raw_json=True))
        else:
            branches.append("(?m:" + rewrite_pattern(m.rule.pattern, raw_json=False) + ")")
    return branches + ([keycand] if keycand is not None else [])


def _rule_from_mapping(item: object, where: str) -> RedactionRule:
    """A RedactionRule from a config mapping, every field type-checked."""
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: must be a mapping", details={"path": where})
    allowed = {"rule_id", "reason", "kind", "pattern", "enabled", "validator", "exclude"}
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown field", details={"path": f"{where}.{unknown[0]}"})
    for name in ("rule_id", "reason", "pattern"):
        if not isinstance(item.get(name), str) or not item[name]:
            raise ConfigError(f"{where}.{name}: required, a non-empty string", details={"path": f"{where}.{name}"})
    kind = item.get("kind")
    if kind not in ("key", "value"):
        raise ConfigError(f"{where}.kind: must be 'key' or 'value'", details={"path": f"{where}.kind"})
    enabled = item.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled: must be true or false", details={"path": f"{where}.enabled"})
    validator = item.get("validator")
    if validator is not None and (kind != "value" or not isinstance(validator, str)):
        raise ConfigError(f"{where}.validator: a validator name, for value rules only",
                          details={"path": f"{where}.validator"})
    exclude = item.get("exclude") or ()
    if exclude and (kind != "key" or not isinstance(exclude, list | tuple)):
        raise ConfigError(f"{where}.exclude: a list of globs, for key rules only", details={"path": f"{where}.exclude"})
    return RedactionRule(item["rule_id"], item["reason"], kind, item["pattern"], enabled, validator, tuple(exclude))


def _add_rules(rules: list[RedactionRule], where: dict[str, str], items: object) -> None:
    """Append the config's new rules (a rule_id that already exists must be overridden instead)."""
    existing = {r.rule_id for r in rules}
    for i, item in enumerate(_as_list(items, "rules")):
        rule = _rule_from_mapping(item, f"rules[{i}]")
        if rule.rule_id in existing:
            raise ConfigError(f"rules[{i}].rule_id: {rule.rule_id!r} already exists; use override to change it",
                              details={"path": f"rules[{i}].rule_id"})
        existing.add(rule.rule_id)
        where[rule.rule_id] = f"rules[{i}]"
        rules.append(rule)


def _override_rules(rules: list[RedactionRule], where: dict[str, str], overrides: object) -> None:
    """Replace fields of existing rules (rule_id and kind stay)."""
    if not isinstance(overrides, Mapping):
        raise ConfigError("override: must be a mapping of rule_id to fields", details={"path": "override"})
    index = {r.rule_id: i for i, r in enumerate(rules)}
    for rule_id, changes in overrides.items():
        path = f"override.{rule_id}"
        if rule_id not in index:
            raise ConfigError(f"{path}: unknown rule_id", details={"path": path})
        if not isinstance(changes, Mapping) or {"rule_id", "kind"} & set(changes):
            raise ConfigError(f"{path}: must be a mapping of fields other than rule_id and kind",
                              details={"path": path})
        current = rules[index[rule_id]]
        merged = {**asdict(current), **changes}
        if "pattern" in changes and "validator" not in changes and current.kind == "value":
            merged["validator"] = current.validator
        rules[index[rule_id]] = _rule_from_mapping(merged, path)
        where[rule_id] = path


def _toggle_rules(rules: list[RedactionRule], rule_ids: object, name: str, *, enabled: bool) -> None:
    """Disable (or re-enable) rules by id."""
    index = {r.rule_id: i for i, r in enumerate(rules)}
    for i, rule_id in enumerate(_as_list(rule_ids, name)):
        if rule_id not in index:
            raise ConfigError(f"{name}[{i}]: unknown rule_id {rule_id!r}", details={"path": f"{name}[{i}]"})
        rules[index[rule_id]] = replace(rules[index[rule_id]], enabled=enabled)


def _as_list(value: object, where: str) -> list[Any]:
    """A config list, or ConfigError."""
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: must be a list", details={"path": where})
    return list(value)
