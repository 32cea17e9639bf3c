//! Announcing committed segment versions to subscribers (the activation service's Subscribe).
//!
//! A run committed by this process is announced at once. Runs committed by other processes on the
//! same store (a second server, `cohort sql --data` on the command line) are found by watching the
//! versions table, so a subscriber hears of every version whichever process ran it. Each version
//! is announced once per process, in order per segment.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::SegmentVersion;
use super::versions::all_versions;
use crate::Engine;
use crate::error::Result;
use crate::tables::SystemTable;

impl Engine {
    /// Announces `version` unless it, or a later version of its segment, already was.
    pub(crate) fn publish_segment_version(&self, version: SegmentVersion) {
        let mut published = self
            .segment_versions_published
            .lock()
            .expect("lock poisoned");
        let newest = published.entry(version.segment.clone()).or_insert(0);
        if version.version > *newest {
            *newest = version.version;
            // Nobody listening is fine.
            let _ = self.segment_versions_committed.send(version);
        }
    }

    /// Every `interval` until `stop`, announces versions other processes committed. Versions
    /// committed before the watch starts are history, not news.
    pub async fn watch_segment_versions(&self, interval: Duration, stop: CancellationToken) {
        let mut seen = None;
        let mut first = true;
        loop {
            match self.announce_new_versions(&mut seen, first).await {
                Ok(()) => first = false,
                Err(e) => tracing::warn!(error = %e, "could not read segment versions"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Reads the versions table when its Delta version moved past `seen`.
    async fn announce_new_versions(
        &self,
        seen: &mut Option<deltalake::kernel::Version>,
        history: bool,
    ) -> Result<()> {
        let Some(table) = self.store.latest(SystemTable::SegmentVersions).await? else {
            return Ok(());
        };
        if table.version().is_some() && table.version() == *seen {
            return Ok(());
        }
        let mut versions = all_versions(&table).await?;
        versions.sort_by(|a, b| (&a.segment, a.version).cmp(&(&b.segment, b.version)));
        if history {
            let mut published = self
                .segment_versions_published
                .lock()
                .expect("lock poisoned");
            for version in versions {
                let newest = published.entry(version.segment).or_insert(0);
                *newest = (*newest).max(version.version);
            }
        } else {
            for version in versions {
                self.publish_segment_version(version);
            }
        }
        *seen = table.version();
        Ok(())
    }
}
