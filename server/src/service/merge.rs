//! The merge as a use case: what a revocation does to tickets that may be inside. Storing
//! check-ins and re-folding tickets over their whole stored history is `store::checkins`
//! (SQL around the pure fold of `sync_protocol::merge`).

use std::collections::BTreeSet;

use sync_protocol::wire::ChangeData;
use uuid::Uuid;

use super::uow::UnitOfWork;
use crate::domain::Error;
use crate::store::checkins::{lock_tickets, policy, refold};

/// Revocations (revoke, reissue, erasure, conflict resolution) in a unit of work: records
/// `changes`, appends them at once — the re-fold reads a revocation's place in the change log —
/// then re-folds the revoked tickets so a ticket revoked while its holder is inside is reported,
/// and records the presence changes and live items that gives, and the `ticket.revoked`
/// webhook messages.
pub async fn revoke_in(
    uow: &mut UnitOfWork,
    event_id: Uuid,
    changes: Vec<(ChangeData, bool)>,
) -> Result<(), Error> {
    let serials: BTreeSet<u64> = changes
        .iter()
        .filter_map(|(c, deleted)| match c {
            ChangeData::Revocation(r) if !deleted => Some(r.serial),
            _ => None,
        })
        .collect();
    super::webhooks::record_revocations(uow, event_id, &changes).await?;
    uow.changes(event_id, changes)?;
    if serials.is_empty() {
        return Ok(());
    }
    uow.append_now().await?;
    let tx = uow.tx();
    let list: Vec<u64> = serials.iter().copied().collect();
    lock_tickets(tx, event_id, &list).await?;
    let policy = policy(tx, event_id).await?;
    let refolded = refold(tx, event_id, &serials, policy, crate::store::now_ms()).await?;
    uow.changes(event_id, refolded.changes)?;
    uow.live(refolded.live);
    Ok(())
}
