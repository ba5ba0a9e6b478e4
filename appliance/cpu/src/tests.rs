//! Unit tests for the hart: instruction classes, traps, interrupts, Sv39, counters, cache.
