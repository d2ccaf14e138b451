//! The agent wire protocol: the one definition both the agent and the shim use.
