//! A store for tests that misbehaves the way real ones do: an object restated while a run
//! reads it, a connection lost part-way through a GET, a client that panics mid-read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt};

use crate::storage::{DiscoveredFile, FileKind, Location};

/// How every GET's bytes end.
#[derive(Debug, Clone, Copy)]
pub enum Ending {
    /// With the object's last byte.
    Whole,
    /// With a lost connection after this many chunks (an in-memory object is one chunk).
    LostAfter(usize),
    /// With a panic after this many chunks, as a bug in a client would.
    PanicAfter(usize),
}

/// An in-memory store that counts GETs, can restate an object right after the first GET of it
/// began, and ends every GET's bytes as its [`Ending`] says.
#[derive(Debug)]
pub struct Meddling {
    /// The objects; put them here (puts through the wrapper work too).
    pub inner: object_store::memory::InMemory,
    reads: AtomicUsize,
    restated: Option<Bytes>,
    ending: Ending,
}

impl Meddling {
    /// A store that behaves.
    pub fn new() -> Meddling {
        Meddling {
            inner: object_store::memory::InMemory::new(),
            reads: AtomicUsize::new(0),
            restated: None,
            ending: Ending::Whole,
        }
    }

    /// Replaces the object read by the first GET with `bytes` as soon as that GET began.
    pub fn restating(mut self, bytes: Bytes) -> Meddling {
        self.restated = Some(bytes);
        self
    }

    /// Ends every GET's bytes this way.
    pub fn ending(mut self, ending: Ending) -> Meddling {
        self.ending = ending;
        self
    }

    /// GETs and range reads so far.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Stores `bytes` as `cur/<name>` and returns its listing (without an ETag, as a store
    /// that gives none would list it).
    pub async fn holding(&self, name: &str, bytes: Bytes, kind: FileKind) -> DiscoveredFile {
        let path = Path::from(format!("cur/{name}"));
        let size = bytes.len() as u64;
        self.inner
            .put(&path, bytes.into())
            .await
            .expect("in-memory put");
        DiscoveredFile {
            url: format!("memory://cur/{name}"),
            path,
            size,
            e_tag: None,
            last_modified: String::new(),
            kind,
        }
    }

    /// A location over this store, at `memory://cur`.
    pub fn location(self: &Arc<Self>) -> Location {
        Location {
            store: self.clone(),
            store_url: "memory://".into(),
            path: Path::from("cur"),
        }
    }
}

impl Default for Meddling {
    fn default() -> Meddling {
        Meddling::new()
    }
}

impl std::fmt::Display for Meddling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Meddling")
    }
}

#[async_trait::async_trait]
impl ObjectStore for Meddling {
    async fn put_opts(
        &self,
        location: &Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let got = self.inner.get_opts(location, options).await?;
        if self.reads.fetch_add(1, Ordering::SeqCst) == 0
            && let Some(bytes) = &self.restated
        {
            self.inner.put(location, bytes.clone().into()).await?;
        }
        let (chunks, panics) = match self.ending {
            Ending::Whole => return Ok(got),
            Ending::LostAfter(n) => (n, false),
            Ending::PanicAfter(n) => (n, true),
        };
        let (meta, range, attributes) =
            (got.meta.clone(), got.range.clone(), got.attributes.clone());
        let end = futures::stream::once(async move {
            assert!(!panics, "a bug in the store's client");
            Err(object_store::Error::Generic {
                store: "Meddling",
                source: "connection reset by peer".into(),
            })
        });
        Ok(GetResult {
            payload: GetResultPayload::Stream(got.into_stream().take(chunks).chain(end).boxed()),
            meta,
            range,
            attributes,
        })
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_ranges(location, ranges).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
