//! `cohort.v1.AdminService`: what the server is and what its store holds.

use std::sync::Arc;

use cohort_engine::{Engine, TableKind};
use cohort_proto::v1::admin_service_server::AdminService;
use cohort_proto::v1::{ColumnInfo, GetServerInfoRequest, GetServerInfoResponse, TableInfo};
use tonic::{Request, Response, Status};

use crate::status::engine_status;

pub struct CohortAdminService {
    engine: Arc<Engine>,
}

impl CohortAdminService {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

#[tonic::async_trait]
impl AdminService for CohortAdminService {
    async fn get_server_info(
        &self,
        _request: Request<GetServerInfoRequest>,
    ) -> Result<Response<GetServerInfoResponse>, Status> {
        let store = self.engine.store();
        let mut tables = Vec::new();
        for kind in TableKind::ALL {
            let info = match store.latest(kind).await.map_err(engine_status)? {
                Some(table) => {
                    let snapshot = table.snapshot().map_err(|e| engine_status(e.into()))?;
                    let schema = snapshot.snapshot().arrow_schema();
                    TableInfo {
                        name: kind.name().to_string(),
                        version: table.version().map_or(-1, |v| v as i64),
                        files: table.get_file_uris().map(|f| f.count() as u64).unwrap_or(0),
                        columns: columns(&schema),
                    }
                }
                None => TableInfo {
                    name: kind.name().to_string(),
                    version: -1,
                    files: 0,
                    columns: columns(&kind.empty_schema()),
                },
            };
            tables.push(info);
        }
        Ok(Response::new(GetServerInfoResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            store: cohort_engine::store::redact(store.root()),
            tables,
        }))
    }
}

fn columns(schema: &arrow::datatypes::Schema) -> Vec<ColumnInfo> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnInfo {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
        })
        .collect()
}
