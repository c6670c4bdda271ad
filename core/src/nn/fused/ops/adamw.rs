//! One AdamW step of a parameter in one pass: the two moment updates, the bias corrections, the
//! update and the new parameter, with the same f32 operations in the same order as burn-optim's
//! `AdamW` (weight decay 0), so the values are bit for bit the same (tested); burn's version
//! runs ten elementwise tensor ops, each a full pass with its own buffer.

use rayon::prelude::*;

use crate::nn::fused::par::PAR_MIN;
use crate::nn::fused::simd::simd_kernel;
use crate::nn::fused::{CpuOp, In, Out};

/// The step's scalars, each already rounded to f32 as burn's scalar ops round them.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub beta_1: f32,
    pub beta_2: f32,
    /// `1 - beta_1`, `1 - beta_2`.
    pub factor_1: f32,
    pub factor_2: f32,
    /// `1 - beta^t` of this step.
    pub correction_1: f32,
    pub correction_2: f32,
    pub epsilon: f32,
    pub lr: f32,
    /// The first step: no moments yet (inputs 2 and 3 are ignored).
    pub first: bool,
}

simd_kernel! {
    fn adam_rows(
        s: AdamStep,
        p: &[f32],
        g: &[f32],
        m0: &[f32],
        v0: &[f32],
        po: &mut [f32],
        mo: &mut [f32],
        vo: &mut [f32],
    ) {
        for i in 0..po.len() {
            let gi = g[i];
            let (m, v) = if s.first {
                (gi * s.factor_1, (gi * gi) * s.factor_2)
            } else {
                (m0[i] * s.beta_1 + gi * s.factor_1, v0[i] * s.beta_2 + (gi * gi) * s.factor_2)
            };
            let delta = (m / s.correction_1) / ((v / s.correction_2).sqrt() + s.epsilon);
            po[i] = p[i] - delta * s.lr;
            mo[i] = m;
            vo[i] = v;
        }
    }
}

/// Elements per task.
const PIECE: usize = 1 << 13;

/// One task's pieces of the new parameter, first and second moment.
type Pieces<'a> = ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]);

/// Inputs: parameter, gradient, first moment, second moment (all `[n]`). Output `[3, n]`: the
/// new parameter, first and second moment.
impl CpuOp<4> for AdamStep {
    fn forward(&self, [p, g, m, v]: [In<'_>; 4], _train: bool) -> (Out, Option<Out>) {
        let n = p.data.len();
        assert!(
            g.data.len() == n && m.data.len() == n && v.data.len() == n,
            "adamw: parameter {:?}, gradient {:?}, moments {:?} {:?} differ",
            p.shape,
            g.shape,
            m.shape,
            v.shape
        );
        let mut data = vec![0.0f32; 3 * n];
        let (po, rest) = data.split_at_mut(n);
        let (mo, vo) = rest.split_at_mut(n);
        let one = |(i, ((po, mo), vo)): (usize, Pieces<'_>)| {
            let r = i * PIECE..i * PIECE + po.len();
            let (m0, v0) = if self.first {
                (&g.data[r.clone()], &g.data[r.clone()])
            } else {
                (&m.data[r.clone()], &v.data[r.clone()])
            };
            adam_rows(*self, &p.data[r.clone()], &g.data[r], m0, v0, po, mo, vo);
        };
        if n >= PAR_MIN {
            po.par_chunks_mut(PIECE)
                .zip(mo.par_chunks_mut(PIECE))
                .zip(vo.par_chunks_mut(PIECE))
                .enumerate()
                .for_each(one);
        } else {
            po.chunks_mut(PIECE)
                .zip(mo.chunks_mut(PIECE))
                .zip(vo.chunks_mut(PIECE))
                .enumerate()
                .for_each(one);
        }
        (Out::new(data, vec![3, n]), None)
    }

    fn backward(
        &self,
        _inputs: [In<'_>; 4],
        _output: Option<In<'_>>,
        _aux: Option<In<'_>>,
        _grad: In<'_>,
        _wanted: [bool; 4],
    ) -> [Option<Out>; 4] {
        unreachable!("the optimiser step runs outside autodiff")
    }
}
