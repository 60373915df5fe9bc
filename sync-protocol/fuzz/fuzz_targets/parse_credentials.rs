//! Every parser of outside input must be total: any bytes give a value or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_protocol::ble::BleCredential;
use sync_protocol::decide::parse_text;
use sync_protocol::{ShortCode, SignedTicket};

fuzz_target!(|data: &[u8]| {
    let _ = SignedTicket::from_bytes(data);
    let _ = BleCredential::decode(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = SignedTicket::decode(text) {
            // Whatever parses must re-encode to a text that parses to the same ticket.
            assert_eq!(SignedTicket::decode(&t.encode()), Ok(t));
        }
        let _ = ShortCode::parse(text);
        let _ = parse_text(text);
        let _ = text.parse::<sync_protocol::Hlc>();
    }
});
