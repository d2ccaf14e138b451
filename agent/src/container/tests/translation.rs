//! Spec -> syscalls, through the recording implementation.
