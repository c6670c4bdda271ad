//! The generation heads around the LLM: JanusFlow's ConvNeXt encoder and decoder, the
//! dual-stream (MM-DiT) encoder, the single-stream (parallel-block) decoder, and the U-ViT
//! baseline.

pub mod convnext;
pub mod dual_stream;
pub mod single_stream;
pub mod uvit;

pub use convnext::{ConvNextDecoder, ConvNextEncoder, EncoderOutput};
pub use dual_stream::DualStreamEncoder;
pub use single_stream::SingleStreamDecoder;
pub use uvit::UVit;
