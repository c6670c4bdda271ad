//! The Llama backbone against Hugging Face transformers: hidden states, tokenizer ids, BF16
//! checkpoints, sharded checkpoints. Fixtures come from tools/fixtures/make_llama_fixtures.py.

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use flowlens_core::device::CpuBackend as B;
use flowlens_core::llm::{HiddenRequest, Llama, LlamaConfig};
use flowlens_core::tokenizer::{LlamaTokenizer, PaddingSide};
use flowlens_core::weights::SafetensorsFile;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama")
}

fn load(dir: &str) -> (LlamaConfig, Llama<B>) {
    let dir = fixtures().join(dir);
    let config = LlamaConfig::from_file(dir.join("config.json")).unwrap();
    let model = Llama::load(&config, &dir, &Default::default()).unwrap();
    (config, model)
}

struct Case {
    ids: Vec<i64>,
    mask: Vec<i64>,
    b: usize,
    s: usize,
}

fn case(reference: &SafetensorsFile, name: &str) -> Case {
    let (ids, shape) = reference.read_i64(&format!("{name}.input_ids")).unwrap();
    let (mask, _) = reference
        .read_i64(&format!("{name}.attention_mask"))
        .unwrap();
    Case {
        ids,
        mask,
        b: shape[0],
        s: shape[1],
    }
}

/// All hidden states `[L+1, b, s, d]` of `model` on a case, flattened.
fn run_all_layers(model: &Llama<B>, c: &Case) -> Vec<f32> {
    let device = Default::default();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(c.ids.clone(), [c.b, c.s]), &device);
    let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(c.mask.clone(), [c.b, c.s]), &device);
    let layers = model.num_layers();
    let out = model
        .forward_ids(ids, Some(&mask), &HiddenRequest::layers(0..=layers))
        .unwrap();
    assert_eq!(out.hidden_states.len(), layers + 1);
    out.hidden_states
        .into_values()
        .flat_map(|t| t.into_data().to_vec::<f32>().unwrap())
        .collect()
}

/// Max abs error over every hidden state at every valid (mask = 1) position, and the largest
/// reference magnitude there.
fn compare(ours: &[f32], reference: &[f32], c: &Case, d: usize) -> (f32, f32) {
    assert_eq!(ours.len(), reference.len());
    let mut max_err = 0f32;
    let mut max_ref = 0f32;
    for (i, (a, r)) in ours.iter().zip(reference).enumerate() {
        let pos = (i / d) % (c.b * c.s);
        if c.mask[pos] == 1 {
            max_err = max_err.max((a - r).abs());
            max_ref = max_ref.max(r.abs());
        }
    }
    (max_err, max_ref)
}

#[test]
fn every_hidden_state_matches_transformers_in_f32() {
    let reference = SafetensorsFile::open(fixtures().join("reference.safetensors")).unwrap();
    let (config, model) = load("tiny-llama");
    for name in ["unpadded", "right", "left"] {
        let c = case(&reference, name);
        let expected = reference
            .read_f32(
                &format!("{name}.hidden_states"),
                &[config.num_hidden_layers + 1, c.b, c.s, config.hidden_size],
            )
            .unwrap();
        let ours = run_all_layers(&model, &c);
        let (err, scale) = compare(&ours, &expected, &c, config.hidden_size);
        println!("{name}: max abs error {err:.3e} (values up to {scale:.2})");
        assert!(err <= 1e-4, "{name}: max abs error {err} > 1e-4");
        assert!(
            ours.iter().all(|v| v.is_finite()),
            "{name}: non-finite values (padding positions included)"
        );
    }
}

#[test]
fn bf16_checkpoint_loads_and_matches_its_reference() {
    let reference = SafetensorsFile::open(fixtures().join("reference.safetensors")).unwrap();
    let (config, model) = load("tiny-llama-bf16");
    let weights =
        SafetensorsFile::open(fixtures().join("tiny-llama-bf16/model.safetensors")).unwrap();
    assert_eq!(
        weights.dtype("model.embed_tokens.weight"),
        Some(safetensors::Dtype::BF16)
    );
    for name in ["unpadded", "right", "left"] {
        let c = case(&reference, name);
        let shape = [config.num_hidden_layers + 1, c.b, c.s, config.hidden_size];
        let ours = run_all_layers(&model, &c);
        // The BF16 weights computed in f32, as we do: exact up to f32 rounding.
        let upcast = reference
            .read_f32(&format!("bf16w.{name}.hidden_states"), &shape)
            .unwrap();
        let (err, _) = compare(&ours, &upcast, &c, config.hidden_size);
        assert!(err <= 1e-4, "{name}: {err} vs bf16 weights in f32");
        // transformers computing natively in bfloat16: 8 mantissa bits, rounded at every op and
        // compounded over the layers, so agreement is to a few bf16 ulps (2^-8 relative) of the
        // largest activations. Measured: 0.26 at scale 17, 0.42 at scale 22 (about 5 ulps).
        let native = reference
            .read_f32(&format!("bf16.{name}.hidden_states"), &shape)
            .unwrap();
        let (err, scale) = compare(&ours, &native, &c, config.hidden_size);
        println!("{name}: vs native bf16 {err:.3e} (values up to {scale:.2})");
        assert!(
            err <= 8.0 * scale * 2f32.powi(-8),
            "{name}: {err} vs native bf16 (scale {scale})"
        );
    }
}

#[test]
fn tokenizer_ids_match_transformers() {
    let tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokens.json")).unwrap())
            .unwrap();
    let tok = LlamaTokenizer::from_path(fixtures().join("tiny-llama")).unwrap();
    let prompts: Vec<String> = serde_json::from_value(tokens["prompts"].clone()).unwrap();
    let expected: Vec<Vec<u32>> = serde_json::from_value(tokens["input_ids"].clone()).unwrap();
    for (p, e) in prompts.iter().zip(&expected) {
        assert_eq!(&tok.encode(p).unwrap(), e, "prompt {p:?}");
    }
    // Padded batches equal transformers' padded batches.
    let reference = SafetensorsFile::open(fixtures().join("reference.safetensors")).unwrap();
    for (name, side) in [("right", PaddingSide::Right), ("left", PaddingSide::Left)] {
        let c = case(&reference, name);
        let batch = tok.encode_batch(&prompts, None, side).unwrap();
        assert_eq!((batch.n, batch.len), (c.b, c.s));
        assert_eq!(batch.ids, c.ids, "{name} ids");
        assert_eq!(batch.mask, c.mask, "{name} mask");
    }
}

#[test]
fn hidden_states_are_returned_only_on_request() {
    let reference = SafetensorsFile::open(fixtures().join("reference.safetensors")).unwrap();
    let (config, model) = load("tiny-llama");
    let c = case(&reference, "right");
    let device = Default::default();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(c.ids.clone(), [c.b, c.s]), &device);
    let plain = model
        .forward_ids(ids.clone(), None, &HiddenRequest::none())
        .unwrap();
    assert!(plain.hidden_states.is_empty() && plain.raw_last_layer.is_none());
    assert!(plain.last_hidden_state.is_some());
    let early = model
        .forward_ids(ids.clone(), None, &HiddenRequest::layers([1]))
        .unwrap();
    assert_eq!(
        early.hidden_states.keys().copied().collect::<Vec<_>>(),
        vec![1]
    );
    assert!(
        early.last_hidden_state.is_none(),
        "stops after the deepest requested layer"
    );
    let raw = model
        .forward_ids(
            ids,
            None,
            &HiddenRequest {
                raw_last_layer: true,
                ..HiddenRequest::none()
            },
        )
        .unwrap();
    // The raw last-layer output differs from the normed last_hidden_state by the final norm.
    let normed = model.norm.forward(raw.raw_last_layer.unwrap());
    let diff = (normed - raw.last_hidden_state.unwrap())
        .abs()
        .max()
        .into_scalar();
    assert!(diff < 1e-6);
    assert!(
        model
            .forward_ids(
                Tensor::<B, 2, Int>::from_data(TensorData::new(c.ids, [c.b, c.s]), &device),
                None,
                &HiddenRequest::layers([config.num_hidden_layers + 1])
            )
            .is_err()
    );
}
