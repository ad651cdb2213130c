//! Push control: steering a client while it pushes.
//!
//! The rest of the API answers clients as a registry should, and lets the
//! embedding program observe them. The knobs gathered here go further: they
//! decide *when* a push makes progress and *whether* it may succeed. They
//! were made for one embedder, a tool that has a container engine push an
//! image into an in-process registry only to read some of its layers: it
//! asks the engine's blob `HEAD`s one at a time to see which it uploads,
//! stops the engine from compressing layers nobody wants, and refuses the
//! final manifest so that the engine marks nothing as pushed. A registry for
//! tests seldom needs any of them; all are off by default.
//!
//! - [`UploadHold`], given to
//!   [`RegistryBuilder::upload_hold`](crate::RegistryBuilder::upload_hold):
//!   upload bodies past a size stop being read (the client's sends block)
//!   until the hold is raised or released; each held session is reported as
//!   [`RegistryEvent::UploadHeld`](crate::RegistryEvent::UploadHeld).
//! - [`PresencePolicy::pace_head`](crate::PresencePolicy::pace_head): a blob
//!   `HEAD`'s answer waits for a [`HeadPace`] future.
//! - [`PresencePolicy::refuse_manifest`](crate::PresencePolicy::refuse_manifest):
//!   a well-formed manifest `PUT` is answered `403 DENIED` and stored
//!   nowhere, but still reported as
//!   [`RegistryEvent::ManifestRefused`](crate::RegistryEvent::ManifestRefused).
//!
//! The two methods stay on [`PresencePolicy`](crate::PresencePolicy) (with
//! defaults that do nothing); [`UploadHold`] and [`HeadPace`] are also
//! re-exported at the crate root.

use std::future::Future;
use std::pin::Pin;

mod hold;

pub use hold::UploadHold;

/// What [`PresencePolicy::pace_head`](crate::PresencePolicy::pace_head) has
/// a blob `HEAD` wait for before it is answered.
pub type HeadPace = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
