//! The open PostgreSQL connections, for cancel requests: a client cancels by opening another
//! connection and sending the process id and secret key it got at startup. The statement the
//! connection is running is cancelled through the governor, exactly like Flight SQL's
//! `CancelFlightInfo`: it stops computing and frees its slot, whether it is still planning or
//! already streaming rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pgwire::api::cancel::CancelHandler;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use subtle::ConstantTimeEq;

use crate::limits::Governor;

struct Connection {
    secret: Vec<u8>,
    running: Arc<Mutex<Option<String>>>,
}

#[derive(Default)]
struct Registry {
    connections: Mutex<HashMap<i32, Connection>>,
}

/// The registry of open connections and the cancel handler that uses it.
#[derive(Clone)]
pub struct Connections {
    registry: Arc<Registry>,
    governor: Arc<Governor>,
}

/// A connection's entry; dropping it (the connection ended) removes the entry.
pub struct Registered {
    pid: i32,
    running: Arc<Mutex<Option<String>>>,
    registry: Arc<Registry>,
}

impl Registered {
    /// Records the id (in the governor) of the statement this connection now runs.
    pub fn running(&self, query_id: &str) {
        *self.running.lock().expect("lock poisoned") = Some(query_id.to_string());
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry
            .connections
            .lock()
            .expect("lock poisoned")
            .remove(&self.pid);
    }
}

fn secret_bytes(secret: &SecretKey) -> Vec<u8> {
    match secret {
        SecretKey::I32(value) => value.to_be_bytes().to_vec(),
        SecretKey::Bytes(bytes) => bytes.to_vec(),
    }
}

impl Connections {
    pub fn new(governor: Arc<Governor>) -> Self {
        Self {
            registry: Arc::default(),
            governor,
        }
    }

    pub fn register(&self, pid: i32, secret: &SecretKey) -> Registered {
        let running = Arc::new(Mutex::new(None));
        self.registry
            .connections
            .lock()
            .expect("lock poisoned")
            .insert(
                pid,
                Connection {
                    secret: secret_bytes(secret),
                    running: Arc::clone(&running),
                },
            );
        Registered {
            pid,
            running,
            registry: Arc::clone(&self.registry),
        }
    }

    /// Cancels what connection `pid` runs if `secret` is its key; says whether it did.
    pub fn cancel(&self, pid: i32, secret: &SecretKey) -> bool {
        let query = {
            let connections = self.registry.connections.lock().expect("lock poisoned");
            let Some(connection) = connections.get(&pid) else {
                return false;
            };
            if !bool::from(connection.secret.ct_eq(&secret_bytes(secret))) {
                return false;
            }
            connection.running.lock().expect("lock poisoned").clone()
        };
        query.is_some_and(|id| self.governor.cancel(&id))
    }
}

#[async_trait]
impl CancelHandler for Connections {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let cancelled = self.cancel(request.pid, &request.secret_key);
        tracing::info!(pid = request.pid, cancelled, "PostgreSQL cancel request");
    }
}
