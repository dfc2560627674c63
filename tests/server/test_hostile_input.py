"""Hostile input against a live server, over OTLP gRPC and OTLP/HTTP.

Malformed payloads, oversize messages, bad credentials, bad ids, huge and deeply nested attribute
values, gzip bombs: each gets a clear error (or a partial success), nothing valid is lost, and at
the end the server still answers and the spans accepted *before* all this are there exactly once.

The tests share one server; ``test_zz_server_survived_and_baseline_is_intact`` must stay last.
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import Any

import grpc
import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from otlp_receiver.decode import MAX_ATTR_DEPTH, MAX_STRING_BYTES
from tests.live import ADMIN_KEY, INGEST_KEY, LiveServer

pytestmark = pytest.mark.e2e

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
AUTH = (("authorization", f"Bearer {INGEST_KEY}"),)
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MARKER = f"[truncated: nesting deeper than {MAX_ATTR_DEPTH}]"


# --- builders -------------------------------------------------------------------------------------------
def new_trace() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def kv(key: str, value: Any) -> common_pb2.KeyValue:
    if isinstance(value, dict):
        inner = common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=[kv(k, v) for k, v in value.items()]))
    elif isinstance(value, int):
        inner = common_pb2.AnyValue(int_value=value)
    else:
        inner = common_pb2.AnyValue(string_value=value)
    return common_pb2.KeyValue(key=key, value=inner)


def pb_span(trace: str | bytes, span: str | bytes, parent: str | None = None, *, name: str = "step",
            offset_ms: int = 0, attributes: dict[str, Any] | None = None) -> trace_pb2.Span:
    def raw(v: str | bytes) -> bytes:
        return bytes.fromhex(v) if isinstance(v, str) else v

    start = T0 + offset_ms * 1_000_000
    return trace_pb2.Span(trace_id=raw(trace), span_id=raw(span), parent_span_id=raw(parent) if parent else b"",
                          name=name, start_time_unix_nano=start, end_time_unix_nano=start + 1_000_000,
                          attributes=[kv(k, v) for k, v in (attributes or {}).items()])


def pb_request(*spans: trace_pb2.Span) -> ts_pb2.ExportTraceServiceRequest:
    req = ts_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "hostile-tests"))
    rs.scope_spans.add().spans.extend(spans)
    return req


def json_span(trace: str, span: str, parent: str | None = None, *, name: str = "step",
              attributes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out = {"traceId": trace, "spanId": span, "name": name, "kind": 1, "startTimeUnixNano": str(T0),
           "endTimeUnixNano": str(T0 + 1_000_000), "attributes": attributes or []}
    if parent:
        out["parentSpanId"] = parent
    return out


def json_request(*spans: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "hostile-tests"}}]},
        "scopeSpans": [{"scope": {"name": "tests"}, "spans": list(spans)}]}]})


def nested_kvlist(depth: int) -> bytes:
    """A serialized AnyValue nested ``depth`` kvlists deep, hand-encoded (protobuf refuses to build it)."""
    value = _ld(1, b"leaf")
    for i in range(depth):
        value = _ld(6, _ld(1, _ld(1, f"k{i}".encode()) + _ld(2, value)))
    return value


def request_with_raw_attribute(span: trace_pb2.Span, key: str, value: bytes) -> bytes:
    span_bytes = span.SerializeToString() + _ld(9, _ld(1, key.encode()) + _ld(2, value))
    return _ld(1, _ld(2, _ld(2, span_bytes)))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def nesting(value: Any) -> tuple[int, Any]:
    depth = 0
    while isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
        depth += 1
    return depth, value


# --- fixtures and helpers ---------------------------------------------------------------------------------
def stub(channel: grpc.Channel) -> trace_service_pb2_grpc.TraceServiceStub:
    return trace_service_pb2_grpc.TraceServiceStub(channel)


def raw_export(channel: grpc.Channel, body: bytes, metadata: Any = AUTH) -> bytes:
    call = channel.unary_unary(EXPORT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    return call(body, metadata=metadata, timeout=30)


def otlp_post(server: LiveServer, body: bytes, content_type: str = "application/x-protobuf",
              key: str | None = INGEST_KEY, **headers: str) -> httpx.Response:
    hdrs = {"content-type": content_type, **headers}
    if key is not None:
        hdrs["authorization"] = f"Bearer {key}"
    return httpx.post(f"{server.otlp_http_url}/v1/traces", content=body, headers=hdrs, timeout=60)


def barrier(server: LiveServer, channel: grpc.Channel) -> None:
    """Send a fresh valid span and wait for its run: everything acknowledged earlier is flushed by then."""
    trace = new_trace()
    stub(channel).Export(pb_request(pb_span(trace, new_span_id(), name="barrier")), metadata=AUTH, timeout=30)
    server.wait_run(trace)


def step_by_span(server: LiveServer, run_id: str) -> dict[str, dict[str, Any]]:
    return {s["span_id"]: s for s in server.all_steps(run_id, limit=1000)}


def assert_absent(server: LiveServer, *run_ids: str) -> None:
    for run_id in run_ids:
        assert server.get(f"/v1/runs/{run_id}").status_code == 404, run_id


@pytest.fixture(scope="module")
def baseline(shared_server: LiveServer, channel: grpc.Channel) -> dict[str, list[str]]:
    """Spans accepted before any hostile request, over gRPC (gzip), OTLP/HTTP protobuf and OTLP/JSON."""
    runs: dict[str, list[str]] = {}
    trace = new_trace()
    ids = [new_span_id() for _ in range(4)]
    spans = [pb_span(trace, ids[0], name="root")] + [pb_span(trace, i, ids[0], offset_ms=n + 1)
                                                     for n, i in enumerate(ids[1:])]
    response = stub(channel).Export(pb_request(*spans), metadata=AUTH, timeout=30,
                                    compression=grpc.Compression.Gzip)
    assert not response.HasField("partial_success")
    runs[trace] = ids

    trace = new_trace()
    ids = [new_span_id() for _ in range(3)]
    body = pb_request(*(pb_span(trace, i, name=f"http-{n}", offset_ms=n) for n, i in enumerate(ids)))
    resp = otlp_post(shared_server, gzip.compress(body.SerializeToString()), **{"content-encoding": "gzip"})
    assert resp.status_code == 200, resp.text
    runs[trace] = ids

    trace = new_trace()
    ids = [new_span_id() for _ in range(2)]
    resp = otlp_post(shared_server, json_request(*(json_span(trace, i) for i in ids)), "application/json")
    assert resp.status_code == 200, resp.text
    runs[trace] = ids

    for run_id, span_ids in runs.items():
        count = len(span_ids)
        shared_server.wait_run(run_id, lambda r, n=count: r["step_count"] == n)
    return runs


# --- gRPC ---------------------------------------------------------------------------------------------------
def _invalid_utf8_request() -> bytes:
    return pb_request(pb_span(new_trace(), new_span_id(), name="NAME")).SerializeToString() \
        .replace(b"NAME", b"N\xc3\x28E")


@pytest.mark.parametrize("body", [
    b"\xff\xff\xff\xff",
    pb_request(pb_span("01" * 16, "02" * 8, name="x" * 50)).SerializeToString()[:-20],
    _invalid_utf8_request(),
], ids=["garbage", "truncated", "invalid-utf8"])
def test_grpc_malformed_protobuf_is_invalid_argument(baseline: dict[str, list[str]], channel: grpc.Channel,
                                                     body: bytes) -> None:
    with pytest.raises(grpc.RpcError) as info:
        raw_export(channel, body)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "protobuf" in (info.value.details() or "")


def test_grpc_malformed_protobuf_is_refused_without_harm(baseline: dict[str, list[str]],
                                                         channel: grpc.Channel) -> None:
    """Whatever the status code, a malformed message is an error (not OK) and the next call works."""
    for body in (b"\xff\xff\xff\xff", _invalid_utf8_request()):
        with pytest.raises(grpc.RpcError) as info:
            raw_export(channel, body)
        assert info.value.code() != grpc.StatusCode.OK
    assert stub(channel).Export(ts_pb2.ExportTraceServiceRequest(), metadata=AUTH, timeout=30) is not None


def test_grpc_message_over_4_mib_is_resource_exhausted(shared_server: LiveServer, baseline: dict[str, list[str]],
                                                       channel: grpc.Channel) -> None:
    trace = new_trace()
    req = pb_request(pb_span(trace, new_span_id(), attributes={"big": "x" * (4 * 1024 * 1024 + 10)}))
    with pytest.raises(grpc.RpcError) as info:
        stub(channel).Export(req, metadata=AUTH, timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    barrier(shared_server, channel)
    assert_absent(shared_server, trace)


@pytest.mark.parametrize("metadata", [
    (),
    (("authorization", "Bearer tw_1a2b3c4d_wrong-secret"),),
    (("authorization", "Bearer tw_00000000_unknown-prefix"),),
    (("authorization", "Bearer not-a-traceward-key"),),
    (("authorization", f"Basic {INGEST_KEY}"),),
    (("authorization", "Bearer "),),
    (("authorization", INGEST_KEY),),
    (("authorization", f"Bearer {ADMIN_KEY}"),),  # a valid key that may not ingest
], ids=["missing", "wrong-secret", "unknown-key", "malformed-key", "basic-scheme", "empty-bearer", "no-scheme",
        "admin-key"])
def test_grpc_bad_credentials_are_unauthenticated(shared_server: LiveServer, baseline: dict[str, list[str]],
                                                  channel: grpc.Channel, metadata: Any) -> None:
    trace = new_trace()
    with pytest.raises(grpc.RpcError) as info:
        stub(channel).Export(pb_request(pb_span(trace, new_span_id())), metadata=metadata, timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details()
    barrier(shared_server, channel)
    assert_absent(shared_server, trace)


def test_grpc_mixed_batch_is_partial_success(shared_server: LiveServer, baseline: dict[str, list[str]],
                                             channel: grpc.Channel) -> None:
    trace = new_trace()
    good = [new_span_id() for _ in range(3)]
    resent_run, resent_ids = next(iter(baseline.items()))
    spans = [pb_span(trace, good[0], name="root")]
    spans += [pb_span(trace, s, good[0], offset_ms=1) for s in good[1:]]
    spans += [pb_span(b"\x01" * 15, new_span_id()), pb_span(trace, b"\x00" * 8),
              pb_span(b"\x00" * 16, new_span_id()), pb_span(trace, new_span_id(), parent="abcd")]
    spans += [pb_span(resent_run, s, offset_ms=n) for n, s in enumerate(resent_ids)]  # an exporter retry
    response = stub(channel).Export(pb_request(*spans), metadata=AUTH, timeout=30)
    assert response.partial_success.rejected_spans == 4
    message = response.partial_success.error_message
    for reason in ("invalid trace_id: expected 16 bytes, got 15", "invalid span_id: all zeros",
                   "invalid trace_id: all zeros", "invalid parent_span_id"):
        assert reason in message
    run = shared_server.wait_run(trace, lambda r: r["step_count"] == 3)
    assert run["step_count"] == 3
    assert sorted(step_by_span(shared_server, trace)) == sorted(good)


def test_grpc_huge_attribute_is_stored_truncated(shared_server: LiveServer, baseline: dict[str, list[str]],
                                                 channel: grpc.Channel) -> None:
    trace, span = new_trace(), new_span_id()
    huge = "ab" * (3 * 512 * 1024 - 1000)  # ~3 MiB, within the 4 MiB message limit
    response = stub(channel).Export(pb_request(pb_span(trace, span, attributes={"huge": huge, "small": "ok"})),
                                    metadata=AUTH, timeout=30)
    assert not response.HasField("partial_success")
    shared_server.wait_run(trace, lambda r: r["step_count"] == 1)
    attrs = step_by_span(shared_server, trace)[span]["payload"]["attributes"]
    assert attrs["small"] == "ok"
    kept, _, marker = attrs["huge"].partition("…[truncated ")
    assert kept == huge[:MAX_STRING_BYTES]
    assert marker == f"{len(huge) - MAX_STRING_BYTES} bytes]"


def test_grpc_nested_kvlist_is_stored_truncated(shared_server: LiveServer, baseline: dict[str, list[str]],
                                                channel: grpc.Channel) -> None:
    trace, span = new_trace(), new_span_id()
    value: Any = "leaf"
    for i in range(30):
        value = {f"k{i}": value}
    stub(channel).Export(pb_request(pb_span(trace, span, attributes={"deep": value})), metadata=AUTH, timeout=30)
    shared_server.wait_run(trace, lambda r: r["step_count"] == 1)
    deep = step_by_span(shared_server, trace)[span]["payload"]["attributes"]["deep"]
    assert nesting(deep) == (MAX_ATTR_DEPTH, MARKER)


def test_grpc_kvlist_nested_200_deep_is_refused_without_harm(shared_server: LiveServer,
                                                             baseline: dict[str, list[str]],
                                                             channel: grpc.Channel) -> None:
    """Deeper than protobuf's 100-level parse limit: refused as INVALID_ARGUMENT with a clear reason, harmlessly."""
    trace = new_trace()
    body = request_with_raw_attribute(pb_span(trace, new_span_id()), "deep", nested_kvlist(200))
    with pytest.raises(grpc.RpcError) as caught:
        raw_export(channel, body)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nested deeper" in (caught.value.details() or "")
    barrier(shared_server, channel)
    assert_absent(shared_server, trace)


# --- OTLP/HTTP ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [b"{bad", b"[1,2]", b"\xff\xfe", b'{"resourceSpans": "nope"}',
                                  b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"name": 17}]}]}]}'],
                         ids=["syntax", "array", "binary", "wrong-type", "name-not-string"])
def test_http_bad_json_is_400(shared_server: LiveServer, baseline: dict[str, list[str]], body: bytes) -> None:
    resp = otlp_post(shared_server, body, "application/json")
    assert resp.status_code == 400
    assert resp.headers["content-type"].startswith("application/json")
    assert "json" in resp.text.lower()
    assert "Traceback" not in resp.text


def test_http_wrong_hex_ids_are_partial_success(shared_server: LiveServer, baseline: dict[str, list[str]]) -> None:
    trace, good = new_trace(), new_span_id()
    resent_run, resent_ids = list(baseline.items())[-1]
    spans = [json_span(trace, good.upper()),  # hex ids are case-insensitive
             json_span("zz" * 16, new_span_id()), json_span(trace[:-2], new_span_id()),
             json_span(trace, "0" * 16), json_span(trace, "12345")]
    spans += [json_span(resent_run, s) for s in resent_ids]
    resp = otlp_post(shared_server, json_request(*spans), "application/json")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"partialSuccess"}
    assert body["partialSuccess"]["rejectedSpans"] == "4"  # int64 as a decimal string
    assert "invalid trace_id" in body["partialSuccess"]["errorMessage"]
    assert "invalid span_id" in body["partialSuccess"]["errorMessage"]
    shared_server.wait_run(trace, lambda r: r["step_count"] == 1)
    assert list(step_by_span(shared_server, trace)) == [good]


def test_http_partial_success_in_protobuf(shared_server: LiveServer, baseline: dict[str, list[str]]) -> None:
    trace = new_trace()
    req = pb_request(pb_span(trace, new_span_id()), pb_span(trace, b"\x01" * 3))
    resp = otlp_post(shared_server, req.SerializeToString())
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/x-protobuf"
    parsed = ts_pb2.ExportTraceServiceResponse.FromString(resp.content)
    assert parsed.partial_success.rejected_spans == 1
    assert parsed.partial_success.error_message == "invalid span_id: expected 8 bytes, got 3"
    shared_server.wait_run(trace, lambda r: r["step_count"] == 1)


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", _invalid_utf8_request(),
                                  pb_request(pb_span("01" * 16, "02" * 8, name="x" * 50)).SerializeToString()[:-20]],
                         ids=["garbage", "invalid-utf8", "truncated"])
def test_http_malformed_protobuf_is_400(shared_server: LiveServer, baseline: dict[str, list[str]],
                                        body: bytes) -> None:
    resp = otlp_post(shared_server, body)
    assert resp.status_code == 400
    assert "protobuf" in resp.text
    assert "Traceback" not in resp.text


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "", "application/grpc"])
def test_http_unsupported_content_type(shared_server: LiveServer, baseline: dict[str, list[str]],
                                       content_type: str) -> None:
    resp = otlp_post(shared_server, json_request(json_span(new_trace(), new_span_id())), content_type)
    assert resp.status_code in (400, 415)


def test_http_gzip_bomb_is_413(shared_server: LiveServer, baseline: dict[str, list[str]]) -> None:
    bomb = gzip.compress(b"\x0a" * (64 * 1024 * 1024), compresslevel=9)  # 64 MiB from ~64 KiB
    assert len(bomb) < 200_000
    resp = otlp_post(shared_server, bomb, **{"content-encoding": "gzip"})
    assert resp.status_code == 413
    assert "Traceback" not in resp.text


def test_http_body_over_20_mib_is_413(shared_server: LiveServer, baseline: dict[str, list[str]]) -> None:
    resp = otlp_post(shared_server, b"\x00" * (20 * 1024 * 1024 + 1))
    assert resp.status_code == 413


@pytest.mark.parametrize("body", [
    gzip.compress(json_request(json_span("01" * 16, "02" * 8)))[:-8],  # cut before the trailer
    gzip.compress(json_request(json_span("01" * 16, "02" * 8)))[:20],
    b"this is not gzip at all",
    zlib.compress(b"{}"),  # zlib framing, not gzip
], ids=["no-trailer", "cut-short", "not-gzip", "zlib"])
def test_http_truncated_or_invalid_gzip_is_400(shared_server: LiveServer, baseline: dict[str, list[str]],
                                               body: bytes) -> None:
    resp = otlp_post(shared_server, body, "application/json", **{"content-encoding": "gzip"})
    assert resp.status_code == 400
    assert "gzip" in resp.text


def test_http_unknown_content_encoding_is_rejected(shared_server: LiveServer,
                                                   baseline: dict[str, list[str]]) -> None:
    resp = otlp_post(shared_server, b"{}", "application/json", **{"content-encoding": "br"})
    assert resp.status_code in (400, 415)


@pytest.mark.parametrize(("key", "header"), [
    (None, None), ("tw_1a2b3c4d_wrong-secret", None), ("garbage", None), (None, "Basic abc"), (None, "Bearer"),
], ids=["missing", "wrong-secret", "malformed-key", "basic-scheme", "empty-bearer"])
def test_http_bad_credentials_are_401(shared_server: LiveServer, baseline: dict[str, list[str]],
                                      key: str | None, header: str | None) -> None:
    trace = new_trace()
    extra = {"authorization": header} if header else {}
    resp = otlp_post(shared_server, json_request(json_span(trace, new_span_id())), "application/json", key=key,
                     **extra)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthenticated"
    resp = otlp_post(shared_server, pb_request(pb_span(trace, new_span_id())).SerializeToString(), key=key,
                     **extra)
    assert resp.status_code == 401


@pytest.mark.parametrize("content_type", ["application/x-protobuf", "application/json",
                                          "application/json; charset=utf-8"])
def test_http_success_response_content_type_matches_request(shared_server: LiveServer,
                                                            baseline: dict[str, list[str]],
                                                            content_type: str) -> None:
    trace = new_trace()
    if "json" in content_type:
        body = json_request(json_span(trace, new_span_id()))
    else:
        body = pb_request(pb_span(trace, new_span_id())).SerializeToString()
    resp = otlp_post(shared_server, body, content_type)
    assert resp.status_code == 200
    media = content_type.split(";")[0]
    assert resp.headers["content-type"].split(";")[0] == media
    if media == "application/json":
        assert resp.json() == {}
    else:
        assert not ts_pb2.ExportTraceServiceResponse.FromString(resp.content).HasField("partial_success")
    shared_server.wait_run(trace)


def test_http_protobuf_error_response_is_protobuf_status(shared_server: LiveServer,
                                                         baseline: dict[str, list[str]]) -> None:
    from google.rpc import status_pb2

    resp = otlp_post(shared_server, b"\xff\xff\xff\xff")
    assert resp.status_code == 400
    assert resp.headers["content-type"].split(";")[0] == "application/x-protobuf"
    assert status_pb2.Status.FromString(resp.content).message


def test_http_huge_attribute_is_stored_truncated(shared_server: LiveServer, baseline: dict[str, list[str]]) -> None:
    trace, span = new_trace(), new_span_id()
    huge = "é" * (4 * 1024 * 1024)  # 8 MiB of UTF-8, well within the 20 MiB body limit
    attrs = [{"key": "huge", "value": {"stringValue": huge}}]
    resp = otlp_post(shared_server, gzip.compress(json_request(json_span(trace, span, attributes=attrs))),
                     "application/json", **{"content-encoding": "gzip"})
    assert resp.status_code == 200, resp.text
    shared_server.wait_run(trace, lambda r: r["step_count"] == 1)
    stored = step_by_span(shared_server, trace)[span]["payload"]["attributes"]["huge"]
    assert stored == "é" * (MAX_STRING_BYTES // 2) + f"…[truncated {len(huge) * 2 - MAX_STRING_BYTES} bytes]"


def test_http_nested_kvlist_is_stored_truncated(shared_server: LiveServer, baseline: dict[str, list[str]]) -> None:
    trace, pb_id, json_id = new_trace(), new_span_id(), new_span_id()
    resp = otlp_post(shared_server, request_with_raw_attribute(pb_span(trace, pb_id), "deep", nested_kvlist(30)))
    assert resp.status_code == 200, resp.text
    value: dict[str, Any] = {"stringValue": "leaf"}
    for i in range(18):
        value = {"kvlistValue": {"values": [{"key": f"k{i}", "value": value}]}}
    attrs = [{"key": "deep", "value": value}]
    resp = otlp_post(shared_server, json_request(json_span(trace, json_id, attributes=attrs)), "application/json")
    assert resp.status_code == 200, resp.text
    shared_server.wait_run(trace, lambda r: r["step_count"] == 2)
    steps = step_by_span(shared_server, trace)
    for span in (pb_id, json_id):
        assert nesting(steps[span]["payload"]["attributes"]["deep"]) == (MAX_ATTR_DEPTH, MARKER)


# --- survival -----------------------------------------------------------------------------------------------
def test_zz_server_survived_and_baseline_is_intact(shared_server: LiveServer, baseline: dict[str, list[str]],
                                                   channel: grpc.Channel) -> None:
    """After everything above: still serving on every port, and the baseline spans are there exactly once."""
    assert shared_server.proc is not None and shared_server.proc.poll() is None
    for url in (shared_server.api_url, shared_server.otlp_http_url):
        assert httpx.get(f"{url}/healthz", timeout=10).json()["status"] == "ok"
    barrier(shared_server, channel)  # gRPC still ingests; everything before is flushed
    for run_id, span_ids in baseline.items():
        run = shared_server.get(f"/v1/runs/{run_id}").json()
        assert run["step_count"] == len(span_ids)
        steps = shared_server.all_steps(run_id)
        assert sorted(s["span_id"] for s in steps) == sorted(span_ids)
        assert [s["seq"] for s in steps] == list(range(len(span_ids)))
