//! The LLM backbone: a Hugging Face compatible Llama (TinyLlama-1.1B at the paper preset).

pub mod config;
pub mod model;

pub use config::{ConfigError, LlamaConfig};
pub use model::{ForwardError, HiddenRequest, Llama, LlamaOutput};
