//! Node state-machine tests.
