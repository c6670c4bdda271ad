//! The fused operations and their entry functions (fused path or composed burn version).

pub mod act;
pub mod adamw;
pub mod attention;
pub mod cnn;
pub mod conv;
pub mod ema;
pub mod linear;
pub mod norm;
pub mod rope;
