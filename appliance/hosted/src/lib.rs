//! The hosted platform: runs the machine as a Linux process (console, clock, files).
