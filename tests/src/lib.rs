//! Support code for Gyre's integration tests.
