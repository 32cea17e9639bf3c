//! The scheduler's jobs: segments, the tags and traits with a schedule, and identity when it
//! has one. Above all of them, so none depends on the others to be scheduled.

use std::collections::HashMap;

use arrow::array::Array;
use datafusion::prelude::{col, lit};

use crate::Engine;
use crate::error::Result;
use crate::segments::{Trigger, scheduler};
use crate::store::{micros_column, text_column};
use crate::tables::SystemTable;

/// Scheduled tags share the scheduler with segments under this prefix (`:` is never part of a
/// segment name).
const TAG_JOB_PREFIX: &str = "tag:";
/// Scheduled traits, likewise.
const TRAIT_JOB_PREFIX: &str = "trait:";

#[async_trait::async_trait]
impl scheduler::Jobs for Engine {
    async fn jobs(&self) -> Result<Vec<scheduler::ScheduledJob>> {
        let time =
            |micros: i64| chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
        let mut jobs: Vec<scheduler::ScheduledJob> = self
            .segment_definitions()
            .await?
            .into_iter()
            .map(|d| scheduler::ScheduledJob {
                created_at: time(d.created_at),
                name: d.name,
                schedule: d.schedule,
            })
            .collect();
        for tag in self.tag_definitions().await?.iter() {
            if tag.schedule.is_some() {
                jobs.push(scheduler::ScheduledJob {
                    name: format!("{TAG_JOB_PREFIX}{}", tag.name),
                    schedule: tag.schedule.clone(),
                    created_at: time(tag.created_at),
                });
            }
        }
        for definition in self.trait_definitions().await?.iter() {
            if definition.schedule.is_some() {
                jobs.push(scheduler::ScheduledJob {
                    name: format!("{TRAIT_JOB_PREFIX}{}", definition.name),
                    schedule: definition.schedule.clone(),
                    created_at: time(definition.created_at),
                });
            }
        }
        if let Some((schedule, updated_at)) = self.identity_schedule().await? {
            jobs.push(scheduler::ScheduledJob {
                name: crate::identity::IDENTITY_JOB.to_string(),
                schedule: Some(schedule),
                created_at: time(updated_at),
            });
        }
        Ok(jobs)
    }

    async fn last_scheduled(
        &self,
        jobs: &[String],
    ) -> Result<HashMap<String, chrono::DateTime<chrono::Utc>>> {
        let time =
            |micros: i64| chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
        let mut last: HashMap<String, i64> = HashMap::new();
        let (catalog_jobs, segments): (Vec<&String>, Vec<&String>) = jobs.iter().partition(|j| {
            j.starts_with(TAG_JOB_PREFIX)
                || j.starts_with(TRAIT_JOB_PREFIX)
                || *j == crate::identity::IDENTITY_JOB
        });
        if !segments.is_empty()
            && let Some(table) = self.store.latest(SystemTable::SegmentRuns).await?
        {
            let names = segments.iter().map(|s| lit(s.as_str())).collect();
            let batches = crate::store::scan_table(&table)
                .await?
                .filter(
                    col("segment")
                        .in_list(names, false)
                        .and(col("trigger").in_list(
                            vec![lit(Trigger::Schedule.name()), lit(Trigger::CatchUp.name())],
                            false,
                        )),
                )?
                .select(vec![col("segment"), col("scheduled_at")])?
                .collect()
                .await?;
            for batch in &batches {
                let segments = text_column(batch, "segment")?;
                let scheduled = micros_column(batch, "scheduled_at")?;
                for row in 0..batch.num_rows() {
                    if scheduled.is_valid(row) {
                        let newest = last
                            .entry(segments.value(row).to_string())
                            .or_insert(i64::MIN);
                        *newest = (*newest).max(scheduled.value(row));
                    }
                }
            }
        }
        // Tags and traits keep no run history: their last refresh stands for the last
        // scheduled run.
        if catalog_jobs.iter().any(|j| j.starts_with(TAG_JOB_PREFIX)) {
            for (tag, refreshed) in self.tag_refresh_times().await? {
                let job = format!("{TAG_JOB_PREFIX}{tag}");
                if catalog_jobs.contains(&&job) {
                    last.insert(job, refreshed);
                }
            }
        }
        if catalog_jobs.iter().any(|j| j.starts_with(TRAIT_JOB_PREFIX)) {
            for (name, (_, refreshed)) in self.trait_sizes().await? {
                let job = format!("{TRAIT_JOB_PREFIX}{name}");
                if let (Some(refreshed), true) = (refreshed, catalog_jobs.contains(&&job)) {
                    last.insert(job, refreshed);
                }
            }
        }
        if catalog_jobs
            .iter()
            .any(|j| *j == crate::identity::IDENTITY_JOB)
            && let Some(refreshed) = self.identity_refreshed_at().await?
        {
            last.insert(crate::identity::IDENTITY_JOB.to_string(), refreshed);
        }
        Ok(last.into_iter().map(|(job, m)| (job, time(m))).collect())
    }

    async fn run(
        &self,
        segment: &str,
        trigger: Trigger,
        scheduled_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        if let Some(tag) = segment.strip_prefix(TAG_JOB_PREFIX) {
            return self.refresh_tag(tag).await.map(|_| ());
        }
        if segment == crate::identity::IDENTITY_JOB {
            return self.refresh_identity().await.map(|_| ());
        }
        if let Some(name) = segment.strip_prefix(TRAIT_JOB_PREFIX) {
            return self.refresh_trait(name).await.map(|_| ());
        }
        let definition = self.segment_definition(segment).await?;
        self.refresh_segment(&definition, trigger, Some(scheduled_at.timestamp_micros()))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;
    use crate::identity::IDENTITY_JOB;
    use arrow::array::AsArray;
    use scheduler::Jobs;

    #[tokio::test]
    async fn an_identity_schedule_is_a_job_the_scheduler_runs_and_remembers() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(EngineConfig {
            data: dir.path().to_string_lossy().into_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
        let run = |sql: &'static str| {
            let engine = &engine;
            async move { engine.execute(sql, None).await.unwrap() }
        };
        run("INSERT INTO events (user_id, event, ts, device) VALUES ('a', 'view', '2026-11-01T00:00:00Z', 'd1'), ('b', 'view', '2026-11-01T00:00:00Z', 'd1')").await;
        run("CREATE IDENTITY RULE device AS SELECT user_id, device FROM events").await;
        let identity_jobs = |jobs: Vec<scheduler::ScheduledJob>| -> Vec<(String, Option<String>)> {
            jobs.into_iter()
                .filter(|j| j.name == IDENTITY_JOB)
                .map(|j| (j.name, j.schedule))
                .collect()
        };
        assert!(identity_jobs(engine.jobs().await.unwrap()).is_empty());

        run("ALTER IDENTITY SET SCHEDULE '*/15 * * * *'").await;
        assert_eq!(
            identity_jobs(engine.jobs().await.unwrap()),
            [(IDENTITY_JOB.to_string(), Some("*/15 * * * *".to_string()))]
        );
        let names = [IDENTITY_JOB.to_string()];
        assert!(engine.last_scheduled(&names).await.unwrap().is_empty());

        let before = chrono::Utc::now();
        engine
            .run(IDENTITY_JOB, Trigger::Schedule, before)
            .await
            .unwrap();
        let last = engine.last_scheduled(&names).await.unwrap();
        assert!(last[IDENTITY_JOB] >= before - chrono::Duration::seconds(1));
        let (_, batches) = engine
            .execute_collect("SELECT count(DISTINCT person_key) FROM identities")
            .await
            .unwrap();
        let persons = batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0);
        assert_eq!(
            persons, 1,
            "the scheduled run resolved a, b and d1 into one person"
        );

        run("ALTER IDENTITY DROP SCHEDULE").await;
        assert!(identity_jobs(engine.jobs().await.unwrap()).is_empty());
    }
}
