//! Experiment 2 (paper section 7.2): the same dual-stream encoder under two decoders.
//! [`config`] (`[exp2]`), [`run`] (training the ConvNeXt-decoder system around the frozen
//! encoder, sampling both), [`analyse`] (text-noise CKA curves, AUC, time-to-threshold),
//! [`report`].

pub mod analyse;
pub mod config;
pub mod report;
pub mod run;
