//! Reading user arrays into the analysis crate's types.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use flowlens_core::npy::NpyArray;
use ndarray::Array2;

/// A `[n, d]` feature matrix from a `.npy` file (f32, f64 or integer), as f64.
pub fn read_matrix(path: &Path) -> Result<Array2<f64>> {
    let a = NpyArray::read(path)?;
    a.expect_rank(2, "[n, d] features (rows = samples)")?;
    let (n, d) = (a.shape[0], a.shape[1]);
    ensure!(
        n > 0 && d > 0,
        "{}: empty array {:?}",
        path.display(),
        a.shape
    );
    Array2::from_shape_vec((n, d), a.as_f64())
        .with_context(|| format!("{}: shape {:?}", path.display(), a.shape))
}
