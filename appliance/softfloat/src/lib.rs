//! Bit-exact IEEE 754 binary32/binary64 arithmetic following the RISC-V F and D rules.
#![no_std]
