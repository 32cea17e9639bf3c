//! Prepared statements held for their clients: the SQL (also carried in the handle) and the
//! parameters bound to it. Each belongs to the principal that created it; another caller's
//! handle is "not found", never someone else's statement. A principal holds at most
//! [`MAX_PER_PRINCIPAL`] at once (RESOURCE_EXHAUSTED past it) and a statement unused for
//! [`IDLE_EXPIRY`] is dropped, so clients that never close theirs cannot grow server memory.
//! Bound parameters are bounded in size when they are decoded (see `codec`), and together per
//! principal ([`MAX_BOUND_BYTES_PER_PRINCIPAL`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use tonic::Status;

use crate::auth::Principal;

/// Prepared statements one principal may hold open.
pub const MAX_PER_PRINCIPAL: usize = 256;

/// Bytes of bound parameters one principal's prepared statements may hold together.
pub const MAX_BOUND_BYTES_PER_PRINCIPAL: usize = 256 << 20;

/// A prepared statement not used for this long is closed by the server.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(3600);

struct Prepared {
    owner: String,
    sql: String,
    parameters: Option<RecordBatch>,
    last_used: Instant,
}

#[derive(Default)]
pub struct PreparedStatements {
    statements: Mutex<HashMap<String, Prepared>>,
}

fn not_found() -> Status {
    Status::not_found("prepared statement not found (closed, expired or from another server)")
}

impl PreparedStatements {
    /// Registers `sql` for `principal` and returns its id.
    pub fn create(&self, principal: &Principal, sql: String) -> Result<String, Status> {
        let now = Instant::now();
        let mut statements = self.statements.lock().expect("lock poisoned");
        statements.retain(|_, p| now.duration_since(p.last_used) < IDLE_EXPIRY);
        let held = statements
            .values()
            .filter(|p| p.owner == principal.name)
            .count();
        if held >= MAX_PER_PRINCIPAL {
            return Err(Status::resource_exhausted(format!(
                "{held} prepared statements are open for '{}' (at most {MAX_PER_PRINCIPAL}): \
                 close the ones no longer used",
                principal.name
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        statements.insert(
            id.clone(),
            Prepared {
                owner: principal.name.clone(),
                sql,
                parameters: None,
                last_used: now,
            },
        );
        Ok(id)
    }

    /// The statement's SQL and bound parameters.
    pub fn get(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(String, Option<RecordBatch>), Status> {
        let mut statements = self.statements.lock().expect("lock poisoned");
        let entry = statements
            .get_mut(id)
            .filter(|p| p.owner == principal.name)
            .ok_or_else(not_found)?;
        entry.last_used = Instant::now();
        Ok((entry.sql.clone(), entry.parameters.clone()))
    }

    pub fn bind(
        &self,
        principal: &Principal,
        id: &str,
        parameters: RecordBatch,
    ) -> Result<(), Status> {
        let mut statements = self.statements.lock().expect("lock poisoned");
        let held: usize = statements
            .iter()
            .filter(|(other, p)| p.owner == principal.name && other.as_str() != id)
            .filter_map(|(_, p)| p.parameters.as_ref())
            .map(RecordBatch::get_array_memory_size)
            .sum();
        let size = parameters.get_array_memory_size();
        if held + size > MAX_BOUND_BYTES_PER_PRINCIPAL {
            return Err(Status::resource_exhausted(format!(
                "'{}' holds {} MiB of bound parameters in other prepared statements; these {} MiB \
                 would pass {} MiB: close statements no longer used",
                principal.name,
                held >> 20,
                size >> 20,
                MAX_BOUND_BYTES_PER_PRINCIPAL >> 20
            )));
        }
        let entry = statements
            .get_mut(id)
            .filter(|p| p.owner == principal.name)
            .ok_or_else(not_found)?;
        entry.parameters = Some(parameters);
        entry.last_used = Instant::now();
        Ok(())
    }

    pub fn close(&self, principal: &Principal, id: &str) -> Result<(), Status> {
        let mut statements = self.statements.lock().expect("lock poisoned");
        match statements.get(id) {
            Some(p) if p.owner == principal.name => {
                statements.remove(id);
                Ok(())
            }
            _ => Err(not_found()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn principal(name: &str) -> Principal {
        Principal {
            name: name.into(),
            role: Role::Reader,
        }
    }

    #[test]
    fn statements_belong_to_their_creator_and_are_capped_per_principal() {
        let store = PreparedStatements::default();
        let (ada, rita) = (principal("ada"), principal("rita"));
        let id = store.create(&ada, "SELECT 1".into()).unwrap();
        assert_eq!(store.get(&ada, &id).unwrap().0, "SELECT 1");
        for other in [store.get(&rita, &id).err(), store.close(&rita, &id).err()] {
            assert_eq!(other.unwrap().code(), tonic::Code::NotFound);
        }
        let batch = RecordBatch::new_empty(std::sync::Arc::new(arrow::datatypes::Schema::empty()));
        assert!(store.bind(&rita, &id, batch).is_err());
        for _ in 1..MAX_PER_PRINCIPAL {
            store.create(&ada, "SELECT 2".into()).unwrap();
        }
        let status = store.create(&ada, "SELECT 3".into()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        // Others are not held back by ada's statements; closing one makes room.
        store.create(&rita, "SELECT 4".into()).unwrap();
        store.close(&ada, &id).unwrap();
        store.create(&ada, "SELECT 5".into()).unwrap();
    }

    #[test]
    fn bound_parameters_are_capped_per_principal() {
        use arrow::array::Int64Array;
        let store = PreparedStatements::default();
        let (ada, rita) = (principal("ada"), principal("rita"));
        // 100 MiB of parameters per binding: two fit, a third does not.
        let batch = RecordBatch::try_from_iter([(
            "p",
            std::sync::Arc::new(Int64Array::from(vec![1i64; 100 << 17])) as _,
        )])
        .unwrap();
        let ids: Vec<String> = (0..3)
            .map(|_| store.create(&ada, "SELECT $1".into()).unwrap())
            .collect();
        store.bind(&ada, &ids[0], batch.clone()).unwrap();
        store.bind(&ada, &ids[1], batch.clone()).unwrap();
        let status = store.bind(&ada, &ids[2], batch.clone()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
        // Binding again replaces a statement's own parameters; others have their own budget.
        store.bind(&ada, &ids[1], batch.clone()).unwrap();
        let other = store.create(&rita, "SELECT $1".into()).unwrap();
        store.bind(&rita, &other, batch).unwrap();
    }
}
