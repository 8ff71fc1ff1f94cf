//! Lets Delta tables live on `s3://`, `gs://` and `az://` using tally's own `object_store`
//! configuration (environment credentials) instead of deltalake's cloud features.
//!
//! Commits write `_delta_log/<version>.json` with a create-only put (`If-None-Match: *` on S3,
//! object_store's default `S3ConditionalPut::ETagMatch`), so two writers racing for the same
//! version cannot both win: the loser retries against the new version or fails with a conflict.

use std::sync::{Arc, Once};

use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
    logstore_factories, object_store_factories,
};
use deltalake::{DeltaResult, DeltaTableError, Path};
use url::Url;

#[derive(Clone, Default)]
struct EnvStoreFactory;

impl ObjectStoreFactory for EnvStoreFactory {
    fn parse_url_opts(
        &self,
        url: &Url,
        _cfg: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        // Root the store at the bucket; deltalake prefixes the table path itself.
        let root = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
        let store: ObjectStoreRef = match url.scheme() {
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(&root)
                    .with_retry(crate::storage::retry_config())
                    .build()?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(&root)
                    .with_retry(crate::storage::retry_config())
                    .build()?,
            ),
            _ => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(&root)
                    .with_retry(crate::storage::retry_config())
                    .build()?,
            ),
        };
        let path = Path::from_url_path(url.path())
            .map_err(|e| DeltaTableError::InvalidTableLocation(e.to_string()))?;
        Ok((store, path))
    }
}

impl LogStoreFactory for EnvStoreFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers the cloud schemes with deltalake (idempotent).
pub fn register_delta_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3", "s3a", "gs", "az", "azure", "abfs", "abfss"] {
            let key = Url::parse(&format!("{scheme}://")).expect("static url");
            object_store_factories().insert(key.clone(), Arc::new(EnvStoreFactory));
            logstore_factories().insert(key, Arc::new(EnvStoreFactory));
        }
    });
}
