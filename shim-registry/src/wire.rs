//! The HTTP wire format of the distribution spec: routes, headers, bodies
//! and error responses. Everything about HTTP lives under this module.

mod blobs;
mod body;
mod error;
mod manifests;
mod range;
mod reply;
mod request;
mod route;
mod service;

pub use body::ResponseBody;
pub(crate) use route::{valid_name, valid_tag};
pub use service::RegistryService;
