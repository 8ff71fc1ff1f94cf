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

/// Whether a folder name is a CUR billing period range (`YYYYMMDD-YYYYMMDD`).
fn is_period_range(name: &str) -> bool {
    name.len() == 17
        && name.as_bytes()[8] == b'-'
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 8 || b.is_ascii_digit())
}

/// (period folder, assembly folder) of a file in the CUR delivery layout
/// (`<report>/<YYYYMMDD-YYYYMMDD>/<assembly>/<file>`).
fn delivery(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.split('/').collect();
    (parts.len() >= 3 && is_period_range(parts[parts.len() - 3])).then(|| {
        (
            parts[..parts.len() - 2].join("/"),
            parts[..parts.len() - 1].join("/"),
        )
    })
}

/// Why a delivery's files are not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCurrent {
    /// An older delivery of the period.
    Superseded,
    /// A delivery newer than the one the period's manifest names: still being written.
    InProgress,
}

/// AWS legacy CUR delivers each billing period into `<report>/<YYYYMMDD-YYYYMMDD>/<assembly>/`
/// and, unless the report overwrites, keeps every earlier delivery of that period beside the new
/// one (each a full snapshot). Only the current delivery of a period counts: the one the
/// period's own manifest names (`current`, from [`current_deliveries`]; AWS's guidance for
/// finding the latest report), else the assembly folder with the latest last-modified file.
/// The others are returned with why: older ones are superseded, newer ones (than the manifest's)
/// still being written. Files outside that layout are kept as they are.
pub fn latest_deliveries(
    files: Vec<DiscoveredFile>,
    current: &std::collections::BTreeMap<String, String>,
) -> (Vec<DiscoveredFile>, Vec<(DiscoveredFile, NotCurrent)>) {
    use std::collections::BTreeMap;
    // (period folder, assembly folder) → its latest last-modified
    let mut modified: BTreeMap<(String, String), String> = BTreeMap::new();
    for f in &files {
        if let Some(key) = delivery(f.path.as_ref()) {
            let m = modified.entry(key).or_default();
            if f.last_modified > *m {
                *m = f.last_modified.clone();
            }
        }
    }
    // period folder → its current delivery (last-modified, assembly folder): the manifest's,
    // where it has files here, else the newest.
    let mut chosen: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for ((period, assembly), at) in &modified {
        let newest = chosen.entry(period).or_insert((at, assembly));
        if (at.as_str(), assembly.as_str()) > *newest {
            *newest = (at, assembly);
        }
    }
    for (period, assembly) in current {
        if let Some((key, at)) = modified.get_key_value(&(period.clone(), assembly.clone())) {
            chosen.insert(&key.0, (at, &key.1));
        }
    }
    let mut kept = Vec::new();
    let mut other = Vec::new();
    for f in files {
        match delivery(f.path.as_ref()) {
            Some((period, assembly)) if chosen[period.as_str()].1 != assembly => {
                let at = modified[&(period.clone(), assembly.clone())].as_str();
                let why = if (at, assembly.as_str()) > chosen[period.as_str()] {
                    NotCurrent::InProgress
                } else {
                    NotCurrent::Superseded
                };
                other.push((f, why));
            }
            _ => kept.push(f),
        }
    }
    (kept, other)
}

/// Whether a CUR manifest's report key (a key in the bucket AWS delivered to, e.g.
/// `cur/finops/20231101-20231201/<assembly>/finops-00001.csv.gz`) is among the `listed` paths,
/// the report being in `report` (the folder holding the period folders) here. The key's part
/// after the report's own folder name is looked for below `report`, so a report copied under
/// another prefix, bucket or store is found, and a copy of it elsewhere is not taken for it.
/// A key that does not name the report's folder must be listed as it is.
fn report_key_listed(key: &str, report: &str, listed: &std::collections::BTreeSet<String>) -> bool {
    let key = key
        .strip_prefix("s3://")
        .and_then(|k| k.split_once('/').map(|(_, k)| k))
        .unwrap_or(key)
        .trim_start_matches('/');
    let name = report.rsplit('/').next().unwrap_or(report);
    let parts: Vec<&str> = key.split('/').collect();
    let mut anchored = false;
    for (i, _) in parts.iter().enumerate().filter(|(_, p)| **p == name) {
        anchored = true;
        let rest = parts[i + 1..].join("/");
        if listed.contains(&format!("{report}/{rest}")) {
            return true;
        }
    }
    !anchored && listed.contains(key)
}

/// What the billing period manifests among `manifests` (AWS CUR's
/// `<report>/<YYYYMMDD-YYYYMMDD>/<report>-Manifest.json`) say: period folder → the assembly
/// folder of the period's current delivery. Every report file a manifest lists must be among
/// the `listed` objects (see [`report_key_listed`]), or the delivery is incomplete
/// ([`TallyError::Incomplete`]: still being written, or parts removed). A manifest that is not
/// such JSON is named in a warning and not used.
pub async fn current_deliveries(
    loc: &Location,
    manifests: &[Path],
    listed: &std::collections::BTreeSet<String>,
) -> Result<std::collections::BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct CurManifest {
        assembly_id: Option<String>,
        #[serde(default)]
        report_keys: Vec<String>,
    }
    let mut current = std::collections::BTreeMap::new();
    for path in manifests {
        let Some((folder, _)) = path.as_ref().rsplit_once('/') else {
            continue;
        };
        if !folder.rsplit('/').next().is_some_and(is_period_range) {
            continue;
        }
        let bytes = loc.get_bytes(path).await?;
        let manifest: CurManifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(manifest = %loc.url_of(path), error = %e, "not a CUR manifest: not used to choose the current delivery");
                continue;
            }
        };
        let report = folder.rsplit_once('/').map_or("", |(r, _)| r);
        let missing: Vec<&String> = manifest
            .report_keys
            .iter()
            .filter(|k| !report_key_listed(k, report, listed))
            .collect();
        if let Some(first) = missing.first() {
            return Err(TallyError::Incomplete {
                manifest: loc.url_of(path),
                missing: (*first).clone(),
                count: missing.len(),
            });
        }
        if let Some(id) = manifest.assembly_id.filter(|id| !id.is_empty()) {
            current.insert(folder.to_string(), format!("{folder}/{id}"));
        }
    }
    Ok(current)
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
    Ok(discover_all(loc).await?.files)
}

/// Everything [`discover_all`] found under a URL.
#[derive(Debug, Default)]
pub struct Discovery {
    /// The export files, sorted by path.
    pub files: Vec<DiscoveredFile>,
    /// URLs of the objects that are not exports tally reads (sorted; hidden and `_` folders
    /// and the exports' own manifests are not among them). They are logged in a warning, and
    /// a run lists them in its manifest.
    pub not_exports: Vec<String>,
    /// The exports' own manifests (AWS's `…-Manifest.json`, Azure's `manifest.json`).
    pub export_manifests: Vec<Path>,
    /// The path of every object listed below the URL, whatever it is.
    pub listed: std::collections::BTreeSet<String>,
}

/// [`discover`], with what else is there.
pub async fn discover_all(loc: &Location) -> Result<Discovery> {
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
            Some(kind) => Discovery {
                files: vec![file_of(meta, kind)],
                ..Discovery::default()
            },
            None => Discovery {
                not_exports: vec![url],
                ..Discovery::default()
            },
        });
    }
    let mut not_exports: Vec<String> = Vec::new();
    let mut export_manifests: Vec<Path> = Vec::new();
    let metas: Vec<object_store::ObjectMeta> = loc
        .store
        .list(Some(&loc.path))
        .try_collect()
        .await
        .map_err(|e| loc.err("list", &loc.path, e))?;
    let listed = metas.iter().map(|m| m.location.to_string()).collect();
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
                if is_export_manifest(m.location.as_ref()) {
                    export_manifests.push(m.location);
                } else {
                    not_exports.push(loc.url_of(&m.location));
                }
                None
            }
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if !not_exports.is_empty() {
        not_exports.sort();
        let zip = not_exports
            .iter()
            .any(|u| u.to_ascii_lowercase().ends_with(".zip"));
        tracing::warn!(
            source = %loc.url_of(&loc.path),
            count = not_exports.len(),
            files = ?not_exports.iter().take(5).collect::<Vec<_>>(),
            "objects that are not exports tally reads were skipped (it reads .csv, .csv.gz, .gz, .parquet, .jsonl, .ndjson, .json and their .gz){}",
            if zip { "; a ZIP-compressed CUR is not read: choose GZIP or Parquet in the report's settings" } else { "" }
        );
    }
    export_manifests.sort();
    Ok(Discovery {
        files,
        not_exports,
        export_manifests,
        listed,
    })
}

/// Whether an object is an export's own manifest (AWS's `…-Manifest.json`, Azure's
/// `manifest.json`), which sits beside the exports and is expected not to be read.
fn is_export_manifest(path: &str) -> bool {
    let n = path.to_ascii_lowercase();
    n.ends_with("manifest.json") || n.ends_with("manifest.json.gz")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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
        let (kept, superseded) = latest_deliveries(files.clone(), &BTreeMap::new());
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
        assert!(superseded.iter().all(|s| s.1 == NotCurrent::Superseded));

        // The period's manifest still names the first delivery: the second is being written.
        let current = BTreeMap::from([(
            "cur/r/20231101-20231201".to_string(),
            "cur/r/20231101-20231201/aaaa-1".to_string(),
        )]);
        let (kept, other) = latest_deliveries(files, &current);
        assert_eq!(
            names(&kept),
            vec![
                "cur/r/20231101-20231201/aaaa-1/r-00001.csv.gz",
                "cur/r/20231101-20231201/aaaa-1/r-00002.csv.gz",
                "cur/r/20231201-20240101/cccc-3/r-00001.csv.gz",
                "other/export.csv"
            ]
        );
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].1, NotCurrent::InProgress);
    }

    /// A report key is found below the report's folder here, wherever AWS delivered it.
    #[test]
    fn report_keys_are_found_below_the_report_wherever_it_was_copied() {
        let listed: std::collections::BTreeSet<String> = [
            "lake/landing/finops/20231101-20231201/a1/finops-00001.csv.gz",
            "lake/landing/finops/finops/year=2023/month=11/finops-00001.snappy.parquet",
            "archive/cur/finops/20231101-20231201/a1/finops-00002.csv.gz",
            "flat/report-00001.csv",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let report = "lake/landing/finops";
        let found = |key: &str| report_key_listed(key, report, &listed);
        // Delivered under `cur/`, copied under `lake/landing/`.
        assert!(found("cur/finops/20231101-20231201/a1/finops-00001.csv.gz"));
        assert!(found(
            "s3://bucket/cur/finops/20231101-20231201/a1/finops-00001.csv.gz"
        ));
        // The Athena layout repeats the report's name.
        assert!(found(
            "cur/finops/finops/year=2023/month=11/finops-00001.snappy.parquet"
        ));
        // A copy somewhere else is not this report's part.
        assert!(!found(
            "cur/finops/20231101-20231201/a1/finops-00002.csv.gz"
        ));
        // A key without the report's folder must be listed as it is.
        assert!(report_key_listed("flat/report-00001.csv", "x/y", &listed));
        assert!(!report_key_listed("other/report-00001.csv", "x/y", &listed));
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
