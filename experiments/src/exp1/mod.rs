//! Experiment 1 (paper section 7.1): the encoder's text and noise streams against the LLM's
//! layers, ours - baseline. [`config`] (`[exp1]`), [`run`] (sampling both runs into
//! `probes-exp1`), [`analyse`] (ΔCKA per stream, layer and step), [`prior`] (the frozen-prior
//! reading's target), [`report`].

pub mod analyse;
pub mod config;
pub mod prior;
pub mod report;
pub mod run;
