"""Governance: policy gates, human approvals and signed decision tokens bound to trace and span ids.

Pure core, no HTTP and no database (the server wires routes and storage around it):

    policy/     versioned, immutable policy documents (YAML/JSON): parse_policy, policy_to_dict, is_gated
    evaluate    the decision, a pure function: evaluate(policy, DecisionRequest, kill_switch=) -> Decision
    tokens      DecisionTokens (JWS, EdDSA/Ed25519, rotating kids): SigningKeys, issue_token, verify_token
    approvals   the approval state machine: create_approval, approve, deny, expire
    binding     approved → executed proof for an ingested tool span: check_binding
    sdk/        the client agent code uses: GovernanceClient.decide / .gated / .guard

Dependency rule: imports otlp_receiver (errors, chain) and nothing above it; sdk imports only
the OpenTelemetry API, httpx and the standard library. Importing this package imports nothing.
"""
