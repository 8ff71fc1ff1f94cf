//! Object stores from URLs, and discovery of export files under a URL.
//!
//! `file://`, `s3://`, `gs://` and `az://` (also `abfss://`) go through `object_store`.
//! Credentials come from the environment and the providers' standard variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`, `GOOGLE_APPLICATION_CREDENTIALS`,
//! `AZURE_STORAGE_ACCOUNT_NAME`, ...), never from the job file, and are never logged.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{Result, TallyError};

/// An object store with the location a URL points at inside it.
#[derive(Clone)]
pub struct Location {
    /// The store, rooted at the bucket/container (or the file-system root).
    pub store: Arc<dyn ObjectStore>,
    /// `scheme://bucket` (or `file://`), for messages and for DataFusion registration.
    pub store_url: String,
    /// The path inside the store.
    pub path: Path,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.store_url, self.path)
    }
}

impl Location {
    /// Whether this is the local file system (`file://`), where a create-if-absent is atomic.
    pub fn is_local(&self) -> bool {
        self.store_url == "file://"
    }

    /// The full URL of an object inside this store.
    pub fn url_of(&self, path: &Path) -> String {
        if self.is_local() {
            format!("file:///{path}")
        } else {
            format!("{}/{path}", self.store_url)
        }
    }

    /// The whole content of one object (small files: manifests, inputs).
    pub async fn get_bytes(&self, path: &Path) -> Result<bytes::Bytes> {
        self.store
            .get(path)
            .await
            .map_err(|e| self.err("get", path, e))?
            .bytes()
            .await
            .map_err(|e| self.err("read", path, e))
    }

    /// Wraps an object store error with the store and object names.
    pub fn err(
        &self,
        operation: &'static str,
        object: &Path,
        source: object_store::Error,
    ) -> TallyError {
        TallyError::Storage {
            store: self.store_url.clone(),
            operation,
            object: object.to_string(),
            source: Box::new(source),
        }
    }
}

/// How object store requests are retried: timeouts, 5xx and throttling (429, S3 `SlowDown`) are
/// retried with exponential backoff (100 ms doubling to 15 s) up to `TALLY_STORE_RETRIES` times
/// (default 10) or `TALLY_STORE_RETRY_TIMEOUT_SECS` (default 180) in all; then the run fails with
/// exit code 4 naming the store and the object.
pub fn retry_config() -> object_store::RetryConfig {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: env("TALLY_STORE_RETRIES", 10) as usize,
        retry_timeout: std::time::Duration::from_secs(env("TALLY_STORE_RETRY_TIMEOUT_SECS", 180)),
    }
}

/// Opens the store a URL points into.
pub fn open(url: &str) -> Result<Location> {
    let parsed =
        Url::parse(url).map_err(|e| TallyError::Usage(format!("{url:?} is not a URL: {e}")))?;
    let bad = |e: object_store::Error| TallyError::Storage {
        store: format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or("")),
        operation: "configure",
        object: String::new(),
        source: Box::new(e),
    };
    let (store, store_url, path): (Arc<dyn ObjectStore>, String, Path) = match parsed.scheme() {
        "file" => {
            let fs_path = parsed
                .to_file_path()
                .map_err(|_| TallyError::Usage(format!("{url:?} is not a local path")))?;
            let path = Path::from_absolute_path(&fs_path)
                .map_err(|e| TallyError::Usage(format!("{url}: {e}")))?;
            (
                Arc::new(object_store::local::LocalFileSystem::new()),
                "file://".to_string(),
                path,
            )
        }
        "s3" | "s3a" => {
            let s = object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(retry_config())
                .build()
                .map_err(bad)?;
            (Arc::new(s), bucket_url(&parsed), url_path(&parsed)?)
        }
        "gs" => {
            let s = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry_config())
                .build()
                .map_err(bad)?;
            (Arc::new(s), bucket_url(&parsed), url_path(&parsed)?)
        }
        "az" | "azure" | "abfs" | "abfss" => {
            let s = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_retry(retry_config())
                .build()
                .map_err(bad)?;
            (Arc::new(s), bucket_url(&parsed), url_path(&parsed)?)
        }
        other => {
            return Err(TallyError::Usage(format!(
                "{url}: scheme {other}:// is not supported (use file://, s3://, gs:// or az://)"
            )));
        }
    };
    Ok(Location {
        store,
        store_url,
        path,
    })
}

fn bucket_url(u: &Url) -> String {
    format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""))
}

fn url_path(u: &Url) -> Result<Path> {
    Path::from_url_path(u.path()).map_err(|e| TallyError::Usage(format!("{u}: {e}")))
}

/// AWS legacy CUR delivers each billing period into `<report>/<YYYYMMDD-YYYYMMDD>/<assembly>/`
/// and, unless the report overwrites, keeps every earlier delivery of that period beside the new
/// one (each a full snapshot). Only the newest delivery of a period counts: this keeps the files
/// of the assembly folder with the latest last-modified file per period folder and returns the
/// others as superseded. Files outside that layout are kept as they are.
pub fn latest_deliveries(files: Vec<DiscoveredFile>) -> (Vec<DiscoveredFile>, Vec<DiscoveredFile>) {
    use std::collections::BTreeMap;
    // (period folder, assembly folder) of a file in the CUR delivery layout.
    fn delivery(path: &str) -> Option<(String, String)> {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 3 {
            return None;
        }
        let period = parts[parts.len() - 3];
        let is_range = period.len() == 17
            && period.as_bytes()[8] == b'-'
            && period
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 8 || b.is_ascii_digit());
        is_range.then(|| {
            (
                parts[..parts.len() - 2].join("/"),
                parts[..parts.len() - 1].join("/"),
            )
        })
    }
    // period folder → (latest last-modified, its assembly folder)
    let mut newest: BTreeMap<String, (String, String)> = BTreeMap::new();
    for f in &files {
        if let Some((period, assembly)) = delivery(f.path.as_ref()) {
            let e = newest.entry(period).or_default();
            if (f.last_modified.as_str(), assembly.as_str()) > (e.0.as_str(), e.1.as_str()) {
                *e = (f.last_modified.clone(), assembly);
            }
        }
    }
    files
        .into_iter()
        .partition(|f| match delivery(f.path.as_ref()) {
            Some((period, assembly)) => newest[&period].1 == assembly,
            None => true,
        })
}

/// What kind of export file an object is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// `.csv`
    Csv,
    /// `.csv.gz` / `.gz`
    CsvGz,
    /// `.parquet`
    Parquet,
    /// JSON lines: `.jsonl`, `.ndjson`, `.json` (one object per line, as BigQuery exports)
    Json,
    /// JSON lines, gzip-compressed (`.jsonl.gz`, `.ndjson.gz`, `.json.gz`)
    JsonGz,
}

impl FileKind {
    /// The kind for a file name, or `None` for files tally does not read (export manifests such
    /// as AWS's `…-Manifest.json` and Azure's `manifest.json`, anything else).
    pub fn of(name: &str) -> Option<FileKind> {
        let n = name.to_ascii_lowercase();
        let json = |n: &str| {
            (n.ends_with(".jsonl") || n.ends_with(".ndjson") || n.ends_with(".json"))
                && !is_export_manifest(n)
        };
        if json(&n) {
            Some(FileKind::Json)
        } else if let Some(inner) = n.strip_suffix(".gz")
            && json(inner)
        {
            Some(FileKind::JsonGz)
        } else if n.ends_with(".csv") {
            Some(FileKind::Csv)
        } else if n.ends_with(".csv.gz") || n.ends_with(".gz") {
            Some(FileKind::CsvGz)
        } else if n.ends_with(".parquet") || n.ends_with(".snappy.parquet") {
            Some(FileKind::Parquet)
        } else {
            None
        }
    }
}

/// One export file found under a source URL.
#[derive(Debug, Clone)]
pub struct DiscoveredFile {
    /// Full URL.
    pub url: String,
    /// Path inside the store.
    pub path: Path,
    /// Size in bytes.
    pub size: u64,
    /// ETag, when the store gives one.
    pub e_tag: Option<String>,
    /// Last modified, RFC 3339.
    pub last_modified: String,
    /// CSV, CSV.gz, Parquet or JSON lines.
    pub kind: FileKind,
}

/// Lists the export files at a URL: the object itself if it is one, else every readable file
/// below it (recursively), sorted by path so runs are deterministic.
pub async fn discover(loc: &Location) -> Result<Vec<DiscoveredFile>> {
    Ok(discover_all(loc).await?.0)
}

/// [`discover`], and the URLs of the objects below the URL that are not exports tally reads
/// (sorted; hidden and `_` folders and the exports' own manifests are not among them). They
/// are logged in a warning, and a run lists them in its manifest.
pub async fn discover_all(loc: &Location) -> Result<(Vec<DiscoveredFile>, Vec<String>)> {
    let kind_of = |m: &object_store::ObjectMeta| FileKind::of(m.location.filename()?);
    let file_of = |m: object_store::ObjectMeta, kind: FileKind| -> DiscoveredFile {
        DiscoveredFile {
            url: loc.url_of(&m.location),
            size: m.size,
            e_tag: m.e_tag.clone(),
            last_modified: m.last_modified.to_rfc3339(),
            path: m.location,
            kind,
        }
    };
    if let Ok(meta) = loc.store.head(&loc.path).await {
        let url = loc.url_of(&meta.location);
        return Ok(match kind_of(&meta) {
            Some(kind) => (vec![file_of(meta, kind)], Vec::new()),
            None => (Vec::new(), vec![url]),
        });
    }
    let mut skipped: Vec<String> = Vec::new();
    let metas: Vec<object_store::ObjectMeta> = loc
        .store
        .list(Some(&loc.path))
        .try_collect()
        .await
        .map_err(|e| loc.err("list", &loc.path, e))?;
    let mut files: Vec<DiscoveredFile> = metas
        .into_iter()
        // Skip hidden and underscore-prefixed folders and files below the source URL (Spark's
        // `_SUCCESS`, tally's own `_tally/`, editors' dot files), never above it.
        .filter(|m| {
            m.location
                .prefix_match(&loc.path)
                .map(|mut below| {
                    !below.any(|p| p.as_ref().starts_with('_') || p.as_ref().starts_with('.'))
                })
                .unwrap_or(false)
        })
        .filter_map(|m| match kind_of(&m) {
            Some(kind) => Some(file_of(m, kind)),
            None => {
                if !is_export_manifest(m.location.as_ref()) {
                    skipped.push(loc.url_of(&m.location));
                }
                None
            }
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if !skipped.is_empty() {
        skipped.sort();
        let zip = skipped
            .iter()
            .any(|u| u.to_ascii_lowercase().ends_with(".zip"));
        tracing::warn!(
            source = %loc.url_of(&loc.path),
            count = skipped.len(),
            files = ?skipped.iter().take(5).collect::<Vec<_>>(),
            "objects that are not exports tally reads were skipped (it reads .csv, .csv.gz, .gz, .parquet, .jsonl, .ndjson, .json and their .gz){}",
            if zip { "; a ZIP-compressed CUR is not read: choose GZIP or Parquet in the report's settings" } else { "" }
        );
    }
    Ok((files, skipped))
}

/// Whether an object is an export's own manifest (AWS's `…-Manifest.json`, Azure's
/// `manifest.json`), which sits beside the exports and is expected not to be read.
fn is_export_manifest(path: &str) -> bool {
    let n = path.to_ascii_lowercase();
    n.ends_with("manifest.json") || n.ends_with("manifest.json.gz")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, modified: &str) -> DiscoveredFile {
        DiscoveredFile {
            url: format!("s3://b/{path}"),
            path: Path::from(path),
            size: 1,
            e_tag: None,
            last_modified: modified.into(),
            kind: FileKind::CsvGz,
        }
    }

    #[test]
    fn only_the_newest_cur_delivery_of_a_period_counts() {
        let files = vec![
            file(
                "cur/r/20231101-20231201/aaaa-1/r-00001.csv.gz",
                "2023-12-02T00:00:00+00:00",
            ),
            file(
                "cur/r/20231101-20231201/aaaa-1/r-00002.csv.gz",
                "2023-12-02T00:00:01+00:00",
            ),
            file(
                "cur/r/20231101-20231201/bbbb-2/r-00001.csv.gz",
                "2024-01-05T00:00:00+00:00",
            ),
            file(
                "cur/r/20231201-20240101/cccc-3/r-00001.csv.gz",
                "2024-01-03T00:00:00+00:00",
            ),
            file("other/export.csv", "2020-01-01T00:00:00+00:00"),
        ];
        let (kept, superseded) = latest_deliveries(files);
        let names = |v: &[DiscoveredFile]| v.iter().map(|f| f.path.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(&kept),
            vec![
                "cur/r/20231101-20231201/bbbb-2/r-00001.csv.gz",
                "cur/r/20231201-20240101/cccc-3/r-00001.csv.gz",
                "other/export.csv"
            ]
        );
        assert_eq!(superseded.len(), 2);
    }

    #[test]
    fn file_kinds_by_name() {
        assert_eq!(FileKind::of("cur-00001.csv.gz"), Some(FileKind::CsvGz));
        assert_eq!(FileKind::of("x.CSV"), Some(FileKind::Csv));
        assert_eq!(
            FileKind::of("part-0.snappy.parquet"),
            Some(FileKind::Parquet)
        );
        assert_eq!(FileKind::of("Manifest.json"), None);
        assert_eq!(FileKind::of("cur-Manifest.json"), None);
        assert_eq!(FileKind::of("billing-000.json"), Some(FileKind::Json));
        assert_eq!(FileKind::of("billing-000.jsonl.gz"), Some(FileKind::JsonGz));
    }

    #[test]
    fn unsupported_scheme_is_a_usage_error() {
        let e = open("ftp://host/x").unwrap_err();
        assert!(e.to_string().contains("ftp://"), "{e}");
    }
}
