//! Endpoints: the innermost handler a [`Stack`](crate::Stack) serves, ready-made.
//!
//! - [`StaticFiles`] (feature `static-files`, on by default): files served from a directory, with
//!   conditional requests, byte ranges and precompressed siblings.

#[cfg(feature = "static-files")]
#[cfg_attr(docsrs, doc(cfg(feature = "static-files")))]
pub mod static_files;
#[cfg(all(feature = "static-files", feature = "config"))]
pub use static_files::StaticFilesConfig;
#[cfg(feature = "static-files")]
pub use static_files::{FileIo, StaticFiles, StaticFilesBuilder};
