//! See `usher_fuzz::ble_advert`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usher_fuzz::ble_advert(data));
