//! The feature store: the one owner of the probe-store format (docs/RUN_FORMAT.md). A store is a
//! folder of a run (`probes/` for `flowlens sample`, `probes-exp1/` for experiment 1, ...) that
//! holds each requested tap's pooled rows per sampling seed and solver step:
//!
//! - `<store>/<tap>/seed<S>.npy`, f32 or f16 `[steps, n_prompts, width]`: every written solver
//!   step of the seed (the first format, `flowlens.probes.v1`, wrote one file per step and is
//!   still read);
//! - `<store>/manifest.json` ([`StoreManifest`]), rewritten atomically after each seed: a seed it
//!   lists is complete; files of a seed it does not list yet belong to a seed still being
//!   sampled (readable with [`Seeds::Partial`]);
//! - the images: `samples/seed<S>/<iiii>.png` for `probes`, `<store>/samples/seed<S>/` for the
//!   others, and the decoded `x_t` previews under `.../xt/<iiii>_step<KK>.png`;
//! - `<store>/cka_live.json`: the streaming CKA snapshot ([`LiveCkaSnapshot`]) that
//!   `flowlens sample --cka-pairs` rewrites after every batch.
//!
//! [`StorePaths`] spells every file name, [`StoreWriter`] writes a store seed by seed (from a
//! [`SeedRows`]), [`FeatureStore`] reads one. Nothing outside this module spells a store's file
//! names. [`ProbeObserver`] sees the rows as the sampler produces them.

pub mod error;
pub mod live;
pub mod manifest;
pub mod paths;
pub mod reader;
pub mod writer;

pub use error::StoreError;
pub use live::{LIVE_FORMAT, LiveCkaSnapshot, LivePair, LiveSeed, LiveStep};
pub use manifest::{Branch, FORMAT, ProbeDtype, StoreManifest, StoreMode};
pub use paths::{StoreName, StorePaths};
pub use reader::{FeatureStore, Features, Seeds, read_array};
pub use writer::{NoObserver, ProbeObserver, SeedRows, StoreHeader, StoreWriter};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Weights;
    use crate::flow::TapPooling;

    fn header(prompts: usize, steps: usize) -> StoreHeader {
        StoreHeader {
            mode: StoreMode::Sampler,
            prompts: (0..prompts).map(|i| format!("prompt {i}")).collect(),
            times: (0..steps).map(|k| k as f32 / steps as f32).collect(),
            cfg: 2.0,
            pooling: TapPooling::Mean,
            dtype: ProbeDtype::F32,
            checkpoint_step: 7,
            weights: Weights::Ema,
            tap_steps: None,
        }
    }

    #[test]
    fn a_written_store_reads_back_complete_and_partial_seeds() {
        let run = tempfile::tempdir().unwrap();
        let paths = StorePaths::new(run.path(), StoreName::new("probes-x").unwrap());
        let mut w = StoreWriter::new(paths.clone(), header(3, 2));
        let mut rows = SeedRows::new(5, 3);
        for step in 0..2 {
            rows.add("enc.text", step, 0, &[1.0, 2.0, 3.0, 4.0], 2);
            rows.add("enc.text", step, 2, &[5.0, 6.0 + step as f32], 2);
        }
        w.write_seed(rows).unwrap();
        let store = FeatureStore::open(run.path(), paths.name()).unwrap();
        assert_eq!(store.manifest.seeds, vec![5]);
        assert_eq!(store.manifest.taps["enc.text"], 2);
        let f = store.read("enc.text", 5, 1, Seeds::Complete).unwrap();
        assert_eq!((f.rows, f.width), (3, 2));
        assert_eq!(f.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 7.0]);
        assert!(matches!(
            store.read("enc.noise", 5, 1, Seeds::Complete),
            Err(StoreError::NoTap { .. })
        ));
        // One file per tap and seed holds every step.
        let file = crate::npy::NpyArray::read(store.probe("enc.text", 5)).unwrap();
        assert_eq!(file.shape, vec![2, 3, 2]);
        // A seed still being sampled: its files are there, the manifest does not list it yet.
        let stacked: Vec<f32> = [[0.5; 6], [0.25; 6]].concat();
        crate::npy::write_f32(store.probe("enc.text", 6), &[2, 3, 2], &stacked).unwrap();
        std::fs::create_dir_all(store.samples(6)).unwrap();
        assert!(matches!(
            store.read("enc.text", 6, 0, Seeds::Complete),
            Err(StoreError::NoSeed { .. })
        ));
        assert_eq!(
            store.read("enc.text", 6, 0, Seeds::Partial).unwrap().values,
            vec![0.5; 6]
        );
        assert_eq!(
            store.read("enc.text", 6, 1, Seeds::Partial).unwrap().values,
            vec![0.25; 6]
        );
        let present: Vec<_> = store.present("enc.text").into_iter().collect();
        assert_eq!(present, vec![(5, 0), (5, 1), (6, 0), (6, 1)]);
        // A seed file cut short is an error naming it, not rows of zeros.
        let path = store.probe("enc.text", 6);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = store.read("enc.text", 6, 0, Seeds::Partial).unwrap_err();
        assert!(err.to_string().contains("seed6.npy"), "{err}");
        // Images: `probes` keeps them in the run's samples/, other stores in their own folder.
        assert_eq!(
            store.sample_png(5, 7),
            run.path().join("probes-x/samples/seed5/0007.png")
        );
        let sample = StorePaths::new(run.path(), StoreName::sample());
        assert_eq!(
            sample.preview_png(1, 2, 3),
            run.path().join("samples/seed1/xt/0002_step03.png")
        );
        for bad in ["", "a/b", ".hidden", "a\\b"] {
            assert!(StoreName::new(bad).is_err(), "{bad}");
        }
        // Writing the store again starts from nothing: no stale arrays or images.
        let w = StoreWriter::create(paths.clone(), header(3, 2)).unwrap();
        assert!(!paths.dir().exists() && !paths.samples(6).exists());
        drop(w);
    }

    #[test]
    fn a_seed_file_holds_the_tapped_steps_in_order_and_nothing_else() {
        let run = tempfile::tempdir().unwrap();
        let paths = StorePaths::new(run.path(), StoreName::new("probes-some").unwrap());
        let mut h = header(2, 4);
        h.tap_steps = Some(vec![1, 3]);
        let mut w = StoreWriter::new(paths.clone(), h);
        let mut rows = SeedRows::new(0, 2);
        for step in [3, 1] {
            rows.add("enc.text", step, 0, &[step as f32; 2], 1);
        }
        w.write_seed(rows).unwrap();
        let store = FeatureStore::open(run.path(), paths.name()).unwrap();
        let file = crate::npy::NpyArray::read(store.probe("enc.text", 0)).unwrap();
        assert_eq!(file.shape, vec![2, 2, 1]);
        assert_eq!(file.as_f32(), vec![1.0, 1.0, 3.0, 3.0]);
        let f = store.read("enc.text", 0, 3, Seeds::Complete).unwrap();
        assert_eq!(f.values, vec![3.0, 3.0]);
        assert!(matches!(
            store.read("enc.text", 0, 2, Seeds::Complete),
            Err(StoreError::NoStep { .. })
        ));
        // Rows for a step the store does not write are refused, not stored under another step.
        let mut rows = SeedRows::new(1, 2);
        rows.add("enc.text", 2, 0, &[0.0; 2], 1);
        let err = w.write_seed(rows).unwrap_err().to_string();
        assert!(err.contains("the store writes steps [1, 3]"), "{err}");
    }

    #[test]
    fn a_store_of_the_first_format_one_file_per_step_still_reads() {
        let run = tempfile::tempdir().unwrap();
        let paths = StorePaths::new(run.path(), StoreName::new("probes-old").unwrap());
        let mut w = StoreWriter::new(paths.clone(), header(2, 3));
        let mut rows = SeedRows::new(1, 2);
        for step in 0..3 {
            rows.add("enc.noise", step, 0, &[step as f32; 4], 2);
        }
        w.write_seed(rows).unwrap();
        // Rewrite it as the first format wrote it.
        let mut manifest: StoreManifest =
            serde_json::from_str(&std::fs::read_to_string(paths.manifest()).unwrap()).unwrap();
        manifest.format = manifest::FORMAT_V1.into();
        std::fs::write(paths.manifest(), serde_json::to_string(&manifest).unwrap()).unwrap();
        std::fs::remove_file(paths.probe("enc.noise", 1)).unwrap();
        for step in 0..3 {
            let v = [10.0 + step as f32; 4];
            crate::npy::write_f32(paths.probe_v1("enc.noise", 1, step), &[2, 2], &v).unwrap();
        }
        let store = FeatureStore::open(run.path(), paths.name()).unwrap();
        let f = store.read("enc.noise", 1, 2, Seeds::Complete).unwrap();
        assert_eq!(f.values, vec![12.0; 4]);
        let present: Vec<_> = store.present("enc.noise").into_iter().collect();
        assert_eq!(present, vec![(1, 0), (1, 1), (1, 2)]);
    }

    #[test]
    fn the_live_snapshot_round_trips_with_its_keys_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = StorePaths::new(dir.path(), StoreName::sample()).live_cka();
        let snapshot = LiveCkaSnapshot {
            format: LIVE_FORMAT.into(),
            mean_update_seconds: 0.25,
            pairs: vec![LivePair {
                a: "enc.text".into(),
                b: "llm.h01.text".into(),
                steps: vec![LiveStep::of_seeds(
                    0,
                    vec![
                        LiveSeed {
                            biased: Some(0.5),
                            debiased: None,
                            n: 8,
                            seed: 0,
                        },
                        LiveSeed {
                            biased: Some(0.7),
                            debiased: Some(0.1),
                            n: 4,
                            seed: 1,
                        },
                    ],
                )],
            }],
            over: "mean and SE over seeds".into(),
            updates: 1,
        };
        let step = &snapshot.pairs[0].steps[0];
        assert!((step.biased.unwrap() - 0.6).abs() < 1e-12);
        assert!((step.biased_se.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(
            (step.debiased, step.debiased_se, step.n),
            (Some(0.1), None, 8)
        );
        snapshot.write(&path).unwrap();
        assert_eq!(LiveCkaSnapshot::read(&path).unwrap(), snapshot);
        // serde_json's maps are key-sorted: the typed file reads as the untyped one did.
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string_pretty(&value).unwrap(), text);
    }
}
