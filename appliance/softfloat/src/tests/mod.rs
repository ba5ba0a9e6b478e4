//! Unit tests: hand-written corner cases and the host-SSE differential oracle.

mod corner_cases;
#[cfg(target_arch = "x86_64")]
mod host;
#[cfg(target_arch = "x86_64")]
mod model;
#[cfg(target_arch = "x86_64")]
mod oracle;
#[cfg(target_arch = "x86_64")]
mod rmm;
