//! Widgets the panels share: the CKA heatmap ([`heatmap`]), the image cache ([`images`]), the
//! grid views of the dashboard and the explorer ([`grid`]: store / tap / estimator / seed
//! pickers and the heatmap of a computed grid) and the device picker ([`device`]).

pub mod device;
pub mod grid;
pub mod heatmap;
pub mod images;
