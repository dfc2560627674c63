"""``traceward verify``, ``traceward export-run`` and ``traceward admin public-key``; the offline export format.

An export (CloudTrail digest files are the model) is a directory that verifies with no database:

    steps.jsonl    the run's stored steps, one JSON object per line, in seq order (payload as its canonical text)
    seals.json     {"seals": [{"audit_id", "seal"}, ...]}: every signed seal of the run, oldest first
    jwks.json      the public keys (JWKS) — for convenience only: the verifier must bring its own trusted key
    manifest.json  {"format", "v", "tenant_id", "run_id", "step_count", "head_hash", "exported_ns", "files"}

Exporting first seals the run's current head (if it is not sealed yet) and exports exactly the steps the latest
seal covers. ``traceward verify --offline DIR --public-key KEY`` (KEY: a JWKS or PEM file, e.g. from ``traceward
admin public-key --out FILE``) checks every seal's signature, re-chains the steps from the genesis of the tenant
and run named by the signed seal, and requires each seal's head at the step count it sealed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from governance.tokens import SigningKeys, key_id
from otlp_receiver.chain import verify_chain
from otlp_receiver.columns import STEP_COLUMN_NAMES
from otlp_receiver.errors import InvalidInputError, NotFoundError
from otlp_receiver.store.audit import AuditLog
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.retention import known_tenants
from otlp_receiver.store.steps import StepTable
from server.sealing import RunSealer, SealEntry, run_seals, seal_problem
from server.settings import Settings
from server.signing import load_signing_keys
from server.steps import run_days
from server.verify import (
    HeadProbe,
    RunReport,
    TenantReport,
    Verifier,
    audit_failures,
    iter_run_rows,
    seal_break,
    verify_run_audited,
)

EXPORT_FORMAT = "traceward.run-export"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)


# -- export ------------------------------------------------------------------------------------------------
def export_run(index: RunIndex, steps: StepTable, sealer: RunSealer, tenant_id: str, run_id: str, out_dir: Path,
               jwks: Mapping[str, Any], *, actor: str) -> dict[str, Any]:
    """Write the run's sealed steps, its seals and the public keys to ``out_dir``; returns the manifest."""
    if index.get_run_row(tenant_id, run_id) is None:
        raise NotFoundError(f"run {run_id} not found")
    sealer.seal_now(tenant_id, run_id, trigger="export", actor=actor)
    seals = run_seals(index, tenant_id, run_id)
    if not seals:
        raise InvalidInputError(f"run {run_id} has no steps to export")
    count = seals[-1].step_count
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with (out_dir / "steps.jsonl").open("wb") as out:
        for row in iter_run_rows(steps, tenant_id, run_id, run_days(index, tenant_id, run_id), expected_steps=count,
                                 columns=STEP_COLUMN_NAMES):
            if row["seq"] < count:  # exactly what the latest seal covers
                line = orjson.dumps(row) + b"\n"
                out.write(line)
                digest.update(line)
    manifest = {"format": EXPORT_FORMAT, "v": 1, "tenant_id": tenant_id, "run_id": run_id, "step_count": count,
                "head_hash": seals[-1].head_hash, "exported_ns": time.time_ns(),
                "files": {"steps.jsonl": "sha256:" + digest.hexdigest()}}
    _write_json(out_dir / "seals.json", {"seals": [{"audit_id": e.audit_id, "seal": e.seal} for e in seals]})
    _write_json(out_dir / "jwks.json", jwks)
    _write_json(out_dir / "manifest.json", manifest)
    return manifest


def _write_json(path: Path, doc: Any) -> None:
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


# -- offline verification ----------------------------------------------------------------------------------
def verify_export(directory: Path, public_keys: Mapping[str, Ed25519PublicKey]) -> tuple[str, RunReport]:
    """Verify an export against trusted public keys; returns (tenant id, report)."""
    if not (directory / "steps.jsonl").is_file():
        raise InvalidInputError(f"{directory}: not a run export (no steps.jsonl)")
    manifest = _read_json(directory / "manifest.json")
    seals = [SealEntry(int(s.get("audit_id", i)), s.get("seal") or {})
             for i, s in enumerate(_read_json(directory / "seals.json").get("seals") or [])]
    if not seals:
        raise InvalidInputError(f"{directory}: the export holds no seal")
    latest = max(seals, key=lambda e: (e.step_count, e.seal.get("sealed_ns") or 0))
    tenant_id, run_id = str(latest.seal.get("tenant_id")), str(latest.seal.get("run_id"))
    problems = [seal_problem(e, public_keys, tenant_id, run_id) for e in seals]
    if (manifest.get("tenant_id"), manifest.get("run_id")) != (tenant_id, run_id):
        problems.append("the manifest names another run than its signed seals")
    probe = HeadProbe(e.step_count - 1 for e in seals)
    verdict = verify_chain(tenant_id, run_id, probe.watch(_jsonl_rows(directory / "steps.jsonl")),
                           expected_head=latest.head_hash, expected_count=latest.step_count)
    problem = next((p for p in problems if p), None)
    breaks = [seal_break(verdict, e, probe, problem) for e in seals]
    seal_brk = next((b for b in breaks if b is not None), None)
    first = verdict.first_break or seal_brk
    return tenant_id, RunReport(run_id, first is None, verdict.steps_checked, verdict.head_hash, first, sealed=True,
                                seal_ok=seal_brk is None, seal=latest)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: not a readable export file ({type(exc).__name__})") from exc
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{path}: expected a JSON object")
    return doc


def _jsonl_rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as lines:
        for line in lines:
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = {}
            yield row if isinstance(row, dict) else {}  # a malformed line is reported as a malformed row


def load_public_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """Ed25519 public keys by key id (JWK thumbprint) from a JWKS or PEM file; private keys yield their public key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read the public key file ({exc.strerror})") from exc
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        keys = [_pem_public_key(m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    else:
        keys = [_jwk_public_key(jwk) for jwk in (doc.get("keys") or [] if isinstance(doc, dict) else [])]
    found = {key_id(k): k for k in keys if k is not None}
    if not found:
        raise InvalidInputError(f"{path}: no Ed25519 public key found (expected a JWKS or PEM file)")
    return found


def _pem_public_key(block: bytes) -> Ed25519PublicKey | None:
    try:
        key: Any = (serialization.load_pem_private_key(block, password=None) if b"PRIVATE" in block[:40]
                    else serialization.load_pem_public_key(block))
    except (ValueError, TypeError):
        return None
    if isinstance(key, Ed25519PrivateKey):
        return key.public_key()
    return key if isinstance(key, Ed25519PublicKey) else None


def _jwk_public_key(jwk: Any) -> Ed25519PublicKey | None:
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        return None
    try:
        x = str(jwk.get("x", ""))
        return Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
    except ValueError:
        return None


def stored_public_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """The public keys of the server's signing key file (read-only: never creates it)."""
    return dict(SigningKeys.from_pem(path.read_bytes()).public_keys) if path.exists() else {}


# -- CLI -----------------------------------------------------------------------------------------------------
def add_commands(sub: Any, admin_sub: Any) -> None:
    """Register ``verify``, ``export-run`` and ``admin public-key`` on the ``traceward`` parser."""
    verify = sub.add_parser("verify", help="verify hash chains, seals and the audit log (exit 1 on any failure)")
    _data_dir_flag(verify)
    which = verify.add_mutually_exclusive_group()
    which.add_argument("--run", default=None, help="one run (of --tenant, default TRACEWARD_DEFAULT_TENANT)")
    which.add_argument("--all", action="store_true", help="every tenant (the default)")
    which.add_argument("--offline", type=Path, default=None, metavar="EXPORT_DIR",
                       help="an export-run directory, verified without any database")
    verify.add_argument("--tenant", default=None, help="one tenant (with --run: the run's tenant)")
    verify.add_argument("--public-key", type=Path, default=None, help="with --offline: trusted JWKS or PEM file")
    verify.set_defaults(func=cli_verify)
    export = sub.add_parser("export-run", help="export a run's steps, seals and public keys for offline verify")
    _data_dir_flag(export)
    export.add_argument("run_id")
    export.add_argument("--out", type=Path, required=True, help="directory to write")
    export.add_argument("--tenant", default=None, help="tenant id (default: TRACEWARD_DEFAULT_TENANT)")
    export.set_defaults(func=cli_export_run)
    public = admin_sub.add_parser("public-key", help="write the public keys that verify seals (JWKS or PEM)")
    _data_dir_flag(public)
    public.add_argument("--out", type=Path, required=True)
    public.add_argument("--format", choices=("jwks", "pem"), default="jwks")
    public.set_defaults(func=cli_public_key)


def _data_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None, help="env TRACEWARD_DATA_DIR (./traceward-data)")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(os.environ, data_dir=args.data_dir)


def cli_verify(args: argparse.Namespace) -> int:
    """``traceward verify``: 0 when everything verifies, 1 otherwise."""
    if args.offline is not None:
        if args.public_key is None:
            raise InvalidInputError("--offline needs --public-key (a JWKS or PEM file you trust)")
        tenant_id, report = verify_export(args.offline, load_public_keys(args.public_key))
        print(describe_run(report, prefix=f"offline export of tenant {tenant_id}: "))
        return 0 if report.ok else 1
    settings = _settings(args)
    index = RunIndex(settings.index_path)  # not a Runtime: never touch a running server's WAL
    verifier = Verifier(index, StepTable(settings.steps_path), stored_public_keys(settings.signing_key_file))
    audit = AuditLog(index)
    if args.run:
        tenant_id = args.tenant or settings.default_tenant
        report = verify_run_audited(verifier, audit, tenant_id, args.run.lower(), actor="cli:verify", source="cli")
        print(describe_run(report))
        return 0 if report.ok else 1
    ok = True
    for tenant_id in [args.tenant] if args.tenant else known_tenants(index):
        tenant_report = verifier.tenant(tenant_id)
        audit_failures(audit, tenant_id, "cli:verify", tenant_report, source="cli")
        print("\n".join(describe_tenant(tenant_report)))
        ok = ok and tenant_report.ok
    return 0 if ok else 1


def cli_export_run(args: argparse.Namespace) -> int:
    """``traceward export-run RUN_ID --out DIR``."""
    settings = _settings(args)
    index = RunIndex(settings.index_path)
    keys = load_signing_keys(settings.signing_key_file)
    sealer = RunSealer(index, AuditLog(index), lambda: keys, idle_s=0, interval_s=0)
    manifest = export_run(index, StepTable(settings.steps_path), sealer, args.tenant or settings.default_tenant,
                          args.run_id.lower(), args.out, keys.jwks(), actor="cli:export-run")
    print(f"exported run {manifest['run_id']} ({manifest['step_count']} steps, head {manifest['head_hash']}) "
          f"to {args.out}")
    return 0


def cli_public_key(args: argparse.Namespace) -> int:
    """``traceward admin public-key --out FILE``: the keys that verify seals (current and retired)."""
    keys = load_signing_keys(_settings(args).signing_key_file)
    if args.format == "jwks":
        args.out.write_bytes(orjson.dumps(keys.jwks(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        pems = [k.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                for k in keys.public_keys.values()]
        args.out.write_bytes(b"".join(pems))
    print(f"wrote {len(keys.public_keys)} public key(s) to {args.out} (current key id {keys.current_kid})",
          file=sys.stderr)
    return 0


def describe_run(report: RunReport, *, prefix: str = "") -> str:
    """One line about a run."""
    head = f"{prefix}run {report.run_id}"
    if report.deleted == "retention":
        return f"{head}: deleted by retention (tombstone after its seal): OK"
    seal = "sealed, seal OK" if report.seal_ok else ("sealed, SEAL BROKEN" if report.sealed else "not sealed yet")
    if report.ok:
        return f"{head}: OK, {report.steps_checked} steps verified, head {report.head_hash} ({seal})"
    brk = report.first_break
    where = f"seq {brk.seq}: {brk.reason}" if brk else "unknown"
    return f"{head}: BROKEN at {where} ({report.steps_checked} steps verified before; {seal})"


def describe_tenant(report: TenantReport) -> list[str]:
    """A summary line for the tenant, then one line per failure."""
    audit = ("audit log OK" if report.audit.ok else
             f"audit log BROKEN at row {report.audit.first_bad_id}: {report.audit.reason}")
    seals = f"{report.seals} seals " + ("OK" if report.seal_chain_problem is None
                                         else f"BROKEN: {report.seal_chain_problem}")
    lines = [f"tenant {report.tenant_id}: {'OK' if report.ok else 'FAILED'} — {audit} ({report.audit.rows_checked} "
             f"rows); {seals}; {report.runs_checked} runs, {report.steps_checked} steps verified; "
             f"{report.deleted_by_retention} runs deleted by retention"]
    lines += ["  " + describe_run(run) for run in report.failures]
    return lines
