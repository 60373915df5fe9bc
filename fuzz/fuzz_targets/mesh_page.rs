//! See `usher_fuzz::mesh_page`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usher_fuzz::mesh_page(data));
