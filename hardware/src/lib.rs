//! Credential sources for the gate agent (in progress).
