//! SA-UNetv2 (arXiv 2509.11774) in burn, as the paper's reference implementation builds it.
//!
//! - Encoder levels of width w, 2w, 3w (w = 16), each two [3×3 conv (bias) → DropBlock →
//!   GroupNorm(8) → SiLU] units, 2×2 max-pool between levels.
//! - Bottleneck of width 4w: one unit → spatial attention → one unit.
//! - Decoder levels 3w, 2w, w: 3×3 transposed conv, stride 2 (exact 2× upsampling) giving `d`,
//!   cross-scale spatial attention (CSA) on the skip, concat `[d, attended skip]`, two units.
//! - Head: 1×1 conv. The model returns logits; [`SaUnetV2::probabilities`] applies the sigmoid
//!   (the loss works on logits for numerical stability).
//!
//! With w = 16 and RGB input this is 260,521 parameters.

use burn::module::{Flag, Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

/// Architecture hyper-parameters. The defaults are the paper's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SaUnetConfig {
    pub in_channels: usize,
    /// Width of the first level; levels are 1×, 2×, 3× and (bottleneck) 4× this.
    pub base_width: usize,
    pub groups: usize,
    pub dropblock_size: usize,
    pub dropblock_rate: f64,
    pub attention_kernel: usize,
}

impl Default for SaUnetConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            base_width: 16,
            groups: 8,
            dropblock_size: 7,
            dropblock_rate: 0.15,
            attention_kernel: 7,
        }
    }
}

impl SaUnetConfig {
    /// True when `other` has the same weights (shapes and meaning): the settings other than
    /// DropBlock's, which only shape training.
    pub fn same_weights(&self, other: &Self) -> bool {
        (
            self.in_channels,
            self.base_width,
            self.groups,
            self.attention_kernel,
        ) == (
            other.in_channels,
            other.base_width,
            other.groups,
            other.attention_kernel,
        )
    }
}

/// DropBlock (Ghiasi et al. 2018): zeroes square blocks of a feature map while training and
/// rescales the rest; the identity at inference.
#[derive(Module, Debug)]
pub struct DropBlock {
    pub block_size: usize,
    pub rate: f64,
    pub training: Param<Flag>,
}

impl DropBlock {
    pub fn new(block_size: usize, rate: f64) -> Self {
        Self {
            block_size,
            rate,
            training: Param::from_bool(true),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if !self.training.is_enabled() || !x.device().is_autodiff() || self.rate <= 0.0 {
            return x;
        }
        let [_, _, h, w] = x.dims();
        // Small maps (tiny inputs) clamp the block; keep it odd so padding preserves the size.
        let mut block = self.block_size.min(h).min(w).max(1);
        if block % 2 == 0 {
            block -= 1;
        }
        // Seed rate chosen so that about `rate` of the positions end up dropped.
        let valid = ((h - block + 1) * (w - block + 1)) as f64;
        let gamma = (self.rate / (block * block) as f64) * (h * w) as f64 / valid;
        let seeds = x.random_like(Distribution::Bernoulli(gamma.min(1.0)));
        // Grow each seed into a block×block square, separably (2·block comparisons a pixel
        // instead of block²). Odd block sizes keep the output size.
        let half = block / 2;
        let row = MaxPoolOptions::new([1, block])
            .with_stride([1, 1])
            .with_padding([0, half]);
        let col = MaxPoolOptions::new([block, 1])
            .with_stride([1, 1])
            .with_padding([half, 0]);
        let dropped = max_pool2d(max_pool2d(seeds, row), col);
        let keep = dropped.neg().add_scalar(1.0);
        let numel = keep.shape().num_elements() as f32;
        let kept = keep.clone().sum().clamp_min(1.0);
        let scale = kept.recip().mul_scalar(numel).reshape([1, 1, 1, 1]);
        x * keep * scale
    }
}

/// 3×3 conv (bias) → DropBlock → GroupNorm → SiLU.
#[derive(Module, Debug)]
pub struct ConvUnit {
    pub conv: Conv2d,
    pub dropblock: DropBlock,
    pub norm: GroupNorm,
}

impl ConvUnit {
    fn new(c: &SaUnetConfig, cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([cin, cout], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            dropblock: DropBlock::new(c.dropblock_size, c.dropblock_rate),
            norm: GroupNormConfig::new(c.groups, cout).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        silu(
            self.norm
                .forward(self.dropblock.forward(self.conv.forward(x))),
        )
    }
}

/// Two [`ConvUnit`]s.
#[derive(Module, Debug)]
pub struct ConvBlock {
    pub first: ConvUnit,
    pub second: ConvUnit,
}

impl ConvBlock {
    fn new(c: &SaUnetConfig, cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            first: ConvUnit::new(c, cin, cout, device),
            second: ConvUnit::new(c, cout, cout, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.second.forward(self.first.forward(x))
    }
}

fn attention_conv(kernel: usize, device: &Device) -> Conv2d {
    let p = kernel / 2;
    Conv2dConfig::new([2, 1], [kernel, kernel])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

/// Spatial attention: `x · σ(conv([mean_c(x), max_c(x)]))`.
#[derive(Module, Debug)]
pub struct SpatialAttention {
    pub conv: Conv2d,
}

impl SpatialAttention {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let pooled = Tensor::cat(vec![x.clone().mean_dim(1), x.clone().max_dim(1)], 1);
        x * sigmoid(self.conv.forward(pooled))
    }
}

/// Cross-scale spatial attention on a skip connection:
/// `skip · σ(conv([mean_c(skip), mean_c(decoder)]))`.
#[derive(Module, Debug)]
pub struct CrossScaleAttention {
    pub conv: Conv2d,
}

impl CrossScaleAttention {
    pub fn forward(&self, skip: Tensor<4>, decoder: Tensor<4>) -> Tensor<4> {
        let pooled = Tensor::cat(vec![skip.clone().mean_dim(1), decoder.mean_dim(1)], 1);
        skip * sigmoid(self.conv.forward(pooled))
    }
}

/// One decoder level: upsample, attend the skip, fuse.
#[derive(Module, Debug)]
pub struct DecoderLevel {
    pub up: ConvTranspose2d,
    pub attention: CrossScaleAttention,
    pub block: ConvBlock,
}

impl DecoderLevel {
    fn new(c: &SaUnetConfig, cin: usize, cout: usize, device: &Device) -> Self {
        Self {
            // padding 1 + output padding 1: exactly 2H×2W.
            up: ConvTranspose2dConfig::new([cin, cout], [3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1])
                .with_padding_out([1, 1])
                .init(device),
            attention: CrossScaleAttention {
                conv: attention_conv(c.attention_kernel, device),
            },
            block: ConvBlock::new(c, 2 * cout, cout, device),
        }
    }

    pub fn forward(&self, x: Tensor<4>, skip: Tensor<4>) -> Tensor<4> {
        let d = self.up.forward(x);
        let attended = self.attention.forward(skip, d.clone());
        self.block.forward(Tensor::cat(vec![d, attended], 1))
    }
}

#[derive(Module, Debug)]
pub struct SaUnetV2 {
    pub enc1: ConvBlock,
    pub enc2: ConvBlock,
    pub enc3: ConvBlock,
    pub pool: MaxPool2d,
    pub bottleneck_in: ConvUnit,
    pub bottleneck_attention: SpatialAttention,
    pub bottleneck_out: ConvUnit,
    pub dec3: DecoderLevel,
    pub dec2: DecoderLevel,
    pub dec1: DecoderLevel,
    pub head: Conv2d,
}

impl SaUnetV2 {
    pub fn new(c: &SaUnetConfig, device: &Device) -> Self {
        let w = c.base_width;
        Self {
            enc1: ConvBlock::new(c, c.in_channels, w, device),
            enc2: ConvBlock::new(c, w, 2 * w, device),
            enc3: ConvBlock::new(c, 2 * w, 3 * w, device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            bottleneck_in: ConvUnit::new(c, 3 * w, 4 * w, device),
            bottleneck_attention: SpatialAttention {
                conv: attention_conv(c.attention_kernel, device),
            },
            bottleneck_out: ConvUnit::new(c, 4 * w, 4 * w, device),
            dec3: DecoderLevel::new(c, 4 * w, 3 * w, device),
            dec2: DecoderLevel::new(c, 3 * w, 2 * w, device),
            dec1: DecoderLevel::new(c, 2 * w, w, device),
            head: Conv2dConfig::new([w, 1], [1, 1]).init(device),
        }
    }

    /// `[N, C, H, W]` → vessel logits `[N, 1, H, W]`. H and W must be multiples of 8.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let s1 = self.enc1.forward(x);
        let s2 = self.enc2.forward(self.pool.forward(s1.clone()));
        let s3 = self.enc3.forward(self.pool.forward(s2.clone()));
        let b = self.bottleneck_in.forward(self.pool.forward(s3.clone()));
        let b = self
            .bottleneck_out
            .forward(self.bottleneck_attention.forward(b));
        let d3 = self.dec3.forward(b, s3);
        let d2 = self.dec2.forward(d3, s2);
        let d1 = self.dec1.forward(d2, s1);
        self.head.forward(d1)
    }

    /// Vessel probabilities `[N, 1, H, W]`.
    pub fn probabilities(&self, x: Tensor<4>) -> Tensor<4> {
        sigmoid(self.forward(x))
    }
}
