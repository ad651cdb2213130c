//! The survey push's bookkeeping and verdicts, free of I/O: what the daemon
//! did per layer, which blobs it asked about, and when to cancel the push
//! or give it up for `docker save`.

use std::collections::HashMap;

use docker_driver::{DaemonInfo, ImageDetails};
use shim_registry::oci_spec::image::Digest;

use crate::plan::strip_algorithm;

/// What the daemon did with one layer in the survey push, from its
/// progress messages (a classic store names each layer by its diff ID's
/// first 12 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Nothing said yet (`Preparing`, `Waiting`), or a store whose progress
    /// names layers otherwise (the containerd store names blobs).
    Unknown,
    /// Asked before uploading and told it is there (`Layer already exists`,
    /// `Mounted from …`).
    Asked,
    /// Uploading unasked (`Pushing`).
    Uploading,
    /// Uploaded unasked, the blob stored (`Pushed`).
    Uploaded,
}

/// The survey push as watched so far: per layer what the daemon did, and
/// the layers' sizes (uncompressed, as the daemon reports them).
#[derive(Debug, Clone)]
pub(crate) struct Survey {
    short_ids: Vec<String>,
    seen: Vec<Seen>,
    sizes: Vec<u64>,
    /// The registry saw an upload start: some layer is uploaded unasked
    /// (the daemon's own `Pushing` message may come some time later).
    upload_started: bool,
}

impl Survey {
    /// A survey of `image`, nothing seen yet.
    pub(crate) fn new(image: &ImageDetails) -> Self {
        let mut sizes = vec![0; image.diff_ids.len()];
        for row in &image.history {
            if let Some(slot) = row.layer_index.and_then(|i| sizes.get_mut(i)) {
                *slot = u64::try_from(row.size).unwrap_or(0);
            }
        }
        Self {
            short_ids: image
                .diff_ids
                .iter()
                .map(|d| strip_algorithm(d).chars().take(12).collect())
                .collect(),
            seen: vec![Seen::Unknown; image.diff_ids.len()],
            sizes,
            upload_started: false,
        }
    }

    /// The registry saw an upload session open.
    pub(crate) fn upload_started(&mut self) {
        self.upload_started = true;
    }

    /// One progress message of the push; returns the layers it is about
    /// (an image may hold the same layer twice).
    pub(crate) fn progress(&mut self, id: &str, status: &str, total: Option<u64>) -> Vec<usize> {
        let layers: Vec<usize> = (0..self.short_ids.len())
            .filter(|&i| self.short_ids[i].len() == 12 && self.short_ids[i] == id)
            .collect();
        for &i in &layers {
            let next = match status {
                "Layer already exists" => Seen::Asked,
                s if s.starts_with("Mounted from") => Seen::Asked,
                "Pushing" if self.seen[i] != Seen::Uploaded => Seen::Uploading,
                "Pushed" => Seen::Uploaded,
                _ => self.seen[i],
            };
            self.seen[i] = next;
            if status == "Pushing"
                && let Some(total) = total
            {
                self.sizes[i] = self.sizes[i].max(total);
            }
        }
        layers
    }

    /// What the daemon did with layer `index`.
    pub(crate) fn seen(&self, index: usize) -> Seen {
        self.seen.get(index).copied().unwrap_or(Seen::Unknown)
    }

    pub(crate) fn image_bytes(&self) -> u64 {
        self.sizes.iter().sum()
    }

    /// Layer `index`'s size as far as known (history, then the push's progress).
    pub(crate) fn size(&self, index: usize) -> u64 {
        self.sizes.get(index).copied().unwrap_or(0)
    }
}

/// Matches the blobs a survey push asked about (a `HEAD` the registry
/// answered "present") to the layers the daemon then reported as "Layer
/// already exists".
///
/// A classic daemon asks about several layers at once, so the answers and
/// its messages interleave. Each message comes after its own `HEAD`, so
/// whenever as many messages are pending as `HEAD`s, those messages' layers
/// and those blobs are the same set: one of each is an exact match; more
/// make a group in which each layer may be any of the group's blobs (the
/// capture then asks for them all and the writer keeps the one whose diff
/// ID matches).
#[derive(Debug, Default)]
pub(crate) struct AskedBlobs {
    heads: Vec<Digest>,
    messages: Vec<Vec<usize>>,
    candidates: HashMap<usize, Vec<Digest>>,
}

impl AskedBlobs {
    /// The registry answered a `HEAD` of `digest` with "present".
    pub(crate) fn head(&mut self, digest: Digest) {
        if !self.heads.contains(&digest) {
            self.heads.push(digest);
            self.settle();
        }
    }

    /// The daemon said "Layer already exists" for `layers` (one layer, or
    /// the same layer held twice by the image).
    pub(crate) fn exists(&mut self, layers: Vec<usize>) {
        if !layers.is_empty() {
            self.messages.push(layers);
            self.settle();
        }
    }

    /// True while `HEAD`s or "Layer already exists" messages wait for
    /// their counterparts: layers asked about may still be matched.
    pub(crate) fn settling(&self) -> bool {
        !self.heads.is_empty() || !self.messages.is_empty()
    }

    fn settle(&mut self) {
        if self.messages.is_empty() || self.messages.len() != self.heads.len() {
            return;
        }
        let heads = std::mem::take(&mut self.heads);
        for layers in self.messages.drain(..) {
            for i in layers {
                self.candidates.insert(i, heads.clone());
            }
        }
    }

    /// The blobs layer `index` may have been asked for; one when exact.
    pub(crate) fn candidates(&self, index: usize) -> Option<&[Digest]> {
        self.candidates.get(&index).map(Vec::as_slice)
    }

    /// The layers matched so far.
    pub(crate) fn known(&self) -> Vec<usize> {
        self.candidates.keys().copied().collect()
    }

    /// The other layers of `index`'s group: capturing its blobs uploads theirs too.
    pub(crate) fn group_mates(&self, index: usize) -> Vec<usize> {
        let Some(mine) = self.candidates.get(&index) else {
            return Vec::new();
        };
        let mut mates: Vec<usize> = self
            .candidates
            .iter()
            .filter(|(i, c)| **i != index && *c == mine)
            .map(|(i, _)| *i)
            .collect();
        mates.sort_unstable();
        mates
    }
}

/// What to do with the survey push after a progress message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SurveyStep {
    /// Let it go on.
    Continue,
    /// Every wanted layer is in and the config is at hand: drop the push
    /// (the daemon cancels the uploads still running).
    Cancel,
    /// Some wanted layers were asked about (their blobs known), the others
    /// are in, the config is at hand, and the daemon is uploading other
    /// layers unasked: drop the push and capture the asked ones in a second
    /// push, itself dropped once they are in.
    CancelThenCapture,
    /// The push would cost more than `docker save`: drop it, for this reason.
    GiveUp(String),
}

/// The share of an image a classic daemon may compress and upload unasked
/// before `docker save` of the whole image is the cheaper way: its
/// on-the-fly gzip against the save stream (a temporary copy of the image,
/// then a tar of it). Measured side by side on this project's daemons (see
/// README "Benchmarks"): 20.10 compresses about 26 MB/s, 26.1 and 28.5
/// several times faster.
pub(crate) fn unasked_share(info: &DaemonInfo) -> f64 {
    let major: u32 = info
        .server_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major >= 25 { 0.5 } else { 0.15 }
}

/// Decides, after each progress message of the survey push, whether to go
/// on, to cancel (the wanted layers were uploaded unasked and are in, and
/// the image config is at hand without the push), or to give up for
/// `docker save` (not when the push was forced with `--via push`).
///
/// The cost counted is what the daemon compresses: when the wanted layers
/// are all uploaded unasked and the config is at hand, only they (the push
/// is cancelled once they are in); otherwise the push must run to its end
/// (the manifest names the asked layers' blobs, and a classic daemon sends
/// the config last), so every layer seen uploading counts.
pub(crate) fn survey_step(
    survey: &Survey,
    wanted: &[usize],
    asked_blob_known: &[usize],
    config_at_hand: bool,
    forced: bool,
    share: f64,
) -> SurveyStep {
    let unasked = |i: &usize| matches!(survey.seen(*i), Seen::Uploading | Seen::Uploaded);
    let uploading =
        survey.upload_started || (0..survey.seen.len()).any(|i| survey.seen(i) == Seen::Uploading);
    if config_at_hand
        && uploading
        && wanted.iter().any(|&i| survey.seen(i) == Seen::Asked)
        && wanted.iter().all(|&i| {
            survey.seen(i) == Seen::Uploaded
                || (survey.seen(i) == Seen::Asked && asked_blob_known.contains(&i))
        })
    {
        return SurveyStep::CancelThenCapture;
    }
    let cancellable = config_at_hand && wanted.iter().all(unasked);
    if cancellable
        && wanted.iter().all(|&i| survey.seen(i) == Seen::Uploaded)
        && (0..survey.seen.len()).any(|i| matches!(survey.seen(i), Seen::Unknown | Seen::Uploading))
    {
        return SurveyStep::Cancel;
    }
    if forced {
        return SurveyStep::Continue;
    }
    let counted: Vec<usize> = if cancellable {
        wanted.to_vec()
    } else {
        (0..survey.seen.len()).filter(unasked).collect()
    };
    let cost: u64 = counted.iter().map(|&i| survey.sizes[i]).sum();
    let budget = (survey.image_bytes() as f64 * share) as u64;
    if cost > budget {
        let layers: Vec<String> = counted.iter().map(usize::to_string).collect();
        return SurveyStep::GiveUp(format!(
            "the daemon uploading layer(s) {} unasked ({cost} of the image's {} bytes to \
             compress; more than {:.0}%)",
            layers.join(", "),
            survey.image_bytes(),
            share * 100.0
        ));
    }
    SurveyStep::Continue
}

/// Whether the survey push may still be dropped before its end (by
/// [`SurveyStep::Cancel`] or [`SurveyStep::CancelThenCapture`]): the config
/// is at hand and no wanted layer was asked about without its blob known
/// or still to be matched. Otherwise the push must run to its end (its
/// manifest names the asked layers' blobs), so no upload may be held.
pub(crate) fn survey_may_cancel(
    survey: &Survey,
    wanted: &[usize],
    asked: &AskedBlobs,
    config_at_hand: bool,
) -> bool {
    config_at_hand
        && wanted.iter().all(|&i| {
            survey.seen(i) != Seen::Asked || asked.candidates(i).is_some() || asked.settling()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{digest, image, row};
    use docker_driver::HistoryRow;

    /// A three-layer image: 1000, 100 and 10 bytes, base first.
    fn surveyed() -> Survey {
        let mut img = image(&["x:1"], &[], 3);
        img.diff_ids = (0..3)
            .map(|i| format!("sha256:{}", i.to_string().repeat(64)))
            .collect();
        img.history = [1000, 100, 10]
            .iter()
            .enumerate()
            .map(|(i, &size)| HistoryRow {
                size,
                ..row(None, Some(i))
            })
            .collect();
        Survey::new(&img)
    }

    fn short(i: usize) -> String {
        i.to_string().repeat(12)
    }

    #[test]
    fn the_survey_reads_the_daemons_progress_per_layer() {
        let mut s = surveyed();
        assert_eq!(s.progress(&short(2), "Preparing", None), [2]);
        assert_eq!(s.seen(2), Seen::Unknown);
        s.progress(&short(2), "Pushing", Some(512));
        assert_eq!(s.seen(2), Seen::Uploading);
        s.progress(&short(2), "Pushed", None);
        s.progress(&short(2), "Pushing", Some(512));
        assert_eq!(s.seen(2), Seen::Uploaded);
        s.progress(&short(0), "Layer already exists", None);
        assert_eq!(s.seen(0), Seen::Asked);
        s.progress(&short(1), "Mounted from library/x", None);
        assert_eq!(s.seen(1), Seen::Asked);
        // Another store's blob IDs match no layer.
        assert!(s.progress("0123456789ab", "Pushed", None).is_empty());
    }

    #[test]
    fn survey_steps_cancel_give_up_or_go_on() {
        let share = 0.15;
        // Top layer uploaded unasked, config at hand: cancel once it is in.
        let mut s = surveyed();
        s.progress(&short(2), "Pushing", None);
        s.progress(&short(0), "Pushing", None);
        assert_eq!(
            survey_step(&s, &[2], &[], true, false, share),
            SurveyStep::Continue
        );
        s.progress(&short(2), "Pushed", None);
        assert_eq!(
            survey_step(&s, &[2], &[], true, false, share),
            SurveyStep::Cancel
        );
        // Without the config the push must run to its end: the base counts.
        assert!(matches!(
            survey_step(&s, &[2], &[], false, false, share),
            SurveyStep::GiveUp(why) if why.contains("layer(s) 0, 2")
        ));
        // Forced, it goes on.
        assert_eq!(
            survey_step(&s, &[2], &[], false, true, share),
            SurveyStep::Continue
        );
        // The wanted base uploaded unasked is too big even alone.
        let mut s = surveyed();
        s.progress(&short(0), "Pushing", None);
        assert!(matches!(
            survey_step(&s, &[0], &[], true, false, share),
            SurveyStep::GiveUp(_)
        ));
        // Every layer asked: the survey costs nothing.
        let mut s = surveyed();
        for i in 0..3 {
            s.progress(&short(i), "Layer already exists", None);
        }
        assert_eq!(
            survey_step(&s, &[1], &[], false, false, share),
            SurveyStep::Continue
        );
        // All settled: nothing left to cancel, the manifest is near.
        let mut s = surveyed();
        s.progress(&short(0), "Layer already exists", None);
        s.progress(&short(1), "Layer already exists", None);
        s.progress(&short(2), "Pushed", None);
        assert_eq!(
            survey_step(&s, &[2], &[], true, false, share),
            SurveyStep::Continue
        );
        // The wanted top was captured before (asked about, its blob known)
        // while the base is uploaded unasked: drop it, capture the top.
        let mut s = surveyed();
        s.progress(&short(2), "Layer already exists", None);
        s.progress(&short(0), "Pushing", None);
        assert_eq!(
            survey_step(&s, &[2], &[2], true, true, share),
            SurveyStep::CancelThenCapture
        );
        assert_ne!(
            survey_step(&s, &[2], &[], true, true, share),
            SurveyStep::CancelThenCapture
        );
        assert_ne!(
            survey_step(&s, &[2], &[2], false, true, share),
            SurveyStep::CancelThenCapture
        );
    }

    #[test]
    fn an_upload_seen_by_the_registry_counts_before_the_daemon_says_pushing() {
        // The top was asked about (its blob known); the registry saw an
        // upload start though the daemon has not said which layer yet.
        let mut s = surveyed();
        s.progress(&short(2), "Layer already exists", None);
        assert_eq!(
            survey_step(&s, &[2], &[2], true, false, 0.15),
            SurveyStep::Continue
        );
        s.upload_started();
        assert_eq!(
            survey_step(&s, &[2], &[2], true, false, 0.15),
            SurveyStep::CancelThenCapture
        );
    }

    #[test]
    fn the_survey_may_be_dropped_while_no_wanted_layer_waits_for_the_manifest() {
        let mut s = surveyed();
        let mut asked = AskedBlobs::default();
        assert!(survey_may_cancel(&s, &[2], &asked, true));
        assert!(!survey_may_cancel(&s, &[2], &asked, false));
        // Asked about, its HEAD not matched yet: may still be.
        asked.head(digest('a'));
        s.progress(&short(2), "Layer already exists", None);
        assert!(survey_may_cancel(&s, &[2], &asked, true));
        asked.exists(vec![2]);
        assert!(survey_may_cancel(&s, &[2], &asked, true));
        // Asked about with no HEAD to match (mounted, say): only the
        // manifest will name its blob.
        let mut s = surveyed();
        s.progress(&short(1), "Mounted from library/x", None);
        let asked = AskedBlobs::default();
        assert!(!survey_may_cancel(&s, &[1], &asked, true));
        assert!(survey_may_cancel(&s, &[2], &asked, true));
    }

    #[test]
    fn asked_blobs_match_one_to_one_when_one_head_is_pending() {
        let mut asked = AskedBlobs::default();
        asked.head(digest('a'));
        asked.exists(vec![2]);
        asked.head(digest('b'));
        asked.head(digest('b'));
        asked.exists(vec![0, 3]);
        assert_eq!(asked.candidates(2), Some(&[digest('a')][..]));
        assert_eq!(asked.candidates(0), Some(&[digest('b')][..]));
        assert_eq!(asked.candidates(3), Some(&[digest('b')][..]));
        assert_eq!(asked.group_mates(2), Vec::<usize>::new());
    }

    #[test]
    fn asked_blobs_interleaved_make_a_group_once_the_counts_meet() {
        let mut asked = AskedBlobs::default();
        asked.head(digest('a'));
        asked.head(digest('b'));
        asked.exists(vec![1]);
        assert_eq!(asked.candidates(1), None, "two HEADs, one message: open");
        asked.exists(vec![2]);
        assert_eq!(asked.candidates(1), Some(&[digest('a'), digest('b')][..]));
        assert_eq!(asked.candidates(2), Some(&[digest('a'), digest('b')][..]));
        assert_eq!(asked.group_mates(2), vec![1]);
        // A later exact match is not mixed into the group.
        asked.head(digest('c'));
        asked.exists(vec![0]);
        assert_eq!(asked.candidates(0), Some(&[digest('c')][..]));
        let mut known = asked.known();
        known.sort_unstable();
        assert_eq!(known, vec![0, 1, 2]);
    }

    #[test]
    fn asked_blobs_wait_for_as_many_heads_as_messages() {
        let mut asked = AskedBlobs::default();
        asked.exists(vec![1]);
        asked.head(digest('a'));
        // One each, in either order: matched (it can only be that HEAD).
        assert_eq!(asked.candidates(1), Some(&[digest('a')][..]));
        let mut asked = AskedBlobs::default();
        asked.head(digest('8'));
        asked.head(digest('9'));
        asked.exists(vec![4]);
        assert!(asked.known().is_empty());
    }
}
