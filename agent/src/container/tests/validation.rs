//! Spec validation.
