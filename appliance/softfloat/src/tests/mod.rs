//! Unit tests: hand-written corner cases and the host-SSE differential oracle.

extern crate std;

mod corner_cases;
