//! Progress bars for long work (hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting files of one source.
pub fn files_bar(len: u64, source: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} files {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(source.to_string());
    bar
}
