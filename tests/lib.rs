//! Shared harness for Huddle's end-to-end tests.
