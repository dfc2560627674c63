"""Tests for otlp_receiver.model: deterministic step ids."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otlp_receiver.model import STEP_ID_NAMESPACE, make_step_id


@settings(max_examples=500, deadline=None, database=None)
@given(tenant=st.text(), trace_id=st.text(), span_id=st.text())
def test_step_id_is_the_uuid5_of_tenant_trace_and_span(tenant: str, trace_id: str, span_id: str) -> None:
    name = f"{tenant}/{trace_id}/{span_id}"
    try:
        expected = str(uuid.uuid5(STEP_ID_NAMESPACE, name))
    except UnicodeEncodeError:  # a lone surrogate: neither can encode it
        with pytest.raises(UnicodeEncodeError):
            make_step_id(tenant, trace_id, span_id)
        return
    assert make_step_id(tenant, trace_id, span_id) == expected


def test_step_id_is_pinned() -> None:
    assert make_step_id("t1", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331") == str(
        uuid.uuid5(uuid.UUID("6f1c7c4e-3d0b-4c53-9a57-2d5e1f0c7a11"),
                   "t1/0af7651916cd43dd8448eb211c80319c/b7ad6b7169203331"))
