//! See `usher_fuzz::credentials`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usher_fuzz::credentials(data));
