//! DEST's own blobs for the layers it holds, learnt from a push: where
//! dlgrab cannot read DEST's content store (a `docker` group member, not
//! root), DEST pushes the image holding those layers to a registry of
//! dlgrab's on 127.0.0.1 that claims every blob present, so only the image
//! manifest crosses; it names each layer by the blob DEST keeps. The
//! manifest is refused under the temporary tag, so the push fails at its
//! last step and DEST marks nothing as pushed; the tag goes (see
//! [`Cleanup`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, bail};
use docker_driver::{DockerDriver, RegistryCredentials, manifest};
use futures::StreamExt;
use shim_registry::auth::Auth;
use shim_registry::{ChannelSink, Registry, RegistryEvent};

use super::Held;
use crate::cleanup::Cleanup;
use crate::plan::{self, CapturePolicy};

/// The most a manifest may weigh here.
const MAX_MANIFEST: usize = 4 << 20;

/// The image manifest of `holder` as DEST keeps it (its bytes), from a
/// push of it to dlgrab's registry; DEST speaks API `api_version`.
pub(crate) async fn held_manifest(
    dest: &Arc<dyn DockerDriver>,
    cleanup: &Cleanup,
    holder: &Held,
    api_version: &str,
) -> anyhow::Result<Vec<u8>> {
    let name = format!("dlgrab-{}", layer_writer::run::unique_name_part());
    let tag = "held";
    // Docker 26.1 (API 1.45) puts an index's manifests under the tag
    // before the index: only the index is refused there.
    let image_manifests = plan::api_at_least(api_version, 1, 46);
    let policy = Arc::new(CapturePolicy::new(name.clone()).refusing_tag(
        tag,
        holder.id.parse().ok(),
        image_manifests,
    ));
    let (sink, mut events) = ChannelSink::new();
    let (user, password) = crate::route::push::run_credentials();
    let registry = Registry::builder()
        .presence(policy)
        .event_sink(Arc::new(sink))
        .auth(Auth::basic().user(user.clone(), password.clone()))
        .max_manifest_size(MAX_MANIFEST)
        .build()
        .context("cannot set up the temporary registry")?;
    let handle = registry
        .spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .context("cannot start the temporary registry")?;
    let port = handle.addr().port();
    let repo = format!("127.0.0.1:{port}/{name}");
    let reference = format!("{repo}:{tag}");
    let pushed = async {
        cleanup
            .tag_on(dest, &holder.id, &repo, tag)
            .await
            .context("cannot tag the image for the push")?;
        let credentials = RegistryCredentials {
            username: user,
            password,
            server_address: format!("127.0.0.1:{port}"),
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
    handle.shutdown().await;
    let failure = pushed?;
    untagged.with_context(|| format!("cannot remove the temporary tag {reference}"))?;

    let mut candidates = Vec::new();
    while let Ok(event) = events.try_recv() {
        let (RegistryEvent::ManifestPut { body, .. } | RegistryEvent::ManifestRefused { body, .. }) =
            event
        else {
            continue;
        };
        if manifest::kind_of("", &body) == manifest::ManifestKind::Image
            && !manifest::is_attestation_manifest(&body)
        {
            candidates.push(body.to_vec());
        }
    }
    let layers = |body: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|m| m["layers"].as_array().map(Vec::len))
    };
    candidates.retain(|body| layers(body) == Some(holder.diff_ids.len()));
    match candidates.as_slice() {
        [one] => Ok(one.clone()),
        [] => match failure {
            Some(e) => {
                Err(anyhow::Error::new(e).context("DEST's push to dlgrab's registry failed"))
            }
            None => bail!(
                "DEST pushed no image manifest of {} layers",
                holder.diff_ids.len()
            ),
        },
        more => bail!(
            "DEST pushed {} image manifests of {} layers: which one is the image's is unclear",
            more.len(),
            holder.diff_ids.len()
        ),
    }
}
