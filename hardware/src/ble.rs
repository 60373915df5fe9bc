//! The Bluetooth adapter via btleplug (feature `ble`; BlueZ over D-Bus on Linux): an
//! [`AdvertSource`] of service-data adverts.
//!
//! btleplug reports service data and RSSI as separate events. With BlueZ's duplicate filter off
//! (btleplug sets `DuplicateData`), every received advert re-reports its service data, while RSSI
//! is only reported when it changes. So one service-data event is one advert, stamped with the
//! latest RSSI seen for that device.

use std::collections::HashMap;
use std::pin::Pin;

use btleplug::api::bleuuid::uuid_from_u16;
use btleplug::api::{Central, CentralEvent, Manager as _, Peripheral as _, ScanFilter};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures_util::{Stream, StreamExt};

use crate::advert::{Advert, AdvertSource, uuid16_from_u128};
use crate::{SourceError, now_ms};

fn ble_error(context: &str, error: impl std::fmt::Display) -> SourceError {
    SourceError::Bluetooth(format!("{context}: {error}"))
}

/// Scans the first Bluetooth adapter for adverts carrying one 16-bit service UUID.
pub struct BtleplugScanner {
    adapter: Adapter,
    events: Pin<Box<dyn Stream<Item = CentralEvent> + Send>>,
    service_uuid: u16,
    rssi: HashMap<PeripheralId, i16>,
}

impl BtleplugScanner {
    /// Starts scanning, filtered to `service_uuid` (the gate's `beacon_config.service_uuid`).
    pub async fn start(service_uuid: u16) -> Result<Self, SourceError> {
        let manager = Manager::new().await.map_err(|e| {
            ble_error(
                "cannot reach the Bluetooth service (is bluetoothd running?)",
                e,
            )
        })?;
        let adapter = manager
            .adapters()
            .await
            .map_err(|e| ble_error("cannot list Bluetooth adapters", e))?
            .into_iter()
            .next()
            .ok_or_else(|| SourceError::Bluetooth("no Bluetooth adapter found".to_owned()))?;
        // Subscribe before scanning so the first adverts are not missed.
        let events = adapter
            .events()
            .await
            .map_err(|e| ble_error("cannot subscribe to adapter events", e))?;
        adapter
            .start_scan(ScanFilter {
                services: vec![uuid_from_u16(service_uuid)],
            })
            .await
            .map_err(|e| ble_error("cannot start scanning", e))?;
        tracing::info!(
            service_uuid = format!("{service_uuid:#06x}"),
            "BLE scan started"
        );
        Ok(Self {
            adapter,
            events,
            service_uuid,
            rssi: HashMap::new(),
        })
    }

    async fn rssi_of(&mut self, id: &PeripheralId) -> Option<i16> {
        if let Some(rssi) = self.rssi.get(id) {
            return Some(*rssi);
        }
        // First advert of a device: its RSSI event may not have arrived yet; ask BlueZ.
        let peripheral = self.adapter.peripheral(id).await.ok()?;
        let rssi = peripheral.properties().await.ok()??.rssi?;
        self.rssi.insert(id.clone(), rssi);
        Some(rssi)
    }
}

impl AdvertSource for BtleplugScanner {
    async fn next_advert(&mut self) -> Result<Option<Advert>, SourceError> {
        while let Some(event) = self.events.next().await {
            match event {
                CentralEvent::RssiUpdate { id, rssi } => {
                    self.rssi.insert(id, rssi);
                }
                CentralEvent::DeviceDisconnected(id) => {
                    self.rssi.remove(&id);
                }
                CentralEvent::ServiceDataAdvertisement { id, service_data } => {
                    let Some(data) = service_data
                        .into_iter()
                        .find(|(uuid, _)| {
                            uuid16_from_u128(uuid.as_u128()) == Some(self.service_uuid)
                        })
                        .map(|(_, data)| data)
                    else {
                        continue;
                    };
                    let Some(rssi) = self.rssi_of(&id).await else {
                        continue;
                    };
                    return Ok(Some(Advert {
                        t_ms: now_ms(),
                        addr: id.to_string(),
                        rssi,
                        service_uuid: self.service_uuid,
                        service_data: data,
                    }));
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

impl Drop for BtleplugScanner {
    fn drop(&mut self) {
        // stop_scan is async; a best-effort stop from a spawned task keeps BlueZ from scanning
        // for a gate that no longer listens.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let adapter = self.adapter.clone();
            handle.spawn(async move {
                let _ = adapter.stop_scan().await;
            });
        }
    }
}
