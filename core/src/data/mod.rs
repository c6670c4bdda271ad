//! Data for training and evaluation. Today: the built-in synthetic shapes set and its oracle
//! scorer; image folders, parquet and webdataset sources come with the training issue.

pub mod shapes;

pub use shapes::{Adherence, Scene, ShapesDataset};
