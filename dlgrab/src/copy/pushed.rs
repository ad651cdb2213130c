//! DEST's own blobs for the layers it holds, learnt from a push: where
//! dlgrab cannot read DEST's content store (a `docker` group member, not
//! root; DEST behind `ssh://`), DEST pushes the image holding those layers
//! to a registry of dlgrab's on 127.0.0.1 that claims every blob present,
//! so only the image manifest crosses; it names each layer by the blob DEST
//! keeps. Every image manifest and index is refused, so the push fails at
//! that step and DEST marks nothing as pushed; the temporary tag goes (see
//! [`Cleanup`]). DEST behind ssh reaches the registry through a port of its
//! host's loopback forwarded here ([`ReverseTunnel`]).
//!
//! One [`Surveyor`] (registry and tunnel) serves a whole `--to` run; it is
//! started while DEST's images are listed.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, bail};
use docker_driver::{DockerDriver, RegistryCredentials, ReverseTunnel, manifest};
use futures::StreamExt;
use shim_registry::auth::Auth;
use shim_registry::oci_spec::image::Digest;
use shim_registry::{
    ChannelSink, Presence, PresencePolicy, Registry, RegistryEvent, RegistryHandle,
};
use tokio::sync::Mutex;
use tokio::sync::mpsc::UnboundedReceiver;

use super::Held;
use crate::cleanup::Cleanup;

/// The most a manifest may weigh here.
const MAX_MANIFEST: usize = 4 << 20;

/// Claims every blob present and refuses every image manifest and index
/// (attestations are let through: a daemon puts them before the index).
struct ClaimAll;

impl PresencePolicy for ClaimAll {
    fn blob(&self, _repository: &str, _digest: &Digest) -> Presence {
        Presence::Present { size: 1 }
    }

    fn refuse_manifest(
        &self,
        _repository: &str,
        _reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Option<String> {
        if manifest::is_attestation_manifest(body) {
            return None;
        }
        match manifest::kind_of(media_type, body) {
            manifest::ManifestKind::Image | manifest::ManifestKind::Index => Some(
                "dlgrab keeps the manifest and ends the push here, so the daemon marks nothing as pushed"
                    .to_owned(),
            ),
            manifest::ManifestKind::Other => None,
        }
    }
}

/// dlgrab's registry for DEST's pushes, and the tunnel DEST reaches it by.
pub(crate) struct Surveyor {
    handle: RegistryHandle,
    events: Mutex<UnboundedReceiver<RegistryEvent>>,
    /// Kept open while the surveyor lives.
    tunnel: Option<ReverseTunnel>,
    user: String,
    password: String,
}

impl Surveyor {
    /// Starts the registry on 127.0.0.1 and, for DEST behind `tunnel` (an
    /// `ssh://` host), the reverse tunnel to it.
    pub(crate) async fn start(tunnel: Option<&str>) -> anyhow::Result<Self> {
        let (sink, events) = ChannelSink::new();
        let (user, password) = crate::route::push::run_credentials();
        let registry = Registry::builder()
            .presence(Arc::new(ClaimAll))
            .event_sink(Arc::new(sink))
            .auth(Auth::basic().user(user.clone(), password.clone()))
            .max_manifest_size(MAX_MANIFEST)
            .build()
            .context("cannot set up the temporary registry")?;
        let handle = registry
            .spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .context("cannot start the temporary registry")?;
        let tunnel = match tunnel {
            Some(host) => match ReverseTunnel::open(host, handle.addr().port()).await {
                Ok(tunnel) => Some(tunnel),
                Err(e) => {
                    handle.shutdown().await;
                    return Err(anyhow::Error::new(e));
                }
            },
            None => None,
        };
        Ok(Self {
            handle,
            events: Mutex::new(events),
            tunnel,
            user,
            password,
        })
    }

    /// The registry's port as DEST reaches it.
    fn port(&self) -> u16 {
        self.tunnel
            .as_ref()
            .map_or(self.handle.addr().port(), ReverseTunnel::remote_port)
    }

    /// The image manifest of `holder` as DEST keeps it (its bytes), from a
    /// push of it to the registry.
    pub(crate) async fn held_manifest(
        &self,
        dest: &Arc<dyn DockerDriver>,
        cleanup: &Cleanup,
        holder: &Held,
    ) -> anyhow::Result<Vec<u8>> {
        // One push at a time: the events are this push's.
        let mut events = self.events.lock().await;
        while events.try_recv().is_ok() {}
        let name = crate::temp_names::repository();
        let tag = "held";
        let server = format!("127.0.0.1:{}", self.port());
        let repo = format!("{server}/{name}");
        let reference = format!("{repo}:{tag}");
        let pushed = async {
            cleanup
                .tag_on(dest, &holder.id, &repo, tag)
                .await
                .context("cannot tag the image for the push")?;
            let credentials = RegistryCredentials {
                username: self.user.clone(),
                password: self.password.clone(),
                server_address: server.clone(),
            };
            let mut stream = dest.push(&repo, tag, Some(credentials));
            let mut failure = None;
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    failure = Some(e);
                    break;
                }
            }
            Ok::<_, anyhow::Error>(failure)
        }
        .await;
        let untagged = cleanup.remove_tag(&reference).await;
        let failure = pushed?;
        untagged.with_context(|| format!("cannot remove the temporary tag {reference}"))?;

        let mut candidates = Vec::new();
        while let Ok(event) = events.try_recv() {
            let (RegistryEvent::ManifestPut {
                repository, body, ..
            }
            | RegistryEvent::ManifestRefused {
                repository, body, ..
            }) = event
            else {
                continue;
            };
            if repository == name
                && manifest::kind_of("", &body) == manifest::ManifestKind::Image
                && !manifest::is_attestation_manifest(&body)
            {
                candidates.push(body.to_vec());
            }
        }
        pick(candidates, holder.diff_ids.len(), failure)
    }

    /// Stops the registry and closes the tunnel.
    pub(crate) async fn shutdown(self) {
        drop(self.tunnel);
        self.handle.shutdown().await;
    }
}

/// The one image manifest of `layers` layers among those DEST pushed.
fn pick(
    mut candidates: Vec<Vec<u8>>,
    layers: usize,
    failure: Option<docker_driver::DriverError>,
) -> anyhow::Result<Vec<u8>> {
    let count = |body: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|m| m["layers"].as_array().map(Vec::len))
    };
    candidates.retain(|body| count(body) == Some(layers));
    match candidates.len() {
        1 => Ok(candidates.remove(0)),
        0 => match failure {
            Some(e) => {
                Err(anyhow::Error::new(e).context("DEST's push to dlgrab's registry failed"))
            }
            None => bail!("DEST pushed no image manifest of {layers} layers"),
        },
        n => bail!(
            "DEST pushed {n} image manifests of {layers} layers: which is the image's is unclear"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layers: usize) -> Vec<u8> {
        let layers: Vec<serde_json::Value> = (0..layers)
            .map(|i| {
                serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": format!("sha256:{:064x}", i), "size": 1})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{:064x}", 99), "size": 1},
            "layers": layers,
        }))
        .expect("json")
    }

    #[test]
    fn the_image_manifest_of_the_holders_layer_count_is_taken() {
        let two = manifest(2);
        assert_eq!(
            pick(vec![manifest(3), two.clone()], 2, None).expect("one"),
            two
        );
        let none = pick(vec![manifest(3)], 2, None).expect_err("none");
        assert!(
            format!("{none:#}").contains("no image manifest of 2 layers"),
            "{none:#}"
        );
        let both = pick(vec![manifest(2), manifest(2)], 2, None).expect_err("two");
        assert!(format!("{both:#}").contains("unclear"), "{both:#}");
    }

    #[test]
    fn image_manifests_and_indexes_are_refused_attestations_let_through() {
        let policy = ClaimAll;
        let image = manifest(1);
        assert!(policy.refuse_manifest("r", "held", "", &image).is_some());
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(policy.refuse_manifest("r", "held", "", index).is_some());
        let attestation = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{:064x}", 1), "size": 1},
            "layers": [{"mediaType": "application/vnd.in-toto+json",
                        "digest": format!("sha256:{:064x}", 2), "size": 1,
                        "annotations": {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}}],
        }))
        .expect("json");
        assert!(manifest::is_attestation_manifest(&attestation));
        assert!(
            policy
                .refuse_manifest("r", "held", "", &attestation)
                .is_none()
        );
        assert_eq!(
            policy.blob("r", &format!("sha256:{:064x}", 5).parse().expect("digest")),
            Presence::Present { size: 1 }
        );
    }
}
