//! See `usher_fuzz::wedge_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usher_fuzz::wedge_line(data));
