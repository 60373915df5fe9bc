//! BLE adverts and the badge source built on [`PresenceFilter`].
//!
//! The device layer (btleplug, feature `ble`) and the replay layer both produce [`Advert`]s
//! through [`AdvertSource`]; [`BleSource`] turns them into readings: keep the configured 16-bit
//! service UUID, parse the 21-byte payload with `sync_protocol::ble`, and let the presence filter
//! decide.

use std::future::Future;

use sync_protocol::ble::BleCredential;
use sync_protocol::wire::BeaconConfig;
use tokio::sync::mpsc;

use crate::presence::PresenceFilter;
use crate::{CredentialSource, Payload, Reading, SourceError};

/// One received advertisement, reduced to what the gate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// Receive time, unix ms.
    pub t_ms: u64,
    /// Sender address as printed by the stack (`AA:BB:CC:DD:EE:FF`). Informational only:
    /// badges use random private addresses, so identity comes from the payload.
    pub addr: String,
    pub rssi: i16,
    /// The 16-bit service UUID the service data was filed under.
    pub service_uuid: u16,
    pub service_data: Vec<u8>,
}

/// A stream of adverts: a Bluetooth adapter, or a recorded log.
pub trait AdvertSource: Send + 'static {
    /// The next advert, or `Ok(None)` when the stream has ended.
    fn next_advert(&mut self) -> impl Future<Output = Result<Option<Advert>, SourceError>> + Send;
}

/// The Bluetooth SIG base UUID `0000xxxx-0000-1000-8000-00805F9B34FB` with the 16-bit part
/// zeroed: 16-bit UUIDs are this plus `xxxx << 96`.
const BLUETOOTH_BASE_UUID: u128 = 0x0000_0000_0000_1000_8000_0080_5F9B_34FB;

/// The 16-bit alias of a 128-bit UUID, if it is one (`None` for vendor 128-bit UUIDs).
pub fn uuid16_from_u128(uuid: u128) -> Option<u16> {
    let short = (uuid >> 96) as u32;
    if uuid & !(0xFFFF_FFFFu128 << 96) == BLUETOOTH_BASE_UUID && short <= 0xFFFF {
        Some(short as u16)
    } else {
        None
    }
}

/// The 128-bit form of a 16-bit service UUID (what btleplug keys service data by).
pub fn uuid128_from_u16(short: u16) -> u128 {
    BLUETOOTH_BASE_UUID | (u128::from(short) << 96)
}

/// BLE badge readings: adverts → service-UUID filter → payload parse → presence filter.
pub struct BleSource<A> {
    name: String,
    adverts: A,
    config: BeaconConfig,
}

impl<A: AdvertSource> BleSource<A> {
    /// `config` is the gate's `beacon_config`; its `service_uuid` selects the adverts.
    pub fn new(name: impl Into<String>, adverts: A, config: BeaconConfig) -> Self {
        Self {
            name: name.into(),
            adverts,
            config,
        }
    }
}

impl<A: AdvertSource> CredentialSource for BleSource<A> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(mut self, tx: mpsc::Sender<Reading>) -> Result<(), SourceError> {
        let mut filter = PresenceFilter::new(&self.config);
        loop {
            // An adapter (or a paced replay) may be silent for long: stop as soon as the
            // receiver is gone.
            let advert = tokio::select! {
                () = tx.closed() => break,
                a = self.adverts.next_advert() => a?,
            };
            let Some(advert) = advert else { break };
            if advert.service_uuid != self.config.service_uuid {
                continue;
            }
            let credential = match BleCredential::decode(&advert.service_data) {
                Ok(c) => c,
                Err(error) => {
                    // Other devices may share a popular UUID (0xFEAA is Eddystone's); their
                    // frames are noise, not errors.
                    tracing::trace!(addr = %advert.addr, %error, "advert ignored");
                    continue;
                }
            };
            let Some(sighting) =
                filter.observe(credential.serial, credential.slot, advert.rssi, advert.t_ms)
            else {
                continue;
            };
            tracing::debug!(
                serial = sighting.serial,
                slot = sighting.slot,
                median_rssi = sighting.median_rssi,
                samples = sighting.samples,
                "BLE badge present"
            );
            let reading = Reading {
                payload: Payload::Ble {
                    service_data: advert.service_data,
                    rssi: sighting.median_rssi,
                },
                t_ms: advert.t_ms,
                source: self.name.clone(),
            };
            if tx.send(reading).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_aliases_round_trip() {
        let full = uuid128_from_u16(0xFEAA);
        assert_eq!(full, 0x0000_FEAA_0000_1000_8000_0080_5F9B_34FB);
        assert_eq!(uuid16_from_u128(full), Some(0xFEAA));
        assert_eq!(uuid16_from_u128(full ^ 1), None);
    }
}
