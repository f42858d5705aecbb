//! Plugin glue tests through the FakeHost.
