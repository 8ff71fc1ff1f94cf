//! Job files: what to read, where to write, which checks to enforce.
//!
//! ```toml
//! [job]
//! name = "sample"
//!
//! [output]
//! url = "file://../out/sample"      # relative paths resolve against the job file's folder
//! focus_versions = ["1.4", "1.2"]   # 1.4 always; "1.2" adds the cost_and_usage_1_2 projection
//!
//! [[source]]
//! name = "aws-cur"
//! url = "file://../sample-data/aws/cur1"
//! format = "aws_cur"                # optional: detected from the header when absent
//! cost_identity = "warn"            # optional: overrides [checks] for this source
//! params = { cost_view = "actual" } # optional: settings the format takes (`tally formats`)
//!
//! [checks]
//! cost_identity = "quarantine"      # or "warn": keep the row, count the violation
//!
//! [schedule]
//! cron = "30 2 * * *"               # optional: when `tally schedule` runs it (UTC)
//!
//! [inputs]                           # optional: files the SQL stages read (schemas/inputs/)
//! invoices = "file://../sample-data/invoices/invoices.csv"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Result, TallyError};

/// A parsed job file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Job metadata.
    pub job: JobMeta,
    /// Where the tables go.
    pub output: Output,
    /// The exports to read.
    #[serde(rename = "source", default)]
    pub sources: Vec<Source>,
    /// Check settings.
    #[serde(default)]
    pub checks: Checks,
    /// When `tally schedule` runs the job.
    #[serde(default)]
    pub schedule: Option<Schedule>,
    /// Files that are not billing data, by input name (`invoices = "file://..."`), for the SQL
    /// stages; each is checked against `schemas/inputs/<name>.psv`.
    #[serde(default)]
    pub inputs: std::collections::BTreeMap<String, String>,
}

/// `[schedule]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// A cron expression in UTC: five fields (`30 2 * * *`, 02:30 every night), or six with
    /// seconds first.
    pub cron: String,
}

impl Schedule {
    /// The parsed expression.
    pub fn parsed(&self) -> std::result::Result<croner::Cron, String> {
        croner::Cron::new(&self.cron)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("schedule.cron {:?}: {e}", self.cron))
    }
}

/// `[job]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMeta {
    /// A name for logs and manifests.
    pub name: String,
}

/// `[output]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Root URL of the output tables (`file://`, `s3://`, `gs://`, `az://`).
    pub url: String,
    /// FOCUS versions to write: `1.4` (always) and optionally `1.2`.
    #[serde(default = "default_versions")]
    pub focus_versions: Vec<String>,
}

fn default_versions() -> Vec<String> {
    vec!["1.4".into()]
}

/// `[[source]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Name for logs and the manifest.
    pub name: String,
    /// A file or a folder/prefix URL; folders are listed recursively.
    pub url: String,
    /// Format name (see `tally formats`); detected from the header when absent.
    pub format: Option<String>,
    /// Overrides `[checks] cost_identity` for this source.
    #[serde(default)]
    pub cost_identity: Option<Severity>,
    /// Settings the format takes (see `tally formats`), e.g. Azure's `cost_view = "amortized"`.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
}

/// `[checks]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Checks {
    /// What a cost-identity violation does to a row.
    #[serde(default)]
    pub cost_identity: Severity,
}

/// What a failed row rule does.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The row goes to the quarantine table.
    #[default]
    Quarantine,
    /// The row is kept; the violation is counted in the manifest.
    Warn,
}

impl Job {
    /// Reads and validates a job file, resolving relative `file://` URLs against its folder.
    pub fn load(path: &Path) -> Result<(Job, Vec<u8>)> {
        let bytes = std::fs::read(path).map_err(|e| TallyError::Job {
            path: path.into(),
            message: e.to_string(),
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|e| TallyError::Job {
            path: path.into(),
            message: format!("not UTF-8: {e}"),
        })?;
        let mut job: Job = toml::from_str(text).map_err(|e| TallyError::Job {
            path: path.into(),
            message: e.to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        job.output.url = resolve_url(&job.output.url, &base);
        for s in &mut job.sources {
            s.url = resolve_url(&s.url, &base);
        }
        for url in job.inputs.values_mut() {
            *url = resolve_url(url, &base);
        }
        job.validate().map_err(|message| TallyError::Job {
            path: path.into(),
            message,
        })?;
        Ok((job, bytes))
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.sources.is_empty() {
            return Err("no [[source]] given".into());
        }
        for v in &self.output.focus_versions {
            if v != "1.4" && v != "1.2" {
                return Err(format!(
                    "output.focus_versions: {v:?} is not supported (use \"1.4\" and/or \"1.2\")"
                ));
            }
        }
        if let Some(s) = &self.schedule {
            s.parsed()?;
        }
        for name in self.inputs.keys() {
            crate::inputs::schema(name).map_err(|e| format!("[inputs] {name}: {e}"))?;
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &self.sources {
            if !names.insert(&s.name) {
                return Err(format!("two sources are named {:?}", s.name));
            }
        }
        Ok(())
    }

    /// Whether the FOCUS 1.2 projection is wanted.
    pub fn wants_focus_1_2(&self) -> bool {
        self.output.focus_versions.iter().any(|v| v == "1.2")
    }
}

/// Turns `file://relative/path` and bare paths into absolute `file:///...` URLs.
pub fn resolve_url(url: &str, base: &Path) -> String {
    let (scheme_less, had_scheme) = match url.strip_prefix("file://") {
        Some(rest) => (rest, true),
        None if url.contains("://") => return url.to_string(),
        None => (url, false),
    };
    let _ = had_scheme;
    let p = PathBuf::from(scheme_less);
    let abs = if p.is_absolute() { p } else { base.join(p) };
    format!("file://{}", normalize_path(&abs).display())
}

fn normalize_path(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    if out.is_relative() {
        std::env::current_dir().map(|d| d.join(&out)).unwrap_or(out)
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_file_urls_resolve_against_the_job_folder() {
        let base = Path::new("/srv/tally/jobs");
        assert_eq!(
            resolve_url("file://../data/aws", base),
            "file:///srv/tally/data/aws"
        );
        assert_eq!(resolve_url("file:///abs/x.csv", base), "file:///abs/x.csv");
        assert_eq!(resolve_url("s3://bucket/cur/", base), "s3://bucket/cur/");
        assert_eq!(resolve_url("out", base), "file:///srv/tally/jobs/out");
    }

    #[test]
    fn rejects_unknown_keys_and_versions() {
        let bad: std::result::Result<Job, _> = toml::from_str(
            "[job]\nname='x'\n[output]\nurl='o'\ncolour='red'\n[[source]]\nname='a'\nurl='b'\n",
        );
        assert!(bad.unwrap_err().to_string().contains("colour"));
        let job: Job = toml::from_str(
            "[job]\nname='x'\n[output]\nurl='o'\nfocus_versions=['1.1']\n[[source]]\nname='a'\nurl='b'\n",
        )
        .unwrap();
        assert!(job.validate().unwrap_err().contains("1.1"));
    }
}
