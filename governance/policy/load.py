"""Policy text to a plain document: size limit, content type, and strict YAML or JSON.

Strict means no YAML aliases, duplicate keys, YAML 1.1 yes/no booleans or timestamps, and no JSON
NaN/Infinity. What the document says is checked by ``governance.policy.parse``. Imports only the
standard library, PyYAML and the package's errors and model.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

import yaml

from governance.policy.errors import _ROOT, _error, _fail
from governance.policy.model import MAX_POLICY_BYTES


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases, duplicate keys, YAML 1.1 yes/no booleans or timestamps."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # types-PyYAML: unannotated
            _fail(_ROOT, f"line {mark.line + 1}: YAML aliases are not allowed")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                continue  # non-string keys are reported as unknown keys by validation
            if key in seen:
                _fail(_ROOT, f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_StrictLoader.yaml_implicit_resolvers = {
    first: [
        (tag, _BOOL_RE if tag == "tag:yaml.org,2002:bool" else rx)
        for tag, rx in resolvers
        if tag != "tag:yaml.org,2002:timestamp"
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_document(text: str, content_type: str) -> Any:
    """The plain document in ``text`` (YAML or JSON, by ``content_type``), not yet validated."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_POLICY_BYTES:
        _fail(_ROOT, f"policy is {size} bytes, over the {MAX_POLICY_BYTES}-byte limit")
    kind = content_type.split(";")[0].strip().lower()
    if kind not in _JSON_TYPES + _YAML_TYPES:
        _fail(_ROOT, f"unsupported content type {content_type!r} (use yaml or json)")
    try:
        return _load_json(text) if kind in _JSON_TYPES else _load_yaml(text)
    except RecursionError as exc:
        raise _error(_ROOT, "the document is nested too deeply") from exc


_JSON_TYPES = ("json", "application/json")
_YAML_TYPES = ("yaml", "yml", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise _error(_ROOT, f"invalid YAML at line {line}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise _error(_ROOT, f"invalid YAML: {exc}") from exc


def _load_json(text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                _fail(_ROOT, f"duplicate key {key!r}")
            seen.add(key)
        return dict(items)

    def reject(name: str) -> NoReturn:
        _fail(_ROOT, f"{name} is not allowed")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=reject)
    except json.JSONDecodeError as exc:
        raise _error(_ROOT, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
