//! Errors of the analysis crate: each says what was wrong with which input, and never hides a
//! NaN.

/// What went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    #[error("{what} has {found} samples; {estimator} needs at least {needed}")]
    TooFewSamples {
        what: String,
        estimator: &'static str,
        found: usize,
        needed: usize,
    },
    #[error("{what}: {reason}")]
    Shape { what: String, reason: String },
    #[error("{what} holds a non-finite value ({value}) at row {row}, column {col}")]
    NonFinite {
        what: String,
        row: usize,
        col: usize,
        value: f64,
    },
    #[error("{what} has zero variance (every sample is the same vector): CKA is undefined for it")]
    ZeroVariance { what: String },
    #[error(
        "the debiased self-similarity HSIC({what}, {what}) = {value:e} is not positive (too few samples for this width, or near-constant features): the debiased CKA is undefined; use more samples or the biased estimator"
    )]
    NonPositiveNormaliser { what: String, value: f64 },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("linear algebra failed: {0}")]
    Linalg(String),
    #[error("{what}: {source}")]
    In {
        what: String,
        source: Box<AnalysisError>,
    },
}

impl AnalysisError {
    /// This error with what was being computed in front.
    pub fn within(self, what: impl Into<String>) -> Self {
        AnalysisError::In {
            what: what.into(),
            source: Box::new(self),
        }
    }
}

pub type Result<T> = std::result::Result<T, AnalysisError>;
