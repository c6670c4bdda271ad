//! The FID Inception-v3 of pytorch-fid (`pytorch_fid/inception.py`: `InceptionV3` with
//! `use_fid_inception=True`, i.e. the 2015 TensorFlow Inception graph that TTUR's FID code uses,
//! ported to torchvision's `Inception3` layout with the patched `FIDInceptionA/C/E_1/E_2`
//! blocks), up to the pool3 features (2048-d) that FID is computed on.
//!
//! Input: images `[b, 3, h, w]` in [0, 1]; resized to 299 x 299 (bilinear,
//! `align_corners=False`, no antialiasing: `F.interpolate`), mapped to [-1, 1] (`2x - 1`).
//! Weights: the safetensors that `tools/convert_fid_inception.py` writes from pytorch-fid's
//! `pt_inception-2015-12-05-6726825d.pth` (checkpoint keys unchanged). Each `BasicConv2d`
//! (conv without bias, BatchNorm eps 1e-3 in eval mode, ReLU) is folded into one convolution
//! with bias at load time.
//!
//! The FID-specific differences from torchvision's blocks, which matter for the numbers:
//! the average-pool branches exclude padding (`count_include_pad=False`) and the last block
//! (`Mixed_7c`, `FIDInceptionE_2`) pools its branch with a max-pool instead of an average.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::OnceLock;

use burn::module::{Initializer, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::{avg_pool2d, interpolate, max_pool2d};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};

use crate::nn::fused::ops::cnn::{ConvWeights, Nhwc, cat_channels, conv_relu, pool_3x3};
use crate::weights::{VarBuilder, WeightError, WeightStore};

/// The weights file name that `tools/convert_fid_inception.py` writes.
pub const WEIGHTS_FILE: &str = "pt_inception-2015-12-05.safetensors";

/// The input size of the network.
pub const INPUT_SIZE: usize = 299;

/// pool3 width.
pub const FEATURES: usize = 2048;

const BN_EPS: f64 = 1e-3;

/// torchvision's `BasicConv2d` (conv, BatchNorm in eval mode, ReLU), BatchNorm folded into the
/// convolution.
#[derive(Debug)]
pub struct BasicConv2d<B: Backend> {
    pub conv: Conv2d<B>,
    stride: usize,
    padding: [usize; 2],
    /// The weights packed for the channels-last CPU path, on its first use.
    packed: OnceLock<ConvWeights>,
}

impl<B: Backend> BasicConv2d<B> {
    /// `name.conv.weight [out, in, kh, kw]` and `name.bn.{weight, bias, running_mean,
    /// running_var}`.
    pub fn new(
        vb: &VarBuilder<B>,
        name: &str,
        c_in: usize,
        c_out: usize,
        kernel: [usize; 2],
        stride: usize,
        padding: [usize; 2],
    ) -> Result<Self, WeightError> {
        let vb = vb.pp(name);
        let he = Initializer::KaimingUniform {
            gain: 2f64.sqrt(),
            fan_out_only: false,
        };
        let weight: Tensor<B, 4> =
            vb.pp("conv")
                .tensor("weight", [c_out, c_in, kernel[0], kernel[1]], he)?;
        let bn = vb.pp("bn");
        let gamma: Tensor<B, 1> = bn.tensor("weight", [c_out], Initializer::Ones)?;
        let beta: Tensor<B, 1> = bn.tensor("bias", [c_out], Initializer::Zeros)?;
        let mean: Tensor<B, 1> = bn.tensor("running_mean", [c_out], Initializer::Zeros)?;
        let var: Tensor<B, 1> = bn.tensor("running_var", [c_out], Initializer::Ones)?;
        let scale = gamma * (var + BN_EPS).sqrt().recip();
        let bias = beta - mean * scale.clone();
        let weight = weight * scale.reshape([c_out, 1, 1, 1]);
        Ok(Self {
            conv: Conv2d {
                weight: Param::from_tensor(weight),
                bias: Some(Param::from_tensor(bias)),
                stride: [stride, stride],
                kernel_size: kernel,
                dilation: [1, 1],
                padding: PaddingConfig2d::Explicit(padding[0], padding[1], padding[0], padding[1]),
                groups: 1,
            },
            stride,
            padding,
            packed: OnceLock::new(),
        })
    }

    fn packed(&self) -> &ConvWeights {
        self.packed.get_or_init(|| {
            let weight = self.conv.weight.val();
            let dims = weight.dims();
            let host = |t: Tensor<B, 1>| -> Vec<f32> {
                t.into_data()
                    .convert::<f32>()
                    .to_vec()
                    .expect("f32 weights")
            };
            let bias = self.conv.bias.as_ref().expect("folded bias").val();
            let flat = weight.reshape([dims.iter().product::<usize>()]);
            ConvWeights::new(&host(flat), host(bias), dims, self.stride, self.padding)
        })
    }

    /// `[b, c_in, h, w] -> [b, c_out, h', w']`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        relu(self.conv.forward(x))
    }
}

fn sq(k: usize) -> [usize; 2] {
    [k, k]
}

/// 3x3 average pool, stride 1, padding 1, padding excluded from the count (the FID blocks).
fn avg_pool_3x3<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    avg_pool2d(x, [3, 3], [1, 1], [1, 1], false, false)
}

fn max_pool_3x3<B: Backend>(x: Tensor<B, 4>, stride: usize) -> Tensor<B, 4> {
    let pad = if stride == 1 { 1 } else { 0 };
    max_pool2d(x, [3, 3], [stride, stride], [pad, pad], [1, 1], false)
}

/// What the blocks are written in, once: burn tensors `[b, c, h, w]` on any backend
/// ([`Tensors`]), or channels-last host maps on the CPU ([`HostMaps`]: one layout from the first
/// layer to pool3, no per-layer layout conversions).
pub trait Maps<B: Backend> {
    type X;
    fn conv(&self, conv: &BasicConv2d<B>, x: &Self::X) -> Self::X;
    fn cat(&self, parts: Vec<Self::X>) -> Self::X;
    /// 3x3, stride 1, padding 1, padding excluded from the count.
    fn avg_pool(&self, x: &Self::X) -> Self::X;
    /// 3x3 with `stride`, padding 1 when the stride is 1.
    fn max_pool(&self, x: &Self::X, stride: usize) -> Self::X;
    /// `x` through `convs` in order.
    fn chain(&self, convs: &[&BasicConv2d<B>], x: &Self::X) -> Self::X {
        let (first, rest) = convs.split_first().expect("a chain has a convolution");
        rest.iter()
            .fold(self.conv(first, x), |h, conv| self.conv(conv, &h))
    }
}

/// The blocks on burn tensors.
pub struct Tensors;

impl<B: Backend> Maps<B> for Tensors {
    type X = Tensor<B, 4>;
    fn conv(&self, conv: &BasicConv2d<B>, x: &Self::X) -> Self::X {
        conv.forward(x.clone())
    }
    fn cat(&self, parts: Vec<Self::X>) -> Self::X {
        Tensor::cat(parts, 1)
    }
    fn avg_pool(&self, x: &Self::X) -> Self::X {
        avg_pool_3x3(x.clone())
    }
    fn max_pool(&self, x: &Self::X, stride: usize) -> Self::X {
        max_pool_3x3(x.clone(), stride)
    }
}

/// The blocks on channels-last host maps (the fused CPU kernels of `nn::fused::ops::cnn`).
pub struct HostMaps;

impl<B: Backend> Maps<B> for HostMaps {
    type X = Nhwc;
    fn conv(&self, conv: &BasicConv2d<B>, x: &Nhwc) -> Nhwc {
        conv_relu(x, conv.packed())
    }
    fn cat(&self, parts: Vec<Nhwc>) -> Nhwc {
        cat_channels(&parts)
    }
    fn avg_pool(&self, x: &Nhwc) -> Nhwc {
        pool_3x3(x, 1, false)
    }
    fn max_pool(&self, x: &Nhwc, stride: usize) -> Nhwc {
        pool_3x3(x, stride, true)
    }
}

/// `FIDInceptionA(in, pool_features)`: 64 + 64 + 96 + pool_features channels.
#[derive(Debug)]
pub struct InceptionA<B: Backend> {
    b1x1: BasicConv2d<B>,
    b5x5_1: BasicConv2d<B>,
    b5x5_2: BasicConv2d<B>,
    b3x3dbl_1: BasicConv2d<B>,
    b3x3dbl_2: BasicConv2d<B>,
    b3x3dbl_3: BasicConv2d<B>,
    pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionA<B> {
    pub fn new(vb: &VarBuilder<B>, c: usize, pool_features: usize) -> Result<Self, WeightError> {
        Ok(Self {
            b1x1: BasicConv2d::new(vb, "branch1x1", c, 64, sq(1), 1, sq(0))?,
            b5x5_1: BasicConv2d::new(vb, "branch5x5_1", c, 48, sq(1), 1, sq(0))?,
            b5x5_2: BasicConv2d::new(vb, "branch5x5_2", 48, 64, sq(5), 1, sq(2))?,
            b3x3dbl_1: BasicConv2d::new(vb, "branch3x3dbl_1", c, 64, sq(1), 1, sq(0))?,
            b3x3dbl_2: BasicConv2d::new(vb, "branch3x3dbl_2", 64, 96, sq(3), 1, sq(1))?,
            b3x3dbl_3: BasicConv2d::new(vb, "branch3x3dbl_3", 96, 96, sq(3), 1, sq(1))?,
            pool: BasicConv2d::new(vb, "branch_pool", c, pool_features, sq(1), 1, sq(0))?,
        })
    }

    /// `[b, c, h, w] -> [b, 224 + pool_features, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.run(&Tensors, &x)
    }

    pub fn run<M: Maps<B>>(&self, m: &M, x: &M::X) -> M::X {
        let a = m.conv(&self.b1x1, x);
        let b = m.chain(&[&self.b5x5_1, &self.b5x5_2], x);
        let c = m.chain(&[&self.b3x3dbl_1, &self.b3x3dbl_2, &self.b3x3dbl_3], x);
        let d = m.conv(&self.pool, &m.avg_pool(x));
        m.cat(vec![a, b, c, d])
    }
}

/// torchvision `InceptionB` (grid reduction, `Mixed_6a`): 384 + 96 + c channels.
#[derive(Debug)]
pub struct InceptionB<B: Backend> {
    b3x3: BasicConv2d<B>,
    b3x3dbl_1: BasicConv2d<B>,
    b3x3dbl_2: BasicConv2d<B>,
    b3x3dbl_3: BasicConv2d<B>,
}

impl<B: Backend> InceptionB<B> {
    pub fn new(vb: &VarBuilder<B>, c: usize) -> Result<Self, WeightError> {
        Ok(Self {
            b3x3: BasicConv2d::new(vb, "branch3x3", c, 384, sq(3), 2, sq(0))?,
            b3x3dbl_1: BasicConv2d::new(vb, "branch3x3dbl_1", c, 64, sq(1), 1, sq(0))?,
            b3x3dbl_2: BasicConv2d::new(vb, "branch3x3dbl_2", 64, 96, sq(3), 1, sq(1))?,
            b3x3dbl_3: BasicConv2d::new(vb, "branch3x3dbl_3", 96, 96, sq(3), 2, sq(0))?,
        })
    }

    /// `[b, c, h, w] -> [b, 480 + c, (h - 3) / 2 + 1, (w - 3) / 2 + 1]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.run(&Tensors, &x)
    }

    pub fn run<M: Maps<B>>(&self, m: &M, x: &M::X) -> M::X {
        let a = m.conv(&self.b3x3, x);
        let b = m.chain(&[&self.b3x3dbl_1, &self.b3x3dbl_2, &self.b3x3dbl_3], x);
        let c = m.max_pool(x, 2);
        m.cat(vec![a, b, c])
    }
}

/// `FIDInceptionC(in, channels_7x7)`: factorised 7x7 convolutions, 4 x 192 channels.
#[derive(Debug)]
pub struct InceptionC<B: Backend> {
    b1x1: BasicConv2d<B>,
    b7x7: [BasicConv2d<B>; 3],
    b7x7dbl: [BasicConv2d<B>; 5],
    pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionC<B> {
    pub fn new(vb: &VarBuilder<B>, c: usize, c7: usize) -> Result<Self, WeightError> {
        let (row, col) = ([1, 7], [7, 1]);
        let (prow, pcol) = ([0, 3], [3, 0]);
        Ok(Self {
            b1x1: BasicConv2d::new(vb, "branch1x1", c, 192, sq(1), 1, sq(0))?,
            b7x7: [
                BasicConv2d::new(vb, "branch7x7_1", c, c7, sq(1), 1, sq(0))?,
                BasicConv2d::new(vb, "branch7x7_2", c7, c7, row, 1, prow)?,
                BasicConv2d::new(vb, "branch7x7_3", c7, 192, col, 1, pcol)?,
            ],
            b7x7dbl: [
                BasicConv2d::new(vb, "branch7x7dbl_1", c, c7, sq(1), 1, sq(0))?,
                BasicConv2d::new(vb, "branch7x7dbl_2", c7, c7, col, 1, pcol)?,
                BasicConv2d::new(vb, "branch7x7dbl_3", c7, c7, row, 1, prow)?,
                BasicConv2d::new(vb, "branch7x7dbl_4", c7, c7, col, 1, pcol)?,
                BasicConv2d::new(vb, "branch7x7dbl_5", c7, 192, row, 1, prow)?,
            ],
            pool: BasicConv2d::new(vb, "branch_pool", c, 192, sq(1), 1, sq(0))?,
        })
    }

    /// `[b, c, h, w] -> [b, 768, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.run(&Tensors, &x)
    }

    pub fn run<M: Maps<B>>(&self, m: &M, x: &M::X) -> M::X {
        let a = m.conv(&self.b1x1, x);
        let b = m.chain(&self.b7x7.iter().collect::<Vec<_>>(), x);
        let c = m.chain(&self.b7x7dbl.iter().collect::<Vec<_>>(), x);
        let d = m.conv(&self.pool, &m.avg_pool(x));
        m.cat(vec![a, b, c, d])
    }
}

/// torchvision `InceptionD` (grid reduction, `Mixed_7a`): 320 + 192 + c channels.
#[derive(Debug)]
pub struct InceptionD<B: Backend> {
    b3x3: [BasicConv2d<B>; 2],
    b7x7x3: [BasicConv2d<B>; 4],
}

impl<B: Backend> InceptionD<B> {
    pub fn new(vb: &VarBuilder<B>, c: usize) -> Result<Self, WeightError> {
        Ok(Self {
            b3x3: [
                BasicConv2d::new(vb, "branch3x3_1", c, 192, sq(1), 1, sq(0))?,
                BasicConv2d::new(vb, "branch3x3_2", 192, 320, sq(3), 2, sq(0))?,
            ],
            b7x7x3: [
                BasicConv2d::new(vb, "branch7x7x3_1", c, 192, sq(1), 1, sq(0))?,
                BasicConv2d::new(vb, "branch7x7x3_2", 192, 192, [1, 7], 1, [0, 3])?,
                BasicConv2d::new(vb, "branch7x7x3_3", 192, 192, [7, 1], 1, [3, 0])?,
                BasicConv2d::new(vb, "branch7x7x3_4", 192, 192, sq(3), 2, sq(0))?,
            ],
        })
    }

    /// `[b, c, h, w] -> [b, 512 + c, (h - 3) / 2 + 1, (w - 3) / 2 + 1]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.run(&Tensors, &x)
    }

    pub fn run<M: Maps<B>>(&self, m: &M, x: &M::X) -> M::X {
        let a = m.chain(&self.b3x3.iter().collect::<Vec<_>>(), x);
        let b = m.chain(&self.b7x7x3.iter().collect::<Vec<_>>(), x);
        let c = m.max_pool(x, 2);
        m.cat(vec![a, b, c])
    }
}

/// Which pool the E block's pool branch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// `FIDInceptionE_1` (`Mixed_7b`): average, padding excluded.
    Average,
    /// `FIDInceptionE_2` (`Mixed_7c`): max.
    Max,
}

/// `FIDInceptionE_1` / `FIDInceptionE_2`: expanded-filter-bank block, 2048 channels.
#[derive(Debug)]
pub struct InceptionE<B: Backend> {
    b1x1: BasicConv2d<B>,
    b3x3_1: BasicConv2d<B>,
    b3x3_2a: BasicConv2d<B>,
    b3x3_2b: BasicConv2d<B>,
    b3x3dbl_1: BasicConv2d<B>,
    b3x3dbl_2: BasicConv2d<B>,
    b3x3dbl_3a: BasicConv2d<B>,
    b3x3dbl_3b: BasicConv2d<B>,
    pool: BasicConv2d<B>,
    pool_kind: PoolKind,
}

impl<B: Backend> InceptionE<B> {
    pub fn new(vb: &VarBuilder<B>, c: usize, pool_kind: PoolKind) -> Result<Self, WeightError> {
        Ok(Self {
            b1x1: BasicConv2d::new(vb, "branch1x1", c, 320, sq(1), 1, sq(0))?,
            b3x3_1: BasicConv2d::new(vb, "branch3x3_1", c, 384, sq(1), 1, sq(0))?,
            b3x3_2a: BasicConv2d::new(vb, "branch3x3_2a", 384, 384, [1, 3], 1, [0, 1])?,
            b3x3_2b: BasicConv2d::new(vb, "branch3x3_2b", 384, 384, [3, 1], 1, [1, 0])?,
            b3x3dbl_1: BasicConv2d::new(vb, "branch3x3dbl_1", c, 448, sq(1), 1, sq(0))?,
            b3x3dbl_2: BasicConv2d::new(vb, "branch3x3dbl_2", 448, 384, sq(3), 1, sq(1))?,
            b3x3dbl_3a: BasicConv2d::new(vb, "branch3x3dbl_3a", 384, 384, [1, 3], 1, [0, 1])?,
            b3x3dbl_3b: BasicConv2d::new(vb, "branch3x3dbl_3b", 384, 384, [3, 1], 1, [1, 0])?,
            pool: BasicConv2d::new(vb, "branch_pool", c, 192, sq(1), 1, sq(0))?,
            pool_kind,
        })
    }

    /// `[b, c, h, w] -> [b, 2048, h, w]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.run(&Tensors, &x)
    }

    /// The two split branches concatenated in place: `[a, b 2a, b 2b, c 3a, c 3b, d]`.
    pub fn run<M: Maps<B>>(&self, m: &M, x: &M::X) -> M::X {
        let a = m.conv(&self.b1x1, x);
        let h = m.conv(&self.b3x3_1, x);
        let (b1, b2) = (m.conv(&self.b3x3_2a, &h), m.conv(&self.b3x3_2b, &h));
        let h = m.chain(&[&self.b3x3dbl_1, &self.b3x3dbl_2], x);
        let (c1, c2) = (m.conv(&self.b3x3dbl_3a, &h), m.conv(&self.b3x3dbl_3b, &h));
        let pooled = match self.pool_kind {
            PoolKind::Average => m.avg_pool(x),
            PoolKind::Max => m.max_pool(x, 1),
        };
        let d = m.conv(&self.pool, &pooled);
        m.cat(vec![a, b1, b2, c1, c2, d])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InceptionError {
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(
        "no FID Inception weights at {path}: convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth with tools/convert_fid_inception.py (it writes {WEIGHTS_FILE})"
    )]
    NoWeights { path: PathBuf },
}

/// pytorch-fid's `InceptionV3(output_blocks=[3])`: images in [0, 1] -> pool3 features.
#[derive(Debug)]
pub struct FidInception<B: Backend> {
    stem: [BasicConv2d<B>; 5],
    mixed_5: [InceptionA<B>; 3],
    mixed_6a: InceptionB<B>,
    mixed_6: [InceptionC<B>; 4],
    mixed_7a: InceptionD<B>,
    mixed_7b: InceptionE<B>,
    mixed_7c: InceptionE<B>,
}

impl<B: Backend> FidInception<B> {
    /// Builds the network with its checkpoint key names from `vb`.
    pub fn new(vb: &VarBuilder<B>) -> Result<Self, WeightError> {
        Ok(Self {
            stem: [
                BasicConv2d::new(vb, "Conv2d_1a_3x3", 3, 32, sq(3), 2, sq(0))?,
                BasicConv2d::new(vb, "Conv2d_2a_3x3", 32, 32, sq(3), 1, sq(0))?,
                BasicConv2d::new(vb, "Conv2d_2b_3x3", 32, 64, sq(3), 1, sq(1))?,
                BasicConv2d::new(vb, "Conv2d_3b_1x1", 64, 80, sq(1), 1, sq(0))?,
                BasicConv2d::new(vb, "Conv2d_4a_3x3", 80, 192, sq(3), 1, sq(0))?,
            ],
            mixed_5: [
                InceptionA::new(&vb.pp("Mixed_5b"), 192, 32)?,
                InceptionA::new(&vb.pp("Mixed_5c"), 256, 64)?,
                InceptionA::new(&vb.pp("Mixed_5d"), 288, 64)?,
            ],
            mixed_6a: InceptionB::new(&vb.pp("Mixed_6a"), 288)?,
            mixed_6: [
                InceptionC::new(&vb.pp("Mixed_6b"), 768, 128)?,
                InceptionC::new(&vb.pp("Mixed_6c"), 768, 160)?,
                InceptionC::new(&vb.pp("Mixed_6d"), 768, 160)?,
                InceptionC::new(&vb.pp("Mixed_6e"), 768, 192)?,
            ],
            mixed_7a: InceptionD::new(&vb.pp("Mixed_7a"), 768)?,
            mixed_7b: InceptionE::new(&vb.pp("Mixed_7b"), 1280, PoolKind::Average)?,
            mixed_7c: InceptionE::new(&vb.pp("Mixed_7c"), 2048, PoolKind::Max)?,
        })
    }

    /// Loads the converted weights: the `.safetensors` file, or a folder holding
    /// [`WEIGHTS_FILE`]. The `fc` classifier, if present, is not used.
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, InceptionError> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            path.join(WEIGHTS_FILE)
        } else {
            path.to_path_buf()
        };
        if !file.is_file() {
            return Err(InceptionError::NoWeights { path: file });
        }
        let store = Rc::new(WeightStore::open(&file)?);
        let net = Self::new(&VarBuilder::load(store.clone(), device))?;
        store.check_all_used(&["fc."])?;
        Ok(net)
    }

    /// Images `[b, 3, h, w]` in [0, 1] -> pool3 features `[b, 2048]` (pytorch-fid's
    /// `resize_input=True, normalize_input=True`).
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let [b, _, h, w] = images.dims();
        let device = images.device();
        let x = if [h, w] == [INPUT_SIZE, INPUT_SIZE] {
            images
        } else {
            interpolate(
                images,
                [INPUT_SIZE, INPUT_SIZE],
                InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
            )
        };
        let x = x * 2.0 - 1.0;
        if crate::nn::fused::available::<B>() {
            let dims = x.dims();
            let values: Vec<f32> = x.into_data().convert::<f32>().to_vec().expect("f32 images");
            let pooled = self
                .run(&HostMaps, &Nhwc::from_nchw(&values, dims))
                .global_mean();
            return Tensor::from_data(TensorData::new(pooled, [b, FEATURES]), &device);
        }
        let x = self.run(&Tensors, &x);
        let [_, c, hh, ww] = x.dims();
        x.reshape([b, c, hh * ww]).mean_dim(2).reshape([b, c])
    }

    /// The stem and the eleven blocks, up to the last map before pool3.
    fn run<M: Maps<B>>(&self, m: &M, x: &M::X) -> M::X {
        let mut x = m.conv(&self.stem[0], x);
        for (i, conv) in self.stem.iter().enumerate().skip(1) {
            x = m.conv(conv, &x);
            if i == 2 || i == 4 {
                x = m.max_pool(&x, 2);
            }
        }
        for block in &self.mixed_5 {
            x = block.run(m, &x);
        }
        x = self.mixed_6a.run(m, &x);
        for block in &self.mixed_6 {
            x = block.run(m, &x);
        }
        x = self.mixed_7a.run(m, &x);
        x = self.mixed_7b.run(m, &x);
        self.mixed_7c.run(m, &x)
    }
}

/// FNV-1a 64 of a string (the seed of [`formula_weights`]).
fn fnv1a64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` values `u_i = (splitmix64(fnv1a64(name) + i) >> 11) / 2^53 - 0.5`, in [-0.5, 0.5),
/// exact in f64 (so that NumPy computes the same bits).
pub fn formula_uniform(name: &str, n: usize) -> Vec<f64> {
    let seed = fnv1a64(name);
    (0..n as u64)
        .map(|i| (splitmix64(seed.wrapping_add(i)) >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
        .collect()
}

/// Deterministic stand-in weights for the FID Inception, by checkpoint key (the formula of
/// tools/fixtures/make_inception_fixtures.py): conv weights `2 u sqrt(6 / fan_in)`, BatchNorm
/// weight `1 + 0.2 u`, bias and running mean `0.2 u`, running variance `1 + u`, else `0.01 u`.
/// For conformance tests and benchmarks without the real 92 MB file.
pub fn formula_weights(name: &str, shape: &[usize]) -> Vec<f32> {
    let n = shape.iter().product();
    let u = formula_uniform(name, n);
    let map = |f: &dyn Fn(f64) -> f64| u.iter().map(|&x| f(x) as f32).collect();
    if name.ends_with("conv.weight") {
        let fan_in: usize = shape[1..].iter().product();
        let a = (6.0 / fan_in as f64).sqrt();
        map(&|x| 2.0 * x * a)
    } else if name.ends_with("bn.weight") {
        map(&|x| 1.0 + 0.2 * x)
    } else if name.ends_with("bn.bias") || name.ends_with("bn.running_mean") {
        map(&|x| 0.2 * x)
    } else if name.ends_with("bn.running_var") {
        map(&|x| 1.0 + x)
    } else {
        map(&|x| 0.01 * x)
    }
}
