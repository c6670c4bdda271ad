//! Checkpoint loading: sharded checkpoints, and every kind of bad checkpoint gives an error that
//! names the file and the tensor, never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use flowlens_core::device::CpuBackend as B;
use flowlens_core::llm::{HiddenRequest, Llama, LlamaConfig};
use flowlens_core::weights::{SafetensorsFile, WeightStore};
use safetensors::tensor::{Dtype, TensorView};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama/tiny-llama")
}

type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn fixture_tensors() -> Tensors {
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                (view.dtype(), view.shape().to_vec(), view.data().to_vec()),
            )
        })
        .collect()
}

fn write_tensors(path: &Path, tensors: &Tensors) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A checkpoint folder holding `tensors` and the fixture's config.
fn checkpoint(tensors: &Tensors) -> (tempfile::TempDir, LlamaConfig) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_dir().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    write_tensors(&dir.path().join("model.safetensors"), tensors);
    let config = LlamaConfig::from_file(dir.path().join("config.json")).unwrap();
    (dir, config)
}

fn load_error(tensors: &Tensors) -> String {
    let (dir, config) = checkpoint(tensors);
    match Llama::<B>::load(&config, dir.path(), &Default::default()) {
        Ok(_) => panic!("loading should fail"),
        Err(e) => e.to_string(),
    }
}

fn last_hidden(model: &Llama<B>) -> Vec<f32> {
    let device = Default::default();
    let ids =
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 5, 9, 300], [1, 4]), &device);
    model
        .forward_ids(ids, None, &HiddenRequest::none())
        .unwrap()
        .last_hidden_state
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap()
}

#[test]
fn missing_tensor_is_named() {
    let mut t = fixture_tensors();
    t.remove("model.layers.1.mlp.up_proj.weight");
    let err = load_error(&t);
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
    assert!(
        err.contains("missing") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn unexpected_tensors_are_listed_but_stray_buffers_and_lm_head_are_not() {
    let mut t = fixture_tensors();
    let extra = t["model.norm.weight"].clone();
    t.insert(
        "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        extra.clone(),
    );
    let (dir, config) = checkpoint(&t);
    Llama::<B>::load(&config, dir.path(), &Default::default()).expect("stray buffers are skipped");
    t.insert("model.extra_adapter.weight".into(), extra);
    let err = load_error(&t);
    assert!(
        err.contains("model.extra_adapter.weight") && err.contains("unexpected"),
        "{err}"
    );
    assert!(
        !err.contains("lm_head"),
        "lm_head is unused, not unexpected: {err}"
    );
}

#[test]
fn shape_mismatch_names_tensor_and_both_shapes() {
    let mut t = fixture_tensors();
    let (d, _, _) = t["model.norm.weight"].clone();
    t.insert("model.norm.weight".into(), (d, vec![32], vec![0u8; 32 * 4]));
    let err = load_error(&t);
    assert!(err.contains("model.norm.weight"), "{err}");
    assert!(err.contains("[32]") && err.contains("[64]"), "{err}");
}

#[test]
fn unsupported_dtype_is_named() {
    let mut t = fixture_tensors();
    let (_, shape, bytes) = t["model.norm.weight"].clone();
    t.insert("model.norm.weight".into(), (Dtype::I32, shape, bytes));
    let err = load_error(&t);
    assert!(
        err.contains("model.norm.weight") && err.contains("I32"),
        "{err}"
    );
}

#[test]
fn f16_checkpoint_loads_close_to_f32() {
    let t: Tensors = fixture_tensors()
        .into_iter()
        .map(|(name, (_, shape, bytes))| {
            let halfs: Vec<u8> = bytes
                .chunks_exact(4)
                .flat_map(|c| {
                    half::f16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes()
                })
                .collect();
            (name, (Dtype::F16, shape, halfs))
        })
        .collect();
    let (dir, config) = checkpoint(&t);
    let f16 = Llama::<B>::load(&config, dir.path(), &Default::default()).unwrap();
    let f32m = Llama::<B>::load(&config, &fixture_dir(), &Default::default()).unwrap();
    let (a, b) = (last_hidden(&f16), last_hidden(&f32m));
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(err < 0.05, "f16 weights drift {err}");
}

#[test]
fn sharded_checkpoint_loads_like_the_single_file() {
    let t = fixture_tensors();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_dir().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let (first, second): (Tensors, Tensors) = t.clone().into_iter().enumerate().fold(
        (BTreeMap::new(), BTreeMap::new()),
        |(mut a, mut b), (i, (k, v))| {
            if i % 2 == 0 {
                a.insert(k, v)
            } else {
                b.insert(k, v)
            };
            (a, b)
        },
    );
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    write_tensors(&dir.path().join(names[0]), &first);
    write_tensors(&dir.path().join(names[1]), &second);
    let weight_map: BTreeMap<&String, &str> = first
        .keys()
        .map(|k| (k, names[0]))
        .chain(second.keys().map(|k| (k, names[1])))
        .collect();
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let config = LlamaConfig::from_file(dir.path().join("config.json")).unwrap();
    let sharded = Llama::<B>::load(&config, dir.path(), &Default::default()).unwrap();
    let single = Llama::<B>::load(&config, &fixture_dir(), &Default::default()).unwrap();
    assert_eq!(last_hidden(&sharded), last_hidden(&single));

    // An index that points at a shard without the tensor is an error naming both.
    let mut bad = serde_json::from_value::<serde_json::Value>(index).unwrap();
    bad["weight_map"]["model.norm.weight"] = serde_json::json!(names[0]);
    if first.contains_key("model.norm.weight") {
        bad["weight_map"]["model.norm.weight"] = serde_json::json!(names[1]);
    }
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        bad.to_string(),
    )
    .unwrap();
    let err = WeightStore::open(dir.path())
        .err()
        .expect("bad index")
        .to_string();
    assert!(
        err.contains("model.norm.weight") && err.contains("index"),
        "{err}"
    );
}

#[test]
fn truncated_or_corrupt_files_are_errors_not_panics() {
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    // Every truncation point in the header and a spread of them in the data.
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let cuts = (0..header_end + 16).chain((header_end..bytes.len()).step_by(997));
    for cut in cuts {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = SafetensorsFile::open(&path)
            .err()
            .expect("truncated file must fail");
        assert!(err.to_string().contains("model.safetensors"), "{err}");
    }
    // Random bytes, random single-byte corruptions of the header.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let len = (next() % 4096) as usize;
        let junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        std::fs::write(&path, &junk).unwrap();
        assert!(SafetensorsFile::open(&path).is_err());
    }
    for _ in 0..300 {
        let mut copy = bytes.clone();
        let at = (next() as usize) % header_end;
        copy[at] = next() as u8;
        std::fs::write(&path, &copy).unwrap();
        // Either an error, or a file that still parses (a changed digit in a name); never a panic.
        if let Ok(file) = SafetensorsFile::open(&path) {
            for name in file.names() {
                let shape = file.shape(&name).unwrap().to_vec();
                let _ = file.read_f32(&name, &shape);
            }
        }
    }
}

#[test]
fn random_config_text_is_an_error_not_a_panic() {
    let good = std::fs::read_to_string(fixture_dir().join("config.json")).unwrap();
    let mut state = 12345u64;
    for i in 0..2000 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut bytes = good.clone().into_bytes();
        let cut = (state >> 20) as usize % bytes.len();
        match i % 3 {
            0 => bytes.truncate(cut),
            1 => bytes[cut] = (state >> 40) as u8,
            _ => bytes.insert(cut, b'9'),
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = LlamaConfig::from_json_str(&text, Path::new("config.json"));
    }
}
