"""Hostile input against the OTLP logs endpoints of a live server (gRPC LogsService and POST /v1/logs).

The same refusals as traces (``test_hostile_input.py``): malformed protobuf and JSON, bad hex ids, oversize
bodies and messages, gzip bombs, bad credentials. Each gets a clear error or a partial success, nothing
valid is lost, and at the end the server still answers and the content accepted first is there once.

The tests share one server; ``test_zz_server_survived_and_baseline_is_intact`` must stay last.
"""

from __future__ import annotations

import gzip
import os
from typing import Any

import grpc
import httpx
import orjson
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as ls_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from otlp_receiver.decode import MAX_STRING_BYTES
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer

pytestmark = pytest.mark.e2e

EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
AUTH = (("authorization", f"Bearer {INGEST_KEY}"),)
T0 = 1_767_225_600_000_000_000


def new_trace() -> str:
    return os.urandom(16).hex()


def pb_record(trace: str | bytes, *, content: str = "hi", event_name: str = "gen_ai.user.message",
              span: bytes = b"") -> logs_pb2.LogRecord:
    raw = bytes.fromhex(trace) if isinstance(trace, str) else trace
    body = common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=[
        common_pb2.KeyValue(key="content", value=common_pb2.AnyValue(string_value=content))]))
    return logs_pb2.LogRecord(trace_id=raw, span_id=span, event_name=event_name, time_unix_nano=T0, body=body)


def pb_logs(*records: logs_pb2.LogRecord) -> ls_pb2.ExportLogsServiceRequest:
    request = ls_pb2.ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.extend(records)
    return request


def json_logs(*records: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": list(records)}]}]})


def json_record(trace: str, content: str = "hi") -> dict[str, Any]:
    return {"traceId": trace, "eventName": "gen_ai.user.message", "timeUnixNano": str(T0),
            "body": {"kvlistValue": {"values": [{"key": "content", "value": {"stringValue": content}}]}}}


def post(server: LiveServer, body: bytes, content_type: str = "application/x-protobuf",
         key: str | None = INGEST_KEY, **headers: str) -> httpx.Response:
    hdrs = {"content-type": content_type, **headers}
    if key is not None:
        hdrs["authorization"] = f"Bearer {key}"
    return httpx.post(f"{server.otlp_http_url}/v1/logs", content=body, headers=hdrs, timeout=60)


def raw_export(channel: grpc.Channel, body: bytes, metadata: Any = AUTH) -> bytes:
    call = channel.unary_unary(EXPORT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return call(body, metadata=metadata, timeout=30)


def content_of(server: LiveServer, run_id: str) -> list[str]:
    """The user-message texts of a run's content steps."""
    steps = [s for s in server.all_steps(run_id) if s["type"] == "artifact"]
    return [m["parts"][0]["content"] for s in steps for m in s["payload"].get("input", [])]


def barrier(server: LiveServer, channel: grpc.Channel) -> None:
    """A fresh valid export, waited for: everything acknowledged earlier is flushed by then."""
    trace = new_trace()
    logs_service_pb2_grpc.LogsServiceStub(channel).Export(pb_logs(pb_record(trace)), metadata=AUTH, timeout=30)
    server.wait_run(trace)


def assert_absent(server: LiveServer, *run_ids: str) -> None:
    for run_id in run_ids:
        assert server.get(f"/v1/runs/{run_id}").status_code == 404, run_id


@pytest.fixture(scope="module")
def baseline(shared_server: LiveServer, channel: grpc.Channel) -> dict[str, str]:
    """Content accepted before any hostile request, over gRPC (gzip), OTLP/HTTP protobuf (gzip) and JSON."""
    runs = {new_trace(): "grpc", new_trace(): "http-protobuf", new_trace(): "http-json"}
    grpc_trace, pb_trace, json_trace = runs
    logs_service_pb2_grpc.LogsServiceStub(channel).Export(
        pb_logs(pb_record(grpc_trace, content="grpc")), metadata=AUTH, timeout=30, compression=grpc.Compression.Gzip)
    body = gzip.compress(pb_logs(pb_record(pb_trace, content="http-protobuf")).SerializeToString())
    assert post(shared_server, body, **{"content-encoding": "gzip"}).status_code == 200
    assert post(shared_server, json_logs(json_record(json_trace, "http-json")), "application/json").status_code == 200
    for run_id in runs:
        shared_server.wait_run(run_id)
    return runs


# --- gRPC ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    b"\xff\xff\xff\xff",
    pb_logs(pb_record("01" * 16, content="x" * 50)).SerializeToString()[:-20],
    pb_logs(pb_record("01" * 16, content="NAME")).SerializeToString().replace(b"NAME", b"N\xc3\x28E"),
], ids=["garbage", "truncated", "invalid-utf8"])
def test_grpc_malformed_protobuf_is_invalid_argument(baseline: dict[str, str], channel: grpc.Channel,
                                                     body: bytes) -> None:
    with pytest.raises(grpc.RpcError) as info:
        raw_export(channel, body)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "protobuf" in (info.value.details() or "")


def test_grpc_message_over_4_mib_is_resource_exhausted(shared_server: LiveServer, baseline: dict[str, str],
                                                       channel: grpc.Channel) -> None:
    trace = new_trace()
    request = pb_logs(pb_record(trace, content="x" * (4 * 1024 * 1024 + 10)))
    with pytest.raises(grpc.RpcError) as info:
        logs_service_pb2_grpc.LogsServiceStub(channel).Export(request, metadata=AUTH, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    barrier(shared_server, channel)
    assert_absent(shared_server, trace)


@pytest.mark.parametrize("metadata", [
    (), (("authorization", "Bearer tw_1a2b3c4d_wrong-secret"),), (("authorization", f"Bearer {ADMIN_KEY}"),),
], ids=["missing", "wrong-secret", "admin-key"])
def test_grpc_bad_credentials_are_unauthenticated(shared_server: LiveServer, baseline: dict[str, str],
                                                  channel: grpc.Channel, metadata: Any) -> None:
    trace = new_trace()
    with pytest.raises(grpc.RpcError) as info:
        logs_service_pb2_grpc.LogsServiceStub(channel).Export(pb_logs(pb_record(trace)), metadata=metadata,
                                                              timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    barrier(shared_server, channel)
    assert_absent(shared_server, trace)


def test_grpc_bad_ids_are_partial_success(shared_server: LiveServer, baseline: dict[str, str],
                                          channel: grpc.Channel) -> None:
    trace = new_trace()
    request = pb_logs(pb_record(b"\x01" * 15), pb_record(trace, span=b"\x02" * 9), pb_record(trace, content="kept"))
    response = logs_service_pb2_grpc.LogsServiceStub(channel).Export(request, metadata=AUTH, timeout=30)
    assert response.partial_success.rejected_log_records == 2
    assert "invalid trace_id" in response.partial_success.error_message
    shared_server.wait_run(trace)
    assert content_of(shared_server, trace) == ["kept"]


# --- HTTP ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [b"{", b"[]", b"null", b'{"resourceLogs": 7}', b'{"resourceLogs": [{"scopeLogs": [1]}]}',
                                  b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}'])
def test_http_bad_json_is_400(shared_server: LiveServer, baseline: dict[str, str], body: bytes) -> None:
    resp = post(shared_server, body, "application/json")
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] in ("decode_error", "invalid_input")


def test_http_malformed_protobuf_is_400_with_a_protobuf_status(shared_server: LiveServer,
                                                               baseline: dict[str, str]) -> None:
    resp = post(shared_server, b"\xff\xff\xff\xff")
    assert resp.status_code == 400
    assert resp.headers["content-type"].split(";")[0] == "application/x-protobuf"
    assert "protobuf" in status_pb2.Status.FromString(resp.content).message


def test_http_bad_hex_ids_are_partial_success(shared_server: LiveServer, baseline: dict[str, str]) -> None:
    trace = new_trace()
    records = [{**json_record(trace), "traceId": "xyz"}, {**json_record(trace), "spanId": "0102"},
               {**json_record(trace), "traceId": "ab" * 17}, json_record(trace, "kept")]
    resp = post(shared_server, json_logs(*records), "application/json")
    assert resp.status_code == 200, resp.text
    assert resp.json()["partialSuccess"]["rejectedLogRecords"] == "3"
    shared_server.wait_run(trace)
    assert content_of(shared_server, trace) == ["kept"]


def test_http_protobuf_partial_success_is_protobuf(shared_server: LiveServer, baseline: dict[str, str]) -> None:
    resp = post(shared_server, pb_logs(pb_record(b"\x01" * 3)).SerializeToString())
    assert resp.status_code == 200
    assert resp.headers["content-type"].split(";")[0] == "application/x-protobuf"
    assert ls_pb2.ExportLogsServiceResponse.FromString(resp.content).partial_success.rejected_log_records == 1


def test_http_gzip_bomb_is_413(shared_server: LiveServer, baseline: dict[str, str]) -> None:
    bomb = gzip.compress(b"\x0a" * (64 * 1024 * 1024), compresslevel=9)
    resp = post(shared_server, bomb, **{"content-encoding": "gzip"})
    assert resp.status_code == 413


def test_http_body_over_20_mib_is_413(shared_server: LiveServer, baseline: dict[str, str]) -> None:
    assert post(shared_server, b"\x00" * (20 * 1024 * 1024 + 1)).status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", ""])
def test_http_unsupported_content_type(shared_server: LiveServer, baseline: dict[str, str], content_type: str) -> None:
    assert post(shared_server, json_logs(json_record(new_trace())), content_type).status_code in (400, 415)


def test_http_truncated_gzip_is_400(shared_server: LiveServer, baseline: dict[str, str]) -> None:
    body = gzip.compress(json_logs(json_record(new_trace())))[:-8]
    resp = post(shared_server, body, "application/json", **{"content-encoding": "gzip"})
    assert resp.status_code == 400 and "gzip" in resp.text


@pytest.mark.parametrize("key", [None, "tw_1a2b3c4d_wrong-secret", "garbage"])
def test_http_bad_credentials_are_401(shared_server: LiveServer, baseline: dict[str, str], key: str | None) -> None:
    trace = new_trace()
    assert post(shared_server, json_logs(json_record(trace)), "application/json", key=key).status_code == 401
    assert_absent(shared_server, trace)


def test_http_huge_content_is_stored_truncated(shared_server: LiveServer, baseline: dict[str, str]) -> None:
    trace = new_trace()
    resp = post(shared_server, gzip.compress(json_logs(json_record(trace, "y" * (MAX_STRING_BYTES + 1000)))),
                "application/json", **{"content-encoding": "gzip"})
    assert resp.status_code == 200, resp.text
    shared_server.wait_run(trace)
    (stored,) = content_of(shared_server, trace)
    assert stored.endswith("…[truncated 1000 bytes]") and len(stored.encode()) < MAX_STRING_BYTES + 100


# --- last: the server survived, and the baseline is intact -----------------------------------------------------
def test_zz_server_survived_and_baseline_is_intact(shared_server: LiveServer, baseline: dict[str, str],
                                                   channel: grpc.Channel) -> None:
    barrier(shared_server, channel)
    for run_id, content in baseline.items():
        assert content_of(shared_server, run_id) == [content]
        assert shared_server.get(f"/v1/runs/{run_id}").json()["step_count"] == 1
