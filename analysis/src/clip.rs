//! CLIP score as the paper reports it: `100 * mean_i max(cos(image_i, text_i), 0)`, the clamp
//! applied per image-text pair before averaging. (torchmetrics' `CLIPScore` averages first and
//! clamps after; the two differ when some cosines are negative.)

use ndarray::ArrayView2;

use crate::cka::check_finite;
use crate::error::{AnalysisError, Result};

/// CLIP score from paired embeddings `[n, d]` (row i of each is one image-caption pair).
pub fn clip_score(image: ArrayView2<f64>, text: ArrayView2<f64>) -> Result<f64> {
    if image.dim() != text.dim() || image.nrows() == 0 {
        return Err(AnalysisError::Shape {
            what: "CLIP score inputs".into(),
            reason: format!(
                "image embeddings {:?} and text embeddings {:?} must have the same non-empty shape",
                image.dim(),
                text.dim()
            ),
        });
    }
    check_finite(image, "image embeddings")?;
    check_finite(text, "text embeddings")?;
    let mut total = 0.0;
    for (i, (a, b)) in image.rows().into_iter().zip(text.rows()).enumerate() {
        let (na, nb) = (a.dot(&a).sqrt(), b.dot(&b).sqrt());
        if na == 0.0 || nb == 0.0 {
            return Err(AnalysisError::Invalid {
                what: "CLIP score".into(),
                reason: format!("pair {i} has a zero embedding; its cosine is undefined"),
            });
        }
        total += (a.dot(&b) / (na * nb)).max(0.0);
    }
    Ok(100.0 * total / image.nrows() as f64)
}
