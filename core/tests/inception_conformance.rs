//! The FID Inception-v3 against pytorch-fid: each block type (FIDInceptionA, InceptionB,
//! FIDInceptionC, InceptionD, FIDInceptionE_1, FIDInceptionE_2, the stem BasicConv2d) and the
//! full network's pool3 features, with every weight filled from the deterministic formula that
//! tools/fixtures/make_inception_fixtures.py evaluates on the PyTorch side (so no weights are
//! committed); plus the safetensors loader on the converter's layout.

use std::path::Path;
use std::rc::Rc;

use burn::tensor::{Tensor, TensorData};
use flowlens_core::device::CpuBackend as B;
use flowlens_core::inception::{
    BasicConv2d, FidInception, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE,
    PoolKind, formula_uniform, formula_weights,
};
use flowlens_core::weights::{SafetensorsFile, VarBuilder};

fn reference() -> SafetensorsFile {
    SafetensorsFile::open(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/inception/reference.safetensors"),
    )
    .unwrap()
}

fn formula_input(name: &str, shape: [usize; 4]) -> Tensor<B, 4> {
    let n = shape.iter().product();
    let values: Vec<f32> = formula_uniform(&format!("input.{name}"), n)
        .into_iter()
        .map(|u| (u + 0.5) as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn generated(device: &burn::tensor::Device<B>) -> VarBuilder<'_, B> {
    VarBuilder::generated(Rc::new(formula_weights), device)
}

/// Compares a block output with pytorch-fid's sampled values and sum.
fn check(key: &str, out: Tensor<B, 4>) {
    let r = reference();
    let values: Vec<f32> = out.into_data().to_vec().unwrap();
    let (index, _) = r.read_i64(&format!("block.{key}.index")).unwrap();
    let expected = r
        .read_f32(&format!("block.{key}.value"), &[index.len()])
        .unwrap();
    let mut worst = 0f32;
    for (&i, &e) in index.iter().zip(&expected) {
        worst = worst.max((values[i as usize] - e).abs());
    }
    assert!(worst <= 1e-4, "block {key}: max abs error {worst}");
    let sum: f64 = values.iter().map(|&v| v as f64).sum();
    let expected_sum = r.read_f32(&format!("block.{key}.sum"), &[1]).unwrap()[0] as f64;
    assert!(
        (sum - expected_sum).abs() <= 1e-5 * expected_sum.abs().max(1.0),
        "block {key}: sum {sum} vs {expected_sum}"
    );
}

#[test]
fn inception_blocks_match_pytorch_fid() {
    let device = Default::default();
    let vb = generated(&device);
    let stem = BasicConv2d::new(&vb, "Conv2d_1a_3x3", 3, 32, [3, 3], 2, [0, 0]).unwrap();
    check("stem", stem.forward(formula_input("stem", [1, 3, 9, 9])));
    let a = InceptionA::new(&vb.pp("Mixed_5b"), 192, 32).unwrap();
    check("A", a.forward(formula_input("A", [1, 192, 5, 5])));
    let b = InceptionB::new(&vb.pp("Mixed_6a"), 288).unwrap();
    check("B", b.forward(formula_input("B", [1, 288, 7, 7])));
    let c = InceptionC::new(&vb.pp("Mixed_6b"), 768, 128).unwrap();
    check("C", c.forward(formula_input("C", [1, 768, 5, 5])));
    let d = InceptionD::new(&vb.pp("Mixed_7a"), 768).unwrap();
    check("D", d.forward(formula_input("D", [1, 768, 7, 7])));
    let e1 = InceptionE::new(&vb.pp("Mixed_7b"), 1280, PoolKind::Average).unwrap();
    check("E1", e1.forward(formula_input("E1", [1, 1280, 4, 4])));
    let e2 = InceptionE::new(&vb.pp("Mixed_7c"), 2048, PoolKind::Max).unwrap();
    check("E2", e2.forward(formula_input("E2", [1, 2048, 4, 4])));
}

#[test]
fn full_fid_inception_pool3_matches_pytorch_fid() {
    let device = Default::default();
    let net = FidInception::new(&generated(&device)).unwrap();
    // 64x80 images: the network's own bilinear resize to 299 is part of the check.
    let pool3: Vec<f32> = net
        .forward(formula_input("full", [2, 3, 64, 80]))
        .into_data()
        .to_vec()
        .unwrap();
    let expected = reference().read_f32("full.pool3", &[2, 2048]).unwrap();
    let worst = pool3
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = expected.iter().map(|v| v.abs()).fold(0f32, f32::max);
    eprintln!("pool3 max abs error {worst:.2e} (max |pool3| {scale:.2})");
    assert!(worst <= 1e-4, "pool3 differs by {worst}");
    assert!(scale > 1.0);
}

/// A checkpoint key and its shape.
type Named = (String, Vec<usize>);

fn write_formula_checkpoint(path: &Path, skip: Option<&str>) {
    // Every tensor the network asks for, in the converter's layout.
    let device = Default::default();
    let collected: Rc<std::cell::RefCell<Vec<Named>>> = Rc::default();
    let sink = collected.clone();
    let f: Rc<flowlens_core::weights::WeightFn> = Rc::new(move |n: &str, s: &[usize]| {
        sink.borrow_mut().push((n.to_string(), s.to_vec()));
        vec![0.0; s.iter().product()]
    });
    FidInception::<B>::new(&VarBuilder::generated(f, &device)).unwrap();
    let tensors = collected
        .borrow()
        .iter()
        .filter(|(n, _)| Some(n.as_str()) != skip)
        .map(|(n, s)| (n.clone(), s.clone(), formula_weights(n, s)))
        .collect();
    flowlens_core::weights::write_safetensors_f32(path, tensors).unwrap();
}

#[test]
fn converted_safetensors_load_into_the_same_network_and_bad_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(flowlens_core::inception::WEIGHTS_FILE);
    write_formula_checkpoint(&path, None);
    let device = Default::default();
    let loaded = FidInception::<B>::load(tmp.path(), &device).unwrap();
    let direct = FidInception::new(&generated(&device)).unwrap();
    let x = formula_input("loader", [1, 3, 75, 75]);
    let diff: f32 = (loaded.forward(x.clone()) - direct.forward(x))
        .abs()
        .max()
        .into_scalar();
    assert_eq!(diff, 0.0);

    let missing = tmp.path().join("missing.safetensors");
    write_formula_checkpoint(&missing, Some("Mixed_6c.branch7x7dbl_3.bn.running_var"));
    let e = FidInception::<B>::load(&missing, &device)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Mixed_6c.branch7x7dbl_3.bn.running_var") && e.contains("missing.safetensors"),
        "{e}"
    );
    let e = FidInception::<B>::load(tmp.path().join("nowhere"), &device)
        .unwrap_err()
        .to_string();
    assert!(e.contains("convert_fid_inception.py"), "{e}");
}
